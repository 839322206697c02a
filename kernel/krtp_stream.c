// SPDX-License-Identifier: GPL-2.0
/*
 * Opening a krtp stream. Everything the caller hands in is untrusted: the
 * socket must be a connected UDP socket, the media and hint files regular
 * files whose pages the page cache can give us, the krtpmsend mapping a
 * range of the caller's address space, and every hint record must lie
 * inside what it points at. The pacer checks each record again when it
 * sends it, because the files may change under an open stream.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/file.h>
#include <linux/in.h>
#include <linux/mm.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/socket.h>
#include <linux/uaccess.h>
#include <net/sock.h>

#include "krtp_core.h"

static int krtp_take_socket(struct krtp_stream *s, int fd)
{
	struct socket *sock;
	struct file *file;
	struct sock *sk;
	int err;

	file = fget(fd);
	if (!file)
		return -EBADF;
	sock = sock_from_file(file);
	if (!sock) {
		err = -ENOTSOCK;
		goto err_put;
	}
	sk = sock->sk;
	if (!sk || sock->type != SOCK_DGRAM ||
	    sk->sk_protocol != IPPROTO_UDP ||
	    (sk->sk_family != AF_INET && sk->sk_family != AF_INET6)) {
		err = -EPROTOTYPE;
		goto err_put;
	}
	/* connect() on a UDP socket is what sets TCP_ESTABLISHED */
	if (READ_ONCE(sk->sk_state) != TCP_ESTABLISHED) {
		err = -ENOTCONN;
		goto err_put;
	}
	s->sock_file = file;
	s->sock = sock;
	return 0;

err_put:
	fput(file);
	return err;
}

static int krtp_take_file(int fd, struct file **out)
{
	struct file *file;

	file = fget(fd);
	if (!file)
		return -EBADF;
	/* a regular file also keeps /dev/krtp itself out: no reference loop */
	if (!S_ISREG(file_inode(file)->i_mode) ||
	    !(file->f_mode & FMODE_READ)) {
		fput(file);
		return -EINVAL;
	}
	if (!krtp_file_pageable(file)) {
		fput(file);
		return -EOPNOTSUPP;
	}
	*out = file;
	return 0;
}

static int krtp_take_mapping(struct krtp_stream *s, u64 addr, u64 len)
{
	void __user *uaddr = u64_to_user_ptr(addr);

	if (addr + len < addr || addr > ULONG_MAX || len > ULONG_MAX)
		return -EINVAL;
	if (!access_ok(uaddr, len))
		return -EFAULT;
	if (!current->mm)
		return -EINVAL;
	mmgrab(current->mm);
	s->mm = current->mm;
	s->media_addr = (unsigned long)addr;
	s->media_len = len;
	return 0;
}

static int krtp_check_header(struct krtp_stream *s, int want_pt)
{
	struct krtp_hint_header h;
	loff_t size = i_size_read(file_inode(s->hint));
	loff_t pos = 0;
	u64 count, room, blob_off, blob_size;
	ssize_t n;

	if (size < (loff_t)sizeof(h))
		return -EBADMSG;
	n = kernel_read(s->hint, &h, sizeof(h), &pos);
	if (n < 0)
		return n;
	if (n != sizeof(h))
		return -EBADMSG;
	if (memcmp(h.magic, KRTP_HINT_MAGIC, sizeof(h.magic)) ||
	    le16_to_cpu(h.version) != KRTP_HINT_VERSION ||
	    le16_to_cpu(h.header_size) != KRTP_HINT_HEADER_SIZE ||
	    le16_to_cpu(h.record_size) != KRTP_HINT_RECORD_SIZE)
		return -EBADMSG;
	count = le64_to_cpu(h.record_count);
	room = (size - KRTP_HINT_HEADER_SIZE) / KRTP_HINT_RECORD_SIZE;
	if (count > room || count >= KRTP_MAX_RECORDS)
		return -EBADMSG;
	blob_off = le64_to_cpu(h.blob_offset);
	blob_size = le64_to_cpu(h.blob_size);
	if (blob_off > size || blob_size > size - blob_off)
		return -EBADMSG;
	if (want_pt == KRTP_PT_FROM_HINT)
		want_pt = h.payload_type;
	if (want_pt < 0 || want_pt > 127)
		return -EINVAL;
	s->nrec = count;
	s->blob_offset = blob_off;
	s->blob_size = blob_size;
	s->pt = want_pt;
	return 0;
}

/* Every record, once, as the user-space engine does at open. */
static int krtp_check_records(struct krtp_stream *s)
{
	struct krtp_cursor c = { };
	struct krtp_hint_record r;
	int err = 0;
	u64 k;

	for (k = 0; k < s->nrec; k++) {
		err = krtp_read_record(s, k, &r, &c);
		if (!err)
			err = krtp_record_bounds(s, &r);
		if (err)
			break;
		if (!(k & 1023)) {
			if (fatal_signal_pending(current)) {
				err = -EINTR;
				break;
			}
			cond_resched();
		}
	}
	krtp_cursor_release(&c);
	return err;
}

void krtp_stream_free(struct krtp_stream *s)
{
	if (s->mm)
		mmdrop(s->mm);
	if (s->hint)
		fput(s->hint);
	if (s->media)
		fput(s->media);
	if (s->sock_file)
		fput(s->sock_file);
	kfree(s);
}

struct krtp_stream *krtp_stream_new(const struct krtp_open *p)
{
	struct krtp_stream *s;
	int err;

	if (p->flags & ~KRTP_OPEN_MSEND)
		return ERR_PTR(-EINVAL);
	if (p->payload_type != KRTP_PT_FROM_HINT &&
	    (p->payload_type < 0 || p->payload_type > 127))
		return ERR_PTR(-EINVAL);
	if ((p->flags & KRTP_OPEN_MSEND) && p->media_fd != -1)
		return ERR_PTR(-EINVAL);

	s = kzalloc(sizeof(*s), GFP_KERNEL_ACCOUNT);
	if (!s)
		return ERR_PTR(-ENOMEM);
	INIT_LIST_HEAD(&s->node);
	err = krtp_take_socket(s, p->sock_fd);
	if (err)
		goto err_free;
	if (p->flags & KRTP_OPEN_MSEND) {
		s->msend = true;
		err = krtp_take_mapping(s, p->media_addr, p->media_len);
	} else {
		err = krtp_take_file(p->media_fd, &s->media);
	}
	if (err)
		goto err_free;
	err = krtp_take_file(p->hint_fd, &s->hint);
	if (err)
		goto err_free;
	err = krtp_check_header(s, p->payload_type);
	if (err)
		goto err_free;
	err = krtp_check_records(s);
	if (err)
		goto err_free;

	s->ssrc = p->ssrc;
	s->ts0 = p->ts0;
	s->seq0 = p->seq0;
	s->state = KRTP_STATE_IDLE;
	s->fill_limit = krtp_media_size(s);
	s->st.mode = s->msend ? KRTP_MODE_MSEND : KRTP_MODE_SENDFILE;
	return s;

err_free:
	krtp_stream_free(s);
	return ERR_PTR(err);
}
