// SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note
/*
 * MP4 indexer, per-sample part: sample tables -> RTP hint records.
 *
 * Nothing read from the file is trusted: the tables' counts must agree
 * with each other, every sample must lie inside the file, every NAL
 * length inside its sample, and the records are bounded in number, so a
 * hostile file ends in an error code, never a read outside the mapping or
 * unbounded memory.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvod_types_check.h"
#include "mp4_index.h"

#define FIRST_RECORDS	1024
#define MAX_NS		(INT64_C(1) << 62)

#define H264_FU_A	28
#define HEVC_FU		49

static int grow_records(struct kvod_mp4_track *t)
{
	uint64_t cap = t->record_cap ? t->record_cap * 2 : FIRST_RECORDS;
	struct kvod_hint_record *r;

	if (t->record_count >= KVOD_MP4_MAX_RECORDS)
		return KVOD_MP4_ERR_LIMIT;
	if (cap > KVOD_MP4_MAX_RECORDS)
		cap = KVOD_MP4_MAX_RECORDS;
	r = realloc(t->records, (size_t)cap * sizeof(*r));
	if (!r)
		return KVOD_MP4_ERR_NOMEM;
	t->records = r;
	t->record_cap = cap;
	return KVOD_MP4_OK;
}

static int add_record(struct kvod_mp4_track *t, uint64_t offset, uint32_t length,
		      const uint8_t *prefix, uint8_t prefix_len)
{
	struct kvod_hint_record *rec;
	int rc;

	if (t->record_count == t->record_cap) {
		rc = grow_records(t);
		if (rc)
			return rc;
	}
	rec = &t->records[t->record_count++];
	memset(rec, 0, sizeof(*rec));
	rec->offset = offset;
	rec->length = length;
	rec->prefix_len = prefix_len;
	if (prefix_len)
		memcpy(rec->prefix, prefix, prefix_len);
	t->payload_bytes += length + prefix_len;
	return KVOD_MP4_OK;
}

/* ticks (may be negative) in ns; *bad set if it does not fit 62 bits */
static int64_t ticks_ns(int64_t ticks, uint32_t timescale, int *bad)
{
	__int128 ns = (__int128)ticks * 1000000000 / timescale;

	if (ns >= MAX_NS || ns <= -MAX_NS) {
		*bad = 1;
		return 0;
	}
	return (int64_t)ns;
}

static int table_error(struct kvod_mp4_track *t, int what, uint32_t sample)
{
	t->error_what = what;
	t->error_sample = sample;
	return KVOD_MP4_ERR_TABLE;
}

/* Cross-check the tables' sample counts before any sample is touched. */
static int check_tables(struct kvod_mp4_track *t)
{
	uint64_t total = 0;
	uint32_t i;

	for (i = 0; i < t->stts_count; i++)
		total += t->stts[2 * i];
	if (total != t->sample_count)
		return table_error(t, KVOD_MP4_BAD_STTS_TOTAL, 0);
	if (t->ctts) {
		total = 0;
		for (i = 0; i < t->ctts_count; i++)
			total += t->ctts[2 * i];
		if (total != t->sample_count)
			return table_error(t, KVOD_MP4_BAD_CTTS_TOTAL, 0);
	}
	total = 0;
	for (i = 0; i < t->stsc_count; i++) {
		uint32_t first = t->stsc[3 * i];
		uint32_t next = i + 1 < t->stsc_count ? t->stsc[3 * (i + 1)] :
			t->chunk_count + 1;

		if (first == 0 || (i == 0 && first != 1) || next <= first ||
		    next > t->chunk_count + 1)
			return table_error(t, KVOD_MP4_BAD_STSC, 0);
		total += (uint64_t)(next - first) * t->stsc[3 * i + 1];
		/* bounded before it can overflow: chunks < 2^32, per chunk < 2^32 */
		if (total > t->sample_count)
			return table_error(t, KVOD_MP4_BAD_STSC_TOTAL, 0);
	}
	if (total != t->sample_count)
		return table_error(t, KVOD_MP4_BAD_STSC_TOTAL, 0);
	for (i = 0; i < t->stss_count; i++) {
		if (t->stss[i] == 0 || t->stss[i] > t->sample_count ||
		    (i && t->stss[i] <= t->stss[i - 1]))
			return table_error(t, KVOD_MP4_BAD_STSS, i);
	}
	return KVOD_MP4_OK;
}

/* One NAL unit at [nal, nal + len) of the file: a single NAL packet or FUs. */
static int add_nal(struct kvod_mp4_track *t, uint64_t nal, uint32_t len)
{
	uint32_t hdr = t->codec == KVOD_MP4_CODEC_HEVC ? 2 : 1;
	uint8_t prefix[3];
	uint8_t plen, type;
	uint32_t room, left;
	uint64_t at;
	int rc, first = 1;

	if (len <= t->max_payload)
		return add_record(t, nal, len, NULL, 0);
	if (t->codec == KVOD_MP4_CODEC_HEVC) {
		/* PayloadHdr: the NAL header with type 49; FU header: S, E, type */
		type = (t->media[nal] >> 1) & 0x3f;
		prefix[0] = (t->media[nal] & 0x81) | (HEVC_FU << 1);
		prefix[1] = t->media[nal + 1];
		plen = 3;
	} else {
		/* FU indicator: F and NRI of the NAL, type 28; FU header: S, E, type */
		type = t->media[nal] & 0x1f;
		prefix[0] = (t->media[nal] & 0xe0) | H264_FU_A;
		plen = 2;
	}
	room = t->max_payload - plen;
	at = nal + hdr;
	left = len - hdr;
	while (left) {
		uint32_t n = left < room ? left : room;

		prefix[plen - 1] = type | (first ? 0x80 : 0) | (n == left ? 0x40 : 0);
		rc = add_record(t, at, n, prefix, plen);
		if (rc)
			return rc;
		at += n;
		left -= n;
		first = 0;
	}
	return KVOD_MP4_OK;
}

/* The NAL units of the sample at [off, off + size), each behind a length. */
static int add_video_sample(struct kvod_mp4_track *t, uint64_t off, uint32_t size,
			    uint32_t sample)
{
	uint32_t ls = t->nal_length_size;
	uint32_t hdr = t->codec == KVOD_MP4_CODEC_HEVC ? 2 : 1;
	uint64_t end = off + size;
	uint64_t pos = off;
	int rc;

	while (pos < end) {
		uint32_t len = 0, k;

		if (end - pos < ls)
			goto bad;
		for (k = 0; k < ls; k++)
			len = len << 8 | t->media[pos + k];
		pos += ls;
		if (len > end - pos)
			goto bad;
		if (len == 0)
			continue;	/* nothing to send; players skip them too */
		if (len < hdr)
			goto bad;
		rc = add_nal(t, pos, len);
		if (rc)
			return rc;
		pos += len;
	}
	return KVOD_MP4_OK;
bad:
	t->error_sample = sample;
	t->error_offset = pos;
	return KVOD_MP4_ERR_NAL;
}

/* Whether the sample at [off, off + size) holds an SPS (its own parameter sets). */
static int sample_has_sps(const struct kvod_mp4_track *t, uint64_t off, uint32_t size)
{
	uint32_t ls = t->nal_length_size;
	uint64_t end = off + size, pos = off;

	while (end - pos > ls) {
		uint32_t len = 0, k;
		uint8_t type;

		for (k = 0; k < ls; k++)
			len = len << 8 | t->media[pos + k];
		pos += ls;
		if (len == 0)
			continue;
		if (len > end - pos)
			return 0;	/* add_video_sample() reports it */
		if (t->codec == KVOD_MP4_CODEC_HEVC)
			type = (t->media[pos] >> 1) & 0x3f;
		else
			type = t->media[pos] & 0x1f;
		if (type == (t->codec == KVOD_MP4_CODEC_HEVC ? 33 : 7))
			return 1;
		pos += len;
	}
	return 0;
}

/* The parameter sets, from the blob area, as single NAL unit packets. */
static int add_param_sets(struct kvod_mp4_track *t)
{
	uint32_t i;
	int rc;

	for (i = 0; i < t->param_set_count; i++) {
		rc = add_record(t, t->param_sets[2 * i], t->param_sets[2 * i + 1], NULL, 0);
		if (rc)
			return rc;
		t->records[t->record_count - 1].flags |= KRTP_REC_BLOB;
	}
	return KVOD_MP4_OK;
}

/* One AAC access unit: an AU header section (one 13+3-bit header) before it. */
static int add_aac_sample(struct kvod_mp4_track *t, uint64_t off, uint32_t size)
{
	uint8_t prefix[4];
	uint32_t room = t->max_payload - 4;
	int rc;

	if (size >= 1u << 13)
		return KVOD_MP4_ERR_RANGE;	/* AU-size has 13 bits */
	prefix[0] = 0;
	prefix[1] = 16;				/* AU-headers-length in bits */
	prefix[2] = size >> 5;
	prefix[3] = (size & 0x1f) << 3;		/* AU-Index 0 */
	/* RFC 3640 3.2.3: a fragment's AU-size is still the whole AU's */
	while (size) {
		uint32_t n = size < room ? size : room;

		rc = add_record(t, off, n, prefix, 4);
		if (rc)
			return rc;
		off += n;
		size -= n;
	}
	return KVOD_MP4_OK;
}

KVOD_API void kvod_mp4_free(struct kvod_mp4_track *t)
{
	if (!t)
		return;
	free(t->records);
	t->records = NULL;
	t->record_count = 0;
	t->record_cap = 0;
	t->cursor.started = 0;	/* the next call starts over */
}

static int check_args(const struct kvod_mp4_track *t)
{
	uint32_t i;

	if (!t->media || !t->stts || !t->stsc || !t->chunk_offsets ||
	    !t->timescale || !t->clock_rate || t->records ||
	    t->sample_count > KVOD_MP4_MAX_SAMPLES || t->max_payload < 64 ||
	    t->max_payload > 65000)
		return KVOD_MP4_ERR_ARG;
	if ((t->codec == KVOD_MP4_CODEC_H264 || t->codec == KVOD_MP4_CODEC_HEVC) &&
	    (t->nal_length_size < 1 || t->nal_length_size > 4))
		return KVOD_MP4_ERR_ARG;
	if (t->codec < KVOD_MP4_CODEC_H264 || t->codec > KVOD_MP4_CODEC_AAC)
		return KVOD_MP4_ERR_ARG;
	if (t->param_set_count && !t->param_sets)
		return KVOD_MP4_ERR_ARG;
	for (i = 0; i < t->param_set_count; i++) {
		if (!t->param_sets[2 * i + 1] || t->param_sets[2 * i + 1] > t->max_payload)
			return KVOD_MP4_ERR_ARG;
	}
	return KVOD_MP4_OK;
}

/*
 * Index the samples from where the last call stopped, up to the first one
 * whose bytes end beyond data_limit (0: no limit), so a file that fills
 * front to back is indexed as it grows; the cursor lives in the struct.
 */
KVOD_API int kvod_mp4_index(struct kvod_mp4_track *t)
{
	struct kvod_mp4_cursor *c;
	int64_t send, pres, pres_end;
	int bad = 0;
	int rc;

	if (!t)
		return KVOD_MP4_ERR_ARG;
	c = &t->cursor;
	if (!c->started) {
		rc = check_args(t);
		if (rc)
			return rc;
		t->record_count = 0;
		t->keyframes = 0;
		t->payload_bytes = 0;
		rc = check_tables(t);
		if (rc)
			return rc;
		memset(c, 0, sizeof(*c));
		c->stts_left = t->stts_count ? t->stts[0] : 0;
		if (t->ctts && t->ctts_count)
			c->ctts_left = t->ctts[0];
		c->started = 1;
	}

	while (c->sample < t->sample_count) {
		uint32_t size = t->sizes ? t->sizes[c->sample] : t->sample_size;
		uint32_t sample = c->sample;
		uint32_t per_chunk, delta;
		uint64_t first_rec = t->record_count;
		int32_t cto = 0;
		int sync;
		uint64_t k, n;
		int64_t dur_ns, rtp;

		/* stsc and chunk totals are checked: a chunk with samples remains */
		while (c->stsc_i + 1 < t->stsc_count &&
		       c->chunk + 1 >= t->stsc[3 * (c->stsc_i + 1)])
			c->stsc_i++;
		per_chunk = t->stsc[3 * c->stsc_i + 1];
		if (c->in_chunk >= per_chunk) {
			c->chunk++;
			c->in_chunk = 0;
			continue;
		}
		if (c->in_chunk == 0)
			c->pos = t->chunk_offsets[c->chunk];
		if (t->data_limit && (c->pos > t->data_limit || size > t->data_limit - c->pos))
			break;	/* not there yet: the next call goes on from here */

		/* stts/ctts: totals are checked, so a run is always left */
		while (!c->stts_left)
			c->stts_left = t->stts[2 * ++c->stts_i];
		delta = t->stts[2 * c->stts_i + 1];
		c->stts_left--;
		if (t->ctts) {
			while (!c->ctts_left)
				c->ctts_left = t->ctts[2 * ++c->ctts_i];
			cto = (int32_t)t->ctts[2 * c->ctts_i + 1];
			c->ctts_left--;
		}
		if (!t->stss) {
			sync = 1;
		} else {
			sync = c->stss_i < t->stss_count && t->stss[c->stss_i] == sample + 1;
			c->stss_i += sync;
		}

		if (!size) {
			table_error(t, KVOD_MP4_BAD_SIZE, sample);
			goto fail;
		}
		c->bytes += size;
		if (c->pos > t->media_size || size > t->media_size - c->pos) {
			t->error_sample = sample;
			t->error_offset = c->pos;
			rc = KVOD_MP4_ERR_RANGE;
			goto out;
		}
		if (c->bytes > t->media_size) {
			table_error(t, KVOD_MP4_BAD_SIZE, sample);
			goto fail;
		}
		if (t->codec == KVOD_MP4_CODEC_AAC) {
			rc = add_aac_sample(t, c->pos, size);
		} else {
			rc = 0;
			/* a player that joins here decodes without the SDP's sets */
			if (sync && t->param_set_count && !sample_has_sps(t, c->pos, size))
				rc = add_param_sets(t);
			if (!rc)
				rc = add_video_sample(t, c->pos, size, sample);
		}
		if (rc) {
			if (!t->error_offset)
				t->error_offset = c->pos;
			t->error_sample = sample;
			goto out;
		}

		/* times: RTP from the presentation time, sending in decode order */
		pres = (int64_t)c->dts + cto - t->shift;
		rtp = (int64_t)((__int128)pres * t->clock_rate / t->timescale);
		send = ticks_ns((int64_t)c->dts - t->shift, t->timescale, &bad);
		dur_ns = ticks_ns(delta, t->timescale, &bad);
		pres_end = ticks_ns(pres + delta, t->timescale, &bad);
		if (bad) {
			table_error(t, KVOD_MP4_BAD_TIME, sample);
			goto fail;
		}
		if (pres_end > c->max_end)
			c->max_end = pres_end;
		/* before the edit's start (or a lying stts): in order, at once */
		if (send < c->prev_send)
			send = c->prev_send;
		n = t->record_count - first_rec;
		/* a sample's packets spread over its duration, not one burst */
		for (k = 0; k < n; k++) {
			struct kvod_hint_record *rec = &t->records[first_rec + k];

			rec->rtp_ts = (uint32_t)rtp;
			rec->send_ns = (uint64_t)send + (uint64_t)dur_ns * k / n;
		}
		if (n) {
			/* the next sample leaves no earlier than this one's last packet */
			c->prev_send = (int64_t)t->records[t->record_count - 1].send_ns;
			t->records[t->record_count - 1].flags |= KRTP_REC_MARKER;
			if (sync) {
				t->records[first_rec].flags |= KRTP_REC_KEYFRAME;
				t->keyframes++;
			}
		}
		c->dts += delta;
		c->pos += size;
		c->in_chunk++;
		c->sample++;
	}
	t->next_sample = c->sample;
	/* the track ends with its last frame shown or its last packet sent */
	send = ticks_ns((int64_t)c->dts - t->shift, t->timescale, &bad);
	if (send < c->prev_send)
		send = c->prev_send;
	t->duration_ns = (uint64_t)(send > c->max_end ? send : c->max_end);
	return KVOD_MP4_OK;
fail:
	rc = KVOD_MP4_ERR_TABLE;
out:
	kvod_mp4_free(t);
	return rc;
}
