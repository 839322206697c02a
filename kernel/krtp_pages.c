// SPDX-License-Identifier: GPL-2.0
/*
 * Where packets come from: hint records and payload pages.
 *  - krtpsendfile: pages of the media file (or of the hint file's blob
 *    area) straight from the page cache;
 *  - krtpmsend: pages of the caller's mapping, pinned with
 *    pin_user_pages_fast() in the caller's address space for the send;
 *    where that fails (a VM_IO or PFN mapping) the payload is copied once.
 * Files may change under an open stream: every read checks the size again.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bvec.h>
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/pagemap.h>
#include <linux/shmem_fs.h>
#include <linux/uaccess.h>
#include <uapi/linux/magic.h>

#include "krtp_core.h"

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
void krtp_put_bvec(struct krtp_worker *w, unsigned int from,
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
int krtp_payload(struct krtp_worker *w, struct krtp_stream *s,
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
