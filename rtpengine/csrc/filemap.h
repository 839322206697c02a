/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Read-only mappings of whole files. Kept apart from krtp.h: <sys/stat.h>
 * pulls in <linux/types.h>, whose __u64 clashes with the typedefs krtp.h
 * makes for user space.
 */
#ifndef KVOD_FILEMAP_H
#define KVOD_FILEMAP_H

#include <stdint.h>

int kvod_map_file(int fd, const uint8_t **map, uint64_t *size);
int kvod_file_id(int fd, uint64_t *dev, uint64_t *ino);

#endif
