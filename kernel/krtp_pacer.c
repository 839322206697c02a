// SPDX-License-Identifier: GPL-2.0
/*
 * The pacing workers: one kernel thread per online CPU, each owning a
 * share of the streams. A worker sleeps on an hrtimer until the earliest
 * packet due among its streams, then sends what is due, so a paced stream
 * needs no system call after PLAY.
 *
 * A packet is its hint record's RTP header (built here, with the record's
 * prefix bytes) and its payload pages, attached to the socket buffer by
 * reference:
 *  - krtpsendfile: pages of the media file (or of the hint file's blob
 *    area) straight from the page cache;
 *  - krtpmsend: pages of the caller's mapping, pinned with
 *    pin_user_pages_fast() in the caller's address space for the send;
 *    where that fails (a VM_IO or PFN mapping) the payload is copied once.
 * Since 6.5 header and pages go in one sendmsg(MSG_SPLICE_PAGES), the
 * header from a page fragment; before, the header is corked with MSG_MORE
 * and the pages follow with ->sendpage(). Either way packets due together
 * of one size go as one UDP GSO datagram (as many as the skb's fragments
 * take). The counters say how many payload bytes were attached and how
 * many copied.
 *
 * A worker holds its lock while it sends; commands take it between
 * packets. Everything here runs in the worker's thread.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bvec.h>
#include <linux/highmem.h>
#include <linux/kthread.h>
#include <linux/log2.h>
#include <linux/mm.h>
#include <linux/pagemap.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/shmem_fs.h>
#include <linux/skbuff.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/udp.h>
#include <linux/uio.h>
#include <net/sock.h>
#include <uapi/linux/magic.h>

#include "krtp_core.h"

/* how late an hrtimer may wake a worker, to batch wake-ups */
#define KRTP_TIMER_SLACK_NS	20000

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

static struct krtp_worker *krtp_workers;
static unsigned int krtp_nworkers;
/* serialises choosing a worker for a new stream with adding it there */
static DEFINE_MUTEX(krtp_assign_lock);

/* --- pages ------------------------------------------------------------- */

bool krtp_file_pageable(struct file *file)
{
	const struct address_space_operations *aops = file->f_mapping->a_ops;

	if (file_inode(file)->i_sb->s_magic == TMPFS_MAGIC)
		return true;
	return aops && aops->read_folio;
}

/* The page cache page at @index of @file, with a reference, read if need be. */
struct page *krtp_file_page(struct file *file, pgoff_t index)
{
	struct address_space *mapping = file->f_mapping;
	struct page *page;

	if (file_inode(file)->i_sb->s_magic == TMPFS_MAGIC)
		page = shmem_read_mapping_page_gfp(mapping, index,
						   mapping_gfp_mask(mapping));
	else
		page = read_mapping_page(mapping, index, file);
	if (!IS_ERR(page))
		atomic64_inc(&krtp_counters.pages_held);
	return page;
}

void krtp_put_page(struct page *page)
{
	put_page(page);
	atomic64_dec(&krtp_counters.pages_held);
}

void krtp_cursor_release(struct krtp_cursor *c)
{
	if (c->page) {
		krtp_put_page(c->page);
		c->page = NULL;
	}
}

/* --- records ----------------------------------------------------------- */

/* Record @k of @s, in CPU byte order; -ERANGE past the hint file's end. */
int krtp_read_record(struct krtp_stream *s, u64 k,
		     struct krtp_hint_record *r, struct krtp_cursor *c)
{
	loff_t pos = KRTP_HINT_HEADER_SIZE + k * KRTP_HINT_RECORD_SIZE;
	pgoff_t index = pos >> PAGE_SHIFT;

	if (pos + KRTP_HINT_RECORD_SIZE > i_size_read(file_inode(s->hint)))
		return -ERANGE;
	if (!c->page || c->index != index) {
		struct page *page = krtp_file_page(s->hint, index);

		if (IS_ERR(page))
			return PTR_ERR(page);
		krtp_cursor_release(c);
		c->page = page;
		c->index = index;
	}
	/* records never straddle a page: 64 + 32 k */
	memcpy_from_page((char *)r, c->page, offset_in_page(pos), sizeof(*r));
	r->offset = le64_to_cpu((__force __le64)r->offset);
	r->length = le32_to_cpu((__force __le32)r->length);
	r->rtp_ts = le32_to_cpu((__force __le32)r->rtp_ts);
	r->send_ns = le64_to_cpu((__force __le64)r->send_ns);
	r->flags = le16_to_cpu((__force __le16)r->flags);
	return 0;
}

u64 krtp_media_size(const struct krtp_stream *s)
{
	return s->msend ? s->media_len : i_size_read(file_inode(s->media));
}

/* Does record @r fit a datagram and lie inside what it points at? */
int krtp_record_bounds(const struct krtp_stream *s,
		       const struct krtp_hint_record *r)
{
	u64 size;

	if (r->prefix_len > KRTP_HINT_PREFIX_MAX ||
	    KRTP_RTP_HEADER + r->prefix_len + (u64)r->length >
	    KRTP_MAX_DATAGRAM)
		return -EBADMSG;
	size = r->flags & KRTP_REC_BLOB ? s->blob_size : krtp_media_size(s);
	if (r->offset > size || r->length > size - r->offset)
		return -ERANGE;
	return 0;
}

/* --- payload ----------------------------------------------------------- */

/* Release the payload pages w->bv[@from..@to): pinned or referenced. */
static void krtp_put_bvec(struct krtp_worker *w, unsigned int from,
			  unsigned int to)
{
	while (to > from) {
		struct page *page = w->bv[--to].bv_page;

		if (w->pinned[to]) {
			w->pinned[to] = false;
			unpin_user_page(page);
			atomic64_dec(&krtp_counters.pages_held);
		} else {
			krtp_put_page(page);
		}
	}
}

/*
 * The page at @index of @file with a reference for the caller; @c keeps
 * the last one, so consecutive packets of one page look it up once.
 */
static struct page *krtp_cursor_page(struct krtp_cursor *c, struct file *file,
				     pgoff_t index)
{
	if (!c->page || c->file != file || c->index != index) {
		struct page *page = krtp_file_page(file, index);

		if (IS_ERR(page))
			return page;
		krtp_cursor_release(c);
		c->page = page;
		c->file = file;
		c->index = index;
	}
	get_page(c->page);
	atomic64_inc(&krtp_counters.pages_held);
	return c->page;
}

/* Page-cache pages of @file for bytes @pos..+@len, into w->bv[*nbv..]. */
static int krtp_file_payload(struct krtp_worker *w, struct krtp_cursor *c,
			     struct file *file, u64 pos, u32 len,
			     unsigned int *nbv)
{
	unsigned int first = *nbv, n = *nbv;

	/* the file may have been truncated since the record was checked */
	if (pos + len > (u64)i_size_read(file_inode(file)))
		return -ERANGE;
	while (len) {
		unsigned int off = offset_in_page(pos);
		unsigned int chunk = min_t(u32, len, PAGE_SIZE - off);
		struct page *page = krtp_cursor_page(c, file, pos >> PAGE_SHIFT);

		if (IS_ERR(page)) {
			krtp_put_bvec(w, first, n);
			return PTR_ERR(page);
		}
		bvec_set_page(&w->bv[n++], page, chunk, off);
		pos += chunk;
		len -= chunk;
	}
	*nbv = n;
	return 0;
}

/* Pages of the krtpmsend mapping; -EFAULT where they cannot be had. */
static int krtp_user_payload(struct krtp_worker *w, struct krtp_stream *s,
			     u64 off, u32 len, unsigned int *nbv)
{
	unsigned long start = s->media_addr + off;
	unsigned int pgoff = offset_in_page(start);
	int npages = DIV_ROUND_UP(pgoff + len, PAGE_SIZE);
	struct page *pages[KRTP_MAX_BVEC];
	unsigned int n = *nbv;
	int got, i;

	if (!len)
		return 0;
	/* pinned while the send attaches them; the skb takes its own refs */
	got = pin_user_pages_fast(start & PAGE_MASK, npages, 0, pages);
	if (got < 0)
		return -EFAULT;
	if (got != npages) {
		unpin_user_pages(pages, got);
		return -EFAULT;
	}
	atomic64_add(got, &krtp_counters.pages_held);
	for (i = 0; i < npages; i++) {
		unsigned int chunk = min_t(u32, len, PAGE_SIZE - pgoff);

		w->pinned[n] = true;
		bvec_set_page(&w->bv[n++], pages[i], chunk, pgoff);
		len -= chunk;
		pgoff = 0;
	}
	*nbv = n;
	return 0;
}

/*
 * The payload of @r: pages into w->bv[1..*nbv), or (*copied) its bytes in
 * w->bounce. An error means the record cannot be sent at all.
 */
static int krtp_payload(struct krtp_worker *w, struct krtp_stream *s,
			struct krtp_cursor *c, const struct krtp_hint_record *r,
			unsigned int *nbv, bool *copied, bool may_copy)
{
	int err;

	if (r->flags & KRTP_REC_BLOB)
		return krtp_file_payload(w, c, s->hint,
					 s->blob_offset + r->offset,
					 r->length, nbv);
	if (!s->msend)
		return krtp_file_payload(w, c, s->media, r->offset, r->length,
					 nbv);
	err = krtp_user_payload(w, s, r->offset, r->length, nbv);
	if (err != -EFAULT || !may_copy)
		return err;
	if (copy_from_user(w->bounce,
			   (const void __user *)(s->media_addr + r->offset),
			   r->length))
		return -EFAULT;
	*copied = true;
	return 0;
}

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

static s64 krtp_due(const struct krtp_stream *s, u64 send_ns)
{
	/* unsigned: a hostile send_ns wraps instead of overflowing */
	return (s64)((u64)s->t0 + send_ns);
}

/* Give up on a packet: it uses its sequence number, as a loss would. */
static void krtp_drop(struct krtp_stream *s, int err)
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
static bool krtp_send(struct krtp_worker *w, struct krtp_stream *s,
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
static unsigned int krtp_pages(const struct krtp_stream *s,
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
static unsigned int krtp_gather(struct krtp_worker *w, struct krtp_stream *s,
				struct krtp_cursor *c,
				const struct krtp_hint_record *r, s64 due,
				s64 now)
{
	unsigned int size = KRTP_RTP_HEADER + r->prefix_len + r->length;
	unsigned int frags = 1 + krtp_pages(s, r), bytes = size, n = 1;

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
		frags += 1 + krtp_pages(s, q);
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
static int krtp_send_gso(struct krtp_worker *w, struct krtp_stream *s,
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
static int krtp_send_gso(struct krtp_worker *w, struct krtp_stream *s,
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

/* Send what @s has due; returns when it needs its worker next. */
static s64 krtp_pump(struct krtp_worker *w, struct krtp_stream *s, s64 now)
{
	struct krtp_cursor c = { }, payload = { };
	s64 wake = S64_MAX;
	int n;

	if (s->retry_at > now)
		return s->retry_at;
	s->retry_at = 0;
	if (s->msend) {
		/* the mapping's owner has exited: nothing left to send */
		if (!mmget_not_zero(s->mm)) {
			s->state = KRTP_STATE_ENDED;
			s->st.last_errno = EFAULT;
			return S64_MAX;
		}
		kthread_use_mm(s->mm);
	}
	for (n = 0; s->state == KRTP_STATE_PLAYING; n++) {
		struct krtp_hint_record r;
		s64 due;
		int err;

		if (s->next_record >= s->nrec) {
			s->state = KRTP_STATE_ENDED;
			break;
		}
		if (n == KRTP_ROUND_PACKETS) {
			wake = now;
			break;
		}
		err = krtp_read_record(s, s->next_record, &r, &c);
		if (err) {
			krtp_drop(s, err);
			continue;
		}
		due = s->unpaced ? now : krtp_due(s, r.send_ns);
		if (due > now + KRTP_LOOKAHEAD_NS) {
			wake = due;
			break;
		}
		err = krtp_record_bounds(s, &r);
		if (err) {
			krtp_drop(s, err);
			continue;
		}
		if (!(r.flags & KRTP_REC_BLOB) &&
		    r.offset + r.length > s->fill_limit) {
			s->state = KRTP_STATE_WAITING;
			s->blocked_due = due;
			break;
		}
		if (!s->no_gso) {
			unsigned int m = krtp_gather(w, s, &c, &r, due, now);
			int sent = m > 1 ? krtp_send_gso(w, s, &payload, m, now) : 0;

			if (sent < 0) {
				wake = s->retry_at;
				break;
			}
			if (sent > 0) {
				n += sent - 1;
				now = ktime_get_ns();
				continue;
			}
		}
		if (krtp_send(w, s, &payload, &r, due, now)) {
			wake = s->retry_at;
			break;
		}
		now = ktime_get_ns();
	}
	krtp_cursor_release(&c);
	krtp_cursor_release(&payload);
	if (s->msend) {
		kthread_unuse_mm(s->mm);
		mmput(s->mm);
	}
	return wake;
}

/* --- workers ----------------------------------------------------------- */

static int krtp_worker_fn(void *data)
{
	struct krtp_worker *w = data;

	while (!kthread_should_stop()) {
		struct krtp_stream *s;
		s64 wake = S64_MAX;

		mutex_lock(&w->lock);
		WRITE_ONCE(w->kicked, false);
		list_for_each_entry(s, &w->streams, node) {
			s64 t;

			if (s->state != KRTP_STATE_PLAYING)
				continue;
			t = krtp_pump(w, s, ktime_get_ns());
			if (t < wake)
				wake = t;
		}
		mutex_unlock(&w->lock);

		if (wake <= (s64)ktime_get_ns()) {
			cond_resched();
			continue;
		}
		set_current_state(TASK_INTERRUPTIBLE);
		if (READ_ONCE(w->kicked) || kthread_should_stop()) {
			__set_current_state(TASK_RUNNING);
			continue;
		}
		if (wake == S64_MAX) {
			schedule();
		} else {
			ktime_t expires = ns_to_ktime(wake);

			schedule_hrtimeout_range(&expires, KRTP_TIMER_SLACK_NS,
						 HRTIMER_MODE_ABS);
		}
		__set_current_state(TASK_RUNNING);
	}
	return 0;
}

/* A command changed what @w has due: make it look again. */
void krtp_worker_kick(struct krtp_worker *w)
{
	WRITE_ONCE(w->kicked, true);
	wake_up_process(w->task);
}

void krtp_worker_lock(struct krtp_worker *w)
{
	mutex_lock(&w->lock);
}

void krtp_worker_unlock(struct krtp_worker *w)
{
	mutex_unlock(&w->lock);
}

#ifdef KRTP_SPLICE_PAGES
/* one sendmsg() per packet: any worker may share a socket with another */
static struct krtp_worker *krtp_worker_of_sock(struct socket *sock)
{
	return NULL;
}
#else
/*
 * A corked packet takes several calls: two workers sending on one socket
 * would mix their packets. Streams that share a socket (sessions sharing
 * a server port) therefore share a worker.
 */
static struct krtp_worker *krtp_worker_of_sock(struct socket *sock)
{
	struct krtp_worker *found = NULL;
	struct krtp_stream *s;
	unsigned int i;

	for (i = 0; i < krtp_nworkers && !found; i++) {
		struct krtp_worker *w = &krtp_workers[i];

		mutex_lock(&w->lock);
		list_for_each_entry(s, &w->streams, node) {
			if (s->sock == sock) {
				found = w;
				break;
			}
		}
		mutex_unlock(&w->lock);
	}
	return found;
}
#endif

/* Give @s to the worker of its socket, else to the one with fewest streams. */
void krtp_worker_add(struct krtp_stream *s)
{
	struct krtp_worker *best;
	unsigned int i;

	mutex_lock(&krtp_assign_lock);
	best = krtp_worker_of_sock(s->sock);
	if (!best) {
		best = &krtp_workers[0];
		for (i = 1; i < krtp_nworkers; i++)
			if (READ_ONCE(krtp_workers[i].nstreams) <
			    READ_ONCE(best->nstreams))
				best = &krtp_workers[i];
	}
	mutex_lock(&best->lock);
	s->worker = best;
	list_add_tail(&s->node, &best->streams);
	WRITE_ONCE(best->nstreams, best->nstreams + 1);
	mutex_unlock(&best->lock);
	mutex_unlock(&krtp_assign_lock);
}

/* Take @s from its worker; waits for a round that may be sending it. */
void krtp_worker_remove(struct krtp_stream *s)
{
	struct krtp_worker *w = s->worker;

	mutex_lock(&w->lock);
	list_del_init(&s->node);
	WRITE_ONCE(w->nstreams, w->nstreams - 1);
	mutex_unlock(&w->lock);
}

unsigned int krtp_workers_count(void)
{
	return krtp_nworkers;
}

void krtp_workers_stop(void)
{
	unsigned int i;

	for (i = 0; i < krtp_nworkers; i++) {
		struct krtp_worker *w = &krtp_workers[i];

		kthread_stop(w->task);
		WARN_ON(!list_empty(&w->streams));
#ifdef KRTP_SPLICE_PAGES
		page_frag_cache_drain(&w->frag);
#endif
		kvfree(w->bounce);
		mutex_destroy(&w->lock);
	}
	kfree(krtp_workers);
	krtp_workers = NULL;
	krtp_nworkers = 0;
}

int krtp_workers_start(void)
{
	unsigned int i, n = num_online_cpus();
	int err;

	krtp_workers = kcalloc(n, sizeof(*krtp_workers), GFP_KERNEL);
	if (!krtp_workers)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		struct krtp_worker *w = &krtp_workers[i];

		mutex_init(&w->lock);
		INIT_LIST_HEAD(&w->streams);
		w->bounce = kvmalloc(KRTP_MAX_DATAGRAM, GFP_KERNEL);
		if (!w->bounce) {
			err = -ENOMEM;
			goto err_worker;
		}
		w->task = kthread_run(krtp_worker_fn, w, "krtp/%u", i);
		if (IS_ERR(w->task)) {
			err = PTR_ERR(w->task);
			goto err_bounce;
		}
		krtp_nworkers++;
	}
	return 0;

err_bounce:
	kvfree(krtp_workers[i].bounce);
err_worker:
	mutex_destroy(&krtp_workers[i].lock);
	krtp_workers_stop();
	return err;
}
