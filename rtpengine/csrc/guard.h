/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Reads from file mappings that survive the file shrinking under them.
 *
 * A mapped page past the end of a file that was truncated raises SIGBUS
 * on access, and its default action ends the whole daemon. The engine
 * reads hint records (and checks them) straight from shared mappings, so
 * every such read goes through here: a SIGBUS handler, installed once,
 * jumps back to the read that faulted, which then reports -EFAULT, and the
 * caller ends only the stream whose file changed. Payload bytes are never
 * read here: they go to the kernel as iovecs, and a send of pages past the
 * end of the file fails with EFAULT instead (send.c).
 */
#ifndef KVOD_GUARD_H
#define KVOD_GUARD_H

#include <stddef.h>

#include "kvod_types.h"

int kvod_guard_init(void);
int kvod_guard_copy(void *dst, const void *src, size_t n);
int kvod_guard_run(int (*fn)(void *), void *arg);

/* KVOD_CDEF_BEGIN */
/* tests: kvod_guard_copy() of @n bytes at @src into @dst; 0 or -EFAULT */
KVOD_API int kvod_guarded_read(void *dst, const void *src, size_t n);
/* KVOD_CDEF_END */

#endif
