// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "filemap.h"

/*
 * One mapping per file for every stream of an engine that plays it: a
 * title's pages then sit in one set of page tables, faulted in once,
 * instead of once per viewer (a 4 GB title is 8 MB of page tables per
 * mapping once read through).
 */
struct kvod_map_entry {
	struct kvod_map_entry *next;
	uint64_t dev, ino, size;
	const uint8_t *map;
	unsigned int refs;
};

void kvod_maps_init(struct kvod_maps *m)
{
	pthread_mutex_init(&m->lock, NULL);
	m->list = NULL;
	memset(m->checked, 0, sizeof(m->checked));
	m->checked_next = 0;
}

/* after every kvod_maps_put(): nothing is left to unmap */
void kvod_maps_destroy(struct kvod_maps *m)
{
	pthread_mutex_destroy(&m->lock);
}

/*
 * The whole of regular file @fd, mapped read-only: shared with the other
 * holders of the same file (device, inode) at the same size. Also says
 * which file it is. Returns 0 or -errno (-EINVAL: not a regular file).
 */
int kvod_maps_get(struct kvod_maps *m, int fd, const uint8_t **map,
		  uint64_t *size, uint64_t *dev, uint64_t *ino)
{
	struct kvod_map_entry *en;
	struct stat st;
	void *p;

	*map = NULL;
	*size = 0;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	*dev = st.st_dev;
	*ino = st.st_ino;
	if (st.st_size == 0)
		return 0;
	pthread_mutex_lock(&m->lock);
	for (en = m->list; en; en = en->next) {
		if (en->dev == *dev && en->ino == *ino &&
		    en->size == (uint64_t)st.st_size) {
			en->refs++;
			*map = en->map;
			*size = en->size;
			pthread_mutex_unlock(&m->lock);
			return 0;
		}
	}
	en = calloc(1, sizeof(*en));
	if (!en) {
		pthread_mutex_unlock(&m->lock);
		return -ENOMEM;
	}
	p = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		int err = -errno;

		pthread_mutex_unlock(&m->lock);
		free(en);
		return err;
	}
	en->dev = *dev;
	en->ino = *ino;
	en->size = st.st_size;
	en->map = p;
	en->refs = 1;
	en->next = m->list;
	m->list = en;
	pthread_mutex_unlock(&m->lock);
	*map = p;
	*size = st.st_size;
	return 0;
}

/* Done with @map (from kvod_maps_get(); NULL is fine): the last holder
 * unmaps it. */
void kvod_maps_put(struct kvod_maps *m, const uint8_t *map)
{
	struct kvod_map_entry **pp, *en;

	if (!map)
		return;
	pthread_mutex_lock(&m->lock);
	for (pp = &m->list; (en = *pp); pp = &en->next) {
		if (en->map != map)
			continue;
		if (--en->refs == 0) {
			*pp = en->next;
			munmap((void *)en->map, en->size);
			free(en);
		}
		break;
	}
	pthread_mutex_unlock(&m->lock);
}

/*
 * What identifies a file's contents without reading them: device, inode,
 * size and both times. A rewrite in place changes ctime, which nobody can
 * set back.
 */
static int identity(int fd, uint64_t media_size, struct kvod_checked *id)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	memset(id, 0, sizeof(*id));
	id->dev = st.st_dev;
	id->ino = st.st_ino;
	id->size = st.st_size;
	id->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	id->ctime_ns = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
	id->media_size = media_size;
	return 0;
}

static bool same_file(const struct kvod_checked *a, const struct kvod_checked *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns &&
	       a->media_size == b->media_size;
}

/*
 * How many records of hint file @fd, from the first, were checked against
 * a media file of @media_size bytes while the file was as it is now (0 if
 * none): a title opened again is not checked again (issue 15: SETUP cost
 * grew with the title's length).
 */
uint64_t kvod_maps_checked(struct kvod_maps *m, int fd, uint64_t media_size)
{
	struct kvod_checked id;
	uint64_t count = 0;
	unsigned int i;

	if (identity(fd, media_size, &id))
		return 0;
	pthread_mutex_lock(&m->lock);
	for (i = 0; i < KVOD_CHECKED_MEMO; i++) {
		if (m->checked[i].count && same_file(&m->checked[i], &id)) {
			count = m->checked[i].count;
			break;
		}
	}
	pthread_mutex_unlock(&m->lock);
	return count;
}

/* Remember that @count records of hint file @fd passed the checks. */
void kvod_maps_set_checked(struct kvod_maps *m, int fd, uint64_t media_size,
			   uint64_t count)
{
	struct kvod_checked id;
	unsigned int i, slot;

	if (!count || identity(fd, media_size, &id))
		return;
	id.count = count;
	pthread_mutex_lock(&m->lock);
	slot = m->checked_next;
	for (i = 0; i < KVOD_CHECKED_MEMO; i++) {
		if (m->checked[i].count && same_file(&m->checked[i], &id)) {
			slot = i;
			break;
		}
	}
	if (slot == m->checked_next)
		m->checked_next = (m->checked_next + 1) % KVOD_CHECKED_MEMO;
	m->checked[slot] = id;
	pthread_mutex_unlock(&m->lock);
}
