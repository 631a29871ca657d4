/* SPDX-License-Identifier: MIT */
/* Unit tests of proto/'s frame header and incremental decoder (frame.c). */
#include <stdint.h>

#include "gw-proto.h"
#include "gw-test.h"

static size_t frame(const char *payload, uint8_t *out)
{
	size_t len = strlen(payload);

	GW_ASSERT_INT_EQ(gw_frame_header_encode(len, out), 0);
	memcpy(out + GW_FRAME_HEADER_SIZE, payload, len);
	return GW_FRAME_HEADER_SIZE + len;
}

static uint32_t rnd(uint64_t *state)
{
	*state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t)(*state >> 33);
}

/* ---- framing ---- */

GW_TEST(header_encode_bytes)
{
	uint8_t h[GW_FRAME_HEADER_SIZE];
	static const uint8_t want[] = { 'G', 'W', 'R', 'M', 0x34, 0x12, 0x00, 0x00 };

	GW_ASSERT_INT_EQ(gw_frame_header_encode(0x1234, h), 0);
	GW_ASSERT(memcmp(h, want, sizeof(want)) == 0);
	GW_ASSERT_INT_EQ(gw_frame_header_encode(GW_FRAME_MAX_PAYLOAD, h), 0);
	GW_ASSERT_INT_EQ(h[4] | h[5] << 8 | h[6] << 16 | h[7] << 24, GW_FRAME_MAX_PAYLOAD);
	GW_ASSERT_INT_EQ(gw_frame_header_encode(2, h), 0);
	GW_ASSERT_INT_EQ(gw_frame_header_encode(0, h), -EMSGSIZE);
	GW_ASSERT_INT_EQ(gw_frame_header_encode(1, h), -EMSGSIZE);
	GW_ASSERT_INT_EQ(gw_frame_header_encode(GW_FRAME_MAX_PAYLOAD + 1, h), -EMSGSIZE);
}

static const char *stream_payloads[] = {
	"{\"id\":1,\"method\":\"gpuwarm.Hello\",\"params\":{\"version\":1,\"client\":\"t\"}}",
	"{}",
	"{\"id\":2,\"result\":{\"lease\":7}}",
	"{\"id\":3,\"error\":{\"name\":\"gpuwarm.Error.Busy\",\"message\":\"busy\"}}",
};

#define NPAYLOADS (sizeof(stream_payloads) / sizeof(stream_payloads[0]))

static size_t build_stream(uint8_t *buf)
{
	size_t off = 0;

	for (size_t i = 0; i < NPAYLOADS; i++)
		off += frame(stream_payloads[i], buf + off);
	return off;
}

/* Feed buf in chunks chosen by chunk(); check the frames come out in order and whole. */
static void decode_stream(const uint8_t *buf, size_t len, size_t (*chunk)(uint64_t *),
			  uint64_t seed)
{
	struct gw_frame_decoder dec;
	size_t off = 0, got = 0;
	uint64_t state = seed;

	gw_frame_decoder_init(&dec, GW_FRAME_MAX_PAYLOAD);
	GW_ASSERT(gw_frame_decoder_idle(&dec));
	while (off < len) {
		size_t n = chunk(&state), plen = 0;
		char *payload;
		ssize_t r;

		if (n > len - off)
			n = len - off;
		while (n > 0) {
			r = gw_frame_decoder_feed(&dec, buf + off, n, &payload, &plen);
			GW_ASSERT(r >= 0 && (size_t)r <= n);
			off += (size_t)r;
			n -= (size_t)r;
			if (payload) {
				GW_ASSERT(got < NPAYLOADS);
				GW_ASSERT_INT_EQ(plen, strlen(stream_payloads[got]));
				GW_ASSERT_STR_EQ(payload, stream_payloads[got]);
				GW_ASSERT(gw_frame_decoder_idle(&dec));
				free(payload);
				got++;
			} else {
				GW_ASSERT_INT_EQ(n, 0); /* all consumed without a frame */
			}
		}
	}
	GW_ASSERT_INT_EQ(got, NPAYLOADS);
	GW_ASSERT(gw_frame_decoder_idle(&dec));
	gw_frame_decoder_finish(&dec);
}

static size_t chunk_one(uint64_t *state)
{
	(void)state;
	return 1;
}

static size_t chunk_random(uint64_t *state)
{
	return 1 + rnd(state) % 23;
}

static size_t chunk_all(uint64_t *state)
{
	(void)state;
	return SIZE_MAX;
}

GW_TEST(decoder_byte_by_byte)
{
	uint8_t buf[1024];
	size_t len = build_stream(buf);

	decode_stream(buf, len, chunk_one, 0);
}

GW_TEST(decoder_random_chunks)
{
	uint8_t buf[1024];
	size_t len = build_stream(buf);

	for (uint64_t seed = 1; seed <= 200; seed++)
		decode_stream(buf, len, chunk_random, seed);
}

GW_TEST(decoder_frames_in_one_buffer)
{
	uint8_t buf[1024];
	size_t len = build_stream(buf), first = GW_FRAME_HEADER_SIZE + strlen(stream_payloads[0]);
	struct gw_frame_decoder dec;
	char *payload;
	size_t plen;

	gw_frame_decoder_init(&dec, 0);
	/* Stops right after the first frame. */
	GW_ASSERT_INT_EQ(gw_frame_decoder_feed(&dec, buf, len, &payload, &plen), first);
	GW_ASSERT_STR_EQ(payload, stream_payloads[0]);
	free(payload);
	gw_frame_decoder_finish(&dec);
	decode_stream(buf, len, chunk_all, 0);
}

GW_TEST(decoder_bad_magic)
{
	struct gw_frame_decoder dec;
	const uint8_t bad[] = { 'G', 'W', 'R', 'X' };
	char *payload = (char *)1;
	size_t plen;

	gw_frame_decoder_init(&dec, 0);
	for (int i = 0; i < 3; i++)
		GW_ASSERT_INT_EQ(gw_frame_decoder_feed(&dec, bad + i, 1, &payload, &plen), 1);
	/* The fourth byte completes the magic: refused before any length byte arrives. */
	GW_ASSERT_INT_EQ(gw_frame_decoder_feed(&dec, bad + 3, 1, &payload, &plen), -EBADMSG);
	GW_ASSERT(payload == NULL);
	/* And the stream stays refused. */
	GW_ASSERT_INT_EQ(gw_frame_decoder_feed(&dec, "{}", 2, &payload, &plen), -EBADMSG);
	gw_frame_decoder_finish(&dec);

	gw_frame_decoder_init(&dec, 0);
	GW_ASSERT_INT_EQ(gw_frame_decoder_feed(&dec, "HTTP/1.1 200 OK\r\n", 17, &payload, &plen),
			 -EBADMSG);
	gw_frame_decoder_finish(&dec);
}

GW_TEST(decoder_oversize_no_allocation)
{
	struct gw_frame_decoder dec;
	const uint8_t huge[] = { 'G', 'W', 'R', 'M', 0xff, 0xff, 0xff, 0xff, '{' };
	const uint8_t just_over[] = { 'G', 'W', 'R', 'M', 0x01, 0x00, 0x10, 0x00 };
	const uint8_t small_limit[] = { 'G', 'W', 'R', 'M', 101, 0, 0, 0 };
	char *payload;
	size_t plen;

	gw_frame_decoder_init(&dec, GW_FRAME_MAX_PAYLOAD);
	GW_ASSERT_INT_EQ(gw_frame_decoder_feed(&dec, huge, sizeof(huge), &payload, &plen),
			 -EMSGSIZE);
	GW_ASSERT(dec.payload == NULL);
	GW_ASSERT(payload == NULL);
	gw_frame_decoder_finish(&dec);

	gw_frame_decoder_init(&dec, GW_FRAME_MAX_PAYLOAD);
	GW_ASSERT_INT_EQ(gw_frame_decoder_feed(&dec, just_over, 8, &payload, &plen), -EMSGSIZE);
	GW_ASSERT(dec.payload == NULL);
	gw_frame_decoder_finish(&dec);

	/* A smaller limit of the receiver's choosing. */
	gw_frame_decoder_init(&dec, 100);
	GW_ASSERT_INT_EQ(gw_frame_decoder_feed(&dec, small_limit, 8, &payload, &plen), -EMSGSIZE);
	GW_ASSERT(dec.payload == NULL);
	gw_frame_decoder_finish(&dec);
}

GW_TEST(decoder_zero_and_one_byte_length)
{
	struct gw_frame_decoder dec;
	uint8_t h[] = { 'G', 'W', 'R', 'M', 0, 0, 0, 0, '{', '}' };
	char *payload;
	size_t plen = 0;

	for (uint8_t l = 0; l <= 2; l++) {
		gw_frame_decoder_init(&dec, 0);
		h[4] = l;
		if (l < 2) {
			GW_ASSERT_INT_EQ(gw_frame_decoder_feed(&dec, h, sizeof(h), &payload, &plen),
					 -EMSGSIZE);
		} else {
			GW_ASSERT_INT_EQ(gw_frame_decoder_feed(&dec, h, sizeof(h), &payload, &plen),
					 sizeof(h));
			GW_ASSERT_STR_EQ(payload, "{}");
			GW_ASSERT_INT_EQ(plen, 2);
			free(payload);
		}
		gw_frame_decoder_finish(&dec);
	}
}

GW_TEST(decoder_partial_frame_finish)
{
	struct gw_frame_decoder dec;
	uint8_t buf[256];
	size_t len = frame(stream_payloads[0], buf);
	char *payload;
	size_t plen;

	gw_frame_decoder_init(&dec, 0);
	GW_ASSERT_INT_EQ(gw_frame_decoder_feed(&dec, buf, 0, &payload, &plen), 0);
	GW_ASSERT(gw_frame_decoder_idle(&dec));
	GW_ASSERT_INT_EQ(gw_frame_decoder_feed(&dec, buf, 5, &payload, &plen), 5);
	GW_ASSERT(!gw_frame_decoder_idle(&dec));
	GW_ASSERT_INT_EQ(gw_frame_decoder_feed(&dec, buf + 5, len - 6, &payload, &plen), len - 6);
	GW_ASSERT(payload == NULL);
	GW_ASSERT(!gw_frame_decoder_idle(&dec));
	/* finish() frees the partial payload (ASan checks); finish(NULL) is a no-op. */
	gw_frame_decoder_finish(&dec);
	GW_ASSERT(gw_frame_decoder_idle(&dec));
	gw_frame_decoder_finish(NULL);
}

GW_TEST_MAIN()
