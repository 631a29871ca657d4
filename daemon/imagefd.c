/* SPDX-License-Identifier: MIT */
#include "imagefd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#ifndef CONFIGFS_MAGIC
#define CONFIGFS_MAGIC 0x62656570
#endif
#ifndef FUSE_CTL_SUPER_MAGIC
#define FUSE_CTL_SUPER_MAGIC 0x65735543
#endif

static const struct {
	unsigned long magic;
	const char *name;
} kernel_interfaces[] = {
	{ PROC_SUPER_MAGIC, "proc" },         { SYSFS_MAGIC, "sysfs" },
	{ CGROUP_SUPER_MAGIC, "cgroup" },     { CGROUP2_SUPER_MAGIC, "cgroup2" },
	{ DEBUGFS_MAGIC, "debugfs" },         { TRACEFS_MAGIC, "tracefs" },
	{ SECURITYFS_MAGIC, "securityfs" },   { BPF_FS_MAGIC, "bpf" },
	{ DEVPTS_SUPER_MAGIC, "devpts" },     { EFIVARFS_MAGIC, "efivarfs" },
	{ PSTOREFS_MAGIC, "pstore" },         { SELINUX_MAGIC, "selinuxfs" },
	{ SMACK_MAGIC, "smackfs" },           { NSFS_MAGIC, "nsfs" },
	{ PIPEFS_MAGIC, "pipefs" },           { SOCKFS_MAGIC, "sockfs" },
	{ ANON_INODE_FS_MAGIC, "anon_inodefs" }, { BINFMTFS_MAGIC, "binfmt_misc" },
	{ CONFIGFS_MAGIC, "configfs" },       { FUSE_CTL_SUPER_MAGIC, "fusectl" },
	{ USBDEVICE_SUPER_MAGIC, "usbfs" },   { DEVMEM_MAGIC, "devmem" },
};

int gw_imagefd_check(int fd, const struct ucred *peer, enum gw_imagefd_use use, char *why,
		     size_t len)
{
	int mode = fcntl(fd, F_GETFL);
	struct statfs fs;
	struct stat st;

	if (mode < 0 || fstat(fd, &st) < 0 || fstatfs(fd, &fs) < 0) {
		snprintf(why, len, "the image descriptor cannot be examined");
		return -EBADF;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(why, len, "the image must be a regular file");
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(kernel_interfaces) / sizeof(kernel_interfaces[0]); i++)
		if ((unsigned long)fs.f_type == kernel_interfaces[i].magic) {
			snprintf(why, len, "the image file is on %s, a kernel interface, not a file "
				 "system for data", kernel_interfaces[i].name);
			return -EPERM;
		}
	if (peer->uid != 0 && st.st_uid != peer->uid) {
		snprintf(why, len, "the image file belongs to uid %u, not to the caller (uid %u)",
			 (unsigned)st.st_uid, (unsigned)peer->uid);
		return -EPERM;
	}
	if (st.st_nlink != 1) {
		snprintf(why, len, "the image file has %lu hard links; it must have exactly one",
			 (unsigned long)st.st_nlink);
		return -EPERM;
	}
	if (use == GW_IMAGEFD_WRITE &&
	    ((mode & O_ACCMODE) != O_RDWR || st.st_size != 0 || (mode & O_APPEND))) {
		snprintf(why, len, "an image to suspend into must be a new, empty file opened for "
			 "reading and writing (O_RDWR, not appending)");
		return -EINVAL;
	}
	if (use == GW_IMAGEFD_READ && (mode & O_ACCMODE) == O_WRONLY) {
		snprintf(why, len, "the image file must be open for reading");
		return -EINVAL;
	}
	return 0;
}
