/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * MP4 (ISO BMFF) indexer, per-sample part: expands one track's sample
 * tables (stsz, stsc + stco/co64, stts, ctts, stss) and cuts its samples
 * into RTP hint records: H.264 per RFC 6184 (packetization-mode 1: single
 * NAL units and FU-A), H.265 per RFC 7798 (single NAL units and FUs), AAC
 * per RFC 3640 (AAC-hbr, one AU per packet, AUs too large for a packet
 * fragmented).
 *
 * The boxes are parsed once in Python (rtpengine/index/mp4.py), which
 * hands the tables over in host byte order. Every table is untrusted:
 * counts are cross-checked here and every sample and NAL unit is checked
 * against the file's size before a record points at it.
 */
#ifndef KVOD_MP4_INDEX_H
#define KVOD_MP4_INDEX_H

#include "kvod_types.h"

/* KVOD_CDEF_BEGIN */
/* bounds that keep a hostile file's memory use proportional to nothing absurd */
#define KVOD_MP4_MAX_SAMPLES	16777216
#define KVOD_MP4_MAX_RECORDS	33554432

enum kvod_mp4_codec {
	KVOD_MP4_CODEC_H264 = 1,
	KVOD_MP4_CODEC_HEVC = 2,
	KVOD_MP4_CODEC_AAC = 3,
};

enum kvod_mp4_status {
	KVOD_MP4_OK = 0,
	KVOD_MP4_ERR_TABLE = -1,	/* tables disagree; error_what says how */
	KVOD_MP4_ERR_RANGE = -2,	/* a sample outside the file: error_sample, error_offset */
	KVOD_MP4_ERR_NAL = -3,		/* a NAL length runs past its sample */
	KVOD_MP4_ERR_NOMEM = -4,
	KVOD_MP4_ERR_ARG = -5,		/* bad parameters from the caller */
	KVOD_MP4_ERR_LIMIT = -6,	/* more records than KVOD_MP4_MAX_RECORDS */
};

/* what a KVOD_MP4_ERR_TABLE was about */
enum kvod_mp4_table_error {
	KVOD_MP4_BAD_STSC = 1,		/* first_chunk order, or chunks beyond stco */
	KVOD_MP4_BAD_STSC_TOTAL = 2,	/* stsc describes another number of samples */
	KVOD_MP4_BAD_STTS_TOTAL = 3,	/* stts counts another number of samples */
	KVOD_MP4_BAD_CTTS_TOTAL = 4,	/* ctts counts another number of samples */
	KVOD_MP4_BAD_STSS = 5,		/* sync sample numbers out of order or range */
	KVOD_MP4_BAD_SIZE = 6,		/* an empty sample, or samples add up past the file */
	KVOD_MP4_BAD_TIME = 7,		/* a time that does not fit 63 bits of ns */
};

/* where a growing track's indexing goes on (private to the indexer) */
struct kvod_mp4_cursor {
	uint64_t pos;
	uint64_t dts;
	uint64_t bytes;
	int64_t prev_send;
	int64_t max_end;
	uint32_t sample;
	uint32_t chunk;
	uint32_t in_chunk;
	uint32_t stsc_i;
	uint32_t stts_i;
	uint32_t stts_left;
	uint32_t ctts_i;
	uint32_t ctts_left;
	uint32_t stss_i;
	int32_t started;
};

struct kvod_mp4_track {
	/* sample tables, host byte order */
	const uint32_t *sizes;		/* stsz/stz2 entries, or NULL with sample_size */
	uint32_t sample_size;		/* stsz's one size for all samples (sizes NULL) */
	uint32_t sample_count;
	const uint64_t *chunk_offsets;	/* stco/co64 */
	uint32_t chunk_count;
	const uint32_t *stsc;		/* (first_chunk, samples_per_chunk, sdi) triples */
	uint32_t stsc_count;
	const uint32_t *stts;		/* (count, delta) pairs */
	uint32_t stts_count;
	const uint32_t *ctts;		/* (count, offset) pairs, offset as int32; may be NULL */
	uint32_t ctts_count;
	const uint32_t *stss;		/* 1-based sync sample numbers; NULL: every sample */
	uint32_t stss_count;
	/* timing: presentation = decode + composition offset - shift (media ticks) */
	uint32_t timescale;
	int64_t shift;
	uint32_t clock_rate;		/* of the RTP timestamps */
	/* packetisation */
	int32_t codec;			/* enum kvod_mp4_codec */
	uint32_t nal_length_size;	/* 1..4 (video) */
	uint32_t max_payload;		/* RTP payload bytes per packet, prefix included */
	/*
	 * parameter sets (from avcC/hvcC) sent in band before each sync sample
	 * that lacks them: (offset, length) pairs in the hint file's blob area
	 */
	const uint32_t *param_sets;
	uint32_t param_set_count;
	const uint8_t *media;
	uint64_t media_size;
	uint64_t data_limit;		/* index samples ending at or before it; 0: all */
	/* results */
	struct kvod_hint_record *records;	/* freed by kvod_mp4_free() */
	uint32_t next_sample;		/* samples indexed so far */
	uint64_t record_count;
	uint64_t duration_ns;		/* end of the last sample on the send timeline */
	uint64_t keyframes;
	uint64_t payload_bytes;
	uint32_t error_sample;		/* 0-based */
	int32_t error_what;		/* enum kvod_mp4_table_error */
	uint64_t error_offset;
	/* private */
	uint64_t record_cap;
	struct kvod_mp4_cursor cursor;
};

/*
 * Index the track (with data_limit, the samples that are there, and on from
 * there at the next call); on failure the results say where, records are
 * freed.
 */
KVOD_API int kvod_mp4_index(struct kvod_mp4_track *t);
KVOD_API void kvod_mp4_free(struct kvod_mp4_track *t);
/* KVOD_CDEF_END */

#endif
