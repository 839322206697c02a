/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the parts of the krtp module share: the stream, the pacing
 * workers and the module-wide counters.
 *
 * krtp_main.c   the misc device, the ioctls and each file's stream table
 * krtp_stream.c opening a stream: checks on the caller's sockets, files,
 *               mapping and hint records; freeing it
 * krtp_pages.c  reading hint records, payload pages (page cache, pinned)
 * krtp_send.c   RTP headers, sending (spliced or corked, UDP GSO batches)
 * krtp_pacer.c  the pacing workers
 */
#ifndef KRTP_CORE_H
#define KRTP_CORE_H

#include <linux/atomic.h>
#include <linux/bits.h>
#include <linux/bvec.h>
#include <linux/fs.h>
#include <linux/list.h>
#include <linux/mm_types.h>
#include <linux/mutex.h>
#include <linux/net.h>
#include <linux/socket.h>
#include <linux/types.h>

#include "uapi/krtp.h"

/*
 * 6.5 replaced ->sendpage by sendmsg(MSG_SPLICE_PAGES) and removed
 * MSG_SENDPAGE_NOTLAST with it. MSG_SPLICE_PAGES itself is no sign: some
 * 6.1 stable kernels define it without UDP taking it.
 */
#ifndef MSG_SENDPAGE_NOTLAST
#define KRTP_SPLICE_PAGES	1
#define KRTP_SEND_MECHANISM	"MSG_SPLICE_PAGES"
#else
#define KRTP_SEND_MECHANISM	"sendpage"
#endif

#define KRTP_RTP_HEADER		12
#define KRTP_HDR_ROOM		(KRTP_RTP_HEADER + KRTP_HINT_PREFIX_MAX)
#define KRTP_MAX_DATAGRAM	65507	/* UDP payload limit over IPv4 */
/* header + payload pages of the largest datagram */
#define KRTP_MAX_BVEC		(KRTP_MAX_DATAGRAM / PAGE_SIZE + 3)
/* Python's limit too: more records than this is a hostile hint file */
#define KRTP_MAX_RECORDS	BIT_ULL(32)
/* packets due this soon are sent now */
#define KRTP_LOOKAHEAD_NS	500000LL
/* back-off after EAGAIN/ENOBUFS before the same packet is tried again */
#define KRTP_RETRY_NS		1000000LL
/* packets per stream per round, so one stream cannot starve the others */
#define KRTP_ROUND_PACKETS	64
/* one UDP GSO datagram: segments (UDP_MAX_SEGMENTS of 6.1) and bytes */
#define KRTP_GSO_SEGS		64
#define KRTP_GSO_BYTES		60000

/* the page a run of reads keeps, so reads of one page look it up once */
struct krtp_cursor {
	struct page *page;
	struct file *file;
	pgoff_t index;
};

struct krtp_worker;

struct krtp_stream {
	struct list_head node;		/* in worker->streams */
	struct krtp_worker *worker;
	u32 id;

	/* set at open, constant after */
	struct file *sock_file;
	struct socket *sock;
	struct file *media;		/* krtpsendfile; NULL for krtpmsend */
	struct file *hint;
	struct mm_struct *mm;		/* krtpmsend: owner of the mapping */
	unsigned long media_addr;	/* krtpmsend */
	u64 media_len;			/* krtpmsend */
	u64 nrec;
	u64 blob_offset;
	u64 blob_size;
	u32 ssrc;
	u32 ts0;
	u16 seq0;
	u8 pt;
	bool msend;

	/* everything below is protected by worker->lock */
	int state;
	bool unpaced;
	bool err_pending;	/* a hard error already hit this packet once */
	bool no_gso;		/* the path refused UDP GSO: one packet a call */
	u64 next_record;
	u64 seq_count;		/* packets sent or dropped so far */
	u64 fill_limit;
	s64 t0;			/* due(k) = t0 + send_ns[k] */
	s64 blocked_due;	/* due time of the record the fill blocked */
	s64 retry_at;
	struct krtp_stats st;	/* counters; id, state, ... set when read */
};

/* a pacing thread, its streams, and its buffers for one send */
struct krtp_worker {
	struct mutex lock;		/* streams and everything they hold */
	struct list_head streams;
	unsigned int nstreams;
	bool kicked;			/* a command changed what is due */
	struct task_struct *task;
	u8 *bounce;			/* krtpmsend's copy path */
	struct bio_vec bv[KRTP_MAX_BVEC];	/* [0]: header, then payload */
	bool pinned[KRTP_MAX_BVEC];	/* bv[i] is a pinned user page */
	/* a UDP GSO batch: its records and their due times */
	struct krtp_hint_record rec[KRTP_GSO_SEGS];
	s64 due[KRTP_GSO_SEGS];
#ifdef KRTP_SPLICE_PAGES
	struct page_frag_cache frag;	/* RTP headers, attached by reference */
#else
	u8 hdr[KRTP_GSO_SEGS][KRTP_HDR_ROOM];	/* a batch's headers, corked */
#endif
};

struct krtp_counters {
	atomic64_t streams;
	atomic64_t streams_opened;
	atomic64_t files;
	atomic64_t pages_held;
	atomic64_t packets_sent;
	atomic64_t packets_dropped;
	atomic64_t spliced_octets;
	atomic64_t copied_octets;
};

extern struct krtp_counters krtp_counters;
extern unsigned int krtp_max_streams;

/* krtp_stream.c */
struct krtp_stream *krtp_stream_new(const struct krtp_open *p);
void krtp_stream_free(struct krtp_stream *s);

/* krtp_pages.c: records and payload pages */
int krtp_payload(struct krtp_worker *w, struct krtp_stream *s,
		 struct krtp_cursor *c, const struct krtp_hint_record *r,
		 unsigned int *nbv, bool *copied, bool may_copy);
void krtp_put_bvec(struct krtp_worker *w, unsigned int from, unsigned int to);

/* krtp_send.c: packets onto the socket */
s64 krtp_due(const struct krtp_stream *s, u64 send_ns);
void krtp_drop(struct krtp_stream *s, int err);
bool krtp_send(struct krtp_worker *w, struct krtp_stream *s,
	       struct krtp_cursor *c, const struct krtp_hint_record *r,
	       s64 due, s64 now);
unsigned int krtp_gather(struct krtp_worker *w, struct krtp_stream *s,
			 struct krtp_cursor *c, const struct krtp_hint_record *r,
			 s64 due, s64 now);
int krtp_send_gso(struct krtp_worker *w, struct krtp_stream *s,
		  struct krtp_cursor *c, unsigned int n, s64 now);

/* krtp_pacer.c: the workers */
int krtp_workers_start(void);
void krtp_workers_stop(void);
unsigned int krtp_workers_count(void);
void krtp_worker_add(struct krtp_stream *s);
void krtp_worker_remove(struct krtp_stream *s);
void krtp_worker_kick(struct krtp_worker *w);
void krtp_worker_lock(struct krtp_worker *w);
void krtp_worker_unlock(struct krtp_worker *w);
int krtp_read_record(struct krtp_stream *s, u64 k,
		     struct krtp_hint_record *r, struct krtp_cursor *c);
void krtp_cursor_release(struct krtp_cursor *c);
int krtp_record_bounds(const struct krtp_stream *s,
		       const struct krtp_hint_record *r);
u64 krtp_media_size(const struct krtp_stream *s);
void krtp_put_page(struct page *page);
struct page *krtp_file_page(struct file *file, pgoff_t index);
bool krtp_file_pageable(struct file *file);

#endif /* KRTP_CORE_H */
