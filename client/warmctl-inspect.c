/* SPDX-License-Identifier: MIT */
/* warmctl inspect: what a VRAM image file, or a checkpoint directory, holds. Reads files only. */
#include "warmctl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gw-cuda.h"
#include "gw-vimg.h"
#include "warmctl-inspect.h"

#define MIB(x) ((double)(x) / 1048576.0)

/* The files an image's data is in: the head (version 1) or its segments, and where each piece
 * of the data section lies in them. */
struct data_files {
	int fds[GW_VIMG_MAX_SEGMENTS];
	unsigned nfds;
	struct gw_vimg_piece *pieces;
	size_t npieces;
};

static int pieces_load(const struct gw_vimg *v, struct data_files *f)
{
	struct gw_vimg_pieces it;
	struct gw_vimg_piece p;
	size_t cap = 0;

	gw_vimg_pieces_start(v, GW_VIMG_MAX_STRIPE_BYTES, &it);
	while (gw_vimg_pieces_next(v, &it, &p)) {
		if (f->npieces == cap) {
			size_t n = cap ? cap * 2 : 64;
			struct gw_vimg_piece *q = realloc(f->pieces, n * sizeof(*q));

			if (!q)
				return -ENOMEM;
			f->pieces = q;
			cap = n;
		}
		f->pieces[f->npieces++] = p;
	}
	return 0;
}

/* len bytes of the data section from offset x. */
static int read_data(const struct data_files *f, void *buf, uint64_t len, uint64_t x)
{
	size_t lo = 0, hi = f->npieces;

	while (lo < hi) { /* the first piece that ends after x */
		size_t mid = lo + (hi - lo) / 2;

		if (f->pieces[mid].data_offset + f->pieces[mid].len <= x)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (uint64_t done = 0; done < len; lo++) {
		const struct gw_vimg_piece *p;
		uint64_t skip, n;
		int r;

		if (lo >= f->npieces || f->pieces[lo].segment >= f->nfds)
			return -ENODATA;
		p = &f->pieces[lo];
		skip = x + done - p->data_offset;
		n = p->len - skip < len - done ? p->len - skip : len - done;
		r = gw_vimg_pread(f->fds[p->segment], (char *)buf + done, n, p->offset + skip);
		if (r < 0)
			return r;
		done += n;
	}
	return 0;
}

/* Check every data chunk against its checksum. Returns the number of bad chunks, or < 0. */
static long verify_data(const struct data_files *f, const struct gw_vimg *v, char *first_bad,
			size_t len)
{
	uint64_t *buf = malloc(v->chunk_bytes);
	long bad = 0;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	for (uint32_t i = 0; i < v->nranges && r == 0; i++) {
		const struct gw_vimg_range *rg = &v->ranges[i];

		for (uint32_t k = 0; k < rg->nruns && r == 0; k++) {
			const struct gw_vimg_run *run = &v->runs[rg->first_run + k];
			uint64_t off, n;

			if (run->zero)
				continue;
			gw_vimg_run_span(v, rg, run, &off, &n);
			for (uint64_t c = 0; c < run->nchunks && r == 0; c++) {
				uint64_t chunk = run->first_chunk + c, start = c * v->chunk_bytes;
				uint64_t bytes = n - start < v->chunk_bytes ? n - start : v->chunk_bytes;
				struct gw_chunk_scan s;

				r = read_data(f, buf, bytes, run->data_offset + start);
				if (r < 0)
					break;
				gw_chunksum_words(buf, bytes / 8, chunk * (v->chunk_bytes / 8), &s);
				if (s.sum != v->sums[rg->first_chunk + chunk] && bad++ == 0)
					snprintf(first_bad, len, "range %u, chunk %" PRIu64, i, chunk);
			}
		}
	}
	free(buf);
	return r < 0 ? r : bad;
}

/* The segment files of the image at path, checked; into o's "segment_files". 0 when all are
 * there and fit, else 1 (the image is not usable). */
static int open_segments(const char *path, const struct gw_vimg *v, struct data_files *f,
			 cJSON *o)
{
	cJSON *list = cJSON_AddArrayToObject(o, "segment_files");
	int bad = 0;

	for (uint32_t k = 0; k < v->nsegments; k++) {
		cJSON *x = cJSON_CreateObject();
		char name[PATH_MAX], err[256] = "";
		int fd, r = -ENOENT;

		snprintf(name, sizeof(name), "%s.seg-%u", path, k);
		fd = open(name, O_RDONLY | O_CLOEXEC);
		if (fd >= 0)
			r = gw_vimg_check_segment_fd(v, k, fd, err, sizeof(err));
		else
			snprintf(err, sizeof(err), "%s", strerror(errno));
		if (x) {
			cJSON_AddStringToObject(x, "path", name);
			cJSON_AddNumberToObject(x, "data_bytes", (double)v->seg_bytes[k]);
			cJSON_AddNumberToObject(x, "file_bytes",
						(double)gw_vimg_segment_file_bytes(v, k));
			if (r < 0)
				cJSON_AddStringToObject(x, "error", err[0] ? err : strerror(-r));
			if (list)
				cJSON_AddItemToArray(list, x);
			else
				cJSON_Delete(x);
		}
		if (r < 0) {
			bad = 1;
			if (fd >= 0)
				close(fd);
			fd = -1;
		}
		f->fds[f->nfds++] = fd;
	}
	return bad;
}

static void uuid_text(const uint8_t *u, char *buf, size_t len)
{
	CUuuid uuid;

	memcpy(uuid.bytes, u, sizeof(uuid.bytes));
	gw_cuda_uuid_format(&uuid, buf, len);
}

/* A decoded image's header and tables, and the restore time they predict, into o. */
void wc_inspect_image_fields(cJSON *o, const struct gw_vimg *v)
{
	char id[33];
	double rate, device, fixed;
	uint64_t zero_runs = 0;
	cJSON *ranges;

	for (int i = 0; i < 16; i++)
		snprintf(id + 2 * i, 3, "%02x", v->id[i]);
	cJSON_AddNumberToObject(o, "format_version", v->version);
	cJSON_AddStringToObject(o, "id", id);
	cJSON_AddNumberToObject(o, "pid", v->pid);
	cJSON_AddNumberToObject(o, "created_unix_s", (double)(v->created_ns / 1000000000u));
	cJSON_AddNumberToObject(o, "chunk_bytes", (double)v->chunk_bytes);
	cJSON_AddBoolToObject(o, "sparse", (v->flags & GW_VIMG_F_SPARSE) != 0);
	cJSON_AddNumberToObject(o, "vram_bytes", (double)v->vram_bytes);
	cJSON_AddNumberToObject(o, "data_bytes", (double)v->data_bytes);
	cJSON_AddNumberToObject(o, "zero_bytes", (double)v->zero_bytes);
	cJSON_AddNumberToObject(o, "file_bytes", (double)v->file_bytes);
	cJSON_AddNumberToObject(o, "table_bytes", (double)(v->data_offset));
	cJSON_AddNumberToObject(o, "segments", v->nsegments);
	if (v->nsegments) {
		uint64_t all = v->file_bytes;

		for (uint32_t k = 0; k < v->nsegments; k++)
			all += gw_vimg_segment_file_bytes(v, k);
		cJSON_AddNumberToObject(o, "stripe_bytes", (double)v->stripe_bytes);
		cJSON_AddNumberToObject(o, "all_files_bytes", (double)all);
	}
	ranges = cJSON_AddArrayToObject(o, "ranges");
	for (uint32_t i = 0; ranges && i < v->nranges; i++) {
		const struct gw_vimg_range *rg = &v->ranges[i];
		cJSON *x = cJSON_CreateObject();
		char va[32], gpu[64];
		uint64_t zr = 0;

		if (!x)
			break;
		for (uint32_t k = 0; k < rg->nruns; k++)
			zr += v->runs[rg->first_run + k].zero;
		zero_runs += zr;
		snprintf(va, sizeof(va), "0x%" PRIx64, rg->va);
		uuid_text(rg->uuid, gpu, sizeof(gpu));
		cJSON_AddStringToObject(x, "va", va);
		cJSON_AddNumberToObject(x, "size", (double)rg->size);
		cJSON_AddStringToObject(x, "gpu_uuid", gpu);
		cJSON_AddNumberToObject(x, "device", rg->app_device);
		cJSON_AddNumberToObject(x, "data_bytes", (double)rg->data_bytes);
		cJSON_AddNumberToObject(x, "zero_bytes", (double)(rg->size - rg->data_bytes));
		cJSON_AddNumberToObject(x, "runs", rg->nruns);
		cJSON_AddNumberToObject(x, "zero_runs", (double)zr);
		cJSON_AddItemToArray(ranges, x);
	}
	cJSON_AddNumberToObject(o, "zero_runs", (double)zero_runs);
	cJSON_AddNumberToObject(o, "predicted_restore_s",
				gw_vimg_predict_restore_s(v, &rate, &device, &fixed));
	cJSON_AddNumberToObject(o, "predicted_from_read_bytes_per_s", rate);
	cJSON_AddNumberToObject(o, "predicted_from_device_bytes_per_s", device);
	cJSON_AddNumberToObject(o, "predicted_fixed_s", fixed);
	cJSON_AddNumberToObject(o, "dump_copy_bytes_per_s", (double)v->copy_out_bps);
	cJSON_AddNumberToObject(o, "dump_write_bytes_per_s", (double)v->write_bps);
}

/* One image file as JSON ({"path", "error"} when it is not a usable image). */
static cJSON *inspect_file(const char *path, bool verify, int *bad)
{
	cJSON *o = cJSON_CreateObject();
	struct data_files f = { .nfds = 0 };
	int segments_bad = 0;
	struct gw_vimg v;
	char err[256] = "", first_bad[96] = "";
	int fd, r;

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "path", path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		cJSON_AddStringToObject(o, "error", strerror(errno));
		*bad = 1;
		return o;
	}
	r = gw_vimg_read_fd(fd, &v, err, sizeof(err));
	if (r < 0) {
		cJSON_AddStringToObject(o, "error", err[0] ? err : strerror(-r));
		*bad = 1;
		close(fd);
		return o;
	}
	f.fds[f.nfds++] = fd;
	if (v.nsegments) {
		f.nfds = 0;
		segments_bad = open_segments(path, &v, &f, o);
		if (segments_bad) {
			cJSON_AddStringToObject(o, "error", "a segment file is missing or does not "
						"fit the image (segment_files says which)");
			*bad = 1;
		}
	}
	wc_inspect_image_fields(o, &v);
	if (!(v.flags & GW_VIMG_F_SUMS)) {
		cJSON_AddStringToObject(o, "checksums", "none");
	} else if (!verify) {
		cJSON_AddStringToObject(o, "checksums", "not verified");
	} else if (segments_bad) {
		cJSON_AddStringToObject(o, "checksums", "unreadable"); /* a segment is missing */
	} else {
		long n = pieces_load(&v, &f) < 0 ? -ENOMEM :
			 verify_data(&f, &v, first_bad, sizeof(first_bad));

		if (n < 0) {
			cJSON_AddStringToObject(o, "checksums", "unreadable");
			cJSON_AddStringToObject(o, "error", strerror((int)-n));
			*bad = 1;
		} else if (n > 0) {
			cJSON_AddStringToObject(o, "checksums", "MISMATCH");
			cJSON_AddNumberToObject(o, "bad_chunks", (double)n);
			cJSON_AddStringToObject(o, "first_bad_chunk", first_bad);
			*bad = 1;
		} else {
			cJSON_AddStringToObject(o, "checksums", "verified");
		}
	}
	gw_vimg_clear(&v);
	for (unsigned k = 0; k < f.nfds; k++)
		if (f.fds[k] >= 0 && f.fds[k] != fd)
			close(f.fds[k]);
	close(fd);
	free(f.pieces);
	return o;
}

static bool has_magic(const char *path, const char *want)
{
	char magic[8];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	bool yes;

	if (fd < 0)
		return false;
	yes = read(fd, magic, sizeof(magic)) == (ssize_t)sizeof(magic) &&
	      memcmp(magic, want, sizeof(magic)) == 0;
	close(fd);
	return yes;
}

static bool is_image(const char *path)
{
	return has_magic(path, GW_VIMG_MAGIC);
}

/* A segment file of an image (shown with its image, not counted as CRIU's). */
static bool is_segment(const char *path)
{
	return has_magic(path, GW_VIMG_SEG_MAGIC);
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

void wc_inspect_print_image(const cJSON *o)
{
	const cJSON *err = cJSON_GetObjectItemCaseSensitive(o, "error");
	const cJSON *ranges = cJSON_GetObjectItemCaseSensitive(o, "ranges"), *x, *segs;
	char buf[64], buf2[64], buf3[64];
	double vram, data, rate;

	printf("%s\n", cJSON_GetObjectItemCaseSensitive(o, "path")->valuestring);
	if (cJSON_IsString(err) && !cJSON_GetObjectItemCaseSensitive(o, "id")) {
		printf("  not usable: %s\n", err->valuestring);
		return;
	}
	vram = cJSON_GetObjectItemCaseSensitive(o, "vram_bytes")->valuedouble;
	data = cJSON_GetObjectItemCaseSensitive(o, "data_bytes")->valuedouble;
	printf("  VRAM image v%s, id %s, pid %s, chunks of %.0f KiB\n",
	       wc_num(o, "format_version", 0, buf, sizeof(buf)), wc_str(o, "id", buf2, sizeof(buf2)),
	       wc_num(o, "pid", 0, buf3, sizeof(buf3)),
	       cJSON_GetObjectItemCaseSensitive(o, "chunk_bytes")->valuedouble / 1024);
	printf("  VRAM %.1f MiB in %d ranges: data %.1f MiB (%.1f%%), zero %.1f MiB in %s runs "
	       "(not stored)\n",
	       MIB(vram), cJSON_GetArraySize(ranges), MIB(data), vram > 0 ? 100 * data / vram : 0,
	       MIB(vram - data), wc_num(o, "zero_runs", 0, buf, sizeof(buf)));
	printf("  file %.1f MiB (header and tables %.1f KiB); checksums: %s",
	       MIB(cJSON_GetObjectItemCaseSensitive(o, "file_bytes")->valuedouble),
	       cJSON_GetObjectItemCaseSensitive(o, "table_bytes")->valuedouble / 1024,
	       wc_str(o, "checksums", buf, sizeof(buf)));
	if (cJSON_GetObjectItemCaseSensitive(o, "first_bad_chunk"))
		printf(" (%s bad, first: %s)", wc_num(o, "bad_chunks", 0, buf, sizeof(buf)),
		       wc_str(o, "first_bad_chunk", buf2, sizeof(buf2)));
	printf("\n");
	segs = cJSON_GetObjectItemCaseSensitive(o, "segment_files");
	if (cJSON_GetArraySize(segs) > 0) {
		printf("  data in %d segment files, stripe %.0f KiB, all files %.1f MiB\n",
		       cJSON_GetArraySize(segs),
		       cJSON_GetObjectItemCaseSensitive(o, "stripe_bytes")->valuedouble / 1024,
		       MIB(cJSON_GetObjectItemCaseSensitive(o, "all_files_bytes")->valuedouble));
		cJSON_ArrayForEach(x, segs) {
			const cJSON *e = cJSON_GetObjectItemCaseSensitive(x, "error");
			const cJSON *link = cJSON_GetObjectItemCaseSensitive(x, "link");

			printf("    %s  %.1f MiB%s%s%s%s%s\n",
			       cJSON_GetObjectItemCaseSensitive(x, "path")->valuestring,
			       MIB(cJSON_GetObjectItemCaseSensitive(x, "file_bytes")->valuedouble),
			       cJSON_IsString(link) ? " -> " : "",
			       cJSON_IsString(link) ? link->valuestring : "",
			       cJSON_IsString(link) ? " (outside the archive)" : "",
			       cJSON_IsString(e) ? ": " : "", cJSON_IsString(e) ? e->valuestring : "");
		}
	}
	rate = cJSON_GetObjectItemCaseSensitive(o, "predicted_from_read_bytes_per_s")->valuedouble;
	printf("  predicted restore: %.2f s (%.2f s fixed + %.1f MiB read at %.1f GB/s + %.1f MiB "
	       "of VRAM at %.0f GB/s)\n",
	       cJSON_GetObjectItemCaseSensitive(o, "predicted_restore_s")->valuedouble,
	       cJSON_GetObjectItemCaseSensitive(o, "predicted_fixed_s")->valuedouble, MIB(data),
	       rate / 1e9, MIB(vram),
	       cJSON_GetObjectItemCaseSensitive(o, "predicted_from_device_bytes_per_s")->valuedouble /
		       1e9);
	cJSON_ArrayForEach(x, ranges) {
		char va[32], gpu[64];

		printf("    %-16s %10.1f MiB  data %10.1f MiB  %3s zero runs  dev %s %s\n",
		       wc_str(x, "va", va, sizeof(va)),
		       MIB(cJSON_GetObjectItemCaseSensitive(x, "size")->valuedouble),
		       MIB(cJSON_GetObjectItemCaseSensitive(x, "data_bytes")->valuedouble),
		       wc_num(x, "zero_runs", 0, buf, sizeof(buf)),
		       wc_num(x, "device", 0, buf2, sizeof(buf2)),
		       wc_str(x, "gpu_uuid", gpu, sizeof(gpu)));
	}
}

struct dir_totals {
	uint64_t criu_bytes, criu_files, seg_bytes, seg_files;
	bool criu_dir; /* CRIU writes inventory.img into every checkpoint */
};

/* Every file of a directory: images inspected, the others counted. 0, or an exit code. */
static int inspect_dir(struct wc_ctx *ctx, const struct wc_args *args, cJSON *result,
		       cJSON *images, int *bad, struct dir_totals *d)
{
	struct dirent **names;
	int n = scandir(args->path, &names, NULL, by_name);

	if (n < 0)
		return wc_image_error(ctx, "%s: %s", args->path, strerror(errno));
	for (int i = 0; i < n; i++) {
		char path[PATH_MAX];
		struct stat fst;

		if ((size_t)snprintf(path, sizeof(path), "%s/%s", args->path, names[i]->d_name) <
			    sizeof(path) &&
		    stat(path, &fst) == 0 && S_ISREG(fst.st_mode)) {
			if (is_image(path)) {
				cJSON_AddItemToArray(images, inspect_file(path, args->verify, bad));
			} else if (is_segment(path)) {
				d->seg_bytes += (uint64_t)fst.st_size;
				d->seg_files++;
			} else {
				d->criu_bytes += (uint64_t)fst.st_size;
				d->criu_files++;
				if (strcmp(names[i]->d_name, "inventory.img") == 0)
					d->criu_dir = true;
			}
		}
		free(names[i]);
	}
	free(names);
	if (cJSON_GetArraySize(images) == 0 && !d->criu_dir)
		return wc_image_error(ctx,
				      "%s: neither a VRAM image nor a checkpoint directory "
				      "(no gpuwarm-vram-*.img, no CRIU inventory.img)",
				      args->path);
	cJSON_AddBoolToObject(result, "criu_checkpoint", d->criu_dir);
	cJSON_AddNumberToObject(result, "criu_image_bytes", (double)d->criu_bytes);
	cJSON_AddNumberToObject(result, "criu_files", (double)d->criu_files);
	cJSON_AddNumberToObject(result, "vram_segment_files", (double)d->seg_files);
	cJSON_AddNumberToObject(result, "vram_segment_bytes", (double)d->seg_bytes);
	return 0;
}

static void print_dir(const char *path, const cJSON *images, const struct dir_totals *d)
{
	if (cJSON_GetArraySize(images) == 0)
		printf("%s: no VRAM image here\n", path);
	if (d->criu_dir)
		printf("CRIU image: %.1f MiB in %" PRIu64 " files\n", MIB(d->criu_bytes),
		       d->criu_files);
	else if (d->criu_files)
		printf("other files: %.1f MiB in %" PRIu64 " files\n", MIB(d->criu_bytes),
		       d->criu_files);
	if (d->seg_files)
		printf("VRAM image segments: %.1f MiB in %" PRIu64 " files\n", MIB(d->seg_bytes),
		       d->seg_files);
}

int wc_cmd_inspect(struct wc_ctx *ctx, const struct wc_args *args)
{
	cJSON *result, *images;
	struct dir_totals d = { 0 };
	struct stat st;
	int bad = 0, code = WC_EXIT_OK;

	if (stat(args->path, &st) < 0)
		return wc_image_error(ctx, "%s: %s", args->path, strerror(errno));
	if (S_ISREG(st.st_mode) && !is_image(args->path) && wc_inspect_is_archive(args->path))
		return wc_inspect_archive(ctx, args);
	result = cJSON_CreateObject();
	images = result ? cJSON_AddArrayToObject(result, "images") : NULL;
	if (!images) {
		cJSON_Delete(result);
		fprintf(stderr, "warmctl: out of memory\n");
		return WC_EXIT_FAILED;
	}
	if (S_ISDIR(st.st_mode)) {
		int r = inspect_dir(ctx, args, result, images, &bad, &d);

		if (r) {
			cJSON_Delete(result);
			return r;
		}
	} else {
		cJSON_AddItemToArray(images, inspect_file(args->path, args->verify, &bad));
	}
	if (bad)
		code = WC_EXIT_FAILED;
	if (ctx->json) {
		int r = wc_print_json_result(ctx, result);

		if (r != WC_EXIT_OK)
			code = r;
	} else {
		const cJSON *o;

		cJSON_ArrayForEach(o, images)
			wc_inspect_print_image(o);
		if (S_ISDIR(st.st_mode))
			print_dir(args->path, images, &d);
		if (fflush(stdout) != 0)
			code = WC_EXIT_FAILED;
	}
	cJSON_Delete(result);
	return code;
}
