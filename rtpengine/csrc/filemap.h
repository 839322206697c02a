/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Read-only mappings of whole files. Kept apart from krtp.h: <sys/stat.h>
 * pulls in <linux/types.h>, whose __u64 clashes with the typedefs krtp.h
 * makes for user space.
 */
#ifndef KVOD_FILEMAP_H
#define KVOD_FILEMAP_H

#include <pthread.h>
#include <stdint.h>

struct kvod_map_entry;

/* hint files whose records were checked, remembered by file identity */
#define KVOD_CHECKED_MEMO	64

struct kvod_checked {
	uint64_t dev, ino, size;	/* the hint file, as it was */
	int64_t mtime_ns, ctime_ns;
	uint64_t media_size;		/* the records were checked against */
	uint64_t count;			/* records checked, from the first */
};

/* an engine's file mappings, shared by the streams that play a file, and
 * what it checked of them */
struct kvod_maps {
	pthread_mutex_t lock;
	struct kvod_map_entry *list;
	struct kvod_checked checked[KVOD_CHECKED_MEMO];
	unsigned int checked_next;
};

void kvod_maps_init(struct kvod_maps *m);
void kvod_maps_destroy(struct kvod_maps *m);
int kvod_maps_get(struct kvod_maps *m, int fd, const uint8_t **map,
		  uint64_t *size, uint64_t *dev, uint64_t *ino);
void kvod_maps_put(struct kvod_maps *m, const uint8_t *map);
uint64_t kvod_maps_checked(struct kvod_maps *m, int fd, uint64_t media_size);
void kvod_maps_set_checked(struct kvod_maps *m, int fd, uint64_t media_size,
			   uint64_t count);

#endif
