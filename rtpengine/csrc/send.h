/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The send strategies (send.c, uring.c): what a pacer does with a batch
 * it laid out, and their accounting of what went out and what failed.
 */
#ifndef KVOD_SEND_H
#define KVOD_SEND_H

#include "stream.h"

bool kvod_is_mmsg_strategy(int strategy);
void kvod_flush_classic(struct kvod_pacer *p, struct kvod_batch *b,
			int64_t now);
void kvod_flush_mmsg(struct kvod_pacer *p, struct kvod_batch *b,
		     int64_t now);
int kvod_zc_setup(struct kvod_sock *sk);
void kvod_zc_reap(struct kvod_pacer *p, struct kvod_sock *sk);
void kvod_zc_free(struct kvod_pacer *p, struct kvod_sock *sk);

/* send.c: the accounting every flush does */
void kvod_account(struct kvod_batch *b, unsigned int m, unsigned int n,
		  int64_t t_send);
void kvod_send_failed(struct kvod_stream *s, struct kvod_batch *b,
		      unsigned int m, int err, int64_t now);
bool kvod_send_full(int err);
void kvod_stream_drop(struct kvod_stream *s, uint64_t n, int err);

/* uring.c */
int kvod_uring_probe(void);
int kvod_uring_new(struct kvod_uring **u);
void kvod_uring_free(struct kvod_uring *u);
void kvod_flush_uring(struct kvod_pacer *p, struct kvod_batch *b,
		      int64_t now);

#endif
