// SPDX-License-Identifier: GPL-2.0
/*
 * Sending: a packet is its hint record's RTP header (built here, with the
 * record's prefix bytes) and its payload pages, attached to the socket
 * buffer by reference. Since 6.5 header and pages go in one
 * sendmsg(MSG_SPLICE_PAGES), the header from a page fragment; before, the
 * header is corked with MSG_MORE and the pages follow with ->sendpage().
 * Either way packets due together of one size go as one UDP GSO datagram
 * (as many as the skb's fragments take). The counters say how many
 * payload bytes were attached and how many copied.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bvec.h>
#include <linux/log2.h>
#include <linux/mm.h>
#include <linux/skbuff.h>
#include <linux/socket.h>
#include <linux/udp.h>
#include <linux/uio.h>
#include <net/sock.h>

#include "krtp_core.h"

/* --- sending ----------------------------------------------------------- */

static void krtp_put_header(u8 *h, const struct krtp_stream *s,
			    const struct krtp_hint_record *r, u16 seq, u32 ts)
{
	h[0] = 0x80;		/* version 2, no padding, extension or CSRC */
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
	memcpy(h + KRTP_RTP_HEADER, r->prefix, r->prefix_len);
}

static int krtp_xmit_copy(struct krtp_worker *w, struct krtp_stream *s,
			  u8 *hdr, unsigned int hlen, u32 len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT };
	struct kvec iov[2] = {
		{ .iov_base = hdr, .iov_len = hlen },
		{ .iov_base = w->bounce, .iov_len = len },
	};
	int rc;

	s->st.send_calls++;
	rc = kernel_sendmsg(s->sock, &msg, iov, len ? 2 : 1, hlen + len);
	return rc < 0 ? rc : 0;
}

#ifdef KRTP_SPLICE_PAGES
/*
 * Room for an RTP header in a page fragment. Aligned, so that it never
 * straddles two pages: that would cost a second skb fragment.
 */
static u8 *krtp_header_alloc(struct krtp_worker *w, unsigned int hlen)
{
	return page_frag_alloc_align(&w->frag, hlen, GFP_KERNEL,
				     roundup_pow_of_two(KRTP_HDR_ROOM));
}

/* Does the stack copy instead of attaching? Only a device without SG. */
static bool krtp_xmit_copies(const struct krtp_stream *s)
{
	return false;
}

static int krtp_xmit_pages(struct krtp_worker *w, struct krtp_stream *s,
			   const u8 *hdr, unsigned int hlen,
			   unsigned int nbv, u32 len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT | MSG_SPLICE_PAGES };
	u8 *h;
	int rc;

	/* the socket buffer keeps a reference on the header's page */
	h = krtp_header_alloc(w, hlen);
	if (!h)
		return -ENOBUFS;
	memcpy(h, hdr, hlen);
	bvec_set_virt(&w->bv[0], h, hlen);
	iov_iter_bvec(&msg.msg_iter, ITER_SOURCE, w->bv, nbv, hlen + len);
	s->st.send_calls++;
	rc = sock_sendmsg(s->sock, &msg);
	page_frag_free(h);
	return rc < 0 ? rc : 0;
}
#else
/* IPv6 sockets of 6.1 have no ->sendpage: sock_no_sendpage() copies */
static bool krtp_xmit_copies(const struct krtp_stream *s)
{
	return s->sock->ops->sendpage == sock_no_sendpage;
}

static int krtp_xmit_pages(struct krtp_worker *w, struct krtp_stream *s,
			   const u8 *hdr, unsigned int hlen,
			   unsigned int nbv, u32 len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT };
	struct kvec iov = { .iov_base = (void *)hdr, .iov_len = hlen };
	unsigned int i;
	int rc;

	/* corked: the pages below join the header in one datagram */
	if (nbv > 1)
		msg.msg_flags |= MSG_MORE;
	s->st.send_calls++;
	rc = kernel_sendmsg(s->sock, &msg, &iov, 1, hlen);
	if (rc < 0)
		return rc;
	for (i = 1; i < nbv; i++) {
		int flags = MSG_DONTWAIT | (i + 1 < nbv ? MSG_MORE : 0);

		s->st.send_calls++;
		/* on failure UDP drops the corked datagram itself */
		rc = kernel_sendpage(s->sock, w->bv[i].bv_page,
				     w->bv[i].bv_offset, w->bv[i].bv_len,
				     flags);
		if (rc < 0)
			return rc;
	}
	return 0;
}
#endif

s64 krtp_due(const struct krtp_stream *s, u64 send_ns)
{
	/* unsigned: a hostile send_ns wraps instead of overflowing */
	return (s64)((u64)s->t0 + send_ns);
}

/* Give up on a packet: it uses its sequence number, as a loss would. */
void krtp_drop(struct krtp_stream *s, int err)
{
	s->next_record++;
	s->seq_count++;
	s->st.packets_dropped++;
	s->st.last_errno = -err;
	s->err_pending = false;
	atomic64_inc(&krtp_counters.packets_dropped);
}

static void krtp_account(struct krtp_stream *s,
			 const struct krtp_hint_record *r, u16 seq, u32 ts,
			 s64 due, s64 now, bool copied)
{
	s64 late = s->unpaced ? 0 : now - due;

	if (late > 1000000)
		s->st.late_1ms++;
	if (late > 5000000)
		s->st.late_5ms++;
	if (late > s->st.max_late_ns)
		s->st.max_late_ns = late;
	s->st.packets_sent++;
	s->st.payload_octets += r->prefix_len + r->length;
	if (copied) {
		s->st.copied_octets += r->length;
		atomic64_add(r->length, &krtp_counters.copied_octets);
	} else {
		s->st.spliced_octets += r->length;
		atomic64_add(r->length, &krtp_counters.spliced_octets);
	}
	s->st.last_seq = seq;
	s->st.last_rtp_ts = ts;
	s->st.last_due_ns = due;
	s->next_record++;
	s->seq_count++;
	s->err_pending = false;
	atomic64_inc(&krtp_counters.packets_sent);
}

/* A send failed: retry later (returns true), once more, or drop. */
static bool krtp_send_failed(struct krtp_stream *s, int err, s64 now)
{
	s->st.send_errors++;
	s->st.last_errno = -err;
	if (err == -EAGAIN || err == -ENOBUFS || err == -ENOMEM) {
		/* the same packet again later: nothing is skipped */
		s->retry_at = now + KRTP_RETRY_NS;
		return true;
	}
	/*
	 * UDP reports an ICMP error (ECONNREFUSED from a closed client port)
	 * on the next send, which then sends nothing: try once more before
	 * deciding that this packet itself cannot be sent.
	 */
	if (!s->err_pending) {
		s->err_pending = true;
		return false;
	}
	krtp_drop(s, err);
	return false;
}

/* Send record @r now; returns true if the stream must wait to retry. */
bool krtp_send(struct krtp_worker *w, struct krtp_stream *s,
	       struct krtp_cursor *c, const struct krtp_hint_record *r,
	       s64 due, s64 now)
{
	u16 seq = (u16)(s->seq0 + s->seq_count);
	u32 ts = s->ts0 + r->rtp_ts;
	unsigned int hlen = KRTP_RTP_HEADER + r->prefix_len;
	unsigned int nbv = 1;
	bool copied = false;
	u8 hdr[KRTP_HDR_ROOM];
	int err;

	err = krtp_payload(w, s, c, r, &nbv, &copied, true);
	if (err) {
		krtp_drop(s, err);
		return false;
	}
	krtp_put_header(hdr, s, r, seq, ts);
	if (copied)
		err = krtp_xmit_copy(w, s, hdr, hlen, r->length);
	else
		err = krtp_xmit_pages(w, s, hdr, hlen, nbv, r->length);
	krtp_put_bvec(w, 1, nbv);
	if (err)
		return krtp_send_failed(s, err, now);
	krtp_account(s, r, seq, ts, due, now, copied || krtp_xmit_copies(s));
	return false;
}

/* Pages the payload of @r spans: each is one fragment of the skb. */
static unsigned int krtp_payload_pages(const struct krtp_stream *s,
				       const struct krtp_hint_record *r)
{
	u64 base = 0;

	if (!r->length)
		return 0;
	if (r->flags & KRTP_REC_BLOB)
		base = s->blob_offset;
	else if (s->msend)
		base = s->media_addr;
	return DIV_ROUND_UP(offset_in_page(base + r->offset) + r->length,
			    PAGE_SIZE);
}

/*
 * How many records from s->next_record (@r, due at @due, and those after
 * it that are due by now, of its size, the last maybe shorter) fit one
 * UDP GSO datagram; they land in w->rec and w->due.
 */
unsigned int krtp_gather(struct krtp_worker *w, struct krtp_stream *s,
			 struct krtp_cursor *c,
			 const struct krtp_hint_record *r, s64 due,
			 s64 now)
{
	unsigned int size = KRTP_RTP_HEADER + r->prefix_len + r->length;
	unsigned int frags = 1 + krtp_payload_pages(s, r), bytes = size, n = 1;

	w->rec[0] = *r;
	w->due[0] = due;
	while (n < KRTP_GSO_SEGS && s->next_record + n < s->nrec) {
		struct krtp_hint_record *q = &w->rec[n];
		unsigned int qsize;

		if (krtp_read_record(s, s->next_record + n, q, c) ||
		    krtp_record_bounds(s, q))
			break;
		due = s->unpaced ? now : krtp_due(s, q->send_ns);
		if (due > now + KRTP_LOOKAHEAD_NS)
			break;
		if (!(q->flags & KRTP_REC_BLOB) &&
		    q->offset + q->length > s->fill_limit)
			break;
		qsize = KRTP_RTP_HEADER + q->prefix_len + q->length;
		frags += 1 + krtp_payload_pages(s, q);
		if (qsize > size || bytes + qsize > KRTP_GSO_BYTES ||
		    frags > MAX_SKB_FRAGS)
			break;
		w->due[n++] = due;
		bytes += qsize;
		/* only the last segment may be shorter */
		if (qsize < size)
			break;
	}
	return n;
}

/* the control message that makes one datagram a UDP GSO batch */
union krtp_gso_cmsg {
	struct cmsghdr cm;
	u8 buf[CMSG_SPACE(sizeof(u16))];
};

static void krtp_gso_cmsg(struct msghdr *msg, union krtp_gso_cmsg *ctl,
			  unsigned int size)
{
	memset(ctl, 0, sizeof(*ctl));
	ctl->cm.cmsg_len = CMSG_LEN(sizeof(u16));
	ctl->cm.cmsg_level = SOL_UDP;
	ctl->cm.cmsg_type = UDP_SEGMENT;
	*(u16 *)CMSG_DATA(&ctl->cm) = size;
	msg->msg_control = ctl;
	msg->msg_controllen = sizeof(*ctl);
}

/*
 * A batch failed to send: retry later (-1) or go on (0), one packet a call
 * if the error says the path takes no UDP GSO (no checksum, IPsec, MTU).
 * Other errors (an ICMP error reported on this send) are a packet's.
 */
static int krtp_gso_failed(struct krtp_stream *s, int err, s64 now)
{
	if (err != -EINVAL && err != -EIO && err != -EMSGSIZE &&
	    err != -EOPNOTSUPP && err != -ENOPROTOOPT)
		return krtp_send_failed(s, err, now) ? -1 : 0;
	s->no_gso = true;
	s->st.flags |= KRTP_STATS_NO_GSO;
	s->st.send_errors++;
	s->st.last_errno = -err;
	return 0;
}

static void krtp_gso_account(struct krtp_stream *s, unsigned int n, s64 now,
			     bool copied)
{
	struct krtp_worker *w = s->worker;
	unsigned int i;

	for (i = 0; i < n; i++)
		krtp_account(s, &w->rec[i], (u16)(s->seq0 + s->seq_count),
			     s->ts0 + w->rec[i].rtp_ts, w->due[i], now, copied);
}

#ifdef KRTP_SPLICE_PAGES
/*
 * Send w->rec[0..@n) as one UDP GSO datagram: headers from page
 * fragments, payload pages, all attached by reference. Returns the packets
 * sent; 0 if nothing was (the caller sends the first record alone); -1 if
 * the stream must wait to retry.
 */
int krtp_send_gso(struct krtp_worker *w, struct krtp_stream *s,
		  struct krtp_cursor *c, unsigned int n, s64 now)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT | MSG_SPLICE_PAGES };
	union krtp_gso_cmsg ctl;
	unsigned int size = KRTP_RTP_HEADER + w->rec[0].prefix_len +
			    w->rec[0].length;
	unsigned int head[KRTP_GSO_SEGS], i, nbv = 0;
	size_t bytes = 0;
	int rc = 0;

	for (i = 0; i < n; i++) {
		struct krtp_hint_record *r = &w->rec[i];
		unsigned int hlen = KRTP_RTP_HEADER + r->prefix_len;
		unsigned int at = nbv + 1;
		bool copied = false;
		u8 *h;

		h = krtp_header_alloc(w, hlen);
		if (!h)
			break;
		/* pages only: a payload that must be copied ends the batch */
		if (krtp_payload(w, s, c, r, &at, &copied, false)) {
			page_frag_free(h);
			break;
		}
		krtp_put_header(h, s, r, (u16)(s->seq0 + s->seq_count + i),
				s->ts0 + r->rtp_ts);
		bvec_set_virt(&w->bv[nbv], h, hlen);
		head[i] = nbv;
		nbv = at;
		bytes += hlen + r->length;
	}
	n = i;
	if (n >= 2) {
		krtp_gso_cmsg(&msg, &ctl, size);
		iov_iter_bvec(&msg.msg_iter, ITER_SOURCE, w->bv, nbv, bytes);
		s->st.send_calls++;
		rc = sock_sendmsg(s->sock, &msg);
	}
	for (i = 0; i < n; i++) {
		unsigned int end = i + 1 < n ? head[i + 1] : nbv;

		page_frag_free(bvec_virt(&w->bv[head[i]]));
		krtp_put_bvec(w, head[i] + 1, end);
	}
	if (n < 2)
		return 0;
	if (rc < 0)
		return krtp_gso_failed(s, rc, now);
	krtp_gso_account(s, n, now, false);
	return n;
}
#else
/*
 * Send w->rec[0..@n) as one UDP GSO datagram, corked: each header (the
 * first with UDP_SEGMENT) then its payload pages with ->sendpage(), the
 * last call without MSG_MORE. Returns as the 6.5+ version does.
 */
int krtp_send_gso(struct krtp_worker *w, struct krtp_stream *s,
		  struct krtp_cursor *c, unsigned int n, s64 now)
{
	unsigned int size = KRTP_RTP_HEADER + w->rec[0].prefix_len +
			    w->rec[0].length;
	unsigned int start[KRTP_GSO_SEGS + 1], i, j, nbv = 0;
	union krtp_gso_cmsg ctl;
	int rc = 0;

	/* every page first: a failure must not leave a corked datagram */
	for (i = 0; i < n; i++) {
		bool copied = false;

		start[i] = nbv;
		if (krtp_payload(w, s, c, &w->rec[i], &nbv, &copied, false))
			break;
		krtp_put_header(w->hdr[i], s, &w->rec[i],
				(u16)(s->seq0 + s->seq_count + i),
				s->ts0 + w->rec[i].rtp_ts);
	}
	start[i] = nbv;
	n = i;
	for (i = 0; n >= 2 && i < n && rc >= 0; i++) {
		struct msghdr msg = { .msg_flags = MSG_DONTWAIT | MSG_MORE };
		struct kvec iov = {
			.iov_base = w->hdr[i],
			.iov_len = KRTP_RTP_HEADER + w->rec[i].prefix_len,
		};

		if (i == 0)
			krtp_gso_cmsg(&msg, &ctl, size);
		if (i == n - 1 && start[i] == start[i + 1])
			msg.msg_flags &= ~MSG_MORE;
		s->st.send_calls++;
		rc = kernel_sendmsg(s->sock, &msg, &iov, 1, iov.iov_len);
		for (j = start[i]; j < start[i + 1] && rc >= 0; j++) {
			int flags = MSG_DONTWAIT;

			if (i < n - 1 || j < start[i + 1] - 1)
				flags |= MSG_MORE;
			s->st.send_calls++;
			/* on failure UDP drops the corked datagram itself */
			rc = kernel_sendpage(s->sock, w->bv[j].bv_page,
					     w->bv[j].bv_offset,
					     w->bv[j].bv_len, flags);
		}
	}
	krtp_put_bvec(w, 0, nbv);
	if (n < 2)
		return 0;
	if (rc < 0)
		return krtp_gso_failed(s, rc, now);
	krtp_gso_account(s, n, now, krtp_xmit_copies(s));
	return n;
}
#endif
