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
