// SPDX-License-Identifier: GPL-2.0
/*
 * The research's content-download mechanisms (its Table 3), as plain C so
 * that only the system calls are measured: `kvod bench download` compiles
 * it into build/ and runs it with the connected socket inherited.
 *
 *   bench_download MECHANISM MEDIA CHUNK SOCKFD
 *
 * MECHANISM: read_write (read CHUNK into a buffer, write it), mmap_send
 * (one mmap, a send of CHUNK from the mapping at a time), sendfile (a
 * sendfile of CHUNK at a time), sendfile_whole (sendfile calls as large as
 * the socket takes: over TCP, the research's "whole file in one call").
 *
 * Prints "cpu_s calls bytes": the user+system seconds of the send loop
 * alone, the system calls it made, and the bytes it sent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

static int sock;

static double cpu_now(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int failed(const char *what)
{
	fprintf(stderr, "bench_download: %s: %s\n", what, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	const char *mech;
	size_t chunk, size, off = 0;
	unsigned long calls = 0;
	struct stat st;
	char *buf = NULL, *map = NULL;
	double cpu0;
	int fd;

	if (argc != 5) {
		fprintf(stderr, "usage: %s MECHANISM MEDIA CHUNK SOCKFD\n", argv[0]);
		return 2;
	}
	sock = atoi(argv[4]);
	mech = argv[1];
	chunk = strtoul(argv[3], NULL, 10);
	fd = open(argv[2], O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0 || chunk == 0)
		return failed(argv[2]);
	size = st.st_size;
	if (!strcmp(mech, "read_write")) {
		buf = malloc(chunk);
		if (!buf)
			return failed("malloc");
	} else if (!strcmp(mech, "mmap_send")) {
		map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
		if (map == MAP_FAILED)
			return failed("mmap");
		calls++;
	} else if (strcmp(mech, "sendfile") && strcmp(mech, "sendfile_whole")) {
		fprintf(stderr, "bench_download: unknown mechanism %s\n", mech);
		return 2;
	}
	cpu0 = cpu_now();
	while (off < size) {
		size_t n = size - off < chunk ? size - off : chunk;
		ssize_t sent;

		if (buf) {
			ssize_t got = read(fd, buf, n);

			calls++;
			if (got <= 0)
				return failed("read");
			/* a datagram socket takes a write whole; a stream may take part */
			for (ssize_t at = 0; at < got; at += sent) {
				sent = write(sock, buf + at, got - at);
				calls++;
				if (sent < 0)
					return failed("write");
			}
			off += got;
			continue;
		}
		if (map) {
			sent = send(sock, map + off, n, 0);
		} else {
			off_t pos = off;

			/* sendfile_whole asks for the rest each time */
			sent = sendfile(sock, fd, &pos,
					strcmp(mech, "sendfile") ? size - off : n);
		}
		calls++;
		if (sent <= 0)
			return failed(mech);
		off += sent;
	}
	printf("%.6f %lu %zu\n", cpu_now() - cpu0, calls, off);
	return 0;
}
