/* SPDX-License-Identifier: GPL-2.0 */
/* Message layout (batch.c): a stream's due packets into a pacer's batch. */
#ifndef KVOD_BATCH_H
#define KVOD_BATCH_H

#include "stream.h"

/* why kvod_batch_build() stopped adding packets of a stream */
enum {
	KVOD_STOP_NONE,
	KVOD_STOP_UNFILLED,	/* the next payload is past the fill limit */
	KVOD_STOP_BAD,		/* the next record is out of bounds */
	KVOD_STOP_FULL,		/* the batch is full: flush and go on */
	KVOD_STOP_RING,		/* the zero-copy header ring is full */
	KVOD_STOP_GONE,		/* the hint file lost the record: failed */
};

void kvod_batch_reset(struct kvod_batch *b);
unsigned int kvod_batch_build(struct kvod_stream *s, struct kvod_batch *b,
			      int64_t now, int64_t horizon, unsigned int budget,
			      int *stop);

#endif
