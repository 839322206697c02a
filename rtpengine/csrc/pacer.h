/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Internals shared by engine.c (the API, stream set-up and validation) and
 * pacer.c (the pacing threads that build and send the packets). Not part of
 * the cffi cdef.
 */
#ifndef KVOD_PACER_H
#define KVOD_PACER_H

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

/* for C libraries older than the kernel feature */
#ifndef SOL_UDP
#define SOL_UDP			17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT		103
#endif

#define KVOD_RTP_HEADER		12
#define KVOD_HDR_ROOM		20	/* header + prefix, rounded up */
#define KVOD_MAX_DATAGRAM	65507	/* UDP payload limit over IPv4 */
#define KVOD_GSO_SEGS		64	/* UDP_MAX_SEGMENTS of older kernels */
#define KVOD_MAX_MSGS		64	/* messages per sendmmsg call */
#define KVOD_MAX_PKTS		1024	/* packets per send call */
/* packets due this soon are sent now, so that they share a batch */
#define KVOD_LOOKAHEAD_NS	500000LL
/* back-off after EAGAIN/ENOBUFS before the same batch is tried again */
#define KVOD_RETRY_NS		1000000LL

struct kvod_pacer;

struct kvod_stream {
	struct kvod_stream *next, *prev;	/* in the pacer's list */
	struct kvod_pacer *pacer;
	int id;
	int sock;

	/* immutable after open */
	const uint8_t *media;
	uint64_t media_size;
	uint32_t ssrc;
	uint32_t ts0;
	uint16_t seq0;
	uint8_t pt;

	/* everything below is protected by pacer->lock */
	const uint8_t *hint;		/* the whole hint file */
	uint64_t hint_size;
	uint64_t hint_dev, hint_ino;	/* which file it is */
	const struct kvod_hint_record *recs;
	uint64_t nrec;
	const uint8_t *blob;
	uint64_t blob_size;
	bool growing;		/* KVOD_HINTS_GROWING: more records will come */
	bool wait_end;		/* waiting at the last record for more */
	int state;
	bool gso;
	bool unpaced;
	bool err_pending;	/* a hard error already hit this batch once */
	uint64_t next_record;
	uint64_t seq_count;	/* packets sent or dropped so far */
	int64_t t0;		/* due(k) = t0 + send_ns[k] */
	int64_t blocked_due;	/* due time of the record the fill blocked */
	int64_t retry_at;
	uint64_t fill_limit;
	/* the counters; the state fields are filled in when read */
	struct kvod_stream_stats st;
};

/* per-thread buffers for one send call; no allocation per packet */
union kvod_cmsg {
	char buf[CMSG_SPACE(sizeof(uint16_t))];
	struct cmsghdr align;
};

struct kvod_scratch {
	struct mmsghdr msgs[KVOD_MAX_MSGS];
	union kvod_cmsg cms[KVOD_MAX_MSGS];
	uint32_t msg_pkts[KVOD_MAX_MSGS];
	struct iovec iov[2 * KVOD_MAX_PKTS];
	uint8_t hdr[KVOD_MAX_PKTS][KVOD_HDR_ROOM];
	int64_t due[KVOD_MAX_PKTS];
	uint32_t octets[KVOD_MAX_PKTS];
	uint32_t rtp_ts[KVOD_MAX_PKTS];
};

struct kvod_pacer {
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* on CLOCK_MONOTONIC */
	pthread_t thread;
	bool started;
	bool stop;
	atomic_int api_waiters;		/* API callers queued on lock */
	unsigned int nstreams;
	struct kvod_stream *head;
	struct kvod_scratch *scratch;
};

struct kvod_engine {
	int strategy;
	int npacers;
	struct kvod_pacer **pacers;
	pthread_mutex_t table_lock;	/* taken before any pacer lock */
	struct kvod_stream **slots;
	uint16_t *gens;
	uint32_t nslots;
};

int kvod_pacer_init(struct kvod_pacer *p);
int kvod_pacer_start(struct kvod_pacer *p);
void kvod_pacer_stop(struct kvod_pacer *p);
void kvod_pacer_destroy(struct kvod_pacer *p);
void kvod_pacer_lock(struct kvod_pacer *p);
void kvod_pacer_unlock(struct kvod_pacer *p);
void kvod_pacer_add(struct kvod_pacer *p, struct kvod_stream *s);
void kvod_pacer_remove(struct kvod_pacer *p, struct kvod_stream *s);
void kvod_pacer_kick(struct kvod_pacer *p);

int64_t kvod_stream_due(const struct kvod_stream *s, uint64_t k);
void kvod_stream_at_last_record(struct kvod_stream *s);

#endif
