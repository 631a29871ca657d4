/* SPDX-License-Identifier: MIT */
/* warmctl: the JSON envelope, printable views of untrusted JSON members, and text tables. */
#include "warmctl.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int print_document(cJSON *doc)
{
	char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
	int r = WC_EXIT_OK;

	if (!text) {
		fprintf(stderr, "warmctl: out of memory\n");
		return WC_EXIT_FAILED;
	}
	if (puts(text) < 0 || fflush(stdout) != 0) {
		fprintf(stderr, "warmctl: writing to stdout: %s\n", strerror(errno));
		r = WC_EXIT_FAILED;
	}
	free(text);
	return r;
}

static cJSON *envelope(const struct wc_ctx *ctx)
{
	cJSON *doc = cJSON_CreateObject();

	if (!doc || !cJSON_AddNumberToObject(doc, "version", 1) ||
	    !(ctx->cmd ? cJSON_AddStringToObject(doc, "command", ctx->cmd->name) :
			 cJSON_AddNullToObject(doc, "command"))) {
		cJSON_Delete(doc);
		return NULL;
	}
	return doc;
}

int wc_print_json_result(const struct wc_ctx *ctx, const cJSON *result)
{
	cJSON *doc = envelope(ctx), *ref = result ? cJSON_CreateObjectReference(result->child) :
						    cJSON_CreateObject();
	int r;

	if (!doc || !ref || !cJSON_AddItemToObject(doc, "result", ref)) {
		cJSON_Delete(ref);
		ref = NULL;
	}
	r = print_document(ref ? doc : NULL);
	cJSON_Delete(doc);
	return r;
}

void wc_print_json_error(const struct wc_ctx *ctx, const char *name, const char *message,
			 int cuda_error, const char *hint)
{
	cJSON *doc = envelope(ctx), *error = cJSON_CreateObject();
	bool ok = doc && error && cJSON_AddStringToObject(error, "name", name) &&
		  cJSON_AddStringToObject(error, "message", message) &&
		  (!cuda_error || cJSON_AddNumberToObject(error, "cuda_error", cuda_error)) &&
		  (!hint || cJSON_AddStringToObject(error, "hint", hint));

	if (ok && cJSON_AddItemToObject(doc, "error", error))
		error = NULL;
	else
		ok = false;
	cJSON_Delete(error);
	(void)print_document(ok ? doc : NULL);
	cJSON_Delete(doc);
}

const char *wc_str(const cJSON *obj, const char *key, char *buf, size_t len)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
	size_t i;

	if (!cJSON_IsString(item) || !item->valuestring) {
		snprintf(buf, len, "-");
		return buf;
	}
	/* the daemon's text goes to a terminal: no control characters */
	for (i = 0; i + 1 < len && item->valuestring[i]; i++) {
		unsigned char ch = (unsigned char)item->valuestring[i];

		buf[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
	}
	buf[i] = '\0';
	return buf;
}

bool wc_get_double(const cJSON *obj, const char *key, double *ret)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble))
		return false;
	*ret = item->valuedouble;
	return true;
}

const char *wc_num(const cJSON *obj, const char *key, int decimals, char *buf, size_t len)
{
	double v;

	if (!wc_get_double(obj, key, &v))
		snprintf(buf, len, "-");
	else if (decimals > 0)
		snprintf(buf, len, "%.*f", decimals, v);
	else
		snprintf(buf, len, "%.0f", v);
	return buf;
}

struct wc_table {
	unsigned ncols;
	size_t nrows, cap;
	char **cells; /* nrows * ncols */
};

struct wc_table *wc_table_new(unsigned ncols)
{
	struct wc_table *t = calloc(1, sizeof(*t));

	if (t)
		t->ncols = ncols;
	return t;
}

int wc_table_add(struct wc_table *t, const char *const *cells)
{
	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 8;
		char **n = reallocarray(t->cells, cap * t->ncols, sizeof(char *));

		if (!n)
			return -ENOMEM;
		t->cells = n;
		t->cap = cap;
	}
	for (unsigned c = 0; c < t->ncols; c++) {
		char *copy = strdup(cells[c] ? cells[c] : "");

		if (!copy) {
			for (unsigned k = 0; k < c; k++)
				free(t->cells[t->nrows * t->ncols + k]);
			return -ENOMEM;
		}
		t->cells[t->nrows * t->ncols + c] = copy;
	}
	t->nrows++;
	return 0;
}

void wc_table_print(const struct wc_table *t, const char *indent)
{
	size_t width[16] = { 0 };
	unsigned ncols = t->ncols < 16 ? t->ncols : 16;

	for (size_t r = 0; r < t->nrows; r++)
		for (unsigned c = 0; c < ncols; c++) {
			size_t w = strlen(t->cells[r * t->ncols + c]);

			if (w > width[c])
				width[c] = w;
		}
	for (size_t r = 0; r < t->nrows; r++) {
		fputs(indent, stdout);
		for (unsigned c = 0; c < ncols; c++) {
			const char *cell = t->cells[r * t->ncols + c];

			if (c + 1 < ncols)
				printf("%-*s  ", (int)width[c], cell);
			else
				printf("%s\n", cell);
		}
	}
}

size_t wc_terminal_width(void)
{
	const char *env = getenv("COLUMNS");
	struct winsize ws;
	char *end;

	if (env && *env) {
		long v = strtol(env, &end, 10);

		if (!*end && v > 0 && v < 100000)
			return (size_t)v;
	}
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	return 80;
}

void wc_table_print_fit(const struct wc_table *t, const char *indent, size_t max_width,
			const unsigned *priority, const size_t *min_width, char *left_out,
			size_t left_out_len)
{
	size_t natural[16] = { 0 }, width[16], total;
	bool shown[16];
	unsigned ncols = t->ncols < 16 ? t->ncols : 16, nshown = ncols, last = 0;

	if (left_out_len)
		left_out[0] = '\0';
	for (unsigned c = 0; c < ncols; c++) {
		shown[c] = true;
		for (size_t r = 0; r < t->nrows; r++) {
			size_t w = strlen(t->cells[r * t->ncols + c]);

			if (w > natural[c])
				natural[c] = w;
		}
		/* shortenable columns count at their minimum until the columns are chosen */
		width[c] = max_width && min_width && min_width[c] && natural[c] > min_width[c] ?
				   min_width[c] : natural[c];
	}
	for (;;) {
		unsigned victim = ncols;

		total = strlen(indent);
		for (unsigned c = 0; c < ncols; c++)
			if (shown[c])
				total += width[c] + 2;
		total -= 2;
		if (!max_width || total <= max_width || nshown <= 1)
			break;
		/* leave out the least important column: highest priority number, the later one
		 * of equals */
		for (unsigned c = 0; c < ncols; c++)
			if (shown[c] && priority && priority[c] &&
			    (victim == ncols || priority[c] >= priority[victim]))
				victim = c;
		if (victim == ncols)
			break; /* nothing may go: print as narrow as it gets */
		shown[victim] = false;
		nshown--;
		if (left_out_len) {
			size_t used = strlen(left_out);

			snprintf(left_out + used, left_out_len - used, "%s%s", used ? ", " : "",
				 t->cells[victim]);
		}
	}
	/* the room left goes back to the shortened columns */
	for (unsigned c = 0; c < ncols && max_width; c++) {
		if (shown[c] && width[c] < natural[c] && total < max_width) {
			size_t give = natural[c] - width[c];

			if (give > max_width - total)
				give = max_width - total;
			width[c] += give;
			total += give;
		}
	}
	for (unsigned c = 0; c < ncols; c++)
		if (shown[c])
			last = c;
	for (size_t r = 0; r < t->nrows; r++) {
		fputs(indent, stdout);
		for (unsigned c = 0; c < ncols; c++) {
			const char *cell = t->cells[r * t->ncols + c];

			if (!shown[c])
				continue;
			if (strlen(cell) > width[c]) /* shortened: its end becomes "~" */
				printf("%.*s~", (int)width[c] - 1, cell);
			else if (c == last)
				fputs(cell, stdout);
			else
				printf("%-*s", (int)width[c], cell);
			fputs(c == last ? "\n" : "  ", stdout);
		}
	}
}

void wc_print_wrapped(const char *first, const char *indent, const char *text, size_t max_width)
{
	size_t col = strlen(first);
	bool words_on_line = false;

	fputs(first, stdout);
	for (const char *p = text; *p;) {
		size_t word = strcspn(p, " ");

		if (words_on_line && max_width && col + 1 + word > max_width) {
			printf("\n%s", indent);
			col = strlen(indent);
			words_on_line = false;
		} else if (words_on_line) {
			putchar(' ');
			col++;
		}
		printf("%.*s", (int)word, p);
		col += word;
		words_on_line = true;
		p += word;
		while (*p == ' ')
			p++;
	}
	putchar('\n');
}

void wc_table_free(struct wc_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
}

int wc_image_error(const struct wc_ctx *ctx, const char *fmt, ...)
{
	char msg[PATH_MAX + 256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "warmctl: %s\n", msg);
	if (ctx->json)
		wc_print_json_error(ctx, "warmctl.Error.Image", msg, 0, NULL);
	return WC_EXIT_FAILED;
}
