/* SPDX-License-Identifier: GPL-2.0 */
/* The engine's one clock: CLOCK_MONOTONIC in ns, as kvod_now_ns() gives it
 * to Python and as SCM_TXTIME takes it. */
#ifndef KVOD_CLOCK_H
#define KVOD_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t kvod_clock_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
