/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for proto/: runs the frame decoder over the input in odd-sized chunks derived
 * from its first byte, and gw_message_parse() plus the typed getters on every decoded payload
 * and on the whole input taken as one payload. Whatever the parser accepts must survive
 * re-encoding and parse again the same. Any violated invariant aborts.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw-proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Statistics for fuzz-replay: payloads seen and accepted. */
unsigned long fuzz_proto_payloads, fuzz_proto_accepted;

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond)) {                                                                    \
			fprintf(stderr, "fuzz-proto: %s:%d: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                  \
		}                                                                                 \
	} while (0)

static void exercise_getters(const cJSON *obj)
{
	const cJSON *item, *arr;
	unsigned n = 0;

	for (item = obj->child; item && n < 64; item = item->next, n++) {
		const char *s = NULL;
		uint64_t u = 0;
		int b = 0, r;

		if (!item->string)
			continue;
		r = gw_json_get_string(obj, item->string, GW_STRING_MAX, &s);
		CHECK(r == 0 || r == -EINVAL || r == -ENOENT);
		CHECK(r != 0 || (s && strlen(s) < GW_STRING_MAX));
		r = gw_json_get_u64(obj, item->string, 1, GW_PID_MAX, &u);
		CHECK(r != 0 || (u >= 1 && u <= GW_PID_MAX));
		r = gw_json_get_u64(obj, item->string, 0, UINT64_MAX, &u);
		CHECK(r != 0 || u <= (UINT64_C(1) << 53));
		r = gw_json_get_hex_u64(obj, item->string, &u);
		CHECK(r != 0 || (cJSON_IsString(item) && strncmp(item->valuestring, "0x", 2) == 0));
		r = gw_json_get_bool(obj, item->string, &b);
		CHECK(r != 0 || b == 0 || b == 1);
		r = gw_json_get_string_array(obj, item->string, 8, &arr);
		CHECK(r != 0 || cJSON_GetArraySize(arr) <= 8);
		if (cJSON_IsObject(item))
			exercise_getters(item); /* depth is bounded by the parser */
	}
}

static void check_reencode(const struct gw_message *msg, size_t len)
{
	struct gw_message again;
	char *text = NULL;

	switch (msg->kind) {
	case GW_MESSAGE_REQUEST:
		text = gw_request_encode(msg->id, msg->method, msg->body, msg->nfds);
		break;
	case GW_MESSAGE_REPLY:
		text = gw_reply_encode(msg->id, msg->body, msg->nfds);
		break;
	case GW_MESSAGE_ERROR:
		text = gw_error_encode(msg->id, msg->error_name, msg->error_message, msg->body);
		break;
	case GW_MESSAGE_PROGRESS:
		text = gw_progress_encode(msg->id, msg->body);
		break;
	}
	/* Re-printing may grow a document ("1e5" -> "100000"); only small ones must fit. */
	if (len > GW_FRAME_MAX_PAYLOAD / 8 && !text)
		return;
	CHECK(text);
	CHECK(gw_message_parse(text, strlen(text), &again) == 0);
	CHECK(again.kind == msg->kind && again.id == msg->id);
	if (msg->kind == GW_MESSAGE_REQUEST) {
		CHECK(strcmp(again.method, msg->method) == 0);
		CHECK(again.nfds == msg->nfds);
		CHECK(cJSON_Compare(again.body, msg->body, 1));
	} else if (msg->kind == GW_MESSAGE_REPLY) {
		CHECK(again.nfds == msg->nfds);
		CHECK(cJSON_Compare(again.body, msg->body, 1));
	} else if (msg->kind == GW_MESSAGE_PROGRESS) {
		CHECK(cJSON_Compare(again.body, msg->body, 1));
	} else {
		CHECK(strcmp(again.error_name, msg->error_name) == 0);
		CHECK(strcmp(again.error_message, msg->error_message) == 0);
	}
	gw_message_finish(&again);
	free(text);
}

static void check_payload(const char *payload, size_t len)
{
	struct gw_message msg;
	int r;

	memset(&msg, 0, sizeof(msg));
	fuzz_proto_payloads++;
	r = gw_message_parse(payload, len, &msg);
	CHECK(r == 0 || r == -EBADMSG || r == -ENOMEM);
	if (r < 0) {
		CHECK(msg.root == NULL); /* untouched */
		return;
	}
	fuzz_proto_accepted++;
	CHECK(msg.root && msg.body && cJSON_IsObject(msg.body));
	CHECK(msg.id <= (UINT64_C(1) << 53));
	CHECK(msg.nfds <= GW_FRAME_MAX_FDS);
	CHECK(!memchr(payload, '\0', len));
	if (msg.kind == GW_MESSAGE_REQUEST) {
		CHECK(msg.method[0] && strlen(msg.method) < GW_METHOD_MAX);
		CHECK(strspn(msg.method, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					 "0123456789.") == strlen(msg.method));
	} else if (msg.kind == GW_MESSAGE_ERROR) {
		CHECK(msg.error_name && msg.error_message);
		CHECK(strlen(msg.error_message) < GW_STRING_MAX);
	} else {
		CHECK(msg.kind == GW_MESSAGE_REPLY);
	}
	exercise_getters(msg.body);
	check_reencode(&msg, len);
	gw_message_finish(&msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gw_frame_decoder dec;
	unsigned seed, k = 0;
	size_t off = 0;

	if (size == 0)
		return 0;
	seed = data[0];
	gw_frame_decoder_init(&dec, GW_FRAME_MAX_PAYLOAD);
	while (off < size) {
		/* Odd chunk sizes 1..63, a pattern chosen by the first byte. */
		size_t chunk = ((seed * 7 + k++ * (seed | 1)) % 32) * 2 + 1, plen = 0;
		char *payload = NULL;
		ssize_t r;

		if (chunk > size - off)
			chunk = size - off;
		r = gw_frame_decoder_feed(&dec, data + off, chunk, &payload, &plen);
		if (r < 0) {
			CHECK(r == -EBADMSG || r == -EMSGSIZE || r == -ENOMEM);
			CHECK(!payload);
			/* The stream stays refused. */
			CHECK(gw_frame_decoder_feed(&dec, data + off, chunk, &payload, &plen) == r);
			break;
		}
		CHECK((size_t)r <= chunk);
		off += (size_t)r;
		if (payload) {
			CHECK(plen >= GW_FRAME_MIN_PAYLOAD && plen <= GW_FRAME_MAX_PAYLOAD);
			CHECK(payload[plen] == '\0');
			CHECK(gw_frame_decoder_idle(&dec));
			check_payload(payload, plen);
			free(payload);
		} else {
			CHECK((size_t)r == chunk);
		}
	}
	gw_frame_decoder_finish(&dec);

	/* The whole input as one payload (the messages corpus is raw JSON). */
	if (size <= GW_FRAME_MAX_PAYLOAD) {
		char *copy = malloc(size);

		if (copy) {
			memcpy(copy, data, size); /* exact size: ASan sees any read past len */
			check_payload(copy, size);
			free(copy);
		}
	}
	return 0;
}
