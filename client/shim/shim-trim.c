/* SPDX-License-Identifier: MIT */
#include "shim-trim.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PM_PRESENT (1ull << 63)
#define PM_SWAPPED (1ull << 62)
#define PM_FILE (1ull << 61)
#define PM_BATCH 512          /* pagemap entries per read */
#define LINE_MAX_BYTES 4608   /* a smaps line: a path of PATH_MAX and the fields before it */
#define MAX_MS_LIMIT 600000.0 /* the most a caller may ask for */

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Is flag (two letters) one of the VmFlags line's? */
static bool has_flag(const char *vmflags, const char *flag)
{
	for (const char *s = vmflags; (s = strstr(s, flag)) != NULL; s += 2) {
		bool starts = s == vmflags || s[-1] == ' ';
		bool ends = s[2] == '\0' || s[2] == ' ' || s[2] == '\n';

		if (starts && ends)
			return true;
	}
	return false;
}

/* Anonymous memory by its smaps path: none, the heap, or a named one ([anon:...]). */
static bool anonymous_path(const char *path)
{
	return !path[0] || strcmp(path, "[heap]") == 0 || strncmp(path, "[anon:", 6) == 0;
}

bool shim_trim_mapping_ok(const char *perms, const char *path, const char *vmflags)
{
	static const char *const refused[] = {
		"sh", /* shared */
		"lo", /* locked */
		"io", /* I/O memory */
		"pf", /* PFN map */
		"mm", /* mixed map */
		"dc", /* DONTFORK: RDMA registrations and the like, pinned behind our back */
		"dd", /* DONTDUMP: CRIU leaves it out anyway */
		"ht", /* hugetlb */
		"um", /* userfaultfd: a missing page would be the handler's to fill */
		"uw",
	};

	if (strlen(perms) < 4 || perms[0] != 'r' || perms[1] != 'w' || perms[3] != 'p')
		return false;
	if (!anonymous_path(path))
		return false;
	if (!has_flag(vmflags, "rd") || !has_flag(vmflags, "wr"))
		return false;
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		if (has_flag(vmflags, refused[i]))
			return false;
	return true;
}

/* Reads whatever the page holds: a sanitizer's poisoned bytes (freed or red-zone memory of an
 * instrumented app) are memory like any other here. */
__attribute__((no_sanitize("address", "undefined")))
static bool page_is_zero(const uint64_t *w, size_t words)
{
	for (size_t i = 0; i < words; i += 8) {
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7])
			return false;
	}
	return true;
}

static void give_back(uintptr_t start, uintptr_t end, struct shim_trim_stats *st)
{
	if (end <= start)
		return;
	st->zero_bytes += end - start;
	if (madvise((void *)start, end - start, MADV_DONTNEED) == 0)
		st->trimmed_bytes += end - start;
}

/* One mapping of the smaps walk, from its header line until its VmFlags line. */
struct mapping {
	uintptr_t start, end;
	char perms[8];
	bool anonymous_path;
	bool valid;
};

static void parse_header(const char *line, struct mapping *m)
{
	unsigned long long s, e;
	int path_at = 0;
	char perms[8];

	m->valid = false;
	if (sscanf(line, "%llx-%llx %7s %*s %*s %*s %n", &s, &e, perms, &path_at) < 3 ||
	    path_at <= 0)
		return;
	m->start = (uintptr_t)s;
	m->end = (uintptr_t)e;
	memcpy(m->perms, perms, sizeof(perms));
	m->anonymous_path = anonymous_path(line + path_at);
	m->valid = true;
}

struct walk {
	int pagemap_fd;
	uintptr_t own_stack;
	double deadline;                   /* now_ms() past which nothing more is done (0: none) */
	struct shim_trim_stats *st;
	struct mapping m;
	const struct shim_trim_mark *keep; /* trim: pages left alone (NULL: none) */
	size_t cursor;                     /* ...the first run that may hold the next page */
	struct shim_trim_mark *mark;       /* mark: where the resident runs go */
};

static bool kept(struct walk *w, uintptr_t at)
{
	const struct shim_trim_mark *k = w->keep;

	if (!k)
		return false;
	while (w->cursor < k->n && k->runs[w->cursor].end <= at)
		w->cursor++;
	return w->cursor < k->n && k->runs[w->cursor].start <= at;
}

static int mark_add(struct shim_trim_mark *m, uintptr_t start, uintptr_t end)
{
	if (m->n && m->runs[m->n - 1].end == start) {
		m->runs[m->n - 1].end = end;
		return 0;
	}
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 256;
		void *runs = realloc(m->runs, cap * sizeof(m->runs[0]));

		if (!runs)
			return -ENOMEM;
		m->runs = runs;
		m->cap = cap;
	}
	m->runs[m->n].start = start;
	m->runs[m->n++].end = end;
	return 0;
}

/* One page: its run of pages of zeros goes on or ends (and is given back). */
static void trim_page(struct walk *w, uintptr_t at, size_t page, bool zero, uintptr_t *run,
		      uintptr_t *run_end)
{
	if (zero) {
		if (!*run)
			*run = at;
		*run_end = at + page;
		return;
	}
	give_back(*run, *run_end, w->st);
	*run = *run_end = 0;
}

/* [start, end): give back its resident pages of zeros (trim), or note its resident runs (mark). */
static int walk_range(struct walk *w, uintptr_t start, uintptr_t end)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uint64_t pm[PM_BATCH];
	uintptr_t run = 0, run_end = 0;
	int r = 0;

	for (uintptr_t at = start; at < end && r == 0;) {
		size_t n = (end - at) / page;
		ssize_t got;

		if (n > PM_BATCH)
			n = PM_BATCH;
		if (w->deadline > 0 && now_ms() > w->deadline) {
			w->st->timed_out = true;
			break;
		}
		got = pread(w->pagemap_fd, pm, n * sizeof(pm[0]), (off_t)(at / page * sizeof(pm[0])));
		if (got < 0) {
			r = -errno;
			break;
		}
		if ((size_t)got < sizeof(pm[0]))
			break;
		n = (size_t)got / sizeof(pm[0]);
		for (size_t i = 0; i < n && r == 0; i++, at += page) {
			bool anon = (pm[i] & PM_PRESENT) && !(pm[i] & (PM_FILE | PM_SWAPPED));

			if (w->mark) {
				if (anon)
					r = mark_add(w->mark, at, at + page);
				continue;
			}
			if (anon)
				w->st->scanned_bytes += page;
			trim_page(w, at, page, anon && !kept(w, at) &&
					       page_is_zero((const uint64_t *)at, page / sizeof(uint64_t)),
				  &run, &run_end);
		}
	}
	give_back(run, run_end, w->st);
	return r;
}

int shim_trim_range(uintptr_t start, uintptr_t end, int pagemap_fd, struct shim_trim_stats *st)
{
	struct walk w = { .pagemap_fd = pagemap_fd, .st = st };

	return walk_range(&w, start, end);
}

/* One smaps line: a header starts a mapping, its VmFlags line ends it (and trims it). */
static int on_line(struct walk *w, const char *line)
{
	if (strncmp(line, "VmFlags:", 8) != 0) {
		if (line[0] && strchr("0123456789abcdef", line[0]))
			parse_header(line, &w->m);
		return 0;
	}
	if (!w->m.valid)
		return 0;
	w->m.valid = false;
	if (!w->m.anonymous_path ||
	    !shim_trim_mapping_ok(w->m.perms, "", line + 8) ||
	    (w->own_stack >= w->m.start && w->own_stack < w->m.end))
		return 0;
	if (w->st->timed_out)
		return 1;
	w->st->mappings++;
	return walk_range(w, w->m.start, w->m.end);
}

/* Every mapping trim looks at, walked in address order: trimmed, or marked into w->mark. */
static int walk_process(struct walk *w)
{
	char buf[LINE_MAX_BYTES * 2];
	size_t have = 0;
	int fd, r = 0;

	w->own_stack = (uintptr_t)&buf;
	fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	w->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (w->pagemap_fd < 0) {
		r = -errno;
		goto out_smaps;
	}
	for (;;) {
		ssize_t got = read(fd, buf + have, sizeof(buf) - 1 - have);
		char *line = buf, *nl;

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			r = -errno;
			break;
		}
		have += (size_t)got;
		buf[have] = '\0';
		while (r == 0 && (nl = memchr(line, '\n', have - (size_t)(line - buf))) != NULL) {
			*nl = '\0';
			r = on_line(w, line);
			line = nl + 1;
		}
		if (r != 0 || got == 0)
			break;
		have -= (size_t)(line - buf);
		memmove(buf, line, have);
		if (have >= sizeof(buf) - 1) /* a line longer than any smaps line: drop it */
			have = 0;
	}
	if (r > 0)
		r = 0;
	close(w->pagemap_fd);
out_smaps:
	close(fd);
	return r;
}

int shim_trim_process(double max_ms, const struct shim_trim_mark *keep,
		      struct shim_trim_stats *st)
{
	double t0 = now_ms();
	struct walk w = { .st = st, .keep = keep, .deadline = max_ms > 0 ? t0 + max_ms : 0 };
	int r = walk_process(&w);

	st->ms += now_ms() - t0;
	return r;
}

int shim_trim_mark_take(struct shim_trim_mark *mark)
{
	struct shim_trim_stats st = { 0 };
	struct walk w = { .st = &st, .mark = mark };
	int r;

	mark->n = 0;
	r = walk_process(&w);
	if (r < 0)
		shim_trim_mark_clear(mark);
	else
		mark->valid = true;
	return r;
}

void shim_trim_mark_clear(struct shim_trim_mark *mark)
{
	if (!mark)
		return;
	free(mark->runs);
	memset(mark, 0, sizeof(*mark));
}

static struct shim_trim_mark release_mark; /* the agent thread's */

static bool trim_disabled(void)
{
	const char *off = getenv(SHIM_ENV_NO_TRIM);

	return off && *off && strcmp(off, "0") != 0;
}

void shim_trim_note_release(void)
{
	int r;

	if (trim_disabled()) {
		shim_trim_mark_clear(&release_mark);
		return;
	}
	r = shim_trim_mark_take(&release_mark);

	if (r < 0)
		shim_log("agent: cannot note the resident pages (%s): the next trim gives nothing "
			 "back", strerror(-r));
}

void shim_op_trim(const cJSON *params, struct shim_reply *reply)
{
	struct shim_trim_stats st = { 0 };
	const cJSON *limit = params ? cJSON_GetObjectItemCaseSensitive(params, "max_ms") : NULL;
	double max_ms = cJSON_IsNumber(limit) ? limit->valuedouble : 0;
	cJSON *res;
	int r;

	if ((limit && !cJSON_IsNumber(limit)) || !(max_ms >= 0 && max_ms <= MAX_MS_LIMIT)) {
		reply->error_name = GW_ERROR_INVALID_REQUEST;
		snprintf(reply->error_message, sizeof(reply->error_message),
			 "\"max_ms\" must be a number from 0 to %.0f", MAX_MS_LIMIT);
		return;
	}
	res = cJSON_CreateObject();
	if (!res) {
		reply->error_name = GW_ERROR_AGENT;
		strcpy(reply->error_message, "out of memory");
		return;
	}
	if (trim_disabled()) {
		cJSON_AddBoolToObject(res, "disabled", 1);
		reply->result = res;
		return;
	}
	if (!release_mark.valid) {
		cJSON_AddNumberToObject(res, "trimmed_bytes", 0);
		cJSON_AddBoolToObject(res, "released_before", 0);
		reply->result = res;
		return;
	}
	r = shim_trim_process(max_ms, &release_mark, &st);
	shim_trim_mark_clear(&release_mark);
	if (r < 0)
		shim_log("agent: trimming zero pages stopped: %s", strerror(-r));
	cJSON_AddNumberToObject(res, "mappings", (double)st.mappings);
	cJSON_AddNumberToObject(res, "scanned_bytes", (double)st.scanned_bytes);
	cJSON_AddNumberToObject(res, "zero_bytes", (double)st.zero_bytes);
	cJSON_AddNumberToObject(res, "trimmed_bytes", (double)st.trimmed_bytes);
	cJSON_AddNumberToObject(res, "ms", st.ms);
	cJSON_AddBoolToObject(res, "timed_out", st.timed_out);
	if (r < 0)
		cJSON_AddStringToObject(res, "error", strerror(-r));
	reply->result = res;
}
