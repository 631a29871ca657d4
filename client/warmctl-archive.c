/* SPDX-License-Identifier: MIT */
/*
 * warmctl inspect ARCHIVE: what an exported checkpoint (`podman container checkpoint --export`,
 * tar or tar.gz) holds, read once from front to back through common/gw-tar.h: CRIU's processes
 * and page images, the plugin's records, the VRAM images with their segment files (decoded as
 * `inspect FILE` does) and podman's own files, with the sizes and the restore time the images
 * predict. A segment file archived as a symlink (a checkpoint taken with gpu-warmd's
 * --vram-store) is kept outside the archive: its link target is shown, its data is not counted
 * among the archive's bytes; so is a CRIU page image archived as a symlink (the same store),
 * whose size is that of its target when this host has it. The archive is untrusted: every count
 * and size read is bounded, and a link target is only stat()ed, never opened.
 */
#include "warmctl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gw-tar.h"
#include "gw-vimg.h"
#include "warmctl-inspect.h"

#define MIB(x) ((double)(x) / 1048576.0)
#define ARC_MAX_IMAGES 256
#define ARC_MAX_SEGS (ARC_MAX_IMAGES * GW_VIMG_MAX_SEGMENTS)
#define ARC_MAX_LISTED 4096                 /* page images, pids, podman files listed */
#define ARC_MAX_JSON_BYTES (1u << 20)       /* a record or podman's config.dump */
#define ARC_MAX_TABLE_BYTES ((uint64_t)256 << 20)

struct arc_image {
	char name[GW_TAR_MAX_NAME + 1];
	struct gw_vimg v;
	cJSON *o; /* in the result's "images" */
	bool ok;
};

struct arc_seg {
	char name[GW_TAR_MAX_NAME + 1];
	char *link; /* a symlink's target: the segment is kept outside the archive */
	uint64_t bytes;
	bool magic_ok;
};

struct arc {
	cJSON *result, *images, *records, *pages, *pids, *podman;
	struct arc_image *img;
	unsigned nimg;
	struct arc_seg *seg;
	unsigned nseg, nlinks;
	unsigned outside_segs; /* the images' segment files that are links */
	uint64_t outside_bytes; /* their data bytes */
	unsigned outside_pages, outside_pages_found; /* page images that are links; targets here */
	uint64_t outside_page_bytes; /* the sizes of the targets found */
	uint64_t entries, criu_files, criu_bytes, page_bytes, threads, vram_bytes, podman_bytes;
	bool inventory;
};

bool wc_inspect_is_archive(const char *path)
{
	uint8_t b[263];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return false;
	n = read(fd, b, sizeof(b));
	close(fd);
	if (n >= 2 && b[0] == 0x1f && b[1] == 0x8b)
		return true;
	return n == (ssize_t)sizeof(b) && memcmp(b + 257, "ustar", 5) == 0;
}

static const char *base_name(const char *name)
{
	const char *s = strrchr(name, '/');

	return s ? s + 1 : name;
}

/* "PREFIX<digits>SUFFIX" with the digits into *ret. */
static bool numbered(const char *name, const char *prefix, const char *suffix, long *ret)
{
	size_t p = strlen(prefix), s = strlen(suffix), n = strlen(name);
	char *end;
	long v;

	if (n <= p + s || strncmp(name, prefix, p) != 0 || strcmp(name + n - s, suffix) != 0 ||
	    name[p] < '0' || name[p] > '9')
		return false;
	errno = 0;
	v = strtol(name + p, &end, 10);
	if (errno || end != name + n - s)
		return false;
	*ret = v;
	return true;
}

/* The whole entry (at most max bytes) into a new NUL-terminated buffer. */
static int read_entry(struct gw_tar *t, const struct gw_tar_entry *e, uint64_t max, char **ret,
		      char *err, size_t errlen)
{
	char *buf;
	long n;

	if (e->size > max) {
		snprintf(err, errlen, "%.200s: %" PRIu64 " bytes, more than the %" PRIu64 " read",
			 e->name, e->size, max);
		return -E2BIG;
	}
	buf = malloc((size_t)e->size + 1);
	if (!buf)
		return -ENOMEM;
	n = e->size ? gw_tar_read(t, buf, (size_t)e->size, err, errlen) : 0;
	if (n < 0) {
		free(buf);
		return (int)n;
	}
	buf[n] = '\0';
	*ret = buf;
	return 0;
}

static void add_sized(cJSON *list, const char *name, uint64_t bytes)
{
	cJSON *x;

	if (cJSON_GetArraySize(list) >= ARC_MAX_LISTED)
		return;
	x = cJSON_CreateObject();
	if (!x)
		return;
	cJSON_AddStringToObject(x, "name", name);
	cJSON_AddNumberToObject(x, "bytes", (double)bytes);
	cJSON_AddItemToArray(list, x);
}

/* gpuwarm-vram-<pid>.img: its header and tables, decoded and checked. */
static int take_image(struct arc *a, struct gw_tar *t, const struct gw_tar_entry *e, char *err,
		      size_t errlen)
{
	struct arc_image *im;
	char why[256] = "";
	uint8_t *buf = NULL;
	uint64_t tables;
	long n;
	int r;

	if (a->nimg == ARC_MAX_IMAGES) {
		snprintf(err, errlen, "more than %d VRAM images", ARC_MAX_IMAGES);
		return -E2BIG;
	}
	im = &a->img[a->nimg];
	snprintf(im->name, sizeof(im->name), "%s", e->name);
	im->o = cJSON_CreateObject();
	if (!im->o)
		return -ENOMEM;
	a->nimg++;
	cJSON_AddItemToArray(a->images, im->o);
	cJSON_AddStringToObject(im->o, "path", e->name);
	buf = malloc(GW_VIMG_HEADER_BYTES);
	if (!buf)
		return -ENOMEM;
	n = gw_tar_read(t, buf, GW_VIMG_HEADER_BYTES, err, errlen);
	if (n < 0) {
		free(buf);
		return (int)n;
	}
	r = -EBADMSG;
	if (n < GW_VIMG_HEADER_BYTES) {
		snprintf(why, sizeof(why), "%ld bytes, shorter than an image header", n);
	} else if (gw_vimg_decode_header(&im->v, buf, (size_t)n, why, sizeof(why)) == 0) {
		tables = gw_vimg_table_bytes(&im->v);
		if (tables > ARC_MAX_TABLE_BYTES || GW_VIMG_HEADER_BYTES + tables > e->size) {
			snprintf(why, sizeof(why), "tables of %" PRIu64 " bytes do not fit",
				 tables);
		} else {
			uint8_t *all = realloc(buf, GW_VIMG_HEADER_BYTES + (size_t)tables);

			if (!all) {
				free(buf);
				return -ENOMEM;
			}
			buf = all;
			n = gw_tar_read(t, buf + GW_VIMG_HEADER_BYTES, (size_t)tables, err, errlen);
			if (n < 0) {
				free(buf);
				return (int)n;
			}
			r = gw_vimg_decode(&im->v, buf, GW_VIMG_HEADER_BYTES + (size_t)tables, why,
					   sizeof(why));
		}
	}
	free(buf);
	if (r == 0 && im->v.file_bytes != e->size) {
		snprintf(why, sizeof(why), "%" PRIu64 " bytes in the archive, the header says %"
			 PRIu64, e->size, im->v.file_bytes);
		gw_vimg_clear(&im->v);
		r = -EBADMSG;
	}
	if (r < 0) {
		cJSON_AddStringToObject(im->o, "error", why[0] ? why : strerror(-r));
		return 0; /* the image is unusable, the archive may go on */
	}
	im->ok = true;
	wc_inspect_image_fields(im->o, &im->v);
	cJSON_AddStringToObject(im->o, "checksums", "not verified");
	return 0;
}

/* "gpuwarm-vram-<pid>.img.seg-<k>", as a base name. */
static bool segment_name(const char *b)
{
	return strncmp(b, "gpuwarm-vram-", 13) == 0 && strstr(b, ".img.seg-");
}

/* A new segment named as e in a->seg, or NULL (err says why) when there are too many. */
static struct arc_seg *new_segment(struct arc *a, const struct gw_tar_entry *e, char *err,
				   size_t errlen)
{
	struct arc_seg *s;

	if (a->nseg == ARC_MAX_SEGS) {
		snprintf(err, errlen, "more than %d VRAM segment files", ARC_MAX_SEGS);
		return NULL;
	}
	s = &a->seg[a->nseg++];
	snprintf(s->name, sizeof(s->name), "%s", e->name);
	s->bytes = e->size;
	return s;
}

static int take_segment(struct arc *a, struct gw_tar *t, const struct gw_tar_entry *e, char *err,
			size_t errlen)
{
	struct arc_seg *s = new_segment(a, e, err, errlen);
	char magic[8];
	long n;

	if (!s)
		return -E2BIG;
	n = gw_tar_read(t, magic, sizeof(magic), err, errlen);
	if (n < 0)
		return (int)n;
	s->magic_ok = n == sizeof(magic) && memcmp(magic, GW_VIMG_SEG_MAGIC, sizeof(magic)) == 0;
	return 0;
}

/* A segment file as a symlink: its data is where the link points, outside the archive. */
static int take_linked_segment(struct arc *a, const struct gw_tar_entry *e, char *err,
			       size_t errlen)
{
	struct arc_seg *s = new_segment(a, e, err, errlen);

	if (!s)
		return -E2BIG;
	s->link = strdup(e->linkname);
	if (!s->link)
		return -ENOMEM;
	a->nlinks++;
	return 0;
}

/* A page image as a symlink (into gpu-warmd's store): listed with its target, sized from the
 * target when this host has it as a regular file. */
static int take_linked_pages(struct arc *a, const char *name, const char *target)
{
	char path[GW_TAR_MAX_NAME + 2];
	const char *p = target;
	struct stat st;
	bool here;
	cJSON *x;

	/* the plugin's links climb to / with "../" (gwp-store.h): from here, the path under / */
	while (strncmp(p, "../", 3) == 0)
		p += 3;
	snprintf(path, sizeof(path), "%s%s", p == target ? "" : "/", p);
	here = path[0] == '/' && stat(path, &st) == 0 && S_ISREG(st.st_mode);

	a->outside_pages++;
	if (here) {
		a->outside_pages_found++;
		a->outside_page_bytes += (uint64_t)st.st_size;
	}
	if (cJSON_GetArraySize(a->pages) >= ARC_MAX_LISTED)
		return 0;
	x = cJSON_CreateObject();
	if (!x)
		return -ENOMEM;
	cJSON_AddStringToObject(x, "name", name);
	cJSON_AddBoolToObject(x, "outside", true);
	cJSON_AddStringToObject(x, "link", target);
	cJSON_AddStringToObject(x, "path", path);
	if (here)
		cJSON_AddNumberToObject(x, "bytes", (double)st.st_size);
	else
		cJSON_AddStringToObject(x, "error", "the link's target is not on this host");
	cJSON_AddItemToArray(a->pages, x);
	return 0;
}

/* A JSON file: the plugin's record, or podman's config.dump (name and image taken). */
static int take_json(struct arc *a, struct gw_tar *t, const struct gw_tar_entry *e, bool record,
		     char *err, size_t errlen)
{
	cJSON *j, *x;
	char *text = NULL;
	int r = read_entry(t, e, ARC_MAX_JSON_BYTES, &text, err, errlen);

	if (r == -E2BIG)
		return 0; /* not what we look for: skipped */
	if (r < 0)
		return r;
	j = cJSON_Parse(text);
	free(text);
	if (!record) {
		const char *keys[] = { "name", "rootfsImageName", "rootfsImage" };
		cJSON *c = cJSON_AddObjectToObject(a->result, "container");

		for (size_t i = 0; c && i < sizeof(keys) / sizeof(keys[0]); i++) {
			x = cJSON_GetObjectItemCaseSensitive(j, keys[i]);
			if (cJSON_IsString(x))
				cJSON_AddStringToObject(c, keys[i], x->valuestring);
		}
		cJSON_Delete(j);
		return 0;
	}
	if (cJSON_GetArraySize(a->records) >= ARC_MAX_LISTED || !cJSON_IsObject(j)) {
		if (!cJSON_IsObject(j) && (x = cJSON_CreateObject())) {
			cJSON_AddStringToObject(x, "error", "not a JSON object");
			cJSON_AddStringToObject(x, "file", e->name);
			cJSON_AddItemToArray(a->records, x);
		}
		cJSON_Delete(j);
		return 0;
	}
	cJSON_AddStringToObject(j, "file", e->name);
	cJSON_AddItemToArray(a->records, j);
	return 0;
}

static int take_entry(struct arc *a, struct gw_tar *t, const struct gw_tar_entry *e, char *err,
		      size_t errlen)
{
	const char *b = base_name(e->name);
	bool in_criu = strncmp(e->name, "checkpoint/", 11) == 0;
	long id;

	a->entries++;
	if (e->type == '2' && segment_name(b))
		return take_linked_segment(a, e, err, errlen);
	if (e->type == '2' && in_criu && numbered(b, "pages-", ".img", &id))
		return take_linked_pages(a, b, e->linkname);
	if (e->type != '0')
		return 0;
	if (numbered(b, "gpuwarm-vram-", ".img", &id)) {
		a->vram_bytes += e->size;
		return take_image(a, t, e, err, errlen);
	}
	if (segment_name(b)) {
		a->vram_bytes += e->size;
		return take_segment(a, t, e, err, errlen);
	}
	if (numbered(b, "gpuwarm-", ".json", &id))
		return take_json(a, t, e, true, err, errlen);
	if (!in_criu) {
		a->podman_bytes += e->size;
		add_sized(a->podman, e->name, e->size);
		return strcmp(b, "config.dump") == 0 ? take_json(a, t, e, false, err, errlen) : 0;
	}
	a->criu_files++;
	a->criu_bytes += e->size;
	if (strcmp(b, "inventory.img") == 0) {
		a->inventory = true;
	} else if (numbered(b, "pages-", ".img", &id)) {
		a->page_bytes += e->size;
		add_sized(a->pages, b, e->size);
	} else if (numbered(b, "core-", ".img", &id)) {
		a->threads++;
	} else if (numbered(b, "mm-", ".img", &id) &&
		   cJSON_GetArraySize(a->pids) < ARC_MAX_LISTED) {
		cJSON_AddItemToArray(a->pids, cJSON_CreateNumber((double)id));
	}
	return 0;
}

/* Segment file k of image im, found by name among those the archive holds, into x: false when
 * it is missing or does not fit the image. A link is kept outside the archive: not checked. */
static bool match_segment(struct arc *a, const struct arc_image *im, uint32_t k, cJSON *x)
{
	char name[GW_TAR_MAX_NAME + 32];
	const struct arc_seg *s = NULL;
	uint64_t want = gw_vimg_segment_file_bytes(&im->v, k);

	snprintf(name, sizeof(name), "%s.seg-%u", im->name, k);
	for (unsigned j = 0; j < a->nseg && !s; j++)
		if (strcmp(a->seg[j].name, name) == 0)
			s = &a->seg[j];
	cJSON_AddStringToObject(x, "path", name);
	cJSON_AddNumberToObject(x, "data_bytes", (double)im->v.seg_bytes[k]);
	cJSON_AddNumberToObject(x, "file_bytes", (double)want);
	if (s && s->link) {
		cJSON_AddBoolToObject(x, "outside", true);
		cJSON_AddStringToObject(x, "link", s->link);
		a->outside_segs++;
		a->outside_bytes += im->v.seg_bytes[k];
		return true;
	}
	if (!s || s->bytes != want || !s->magic_ok) {
		cJSON_AddStringToObject(x, "error", !s ? "not in the archive" :
					s->bytes != want ? "size does not fit the image" :
					"not a segment file");
		return false;
	}
	return true;
}

/* Each image's segment files, found by name among those the archive holds. */
static void match_segments(struct arc *a)
{
	for (unsigned i = 0; i < a->nimg; i++) {
		struct arc_image *im = &a->img[i];
		cJSON *list;
		bool bad = false;

		if (!im->ok || im->v.nsegments == 0)
			continue;
		list = cJSON_AddArrayToObject(im->o, "segment_files");
		for (uint32_t k = 0; list && k < im->v.nsegments; k++) {
			cJSON *x = cJSON_CreateObject();

			if (!x)
				break;
			if (!match_segment(a, im, k, x))
				bad = true;
			cJSON_AddItemToArray(list, x);
		}
		if (bad)
			cJSON_AddStringToObject(im->o, "error", "a segment file is missing or does "
						"not fit the image (segment_files says which)");
	}
}

static void summarize(struct arc *a, const struct gw_tar *t, const char *path)
{
	double predicted = 0;
	const cJSON *o;

	cJSON_AddStringToObject(a->result, "archive", path);
	cJSON_AddBoolToObject(a->result, "compressed", gw_tar_compressed(t));
	cJSON_AddNumberToObject(a->result, "archive_bytes", (double)gw_tar_raw_bytes(t));
	cJSON_AddNumberToObject(a->result, "unpacked_bytes", (double)gw_tar_bytes(t));
	cJSON_AddNumberToObject(a->result, "entries", (double)a->entries);
	cJSON_AddBoolToObject(a->result, "criu_checkpoint", a->inventory);
	cJSON_AddNumberToObject(a->result, "criu_files", (double)a->criu_files);
	cJSON_AddNumberToObject(a->result, "criu_image_bytes", (double)a->criu_bytes);
	cJSON_AddNumberToObject(a->result, "criu_threads", (double)a->threads);
	cJSON_AddNumberToObject(a->result, "page_bytes", (double)a->page_bytes);
	cJSON_AddNumberToObject(a->result, "vram_image_bytes", (double)a->vram_bytes);
	cJSON_AddNumberToObject(a->result, "vram_outside_bytes", (double)a->outside_bytes);
	cJSON_AddNumberToObject(a->result, "vram_outside_segment_files", (double)a->outside_segs);
	cJSON_AddNumberToObject(a->result, "page_outside_files", (double)a->outside_pages);
	cJSON_AddNumberToObject(a->result, "page_outside_files_found",
				(double)a->outside_pages_found);
	cJSON_AddNumberToObject(a->result, "page_outside_bytes", (double)a->outside_page_bytes);
	cJSON_AddNumberToObject(a->result, "podman_bytes", (double)a->podman_bytes);
	cJSON_ArrayForEach(o, a->images) {
		const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "predicted_restore_s");

		if (cJSON_IsNumber(p))
			predicted += p->valuedouble;
	}
	cJSON_AddNumberToObject(a->result, "predicted_vram_restore_s", predicted);
}

static double num(const cJSON *o, const char *key)
{
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(x) ? x->valuedouble : 0;
}

static void print_records(const cJSON *records)
{
	const cJSON *r;

	cJSON_ArrayForEach(r, records) {
		char f[256], pid[32], vpid[32], state[32];
		const cJSON *gpus = cJSON_GetObjectItemCaseSensitive(r, "gpus"), *g;

		printf("  %s: pid %s (%s in the container), %s, %s%s",
		       wc_str(r, "file", f, sizeof(f)), wc_num(r, "pid", 0, pid, sizeof(pid)),
		       wc_num(r, "vpid", 0, vpid, sizeof(vpid)),
		       wc_str(r, "state", state, sizeof(state)),
		       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "fast")) ?
			       "fast path" : "driver path",
		       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "vram_file")) ?
			       ", VRAM in the VRAM image" : "");
		cJSON_ArrayForEach(g, gpus) {
			char u[64];

			printf(", %s", wc_str(g, "uuid", u, sizeof(u)));
		}
		printf("\n");
	}
}

static void print_archive(const struct arc *a)
{
	const cJSON *r = a->result, *c = cJSON_GetObjectItemCaseSensitive(r, "container"), *x;
	char b1[4096], b2[4096];

	printf("%s: %s%s, %.1f MiB (%.1f MiB unpacked), %" PRIu64 " entries\n",
	       wc_str(r, "archive", b1, sizeof(b1)),
	       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "compressed")) ?
		       "gzip-compressed tar" : "tar",
	       a->inventory ? " with a CRIU checkpoint" : " without a CRIU checkpoint",
	       MIB(num(r, "archive_bytes")), MIB(num(r, "unpacked_bytes")),
	       a->entries);
	if (c)
		printf("container %s, image %s\n", wc_str(c, "name", b1, sizeof(b1)),
		       wc_str(c, "rootfsImageName", b2, sizeof(b2)));
	printf("CRIU: %.1f MiB in %" PRIu64 " files; %d processes, %" PRIu64 " threads; page "
	       "images %.1f MiB\n", MIB(a->criu_bytes), a->criu_files,
	       cJSON_GetArraySize(a->pids), a->threads, MIB(a->page_bytes));
	cJSON_ArrayForEach(x, a->pages) {
		const cJSON *link = cJSON_GetObjectItemCaseSensitive(x, "link");

		if (!cJSON_IsString(link))
			printf("  %-24s %10.1f MiB\n", wc_str(x, "name", b1, sizeof(b1)),
			       MIB(num(x, "bytes")));
		else if (cJSON_GetObjectItemCaseSensitive(x, "bytes"))
			printf("  %-24s %10.1f MiB -> %s (outside the archive)\n",
			       wc_str(x, "name", b1, sizeof(b1)), MIB(num(x, "bytes")),
			       wc_str(x, "path", b2, sizeof(b2)));
		else
			printf("  %-24s -> %s (outside the archive; not on this host)\n",
			       wc_str(x, "name", b1, sizeof(b1)), wc_str(x, "path", b2, sizeof(b2)));
	}
	if (a->outside_pages > 0)
		printf("page images kept outside the archive (links into gpu-warmd's store): %u, "
		       "%.1f MiB in the %u found on this host\n", a->outside_pages,
		       MIB(a->outside_page_bytes), a->outside_pages_found);
	if (cJSON_GetArraySize(a->records) > 0) {
		printf("gpuwarm plugin records:\n");
		print_records(a->records);
	}
	cJSON_ArrayForEach(x, a->images)
		wc_inspect_print_image(x);
	printf("VRAM images: %.1f MiB in %d images (%u segment files)\n", MIB(a->vram_bytes),
	       cJSON_GetArraySize(a->images), a->nseg - a->nlinks);
	if (a->outside_segs > 0)
		printf("VRAM data kept outside the archive (links into gpu-warmd's VRAM store): "
		       "%.1f MiB in %u segment files\n", MIB(a->outside_bytes), a->outside_segs);
	printf("podman's files: %.1f MiB\n", MIB(a->podman_bytes));
	cJSON_ArrayForEach(x, a->podman)
		printf("  %-24s %10.1f MiB\n", wc_str(x, "name", b1, sizeof(b1)),
		       MIB(num(x, "bytes")));
	printf("restore: VRAM images predict %.2f s; `podman container restore --import` unpacks "
	       "%.1f MiB before CRIU starts, and CRIU reads %.1f MiB of page images\n",
	       num(r, "predicted_vram_restore_s"),
	       MIB(num(r, "unpacked_bytes")), MIB(a->page_bytes + a->outside_page_bytes));
}

static int arc_init(struct arc *a)
{
	memset(a, 0, sizeof(*a));
	a->result = cJSON_CreateObject();
	a->img = calloc(ARC_MAX_IMAGES, sizeof(*a->img));
	a->seg = calloc(ARC_MAX_SEGS, sizeof(*a->seg));
	if (!a->result || !a->img || !a->seg)
		return -ENOMEM;
	a->images = cJSON_AddArrayToObject(a->result, "images");
	a->records = cJSON_AddArrayToObject(a->result, "gpuwarm_records");
	a->pids = cJSON_AddArrayToObject(a->result, "criu_pids");
	a->pages = cJSON_AddArrayToObject(a->result, "page_images");
	a->podman = cJSON_AddArrayToObject(a->result, "podman_files");
	return a->images && a->records && a->pids && a->pages && a->podman ? 0 : -ENOMEM;
}

static void arc_finish(struct arc *a)
{
	for (unsigned i = 0; a->img && i < a->nimg; i++)
		gw_vimg_clear(&a->img[i].v);
	for (unsigned i = 0; a->seg && i < a->nseg; i++)
		free(a->seg[i].link);
	free(a->img);
	free(a->seg);
	cJSON_Delete(a->result);
}

/* Every entry of the archive at path into a: 0, or a negative errno with the cause in err. */
static int arc_read(struct arc *a, const char *path, char *err, size_t errlen)
{
	struct gw_tar_entry *e = malloc(sizeof(*e));
	struct gw_tar *t = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;

	if (fd < 0 || !e) {
		r = fd < 0 ? -errno : -ENOMEM;
		snprintf(err, errlen, "%s", strerror(-r));
		goto out;
	}
	r = gw_tar_open_fd(fd, &t);
	if (r < 0) {
		snprintf(err, errlen, "%s", strerror(-r));
		goto out;
	}
	while ((r = gw_tar_next(t, e, err, errlen)) > 0) {
		r = take_entry(a, t, e, err, errlen);
		if (r < 0)
			break;
	}
	if (r == 0) {
		match_segments(a);
		summarize(a, t, path);
	}
out:
	gw_tar_destroy(t);
	if (fd >= 0)
		close(fd);
	free(e);
	return r;
}

int wc_inspect_archive(struct wc_ctx *ctx, const struct wc_args *args)
{
	char err[512] = "";
	struct arc a;
	const cJSON *o;
	int code = WC_EXIT_OK, r;

	if (args->verify)
		return wc_usage_error(ctx, "--verify reads image files and directories, not "
				      "archives: unpack it first (tar -xf)");
	r = arc_init(&a);
	if (r == 0)
		r = arc_read(&a, args->path, err, sizeof(err));
	if (r < 0) {
		arc_finish(&a);
		return wc_image_error(ctx, "%s: %s", args->path, err[0] ? err : strerror(-r));
	}
	cJSON_ArrayForEach(o, a.images)
		if (cJSON_GetObjectItemCaseSensitive(o, "error"))
			code = WC_EXIT_FAILED;
	if (ctx->json) {
		r = wc_print_json_result(ctx, a.result);
		if (r != WC_EXIT_OK)
			code = r;
	} else {
		print_archive(&a);
		if (fflush(stdout) != 0)
			code = WC_EXIT_FAILED;
	}
	arc_finish(&a);
	return code;
}
