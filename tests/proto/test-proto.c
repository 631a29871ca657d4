/* SPDX-License-Identifier: MIT */
/* Unit tests of proto/: encoders, message validation, typed getters, corpus and documentation
 * (the frame decoder: test-frame.c; fd passing: test-sockio.c; the framer: test-framer.c). */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "gw-proto.h"
#include "gw-test.h"

/* ---- helpers ---- */

static void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (!p)
		GW_FAIL("out of memory");
	return p;
}

static int parse(const char *text, struct gw_message *msg)
{
	return gw_message_parse(text, strlen(text), msg);
}

static void assert_rejected(const char *text)
{
	struct gw_message msg;

	memset(&msg, 0x5a, sizeof(msg));
	if (parse(text, &msg) != -EBADMSG)
		GW_FAIL("accepted: %s", text);
	GW_ASSERT_INT_EQ(msg.kind, 0x5a5a5a5a); /* untouched */
}

static void assert_accepted(const char *text)
{
	struct gw_message msg;

	if (parse(text, &msg) != 0)
		GW_FAIL("rejected: %s", text);
	gw_message_finish(&msg);
}

/* ---- encoders ---- */

GW_TEST(request_roundtrip)
{
	cJSON *params = cJSON_Parse("{\"pid\":123,\"gpu_pairs\":[[\"GPU-a\",\"GPU-b\"]],"
				    "\"x\":\"\\u00e9\"}");
	struct gw_message msg;
	uint64_t pid = 0;
	char *text;

	GW_ASSERT(params);
	text = gw_request_encode(42, GW_METHOD_PROCESS_RESTORE, params, 3);
	GW_ASSERT(text);
	GW_ASSERT(!strchr(text, '\n'));
	GW_ASSERT_INT_EQ(parse(text, &msg), 0);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_REQUEST);
	GW_ASSERT_INT_EQ(msg.id, 42);
	GW_ASSERT_INT_EQ(msg.nfds, 3);
	GW_ASSERT_STR_EQ(msg.method, GW_METHOD_PROCESS_RESTORE);
	GW_ASSERT_INT_EQ(gw_json_get_u64(msg.body, "pid", 1, GW_PID_MAX, &pid), 0);
	GW_ASSERT_INT_EQ(pid, 123);
	GW_ASSERT(cJSON_Compare(msg.body, params, 1));
	gw_message_finish(&msg);
	free(text);

	/* NULL params: {} on the wire and a non-NULL empty body; absent params alike. */
	text = gw_request_encode(0, GW_METHOD_STATUS, NULL, 0);
	GW_ASSERT_STR_EQ(text, "{\"id\":0,\"method\":\"gpuwarm.Status\",\"params\":{}}");
	free(text);
	GW_ASSERT_INT_EQ(parse("{\"id\":9,\"method\":\"gpuwarm.Status\"}", &msg), 0);
	GW_ASSERT(cJSON_IsObject(msg.body) && msg.body->child == NULL);
	GW_ASSERT_INT_EQ(msg.nfds, 0);
	gw_message_finish(&msg);
	gw_message_finish(NULL);
	cJSON_Delete(params);
}

GW_TEST(reply_roundtrip)
{
	cJSON *result = cJSON_Parse("{\"version\":1,\"server\":\"gpu-warmd 0.1.0\",\"pid\":1234,"
				    "\"uptime_s\":12.5,\"error\":null,\"ok\":true}");
	struct gw_message msg;
	char *text;

	text = gw_reply_encode(9007199254740992ULL, result, 1);
	GW_ASSERT(text);
	GW_ASSERT_INT_EQ(parse(text, &msg), 0);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_REPLY);
	GW_ASSERT(msg.id == 9007199254740992ULL);
	GW_ASSERT_INT_EQ(msg.nfds, 1);
	GW_ASSERT(cJSON_Compare(msg.body, result, 1));
	gw_message_finish(&msg);
	free(text);

	text = gw_reply_encode(5, NULL, 0);
	GW_ASSERT_STR_EQ(text, "{\"id\":5,\"result\":{}}");
	free(text);
	cJSON_Delete(result);
}

GW_TEST(error_roundtrip)
{
	cJSON *extra = cJSON_Parse("{\"cuda_error\":401,\"name\":\"ignored\"}");
	struct gw_message msg;
	uint64_t code = 0;
	char *text;

	text = gw_error_encode(7, GW_ERROR_CUDA,
			       "cuCheckpointProcessLock(pid 123): "
			       "CUDA_ERROR_ILLEGAL_STATE (401): \"quoted\"\n",
			       extra);
	GW_ASSERT(text);
	GW_ASSERT_INT_EQ(parse(text, &msg), 0);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_ERROR);
	GW_ASSERT_INT_EQ(msg.id, 7);
	GW_ASSERT_STR_EQ(msg.error_name, GW_ERROR_CUDA);
	GW_ASSERT_STR_CONTAINS(msg.error_message, "CUDA_ERROR_ILLEGAL_STATE (401): \"quoted\"\n");
	GW_ASSERT_INT_EQ(gw_json_get_u64(msg.body, "cuda_error", 0, UINT32_MAX, &code), 0);
	GW_ASSERT_INT_EQ(code, 401);
	gw_message_finish(&msg);
	free(text);

	text = gw_error_encode(8, GW_ERROR_INTERNAL, NULL, NULL);
	GW_ASSERT_STR_EQ(text, "{\"id\":8,\"error\":{\"name\":\"gpuwarm.Error.Internal\","
			       "\"message\":\"\"}}");
	free(text);
	cJSON_Delete(extra);
}

GW_TEST(error_encode_sanitizes_message)
{
	char *longmsg = xmalloc(10000), *text;
	struct gw_message msg;

	/* 2-byte characters so that the cut has to respect character boundaries. */
	for (int i = 0; i < 9998; i += 2)
		memcpy(longmsg + i, "\xc3\xa9", 2);
	longmsg[9998] = '\0';
	text = gw_error_encode(1, GW_ERROR_INTERNAL, longmsg, NULL);
	GW_ASSERT(text);
	GW_ASSERT_INT_EQ(parse(text, &msg), 0);
	GW_ASSERT(strlen(msg.error_message) < GW_STRING_MAX);
	GW_ASSERT(strlen(msg.error_message) >= GW_STRING_MAX - 2);
	gw_message_finish(&msg);
	free(text);

	text = gw_error_encode(1, GW_ERROR_INTERNAL, "bad \xff byte", NULL);
	GW_ASSERT(text);
	GW_ASSERT_INT_EQ(parse(text, &msg), 0);
	GW_ASSERT_STR_EQ(msg.error_message, "bad ? byte");
	gw_message_finish(&msg);
	free(text);
	free(longmsg);
}

GW_TEST(encoders_refuse_invalid)
{
	cJSON *arr = cJSON_CreateArray(), *bad = cJSON_CreateObject(), *deep = cJSON_CreateObject();
	cJSON *o = deep;
	char *big = xmalloc(GW_STRING_MAX + 1);

	GW_ASSERT(!gw_request_encode(1, "gpuwarm Hello", NULL, 0));
	GW_ASSERT(!gw_request_encode(1, "", NULL, 0));
	GW_ASSERT(!gw_request_encode(1, "gpuwarm.\"x", NULL, 0));
	GW_ASSERT(!gw_request_encode(1, NULL, NULL, 0));
	GW_ASSERT(!gw_request_encode(9007199254740993ULL, GW_METHOD_HELLO, NULL, 0));
	GW_ASSERT(!gw_request_encode(1, GW_METHOD_HELLO, NULL, GW_FRAME_MAX_FDS + 1));
	GW_ASSERT(!gw_request_encode(1, GW_METHOD_HELLO, arr, 0));
	GW_ASSERT(!gw_reply_encode(1, arr, 0));
	GW_ASSERT(!gw_error_encode(1, "gpuwarm.Error.Bad Name", "m", NULL));
	GW_ASSERT(!gw_error_encode(1, "gpuwarm.Error.X", "m", arr));
	/* Too long a string, too deep a document. */
	memset(big, 'a', GW_STRING_MAX);
	big[GW_STRING_MAX] = '\0';
	cJSON_AddStringToObject(bad, "s", big);
	GW_ASSERT(!gw_reply_encode(1, bad, 0));
	for (int i = 0; i < GW_JSON_MAX_DEPTH; i++)
		o = cJSON_AddObjectToObject(o, "d");
	GW_ASSERT(!gw_reply_encode(1, deep, 0));
	free(big);
	cJSON_Delete(arr);
	cJSON_Delete(bad);
	cJSON_Delete(deep);
}

/* ---- message validation ---- */

GW_TEST(parse_missing_id)
{
	assert_rejected("{\"method\":\"gpuwarm.Hello\",\"params\":{}}");
	assert_rejected("{\"result\":{}}");
	assert_rejected("{\"id\":null,\"result\":{}}");
	assert_rejected("{\"ID\":1,\"result\":{}}");
	assert_accepted("{\"id\":1,\"result\":{}}");
}

GW_TEST(parse_exactly_one_kind)
{
	assert_rejected("{\"id\":1,\"method\":\"gpuwarm.Hello\",\"result\":{}}");
	assert_rejected("{\"id\":1,\"result\":{},\"error\":{\"name\":\"a\",\"message\":\"b\"}}");
	assert_rejected("{\"id\":1}");
	assert_rejected("{\"id\":1,\"result\":{},\"params\":{}}");
	assert_rejected("{\"id\":1,\"id\":2,\"result\":{}}");
	assert_rejected("{\"id\":1,\"result\":{},\"result\":{}}");
	/* Unknown top-level members are ignored (forward compatibility). */
	assert_accepted("{\"id\":1,\"result\":{},\"trace\":\"x\"}");
}

GW_TEST(parse_wrong_types)
{
	char fds_text[64];

	assert_rejected("{\"id\":\"1\",\"result\":{}}");
	assert_rejected("{\"id\":true,\"result\":{}}");
	assert_rejected("{\"id\":1,\"method\":7}");
	assert_rejected("{\"id\":1,\"method\":\"gpuwarm.Hello\",\"params\":[]}");
	assert_rejected("{\"id\":1,\"method\":\"gpuwarm.Hello\",\"params\":null}");
	assert_rejected("{\"id\":1,\"result\":\"ok\"}");
	assert_rejected("{\"id\":1,\"result\":null}");
	assert_rejected("{\"id\":1,\"error\":\"bad\"}");
	assert_rejected("{\"id\":1,\"error\":{\"name\":5,\"message\":\"m\"}}");
	assert_rejected("{\"id\":1,\"error\":{\"name\":\"a\"}}");
	assert_rejected("{\"id\":1,\"error\":{\"message\":\"m\"}}");
	assert_rejected("{\"id\":1,\"error\":{\"name\":\"a\",\"message\":null}}");
	assert_rejected("{\"id\":1,\"result\":{},\"fds\":\"2\"}");
	assert_rejected("{\"id\":1,\"result\":{},\"fds\":-1}");
	snprintf(fds_text, sizeof(fds_text), "{\"id\":1,\"result\":{},\"fds\":%d}",
		 GW_FRAME_MAX_FDS + 1);
	assert_rejected(fds_text);
	assert_rejected("{\"id\":1,\"result\":{},\"fds\":1.5}");
	assert_rejected("[{\"id\":1,\"result\":{}}]");
	assert_rejected("\"{}\"");
	snprintf(fds_text, sizeof(fds_text), "{\"id\":1,\"result\":{},\"fds\":%d}",
		 GW_FRAME_MAX_FDS);
	assert_accepted(fds_text);
}

GW_TEST(parse_syntax_and_encoding)
{
	struct gw_message msg;
	const char with_nul[] = "{\"id\":1,\0\"result\":{}}";

	assert_rejected("{\"id\":1,\"result\":{}} x");
	assert_rejected("{\"id\":1,\"result\":{}}{}");
	assert_rejected("{\"id\":1,\"result\":{");
	assert_rejected("{\"id\":1,\"result\":{},}");
	assert_rejected("\xef\xbb\xbf{\"id\":1,\"result\":{}}");
	assert_rejected("{\"id\":1,\"result\":{\"s\":\"\xff\"}}");
	assert_rejected("{\"id\":1,\"result\":{\"s\":\"\xc0\xaf\"}}");      /* overlong */
	assert_rejected("{\"id\":1,\"result\":{\"s\":\"\xed\xa0\x80\"}}");  /* surrogate */
	assert_rejected("{\"id\":1,\"result\":{\"s\":\"a\\u0000b\"}}");
	assert_rejected("{\"id\":1,\"result\":{\"s\":\"tab\there\"}}");
	assert_rejected("{}");
	assert_rejected("{");
	/* Strict JSON numbers (cJSON alone would take some of these). */
	assert_rejected("{\"id\":07,\"result\":{}}");
	assert_rejected("{\"id\":1,\"result\":{\"a\":1.}}");
	assert_rejected("{\"id\":1,\"result\":{\"a\":.5}}");
	assert_rejected("{\"id\":1,\"result\":{\"a\":+1}}");
	assert_rejected("{\"id\":1,\"result\":{\"a\":1e}}");
	assert_rejected("{\"id\":1,\"result\":{\"a\":-}}");
	assert_rejected("{\"id\":1,\"result\":{\"a\":0x10}}");
	assert_rejected("{\"id\":1,\"result\":{\"a\":1e315}}"); /* overflows to inf */
	assert_rejected("{\"id\":1,\"result\":{\"a\":-1e315}}");
	assert_accepted("{\"id\":1,\"result\":{\"a\":1.5e0300,\"b\":1e-400}}");
	assert_accepted("{\"id\":1,\"result\":{\"a\":[0,-0,0.5,-1.25e-3,1E+2,12e0]}}");
	/* Member names are unique in every object, small or large. */
	assert_rejected("{\"id\":1,\"result\":{\"a\":{\"b\":1,\"b\":2}}}");
	assert_rejected("{\"id\":1,\"result\":{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,"
			"\"f\":6,\"g\":7,\"h\":8,\"i\":9,\"j\":10,\"k\":11,\"l\":12,\"m\":13,"
			"\"n\":14,\"o\":15,\"p\":16,\"q\":17,\"r\":18,\"a\":19}}");
	assert_accepted("{\"id\":1,\"result\":{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,"
			"\"f\":6,\"g\":7,\"h\":8,\"i\":9,\"j\":10,\"k\":11,\"l\":12,\"m\":13,"
			"\"n\":14,\"o\":15,\"p\":16,\"q\":17,\"r\":18,\"A\":19}}");
	assert_rejected("{\"id\":1,\"error\":{\"name\":\"a\",\"message\":\"m\",\"name\":\"b\"}}");
	assert_accepted(" {\"id\":1,\"result\":{\"s\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}}"
			"\r\n ");
	/* NUL bytes inside len are refused even though a C string would end there. */
	GW_ASSERT_INT_EQ(gw_message_parse(with_nul, sizeof(with_nul) - 1, &msg), -EBADMSG);
	GW_ASSERT_INT_EQ(gw_message_parse("{\"id\":1,\"result\":{}}", 21, &msg), -EBADMSG);
	/* len is honoured: no read past it, the text need not be NUL-terminated. */
	GW_ASSERT_INT_EQ(gw_message_parse("{\"id\":1,\"result\":{}}garbage", 20, &msg), 0);
	gw_message_finish(&msg);
	GW_ASSERT_INT_EQ(gw_message_parse(NULL, 2, &msg), -EBADMSG);
	GW_ASSERT_INT_EQ(gw_message_parse("{}", 1, &msg), -EBADMSG);
}

GW_TEST(parse_depth_limit)
{
	char *s = xmalloc(256), *bomb;
	struct gw_message msg;

	/* Depth counts the outer object as 1: exactly GW_JSON_MAX_DEPTH levels pass. */
	strcpy(s, "{\"id\":1,\"result\":{\"a\":");
	for (int i = 0; i < GW_JSON_MAX_DEPTH - 2; i++)
		strcat(s, "[");
	for (int i = 0; i < GW_JSON_MAX_DEPTH - 2; i++)
		strcat(s, "]");
	strcat(s, "}}");
	assert_accepted(s);
	strcpy(s, "{\"id\":1,\"result\":{\"a\":");
	for (int i = 0; i < GW_JSON_MAX_DEPTH - 1; i++)
		strcat(s, "[");
	for (int i = 0; i < GW_JSON_MAX_DEPTH - 1; i++)
		strcat(s, "]");
	strcat(s, "}}");
	assert_rejected(s);
	/* Brackets inside strings do not count. */
	assert_accepted("{\"id\":1,\"result\":{\"a\":"
			"\"[[[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{\\\"[[[[\"}}");
	free(s);

	/* 100000 '[': refused quickly, without deep recursion. */
	bomb = xmalloc(100001);
	memset(bomb, '[', 100000);
	bomb[100000] = '\0';
	GW_ASSERT_INT_EQ(gw_message_parse(bomb, 100000, &msg), -EBADMSG);
	bomb[0] = '{';
	GW_ASSERT_INT_EQ(gw_message_parse(bomb, 100000, &msg), -EBADMSG);
	memcpy(bomb, "{\"id\":1,\"result\":", 17);
	GW_ASSERT_INT_EQ(gw_message_parse(bomb, 100000, &msg), -EBADMSG);
	free(bomb);
}

GW_TEST(parse_method_names)
{
	char s[256], name[128];

	assert_accepted("{\"id\":1,\"method\":\"gpuwarm.Hello\"}");
	assert_accepted("{\"id\":1,\"method\":\"x.Y9\"}");
	assert_rejected("{\"id\":1,\"method\":\"gpuwarm Hello\"}");
	assert_rejected("{\"id\":1,\"method\":\"gpuwarm/Hello\"}");
	assert_rejected("{\"id\":1,\"method\":\"gpuwarm_Hello\"}");
	assert_rejected("{\"id\":1,\"method\":\"gpuwarm.H\xc3\xa9llo\"}");
	assert_rejected("{\"id\":1,\"method\":\"\"}");
	/* GW_METHOD_MAX counts the NUL: 63 characters pass, 64 do not. */
	memset(name, 'a', GW_METHOD_MAX - 1);
	name[GW_METHOD_MAX - 1] = '\0';
	snprintf(s, sizeof(s), "{\"id\":1,\"method\":\"%s\"}", name);
	assert_accepted(s);
	name[GW_METHOD_MAX - 1] = 'a';
	name[GW_METHOD_MAX] = '\0';
	snprintf(s, sizeof(s), "{\"id\":1,\"method\":\"%s\"}", name);
	assert_rejected(s);
}

GW_TEST(parse_id_range)
{
	struct gw_message msg;

	GW_ASSERT_INT_EQ(parse("{\"id\":9007199254740992,\"result\":{}}", &msg), 0);
	GW_ASSERT(msg.id == 9007199254740992ULL);
	gw_message_finish(&msg);
	GW_ASSERT_INT_EQ(parse("{\"id\":0,\"result\":{}}", &msg), 0);
	GW_ASSERT_INT_EQ(msg.id, 0);
	gw_message_finish(&msg);
	GW_ASSERT_INT_EQ(parse("{\"id\":1e3,\"result\":{}}", &msg), 0);
	GW_ASSERT_INT_EQ(msg.id, 1000);
	gw_message_finish(&msg);
	GW_ASSERT_INT_EQ(parse("{\"id\":4.0,\"result\":{}}", &msg), 0);
	GW_ASSERT_INT_EQ(msg.id, 4);
	gw_message_finish(&msg);
	/* 2^53 + 1 rounds to 2^53 as a double: it must still be refused. */
	assert_rejected("{\"id\":9007199254740993,\"result\":{}}");
	assert_rejected("{\"id\":9007199254740992.5,\"result\":{}}");
	assert_rejected("{\"id\":9.007199254740993e15,\"result\":{}}");
	assert_rejected("{\"id\":9007199254740994,\"result\":{}}");
	assert_rejected("{\"id\":18446744073709551615,\"result\":{}}");
	assert_rejected("{\"id\":-1,\"result\":{}}");
	assert_rejected("{\"id\":1.5,\"result\":{}}");
	assert_rejected("{\"id\":1e400,\"result\":{}}");
	assert_rejected("{\"id\":NaN,\"result\":{}}");
}

GW_TEST(parse_string_limits)
{
	size_t n = GW_STRING_MAX + 64;
	char *s = xmalloc(n + 64), name[200];

	/* message: GW_STRING_MAX - 1 bytes pass, GW_STRING_MAX do not. */
	const char *pre = "{\"id\":1,\"error\":{\"name\":\"gpuwarm.Error.Internal\",\"message\":\"";
	const char *pre2 = "{\"id\":1,\"result\":{\"k\":\"";
	size_t p = strlen(pre), p2 = strlen(pre2);

	strcpy(s, pre);
	memset(s + p, 'm', GW_STRING_MAX - 1);
	strcpy(s + p + GW_STRING_MAX - 1, "\"}}");
	assert_accepted(s);
	s[p + GW_STRING_MAX - 1] = 'm';
	strcpy(s + p + GW_STRING_MAX, "\"}}");
	assert_rejected(s);
	/* Any other string too, values and keys. */
	strcpy(s, pre2);
	memset(s + p2, 'v', GW_STRING_MAX);
	strcpy(s + p2 + GW_STRING_MAX, "\"}}");
	assert_rejected(s);
	p2 -= 4; /* keys: {"id":1,"result":{"kkkk...":1}} */
	s[p2] = '\0';
	strcpy(s, "{\"id\":1,\"result\":{\"");
	memset(s + p2, 'k', GW_STRING_MAX);
	strcpy(s + p2 + GW_STRING_MAX, "\":1}}");
	assert_rejected(s);
	strcpy(s + p2 + GW_STRING_MAX - 1, "\":1}}");
	assert_accepted(s);
	/* Error names: [A-Za-z0-9.] and < 128 bytes. */
	assert_rejected("{\"id\":1,\"error\":{\"name\":\"bad name\",\"message\":\"m\"}}");
	assert_rejected("{\"id\":1,\"error\":{\"name\":\"\",\"message\":\"m\"}}");
	memset(name, 'E', 127);
	name[127] = '\0';
	snprintf(s, n, "{\"id\":1,\"error\":{\"name\":\"%s\",\"message\":\"m\"}}", name);
	assert_accepted(s);
	name[127] = 'E';
	name[128] = '\0';
	snprintf(s, n, "{\"id\":1,\"error\":{\"name\":\"%s\",\"message\":\"m\"}}", name);
	assert_rejected(s);
	free(s);
}

/* ---- typed getters ---- */

GW_TEST(getter_u64_bounds)
{
	cJSON *o = cJSON_Parse("{\"a\":5,\"neg\":-1,\"frac\":1.5,\"big\":9007199254740992,"
			       "\"huge\":1e300,\"s\":\"5\",\"n\":null,\"t\":true,\"z\":-0}");
	uint64_t v = 77;

	GW_ASSERT(o);
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "a", 0, 10, &v), 0);
	GW_ASSERT_INT_EQ(v, 5);
	v = 77;
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "a", 6, 10, &v), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "a", 0, 4, &v), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "neg", 0, UINT64_MAX, &v), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "frac", 0, UINT64_MAX, &v), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "huge", 0, UINT64_MAX, &v), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "s", 0, UINT64_MAX, &v), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "t", 0, UINT64_MAX, &v), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "n", 0, UINT64_MAX, &v), -ENOENT);
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "missing", 0, UINT64_MAX, &v), -ENOENT);
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "A", 0, UINT64_MAX, &v), -ENOENT); /* case matters */
	GW_ASSERT_INT_EQ(v, 77); /* untouched on failure */
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "big", 0, UINT64_MAX, &v), 0);
	GW_ASSERT(v == 9007199254740992ULL);
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "z", 0, 1, &v), 0);
	GW_ASSERT_INT_EQ(v, 0);
	cJSON_ReplaceItemInObject(o, "big", cJSON_CreateNumber(9007199254740994.0));
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "big", 0, UINT64_MAX, &v), -EINVAL);
	cJSON_ReplaceItemInObject(o, "big", cJSON_CreateNumber(0.0 / 0.0));
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "big", 0, UINT64_MAX, &v), -EINVAL);
	cJSON_ReplaceItemInObject(o, "big", cJSON_CreateNumber(1.0 / 0.0));
	GW_ASSERT_INT_EQ(gw_json_get_u64(o, "big", 0, UINT64_MAX, &v), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_u64(NULL, "a", 0, 10, &v), -EINVAL);
	cJSON_Delete(o);
}

GW_TEST(getter_string_bounds)
{
	cJSON *o = cJSON_Parse("{\"s\":\"abcd\",\"e\":\"\",\"n\":null,\"i\":1}");
	const char *s = "untouched";

	GW_ASSERT_INT_EQ(gw_json_get_string(o, "s", 5, &s), 0);
	GW_ASSERT_STR_EQ(s, "abcd");
	s = "untouched";
	GW_ASSERT_INT_EQ(gw_json_get_string(o, "s", 4, &s), -EINVAL); /* strlen >= max_len */
	GW_ASSERT_INT_EQ(gw_json_get_string(o, "i", 5, &s), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_string(o, "n", 5, &s), -ENOENT);
	GW_ASSERT_INT_EQ(gw_json_get_string(o, "x", 5, &s), -ENOENT);
	GW_ASSERT_STR_EQ(s, "untouched");
	GW_ASSERT_INT_EQ(gw_json_get_string(o, "e", 1, &s), 0);
	GW_ASSERT_STR_EQ(s, "");
	cJSON_Delete(o);
}

GW_TEST(getter_bool_and_array)
{
	cJSON *o = cJSON_Parse("{\"t\":true,\"f\":false,\"i\":1,\"a\":[\"0\",\"1\",\"2\"],"
			       "\"mixed\":[\"0\",1],\"e\":[],\"obj\":{}}");
	const cJSON *arr = NULL;
	int b = 7;

	GW_ASSERT_INT_EQ(gw_json_get_bool(o, "t", &b), 0);
	GW_ASSERT_INT_EQ(b, 1);
	GW_ASSERT_INT_EQ(gw_json_get_bool(o, "f", &b), 0);
	GW_ASSERT_INT_EQ(b, 0);
	b = 7;
	GW_ASSERT_INT_EQ(gw_json_get_bool(o, "i", &b), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_bool(o, "x", &b), -ENOENT);
	GW_ASSERT_INT_EQ(b, 7);
	GW_ASSERT_INT_EQ(gw_json_get_string_array(o, "a", 3, &arr), 0);
	GW_ASSERT_INT_EQ(cJSON_GetArraySize(arr), 3);
	arr = NULL;
	GW_ASSERT_INT_EQ(gw_json_get_string_array(o, "a", 2, &arr), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_string_array(o, "mixed", 8, &arr), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_string_array(o, "obj", 8, &arr), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_string_array(o, "x", 8, &arr), -ENOENT);
	GW_ASSERT(arr == NULL);
	GW_ASSERT_INT_EQ(gw_json_get_string_array(o, "e", 0, &arr), 0);
	GW_ASSERT_INT_EQ(cJSON_GetArraySize(arr), 0);
	cJSON_Delete(o);
}

GW_TEST(getter_hex_u64)
{
	cJSON *o = cJSON_Parse("{\"va\":\"0x7f2a00000000\",\"max\":\"0xffffffffffffffff\","
			       "\"up\":\"0xABCdef\",\"zero\":\"0x0\","
			       "\"long\":\"0x10000000000000000\","
			       "\"bare\":\"0x\",\"nopfx\":\"7f2a\",\"bad\":\"0x7g\",\"X\":\"0X10\","
			       "\"sp\":\" 0x1\",\"neg\":\"-0x1\",\"num\":16,\"n\":null}");
	uint64_t v = 99;

	GW_ASSERT_INT_EQ(gw_json_get_hex_u64(o, "va", &v), 0);
	GW_ASSERT(v == 0x7f2a00000000ULL);
	GW_ASSERT_INT_EQ(gw_json_get_hex_u64(o, "max", &v), 0);
	GW_ASSERT(v == UINT64_MAX);
	GW_ASSERT_INT_EQ(gw_json_get_hex_u64(o, "up", &v), 0);
	GW_ASSERT(v == 0xabcdefULL);
	GW_ASSERT_INT_EQ(gw_json_get_hex_u64(o, "zero", &v), 0);
	GW_ASSERT_INT_EQ(v, 0);
	v = 99;
	GW_ASSERT_INT_EQ(gw_json_get_hex_u64(o, "long", &v), -EINVAL); /* 17 digits */
	GW_ASSERT_INT_EQ(gw_json_get_hex_u64(o, "bare", &v), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_hex_u64(o, "nopfx", &v), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_hex_u64(o, "bad", &v), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_hex_u64(o, "X", &v), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_hex_u64(o, "sp", &v), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_hex_u64(o, "neg", &v), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_hex_u64(o, "num", &v), -EINVAL);
	GW_ASSERT_INT_EQ(gw_json_get_hex_u64(o, "n", &v), -ENOENT);
	GW_ASSERT_INT_EQ(gw_json_get_hex_u64(o, "missing", &v), -ENOENT);
	GW_ASSERT_INT_EQ(v, 99);
	cJSON_Delete(o);
}

/* ---- the seed corpus and the documentation agree with the parser ---- */

static size_t read_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f)
		GW_FAIL("cannot open %s", path);
	n = fread(buf, 1, cap, f);
	GW_ASSERT(n < cap);
	fclose(f);
	return n;
}

/* Frames and valid payloads of one file: -1 on any framing or message error, else frames. */
static int frames_in(const char *buf, size_t len, int *partial)
{
	struct gw_frame_decoder dec;
	size_t off = 0;
	int frames = 0;

	gw_frame_decoder_init(&dec, 0);
	while (off < len) {
		struct gw_message msg;
		char *payload;
		size_t plen;
		ssize_t r = gw_frame_decoder_feed(&dec, buf + off, len - off, &payload, &plen);

		if (r < 0) {
			gw_frame_decoder_finish(&dec);
			return -1;
		}
		off += (size_t)r;
		if (!payload)
			continue;
		r = gw_message_parse(payload, plen, &msg);
		free(payload);
		if (r < 0) {
			gw_frame_decoder_finish(&dec);
			return -1;
		}
		gw_message_finish(&msg);
		frames++;
	}
	*partial = !gw_frame_decoder_idle(&dec);
	gw_frame_decoder_finish(&dec);
	return frames;
}

static void check_corpus_dir(const char *sub)
{
	char dir[512], path[1024], *buf = xmalloc(1 << 16);
	struct dirent *de;
	int files = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/%s", GW_PROTO_CORPUS, sub);
	d = opendir(dir);
	GW_ASSERT(d);
	while ((de = readdir(d))) {
		struct gw_message msg;
		int partial = 0, frames;
		size_t len;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		len = read_file(path, buf, 1 << 16);
		files++;
		if (strcmp(sub, "frames") == 0) {
			if (frames_in(buf, len, &partial) != 1 || partial)
				GW_FAIL("%s: not exactly one valid frame", path);
		} else if (strcmp(sub, "messages") == 0) {
			if (gw_message_parse(buf, len, &msg) != 0)
				GW_FAIL("%s: rejected", path);
			gw_message_finish(&msg);
		} else {
			/* Broken: bad framing, a bad message, a cut frame, or not one frame. */
			frames = frames_in(buf, len, &partial);
			if (frames == 1 && !partial && gw_message_parse(buf, len, &msg) == 0)
				GW_FAIL("%s: accepted", path);
			if (frames == 0 && !partial && gw_message_parse(buf, len, &msg) == 0)
				GW_FAIL("%s: accepted as a payload", path);
		}
	}
	closedir(d);
	GW_ASSERT(files >= 5);
	free(buf);
}

GW_TEST(corpus_matches_parser)
{
	check_corpus_dir("frames");
	check_corpus_dir("messages");
	check_corpus_dir("broken");
}

/* Every ```json block of docs/protocol.md is a valid message. */
GW_TEST(doc_examples_parse)
{
	char *doc = xmalloc(1 << 17), *p, *end;
	size_t len = read_file(GW_PROTO_DOC, doc, 1 << 17);
	static const char *methods[] = {
		GW_METHOD_HELLO, GW_METHOD_STATUS, GW_METHOD_DRAIN, GW_METHOD_UNDRAIN,
		GW_METHOD_LEASE_ACQUIRE, GW_METHOD_LEASE_RELEASE, GW_METHOD_PROCESS_STATE,
		GW_METHOD_PROCESS_LOCK, GW_METHOD_PROCESS_CHECKPOINT, GW_METHOD_PROCESS_RESTORE,
		GW_METHOD_PROCESS_UNLOCK, GW_METHOD_SUSPEND, GW_METHOD_RESUME,
		GW_METHOD_AGENT_ATTACH, GW_METHOD_AGENT_UPDATE, GW_METHOD_AGENT_EXPORT,
		GW_METHOD_AGENT_RELEASE, GW_METHOD_AGENT_MAP, GW_METHOD_AGENT_PING,
	};
	static const char *errors[] = {
		GW_ERROR_PROTOCOL_VERSION, GW_ERROR_HELLO_REQUIRED, GW_ERROR_INVALID_REQUEST,
		GW_ERROR_UNKNOWN_METHOD, GW_ERROR_PERMISSION_DENIED, GW_ERROR_NO_SUCH_PROCESS,
		GW_ERROR_NO_SUCH_GPU, GW_ERROR_NO_SUCH_LEASE, GW_ERROR_NO_GPU_AVAILABLE,
		GW_ERROR_DRAINING, GW_ERROR_DRIVER_UNAVAILABLE, GW_ERROR_CUDA,
		GW_ERROR_ILLEGAL_STATE, GW_ERROR_TIMEOUT, GW_ERROR_BUSY, GW_ERROR_LIMIT,
		GW_ERROR_AGENT, GW_ERROR_IMAGE, GW_ERROR_INTERNAL,
	};
	unsigned seen = 0, blocks = 0, requests = 0, replies = 0;
	char needle[128];

	doc[len] = '\0';
	for (p = doc; (p = strstr(p, "```json\n")); p = end + 3) {
		struct gw_message msg;

		p += 8;
		end = strstr(p, "```");
		GW_ASSERT(end);
		if (gw_message_parse(p, (size_t)(end - p) - 1, &msg) != 0) {
			*end = '\0';
			GW_FAIL("docs/protocol.md example rejected:\n%s", p);
		}
		if (msg.kind == GW_MESSAGE_REQUEST) {
			requests++;
			for (unsigned i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
				if (strcmp(msg.method, methods[i]) == 0)
					seen |= 1u << i;
		} else {
			replies++;
		}
		gw_message_finish(&msg);
		blocks++;
	}
	/* Every method has a worked request, each request a reply or error. */
	GW_ASSERT_INT_EQ(seen, (1u << (sizeof(methods) / sizeof(methods[0]))) - 1);
	GW_ASSERT(replies >= requests);
	/* Every error name has a row in the errors table. */
	for (unsigned i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
		snprintf(needle, sizeof(needle), "| `%s` |", errors[i]);
		GW_ASSERT_STR_CONTAINS(doc, needle);
	}
	free(doc);
}

GW_TEST_MAIN()
