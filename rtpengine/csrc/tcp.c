// SPDX-License-Identifier: GPL-2.0
/*
 * RTP interleaved on the RTSP connection (RFC 2326 10.12). batch.c lays a
 * packet out as [ '$' channel length RTP header prefix ][ mapped payload ],
 * one message a packet; here a socket's batch goes out in one sendmsg()
 * of all its iovecs (in chunks of UIO_MAXIOV), never blocking.
 *
 * A short write cuts a frame: its unsent tail is copied into the socket's
 * out-queue (at most one frame: nothing after it was written), and the
 * frames after it stay unsent, built again when the stream is retried.
 * The out-queue always leaves first, and kvod_sock_write() appends the
 * caller's bytes (RTSP replies, RTCP) behind it, so they can never land
 * inside a frame. The queue holds one frame's tail and KVOD_TCP_CTRL_MAX
 * control bytes at most: memory per connection is bounded whatever the
 * reader does.
 *
 * A reader slower than the media rate: its streams fall behind their
 * schedule (nothing else waits for them, sends never block), and once one
 * is more than its max lag behind it skips, whole packets only, to the
 * first keyframe due now (kvod_tcp_catch_up()). A connection that takes
 * no byte at all for its stall time is shut down, its streams failed with
 * ETIMEDOUT: its byte stream may hold a cut frame, so it cannot go on.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "send.h"
#include "tcp.h"

#define IOV_CHUNK	1024	/* UIO_MAXIOV */

int kvod_tcp_sock_init(struct kvod_sock *sk, int64_t stall_ns)
{
	int one = 1;

	/*
	 * A round's last frames must leave now, not wait for the client's
	 * (delayed) ACK of the previous segment as Nagle would have them;
	 * the engine already batches a round into one write.
	 */
	setsockopt(sk->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	sk->outq = malloc(KVOD_TCP_OUTQ);
	if (!sk->outq)
		return -ENOMEM;
	sk->tcp = true;
	sk->stall_ns = stall_ns;
	sk->retry_ns = KVOD_TCP_RETRY_NS;
	return 0;
}

static void unlist(struct kvod_pacer *p, struct kvod_sock *sk)
{
	struct kvod_sock **pp;

	if (!sk->pending)
		return;
	for (pp = &p->pending; *pp; pp = &(*pp)->pend_next) {
		if (*pp == sk) {
			*pp = sk->pend_next;
			break;
		}
	}
	sk->pending = false;
	sk->pend_next = NULL;
}

/*
 * The socket's last stream leaves. Bytes still queued would be lost and a
 * cut frame's tail with them: the reader would take whatever came next as
 * part of it, so the connection ends instead.
 */
void kvod_tcp_sock_free(struct kvod_pacer *p, struct kvod_sock *sk)
{
	unlist(p, sk);
	if (sk->out_len && !sk->dead)
		shutdown(sk->fd, SHUT_RDWR);
	free(sk->outq);
	sk->outq = NULL;
}

static void note_queued(struct kvod_sock *sk)
{
	struct kvod_stream *s;

	for (s = sk->streams; s; s = s->next)
		if (sk->out_len > s->st.out_queued_max)
			s->st.out_queued_max = (uint32_t)sk->out_len;
}

/* the connection is gone (@err) or stalled: every stream on it fails */
static void sock_fail(struct kvod_sock *sk, int err, bool stalled)
{
	struct kvod_stream *s;

	for (s = sk->streams; s; s = s->next) {
		if (s->state != KVOD_STATE_FAILED)
			kvod_stream_fail(s, err);
		s->st.stalled = stalled;
	}
	if (stalled)
		shutdown(sk->fd, SHUT_RDWR);
	sk->dead = true;
	sk->out_off = sk->out_len = 0;
}

/* a write was refused: the stall clock runs from the first refusal */
static void blocked(struct kvod_sock *sk, int64_t now)
{
	sk->next_try = now + sk->retry_ns;
	if (sk->retry_ns < KVOD_TCP_RETRY_MAX_NS)
		sk->retry_ns *= 2;
	if (!sk->blocked_since)
		sk->blocked_since = now;
	else if (now - sk->blocked_since >= sk->stall_ns)
		sock_fail(sk, ETIMEDOUT, true);
}

/* the connection took bytes: it is tried at once from now on */
static void flowing(struct kvod_sock *sk)
{
	sk->blocked_since = 0;
	sk->next_try = 0;
	sk->retry_ns = KVOD_TCP_RETRY_NS;
}

static void put_pending(struct kvod_pacer *p, struct kvod_sock *sk)
{
	if (sk->pending || !sk->out_len)
		return;
	sk->pending = true;
	sk->pend_next = p->pending;
	p->pending = sk;
}

/*
 * Write what @sk's out-queue holds, without blocking. Returns true when
 * it is empty (or the connection failed: nothing will be written to it).
 */
bool kvod_tcp_drain(struct kvod_pacer *p, struct kvod_sock *sk, int64_t now)
{
	while (sk->out_len && !sk->dead) {
		ssize_t r = send(sk->fd, sk->outq + sk->out_off, sk->out_len,
				 MSG_DONTWAIT | MSG_NOSIGNAL);

		p->st.syscalls++;
		if (r > 0) {
			sk->out_off += (size_t)r;
			sk->out_len -= (size_t)r;
			flowing(sk);
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			blocked(sk, now);
			if (sk->dead)
				return true;
			put_pending(p, sk);
			return false;
		}
		sock_fail(sk, r < 0 ? errno : EPIPE, false);
	}
	sk->out_off = 0;
	return true;
}

/*
 * The queues of the pending sockets due a try, at the start of a round;
 * returns when the next one is due (INT64_MAX: none is pending).
 */
int64_t kvod_tcp_drain_pending(struct kvod_pacer *p, int64_t now)
{
	struct kvod_sock *sk = p->pending, *next;
	int64_t wake = INT64_MAX;

	p->pending = NULL;
	for (; sk; sk = next) {
		next = sk->pend_next;
		sk->pending = false;
		sk->pend_next = NULL;
		if (sk->next_try <= now)
			kvod_tcp_drain(p, sk, now);	/* lists it again */
		else
			put_pending(p, sk);
		if (sk->pending && sk->next_try < wake)
			wake = sk->next_try;
	}
	return wake;
}

/* Whether new frames may go on @sk now: not held for a reply, not in a
 * back-off, nothing queued left unwritten. */
bool kvod_tcp_ready(struct kvod_pacer *p, struct kvod_sock *sk, int64_t now)
{
	if (sk->hold_until > now || sk->next_try > now)
		return false;
	return kvod_tcp_drain(p, sk, now);
}

/* append @len bytes to @sk's out-queue; the caller checked the room */
static void enqueue(struct kvod_sock *sk, const void *data, size_t len)
{
	if (sk->out_off + sk->out_len + len > KVOD_TCP_OUTQ) {
		memmove(sk->outq, sk->outq + sk->out_off, sk->out_len);
		sk->out_off = 0;
	}
	memcpy(sk->outq + sk->out_off + sk->out_len, data, len);
	sk->out_len += len;
	if (sk->out_len > sk->out_max)
		sk->out_max = sk->out_len;
	note_queued(sk);
}

int kvod_tcp_write(struct kvod_pacer *p, struct kvod_sock *sk,
		   const void *data, size_t len, int64_t now)
{
	const uint8_t *d = data;

	if (sk->dead)
		return -EPIPE;
	if (len > KVOD_TCP_CTRL_MAX)
		return -EMSGSIZE;
	if (!kvod_tcp_drain(p, sk, now)) {
		if (sk->out_len + len > KVOD_TCP_OUTQ)
			return -ENOBUFS;
		enqueue(sk, d, len);
		return 0;
	}
	if (sk->dead)
		return -EPIPE;
	while (len) {
		ssize_t r = send(sk->fd, d, len, MSG_DONTWAIT | MSG_NOSIGNAL);

		p->st.syscalls++;
		if (r > 0) {
			d += r;
			len -= (size_t)r;
			flowing(sk);
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		sock_fail(sk, r < 0 ? errno : EPIPE, false);
		return -EPIPE;
	}
	if (len) {
		/* the queue was empty: the rest fits (len <= CTRL_MAX) */
		enqueue(sk, d, len);
		put_pending(p, sk);
	}
	return 0;
}

/* the end of message @m's iovecs in @b */
static unsigned int msg_iov_end(const struct kvod_batch *b, unsigned int m)
{
	const struct msghdr *mh = &b->msgs[m].msg_hdr;

	return (unsigned int)(mh->msg_iov - b->iov) + (unsigned int)mh->msg_iovlen;
}

/* the retry time of a stream whose connection is not ready */
int64_t kvod_tcp_retry_at(const struct kvod_sock *sk, int64_t now)
{
	return sk->next_try > now ? sk->next_try : now + KVOD_TCP_RETRY_NS;
}

/* the streams of messages @m.. of @b try again when the connection may */
static void retry_from(struct kvod_batch *b, unsigned int m, int64_t now)
{
	unsigned int i;

	if (m >= b->nmsg)
		return;
	for (i = b->msg_run[m]; i < b->nrun; i++) {
		struct kvod_stream *s = b->runs[i].s;

		s->retry_at = kvod_tcp_retry_at(b->sk, now);
		s->st.blocked++;
	}
}

/*
 * A short write stopped inside message @m at iovec @iv: queue the rest of
 * that frame. Its payload is the mapped file's: a page gone under us
 * fails the stream (and the connection, whose frame is cut).
 */
static int queue_tail(struct kvod_sock *sk, struct kvod_batch *b,
		      unsigned int m, unsigned int iv)
{
	unsigned int end = msg_iov_end(b, m);

	for (; iv < end; iv++) {
		struct iovec *v = &b->iov[iv];

		if (sk->out_off + sk->out_len + v->iov_len > KVOD_TCP_OUTQ) {
			memmove(sk->outq, sk->outq + sk->out_off, sk->out_len);
			sk->out_off = 0;
		}
		if (kvod_guard_copy(sk->outq + sk->out_off + sk->out_len,
				    v->iov_base, v->iov_len))
			return -EFAULT;
		sk->out_len += v->iov_len;
	}
	if (sk->out_len > sk->out_max)
		sk->out_max = sk->out_len;
	note_queued(sk);
	return 0;
}

void kvod_flush_tcp(struct kvod_pacer *p, struct kvod_batch *b, int64_t now)
{
	struct kvod_sock *sk = b->sk;
	unsigned int m = 0, iv = 0;
	size_t msg_sent = 0;	/* bytes of message m written */

	if (sk->dead)
		return;
	if (!kvod_tcp_drain(p, sk, now)) {
		retry_from(b, 0, now);
		return;
	}
	while (m < b->nmsg && !sk->dead) {
		struct msghdr mh = { .msg_iov = &b->iov[iv] };
		unsigned int n = b->niov - iv, first = m, i;
		size_t want = 0, left;
		ssize_t r;
		int64_t t;

		if (n > IOV_CHUNK)
			n = IOV_CHUNK;
		mh.msg_iovlen = n;
		for (i = 0; i < n; i++)
			want += b->iov[iv + i].iov_len;
		r = sendmsg(sk->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
		t = kvod_clock_ns();
		p->st.syscalls++;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			blocked(sk, now);
			break;
		}
		if (r <= 0) {
			sock_fail(sk, r < 0 ? errno : EPIPE, false);
			return;
		}
		flowing(sk);
		for (left = (size_t)r; left;) {
			struct iovec *v = &b->iov[iv];
			size_t take = left < v->iov_len ? left : v->iov_len;

			v->iov_base = (uint8_t *)v->iov_base + take;
			v->iov_len -= take;
			left -= take;
			msg_sent += take;
			if (v->iov_len)
				continue;
			if (++iv == msg_iov_end(b, m)) {
				m++;
				msg_sent = 0;
			}
		}
		if (m > first)
			kvod_account(b, first, m - first, t);
		if ((size_t)r == want)
			continue;
		/* the socket is full: finish the cut frame from the queue */
		if (msg_sent) {
			if (queue_tail(sk, b, m, iv)) {
				struct kvod_stream *s = b->runs[b->msg_run[m]].s;

				sock_fail(sk, EFAULT, false);
				kvod_stream_fail(s, EFAULT);
				return;
			}
			kvod_account(b, m, 1, t);
			m++;
			put_pending(p, sk);
		}
		break;
	}
	retry_from(b, m, now);
}

/*
 * An interleaved stream more than its max lag behind (its reader is
 * slower than the media) skips to the first keyframe due now or later,
 * whole packets only, so the byte stream stays valid; the skipped
 * packets use up their sequence numbers, as a loss would. Without a
 * keyframe within another max lag, it goes on at the first packet due
 * now. With pacer->lock held.
 */
void kvod_tcp_catch_up(struct kvod_stream *s, int64_t now)
{
	uint64_t k, to = 0;
	bool have_now = false;

	if (s->unpaced || s->state != KVOD_STATE_PLAYING ||
	    s->next_record >= s->nrec)
		return;
	if (now - kvod_stream_due(s, s->next_record) <= s->max_lag_ns)
		return;
	for (k = s->next_record + 1; k < s->nrec; k++) {
		struct kvod_hint_record r;
		int64_t due;

		if (kvod_stream_record(s, k, &r))
			return;		/* failed */
		due = (int64_t)((uint64_t)s->t0 + le64toh(r.send_ns));
		if (due < now)
			continue;
		if (!have_now) {
			have_now = true;
			to = k;
		}
		if (le16toh(r.flags) & KRTP_REC_KEYFRAME) {
			to = k;
			break;
		}
		if (due - now > s->max_lag_ns)
			break;
	}
	if (!have_now)
		to = s->nrec;	/* nothing is due yet: all of it was late */
	s->st.skips++;
	s->st.packets_skipped += to - s->next_record;
	s->seq_count += to - s->next_record;
	s->next_record = to;
}
