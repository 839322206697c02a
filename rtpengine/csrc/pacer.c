// SPDX-License-Identifier: GPL-2.0
/*
 * The pacing threads. Each owns a shard of the streams, grouped by the
 * socket they send from; it sleeps until the earliest due packet of its
 * shard, then lays out in one batch, for every stream with a packet due
 * within the lookahead, what that stream has due within the burst (at
 * least the lookahead), and hands the batch to the strategy's flush
 * (send.c, uring.c):
 *
 * - gso, gso_zerocopy, uring_gso: consecutive packets of equal size become
 *   one UDP_SEGMENT message (the last may be shorter);
 * - the others: one message per packet.
 *
 * A batch holds the messages of many streams. For the sendmmsg family it
 * holds one socket's streams, so streams sharing a socket (one server
 * port, many clients named in msg_name) go out in one call per round;
 * io_uring batches take every socket of the thread in one submission.
 *
 * Every message's iovec alternates [RTP header + prefix][payload], the
 * payload pointing straight into the mapped media (or hint blob) file.
 * The thread holds its lock while it works; API calls take it briefly
 * between rounds (see yield_to_api()).
 *
 * Kernel-paced streams (KVOD_PACE_KERNEL, for the fq qdisc) are handed
 * over ahead of time instead: each message carries its first packet's due
 * time (SCM_TXTIME, CLOCK_MONOTONIC) and fq holds it until then. Such a
 * stream is filled up to the kernel lookahead (20 ms by default) and
 * refilled when less than half of that is still queued, so the thread
 * wakes about every kernel lookahead / 2 for it, not for every packet. A
 * GSO message of such a stream only groups packets due within the burst
 * of its first one, so nothing leaves earlier than it would under user
 * pacing.
 */
#include <endian.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/net_tstamp.h>

#include "pacer.h"

enum { PAYLOAD_OK, PAYLOAD_UNFILLED, PAYLOAD_BAD };
/* why build() stopped adding packets of a stream */
enum { STOP_NONE, STOP_UNFILLED, STOP_BAD, STOP_FULL, STOP_RING };

int64_t kvod_stream_due(const struct kvod_stream *s, uint64_t k)
{
	uint64_t send_ns = le64toh(s->recs[k].send_ns);

	/* unsigned: a hostile send_ns wraps instead of overflowing */
	return (int64_t)((uint64_t)s->t0 + send_ns);
}

/*
 * @s has sent its last record: it ends, or, while a fill still grows its
 * hint file, waits for kvod_stream_set_hints(). With pacer->lock held.
 */
void kvod_stream_at_last_record(struct kvod_stream *s)
{
	if (s->growing) {
		s->state = KVOD_STATE_WAITING;
		s->wait_end = true;
	} else {
		s->state = KVOD_STATE_ENDED;
	}
}

static void load_record(const struct kvod_stream *s, uint64_t k,
			struct kvod_hint_record *r)
{
	/* a private copy: the mapping may change under us, the copy cannot */
	memcpy(r, &s->recs[k], sizeof(*r));
	r->offset = le64toh(r->offset);
	r->length = le32toh(r->length);
	r->rtp_ts = le32toh(r->rtp_ts);
	r->flags = le16toh(r->flags);
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


static void batch_reset(struct kvod_batch *b)
{
	unsigned int i;

	for (i = 0; i < b->nrun; i++)
		b->runs[i].s->batched = 0;
	b->nmsg = b->npkt = b->niov = b->nrun = 0;
}

/* departure times go to the kernel: the stream is kernel-paced and paced */
static bool kernel_paced(const struct kvod_stream *s)
{
	return s->kpaced && !s->unpaced;
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
	if (!s->gso && !kernel_paced(s))
		return;
	mh->msg_control = buf;
	if (kernel_paced(s)) {
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
		mh->msg_controllen = kernel_paced(s) ? TXTIME_SPACE : 0;
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
static unsigned int build(struct kvod_stream *s, struct kvod_batch *b,
			  int64_t now, int64_t horizon, unsigned int budget,
			  int *stop)
{
	bool one_per_msg = !s->gso;
	bool zc = s->sk->zerocopy;
	bool kp = kernel_paced(s);
	int64_t due0 = 0;	/* of the open message's first packet */
	unsigned int added = 0, segs = 0, frags = 0;
	size_t seg = 0, msg_bytes = 0;
	bool open = false;	/* the last message may take more segments */
	uint64_t k = s->next_record + s->batched;

	*stop = STOP_NONE;
	for (; k < s->nrec && added < budget; k++) {
		struct kvod_hint_record r;
		const uint8_t *payload = NULL;
		int64_t due = s->unpaced ? now : kvod_stream_due(s, k);
		struct msghdr *mh;
		uint8_t *hdr;
		uint16_t seq;
		uint32_t ts;
		size_t size;
		bool new_msg;
		int rc;

		if (due > horizon)
			break;
		load_record(s, k, &r);
		rc = payload_of(s, &r, &payload);
		if (rc == PAYLOAD_UNFILLED) {
			*stop = STOP_UNFILLED;
			s->blocked_due = due;
			break;
		}
		if (rc == PAYLOAD_BAD) {
			*stop = STOP_BAD;
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
			*stop = STOP_FULL;
			break;
		}
		hdr = header_room(b, s->sk);
		if (!hdr) {
			*stop = STOP_RING;
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
		put_header(hdr, s, &r, seq, ts);
		mh = &b->msgs[b->nmsg - 1].msg_hdr;
		b->iov[b->niov].iov_base = hdr;
		b->iov[b->niov].iov_len = KVOD_RTP_HEADER + r.prefix_len;
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

/*
 * Messages @m .. @m + @n - 1 of @b went out at @t_send: count their
 * packets as sent and move their streams on.
 */
void kvod_account(struct kvod_batch *b, unsigned int m, unsigned int n,
		  int64_t t_send)
{
	struct kvod_stream *last = NULL;
	unsigned int i, j;

	for (i = m; i < m + n; i++) {
		struct kvod_stream *s = b->runs[b->msg_run[i]].s;
		unsigned int first = b->msg_first[i], np = b->msg_pkts[i];

		if (s != last)
			s->st.syscalls++;	/* this call carried it */
		last = s;
		for (j = first; j < first + np; j++) {
			int64_t late = s->unpaced ? 0 : t_send - b->due[j];

			if (late > 1000000)
				s->st.late_1ms++;
			if (late > 5000000)
				s->st.late_5ms++;
			if (late > s->st.max_late_ns)
				s->st.max_late_ns = late;
			s->st.payload_octets += b->octets[j];
		}
		s->st.packets_sent += np;
		s->st.last_seq = (uint16_t)(s->seq0 + s->seq_count + np - 1);
		s->st.last_rtp_ts = b->rtp_ts[first + np - 1];
		s->st.last_due_ns = b->due[first + np - 1];
		s->next_record += np;
		s->seq_count += np;
		s->batched -= np;
		s->err_pending = false;
		if (s->pacer) {
			s->pacer->st.packets += np;
			s->pacer->st.messages++;
		}
	}
}

/* give up on packets: they use their sequence numbers, as a loss would */
static void drop(struct kvod_stream *s, uint64_t n, int err)
{
	s->next_record += n;
	s->seq_count += n;
	s->st.packets_dropped += n;
	s->st.last_errno = err;
}

/* the socket's buffer is full (or the kernel short of memory): the send
 * was refused before anything went out, and may be tried again later */
bool kvod_send_full(int err)
{
	return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS;
}

static bool gso_refused(int err)
{
	return err == EIO || err == EINVAL || err == ENOPROTOOPT ||
	       err == EOPNOTSUPP || err == EMSGSIZE;
}

/*
 * Message @m of @b (of stream @s) could not be sent: @err. The stream's
 * later messages in the batch are not sent either; they are built again
 * next round.
 */
void kvod_send_failed(struct kvod_stream *s, struct kvod_batch *b,
		      unsigned int m, int err, int64_t now)
{
	s->st.send_errors++;
	s->st.last_errno = err;
	if (kvod_send_full(err)) {
		/* the same packets again later: nothing is skipped */
		s->retry_at = now + KVOD_RETRY_NS;
		return;
	}
	if (kernel_paced(s) && (err == EINVAL || err == EOPNOTSUPP)) {
		/* the departure time was refused after all: pace here; if
		 * GSO was the cause, the next try finds that out */
		s->kpaced = false;
		s->st.kernel_paced = 0;
		s->st.refused |= KVOD_FEAT_TXTIME;
		return;
	}
	if (s->gso && b->msg_pkts[m] > 1 && gso_refused(err)) {
		s->gso = false;
		s->st.gso_fallback = 1;
		s->st.refused |= KVOD_FEAT_UDP_SEGMENT;
		s->strategy = KVOD_STRATEGY_SENDMMSG;
		s->st.strategy = KVOD_STRATEGY_SENDMMSG;
		return;
	}
	/*
	 * UDP reports an ICMP error (ECONNREFUSED from a closed client port)
	 * on the next send, which then sends nothing: try once more before
	 * deciding that this batch itself cannot be sent.
	 */
	if (!s->err_pending) {
		s->err_pending = true;
		return;
	}
	s->err_pending = false;
	drop(s, b->msg_pkts[m], err);
}

static void flush(struct kvod_pacer *p, struct kvod_batch *b, int64_t now)
{
	if (b->nmsg) {
		p->st.rounds++;
		if (p->strategy == KVOD_STRATEGY_URING_GSO && p->uring)
			kvod_flush_uring(p, b, now);
		else if (kvod_is_mmsg_strategy(p->strategy))
			kvod_flush_mmsg(p, b, now);
		else
			kvod_flush_classic(p, b, now);
	}
	batch_reset(b);
}

/* when record next_record is due, from the cache when it still holds */
static int64_t next_due(struct kvod_stream *s)
{
	if (s->due_rec != s->next_record || s->due_t0 != s->t0 ||
	    !s->next_due) {
		s->due_rec = s->next_record;
		s->due_t0 = s->t0;
		s->next_due = s->next_record < s->nrec ?
			      kvod_stream_due(s, s->next_record) : INT64_MAX;
	}
	return s->next_due;
}

/*
 * When @s next needs its thread: at its next due packet, or, kernel-paced,
 * when less than half of the kernel lookahead is still queued (what was
 * handed over reaches up to the next due packet).
 */
static int64_t wake_due(struct kvod_pacer *p, struct kvod_stream *s)
{
	int64_t t = next_due(s), half = p->klookahead_ns / 2;

	if (!kernel_paced(s) || t == INT64_MAX || t < INT64_MIN + half)
		return t;
	return t - half;
}

static int64_t next_wake(struct kvod_pacer *p, struct kvod_stream *s,
			 int64_t now)
{
	if (s->state != KVOD_STATE_PLAYING)
		return INT64_MAX;
	if (s->retry_at > now)
		return s->retry_at;
	if (s->unpaced)
		return now;
	return wake_due(p, s);
}

/*
 * Lay out what @s has due within the burst, flushing @b whenever it fills
 * up. A stream is served once its next packet is due within the lookahead
 * and then takes the whole burst, so a slow stream is served once every
 * burst, with its packets in one GSO message, rather than once a packet.
 * A kernel-paced stream takes the kernel lookahead instead.
 */
static void fill_stream(struct kvod_pacer *p, struct kvod_batch *b,
			struct kvod_stream *s, int64_t now)
{
	int64_t horizon = now + (kernel_paced(s) ? p->klookahead_ns :
						   p->burst_ns);
	unsigned int budget = KVOD_STREAM_ROUND_PKTS;

	while (budget && s->state == KVOD_STATE_PLAYING && !s->retry_at) {
		unsigned int n;
		int stop;

		if (s->next_record + s->batched >= s->nrec)
			return;
		n = build(s, b, now, horizon, budget, &stop);
		budget -= n;
		switch (stop) {
		case STOP_FULL:
			flush(p, b, now);
			b->sk = s->sk;
			continue;
		case STOP_RING:
			flush(p, b, now);
			b->sk = s->sk;
			kvod_zc_reap(p, s->sk);
			if (s->sk->zc->tail - s->sk->zc->head >= KVOD_ZC_SLOTS)
				s->retry_at = now + KVOD_RETRY_NS / 4;
			continue;
		case STOP_UNFILLED:
			if (!n && !s->batched)
				s->state = KVOD_STATE_WAITING;
			return;
		case STOP_BAD:
			if (n || s->batched)
				return;
			drop(s, 1, ERANGE);
			continue;
		default:
			return;
		}
	}
}

/* --- the schedule: a binary min-heap of streams by wake time --------- */

static void heap_put(struct kvod_pacer *p, unsigned int i,
		     struct kvod_sched e)
{
	p->heap[i] = e;
	e.s->heap_pos = i;
}

static void heap_up(struct kvod_pacer *p, unsigned int i)
{
	struct kvod_sched e = p->heap[i];

	while (i > 1 && p->heap[i / 2].wake > e.wake) {
		heap_put(p, i, p->heap[i / 2]);
		i /= 2;
	}
	heap_put(p, i, e);
}

static void heap_down(struct kvod_pacer *p, unsigned int i)
{
	struct kvod_sched e = p->heap[i];

	for (;;) {
		unsigned int c = 2 * i;

		if (c > p->nheap)
			break;
		if (c < p->nheap && p->heap[c + 1].wake < p->heap[c].wake)
			c++;
		if (p->heap[c].wake >= e.wake)
			break;
		heap_put(p, i, p->heap[c]);
		i = c;
	}
	heap_put(p, i, e);
}

/* @s needs the thread at @wake (INT64_MAX: not until an API call) */
static void schedule(struct kvod_pacer *p, struct kvod_stream *s,
		     int64_t wake)
{
	unsigned int i = s->heap_pos;

	if (wake == INT64_MAX) {
		if (!i)
			return;
		s->heap_pos = 0;
		if (i != p->nheap--) {
			struct kvod_stream *last = p->heap[p->nheap + 1].s;

			heap_put(p, i, p->heap[p->nheap + 1]);
			heap_up(p, i);
			heap_down(p, last->heap_pos);
		}
		return;
	}
	if (!i) {
		/* room for every stream was made by kvod_pacer_add() */
		i = ++p->nheap;
		p->heap[i].s = s;
		p->heap[i].wake = wake;
		heap_up(p, i);
		return;
	}
	p->heap[i].wake = wake;
	heap_up(p, i);
	heap_down(p, s->heap_pos);
}

/* the stream due first, if it is due by @horizon, out of the heap */
static struct kvod_stream *pop_due(struct kvod_pacer *p, int64_t horizon)
{
	struct kvod_stream *s;

	if (!p->nheap || p->heap[1].wake > horizon)
		return NULL;
	s = p->heap[1].s;
	schedule(p, s, INT64_MAX);
	return s;
}

/*
 * One round: the streams due within the lookahead come off the schedule,
 * grouped by socket (a sendmmsg batch holds one socket's messages), are
 * served, and go back on it at their next wake. Returns when the thread
 * next needs to run.
 */
static int64_t pacer_round(struct kvod_pacer *p, int64_t now)
{
	struct kvod_batch *b = p->batch;
	bool uring = p->strategy == KVOD_STRATEGY_URING_GSO && p->uring;
	int64_t horizon = now + p->lookahead_ns;
	struct kvod_stream *work = NULL;
	struct kvod_sock *socks = NULL, **socks_tail = &socks, *sk;
	struct kvod_stream *s;

	while ((s = pop_due(p, horizon))) {
		sk = s->sk;
		if (!sk->due) {
			sk->due_tail = &sk->due;
			sk->due_next = NULL;
			*socks_tail = sk;
			socks_tail = &sk->due_next;
		}
		s->due_next = NULL;
		*sk->due_tail = s;
		sk->due_tail = &s->due_next;
	}

	batch_reset(b);
	for (sk = socks; sk; sk = sk->due_next) {
		struct kvod_stream *next;

		if (!uring && b->nmsg)
			flush(p, b, now);
		b->sk = sk;
		if (sk->zc && sk->zc->first_id != sk->zc->next_id)
			kvod_zc_reap(p, sk);
		for (s = sk->due; s; s = next) {
			int64_t t;

			next = s->due_next;
			if (s->state != KVOD_STATE_PLAYING)
				continue;	/* off the schedule until played */
			if (s->retry_at > now) {
				schedule(p, s, s->retry_at);
				continue;
			}
			s->retry_at = 0;
			if (s->next_record >= s->nrec) {
				kvod_stream_at_last_record(s);
				continue;
			}
			t = s->unpaced ? now : wake_due(p, s);
			if (t > horizon) {
				schedule(p, s, t);
				continue;
			}
			fill_stream(p, b, s, now);
			s->touched = work;
			work = s;
		}
		sk->due = NULL;
	}
	flush(p, b, now);

	now = kvod_now_ns();
	for (s = work; s; s = s->touched) {
		if (s->state == KVOD_STATE_PLAYING &&
		    s->next_record >= s->nrec)
			kvod_stream_at_last_record(s);
		schedule(p, s, next_wake(p, s, now));
	}
	return p->nheap ? p->heap[1].wake : INT64_MAX;
}

/*
 * A busy thread (backlog, unpaced streams) would otherwise retake its lock
 * at once and starve API callers: let queued callers in first.
 */
static void yield_to_api(struct kvod_pacer *p)
{
	int spins;

	if (atomic_load(&p->api_waiters) == 0)
		return;
	pthread_mutex_unlock(&p->lock);
	for (spins = 0; spins < 1000 && atomic_load(&p->api_waiters); spins++)
		sched_yield();
	pthread_mutex_lock(&p->lock);
}

static struct timespec ns_to_timespec(int64_t ns)
{
	struct timespec ts = {
		.tv_sec = ns / 1000000000,
		.tv_nsec = ns % 1000000000,
	};

	return ts;
}

static void *pacer_main(void *arg)
{
	struct kvod_pacer *p = arg;

	pthread_mutex_lock(&p->lock);
	while (!p->stop) {
		int64_t start = kvod_now_ns();
		int64_t wake = pacer_round(p, start);

		/*
		 * Sleep until the earliest due packet; that round then takes
		 * along whatever falls due within the lookahead, so a thread
		 * of many streams wakes once per batch, not once per packet.
		 */
		if (wake <= kvod_now_ns()) {
			yield_to_api(p);
			continue;
		}
		/*
		 * This round took what was due within a lookahead of its
		 * start, so nothing is late if the next one comes a lookahead
		 * later: streams falling due one by one then share a round
		 * instead of waking the thread each (a wake-up costs more than
		 * most rounds' sends).
		 */
		if (wake < start + p->lookahead_ns)
			wake = start + p->lookahead_ns;
		if (wake == INT64_MAX) {
			pthread_cond_wait(&p->cond, &p->lock);
		} else {
			struct timespec ts = ns_to_timespec(wake);

			pthread_cond_timedwait(&p->cond, &p->lock, &ts);
		}
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int kvod_pacer_init(struct kvod_pacer *p, int strategy, int64_t lookahead,
		    int64_t burst, int64_t klookahead)
{
	pthread_condattr_t ca;
	int err;

	memset(p, 0, sizeof(*p));
	p->strategy = strategy;
	p->lookahead_ns = lookahead;
	p->burst_ns = burst;
	p->klookahead_ns = klookahead;
	p->batch = calloc(1, sizeof(*p->batch));
	if (!p->batch)
		return -ENOMEM;
	if (!kvod_is_mmsg_strategy(strategy)) {
		/* a whole datagram: header, prefix and the largest payload */
		p->batch->readbuf = malloc(KVOD_MAX_DATAGRAM + KVOD_HDR_ROOM);
		if (!p->batch->readbuf) {
			err = ENOMEM;
			goto err_batch;
		}
	}
	if (strategy == KVOD_STRATEGY_URING_GSO) {
		err = -kvod_uring_new(&p->uring);
		if (err)
			goto err_batch;
	}
	err = pthread_mutex_init(&p->lock, NULL);
	if (err)
		goto err_uring;
	err = pthread_condattr_init(&ca);
	if (err)
		goto err_mutex;
	err = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!err)
		err = pthread_cond_init(&p->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (err)
		goto err_mutex;
	atomic_init(&p->api_waiters, 0);
	return 0;

err_mutex:
	pthread_mutex_destroy(&p->lock);
err_uring:
	kvod_uring_free(p->uring);
	p->uring = NULL;
err_batch:
	free(p->batch->readbuf);
	free(p->batch);
	p->batch = NULL;
	return -err;
}

int kvod_pacer_start(struct kvod_pacer *p)
{
	sigset_t all, old;
	int err;

	/* signals belong to the application's threads, not to the pacers */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	err = pthread_create(&p->thread, NULL, pacer_main, p);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		return -err;
	pthread_setname_np(p->thread, "kvod-pacer");
	p->started = true;
	return 0;
}

void kvod_pacer_stop(struct kvod_pacer *p)
{
	if (!p->started)
		return;
	kvod_pacer_lock(p);
	p->stop = true;
	pthread_cond_signal(&p->cond);
	kvod_pacer_unlock(p);
	pthread_join(p->thread, NULL);
	p->started = false;
}

/* after kvod_pacer_stop(), with every stream removed */
void kvod_pacer_destroy(struct kvod_pacer *p)
{
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	kvod_uring_free(p->uring);
	p->uring = NULL;
	free(p->heap);
	p->heap = NULL;
	if (p->batch)
		free(p->batch->readbuf);
	free(p->batch);
	p->batch = NULL;
}

void kvod_pacer_lock(struct kvod_pacer *p)
{
	atomic_fetch_add(&p->api_waiters, 1);
	pthread_mutex_lock(&p->lock);
	atomic_fetch_sub(&p->api_waiters, 1);
}

void kvod_pacer_unlock(struct kvod_pacer *p)
{
	pthread_mutex_unlock(&p->lock);
}

/* called with p->lock held */
struct kvod_sock *kvod_pacer_find_sock(struct kvod_pacer *p, uint64_t ino)
{
	struct kvod_sock *sk;

	for (sk = p->socks; sk; sk = sk->next)
		if (sk->ino == ino)
			return sk;
	return NULL;
}

/* departure times on @sk's messages, on CLOCK_MONOTONIC as fq wants them */
static int txtime_setup(struct kvod_sock *sk)
{
	struct sock_txtime t = {
		.clockid = CLOCK_MONOTONIC,
		.flags = 0,
	};

	if (setsockopt(sk->fd, SOL_SOCKET, SO_TXTIME, &t, sizeof(t)))
		return -errno;
	sk->txtime = true;
	return 0;
}

/*
 * Add @s to @p, sending from the socket @fd (the engine's duplicate, which
 * this takes over: closed at once if @p already sends from that socket).
 * Called with p->lock held; returns 0 or -ENOMEM.
 */
int kvod_pacer_add(struct kvod_pacer *p, struct kvod_stream *s, int fd,
		   uint64_t ino, int domain, bool shared)
{
	struct kvod_sock *sk = kvod_pacer_find_sock(p, ino);

	if (p->nstreams + 2 > p->heap_cap) {
		unsigned int cap = p->heap_cap ? 2 * p->heap_cap : 64;
		struct kvod_sched *h = realloc(p->heap, cap * sizeof(*h));

		if (!h)
			return -ENOMEM;
		p->heap = h;
		p->heap_cap = cap;
	}
	if (sk) {
		close(fd);
	} else {
		sk = calloc(1, sizeof(*sk));
		if (!sk)
			return -ENOMEM;
		sk->fd = fd;
		sk->ino = ino;
		sk->domain = domain;
		sk->shared = shared;
		if (p->strategy == KVOD_STRATEGY_GSO_ZEROCOPY &&
		    kvod_zc_setup(sk) < 0) {
			/* the socket refused SO_ZEROCOPY: plain gso */
			s->st.refused |= KVOD_FEAT_ZEROCOPY;
		}
		sk->next = p->socks;
		if (p->socks)
			p->socks->prev = sk;
		p->socks = sk;
	}
	/* the socket refused SO_TXTIME: the engine paces the stream */
	if (s->kpaced && !sk->txtime && txtime_setup(sk) < 0) {
		s->kpaced = false;
		s->st.refused |= KVOD_FEAT_TXTIME;
	}
	s->st.kernel_paced = s->kpaced;
	if (p->strategy == KVOD_STRATEGY_GSO_ZEROCOPY && !sk->zerocopy) {
		s->st.refused |= KVOD_FEAT_ZEROCOPY;
		s->strategy = KVOD_STRATEGY_GSO;
		s->st.strategy = KVOD_STRATEGY_GSO;
	}
	s->sk = sk;
	s->pacer = p;
	s->prev = NULL;
	s->next = sk->streams;
	if (sk->streams)
		sk->streams->prev = s;
	sk->streams = s;
	sk->nstreams++;
	p->nstreams++;
	return 0;
}

/* called with p->lock held; the last stream of a socket closes it */
void kvod_pacer_remove(struct kvod_pacer *p, struct kvod_stream *s)
{
	struct kvod_sock *sk = s->sk;

	schedule(p, s, INT64_MAX);
	if (s->prev)
		s->prev->next = s->next;
	else
		sk->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->next = s->prev = NULL;
	s->sk = NULL;
	p->nstreams--;
	if (--sk->nstreams)
		return;
	if (sk->prev)
		sk->prev->next = sk->next;
	else
		p->socks = sk->next;
	if (sk->next)
		sk->next->prev = sk->prev;
	kvod_zc_free(p, sk);
	close(sk->fd);
	free(sk);
}

/*
 * Whether @p's schedule is sound, with p->lock held: the heap keeps its
 * order and positions, and holds every playing stream (a stream missing
 * from it would never be sent again). Returns NULL or what is wrong.
 */
const char *kvod_pacer_check(const struct kvod_pacer *p)
{
	const struct kvod_sock *sk;
	const struct kvod_stream *s;
	unsigned int i, listed = 0;

	if (p->nheap >= p->heap_cap && p->nheap)
		return "the heap outgrew its room";
	for (i = 1; i <= p->nheap; i++) {
		if (p->heap[i].s->heap_pos != i)
			return "a stream does not know its heap position";
		if (i > 1 && p->heap[i / 2].wake > p->heap[i].wake)
			return "the heap is out of order";
	}
	for (sk = p->socks; sk; sk = sk->next) {
		for (s = sk->streams; s; s = s->next) {
			if (s->heap_pos) {
				listed++;
				if (s->heap_pos > p->nheap ||
				    p->heap[s->heap_pos].s != s)
					return "a stream's heap position is stale";
			} else if (s->state == KVOD_STATE_PLAYING) {
				return "a playing stream is off the schedule";
			}
		}
	}
	if (listed != p->nheap)
		return "the heap holds streams the thread does not";
	return NULL;
}

/*
 * Called with p->lock held, after a command changed what @s has due: the
 * next round looks at it (and puts it back on the schedule at its wake).
 */
void kvod_pacer_kick(struct kvod_pacer *p, struct kvod_stream *s)
{
	schedule(p, s, INT64_MIN);
	pthread_cond_signal(&p->cond);
}
