// SPDX-License-Identifier: GPL-2.0
/*
 * The strategies' system calls: what a pacer does with a batch it laid out
 * (pacer.c). Each flush sends the batch's messages in order, counts what
 * went out with kvod_account() and reports a failed message with
 * kvod_send_failed(); that stream's later messages wait for the next round.
 *
 * The research's per-packet data paths (Halvorsen, Dalseng, Griwodz):
 *   read_send_rtp   pread the payload after the header in one buffer, send
 *   read_writev     pread into a buffer, sendmsg [header][buffer]
 *   mmap_writev     sendmsg [header][mapped payload]
 *   rtp_sendfile    UDP_CORK on, send header, sendfile payload, cork off
 *   sendfile_more   send header with MSG_MORE, sendfile payload
 * and the batched ones:
 *   sendmmsg, gso   sendmmsg of the batch (gso: UDP_SEGMENT messages)
 *   gso_zerocopy    the same with MSG_ZEROCOPY; the header bytes live in a
 *                   per-socket ring until the kernel reports completion
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/errqueue.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include "clock.h"
#include "send.h"

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY		60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY		0x4000000
#endif
#ifndef UDP_CORK
#define UDP_CORK		1
#endif

/* --- accounting ------------------------------------------------------- */

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
void kvod_stream_drop(struct kvod_stream *s, uint64_t n, int err)
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
	/*
	 * The payload is gone: a page of the mapped file past its new end
	 * (the kernel's copy faults: EFAULT, not SIGBUS), or a read of it
	 * came back short. Every later packet would fail the same way.
	 */
	if (err == EFAULT || err == ENODATA) {
		kvod_stream_fail(s, err);
		return;
	}
	if (kvod_send_full(err)) {
		/* the same packets again later: nothing is skipped */
		s->retry_at = now + KVOD_RETRY_NS;
		return;
	}
	if (kvod_kernel_paced(s) && (err == EINVAL || err == EOPNOTSUPP)) {
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
	kvod_stream_drop(s, b->msg_pkts[m], err);
}

bool kvod_is_mmsg_strategy(int strategy)
{
	return strategy == KVOD_STRATEGY_GSO ||
	       strategy == KVOD_STRATEGY_SENDMMSG ||
	       strategy == KVOD_STRATEGY_GSO_ZEROCOPY ||
	       strategy == KVOD_STRATEGY_URING_GSO;
}

/* --- zero-copy -------------------------------------------------------- */

int kvod_zc_setup(struct kvod_sock *sk)
{
	int one = 1;

	if (setsockopt(sk->fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)))
		return -errno;
	sk->zc = calloc(1, sizeof(*sk->zc));
	if (!sk->zc)
		return -ENOMEM;
	sk->zc->hdr = aligned_alloc(4096, KVOD_ZC_SLOTS * KVOD_ZC_SLOT_SIZE);
	if (!sk->zc->hdr) {
		free(sk->zc);
		sk->zc = NULL;
		return -ENOMEM;
	}
	sk->zerocopy = true;
	return 0;
}

/* @n messages starting at @m went out: their headers stay until done */
static void zc_commit(struct kvod_sock *sk, const struct kvod_batch *b,
		      unsigned int m, unsigned int n)
{
	struct kvod_zc *zc = sk->zc;
	unsigned int i;

	for (i = m; i < m + n; i++) {
		uint32_t id = zc->next_id++;

		zc->tail += b->msg_pkts[i];
		zc->reserved -= b->msg_pkts[i];
		zc->msg_end[id % KVOD_ZC_SLOTS] = zc->tail;
		zc->done[id % KVOD_ZC_SLOTS] = 0;
	}
}

/*
 * A zero-copy message failed. EAGAIN/ENOBUFS come before the kernel built
 * the datagram (msg_zerocopy_realloc() failed, or the id was given back
 * by net_zcopy_put_abort()). Any other error may come after: a datagram
 * udp_send_skb() refuses (UDP GSO on an SO_NO_CHECK socket, too many
 * segments) or that ip_local_out() drops has used an id, and its
 * completion is queued at once. Take an id for it, with no header slots
 * and already done: if the kernel did not use one, every later message is
 * released one completion late, never early.
 */
static void zc_failed(struct kvod_sock *sk, int err)
{
	struct kvod_zc *zc = sk->zc;
	uint32_t id;

	if (kvod_send_full(err) || err == EINTR)
		return;
	id = zc->next_id++;
	zc->msg_end[id % KVOD_ZC_SLOTS] = zc->tail;
	zc->done[id % KVOD_ZC_SLOTS] = 1;
}

static void zc_complete(struct kvod_pacer *p, struct kvod_zc *zc,
			uint32_t lo, uint32_t hi, bool copied)
{
	uint32_t outstanding = zc->next_id - zc->first_id;
	uint32_t id;

	p->st.zc_completions++;
	if (copied)
		p->st.zc_copied++;
	/* ids wrap at 2^32: compare as distances from the oldest */
	for (id = lo;; id++) {
		if (id - zc->first_id < outstanding)
			zc->done[id % KVOD_ZC_SLOTS] = 1;
		if (id == hi)
			break;
	}
	while (zc->first_id != zc->next_id &&
	       zc->done[zc->first_id % KVOD_ZC_SLOTS]) {
		zc->head = zc->msg_end[zc->first_id % KVOD_ZC_SLOTS];
		zc->first_id++;
	}
}

/* Read the completions queued on @sk's error queue, without waiting. */
void kvod_zc_reap(struct kvod_pacer *p, struct kvod_sock *sk)
{
	union {
		char buf[CMSG_SPACE(sizeof(struct sock_extended_err) +
				    sizeof(struct sockaddr_in6))];
		struct cmsghdr align;
	} control;

	if (!sk->zc)
		return;
	for (;;) {
		struct msghdr msg = {
			.msg_control = control.buf,
			.msg_controllen = sizeof(control.buf),
		};
		struct cmsghdr *cm;
		int r;

		r = recvmsg(sk->fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
		p->st.syscalls++;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
			struct sock_extended_err ee;

			if (!((cm->cmsg_level == SOL_IP &&
			       cm->cmsg_type == IP_RECVERR) ||
			      (cm->cmsg_level == SOL_IPV6 &&
			       cm->cmsg_type == IPV6_RECVERR)))
				continue;
			memcpy(&ee, CMSG_DATA(cm), sizeof(ee));
			if (ee.ee_origin != SO_EE_ORIGIN_ZEROCOPY)
				continue;
			zc_complete(p, sk->zc, ee.ee_info, ee.ee_data,
				    ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED);
		}
	}
}

/*
 * The socket goes away: give the kernel a moment to finish with the
 * header ring. Its pages stay pinned however long that takes, so freeing
 * it early could only change the header bytes of packets still queued
 * for this socket's own client, never memory the kernel writes to.
 */
void kvod_zc_free(struct kvod_pacer *p, struct kvod_sock *sk)
{
	int i;

	if (!sk->zc)
		return;
	for (i = 0; i < 20 && sk->zc->first_id != sk->zc->next_id; i++) {
		kvod_zc_reap(p, sk);
		if (sk->zc->first_id != sk->zc->next_id)
			usleep(1000);
	}
	free(sk->zc->hdr);
	free(sk->zc);
	sk->zc = NULL;
}

/* --- sendmmsg, gso, gso_zerocopy ------------------------------------- */

void kvod_flush_mmsg(struct kvod_pacer *p, struct kvod_batch *b, int64_t now)
{
	struct kvod_sock *sk = b->sk;
	int flags = MSG_DONTWAIT | (sk->zerocopy ? MSG_ZEROCOPY : 0);
	unsigned int m = 0;

	while (m < b->nmsg) {
		struct kvod_run *run;
		int64_t t;
		int r, err;

		r = sendmmsg(sk->fd, b->msgs + m, b->nmsg - m, flags);
		/* stamped after the call: a call of a thousand messages takes
		 * milliseconds, and its last packet is only out at the end */
		t = kvod_clock_ns();
		p->st.syscalls++;
		if (r > 0) {
			if (sk->zerocopy)
				zc_commit(sk, b, m, (unsigned int)r);
			kvod_account(b, m, (unsigned int)r, t);
			m += r;
			continue;
		}
		err = r < 0 ? errno : EIO;
		if (err == EINTR)
			continue;
		run = &b->runs[b->msg_run[m]];
		if (sk->zerocopy)
			zc_failed(sk, err);
		kvod_send_failed(run->s, b, m, err, now);
		/*
		 * A full socket buffer stops every stream behind it too, and
		 * zero-copy headers must go out in ring order: both stop here
		 * and build again next round.
		 */
		if (sk->zerocopy || kvod_send_full(err)) {
			unsigned int i;

			for (i = b->msg_run[m] + 1; i < b->nrun; i++)
				b->runs[i].s->retry_at = run->s->retry_at ?
					run->s->retry_at : now;
			break;
		}
		m = run->msg + run->nmsg;
	}
	if (sk->zc)
		sk->zc->reserved = 0;
}

/* --- the research's per-packet paths -------------------------------- */

/* pread exactly @len bytes, or fail */
static int read_payload(struct kvod_pacer *p, int fd, void *buf, size_t len,
			uint64_t off)
{
	size_t got = 0;

	while (got < len) {
		ssize_t r = pread(fd, (char *)buf + got, len - got,
				  (off_t)(off + got));

		p->st.syscalls++;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno;
		if (r == 0)
			return ENODATA;	/* the file shrank under us */
		got += r;
	}
	return 0;
}

static int send_msg(struct kvod_pacer *p, struct kvod_stream *s,
		    struct iovec *iov, size_t niov, int flags)
{
	struct msghdr mh = {
		.msg_iov = iov,
		.msg_iovlen = niov,
	};
	ssize_t r;

	if (s->sk->shared) {
		mh.msg_name = &s->dest;
		mh.msg_namelen = s->dest_len;
	}
	do {
		r = sendmsg(s->sk->fd, &mh, flags | MSG_DONTWAIT);
		p->st.syscalls++;
	} while (r < 0 && errno == EINTR);
	return r < 0 ? errno : 0;
}

/* sendfile exactly @len bytes of @fd at @off to the socket */
static int send_file(struct kvod_pacer *p, struct kvod_stream *s, int fd,
		     uint64_t off, size_t len)
{
	off_t pos = (off_t)off;
	size_t sent = 0;

	while (sent < len) {
		ssize_t r = sendfile(s->sk->fd, fd, &pos, len - sent);

		p->st.syscalls++;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno;
		if (r == 0)
			return ENODATA;	/* the file shrank under us */
		sent += r;
	}
	return 0;
}

static int cork(struct kvod_pacer *p, struct kvod_stream *s, int on)
{
	p->st.syscalls++;
	if (setsockopt(s->sk->fd, SOL_UDP, UDP_CORK, &on, sizeof(on)))
		return errno;
	return 0;
}

/*
 * Throw away what is corked on the socket (rtp_sendfile's header, or
 * sendfile_more's MSG_MORE header) after a failure UDP did not see itself,
 * such as a sendfile() that read nothing from a file that shrank: UDP
 * flushes its pending frames when an append fails (udp_sendmsg() calls
 * udp_flush_pending_frames()), and an append longer than any datagram
 * fails in __ip_append_data() with EMSGSIZE before anything is copied.
 * Otherwise uncorking would send the header alone, or the next packet
 * would go out behind the stale header.
 */
static void discard_corked(struct kvod_pacer *p, struct kvod_stream *s,
			   struct kvod_batch *b)
{
	struct iovec iov = {
		.iov_base = b->readbuf,
		.iov_len = KVOD_MAX_DATAGRAM + KVOD_HDR_ROOM,
	};

	send_msg(p, s, &iov, 1, MSG_MORE);
}

/* One packet, message @m of @b, the strategy's way; 0 or an errno. */
static int send_one(struct kvod_pacer *p, struct kvod_batch *b,
		    struct kvod_stream *s, unsigned int m)
{
	struct msghdr *mh = &b->msgs[m].msg_hdr;
	unsigned int k = b->msg_first[m];
	struct iovec hdr = mh->msg_iov[0];
	size_t len = mh->msg_iovlen > 1 ? mh->msg_iov[1].iov_len : 0;
	int fd = b->src_blob[k] ? s->hint_fd : s->media_fd;
	struct iovec iov[2];
	int err, err2;

	switch (p->strategy) {
	case KVOD_STRATEGY_READ_SEND_RTP:
		/* one buffer: header, then the payload read right after it */
		memcpy(b->readbuf, hdr.iov_base, hdr.iov_len);
		err = read_payload(p, fd, b->readbuf + hdr.iov_len, len,
				   b->src_off[k]);
		if (err)
			return err;
		iov[0].iov_base = b->readbuf;
		iov[0].iov_len = hdr.iov_len + len;
		return send_msg(p, s, iov, 1, 0);
	case KVOD_STRATEGY_READ_WRITEV:
		err = read_payload(p, fd, b->readbuf, len, b->src_off[k]);
		if (err)
			return err;
		iov[0] = hdr;
		iov[1].iov_base = b->readbuf;
		iov[1].iov_len = len;
		return send_msg(p, s, iov, len ? 2 : 1, 0);
	case KVOD_STRATEGY_MMAP_WRITEV:
		return send_msg(p, s, mh->msg_iov, mh->msg_iovlen, 0);
	case KVOD_STRATEGY_RTP_SENDFILE:
		err = cork(p, s, 1);
		if (err)
			return err;
		err = send_msg(p, s, &hdr, 1, 0);
		if (!err && len)
			err = send_file(p, s, fd, b->src_off[k], len);
		if (err)
			discard_corked(p, s, b);
		err2 = cork(p, s, 0);
		return err ? err : err2;
	case KVOD_STRATEGY_SENDFILE_MORE:
		if (!len)
			return send_msg(p, s, &hdr, 1, 0);
		err = send_msg(p, s, &hdr, 1, MSG_MORE);
		if (err)
			return err;
		/* the last piece of a sendfile ends the datagram */
		err = send_file(p, s, fd, b->src_off[k], len);
		if (err)
			discard_corked(p, s, b);
		return err;
	}
	return EINVAL;
}

void kvod_flush_classic(struct kvod_pacer *p, struct kvod_batch *b,
			int64_t now)
{
	unsigned int m = 0;

	while (m < b->nmsg) {
		struct kvod_run *run = &b->runs[b->msg_run[m]];
		uint64_t before = p->st.syscalls;
		int err = send_one(p, b, run->s, m);
		int64_t t = kvod_clock_ns();

		/* every call made for the packet counts for its stream
		 * (kvod_account() counts one) */
		run->s->st.syscalls += p->st.syscalls - before - !err;
		if (!err) {
			kvod_account(b, m, 1, t);
			m++;
			continue;
		}
		kvod_send_failed(run->s, b, m, err, now);
		m = run->msg + run->nmsg;
	}
}
