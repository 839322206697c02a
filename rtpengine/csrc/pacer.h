/* SPDX-License-Identifier: GPL-2.0 */
/* The pacing threads (pacer.c): what engine.c asks of them. */
#ifndef KVOD_PACER_H
#define KVOD_PACER_H

#include "stream.h"

int kvod_pacer_init(struct kvod_pacer *p, int strategy, int64_t lookahead,
		    int64_t burst, int64_t klookahead);
int kvod_pacer_start(struct kvod_pacer *p);
void kvod_pacer_stop(struct kvod_pacer *p);
void kvod_pacer_destroy(struct kvod_pacer *p);
void kvod_pacer_lock(struct kvod_pacer *p);
void kvod_pacer_unlock(struct kvod_pacer *p);
int kvod_pacer_add(struct kvod_pacer *p, struct kvod_stream *s, int fd,
		   uint64_t ino, int domain, bool shared, int64_t stall_ns);
void kvod_pacer_remove(struct kvod_pacer *p, struct kvod_stream *s);
void kvod_pacer_kick(struct kvod_pacer *p, struct kvod_stream *s);
void kvod_pacer_serve_now(struct kvod_pacer *p, struct kvod_stream *s);
const char *kvod_pacer_check(const struct kvod_pacer *p);
struct kvod_sock *kvod_pacer_find_sock(struct kvod_pacer *p, uint64_t ino);
void kvod_stream_at_last_record(struct kvod_stream *s);

#endif
