/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the plugin's records (gpuwarm-<pid>.json, gpuwarm-dump.json in CRIU's image
 * directory, which an export archive carries from host to host: untrusted). Whatever
 * gwp_image_parse() accepts must be within its bounds and survive re-encoding unchanged.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gwp-image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Statistics for fuzz-replay. */
unsigned long fuzz_proto_payloads, fuzz_proto_accepted;

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond)) {                                                                    \
			fprintf(stderr, "fuzz-record: %s:%d: %s\n", __FILE__, __LINE__, #cond);  \
			abort();                                                                  \
		}                                                                                 \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gwp_image img, again;
	char *text;

	if (size > GWP_IMAGE_MAX_BYTES)
		return 0;
	fuzz_proto_payloads++;
	if (gwp_image_parse((const char *)data, size, &img) != 0)
		return 0;
	fuzz_proto_accepted++;
	CHECK(img.pid > 0 && img.vpid > 0 && img.ngpus <= GWP_IMAGE_MAX_GPUS);
	CHECK(!img.fast || img.agent_tid > 0);
	CHECK(memchr(img.dump, '\0', sizeof(img.dump)));
	for (unsigned i = 0; i < img.ngpus; i++)
		CHECK(memchr(img.gpus[i].uuid, '\0', sizeof(img.gpus[i].uuid)) &&
		      memchr(img.gpus[i].pci, '\0', sizeof(img.gpus[i].pci)));
	text = gwp_image_encode(&img);
	CHECK(text);
	CHECK(gwp_image_parse(text, strlen(text), &again) == 0);
	CHECK(again.pid == img.pid && again.vpid == img.vpid && again.fast == img.fast &&
	      again.vram_file == img.vram_file && again.agent_vtid == img.agent_vtid &&
	      again.ngpus == img.ngpus && strcmp(again.dump, img.dump) == 0);
	free(text);
	return 0;
}
