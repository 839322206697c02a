/* SPDX-License-Identifier: GPL-2.0 */
/* RTP interleaved on the RTSP connection (tcp.c): framing's system calls,
 * the out-queue and the slow-reader policy. */
#ifndef KVOD_TCP_H
#define KVOD_TCP_H

#include "stream.h"

int kvod_tcp_sock_init(struct kvod_sock *sk, int64_t stall_ns);
void kvod_tcp_sock_free(struct kvod_pacer *p, struct kvod_sock *sk);
bool kvod_tcp_drain(struct kvod_pacer *p, struct kvod_sock *sk, int64_t now);
int64_t kvod_tcp_drain_pending(struct kvod_pacer *p, int64_t now);
bool kvod_tcp_ready(struct kvod_pacer *p, struct kvod_sock *sk, int64_t now);
int64_t kvod_tcp_retry_at(const struct kvod_sock *sk, int64_t now);
void kvod_flush_tcp(struct kvod_pacer *p, struct kvod_batch *b, int64_t now);
void kvod_tcp_catch_up(struct kvod_stream *s, int64_t now);
int kvod_tcp_write(struct kvod_pacer *p, struct kvod_sock *sk,
		   const void *data, size_t len, int64_t now);

#endif
