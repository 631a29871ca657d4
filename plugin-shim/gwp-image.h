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
 * With the fast path also "fast": true, "agent_tid", "agent_vtid" (the shim's agent thread) and
 * "vram_file": true when gpu-warmd wrote the VRAM into gpuwarm-vram-<pid>.img beside the record
 * (a gw-vimg image, docs/image-format.md).
 *
 * "state" is the process's checkpoint state before the dump touched it. "dump" names the dump
 * that wrote the record (a random id per dump; absent in records of plugins before issue 7).
 *
 * gpuwarm-dump.json, {"format": 1, "dump": "<id>"}, names the last dump that completed into the
 * directory. A directory can hold records of earlier dumps (podman's checkpoint --keep keeps it
 * and dumps into it again): a completed dump removes them, and a restore takes only records of
 * the dump gpuwarm-dump.json names (every record when there is no such file).
 */
#ifndef GWP_IMAGE_H
#define GWP_IMAGE_H

#include "gwp-store.h"
#include <stddef.h>
#include <sys/types.h>

#include "gw-proto.h"
#include "gwp-plan.h"

#define GWP_IMAGE_FORMAT 1
#define GWP_IMAGE_MAX_GPUS 16
#define GWP_IMAGE_MAX_BYTES 65536
#define GWP_PCI_LEN 32
#define GWP_DUMP_ID_LEN 40 /* room for the 32 hex digits of an id */
#define GWP_DUMP_FILE "gpuwarm-dump.json"

struct gwp_image {
	int pid;
	int vpid;
	int restore_tid;
	int restore_vtid;
	enum gwp_state state;
	int fast;       /* dumped through the fast path: gpu-warmd holds the VRAM */
	int agent_tid;  /* the shim's agent thread (fast path), 0 without */
	int agent_vtid; /* the same inside its pid namespace, 0 when not said */
	int vram_file;  /* the VRAM is in gpuwarm-vram-<pid>.img beside it (fast path) */
	char dump[GWP_DUMP_ID_LEN]; /* the dump that wrote it, "" when not said */
	unsigned ngpus;
	struct {
		char uuid[GWP_UUID_LEN];
		char pci[GWP_PCI_LEN];
	} gpus[GWP_IMAGE_MAX_GPUS];
};

/* "gpuwarm-<pid>.json". */
void gwp_image_name(int pid, char *buf, size_t len);
/* "gpuwarm-vram-<pid>.img": the VRAM image gpu-warmd wrote for the fast path. */
void gwp_vram_image_name(int pid, char *buf, size_t len);

/* Segment files a dump's VRAM image gets (docs/image-format.md): its data is split over them so
 * that gpu-warmd writes and reads them in parallel, one I/O lane per file. */
#define GWP_VRAM_SEGMENTS 8
#define GWP_VRAM_MAX_FILES (1 + GW_IMAGE_MAX_SEGMENTS) /* the head and its segments */
/* The files of pid's VRAM image in the directory dirfd: "gpuwarm-vram-<pid>.img" (the head) and
 * its segments "gpuwarm-vram-<pid>.img.seg-<k>" (with a store, links to its files: gwp-store.h).
 *   create: remove any old set, create the head and GWP_VRAM_SEGMENTS segments, new, O_RDWR
 *           (what Suspend's "image_fd" and "segment_fds" take);
 *   else:   open the head and the segments its header names, for reading (a head this cannot
 *           read comes alone: gpu-warmd says what is wrong with it); regular files only.
 * ret_fds[0] is the head, ret_fds[1..] the segments in order; *ret_n counts them all (at most
 * max). 0, or a negative errno with why in err, nothing left open (and, creating, nothing left
 * behind). */
int gwp_vram_files_open(int dirfd, int pid, int create, const struct gwp_store *store,
			int *ret_fds, unsigned max, unsigned *ret_n, char *err, size_t len);
/* Close fds[0..n) (those >= 0). */
void gwp_vram_files_close(int *fds, unsigned n);
/* Remove pid's VRAM image files from dirfd: the head and every segment there is (and the
 * store's files they link to). 0 or the first failure other than ENOENT. */
int gwp_vram_files_unlink(int dirfd, int pid, const struct gwp_store *store);

/* The JSON text (malloc'd, caller frees), or NULL when out of memory. */
char *gwp_image_encode(const struct gwp_image *img);
/* Parse and check bounds. Returns 0 or -EBADMSG (malformed), -ENOMEM. */
int gwp_image_parse(const char *text, size_t len, struct gwp_image *ret_img);

/* Write gpuwarm-<pid>.json into the directory dirfd (AT_FDCWD allowed), atomically (a temporary
 * file renamed). Returns 0 or a negative errno. */
int gwp_image_write(int dirfd, const struct gwp_image *img);
/* Read gpuwarm-<pid>.json. -ENOENT when there is none. */
int gwp_image_read(int dirfd, int pid, struct gwp_image *ret_img);
/* Find the file whose vpid is vpid (the process was restored under another host pid), among
 * the records of dump (NULL: every record). -ENOENT when none matches, -ENOTUNIQ when more than
 * one does. */
int gwp_image_find_vpid(int dirfd, const char *dump, int vpid, struct gwp_image *ret_img);

/* A fresh dump id: 32 hex digits from getrandom(). */
void gwp_dump_id_new(char *buf, size_t len);
/* Write gpuwarm-dump.json naming dump, atomically. 0 or a negative errno. */
int gwp_dump_mark(int dirfd, const char *dump);
/* The dump gpuwarm-dump.json names: 0, -ENOENT (no such file), -EBADMSG, other errnos. */
int gwp_dump_marked(int dirfd, char *buf, size_t len);
/* Remove every gpuwarm-<pid>.json that dump did not write (unreadable ones included), and the
 * gpuwarm-vram-<pid>.img beside it with its segment files: how many records were removed, or a negative errno (the
 * first failure; the others are still tried). */
int gwp_image_remove_stale(int dirfd, const char *dump, const struct gwp_store *store);

/* Call fn for every record in dirfd (of the dump named, or every one when dump is NULL).
 * Returns how many, or a negative errno. */
int gwp_image_each(int dirfd, const char *dump, int (*fn)(const struct gwp_image *img, void *arg),
		   void *arg);

#endif
