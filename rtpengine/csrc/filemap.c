// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "filemap.h"

/*
 * Map the regular file @fd read-only, whole; an empty file maps to NULL.
 * Returns 0 or -errno (-EINVAL if @fd is not a regular file).
 */
int kvod_map_file(int fd, const uint8_t **map, uint64_t *size)
{
	struct stat st;
	void *p;

	*map = NULL;
	*size = 0;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if (st.st_size == 0)
		return 0;
	p = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	*map = p;
	*size = st.st_size;
	return 0;
}

/* The device and inode of @fd: tells whether two descriptors name one file. */
int kvod_file_id(int fd, uint64_t *dev, uint64_t *ino)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	*dev = st.st_dev;
	*ino = st.st_ino;
	return 0;
}
