/* SPDX-License-Identifier: MIT */
#include "gw-pidgpu.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Bitmap of /dev/nvidia<minor> (minor < 256) opened by pid. */
static int open_minors(const char *proc_root, pid_t pid, unsigned char minors[256])
{
	char dir[128], link[400], target[256];
	struct dirent *e;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/%d/fd", proc_root, (int)pid);
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? -ESRCH : -errno;
	while ((e = readdir(d))) {
		unsigned minor;
		ssize_t n;
		int used = 0;

		if (e->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "%s/%s", dir, e->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (sscanf(target, "/dev/nvidia%3u%n", &minor, &used) == 1 && !target[used] &&
		    minor < 255)
			minors[minor] = 1;
	}
	closedir(d);
	return 0;
}

static int device_minor(const char *proc_root, const char *pci, unsigned *ret_minor)
{
	char path[256], line[256];
	unsigned minor;
	int found = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/driver/nvidia/gpus/%s/information", proc_root, pci);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Device Minor: %u", &minor) == 1) {
			found = 1;
			break;
		}
	fclose(f);
	if (!found)
		return -ENODATA;
	*ret_minor = minor;
	return 0;
}

int gw_pid_gpus(const char *proc_root, pid_t pid, char (*pci_ids)[GW_PIDGPU_PCI_LEN],
		unsigned max)
{
	unsigned char minors[256] = { 0 };
	char dir[128];
	struct dirent *e;
	unsigned count = 0;
	DIR *d;
	int r;

	r = open_minors(proc_root, pid, minors);
	if (r < 0)
		return r;
	snprintf(dir, sizeof(dir), "%s/driver/nvidia/gpus", proc_root);
	d = opendir(dir);
	if (!d)
		return 0;
	while ((e = readdir(d)) && count < max) {
		unsigned minor = 256;

		if (e->d_name[0] == '.' || strlen(e->d_name) >= GW_PIDGPU_PCI_LEN)
			continue;
		if (device_minor(proc_root, e->d_name, &minor) < 0 || minor >= 256 || !minors[minor])
			continue;
		for (size_t i = 0; e->d_name[i]; i++)
			pci_ids[count][i] = (char)tolower((unsigned char)e->d_name[i]);
		pci_ids[count][strlen(e->d_name)] = '\0';
		count++;
	}
	closedir(d);
	return (int)count;
}
