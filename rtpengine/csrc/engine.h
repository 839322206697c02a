/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kvod user-space RTP engine: pacing threads that send RTP packets for
 * many streams straight from hint records.
 *
 * Every function returns 0 (or a stream id >= 0) on success and -errno on
 * failure, except kvod_engine_new(), which returns NULL and sets errno.
 * After a failure, kvod_last_error() describes it (per calling thread).
 *
 * The part between the CDEF markers is also the cffi cdef, so it must stay
 * plain C that cffi's parser understands: no macros with expressions.
 */
#ifndef KVOD_ENGINE_H
#define KVOD_ENGINE_H

#include "kvod_types.h"

/* KVOD_CDEF_BEGIN */
/*
 * Send strategies. The first four are the research's (Halvorsen, Dalseng,
 * Griwodz), kept to measure against; the rest use what a stock kernel
 * offers now. All of them put the same bytes on the wire.
 */
#define KVOD_STRATEGY_AUTO		0
#define KVOD_STRATEGY_GSO		1	/* UDP_SEGMENT batches, sendmmsg */
#define KVOD_STRATEGY_SENDMMSG		2	/* one message a packet, sendmmsg */
#define KVOD_STRATEGY_READ_SEND_RTP	3	/* pread after the header, send */
#define KVOD_STRATEGY_READ_WRITEV	4	/* pread, sendmsg header + buffer */
#define KVOD_STRATEGY_MMAP_WRITEV	5	/* sendmsg header + mapped payload */
#define KVOD_STRATEGY_RTP_SENDFILE	6	/* cork, send, sendfile, uncork */
#define KVOD_STRATEGY_SENDFILE_MORE	7	/* send MSG_MORE, sendfile */
#define KVOD_STRATEGY_GSO_ZEROCOPY	8	/* gso with MSG_ZEROCOPY */
#define KVOD_STRATEGY_URING_GSO		9	/* gso batches through io_uring */
#define KVOD_STRATEGY_COUNT		10

/* kernel features, as detected (kvod_engine_features()) or refused on
 * purpose (kvod_engine_opts.refuse, to test the fallbacks) */
#define KVOD_FEAT_UDP_SEGMENT	1
#define KVOD_FEAT_ZEROCOPY	2
#define KVOD_FEAT_IO_URING	4
#define KVOD_FEAT_TXTIME	8	/* SO_TXTIME: kernel pacing (fq) */

#define KVOD_STATE_IDLE		0
#define KVOD_STATE_PLAYING	1
#define KVOD_STATE_PAUSED	2
#define KVOD_STATE_WAITING	3
#define KVOD_STATE_ENDED	4
/* its media or hint file shrank or changed under it: it sends no more
 * (last_errno says how: EFAULT, ENODATA); the caller ends it */
#define KVOD_STATE_FAILED	5

/* kvod_stream_play() flags */
#define KVOD_PLAY_UNPACED	1
/*
 * interleaved streams: send nothing on the connection until the next
 * kvod_sock_write() (the PLAY reply, which clients read before any frame)
 * or for 1 s at most; the schedule starts at the play all the same
 */
#define KVOD_PLAY_AFTER_WRITE	2

/* start_record meaning "where the stream stopped" */
#define KVOD_RECORD_CONTINUE	0xffffffffffffffffULL

/* kvod_stream_params.payload_type meaning "the hint header's" */
#define KVOD_PT_FROM_HINT	-1

/*
 * kvod_stream_params.flags and kvod_stream_set_hints() flags.
 * GROWING: the hint file is a prefix of the track that a fill is still
 * extending; a stream at its last record waits (KVOD_STATE_WAITING) for
 * kvod_stream_set_hints() instead of ending.
 * REMAP (set_hints only): the new records may be cut differently; the
 * stream moves to the first record at or after the media offset it was
 * about to send (records sorted by offset, as MPEG-TS hints are); hints
 * whose records end before that offset are refused (-ERANGE).
 */
#define KVOD_HINTS_GROWING	1
#define KVOD_HINTS_REMAP	2
/* set_hints only: back to the first record, for a play() that positions it */
#define KVOD_HINTS_RESTART	4
/*
 * open only: hand the stream's packets to the kernel ahead of time, each
 * message stamped with its departure time (SO_TXTIME), for the fq qdisc
 * to release on time. Honoured for the batched strategies (gso, sendmmsg,
 * gso_zerocopy, uring_gso) on connected sockets; otherwise, or when the
 * socket refuses SO_TXTIME, the engine paces the stream itself
 * (kvod_stream_stats.kernel_paced says which).
 */
#define KVOD_PACE_KERNEL	8
/*
 * open only: sock_fd is the client's connected TCP socket (the RTSP
 * connection), and the stream's packets go on it interleaved (RFC 2326
 * 10.12): '$', channel, 16-bit length, RTP packet. The streams of one
 * connection share the engine's duplicate of it and its bounded
 * out-queue, which kvod_sock_write() also feeds (RTSP replies, RTCP), so
 * nothing written there ever lands inside a frame. A stream that falls
 * more than tcp_max_lag_ms behind skips to the next keyframe due now; a
 * connection that takes no byte for tcp_stall_ms is shut down and its
 * streams fail (last_errno ETIMEDOUT, stats.stalled).
 */
#define KVOD_INTERLEAVED	16

/* kvod_stream_set_hints() record_count meaning "the hint header's" */
#define KVOD_RECORDS_FROM_HINT	0xffffffffffffffffULL

struct kvod_engine;

struct kvod_engine_opts {
	int threads;		/* 0: one per online CPU */
	int strategy;		/* KVOD_STRATEGY_* */
	uint32_t refuse;	/* KVOD_FEAT_* to treat as refused */
	uint32_t reserved;	/* must be 0 */
	int64_t lookahead_ns;	/* send what is due this soon; 0: 500 us */
	/*
	 * A stream that has a packet due also sends what it has due this
	 * soon after, as one GSO message: fewer, fuller sends for slow
	 * streams, packets leaving at most this early. 0: the lookahead.
	 */
	int64_t burst_ns;
	/* kernel-paced streams: hand over what is due this soon, again when
	 * less than half of it is queued; 0: 20 ms */
	int64_t kernel_lookahead_ns;
};

struct kvod_engine_stats {
	uint64_t rounds;	/* pacing rounds that sent something */
	uint64_t syscalls;	/* every call on the data path */
	uint64_t packets;	/* packets sent */
	uint64_t zc_completions; /* zero-copy completions read */
	uint64_t zc_copied;	/* of which the kernel copied after all */
	uint64_t messages;	/* datagrams sent, a GSO message as one */
};

struct kvod_stream_params {
	int sock_fd;		/* UDP socket; the engine dup()s it */
	int media_fd;		/* regular file; mapped read-only */
	int hint_fd;		/* hint file; mapped read-only, validated */
	int payload_type;	/* 0..127 or KVOD_PT_FROM_HINT */
	uint32_t ssrc;
	uint32_t ts0;		/* RTP timestamp of rtp_ts 0 */
	uint16_t seq0;		/* sequence number of the first packet */
	uint16_t flags;		/* KVOD_HINTS_GROWING, KVOD_PACE_KERNEL */
	/*
	 * Destination of an unconnected (shared) socket: dest_family 0 means
	 * the socket is connected to its one client. Streams sharing a
	 * socket are sent together, many clients a system call.
	 */
	int dest_family;	/* 0, AF_INET or AF_INET6 */
	uint16_t dest_port;
	uint8_t dest_addr[16];	/* network order: 4 bytes for AF_INET */
	uint32_t dest_scope;	/* IPv6 scope id */
	/* KVOD_INTERLEAVED only */
	uint8_t channel;	/* the RTP channel (RTCP is channel + 1) */
	uint32_t tcp_max_lag_ms;	/* 0: 2000 */
	uint32_t tcp_stall_ms;		/* 0: 20000 */
};

/*
 * Where kvod_stream_play() started a stream, read under the lock that
 * orders it with the sends: the record it sends first (the last one when
 * it starts at the end), that record's sequence number and RTP timestamp
 * (for RTP-Info) and its send time relative to the track (the npt).
 */
struct kvod_play_start {
	uint64_t record;
	int64_t send_ns;
	uint32_t rtp_ts;
	uint16_t seq;
};

struct kvod_stream_stats {
	int32_t state;		/* KVOD_STATE_* */
	int32_t last_errno;	/* of the last failed send, 0 if none */
	uint64_t record_count;
	uint64_t next_record;	/* the record the stream sends next */
	uint64_t fill_limit;	/* media bytes the stream may send from */
	uint64_t packets_sent;
	uint64_t payload_octets; /* RTP payload bytes sent (SR octet count) */
	uint64_t packets_dropped; /* given up after a hard send error */
	uint64_t send_errors;	/* failed send calls */
	/* lateness: handed to the kernel minus due, when positive (a
	 * kernel-paced packet is handed over early, and is not late) */
	uint64_t late_1ms;	/* packets sent > 1 ms after their due time */
	uint64_t late_5ms;	/* packets sent > 5 ms after their due time */
	int64_t max_late_ns;
	int64_t last_due_ns;	/* when the last packet sent was due */
	uint64_t syscalls;	/* send calls that carried this stream */
	uint32_t last_rtp_ts;
	uint16_t last_seq;
	uint8_t gso_fallback;	/* GSO failed at run time; now sendmmsg */
	uint8_t strategy;	/* KVOD_STRATEGY_*, in use now */
	uint32_t refused;	/* KVOD_FEAT_* the kernel refused at run time */
	uint32_t shared;	/* 1: sends from a shared socket */
	uint32_t kernel_paced;	/* 1: the kernel releases its packets on time */
	/* interleaved streams (KVOD_INTERLEAVED) */
	uint32_t interleaved;	/* 1: sends on a TCP connection */
	uint32_t stalled;	/* 1: its connection took nothing for too long */
	uint64_t skips;		/* times it fell too far behind and skipped */
	uint64_t packets_skipped; /* packets those skips left out */
	uint64_t blocked;	/* rounds its connection took less than due */
	uint32_t out_queued;	/* bytes in its connection's out-queue now */
	uint32_t out_queued_max; /* the most that queue ever held */
};

KVOD_API int64_t kvod_now_ns(void);
/*
 * Start writing bytes @offset..@offset+@size of file @fd to disk, without
 * waiting (sync_file_range SYNC_FILE_RANGE_WRITE): a later fsync finds
 * them mostly written. Nothing is made durable by it. 0, or -errno.
 */
KVOD_API int kvod_file_writeback(int fd, int64_t offset, int64_t size);
KVOD_API const char *kvod_last_error(void);
KVOD_API const char *kvod_strategy_name(int strategy);
KVOD_API uint32_t kvod_probe_features(void);

KVOD_API struct kvod_engine *kvod_engine_new(int threads, int strategy);
KVOD_API struct kvod_engine *kvod_engine_new_opts(
	const struct kvod_engine_opts *opts);
KVOD_API void kvod_engine_free(struct kvod_engine *e);
KVOD_API int kvod_engine_strategy(struct kvod_engine *e);
KVOD_API int kvod_engine_threads(struct kvod_engine *e);
KVOD_API int kvod_engine_features(struct kvod_engine *e);
KVOD_API const char *kvod_engine_fallback(struct kvod_engine *e);
KVOD_API int kvod_engine_stats(struct kvod_engine *e,
			       struct kvod_engine_stats *out);
/* 0, or -EUCLEAN if a pacing thread's schedule is unsound (tests, status) */
KVOD_API int kvod_engine_check(struct kvod_engine *e);
/*
 * The ids of the streams that are not simply idle, playing or paused
 * (waiting, ended or failed): up to @max of them in @ids. Returns how
 * many there are (more than @max: call again with room for them). One
 * call instead of a stats call per stream, for the daemon's once-a-second
 * look at every stream.
 */
KVOD_API int kvod_engine_unsettled(struct kvod_engine *e, int32_t *ids,
				   int max);

KVOD_API int kvod_stream_open(struct kvod_engine *e,
			      const struct kvod_stream_params *p);
KVOD_API int kvod_stream_play(struct kvod_engine *e, int id,
			      uint64_t start_record, int64_t start_mono_ns,
			      int flags, struct kvod_play_start *out);
KVOD_API int kvod_stream_pause(struct kvod_engine *e, int id);
KVOD_API int kvod_stream_set_fill_limit(struct kvod_engine *e, int id,
					uint64_t limit);
/*
 * Give stream @id other hint records: those of @hint_fd (mapped read-only;
 * the caller may close it), @record_count of them or the header's count.
 * Without KVOD_HINTS_REMAP the new records start with the ones the stream
 * had (a prefix that grew) and the stream keeps its place; a waiting
 * stream resumes. The old mapping is released.
 */
KVOD_API int kvod_stream_set_hints(struct kvod_engine *e, int id,
				   int hint_fd, uint64_t record_count,
				   int flags);
KVOD_API int kvod_stream_stats(struct kvod_engine *e, int id,
			       struct kvod_stream_stats *out);
KVOD_API int kvod_stream_close(struct kvod_engine *e, int id);
/*
 * Write @len bytes on the connection of interleaved stream @id, after
 * whatever frames and bytes are queued for it, never inside a frame: at
 * once when nothing is queued, else from its bounded out-queue (-ENOBUFS
 * when the bytes would not fit; -EPIPE once the connection failed).
 */
KVOD_API int kvod_sock_write(struct kvod_engine *e, int id, const void *data,
			     size_t len);
/* KVOD_CDEF_END */

#endif
