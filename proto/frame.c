/* SPDX-License-Identifier: MIT */
/* Frame header encoding and the incremental frame decoder. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "gw-proto.h"

static const uint8_t gw_magic_bytes[4] = { 'G', 'W', 'R', 'M' };

static uint32_t read_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void write_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

int gw_frame_header_encode(size_t len, uint8_t header[GW_FRAME_HEADER_SIZE])
{
	if (len < GW_FRAME_MIN_PAYLOAD || len > GW_FRAME_MAX_PAYLOAD)
		return -EMSGSIZE;
	write_le32(header, GW_FRAME_MAGIC);
	write_le32(header + 4, (uint32_t)len);
	return 0;
}

void gw_frame_decoder_init(struct gw_frame_decoder *dec, size_t max_payload)
{
	memset(dec, 0, sizeof(*dec));
	if (max_payload < GW_FRAME_MIN_PAYLOAD || max_payload > GW_FRAME_MAX_PAYLOAD)
		max_payload = GW_FRAME_MAX_PAYLOAD;
	dec->max_payload = max_payload;
}

void gw_frame_decoder_finish(struct gw_frame_decoder *dec)
{
	if (!dec)
		return;
	free(dec->payload);
	dec->payload = NULL;
	dec->header_have = 0;
	dec->payload_len = 0;
	dec->payload_have = 0;
}

int gw_frame_decoder_idle(const struct gw_frame_decoder *dec)
{
	return dec->header_have == 0 && !dec->payload;
}

/* Validate what we have of the header so far. Errors repeat on every later call. */
static int check_header(const struct gw_frame_decoder *dec)
{
	size_t n = dec->header_have < 4 ? dec->header_have : 4;
	uint32_t len;

	if (memcmp(dec->header, gw_magic_bytes, n) != 0)
		return -EBADMSG;
	if (dec->header_have < GW_FRAME_HEADER_SIZE)
		return 0;
	len = read_le32(dec->header + 4);
	if (len < GW_FRAME_MIN_PAYLOAD || len > dec->max_payload)
		return -EMSGSIZE;
	return 0;
}

ssize_t gw_frame_decoder_feed(struct gw_frame_decoder *dec, const void *data, size_t len,
			      char **ret_payload, size_t *ret_len)
{
	const uint8_t *p = data;
	size_t used = 0, n;
	int r;

	*ret_payload = NULL;
	r = check_header(dec);
	if (r < 0)
		return r;
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;

	while (used < len) {
		if (dec->header_have < GW_FRAME_HEADER_SIZE) {
			/* Stop at the end of the magic so that it is checked on its own. */
			size_t want = dec->header_have < 4 ? 4 : GW_FRAME_HEADER_SIZE;

			want -= dec->header_have;

			n = len - used < want ? len - used : want;
			memcpy(dec->header + dec->header_have, p + used, n);
			dec->header_have += n;
			used += n;
			r = check_header(dec);
			if (r < 0)
				return r;
			continue;
		}
		if (!dec->payload) {
			dec->payload_len = read_le32(dec->header + 4);
			dec->payload_have = 0;
			dec->payload = malloc(dec->payload_len + 1);
			if (!dec->payload)
				return -ENOMEM;
		}
		n = dec->payload_len - dec->payload_have;
		if (n > len - used)
			n = len - used;
		memcpy(dec->payload + dec->payload_have, p + used, n);
		dec->payload_have += n;
		used += n;
		if (dec->payload_have == dec->payload_len) {
			dec->payload[dec->payload_len] = '\0';
			*ret_payload = dec->payload;
			*ret_len = dec->payload_len;
			dec->payload = NULL;
			dec->payload_len = 0;
			dec->payload_have = 0;
			dec->header_have = 0;
			return (ssize_t)used;
		}
	}
	return (ssize_t)used;
}
