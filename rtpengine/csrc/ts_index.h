/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * MPEG-TS indexer, per-packet part: turns the 188-byte packets of a
 * transport stream into RFC 2250 hint records (up to 7 packets each),
 * timed from the PCR and split at video random access points.
 *
 * The scan works on [start, end) of a buffer that holds the file from
 * offset 0, and carries its state in struct kvod_ts_index, so a growing
 * file can be indexed in pieces; the PSI tables (PAT/PMT) are parsed once
 * in Python (rtpengine/index/mpegts.py), which then configures the scan.
 */
#ifndef KVOD_TS_INDEX_H
#define KVOD_TS_INDEX_H

#include "kvod_types.h"

/* KVOD_CDEF_BEGIN */
#define KVOD_TS_PACKET_SIZE	188
#define KVOD_TS_SYNC_BYTE	0x47
#define KVOD_TS_NULL_PID	0x1fff
#define KVOD_TS_RECORD_PACKETS	7
/* a PCR step above this (27 MHz ticks, 1 s) is a timeline break */
#define KVOD_TS_MAX_PCR_GAP	27000000

/* video codec of the video PID: how to recognise a keyframe in a PES */
enum kvod_ts_codec {
	KVOD_TS_CODEC_OTHER = 0,	/* random_access_indicator only */
	KVOD_TS_CODEC_H264 = 1,		/* + NAL 5 (IDR) or 7 (SPS) */
	KVOD_TS_CODEC_HEVC = 2,		/* + NAL 16..21 (IRAP) or 32 (VPS) */
	KVOD_TS_CODEC_AUDIO = 3,	/* + every PES start (frames decode alone) */
};

enum kvod_ts_status {
	KVOD_TS_OK = 0,
	KVOD_TS_ERR_SYNC = -1,		/* no sync byte; see error_offset */
	KVOD_TS_ERR_NOMEM = -2,
	KVOD_TS_ERR_ARG = -3,		/* bad pointer, range or call order */
};

/* What one packet's header and adaptation field say. */
struct kvod_ts_packet_info {
	uint64_t pcr;			/* 27 MHz: base * 300 + extension */
	uint16_t pid;
	uint8_t pusi;			/* payload_unit_start_indicator */
	uint8_t tei;			/* transport_error_indicator */
	uint8_t cc;			/* continuity_counter */
	uint8_t has_af;			/* a well-formed adaptation field */
	uint8_t bad_af;			/* adaptation_field_length runs past the packet */
	uint8_t discontinuity;		/* discontinuity_indicator */
	uint8_t random_access;		/* random_access_indicator */
	uint8_t has_pcr;
	uint8_t keyframe_nal;		/* PES start holding a keyframe NAL */
	uint8_t payload_offset;		/* 4..188; 188 when there is no payload */
};

/*
 * Scan state, allocated by kvod_ts_index_new(). Callers read the fields
 * above the private line; the rest is the scan's carried state.
 */
struct kvod_ts_index {
	uint16_t pcr_pid;
	uint16_t video_pid;		/* KVOD_TS_NULL_PID: no video */
	int32_t video_codec;		/* enum kvod_ts_codec */
	uint64_t next_offset;		/* where the next scan must start */
	uint64_t packets;
	uint64_t pcr_count;
	uint64_t keyframes;
	uint64_t discontinuities;
	uint64_t error_offset;		/* of the packet that failed a scan */
	struct kvod_hint_record *records;
	uint64_t record_count;
	uint64_t timed_records;		/* records[0..timed_records) have times */
	uint64_t end_ticks;		/* after finish: time of next_offset, 27 MHz */
	uint64_t duration_ns;		/* after finish */
	int32_t finished;
	/* private */
	int32_t have_pcr;
	int32_t disc_pending;		/* discontinuity_indicator seen, no PCR yet */
	uint32_t run;			/* packets in the open record */
	uint64_t record_cap;
	uint64_t last_raw;		/* last PCR as read, 27 MHz, mod 2^33 * 300 */
	uint64_t last_pkt;		/* its packet index */
	uint64_t last_ticks;		/* its time on the monotonic timeline */
	uint64_t rate_dt;		/* last regular PCR step: ticks ... */
	uint64_t rate_dp;		/* ... per this many packets (0: unknown) */
};

KVOD_API int kvod_ts_packet_info(const uint8_t *pkt, size_t len, int codec,
				 struct kvod_ts_packet_info *info);
KVOD_API int kvod_ts_find_pid(const uint8_t *buf, uint64_t start, uint64_t end,
			      unsigned int pid, uint64_t *at);
KVOD_API uint32_t kvod_crc32_mpeg(const uint8_t *buf, size_t len);
KVOD_API struct kvod_ts_index *kvod_ts_index_new(unsigned int pcr_pid,
						 unsigned int video_pid,
						 int video_codec);
KVOD_API void kvod_ts_index_free(struct kvod_ts_index *ix);
KVOD_API int kvod_ts_index_start_at(struct kvod_ts_index *ix, uint64_t offset);
KVOD_API int kvod_ts_index_scan(struct kvod_ts_index *ix, const uint8_t *buf,
				uint64_t start, uint64_t end);
KVOD_API int kvod_ts_index_scan_window(struct kvod_ts_index *ix,
				       const uint8_t *win, uint64_t win_start,
				       uint64_t start, uint64_t end);
KVOD_API int kvod_ts_index_finish(struct kvod_ts_index *ix);
/* KVOD_CDEF_END */

#endif
