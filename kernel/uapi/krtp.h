/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * krtp user API: the hint file layout shared by the krtp kernel module,
 * the user-space C engine (rtpengine/csrc) and the Python construct
 * definition (rtpengine/hintfile.py, tested against this header).
 *
 * A hint file is the packetisation of one track, computed once at ingest:
 * a 64-byte header followed by record_count fixed-size records, one per
 * RTP packet. All fields are little-endian and naturally aligned.
 */
#ifndef _UAPI_LINUX_KRTP_H
#define _UAPI_LINUX_KRTP_H

#include <linux/types.h>

#define KRTP_HINT_MAGIC		"KVODHINT"
#define KRTP_HINT_VERSION	1
#define KRTP_HINT_HEADER_SIZE	64
#define KRTP_HINT_RECORD_SIZE	32
#define KRTP_HINT_PREFIX_MAX	5

/* record flags */
#define KRTP_REC_MARKER		0x0001	/* RTP marker bit */
#define KRTP_REC_KEYFRAME	0x0002	/* starts a random access point */
#define KRTP_REC_BLOB		0x0004	/* payload lives in the hint file's blob area */
#define KRTP_REC_DISCONTINUITY	0x0008	/* timeline break before this record */

struct krtp_hint_header {
	char magic[8];		/* "KVODHINT", no NUL */
	__u16 version;
	__u16 header_size;
	__u16 record_size;
	__u16 flags;
	__u32 clock_rate;
	__u8 payload_type;
	__u8 pad[3];
	__u64 record_count;
	__u64 duration_ns;
	__u64 blob_offset;
	__u64 blob_size;
	__u8 reserved[8];
};

struct krtp_hint_record {
	__u64 offset;		/* payload start in the media file (or blob) */
	__u32 length;		/* payload bytes */
	__u32 rtp_ts;		/* RTP timestamp relative to the track start */
	__u64 send_ns;		/* departure time relative to the track start */
	__u16 flags;		/* KRTP_REC_* */
	__u8 prefix_len;	/* 0..KRTP_HINT_PREFIX_MAX */
	__u8 prefix[KRTP_HINT_PREFIX_MAX];
};

#endif /* _UAPI_LINUX_KRTP_H */
