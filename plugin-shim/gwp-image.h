/* SPDX-License-Identifier: MIT */
/*
 * gpuwarm-<pid>.json: what the dump's CHECKPOINT_DEVICES leaves in CRIU's image directory for
 * RESUME_DEVICES_LATE: the process's GPUs (to restore onto others when they are gone or
 * drained), its CUDA restore thread (the driver needs it running while CRIU has the process
 * frozen) and its pids inside its pid namespace (a restore into a new namespace changes the
 * host pids, not those).
 *
 *   {"format": 1, "pid": 1234, "vpid": 1, "restore_tid": 1240, "restore_vtid": 7,
 *    "state": "running", "gpus": [{"uuid": "GPU-...", "pci_bus_id": "0000:3b:00.0"}]}
 *
 * "state" is the process's checkpoint state before the dump touched it.
 */
#ifndef GWP_IMAGE_H
#define GWP_IMAGE_H

#include <stddef.h>
#include <sys/types.h>

#include "gwp-plan.h"

#define GWP_IMAGE_FORMAT 1
#define GWP_IMAGE_MAX_GPUS 16
#define GWP_IMAGE_MAX_BYTES 65536
#define GWP_PCI_LEN 32

struct gwp_image {
	int pid;
	int vpid;
	int restore_tid;
	int restore_vtid;
	enum gwp_state state;
	int fast;       /* dumped through the fast path: gpu-warmd holds the VRAM */
	int agent_tid;  /* the shim's agent thread (fast path), 0 without */
	unsigned ngpus;
	struct {
		char uuid[GWP_UUID_LEN];
		char pci[GWP_PCI_LEN];
	} gpus[GWP_IMAGE_MAX_GPUS];
};

/* "gpuwarm-<pid>.json". */
void gwp_image_name(int pid, char *buf, size_t len);

/* The JSON text (malloc'd, caller frees), or NULL when out of memory. */
char *gwp_image_encode(const struct gwp_image *img);
/* Parse and check bounds. Returns 0 or -EBADMSG (malformed), -ENOMEM. */
int gwp_image_parse(const char *text, size_t len, struct gwp_image *ret_img);

/* Write gpuwarm-<pid>.json into the directory dirfd (AT_FDCWD allowed), atomically (a temporary
 * file renamed). Returns 0 or a negative errno. */
int gwp_image_write(int dirfd, const struct gwp_image *img);
/* Read gpuwarm-<pid>.json. -ENOENT when there is none. */
int gwp_image_read(int dirfd, int pid, struct gwp_image *ret_img);
/* Find the file whose vpid is vpid (the process was restored under another host pid). -ENOENT
 * when none or more than one matches. */
int gwp_image_find_vpid(int dirfd, int vpid, struct gwp_image *ret_img);

#endif
