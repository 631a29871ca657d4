/* SPDX-License-Identifier: MIT */
#include "gwp-image.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "gw-proto.h"
#include "gw-vimg.h"


void gwp_image_name(int pid, char *buf, size_t len)
{
	snprintf(buf, len, "gpuwarm-%d.json", pid);
}

void gwp_vram_image_name(int pid, char *buf, size_t len)
{
	snprintf(buf, len, "gpuwarm-vram-%d.img", pid);
}

static int vram_segment_name(int pid, unsigned k, char *buf, size_t len)
{
	return (size_t)snprintf(buf, len, "gpuwarm-vram-%d.img.seg-%u", pid, k) >= len ? -1 : 0;
}

void gwp_vram_files_close(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (fds[i] >= 0) {
			close(fds[i]);
			fds[i] = -1;
		}
}

int gwp_vram_files_unlink(int dirfd, int pid, const struct gwp_store *store)
{
	char name[64];
	int r = 0, u;

	gwp_vram_image_name(pid, name, sizeof(name));
	if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
		r = -errno;
	/* Every segment there is: an earlier dump may have made more than this one would. */
	for (unsigned k = 0; k < GW_VIMG_MAX_SEGMENTS; k++) {
		vram_segment_name(pid, k, name, sizeof(name));
		u = gwp_store_unlink(store, dirfd, name);
		if (u < 0 && u != -ENOENT && r == 0)
			r = u;
	}
	return r;
}

/* The head: made in the images directory (never the store), or opened from it. */
static int open_head(int dirfd, const char *name, int create, const struct gwp_store *store,
		     char *err, size_t len)
{
	struct gwp_store none;

	if (!create)
		return gwp_store_open_file(store, dirfd, name, err, len);
	gwp_store_init(&none);
	return gwp_store_create(&none, dirfd, name, err, len);
}

int gwp_vram_files_open(int dirfd, int pid, int create, const struct gwp_store *store,
			int *ret_fds, unsigned max, unsigned *ret_n, char *err, size_t len)
{
	uint8_t header[GW_VIMG_HEADER_BYTES];
	unsigned want = 0, n = 0;
	struct gw_vimg v;
	char name[64];
	int r = 0;

	*ret_n = 0;
	if (max == 0)
		return -EINVAL;
	gwp_vram_image_name(pid, name, sizeof(name));
	if (create) {
		r = gwp_vram_files_unlink(dirfd, pid, store);
		if (r < 0) {
			snprintf(err, len, "cannot remove the VRAM image of an earlier dump: %s",
				 strerror(-r));
			return r;
		}
		want = GWP_VRAM_SEGMENTS < max - 1 ? GWP_VRAM_SEGMENTS : max - 1;
	}
	ret_fds[0] = open_head(dirfd, name, create, store, err, len);
	if (ret_fds[0] < 0)
		return ret_fds[0];
	n = 1;
	if (!create && gw_vimg_pread(ret_fds[0], header, sizeof(header), 0) == 0 &&
	    gw_vimg_decode_header(&v, header, sizeof(header), NULL, 0) == 0)
		want = v.nsegments;
	if (want > max - 1) {
		snprintf(err, len, "%s names %u segment files, more than %u", name, want, max - 1);
		r = -E2BIG;
		goto fail;
	}
	for (unsigned k = 0; k < want; k++, n++) {
		vram_segment_name(pid, k, name, sizeof(name));
		ret_fds[n] = create ? gwp_store_create(store, dirfd, name, err, len) :
				      gwp_store_open_file(store, dirfd, name, err, len);
		if (ret_fds[n] < 0) {
			r = ret_fds[n];
			goto fail;
		}
	}
	*ret_n = n;
	return 0;
fail:
	gwp_vram_files_close(ret_fds, n);
	if (create)
		gwp_vram_files_unlink(dirfd, pid, store);
	return r;
}

char *gwp_image_encode(const struct gwp_image *img)
{
	cJSON *root = cJSON_CreateObject(), *gpus;
	char *text = NULL;

	if (!root)
		return NULL;
	if (!cJSON_AddNumberToObject(root, "format", GWP_IMAGE_FORMAT) ||
	    !cJSON_AddNumberToObject(root, "pid", img->pid) ||
	    !cJSON_AddNumberToObject(root, "vpid", img->vpid) ||
	    !cJSON_AddNumberToObject(root, "restore_tid", img->restore_tid) ||
	    !cJSON_AddNumberToObject(root, "restore_vtid", img->restore_vtid) ||
	    !cJSON_AddStringToObject(root, "state", gwp_state_name(img->state)) ||
	    (img->dump[0] && !cJSON_AddStringToObject(root, "dump", img->dump)) ||
	    (img->fast && (!cJSON_AddBoolToObject(root, "fast", 1) ||
			   !cJSON_AddNumberToObject(root, "agent_tid", img->agent_tid))) ||
	    (img->fast && img->agent_vtid > 0 &&
	     !cJSON_AddNumberToObject(root, "agent_vtid", img->agent_vtid)) ||
	    (img->fast && img->vram_file && !cJSON_AddBoolToObject(root, "vram_file", 1)))
		goto out;
	gpus = cJSON_AddArrayToObject(root, "gpus");
	if (!gpus)
		goto out;
	for (unsigned i = 0; i < img->ngpus && i < GWP_IMAGE_MAX_GPUS; i++) {
		cJSON *g = cJSON_CreateObject();

		if (!g || !cJSON_AddItemToArray(gpus, g)) {
			cJSON_Delete(g);
			goto out;
		}
		if (!cJSON_AddStringToObject(g, "uuid", img->gpus[i].uuid) ||
		    !cJSON_AddStringToObject(g, "pci_bus_id", img->gpus[i].pci))
			goto out;
	}
	text = cJSON_PrintUnformatted(root);
out:
	cJSON_Delete(root);
	return text;
}

static int get_int(const cJSON *o, const char *key, uint64_t min, int *ret)
{
	uint64_t v;

	if (gw_json_get_u64(o, key, min, GW_PID_MAX, &v) < 0)
		return -EBADMSG;
	*ret = (int)v;
	return 0;
}

int gwp_image_parse(const char *text, size_t len, struct gwp_image *ret_img)
{
	struct gwp_image img;
	const cJSON *gpus, *g;
	const char *state, *dump;
	cJSON *root;
	uint64_t format;
	int r = -EBADMSG, rd;

	if (len > GWP_IMAGE_MAX_BYTES)
		return -EBADMSG;
	memset(&img, 0, sizeof(img));
	root = cJSON_ParseWithLength(text, len);
	if (!root)
		return -EBADMSG;
	if (!cJSON_IsObject(root) ||
	    gw_json_get_u64(root, "format", GWP_IMAGE_FORMAT, GWP_IMAGE_FORMAT, &format) < 0 ||
	    get_int(root, "pid", 1, &img.pid) < 0 || get_int(root, "vpid", 1, &img.vpid) < 0 ||
	    get_int(root, "restore_tid", 0, &img.restore_tid) < 0 ||
	    get_int(root, "restore_vtid", 0, &img.restore_vtid) < 0 ||
	    gw_json_get_string(root, "state", 32, &state) < 0 ||
	    gwp_state_parse(state, &img.state) < 0)
		goto out;
	/* optional: the fast path's */
	if (gw_json_get_bool(root, "fast", &img.fast) == -EINVAL ||
	    (img.fast && get_int(root, "agent_tid", 1, &img.agent_tid) < 0))
		goto out;
	/* ...and within it (members that mean nothing without "fast" are ignored) */
	if (img.fast && (gw_json_get_bool(root, "vram_file", &img.vram_file) == -EINVAL ||
			 (cJSON_GetObjectItemCaseSensitive(root, "agent_vtid") &&
			  get_int(root, "agent_vtid", 1, &img.agent_vtid) < 0)))
		goto out;
	/* optional: records of plugins before issue 7 do not say their dump */
	rd = gw_json_get_string(root, "dump", GWP_DUMP_ID_LEN, &dump);
	if (rd == -EINVAL)
		goto out;
	if (rd == 0)
		snprintf(img.dump, sizeof(img.dump), "%s", dump);
	gpus = cJSON_GetObjectItemCaseSensitive(root, "gpus");
	if (!cJSON_IsArray(gpus) || cJSON_GetArraySize(gpus) > GWP_IMAGE_MAX_GPUS)
		goto out;
	cJSON_ArrayForEach(g, gpus) {
		const char *uuid, *pci;

		if (gw_json_get_string(g, "uuid", GWP_UUID_LEN, &uuid) < 0 ||
		    gw_json_get_string(g, "pci_bus_id", GWP_PCI_LEN, &pci) < 0 ||
		    strncmp(uuid, "GPU-", 4) != 0)
			goto out;
		strcpy(img.gpus[img.ngpus].uuid, uuid);
		strcpy(img.gpus[img.ngpus].pci, pci);
		img.ngpus++;
	}
	*ret_img = img;
	r = 0;
out:
	cJSON_Delete(root);
	return r;
}

/* text into dirfd/name, through a temporary file renamed. */
static int write_atomic(int dirfd, const char *name, const char *text)
{
	char tmp[80];
	size_t len, off = 0;
	int fd, r = 0;

	snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
	len = strlen(text);
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
		off += (size_t)n;
	}
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r < 0)
		unlinkat(dirfd, tmp, 0);
	return r;
}

int gwp_image_write(int dirfd, const struct gwp_image *img)
{
	char name[64];
	char *text = gwp_image_encode(img);
	int r;

	if (!text)
		return -ENOMEM;
	gwp_image_name(img->pid, name, sizeof(name));
	r = write_atomic(dirfd, name, text);
	free(text);
	return r;
}

/* The text of dirfd/name (malloc'd, NUL-terminated, at most GWP_IMAGE_MAX_BYTES). */
static int read_text(int dirfd, const char *name, char **ret_buf, size_t *ret_len)
{
	char *buf;
	size_t got = 0;
	int fd, r = 0;

	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	buf = malloc(GWP_IMAGE_MAX_BYTES + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		ssize_t n = read(fd, buf + got, GWP_IMAGE_MAX_BYTES + 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got > GWP_IMAGE_MAX_BYTES) {
			r = -EBADMSG;
			goto out;
		}
	}
	buf[got] = '\0';
	*ret_buf = buf;
	*ret_len = got;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return r;
}

static int read_name(int dirfd, const char *name, struct gwp_image *ret_img)
{
	char *buf;
	size_t len;
	int r = read_text(dirfd, name, &buf, &len);

	if (r < 0)
		return r;
	r = gwp_image_parse(buf, len, ret_img);
	free(buf);
	return r;
}

/* "gpuwarm-<pid>.json" */
static int is_record_name(const char *name)
{
	int pid, used = 0;

	return sscanf(name, "gpuwarm-%d.json%n", &pid, &used) == 1 && used > 0 &&
	       name[used] == '\0';
}

/* A DIR over dirfd (AT_FDCWD allowed) that leaves dirfd open. */
static DIR *open_dir(int dirfd)
{
	int dfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;

	if (dfd < 0)
		return NULL;
	d = fdopendir(dfd);
	if (!d)
		close(dfd);
	return d;
}

int gwp_image_read(int dirfd, int pid, struct gwp_image *ret_img)
{
	struct gwp_image img;
	char name[64];
	int r;

	gwp_image_name(pid, name, sizeof(name));
	r = read_name(dirfd, name, &img);
	if (r < 0)
		return r;
	if (img.pid != pid)
		return -EBADMSG;
	*ret_img = img;
	return 0;
}

/* fn for every gpuwarm-*.json in dirfd, by name. Returns 0 or a negative errno. */
static int each_record_name(int dirfd, void (*fn)(int dirfd, const char *name, void *arg),
			    void *arg)
{
	struct dirent *e;
	DIR *d = open_dir(dirfd);

	if (!d)
		return -errno;
	while ((e = readdir(d)))
		if (is_record_name(e->d_name))
			fn(dirfd, e->d_name, arg);
	closedir(d);
	return 0;
}

struct each_args {
	const char *dump;
	int (*fn)(const struct gwp_image *img, void *arg);
	void *arg;
	int n;
};

static void each_one(int dirfd, const char *name, void *arg)
{
	struct each_args *a = arg;
	struct gwp_image img;

	if (read_name(dirfd, name, &img) < 0 || (a->dump && strcmp(img.dump, a->dump) != 0))
		return;
	a->fn(&img, a->arg);
	a->n++;
}

int gwp_image_each(int dirfd, const char *dump, int (*fn)(const struct gwp_image *img, void *arg),
		   void *arg)
{
	struct each_args a = { .dump = dump, .fn = fn, .arg = arg };
	int r = each_record_name(dirfd, each_one, &a);

	return r < 0 ? r : a.n;
}

struct vpid_search {
	int vpid;
	int matches;
	struct gwp_image found;
};

static int match_vpid(const struct gwp_image *img, void *arg)
{
	struct vpid_search *s = arg;

	if (img->vpid == s->vpid) {
		s->found = *img;
		s->matches++;
	}
	return 0;
}

int gwp_image_find_vpid(int dirfd, const char *dump, int vpid, struct gwp_image *ret_img)
{
	struct vpid_search s = { .vpid = vpid };
	int r = gwp_image_each(dirfd, dump, match_vpid, &s);

	if (r < 0)
		return r;
	if (s.matches == 0)
		return -ENOENT;
	if (s.matches > 1)
		return -ENOTUNIQ;
	*ret_img = s.found;
	return 0;
}

void gwp_dump_id_new(char *buf, size_t len)
{
	unsigned char raw[16];
	size_t got = 0;

	while (got < sizeof(raw)) {
		ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got < sizeof(raw)) { /* no getrandom(): unique enough for telling dumps apart */
		struct timespec ts;
		unsigned long long v[2];

		clock_gettime(CLOCK_REALTIME, &ts);
		v[0] = (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
		v[1] = ((unsigned long long)getpid() << 32) ^ (unsigned long long)(uintptr_t)buf;
		memcpy(raw, v, sizeof(raw));
	}
	buf[0] = '\0';
	for (size_t i = 0; i < sizeof(raw) && 2 * i + 2 < len; i++)
		snprintf(buf + 2 * i, len - 2 * i, "%02x", raw[i]);
}

int gwp_dump_mark(int dirfd, const char *dump)
{
	cJSON *root = cJSON_CreateObject();
	char *text = NULL;
	int r = -ENOMEM;

	if (root && cJSON_AddNumberToObject(root, "format", GWP_IMAGE_FORMAT) &&
	    cJSON_AddStringToObject(root, "dump", dump))
		text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (text)
		r = write_atomic(dirfd, GWP_DUMP_FILE, text);
	free(text);
	return r;
}

int gwp_dump_marked(int dirfd, char *buf, size_t len)
{
	const char *dump;
	uint64_t format;
	cJSON *root;
	char *text;
	size_t n;
	int r = read_text(dirfd, GWP_DUMP_FILE, &text, &n);

	if (r < 0)
		return r;
	root = cJSON_ParseWithLength(text, n);
	free(text);
	r = -EBADMSG;
	if (cJSON_IsObject(root) &&
	    gw_json_get_u64(root, "format", GWP_IMAGE_FORMAT, GWP_IMAGE_FORMAT, &format) == 0 &&
	    gw_json_get_string(root, "dump", GWP_DUMP_ID_LEN, &dump) == 0 && dump[0] &&
	    strlen(dump) < len) {
		snprintf(buf, len, "%s", dump);
		r = 0;
	}
	cJSON_Delete(root);
	return r;
}

struct stale_args {
	const char *dump;
	const struct gwp_store *store;
	int removed;
	int r;
};

static void remove_if_stale(int dirfd, const char *name, void *arg)
{
	struct stale_args *a = arg;
	struct gwp_image img;
	int pid = 0;

	if (read_name(dirfd, name, &img) == 0 && strcmp(img.dump, a->dump) == 0)
		return;
	if (unlinkat(dirfd, name, 0) == 0)
		a->removed++;
	else if (errno != ENOENT && a->r == 0)
		a->r = -errno;
	/* Its VRAM image: this dump wrote none under that pid, or the record would be its. */
	if (sscanf(name, "gpuwarm-%d.json", &pid) == 1 && pid > 0) {
		int u = gwp_vram_files_unlink(dirfd, pid, a->store);

		if (u < 0 && a->r == 0)
			a->r = u;
	}
}

int gwp_image_remove_stale(int dirfd, const char *dump, const struct gwp_store *store)
{
	struct stale_args a = { .dump = dump, .store = store };
	int r = each_record_name(dirfd, remove_if_stale, &a);

	if (r < 0)
		return r;
	return a.r < 0 ? a.r : a.removed;
}
