// SPDX-License-Identifier: GPL-2.0
/*
 * Message layout: what a pacer's round puts in a batch for one stream.
 * kvod_batch_build() appends the stream's due packets as sendmsg messages
 * whose iovecs alternate [RTP header + prefix][payload], the payload
 * pointing straight into the mapped media (or hint blob) file, with the
 * control messages each strategy needs (UDP_SEGMENT, SCM_TXTIME); for an
 * interleaved (TCP) stream the header room starts with the '$' frame
 * header, one message a packet (tcp.c sends them). Nothing
 * here makes a system call; the strategies (send.c, uring.c) send what
 * this lays out.
 */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "batch.h"

enum { PAYLOAD_OK, PAYLOAD_UNFILLED, PAYLOAD_BAD };

static int load_record(struct kvod_stream *s, uint64_t k,
		       struct kvod_hint_record *r)
{
	/* a private copy: the mapping may change under us, the copy cannot
	 * (and a file cut short under it faults here, caught) */
	if (kvod_stream_record(s, k, r))
		return -EFAULT;
	r->offset = le64toh(r->offset);
	r->send_ns = le64toh(r->send_ns);
	r->length = le32toh(r->length);
	r->rtp_ts = le32toh(r->rtp_ts);
	r->flags = le16toh(r->flags);
	return 0;
}

static int payload_of(const struct kvod_stream *s,
		      const struct kvod_hint_record *r, const uint8_t **ptr)
{
	if (r->prefix_len > KRTP_HINT_PREFIX_MAX ||
	    KVOD_RTP_HEADER + r->prefix_len + (uint64_t)r->length >
	    KVOD_MAX_DATAGRAM)
		return PAYLOAD_BAD;
	if (r->flags & KRTP_REC_BLOB) {
		if (r->offset > s->blob_size ||
		    r->length > s->blob_size - r->offset)
			return PAYLOAD_BAD;
		*ptr = r->length ? s->blob + r->offset : NULL;
		return PAYLOAD_OK;
	}
	if (r->offset > s->media_size || r->length > s->media_size - r->offset)
		return PAYLOAD_BAD;
	if (r->offset + r->length > s->fill_limit)
		return PAYLOAD_UNFILLED;
	*ptr = r->length ? s->media + r->offset : NULL;
	return PAYLOAD_OK;
}

static void put_header(uint8_t *h, const struct kvod_stream *s,
		       const struct kvod_hint_record *r, uint16_t seq,
		       uint32_t ts)
{
	h[0] = 0x80;
	h[1] = (r->flags & KRTP_REC_MARKER ? 0x80 : 0) | s->pt;
	h[2] = seq >> 8;
	h[3] = seq;
	h[4] = ts >> 24;
	h[5] = ts >> 16;
	h[6] = ts >> 8;
	h[7] = ts;
	h[8] = s->ssrc >> 24;
	h[9] = s->ssrc >> 16;
	h[10] = s->ssrc >> 8;
	h[11] = s->ssrc;
	memcpy(h + KVOD_RTP_HEADER, r->prefix, r->prefix_len);
}

void kvod_batch_reset(struct kvod_batch *b)
{
	unsigned int i;

	for (i = 0; i < b->nrun; i++)
		b->runs[i].s->batched = 0;
	b->nmsg = b->npkt = b->niov = b->nrun = 0;
}

#define TXTIME_SPACE	CMSG_SPACE(sizeof(uint64_t))
#define SEGMENT_SPACE	CMSG_SPACE(sizeof(uint16_t))

/*
 * The control messages of a message of @s: SCM_TXTIME (@due) for a
 * kernel-paced stream, then UDP_SEGMENT (@seg) for a GSO one, which
 * finish_message() drops again if no second segment comes.
 */
static void start_message(struct kvod_batch *b, const struct kvod_stream *s,
			  size_t seg, int64_t due)
{
	unsigned int m = b->nmsg++;
	struct msghdr *mh = &b->msgs[m].msg_hdr;
	char *buf = b->cms[m].buf;
	struct cmsghdr *cm;

	memset(mh, 0, sizeof(*mh));
	mh->msg_iov = &b->iov[b->niov];
	if (s->sk->shared) {
		mh->msg_name = (void *)&s->dest;
		mh->msg_namelen = s->dest_len;
	}
	b->msg_pkts[m] = 0;
	b->msg_first[m] = b->npkt;
	b->msg_run[m] = b->nrun - 1;
	b->runs[b->nrun - 1].nmsg++;
	if (!s->gso && !kvod_kernel_paced(s))
		return;
	mh->msg_control = buf;
	if (kvod_kernel_paced(s)) {
		uint64_t txtime = (uint64_t)due;

		/* laid out by hand: CMSG_NXTHDR would read the stale bytes
		 * after this header as the next one's length */
		cm = (struct cmsghdr *)buf;
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_TXTIME;
		cm->cmsg_len = CMSG_LEN(sizeof(txtime));
		memcpy(CMSG_DATA(cm), &txtime, sizeof(txtime));
		mh->msg_controllen = TXTIME_SPACE;
	}
	if (s->gso) {
		cm = (struct cmsghdr *)(buf + mh->msg_controllen);
		cm->cmsg_level = SOL_UDP;
		cm->cmsg_type = UDP_SEGMENT;
		cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
		*(uint16_t *)CMSG_DATA(cm) = (uint16_t)seg;
		mh->msg_controllen += SEGMENT_SPACE;
	}
}

static void finish_message(struct kvod_batch *b, unsigned int m,
			   const struct kvod_stream *s)
{
	struct msghdr *mh = &b->msgs[m].msg_hdr;

	/* a lone segment is a plain datagram: no need to ask for GSO, but
	 * a kernel-paced one keeps its departure time */
	if (b->msg_pkts[m] == 1) {
		mh->msg_controllen = kvod_kernel_paced(s) ? TXTIME_SPACE : 0;
		if (!mh->msg_controllen)
			mh->msg_control = NULL;
	}
}

/* Where the header of the next packet goes: the zero-copy ring keeps it
 * until the kernel is done with it; otherwise the batch. */
static uint8_t *header_room(struct kvod_batch *b, struct kvod_sock *sk)
{
	struct kvod_zc *zc = sk->zc;
	uint64_t slot;

	if (!zc)
		return b->hdr[b->npkt];
	if (zc->tail + zc->reserved - zc->head >= KVOD_ZC_SLOTS)
		return NULL;
	slot = (zc->tail + zc->reserved++) % KVOD_ZC_SLOTS;
	return zc->hdr[slot];
}

/*
 * Append to @b the packets of @s due by @horizon, from where the stream
 * (with what it already has in the batch) stands, at most @budget.
 * Returns how many it added; *stop says why it stopped.
 */
unsigned int kvod_batch_build(struct kvod_stream *s, struct kvod_batch *b,
			      int64_t now, int64_t horizon, unsigned int budget,
			      int *stop)
{
	bool one_per_msg = !s->gso;
	bool zc = s->sk->zerocopy;
	bool kp = kvod_kernel_paced(s);
	int64_t due0 = 0;	/* of the open message's first packet */
	unsigned int added = 0, segs = 0, frags = 0;
	size_t seg = 0, msg_bytes = 0;
	bool open = false;	/* the last message may take more segments */
	uint64_t k = s->next_record + s->batched;

	*stop = KVOD_STOP_NONE;
	for (; k < s->nrec && added < budget; k++) {
		struct kvod_hint_record r;
		const uint8_t *payload = NULL;
		int64_t due;
		struct msghdr *mh;
		uint8_t *hdr;
		uint16_t seq;
		uint32_t ts;
		size_t size;
		bool new_msg;
		int rc;

		if (load_record(s, k, &r)) {
			*stop = KVOD_STOP_GONE;
			break;
		}
		/* unsigned: a hostile send_ns wraps instead of overflowing */
		due = s->unpaced ? now : (int64_t)((uint64_t)s->t0 + r.send_ns);
		if (due > horizon)
			break;
		rc = payload_of(s, &r, &payload);
		if (rc == PAYLOAD_UNFILLED) {
			*stop = KVOD_STOP_UNFILLED;
			s->blocked_due = due;
			break;
		}
		if (rc == PAYLOAD_BAD) {
			*stop = KVOD_STOP_BAD;
			break;
		}
		size = KVOD_RTP_HEADER + r.prefix_len + r.length;
		new_msg = !(open && size <= seg && segs < KVOD_GSO_SEGS &&
			    msg_bytes + size <= KVOD_MAX_DATAGRAM);
		/* the kernel releases a message at its first packet's time */
		if (kp && !new_msg && due - due0 > s->pacer->burst_ns)
			new_msg = true;
		if (zc) {
			/* pinned pages: the header's, and the payload's */
			uintptr_t a = (uintptr_t)payload;
			unsigned int need = 1 + (r.length ?
				(a + r.length - 1) / 4096 - a / 4096 + 1 : 0);

			if (!new_msg && frags + need > KVOD_ZC_FRAGS)
				new_msg = true;
			frags = new_msg ? need : frags + need;
		}
		if (b->npkt == KVOD_MAX_PKTS ||
		    (new_msg && b->nmsg == KVOD_MAX_MSGS)) {
			*stop = KVOD_STOP_FULL;
			break;
		}
		hdr = header_room(b, s->sk);
		if (!hdr) {
			*stop = KVOD_STOP_RING;
			break;
		}
		if (!added) {
			/* a new run of this stream's messages */
			struct kvod_run *run = &b->runs[b->nrun++];

			run->s = s;
			run->msg = b->nmsg;
			run->nmsg = 0;
			run->pkt = b->npkt;
		}
		if (new_msg) {
			if (open)
				finish_message(b, b->nmsg - 1, s);
			seg = size;
			segs = 1;
			msg_bytes = size;
			due0 = due;
			open = !one_per_msg;
			start_message(b, s, seg, due);
		} else {
			segs++;
			msg_bytes += size;
			/* only the last segment may be shorter */
			if (size < seg)
				open = false;
		}

		seq = (uint16_t)(s->seq0 + s->seq_count + s->batched);
		ts = s->ts0 + r.rtp_ts;
		mh = &b->msgs[b->nmsg - 1].msg_hdr;
		b->iov[b->niov].iov_base = hdr;
		b->iov[b->niov].iov_len = KVOD_RTP_HEADER + r.prefix_len;
		if (s->tcp) {
			/* RFC 2326 10.12: '$', channel, length; size < 65536 */
			hdr[0] = '$';
			hdr[1] = s->channel;
			hdr[2] = (uint8_t)(size >> 8);
			hdr[3] = (uint8_t)size;
			hdr += KVOD_TCP_FRAME_HDR;
			b->iov[b->niov].iov_len += KVOD_TCP_FRAME_HDR;
		}
		put_header(hdr, s, &r, seq, ts);
		b->niov++;
		mh->msg_iovlen++;
		if (r.length) {
			b->iov[b->niov].iov_base = (void *)payload;
			b->iov[b->niov].iov_len = r.length;
			b->niov++;
			mh->msg_iovlen++;
		}
		b->msg_pkts[b->nmsg - 1]++;
		b->due[b->npkt] = due;
		b->octets[b->npkt] = r.prefix_len + r.length;
		b->rtp_ts[b->npkt] = ts;
		b->src_blob[b->npkt] = !!(r.flags & KRTP_REC_BLOB);
		b->src_off[b->npkt] = r.offset +
				      (b->src_blob[b->npkt] ? s->blob_off : 0);
		b->npkt++;
		s->batched++;
		added++;
	}
	if (open)
		finish_message(b, b->nmsg - 1, s);
	return added;
}
