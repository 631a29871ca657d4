/* SPDX-License-Identifier: MIT */
#ifndef GW_CLOCK_H
#define GW_CLOCK_H

#include <time.h>

/* CLOCK_MONOTONIC in milliseconds. */
static inline double gw_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

#endif
