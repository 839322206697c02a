/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/* Compile-time proof that kvod_types.h matches the uapi header. */
#ifndef KVOD_TYPES_CHECK_H
#define KVOD_TYPES_CHECK_H

#include "krtp.h"
#include "kvod_types.h"

#define KVOD_SAME_FIELD(f) \
	_Static_assert(offsetof(struct kvod_hint_record, f) == \
		       offsetof(struct krtp_hint_record, f), #f)

_Static_assert(sizeof(struct krtp_hint_header) == KRTP_HINT_HEADER_SIZE,
	       "hint header size");
_Static_assert(sizeof(struct krtp_hint_record) == KRTP_HINT_RECORD_SIZE,
	       "hint record size");
_Static_assert(sizeof(struct kvod_hint_record) == KRTP_HINT_RECORD_SIZE,
	       "cffi hint record size");
KVOD_SAME_FIELD(offset);
KVOD_SAME_FIELD(length);
KVOD_SAME_FIELD(rtp_ts);
KVOD_SAME_FIELD(send_ns);
KVOD_SAME_FIELD(flags);
KVOD_SAME_FIELD(prefix_len);
KVOD_SAME_FIELD(prefix);

#endif
