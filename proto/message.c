/* SPDX-License-Identifier: MIT */
/* Message parsing, validation and encoding. */
#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw-proto.h"

#define GW_NUMBER_TOKEN_MAX 63
#define GW_TWO_POW_53 9007199254740992.0

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if invalid. RFC 3629. */
static size_t utf8_seq_len(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return n >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		if (n < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
			return 0;
		if (c == 0xe0 && p[1] < 0xa0)
			return 0; /* overlong */
		if (c == 0xed && p[1] >= 0xa0)
			return 0; /* surrogate */
		return 3;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		if (n < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
		    (p[3] & 0xc0) != 0x80)
			return 0;
		if (c == 0xf0 && p[1] < 0x90)
			return 0; /* overlong */
		if (c == 0xf4 && p[1] >= 0x90)
			return 0; /* above U+10FFFF */
		return 4;
	}
	return 0;
}

/* RFC 8259 number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int number_syntax_ok(const char *t, size_t n)
{
	size_t i = 0, start;

	if (i < n && t[i] == '-')
		i++;
	if (i < n && t[i] == '0') {
		i++;
	} else {
		start = i;
		while (i < n && t[i] >= '0' && t[i] <= '9')
			i++;
		if (i == start)
			return 0;
	}
	if (i < n && t[i] == '.') {
		start = ++i;
		while (i < n && t[i] >= '0' && t[i] <= '9')
			i++;
		if (i == start)
			return 0;
	}
	if (i < n && (t[i] == 'e' || t[i] == 'E')) {
		i++;
		if (i < n && (t[i] == '+' || t[i] == '-'))
			i++;
		start = i;
		while (i < n && t[i] >= '0' && t[i] <= '9')
			i++;
		if (i == start)
			return 0;
	}
	return i == n;
}

/*
 * A number must follow the JSON grammar and fit a finite double, and one that rounds to +-2^53
 * must be written exactly, so that 2^53 + 1 is not taken for 2^53. Larger values stay large
 * doubles and are caught by range checks.
 */
static int number_token_ok(const char *tok, size_t n)
{
	char buf[GW_NUMBER_TOKEN_MAX + 1], *dot;
	const char *digits = tok;
	size_t ndigits = n;
	double v;

	if (n > GW_NUMBER_TOKEN_MAX || !number_syntax_ok(tok, n))
		return 0; /* cJSON cannot parse a longer one either */
	memcpy(buf, tok, n);
	buf[n] = '\0';
	dot = strchr(buf, '.');
	if (dot) {
		/* Same treatment of the decimal point as cJSON's own parser. */
		struct lconv *lc = localeconv();

		if (lc && lc->decimal_point && lc->decimal_point[0])
			*dot = lc->decimal_point[0];
	}
	v = strtod(buf, NULL);
	if (!isfinite(v))
		return 0; /* 1e999 would become inf, which JSON cannot carry back */
	if (v != GW_TWO_POW_53 && v != -GW_TWO_POW_53)
		return 1;
	if (ndigits && digits[0] == '-') {
		digits++;
		ndigits--;
	}
	return ndigits == 16 && memcmp(digits, "9007199254740992", 16) == 0;
}

/*
 * One linear pass over the raw text before cJSON sees it: nesting depth (so that cJSON's
 * recursion stays shallow), UTF-8, control characters and \u0000 inside strings, exactness of
 * numbers near 2^53. Syntax errors are left to cJSON.
 */
static int prescan(const char *text, size_t len)
{
	const unsigned char *p = (const unsigned char *)text;
	unsigned depth = 0;
	int in_string = 0;
	size_t i = 0;

	while (i < len) {
		unsigned char c = p[i];

		if (c >= 0x80) {
			size_t n = utf8_seq_len(p + i, len - i);

			if (!n)
				return -EBADMSG;
			i += n;
			continue;
		}
		if (c == '\0')
			return -EBADMSG;
		if (in_string) {
			if (c < 0x20)
				return -EBADMSG;
			if (c == '"') {
				in_string = 0;
			} else if (c == '\\') {
				if (i + 1 >= len)
					return -EBADMSG;
				if (p[i + 1] == 'u' && len - i >= 6 &&
				    memcmp(p + i + 2, "0000", 4) == 0)
					return -EBADMSG;
				i++; /* skip the escaped character */
			}
			i++;
			continue;
		}
		if (c == '"') {
			in_string = 1;
		} else if (c == '{' || c == '[') {
			if (++depth > GW_JSON_MAX_DEPTH)
				return -EBADMSG;
		} else if (c == '}' || c == ']') {
			if (depth == 0)
				return -EBADMSG;
			depth--;
		} else if (c == '-' || (c >= '0' && c <= '9')) {
			size_t start = i;

			while (i < len && p[i] && strchr("0123456789+-.eE", p[i]))
				i++;
			if (!number_token_ok(text + start, i - start))
				return -EBADMSG;
			continue;
		}
		i++;
	}
	return in_string ? -EBADMSG : 0;
}

static int cmp_keys(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Member names of one object are unique: pairwise for small objects, sorted for large ones. */
static int keys_unique(const cJSON *first)
{
	const cJSON *a, *b;
	const char **keys;
	size_t n = 0, i;
	int r = 0;

	for (a = first; a; a = a->next)
		if (++n > 16)
			break;
	if (n <= 16) {
		for (a = first; a; a = a->next)
			for (b = a->next; b; b = b->next)
				if (strcmp(a->string, b->string) == 0)
					return -EBADMSG;
		return 0;
	}
	for (n = 0, a = first; a; a = a->next)
		n++;
	keys = malloc(n * sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	for (i = 0, a = first; a; a = a->next)
		keys[i++] = a->string;
	qsort(keys, n, sizeof(*keys), cmp_keys);
	for (i = 1; i < n; i++)
		if (strcmp(keys[i - 1], keys[i]) == 0) {
			r = -EBADMSG;
			break;
		}
	free(keys);
	return r;
}

/*
 * Every key and string value below GW_STRING_MAX, member names unique within each object.
 * The recursion is bounded: prescan() already limited the depth.
 */
static int check_tree(const cJSON *parent, unsigned depth)
{
	const cJSON *item;
	int r;

	if (depth > GW_JSON_MAX_DEPTH)
		return -EBADMSG;
	if (cJSON_IsObject(parent)) {
		for (item = parent->child; item; item = item->next)
			if (!item->string || strlen(item->string) >= GW_STRING_MAX)
				return -EBADMSG;
		r = keys_unique(parent->child);
		if (r < 0)
			return r;
	}
	for (item = parent->child; item; item = item->next) {
		if (cJSON_IsString(item) && (!item->valuestring ||
					     strlen(item->valuestring) >= GW_STRING_MAX))
			return -EBADMSG;
		if (cJSON_IsObject(item) || cJSON_IsArray(item)) {
			r = check_tree(item, depth + 1);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int name_valid(const char *s, size_t max)
{
	size_t n = 0;

	for (; s[n]; n++) {
		char c = s[n];

		if (n + 1 >= max)
			return 0;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.'))
			return 0;
	}
	return n > 0;
}

static int id_value(const cJSON *item, uint64_t *ret)
{
	double v;

	if (!cJSON_IsNumber(item))
		return -EBADMSG;
	v = item->valuedouble;
	/* In [0, 2^53] the conversion is exact for integers only. */
	if (!isfinite(v) || v < 0 || v > GW_TWO_POW_53 || (double)(uint64_t)v != v)
		return -EBADMSG;
	*ret = (uint64_t)v;
	return 0;
}

/* payload as a JSON tree within the JSON rules of docs/protocol.md, or -EBADMSG/-ENOMEM. */
static int parse_document(const char *payload, size_t len, cJSON **ret_root)
{
	const char *end = NULL;
	cJSON *root;
	size_t i;
	int r;

	if (!payload || len < GW_FRAME_MIN_PAYLOAD || len > GW_FRAME_MAX_PAYLOAD)
		return -EBADMSG;
	/* A JSON object and nothing else (cJSON would skip a byte order mark). */
	for (i = 0; i < len && (payload[i] == ' ' || payload[i] == '\t' || payload[i] == '\n' ||
				payload[i] == '\r'); i++)
		;
	if (i == len || payload[i] != '{' || prescan(payload, len) < 0)
		return -EBADMSG;
	root = cJSON_ParseWithLengthOpts(payload, len, &end, 0);
	if (!root)
		return -EBADMSG; /* cJSON does not tell allocation failure from bad syntax */
	r = -EBADMSG;
	/* Only whitespace may follow the value. */
	for (; end && end < payload + len; end++)
		if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r')
			goto fail;
	if (!cJSON_IsObject(root))
		goto fail;
	r = check_tree(root, 1);
	if (r < 0)
		goto fail;
	*ret_root = root;
	return 0;
fail:
	cJSON_Delete(root);
	return r;
}

/* The known top-level members of a message. */
struct members {
	const cJSON *id, *method, *params, *result, *error, *progress, *fds;
};

/* Each known member at most once; unknown members are ignored. */
static int collect_members(const cJSON *root, struct members *m)
{
	static const struct {
		const char *name;
		size_t offset;
	} known[] = {
		{ "id", offsetof(struct members, id) },
		{ "method", offsetof(struct members, method) },
		{ "params", offsetof(struct members, params) },
		{ "result", offsetof(struct members, result) },
		{ "error", offsetof(struct members, error) },
		{ "progress", offsetof(struct members, progress) },
		{ "fds", offsetof(struct members, fds) },
	};

	memset(m, 0, sizeof(*m));
	for (const cJSON *item = root->child; item; item = item->next) {
		if (!item->string)
			return -EBADMSG;
		for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++) {
			const cJSON **slot = (const cJSON **)((char *)m + known[k].offset);

			if (strcmp(item->string, known[k].name) != 0)
				continue;
			if (*slot)
				return -EBADMSG;
			*slot = item;
			break;
		}
	}
	return 0;
}

/* A request: a valid method name, params an object ({} added to root when absent). */
static int take_request(cJSON *root, const struct members *m, struct gw_message *msg)
{
	const cJSON *params = m->params;

	if (!cJSON_IsString(m->method) || !name_valid(m->method->valuestring, GW_METHOD_MAX))
		return -EBADMSG;
	if (params && !cJSON_IsObject(params))
		return -EBADMSG;
	if (!params) {
		params = cJSON_AddObjectToObject(root, "params");
		if (!params)
			return -ENOMEM;
	}
	msg->kind = GW_MESSAGE_REQUEST;
	strcpy(msg->method, m->method->valuestring);
	msg->body = params;
	return 0;
}

/* An error: an object with a valid "name" and a string "message", each once. */
static int take_error(const cJSON *error, struct gw_message *msg)
{
	const cJSON *name = NULL, *message = NULL;

	if (!cJSON_IsObject(error))
		return -EBADMSG;
	for (const cJSON *item = error->child; item; item = item->next) {
		const cJSON **slot = NULL;

		if (!item->string)
			continue;
		if (strcmp(item->string, "name") == 0)
			slot = &name;
		else if (strcmp(item->string, "message") == 0)
			slot = &message;
		if (!slot)
			continue;
		if (*slot)
			return -EBADMSG;
		*slot = item;
	}
	if (!cJSON_IsString(name) || !name_valid(name->valuestring, GW_ERROR_NAME_MAX))
		return -EBADMSG;
	if (!cJSON_IsString(message)) /* length checked by check_tree() */
		return -EBADMSG;
	msg->kind = GW_MESSAGE_ERROR;
	msg->body = error;
	msg->error_name = name->valuestring;
	msg->error_message = message->valuestring;
	return 0;
}

/* id, fds and exactly one of method/result/error/progress, each of its shape. */
static int take_message(cJSON *root, const struct members *m, struct gw_message *msg)
{
	if (!m->id || id_value(m->id, &msg->id) < 0)
		return -EBADMSG;
	if (m->fds) {
		uint64_t n;

		if (id_value(m->fds, &n) < 0 || n > GW_FRAME_MAX_FDS)
			return -EBADMSG;
		msg->nfds = (unsigned)n;
	}
	if (!!m->method + !!m->result + !!m->error + !!m->progress != 1)
		return -EBADMSG;
	if (m->method)
		return take_request(root, m, msg);
	if (m->params)
		return -EBADMSG;
	if (m->error)
		return take_error(m->error, msg);
	if (m->result && cJSON_IsObject(m->result)) {
		msg->kind = GW_MESSAGE_REPLY;
		msg->body = m->result;
		return 0;
	}
	if (m->progress && cJSON_IsObject(m->progress)) {
		msg->kind = GW_MESSAGE_PROGRESS;
		msg->body = m->progress;
		return 0;
	}
	return -EBADMSG;
}

int gw_message_parse(const char *payload, size_t len, struct gw_message *ret_msg)
{
	struct gw_message msg = { 0 };
	struct members m;
	cJSON *root;
	int r = parse_document(payload, len, &root);

	if (r < 0)
		return r;
	r = collect_members(root, &m);
	if (r == 0)
		r = take_message(root, &m, &msg);
	if (r < 0) {
		cJSON_Delete(root);
		return r;
	}
	msg.root = root;
	*ret_msg = msg;
	return 0;
}

void gw_message_finish(struct gw_message *msg)
{
	if (!msg)
		return;
	cJSON_Delete(msg->root);
	memset(msg, 0, sizeof(*msg));
}

/* ---- encoders ---- */

/* Never hand out what gw_message_parse() would refuse. */
static char *checked(char *text)
{
	struct gw_message msg;

	if (!text)
		return NULL;
	if (gw_message_parse(text, strlen(text), &msg) < 0) {
		free(text);
		return NULL;
	}
	gw_message_finish(&msg);
	return text;
}

/* {"id":N,<key>:<body>[,"fds":n]} with body printed by cJSON. */
static char *wrap(uint64_t id, const char *prefix, const cJSON *body, unsigned nfds)
{
	char *body_text = NULL, *out = NULL, fds_text[32] = "";
	int n;

	if (id > (UINT64_C(1) << 53) || nfds > GW_FRAME_MAX_FDS)
		return NULL;
	if (body && !cJSON_IsObject(body))
		return NULL;
	if (body) {
		body_text = cJSON_PrintUnformatted(body);
		if (!body_text)
			return NULL;
	}
	if (nfds)
		snprintf(fds_text, sizeof(fds_text), ",\"fds\":%u", nfds);
	n = asprintf(&out, "{\"id\":%" PRIu64 ",%s%s%s}", id, prefix, body_text ? body_text : "{}",
		     fds_text);
	free(body_text);
	if (n < 0)
		return NULL;
	return checked(out);
}

char *gw_request_encode(uint64_t id, const char *method, const cJSON *params, unsigned nfds)
{
	char prefix[GW_METHOD_MAX + 32];

	if (!method || !name_valid(method, GW_METHOD_MAX))
		return NULL;
	snprintf(prefix, sizeof(prefix), "\"method\":\"%s\",\"params\":", method);
	return wrap(id, prefix, params, nfds);
}

char *gw_reply_encode(uint64_t id, const cJSON *result, unsigned nfds)
{
	return wrap(id, "\"result\":", result, nfds);
}

char *gw_progress_encode(uint64_t id, const cJSON *progress)
{
	return wrap(id, "\"progress\":", progress, 0);
}

/* Copy of s, cut below GW_STRING_MAX on a character boundary, invalid UTF-8 replaced by '?'. */
static char *sanitize_message(const char *s)
{
	size_t len = s ? strlen(s) : 0, i = 0, o = 0;
	char *out = malloc((len < GW_STRING_MAX ? len : GW_STRING_MAX) + 1);

	if (!out)
		return NULL;
	while (i < len) {
		size_t n = utf8_seq_len((const unsigned char *)s + i, len - i);

		if (o + (n ? n : 1) > GW_STRING_MAX - 1)
			break;
		if (n) {
			memcpy(out + o, s + i, n);
			o += n;
			i += n;
		} else {
			out[o++] = '?';
			i++;
		}
	}
	out[o] = '\0';
	return out;
}

char *gw_error_encode(uint64_t id, const char *name, const char *message, const cJSON *extra)
{
	cJSON *err = NULL, *copy;
	const cJSON *item;
	char *text = NULL, *msg_text = NULL;

	if (!name || !name_valid(name, GW_ERROR_NAME_MAX))
		return NULL;
	if (extra && !cJSON_IsObject(extra))
		return NULL;
	msg_text = sanitize_message(message);
	if (!msg_text)
		return NULL;
	err = cJSON_CreateObject();
	if (!err || !cJSON_AddStringToObject(err, "name", name) ||
	    !cJSON_AddStringToObject(err, "message", msg_text))
		goto out;
	for (item = extra ? extra->child : NULL; item; item = item->next) {
		if (!item->string || strcmp(item->string, "name") == 0 ||
		    strcmp(item->string, "message") == 0)
			continue;
		copy = cJSON_Duplicate(item, 1);
		if (!copy)
			goto out;
		if (!cJSON_AddItemToObject(err, item->string, copy)) {
			cJSON_Delete(copy);
			goto out;
		}
	}
	text = wrap(id, "\"error\":", err, 0);
out:
	cJSON_Delete(err);
	free(msg_text);
	return text;
}
