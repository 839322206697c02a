/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * krtp user API: the hint file layout shared by the krtp kernel module,
 * the user-space C engine (rtpengine/csrc) and the Python construct
 * definition (rtpengine/hintfile.py, tested against this header).
 *
 * A hint file is the packetisation of one track, computed once at ingest:
 * a 64-byte header followed by record_count fixed-size records, one per
 * RTP packet. All fields are little-endian and naturally aligned.
 */
#ifndef _UAPI_LINUX_KRTP_H
#define _UAPI_LINUX_KRTP_H

#include <linux/types.h>

#define KRTP_HINT_MAGIC		"KVODHINT"
#define KRTP_HINT_VERSION	1
#define KRTP_HINT_HEADER_SIZE	64
#define KRTP_HINT_RECORD_SIZE	32
#define KRTP_HINT_PREFIX_MAX	5

/* record flags */
#define KRTP_REC_MARKER		0x0001	/* RTP marker bit */
#define KRTP_REC_KEYFRAME	0x0002	/* starts a random access point */
#define KRTP_REC_BLOB		0x0004	/* payload lives in the hint file's blob area */
#define KRTP_REC_DISCONTINUITY	0x0008	/* timeline break before this record */

struct krtp_hint_header {
	char magic[8];		/* "KVODHINT", no NUL */
	__u16 version;
	__u16 header_size;
	__u16 record_size;
	__u16 flags;
	__u32 clock_rate;
	__u8 payload_type;
	__u8 pad[3];
	__u64 record_count;
	__u64 duration_ns;
	__u64 blob_offset;
	__u64 blob_size;
	__u8 reserved[8];
};

struct krtp_hint_record {
	__u64 offset;		/* payload start in the media file (or blob) */
	__u32 length;		/* payload bytes */
	__u32 rtp_ts;		/* RTP timestamp relative to the track start */
	__u64 send_ns;		/* departure time relative to the track start */
	__u16 flags;		/* KRTP_REC_* */
	__u8 prefix_len;	/* 0..KRTP_HINT_PREFIX_MAX */
	__u8 prefix[KRTP_HINT_PREFIX_MAX];
};

/*
 * /dev/krtp: the in-kernel RTP engine (krtpsendfile, krtpmsend).
 *
 * Every open file of /dev/krtp is one engine: its streams live until they
 * are closed or the file is released. The first ioctl on a file must be
 * KRTP_IOC_HELLO; until it succeeds every other ioctl fails with EPROTO.
 * Structures are laid out identically on 32- and 64-bit user space.
 */
#include <linux/ioctl.h>

#define KRTP_ABI_VERSION	1
#define KRTP_DEVICE_NAME	"krtp"

/* stream states, as struct krtp_stats.state reports them */
#define KRTP_STATE_IDLE		0
#define KRTP_STATE_PLAYING	1
#define KRTP_STATE_PAUSED	2
#define KRTP_STATE_WAITING	3	/* blocked at the fill limit */
#define KRTP_STATE_ENDED	4

/* struct krtp_hello.features */
#define KRTP_FEAT_SENDFILE	0x0001	/* krtpsendfile attaches page-cache pages */
#define KRTP_FEAT_MSEND		0x0002	/* krtpmsend attaches user pages */

/* struct krtp_open.flags */
#define KRTP_OPEN_MSEND		0x0001	/* payload from media_addr, not media_fd */

/* struct krtp_open.payload_type meaning "the hint header's" */
#define KRTP_PT_FROM_HINT	(-1)

/* struct krtp_play.flags */
#define KRTP_PLAY_UNPACED	0x0001	/* as fast as the socket takes them */

/* struct krtp_play.start_record meaning "where the stream stopped" */
#define KRTP_RECORD_CONTINUE	(~(__u64)0)

/* struct krtp_stats.mode */
#define KRTP_MODE_SENDFILE	1
#define KRTP_MODE_MSEND		2

/* struct krtp_stats.flags */
#define KRTP_STATS_NO_GSO	0x0001	/* the path refused UDP GSO batches */

struct krtp_hello {
	__u32 abi_version;	/* in: the caller's; out: the module's */
	__u32 features;		/* out: KRTP_FEAT_* */
	__u16 hello_size;	/* in: sizeof each structure as the caller */
	__u16 open_size;	/* compiled it; out: as the module did */
	__u16 play_size;
	__u16 cmd_size;
	__u16 stats_size;
	__u16 info_size;
	__u16 hint_header_size;
	__u16 hint_record_size;
	__u32 workers;		/* out: pacing threads */
	__u32 max_streams;	/* out: streams the module takes in all */
};

struct krtp_open {
	__s32 sock_fd;		/* a UDP socket connected to the client */
	__s32 media_fd;		/* krtpsendfile: a regular file; else -1 */
	__s32 hint_fd;		/* the track's hint file */
	__s32 payload_type;	/* 0..127 or KRTP_PT_FROM_HINT */
	__u32 ssrc;
	__u32 ts0;		/* RTP timestamp of rtp_ts 0 */
	__u16 seq0;		/* sequence number of the first packet */
	__u16 flags;		/* KRTP_OPEN_* */
	__u32 id;		/* out: the stream */
	__u64 media_addr;	/* krtpmsend: the payload mapping ... */
	__u64 media_len;	/* ... and its length */
	__u64 record_count;	/* out */
};

struct krtp_play {
	__u32 id;
	__u32 flags;		/* KRTP_PLAY_* */
	__u64 start_record;	/* or KRTP_RECORD_CONTINUE */
	__s64 start_ns;		/* CLOCK_MONOTONIC instant of start_record; 0: now */
};

/* KRTP_IOC_PAUSE, _SEEK (arg: record), _FILL (arg: byte limit), _CLOSE */
struct krtp_cmd {
	__u32 id;
	__u32 reserved;		/* must be 0 */
	__u64 arg;
};

struct krtp_stats {
	__u32 id;		/* in: the stream */
	__s32 state;		/* KRTP_STATE_* */
	__s32 last_errno;	/* of the last failed send or dropped packet */
	__u32 last_rtp_ts;
	__u16 last_seq;
	__u16 mode;		/* KRTP_MODE_* */
	__u32 flags;		/* KRTP_STATS_* */
	__u64 record_count;
	__u64 next_record;
	__u64 fill_limit;
	__u64 packets_sent;
	__u64 payload_octets;	/* RTP payload bytes sent (prefix included) */
	__u64 packets_dropped;
	__u64 send_errors;
	__u64 late_1ms;
	__u64 late_5ms;
	__s64 max_late_ns;
	__s64 last_due_ns;
	__u64 send_calls;	/* socket send calls made for this stream */
	__u64 spliced_octets;	/* payload attached by page reference */
	__u64 copied_octets;	/* payload copied into the socket buffers */
};

/* module-wide counters, over every file */
struct krtp_info {
	__u64 streams;		/* open now */
	__u64 streams_opened;	/* since the module was loaded */
	__u64 files;		/* open /dev/krtp files */
	__u64 pages_held;	/* page references the module holds now */
	__u64 packets_sent;
	__u64 packets_dropped;
	__u64 spliced_octets;
	__u64 copied_octets;
	__u32 workers;
	__u32 max_streams;
};

#define KRTP_IOC_MAGIC		0xb9
#define KRTP_IOC_HELLO		_IOWR(KRTP_IOC_MAGIC, 0, struct krtp_hello)
#define KRTP_IOC_OPEN		_IOWR(KRTP_IOC_MAGIC, 1, struct krtp_open)
#define KRTP_IOC_PLAY		_IOW(KRTP_IOC_MAGIC, 2, struct krtp_play)
#define KRTP_IOC_PAUSE		_IOW(KRTP_IOC_MAGIC, 3, struct krtp_cmd)
#define KRTP_IOC_SEEK		_IOW(KRTP_IOC_MAGIC, 4, struct krtp_cmd)
#define KRTP_IOC_FILL		_IOW(KRTP_IOC_MAGIC, 5, struct krtp_cmd)
#define KRTP_IOC_STATS		_IOWR(KRTP_IOC_MAGIC, 6, struct krtp_stats)
#define KRTP_IOC_CLOSE		_IOW(KRTP_IOC_MAGIC, 7, struct krtp_cmd)
#define KRTP_IOC_INFO		_IOR(KRTP_IOC_MAGIC, 8, struct krtp_info)

#endif /* _UAPI_LINUX_KRTP_H */
