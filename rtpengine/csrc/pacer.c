// SPDX-License-Identifier: GPL-2.0
/*
 * The pacing threads. Each owns a shard of the streams, grouped by the
 * socket they send from; it sleeps until the earliest due packet of its
 * shard, then has batch.c lay out in one batch, for every stream with a
 * packet due within the lookahead, what that stream has due within the
 * burst (at least the lookahead), and hands the batch to the strategy's
 * flush (send.c, uring.c), which also counts what went out:
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
 * This file owns the schedule and the streams' states; it never sends.
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

#include "batch.h"
#include "clock.h"
#include "pacer.h"
#include "send.h"
#include "tcp.h"

static void flush(struct kvod_pacer *p, struct kvod_batch *b, int64_t now)
{
	if (b->nmsg) {
		p->st.rounds++;
		if (b->sk && b->sk->tcp)
			kvod_flush_tcp(p, b, now);
		else if (p->strategy == KVOD_STRATEGY_URING_GSO && p->uring)
			kvod_flush_uring(p, b, now);
		else if (kvod_is_mmsg_strategy(p->strategy))
			kvod_flush_mmsg(p, b, now);
		else
			kvod_flush_classic(p, b, now);
	}
	kvod_batch_reset(b);
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

	if (!kvod_kernel_paced(s) || t == INT64_MAX || t < INT64_MIN + half)
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
	int64_t horizon = now + (kvod_kernel_paced(s) ? p->klookahead_ns :
						   p->burst_ns);
	unsigned int budget = KVOD_STREAM_ROUND_PKTS;

	while (budget && s->state == KVOD_STATE_PLAYING && !s->retry_at) {
		unsigned int n;
		int stop;

		if (s->next_record + s->batched >= s->nrec)
			return;
		n = kvod_batch_build(s, b, now, horizon, budget, &stop);
		budget -= n;
		switch (stop) {
		case KVOD_STOP_FULL:
			flush(p, b, now);
			b->sk = s->sk;
			continue;
		case KVOD_STOP_RING:
			flush(p, b, now);
			b->sk = s->sk;
			kvod_zc_reap(p, s->sk);
			if (s->sk->zc->tail - s->sk->zc->head >= KVOD_ZC_SLOTS)
				s->retry_at = now + KVOD_RETRY_NS / 4;
			continue;
		case KVOD_STOP_UNFILLED:
			if (!n && !s->batched)
				s->state = KVOD_STATE_WAITING;
			return;
		case KVOD_STOP_BAD:
			if (n || s->batched)
				return;
			kvod_stream_drop(s, 1, ERANGE);
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
	int64_t wake, pend_wake = INT64_MAX;

	if (p->pending)
		pend_wake = kvod_tcp_drain_pending(p, now);
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

	kvod_batch_reset(b);
	for (sk = socks; sk; sk = sk->due_next) {
		struct kvod_stream *next;
		bool held;

		/* a TCP socket's frames go out in a batch of their own */
		if (b->nmsg && (!uring || sk->tcp || (b->sk && b->sk->tcp)))
			flush(p, b, now);
		b->sk = sk;
		/* what a short write left queued leaves before new frames */
		held = sk->tcp && !kvod_tcp_ready(p, sk, now);
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
			if (sk->tcp)
				kvod_tcp_catch_up(s, now);
			if (s->next_record >= s->nrec) {
				kvod_stream_at_last_record(s);
				continue;
			}
			t = s->unpaced ? now : wake_due(p, s);
			if (held && t <= horizon) {
				s->retry_at = kvod_tcp_retry_at(sk, now);
				if (sk->hold_until <= now)
					s->st.blocked++;
				schedule(p, s, s->retry_at);
				continue;
			}
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

	now = kvod_clock_ns();
	for (s = work; s; s = s->touched) {
		if (s->state == KVOD_STATE_PLAYING &&
		    s->next_record >= s->nrec)
			kvod_stream_at_last_record(s);
		schedule(p, s, next_wake(p, s, now));
	}
	wake = p->nheap ? p->heap[1].wake : INT64_MAX;
	/* queued bytes of a paused connection (an RTSP reply) go out too */
	if (p->pending) {
		if (pend_wake == INT64_MAX)
			pend_wake = now + KVOD_TCP_RETRY_NS;	/* listed now */
		if (wake > pend_wake)
			wake = pend_wake;
	}
	return wake;
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
		int64_t start = kvod_clock_ns();
		int64_t wake = pacer_round(p, start);

		/*
		 * Sleep until the earliest due packet; that round then takes
		 * along whatever falls due within the lookahead, so a thread
		 * of many streams wakes once per batch, not once per packet.
		 */
		if (wake <= kvod_clock_ns()) {
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

	/* signals belong to the application's threads, not to the pacers;
	 * but a fault on a mapping is the pacer's own (guard.c), and a
	 * blocked SIGBUS from a fault kills the process without a handler */
	sigfillset(&all);
	sigdelset(&all, SIGBUS);
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
		   uint64_t ino, int domain, bool shared, int64_t stall_ns)
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
		if (s->tcp && kvod_tcp_sock_init(sk, stall_ns)) {
			free(sk);
			return -ENOMEM;
		}
		if (p->strategy == KVOD_STRATEGY_GSO_ZEROCOPY && !s->tcp &&
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
	if (p->strategy == KVOD_STRATEGY_GSO_ZEROCOPY && !sk->zerocopy &&
	    !s->tcp) {
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
	if (sk->tcp)
		kvod_tcp_sock_free(p, sk);
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

/*
 * A stream just played sends what is due now from the caller's thread, so
 * its first packets leave without waiting for the pacer thread to wake
 * (a wake-up is most of PLAY to first packet, more under a crowd, when the
 * thread sleeps a lookahead between rounds); then the thread takes over.
 * Unpaced streams and io_uring batches are left to the thread. With
 * p->lock held, which the thread holds while it uses the batch.
 */
void kvod_pacer_serve_now(struct kvod_pacer *p, struct kvod_stream *s)
{
	struct kvod_batch *b = p->batch;
	int64_t now;

	if (s->unpaced || p->strategy == KVOD_STRATEGY_URING_GSO) {
		kvod_pacer_kick(p, s);
		return;
	}
	now = kvod_clock_ns();
	kvod_batch_reset(b);
	b->sk = s->sk;
	if (s->sk->zc && s->sk->zc->first_id != s->sk->zc->next_id)
		kvod_zc_reap(p, s->sk);
	fill_stream(p, b, s, now);
	flush(p, b, now);
	now = kvod_clock_ns();
	if (s->state == KVOD_STATE_PLAYING && s->next_record >= s->nrec)
		kvod_stream_at_last_record(s);
	schedule(p, s, next_wake(p, s, now));
	/* the thread may sleep past this stream's next wake */
	pthread_cond_signal(&p->cond);
}
