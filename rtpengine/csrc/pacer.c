// SPDX-License-Identifier: GPL-2.0
/*
 * The pacing threads. Each owns a shard of the streams; it sleeps until the
 * earliest due packet of its shard, then sends for every stream what is due
 * within the lookahead, as few send calls as the strategy allows:
 *
 * - gso: consecutive packets of equal size become one UDP_SEGMENT message
 *   (the last may be shorter), and up to KVOD_MAX_MSGS messages go in one
 *   sendmmsg() call;
 * - sendmmsg: one message per packet, up to KVOD_MAX_MSGS per call.
 *
 * Every message's iovec alternates [RTP header + prefix][payload], the
 * payload pointing straight into the mapped media (or hint blob) file.
 * The thread holds its lock while it works; API calls take it briefly
 * between rounds (see yield_to_api()).
 */
#include <endian.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pacer.h"

/* send calls per stream per round, so that one busy stream cannot starve
 * the others of its thread; two lets an asynchronous error be retried */
#define KVOD_CALLS_PER_ROUND	2

enum { PAYLOAD_OK, PAYLOAD_UNFILLED, PAYLOAD_BAD };
enum { STOP_NONE, STOP_UNFILLED, STOP_BAD };

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

static void start_message(struct kvod_scratch *sc, unsigned int m,
			  unsigned int iov, size_t seg, bool gso)
{
	struct msghdr *mh = &sc->msgs[m].msg_hdr;
	struct cmsghdr *cm;

	memset(mh, 0, sizeof(*mh));
	mh->msg_iov = &sc->iov[iov];
	sc->msg_pkts[m] = 0;
	if (!gso)
		return;
	/* dropped again by finish_messages() if no second segment comes */
	mh->msg_control = sc->cms[m].buf;
	mh->msg_controllen = sizeof(sc->cms[m].buf);
	cm = CMSG_FIRSTHDR(mh);
	cm->cmsg_level = SOL_UDP;
	cm->cmsg_type = UDP_SEGMENT;
	cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
	*(uint16_t *)CMSG_DATA(cm) = (uint16_t)seg;
}

static void finish_messages(struct kvod_scratch *sc, unsigned int nmsg)
{
	unsigned int m;

	/* a lone segment is a plain datagram; no need to ask for GSO */
	for (m = 0; m < nmsg; m++) {
		if (sc->msg_pkts[m] == 1) {
			sc->msgs[m].msg_hdr.msg_control = NULL;
			sc->msgs[m].msg_hdr.msg_controllen = 0;
		}
	}
}

/*
 * Lay out in @sc the packets of @s due by now + lookahead, from
 * s->next_record on. Returns the number of messages; *stop says why it
 * stopped early at a record it could not send.
 */
static unsigned int build_batch(struct kvod_stream *s,
				struct kvod_scratch *sc, int64_t now,
				int *stop)
{
	int64_t horizon = now + KVOD_LOOKAHEAD_NS;
	unsigned int nmsg = 0, npkt = 0, niov = 0, segs = 0;
	size_t seg = 0, msg_bytes = 0;
	bool open = false;	/* the last message may take more segments */
	uint64_t k;

	*stop = STOP_NONE;
	for (k = s->next_record; k < s->nrec && npkt < KVOD_MAX_PKTS; k++) {
		struct kvod_hint_record r;
		const uint8_t *payload = NULL;
		int64_t due = s->unpaced ? now : kvod_stream_due(s, k);
		struct msghdr *mh;
		uint16_t seq;
		uint32_t ts;
		size_t size;
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
		if (open && size <= seg && segs < KVOD_GSO_SEGS &&
		    msg_bytes + size <= KVOD_MAX_DATAGRAM) {
			segs++;
			msg_bytes += size;
			/* only the last segment may be shorter */
			if (size < seg)
				open = false;
		} else {
			if (nmsg == KVOD_MAX_MSGS)
				break;
			seg = size;
			segs = 1;
			msg_bytes = size;
			open = s->gso;
			start_message(sc, nmsg++, niov, seg, s->gso);
		}

		seq = (uint16_t)(s->seq0 + s->seq_count + npkt);
		ts = s->ts0 + r.rtp_ts;
		put_header(sc->hdr[npkt], s, &r, seq, ts);
		mh = &sc->msgs[nmsg - 1].msg_hdr;
		sc->iov[niov].iov_base = sc->hdr[npkt];
		sc->iov[niov].iov_len = KVOD_RTP_HEADER + r.prefix_len;
		niov++;
		mh->msg_iovlen++;
		if (r.length) {
			sc->iov[niov].iov_base = (void *)payload;
			sc->iov[niov].iov_len = r.length;
			niov++;
			mh->msg_iovlen++;
		}
		sc->msg_pkts[nmsg - 1]++;
		sc->due[npkt] = due;
		sc->octets[npkt] = r.prefix_len + r.length;
		sc->rtp_ts[npkt] = ts;
		npkt++;
	}
	finish_messages(sc, nmsg);
	return nmsg;
}

static void account(struct kvod_stream *s, const struct kvod_scratch *sc,
		    unsigned int nmsg, int64_t t_send)
{
	unsigned int m, j, npkt = 0;

	for (m = 0; m < nmsg; m++)
		npkt += sc->msg_pkts[m];
	for (j = 0; j < npkt; j++) {
		int64_t late = s->unpaced ? 0 : t_send - sc->due[j];

		if (late > 1000000)
			s->st.late_1ms++;
		if (late > 5000000)
			s->st.late_5ms++;
		if (late > s->st.max_late_ns)
			s->st.max_late_ns = late;
		s->st.payload_octets += sc->octets[j];
	}
	s->st.packets_sent += npkt;
	s->st.last_seq = (uint16_t)(s->seq0 + s->seq_count + npkt - 1);
	s->st.last_rtp_ts = sc->rtp_ts[npkt - 1];
	s->st.last_due_ns = sc->due[npkt - 1];
	s->next_record += npkt;
	s->seq_count += npkt;
}

/* give up on packets: they use their sequence numbers, as a loss would */
static void drop(struct kvod_stream *s, uint64_t n, int err)
{
	s->next_record += n;
	s->seq_count += n;
	s->st.packets_dropped += n;
	s->st.last_errno = err;
}

static bool gso_refused(int err)
{
	return err == EIO || err == EINVAL || err == ENOPROTOOPT ||
	       err == EOPNOTSUPP || err == EMSGSIZE;
}

static void send_failed(struct kvod_stream *s, const struct kvod_scratch *sc,
			int err, int64_t now)
{
	s->st.send_errors++;
	s->st.last_errno = err;
	if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
		/* the same batch again later: nothing is skipped */
		s->retry_at = now + KVOD_RETRY_NS;
		return;
	}
	if (s->gso && sc->msg_pkts[0] > 1 && gso_refused(err)) {
		s->gso = false;
		s->st.gso_fallback = 1;
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
	drop(s, sc->msg_pkts[0], err);
}

static int64_t next_wake(const struct kvod_stream *s, int64_t now)
{
	if (s->state != KVOD_STATE_PLAYING)
		return INT64_MAX;
	if (s->retry_at > now)
		return s->retry_at;
	if (s->unpaced)
		return now;
	return kvod_stream_due(s, s->next_record);
}

/* Send what @s has due; returns when it next needs its thread. */
static int64_t pump(struct kvod_pacer *p, struct kvod_stream *s, int64_t now)
{
	struct kvod_scratch *sc = p->scratch;
	int calls;

	if (s->retry_at > now)
		return s->retry_at;
	s->retry_at = 0;
	for (calls = 0; calls < KVOD_CALLS_PER_ROUND; calls++) {
		unsigned int nmsg;
		int stop, r;

		if (s->state != KVOD_STATE_PLAYING)
			break;
		if (s->next_record >= s->nrec) {
			kvod_stream_at_last_record(s);
			break;
		}
		nmsg = build_batch(s, sc, now, &stop);
		if (nmsg == 0) {
			if (stop == STOP_UNFILLED)
				s->state = KVOD_STATE_WAITING;
			else if (stop == STOP_BAD)
				drop(s, 1, ERANGE);
			else
				break;
			continue;
		}
		s->st.syscalls++;
		do {
			r = sendmmsg(s->sock, sc->msgs, nmsg, MSG_DONTWAIT);
		} while (r < 0 && errno == EINTR);
		if (r > 0) {
			s->err_pending = false;
			account(s, sc, (unsigned int)r, now);
		} else {
			send_failed(s, sc, r < 0 ? errno : EIO, now);
			if (s->retry_at)
				return s->retry_at;
		}
		now = kvod_now_ns();
	}
	if (s->state == KVOD_STATE_PLAYING && s->next_record >= s->nrec)
		kvod_stream_at_last_record(s);
	return next_wake(s, now);
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
		int64_t wake = INT64_MAX;
		int64_t now = kvod_now_ns();
		struct kvod_stream *s;

		for (s = p->head; s; s = s->next) {
			int64_t t;

			if (s->state != KVOD_STATE_PLAYING)
				continue;
			t = pump(p, s, now);
			if (t < wake)
				wake = t;
		}
		if (wake <= kvod_now_ns() + KVOD_LOOKAHEAD_NS) {
			yield_to_api(p);
			continue;
		}
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

int kvod_pacer_init(struct kvod_pacer *p)
{
	pthread_condattr_t ca;
	int err;

	memset(p, 0, sizeof(*p));
	p->scratch = calloc(1, sizeof(*p->scratch));
	if (!p->scratch)
		return -ENOMEM;
	err = pthread_mutex_init(&p->lock, NULL);
	if (err)
		goto err_scratch;
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
err_scratch:
	free(p->scratch);
	p->scratch = NULL;
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

void kvod_pacer_destroy(struct kvod_pacer *p)
{
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p->scratch);
	p->scratch = NULL;
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
void kvod_pacer_add(struct kvod_pacer *p, struct kvod_stream *s)
{
	s->pacer = p;
	s->prev = NULL;
	s->next = p->head;
	if (p->head)
		p->head->prev = s;
	p->head = s;
	p->nstreams++;
}

/* called with p->lock held */
void kvod_pacer_remove(struct kvod_pacer *p, struct kvod_stream *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		p->head = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->next = s->prev = NULL;
	p->nstreams--;
}

/* called with p->lock held, after a command changed what is due */
void kvod_pacer_kick(struct kvod_pacer *p)
{
	pthread_cond_signal(&p->cond);
}
