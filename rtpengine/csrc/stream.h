/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The engine's internal structures: streams, the sockets they send from,
 * the batch a round lays out, the pacers and the engine, shared by
 * engine.c (the API, stream set-up and validation), pacer.c (the pacing
 * threads and their schedule), batch.c (message layout) and the
 * strategies (send.c, uring.c). Not part of the cffi cdef. Calls run one
 * way: engine.c -> pacer.c -> batch.c, send.c, uring.c -> send.c's
 * accounting.
 */
#ifndef KVOD_STREAM_H
#define KVOD_STREAM_H

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "krtp.h"
#include "kvod_types.h"
#include "engine.h"
#include "filemap.h"
#include "guard.h"

/* for C libraries older than the kernel feature */
#ifndef SOL_UDP
#define SOL_UDP			17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT		103
#endif
#ifndef SO_TXTIME
#define SO_TXTIME		61
#define SCM_TXTIME		SO_TXTIME
#endif

#define KVOD_RTP_HEADER		12
#define KVOD_HDR_ROOM		24	/* '$' frame + header + prefix, rounded up */
#define KVOD_MAX_DATAGRAM	65507	/* UDP payload limit over IPv4 */
#define KVOD_GSO_SEGS		64	/* UDP_MAX_SEGMENTS of older kernels */
#define KVOD_MAX_MSGS		1024	/* messages per call (UIO_MAXIOV) */
#define KVOD_MAX_PKTS		4096	/* packets per call */
#define KVOD_STREAM_ROUND_PKTS	2048	/* packets per stream per round */
/* packets due this soon are sent now, so that they share a batch */
#define KVOD_LOOKAHEAD_NS	500000LL
/* kernel-paced streams: queued this far ahead (refilled at half) */
#define KVOD_KERNEL_LOOKAHEAD_NS	20000000LL
/* back-off after EAGAIN/ENOBUFS before the same batch is tried again */
#define KVOD_RETRY_NS		1000000LL
/* interleaved (TCP) streams: the '$', channel and length before a packet */
#define KVOD_TCP_FRAME_HDR	4
/* a blocked connection is tried again this soon, then twice as late each
 * time it still takes nothing, up to the max: a stalled reader costs the
 * thread a few calls a second, not one every retry */
#define KVOD_TCP_RETRY_NS	2000000LL
#define KVOD_TCP_RETRY_MAX_NS	50000000LL
#define KVOD_TCP_MAX_LAG_NS	2000000000LL
#define KVOD_TCP_STALL_NS	20000000000LL
#define KVOD_TCP_HOLD_NS	1000000000LL
/* the out-queue: one frame's unsent tail, and control bytes behind it */
#define KVOD_TCP_FRAME_MAX	(KVOD_TCP_FRAME_HDR + 65535)
#define KVOD_TCP_CTRL_MAX	65536
#define KVOD_TCP_OUTQ		(KVOD_TCP_FRAME_MAX + KVOD_TCP_CTRL_MAX)
#define KVOD_ZC_SLOTS		4096	/* zero-copy header ring, per socket */
/* a ring slot never straddles a page, so a header is one page fragment */
#define KVOD_ZC_SLOT_SIZE	32
/* page fragments a zero-copy datagram may have (MAX_SKB_FRAGS default);
 * the kernel refuses more with EMSGSIZE */
#define KVOD_ZC_FRAGS		17

struct kvod_pacer;
struct kvod_stream;

/*
 * Header bytes handed to the kernel with MSG_ZEROCOPY stay referenced
 * until the kernel reports the send complete on the error queue, so they
 * live in this ring, not in the reusable batch. Notification ids count
 * the socket's zero-copy sends (one per message sent); msg_end[id] is the
 * ring position after that message's headers.
 */
struct kvod_zc {
	uint8_t (*hdr)[KVOD_ZC_SLOT_SIZE];	/* page aligned */
	uint64_t head, tail;		/* slots [head, tail) are in use */
	uint64_t reserved;		/* slots taken by the batch being built */
	uint32_t next_id;		/* id of the next message sent */
	uint32_t first_id;		/* oldest id not yet released */
	uint64_t msg_end[KVOD_ZC_SLOTS];
	uint8_t done[KVOD_ZC_SLOTS];
};

/* One kernel socket as a pacer sees it: the streams that send from it. */
struct kvod_sock {
	struct kvod_sock *next, *prev;	/* in the pacer's list */
	struct kvod_stream *streams;	/* this socket's streams */
	unsigned int nstreams;
	int fd;				/* the engine's own duplicate */
	uint64_t ino;			/* the socket's inode: who shares it */
	int domain;
	bool shared;			/* unconnected: streams name clients */
	bool zerocopy;			/* SO_ZEROCOPY is on */
	bool txtime;			/* SO_TXTIME is on */
	struct kvod_zc *zc;
	/*
	 * TCP (interleaved streams): bytes that must leave before any new
	 * frame, [out_off, out_off + out_len) of outq: the unsent tail of a
	 * frame a short write cut, then kvod_sock_write()'s bytes.
	 */
	bool tcp;
	bool dead;			/* failed or stalled: writes nothing */
	bool pending;			/* on the pacer's pending list */
	uint8_t *outq;
	size_t out_off, out_len, out_max;
	int64_t blocked_since;		/* first refused write, 0: flowing */
	int64_t next_try;		/* blocked: not written before this */
	int64_t retry_ns;		/* the back-off after the next refusal */
	int64_t hold_until;		/* KVOD_PLAY_AFTER_WRITE: no frames yet */
	int64_t stall_ns;
	struct kvod_sock *pend_next;
	/* this round's due streams, in the order they fell due */
	struct kvod_stream *due, **due_tail;
	struct kvod_sock *due_next;	/* next socket with due streams */
};

struct kvod_stream {
	struct kvod_stream *next, *prev;	/* in its socket's list */
	struct kvod_pacer *pacer;
	struct kvod_sock *sk;
	int id;

	/* immutable after open */
	struct kvod_maps *maps;		/* the engine's, which hold media, hint */
	const uint8_t *media;
	uint64_t media_size;
	int media_fd;			/* read/sendfile strategies only */
	struct sockaddr_storage dest;	/* shared socket: the client */
	socklen_t dest_len;
	uint32_t ssrc;
	uint32_t ts0;
	uint16_t seq0;
	uint8_t pt;
	bool tcp;			/* interleaved on sk's connection */
	uint8_t channel;
	int64_t max_lag_ns;

	/* everything below is protected by pacer->lock */
	/* the hints, swapped by kvod_stream_set_hints() while a fill grows them */
	const uint8_t *hint;		/* the whole hint file */
	uint64_t hint_size;
	uint64_t hint_dev, hint_ino;	/* which file it is */
	const struct kvod_hint_record *recs;
	uint64_t nrec;
	const uint8_t *blob;
	uint64_t blob_off;		/* of the blob area in the hint file */
	uint64_t blob_size;
	int hint_fd;			/* read/sendfile strategies only */
	bool growing;		/* KVOD_HINTS_GROWING: more records will come */
	bool wait_end;		/* waiting at the last record for more */
	int state;
	int strategy;		/* KVOD_STRATEGY_*, in use now */
	bool gso;
	bool unpaced;
	bool kpaced;		/* KVOD_PACE_KERNEL, granted */
	bool err_pending;	/* a hard error already hit this batch once */
	uint64_t next_record;
	uint64_t seq_count;	/* packets sent or dropped so far */
	uint32_t batched;	/* packets of it in the batch being built */
	int64_t t0;		/* due(k) = t0 + send_ns[k] */
	int64_t blocked_due;	/* due time of the record the fill blocked */
	int64_t retry_at;
	uint64_t fill_limit;
	/* due time of record due_rec under schedule due_t0: a cache, so that
	 * a round skips a stream without touching its hint records */
	int64_t next_due;
	uint64_t due_rec;
	int64_t due_t0;
	struct kvod_stream *touched;	/* next in the round's work list */
	struct kvod_stream *due_next;	/* next in its socket's due list */
	/* where it sits in pacer->heap (1-based; 0: not there) */
	unsigned int heap_pos;
	/* the counters; the state fields are filled in when read */
	struct kvod_stream_stats st;
};

/* per message: room for SCM_TXTIME, then UDP_SEGMENT */
union kvod_cmsg {
	char buf[CMSG_SPACE(sizeof(uint64_t)) + CMSG_SPACE(sizeof(uint16_t))];
	struct cmsghdr align;
};

/* a run of consecutive messages of one stream in the batch */
struct kvod_run {
	struct kvod_stream *s;
	unsigned int msg, nmsg;		/* its messages */
	unsigned int pkt;		/* its first packet */
};

/* Per-thread buffers for one send call; no allocation per packet. */
struct kvod_batch {
	unsigned int nmsg, npkt, niov, nrun;
	struct kvod_sock *sk;		/* all messages go to it (not uring) */
	struct mmsghdr msgs[KVOD_MAX_MSGS];
	union kvod_cmsg cms[KVOD_MAX_MSGS];
	uint32_t msg_pkts[KVOD_MAX_MSGS];
	uint32_t msg_first[KVOD_MAX_MSGS];	/* first packet of each */
	uint16_t msg_run[KVOD_MAX_MSGS];
	struct kvod_run runs[KVOD_MAX_MSGS];
	struct iovec iov[2 * KVOD_MAX_PKTS];
	uint8_t hdr[KVOD_MAX_PKTS][KVOD_HDR_ROOM];
	int64_t due[KVOD_MAX_PKTS];
	uint32_t octets[KVOD_MAX_PKTS];
	uint32_t rtp_ts[KVOD_MAX_PKTS];
	uint64_t src_off[KVOD_MAX_PKTS];	/* file offset of the payload */
	uint8_t src_blob[KVOD_MAX_PKTS];	/* payload is in the hint file */
	uint8_t *readbuf;			/* read strategies */
};

struct kvod_uring;

/* a heap entry: the key lives here, so sifting reads no stream */
struct kvod_sched {
	int64_t wake;
	struct kvod_stream *s;
};

struct kvod_pacer {
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* on CLOCK_MONOTONIC */
	pthread_t thread;
	bool started;
	bool stop;
	atomic_int api_waiters;		/* API callers queued on lock */
	unsigned int nstreams;
	int strategy;			/* the engine's */
	int64_t lookahead_ns;		/* a stream is served this early */
	int64_t burst_ns;		/* and then sends what is due this soon */
	int64_t klookahead_ns;		/* kernel-paced streams' */
	struct kvod_sock *socks;
	/*
	 * The streams that may need the thread, by when (a binary min-heap,
	 * 1-based): a round takes only those due within the lookahead, so
	 * its cost follows the streams it serves, not the streams it has.
	 */
	struct kvod_sched *heap;
	unsigned int nheap, heap_cap;
	struct kvod_batch *batch;
	struct kvod_sock *pending;	/* TCP sockets with an out-queue */
	struct kvod_uring *uring;	/* uring_gso only */
	struct kvod_engine_stats st;
};

struct kvod_engine {
	int strategy;
	int requested;
	uint32_t features;		/* detected, less the refused */
	char fallback[256];		/* why not the requested strategy */
	int npacers;
	int64_t lookahead_ns;
	int64_t burst_ns;		/* >= lookahead_ns */
	int64_t klookahead_ns;
	struct kvod_pacer **pacers;
	pthread_mutex_t table_lock;	/* taken before any pacer lock */
	struct kvod_maps maps;		/* media and hint files, shared */
	struct kvod_stream **slots;
	uint16_t *gens;
	uint32_t nslots;
};

/*
 * @s cannot go on: its media or hint file shrank or changed under it
 * (@err: EFAULT, a mapped page is gone; ENODATA, a read came back short).
 * It sends nothing more; the caller sees the state and ends it.
 */
static inline void kvod_stream_fail(struct kvod_stream *s, int err)
{
	s->state = KVOD_STATE_FAILED;
	s->st.last_errno = err;
}

/*
 * Copy record @k of @s out of its mapping: 0, or -EFAULT (and @s failed)
 * if the hint file no longer holds it. With pacer->lock held.
 */
static inline int kvod_stream_record(struct kvod_stream *s, uint64_t k,
				     struct kvod_hint_record *r)
{
	if (kvod_guard_copy(r, &s->recs[k], sizeof(*r))) {
		kvod_stream_fail(s, EFAULT);
		return -EFAULT;
	}
	return 0;
}

/* when record @k of @s is due; INT64_MAX if it is gone (@s failed) */
static inline int64_t kvod_stream_due(struct kvod_stream *s, uint64_t k)
{
	uint64_t send_ns;

	if (kvod_guard_copy(&send_ns, &s->recs[k].send_ns, sizeof(send_ns))) {
		kvod_stream_fail(s, EFAULT);
		return INT64_MAX;
	}
	/* unsigned: a hostile send_ns wraps instead of overflowing */
	return (int64_t)((uint64_t)s->t0 + le64toh(send_ns));
}

/* departure times go to the kernel: the stream is kernel-paced and paced */
static inline bool kvod_kernel_paced(const struct kvod_stream *s)
{
	return s->kpaced && !s->unpaced;
}

#endif
