/* SPDX-License-Identifier: MIT */
/* CRC-32C (Castagnoli), as used by iSCSI, ext4 and btrfs: guards the VRAM image's header and
 * tables. gw_crc32c(0, buf, len) starts a new one; pass a previous result to continue it. */
#ifndef GW_CRC32C_H
#define GW_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t gw_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
