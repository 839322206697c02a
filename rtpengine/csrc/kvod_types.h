/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * The hint layout as cffi sees it. cffi cannot read krtp.h's kernel
 * typedefs, so the structs are repeated here with stdint types;
 * kvod_types_check.h (compiled into the engine) proves with
 * _Static_assert that both views have the same size and offsets.
 */
#ifndef KVOD_TYPES_H
#define KVOD_TYPES_H

#include <stdint.h>
#include <stddef.h>

#define KVOD_API __attribute__((visibility("default")))

/* KVOD_CDEF_BEGIN */
struct kvod_hint_record {
	uint64_t offset;
	uint32_t length;
	uint32_t rtp_ts;
	uint64_t send_ns;
	uint16_t flags;
	uint8_t prefix_len;
	uint8_t prefix[5];
};
/* KVOD_CDEF_END */

#endif
