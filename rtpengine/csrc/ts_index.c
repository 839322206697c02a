// SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note
/*
 * MPEG-TS indexer, per-packet part (ISO/IEC 13818-1 packets, RFC 2250
 * records). Everything that looks at a packet is bounded by the packet:
 * lengths read from the stream are checked before they are used.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvod_types_check.h"
#include "ts_index.h"

/* the PCR base is 33 bits of 90 kHz; with its 0..299 extension, 27 MHz */
#define PCR_MODULUS	((UINT64_C(1) << 33) * 300)
#define FIRST_RECORDS	1024

struct slope {
	uint64_t dt;		/* ticks ... */
	uint64_t dp;		/* ... per this many packets; 0: flat */
};

/*
 * n * dt / dp without a 128-bit product. Callers only pass slopes whose
 * dt is at most KVOD_TS_MAX_PCR_GAP (< 2^25), so (n % dp) * dt stays far
 * below 2^64 for any packet count a file can have.
 */
static uint64_t muldiv(uint64_t n, uint64_t dt, uint64_t dp)
{
	if (!dp)
		return 0;
	return n / dp * dt + n % dp * dt / dp;
}

static uint64_t ticks_to_ns(uint64_t ticks)
{
	return ticks / 27 * 1000 + ticks % 27 * 1000 / 27;
}

static void set_time(struct kvod_hint_record *rec, uint64_t ticks)
{
	/* RTP timestamps wrap at 32 bits by design (RFC 3550) */
	rec->rtp_ts = (uint32_t)(ticks / 300);
	rec->send_ns = ticks_to_ns(ticks);
}

static uint64_t pcr_value(const uint8_t *b)
{
	uint64_t base = (uint64_t)b[0] << 25 | (uint64_t)b[1] << 17 |
			(uint64_t)b[2] << 9 | (uint64_t)b[3] << 1 | b[4] >> 7;
	unsigned int ext = (unsigned int)(b[4] & 1) << 8 | b[5];

	return base * 300 + ext;
}

static int nal_is_keyframe(uint8_t header, int codec)
{
	unsigned int type;

	if (codec == KVOD_TS_CODEC_H264) {
		type = header & 0x1f;
		return type == 5 || type == 7;
	}
	type = (header >> 1) & 0x3f;
	return (type >= 16 && type <= 21) || type == 32;
}

/* Does the PES that starts in these n payload bytes hold a keyframe NAL? */
static int pes_has_keyframe(const uint8_t *p, size_t n, int codec)
{
	size_t i, es;

	if (n < 9 || p[0] || p[1] || p[2] != 1)
		return 0;
	/* '10' marks the optional PES header that video streams carry */
	es = (p[6] & 0xc0) == 0x80 ? 9 + (size_t)p[8] : 6;
	for (i = es; i + 3 < n; i++) {
		if (!p[i] && !p[i + 1] && p[i + 2] == 1 &&
		    nal_is_keyframe(p[i + 3], codec))
			return 1;
	}
	return 0;
}

static void parse_packet(const uint8_t *p, int codec,
			 struct kvod_ts_packet_info *in)
{
	unsigned int afc = (p[3] >> 4) & 3;
	unsigned int pos = 4;

	memset(in, 0, sizeof(*in));
	in->pid = (uint16_t)((p[1] & 0x1f) << 8 | p[2]);
	in->tei = p[1] >> 7;
	in->pusi = (p[1] >> 6) & 1;
	in->cc = p[3] & 0x0f;
	if (afc & 2) {
		unsigned int af_len = p[4];

		pos = 5 + af_len;
		if (pos > KVOD_TS_PACKET_SIZE) {
			in->bad_af = 1;
			in->payload_offset = KVOD_TS_PACKET_SIZE;
			return;
		}
		in->has_af = 1;
		if (af_len >= 1) {
			in->discontinuity = p[5] >> 7;
			in->random_access = (p[5] >> 6) & 1;
			/* flags byte + 6 PCR bytes must fit the field */
			if ((p[5] & 0x10) && af_len >= 7) {
				in->has_pcr = 1;
				in->pcr = pcr_value(p + 6);
			}
		}
	}
	if (!(afc & 1))
		pos = KVOD_TS_PACKET_SIZE;
	in->payload_offset = (uint8_t)pos;
	if ((codec == KVOD_TS_CODEC_H264 || codec == KVOD_TS_CODEC_HEVC) &&
	    in->pusi && !in->tei && pos < KVOD_TS_PACKET_SIZE)
		in->keyframe_nal = (uint8_t)pes_has_keyframe(p + pos,
				KVOD_TS_PACKET_SIZE - pos, codec);
	/* an audio PES starts with a whole frame, which decodes on its own */
	if (codec == KVOD_TS_CODEC_AUDIO && in->pusi && !in->tei &&
	    pos < KVOD_TS_PACKET_SIZE)
		in->keyframe_nal = 1;
}

KVOD_API int kvod_ts_packet_info(const uint8_t *pkt, size_t len, int codec,
				 struct kvod_ts_packet_info *info)
{
	if (!pkt || !info || len < KVOD_TS_PACKET_SIZE)
		return KVOD_TS_ERR_ARG;
	if (pkt[0] != KVOD_TS_SYNC_BYTE)
		return KVOD_TS_ERR_SYNC;
	parse_packet(pkt, codec, info);
	return KVOD_TS_OK;
}

static int bad_range(const uint8_t *buf, uint64_t start, uint64_t end)
{
	return start > end || (end - start) % KVOD_TS_PACKET_SIZE ||
	       (end > start && !buf);
}

/* 1 and *at = offset: found; 0: not in [start, end); <0: error, *at = offset */
KVOD_API int kvod_ts_find_pid(const uint8_t *buf, uint64_t start, uint64_t end,
			      unsigned int pid, uint64_t *at)
{
	uint64_t off;

	if (!at || bad_range(buf, start, end))
		return KVOD_TS_ERR_ARG;
	for (off = start; off < end; off += KVOD_TS_PACKET_SIZE) {
		const uint8_t *p = buf + off;

		if (p[0] != KVOD_TS_SYNC_BYTE) {
			*at = off;
			return KVOD_TS_ERR_SYNC;
		}
		if (((unsigned int)(p[1] & 0x1f) << 8 | p[2]) == pid) {
			*at = off;
			return 1;
		}
	}
	return 0;
}

/*
 * CRC-32/MPEG-2 (poly 0x04C11DB7, init ~0, not reflected, no final xor).
 * Run over a whole PSI section including its CRC field it yields 0.
 * Bitwise: it checks a handful of sections per title.
 */
KVOD_API uint32_t kvod_crc32_mpeg(const uint8_t *buf, size_t len)
{
	uint32_t crc = 0xffffffff;
	size_t i;
	int bit;

	if (!buf)
		return crc;
	for (i = 0; i < len; i++) {
		crc ^= (uint32_t)buf[i] << 24;
		for (bit = 0; bit < 8; bit++)
			crc = crc & 0x80000000 ? crc << 1 ^ 0x04c11db7 :
						 crc << 1;
	}
	return crc;
}

KVOD_API struct kvod_ts_index *kvod_ts_index_new(unsigned int pcr_pid,
						 unsigned int video_pid,
						 int video_codec)
{
	struct kvod_ts_index *ix;

	if (pcr_pid > KVOD_TS_NULL_PID || video_pid > KVOD_TS_NULL_PID)
		return NULL;
	ix = calloc(1, sizeof(*ix));
	if (!ix)
		return NULL;
	ix->pcr_pid = (uint16_t)pcr_pid;
	ix->video_pid = (uint16_t)video_pid;
	ix->video_codec = video_codec;
	return ix;
}

KVOD_API void kvod_ts_index_free(struct kvod_ts_index *ix)
{
	if (!ix)
		return;
	free(ix->records);
	free(ix);
}

static int grow_records(struct kvod_ts_index *ix)
{
	uint64_t cap = ix->record_cap ? ix->record_cap * 2 : FIRST_RECORDS;
	struct kvod_hint_record *r;

	if (cap > SIZE_MAX / sizeof(*r))
		return -1;
	r = realloc(ix->records, (size_t)cap * sizeof(*r));
	if (!r)
		return -1;
	ix->records = r;
	ix->record_cap = cap;
	return 0;
}

/* The time of packet pkt on a line through the last PCR with slope s. */
static uint64_t time_after_last(const struct kvod_ts_index *ix, uint64_t pkt,
				const struct slope *s)
{
	/* before the first PCR everything leaves at time 0 */
	if (!ix->have_pcr)
		return 0;
	return ix->last_ticks + muldiv(pkt - ix->last_pkt, s->dt, s->dp);
}

/* Time the records that wait for a PCR (they all start after the last). */
static void time_pending(struct kvod_ts_index *ix, const struct slope *s)
{
	uint64_t i;

	for (i = ix->timed_records; i < ix->record_count; i++) {
		struct kvod_hint_record *rec = &ix->records[i];
		uint64_t first = rec->offset / KVOD_TS_PACKET_SIZE;

		set_time(rec, time_after_last(ix, first, s));
	}
	ix->timed_records = ix->record_count;
}

/*
 * The time of a PCR read at packet pkt, and the slope of the interval
 * since the previous PCR. Pure: the caller commits with commit_pcr().
 * A step that goes backwards or jumps further than KVOD_TS_MAX_PCR_GAP,
 * or follows a discontinuity_indicator, is a break: the timeline goes on
 * at the last regular rate so it stays monotonic.
 */
static uint64_t place_pcr(const struct kvod_ts_index *ix, uint64_t raw,
			  uint64_t pkt, struct slope *s, int *broken)
{
	uint64_t step;

	*broken = 0;
	s->dt = 0;
	s->dp = 0;
	if (!ix->have_pcr)
		return 0;
	/* modular difference: unwraps the 33-bit base wrap */
	step = (raw + PCR_MODULUS - ix->last_raw) % PCR_MODULUS;
	if (ix->disc_pending || step > KVOD_TS_MAX_PCR_GAP) {
		*broken = 1;
		s->dt = ix->rate_dt;
		s->dp = ix->rate_dp;
		return time_after_last(ix, pkt, s);
	}
	s->dt = step;
	s->dp = pkt - ix->last_pkt;
	return ix->last_ticks + step;
}

/* Time every record still waiting for a PCR, then make this PCR the last. */
static void commit_pcr(struct kvod_ts_index *ix, uint64_t raw, uint64_t pkt,
		       uint64_t ticks, const struct slope *s, int broken)
{
	time_pending(ix, s);
	if (broken) {
		ix->discontinuities++;
		ix->disc_pending = 0;
	} else if (ix->have_pcr) {
		ix->rate_dt = s->dt;
		ix->rate_dp = s->dp;
	}
	ix->have_pcr = 1;
	ix->pcr_count++;
	ix->last_raw = raw;
	ix->last_pkt = pkt;
	ix->last_ticks = ticks;
}

/* Add the packet at off to the records; its sync byte is checked. */
static void index_packet(struct kvod_ts_index *ix, const uint8_t *p,
			 uint64_t off)
{
	unsigned int pid = (unsigned int)(p[1] & 0x1f) << 8 | p[2];
	uint64_t pkt = off / KVOD_TS_PACKET_SIZE;
	struct kvod_ts_packet_info in;
	struct slope s = { 0, 0 };
	uint64_t raw = 0, ticks = 0;
	int timed = 0, broken = 0;
	uint16_t flags = 0;

	/* a packet with transport_error_indicator set is carried only */
	if ((pid == ix->pcr_pid || pid == ix->video_pid) && !(p[1] & 0x80)) {
		parse_packet(p, pid == ix->video_pid ? ix->video_codec :
			     KVOD_TS_CODEC_OTHER, &in);
		if (pid == ix->pcr_pid && in.discontinuity && ix->have_pcr)
			ix->disc_pending = 1;
		if (pid == ix->pcr_pid && in.has_pcr) {
			timed = 1;
			raw = in.pcr % PCR_MODULUS;
			ticks = place_pcr(ix, raw, pkt, &s, &broken);
			if (broken)
				flags |= KRTP_REC_DISCONTINUITY;
		}
		if (pid == ix->video_pid &&
		    (in.random_access || in.keyframe_nal)) {
			flags |= KRTP_REC_KEYFRAME;
			ix->keyframes++;
		}
	}
	if (!ix->record_count || ix->run >= KVOD_TS_RECORD_PACKETS || flags) {
		struct kvod_hint_record *rec = &ix->records[ix->record_count];

		memset(rec, 0, sizeof(*rec));
		rec->offset = off;
		rec->length = KVOD_TS_PACKET_SIZE;
		/* the title starts with a random access point */
		rec->flags = flags | (ix->record_count ? 0 : KRTP_REC_KEYFRAME);
		ix->record_count++;
		ix->run = 1;
	} else {
		ix->records[ix->record_count - 1].length += KVOD_TS_PACKET_SIZE;
		ix->run++;
	}
	if (timed)
		commit_pcr(ix, raw, pkt, ticks, &s, broken);
	ix->packets++;
}

/*
 * Begin the scan at packet @offset instead of the start of the file (a
 * viewer's seek ahead, before the bytes in front are there). Times are
 * then relative to the first PCR from @offset on. Only before any scan.
 */
KVOD_API int kvod_ts_index_start_at(struct kvod_ts_index *ix, uint64_t offset)
{
	if (!ix || ix->next_offset || ix->packets || ix->finished ||
	    offset % KVOD_TS_PACKET_SIZE)
		return KVOD_TS_ERR_ARG;
	ix->next_offset = offset;
	return KVOD_TS_OK;
}

/*
 * Scan the whole packets in [start, end) of the file, whose bytes from
 * offset win_start on are at win (win_start <= start): the file need not
 * be in memory at once, so a caller may read it piece by piece instead of
 * mapping it (a mapping of a file that shrinks faults). start must be
 * next_offset: a growing file is scanned piece by piece. On an error
 * next_offset and error_offset name the packet that failed, and
 * everything before it is indexed.
 */
KVOD_API int kvod_ts_index_scan_window(struct kvod_ts_index *ix,
				       const uint8_t *win, uint64_t win_start,
				       uint64_t start, uint64_t end)
{
	uint64_t off;
	int ret = KVOD_TS_OK;

	if (!ix || ix->finished || start != ix->next_offset ||
	    start < win_start || bad_range(win, start, end))
		return KVOD_TS_ERR_ARG;
	for (off = start; off < end; off += KVOD_TS_PACKET_SIZE) {
		const uint8_t *pkt = win + (off - win_start);

		if (pkt[0] != KVOD_TS_SYNC_BYTE) {
			ret = KVOD_TS_ERR_SYNC;
			break;
		}
		/* grow first, so a failure leaves the state as it was */
		if (ix->record_count == ix->record_cap && grow_records(ix)) {
			ret = KVOD_TS_ERR_NOMEM;
			break;
		}
		index_packet(ix, pkt, off);
	}
	if (ret)
		ix->error_offset = off;
	ix->next_offset = off;
	return ret;
}

/* kvod_ts_index_scan_window() of a buffer that holds the file from 0 */
KVOD_API int kvod_ts_index_scan(struct kvod_ts_index *ix, const uint8_t *buf,
				uint64_t start, uint64_t end)
{
	return kvod_ts_index_scan_window(ix, buf, 0, start, end);
}

/*
 * End of the data: time the records after the last PCR at the last
 * regular rate, and the end of the file likewise (the duration).
 */
KVOD_API int kvod_ts_index_finish(struct kvod_ts_index *ix)
{
	struct slope rate;

	if (!ix)
		return KVOD_TS_ERR_ARG;
	if (ix->finished)
		return KVOD_TS_OK;
	rate.dt = ix->rate_dt;
	rate.dp = ix->rate_dp;
	time_pending(ix, &rate);
	ix->end_ticks = time_after_last(ix, ix->packets, &rate);
	ix->duration_ns = ticks_to_ns(ix->end_ticks);
	ix->finished = 1;
	return KVOD_TS_OK;
}
