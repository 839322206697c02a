// SPDX-License-Identifier: GPL-2.0
/*
 * uring_gso: the gso strategy's messages submitted through io_uring
 * (liburing), one IORING_OP_SENDMSG each, the whole batch in one
 * io_uring_enter(). Unlike sendmmsg, one submission may carry messages for
 * many sockets, so per-session ports batch across streams too.
 *
 * A stream's messages are linked (IOSQE_IO_LINK): if one fails, the rest
 * of that stream's run is cancelled, so nothing goes out after a gap.
 * MSG_DONTWAIT makes a full socket buffer fail fast (-EAGAIN) instead of
 * parking the request in the kernel.
 */
#include <errno.h>
#include <liburing.h>
#include <sched.h>
#include <stdlib.h>

#include "clock.h"
#include "send.h"

struct kvod_uring {
	struct io_uring ring;
	int32_t res[KVOD_MAX_MSGS];
};

/* 0 if io_uring works here and takes IORING_OP_SENDMSG, else -errno */
int kvod_uring_probe(void)
{
	struct io_uring_probe *probe;
	struct io_uring ring;
	int err, ok;

	err = io_uring_queue_init(4, &ring, 0);
	if (err)
		return err;
	probe = io_uring_get_probe_ring(&ring);
	ok = probe && io_uring_opcode_supported(probe, IORING_OP_SENDMSG);
	io_uring_free_probe(probe);
	io_uring_queue_exit(&ring);
	return ok ? 0 : -EOPNOTSUPP;
}

int kvod_uring_new(struct kvod_uring **u)
{
	struct kvod_uring *r = calloc(1, sizeof(*r));
	int err;

	if (!r)
		return -ENOMEM;
	/* SUBMIT_ALL: an SQE that fails before issue does not stop the
	 * ones after it (io_submit_sqes()); kernels before 5.18 refuse it */
	err = io_uring_queue_init(KVOD_MAX_MSGS, &r->ring,
				  IORING_SETUP_SUBMIT_ALL);
	if (err == -EINVAL)
		err = io_uring_queue_init(KVOD_MAX_MSGS, &r->ring, 0);
	if (err) {
		free(r);
		return err;
	}
	*u = r;
	return 0;
}

void kvod_uring_free(struct kvod_uring *u)
{
	if (!u)
		return;
	io_uring_queue_exit(&u->ring);
	free(u);
}

void kvod_flush_uring(struct kvod_pacer *p, struct kvod_batch *b,
		      int64_t now)
{
	struct kvod_uring *u = p->uring;
	struct io_uring_cqe *cqe;
	unsigned int m, i, seen = 0, head;
	int64_t t;
	int r;

	for (m = 0; m < b->nmsg; m++) {
		struct kvod_run *run = &b->runs[b->msg_run[m]];
		struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);

		/* the ring holds KVOD_MAX_MSGS entries: never NULL here */
		io_uring_prep_sendmsg(sqe, run->s->sk->fd, &b->msgs[m].msg_hdr,
				      MSG_DONTWAIT);
		io_uring_sqe_set_data64(sqe, m);
		if (m + 1 < run->msg + run->nmsg)
			sqe->flags |= IOSQE_IO_LINK;
		u->res[m] = -ECANCELED;
	}
	/*
	 * Every SQE gets exactly one CQE, and the batch (the msghdrs the SQEs
	 * point to) is reused as soon as this returns: wait for all of them.
	 * io_uring_enter() returns without waiting when it consumed fewer SQEs
	 * than asked (io_submit_sqes() stops at an SQE that fails before issue
	 * unless IORING_SETUP_SUBMIT_ALL, or when it cannot allocate a
	 * request); the rest would stay in the SQ ring and go out with the
	 * next batch, under this batch's indices.
	 */
	while (seen < b->nmsg) {
		unsigned int n = 0;

		r = io_uring_submit_and_wait(&u->ring, b->nmsg - seen);
		p->st.syscalls++;
		io_uring_for_each_cqe(&u->ring, head, cqe) {
			uint64_t idx = io_uring_cqe_get_data64(cqe);

			if (idx < b->nmsg)
				u->res[idx] = cqe->res;
			n++;
		}
		io_uring_cq_advance(&u->ring, n);
		seen += n;
		if (r >= 0 || n || r == -EINTR)
			continue;
		if (r == -EAGAIN || r == -EBUSY || r == -ENOMEM) {
			sched_yield();	/* no request could be had: try again */
			continue;
		}
		if (io_uring_sq_ready(&u->ring) < b->nmsg - seen)
			continue;	/* some are in flight: wait for them */
		/* the ring itself is broken: every run sees the error */
		for (i = 0; i < b->nrun; i++)
			kvod_send_failed(b->runs[i].s, b, b->runs[i].msg, -r,
					 now);
		return;
	}
	t = kvod_clock_ns();	/* after the sends, as in send.c */
	for (i = 0; i < b->nrun; i++) {
		struct kvod_run *run = &b->runs[i];
		unsigned int ok = 0;

		while (ok < run->nmsg && u->res[run->msg + ok] >= 0)
			ok++;
		if (ok)
			kvod_account(b, run->msg, ok, t);
		if (ok < run->nmsg) {
			int err = -u->res[run->msg + ok];

			kvod_send_failed(run->s, b, run->msg + ok,
					 err == ECANCELED ? EAGAIN : err, now);
		}
	}
}
