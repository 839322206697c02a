// SPDX-License-Identifier: GPL-2.0
/*
 * The bare C loop `kvod bench datapath` holds the engine against: the same
 * GSO sends (RTP header + mapped payload per segment, equal segments per
 * UDP_SEGMENT message, many messages per sendmmsg) with nothing else: no
 * hint records, no pacing, no locks, no accounting. Compiled by the bench
 * into build/ and run inside the sink's network namespace.
 *
 *   bench_bare_gso MEDIA PAYLOAD HOST PORT [SEGS [DESTS [BYTES]]]
 *
 * SEGS (default 64) caps the segments of a message; DESTS > 0 sends from
 * one unconnected socket to DESTS ports from PORT on, a message each in
 * turn, as a shared server socket sends to many clients; BYTES (default:
 * the file's size) is how much to send, the file over again if need be.
 * `kvod bench streams` uses them to measure the kernel's cost for the
 * shape of its sends (its "kernel floor").
 *
 * Prints "cpu_s packets calls": the user+system seconds of the send loop
 * alone (not of starting the process), as the engine is measured from
 * play to end.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#define SEGS		64
#define MSGS		1024
/* packets per call: the engine's per-stream share of a round */
#define CALL_PKTS	2048
#define MAX_DGRAM	65507
#define HDR		12

union cmsg {
	char buf[CMSG_SPACE(sizeof(uint16_t))];
	struct cmsghdr align;
};

static struct mmsghdr msgs[MSGS];
static union cmsg cms[MSGS];
static struct iovec iov[CALL_PKTS * 2];
static uint8_t hdrs[CALL_PKTS][HDR];

int main(int argc, char **argv)
{
	uint64_t off = 0, packets = 0, calls = 0, total = 0, sent = 0;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	static struct sockaddr_in dest[MSGS];
	unsigned int max_segs = SEGS, dests = 0, next_dest = 0;
	uint16_t seq = 0;
	struct rusage ru0, ru;
	size_t payload, size;
	const uint8_t *media;
	struct stat st;
	int fd, sock;

	if (argc < 5 || argc > 8) {
		fprintf(stderr,
			"usage: %s MEDIA PAYLOAD HOST PORT [SEGS [DESTS [BYTES]]]\n",
			argv[0]);
		return 2;
	}
	if (argc > 5)
		max_segs = strtoul(argv[5], NULL, 10);
	if (argc > 6)
		dests = strtoul(argv[6], NULL, 10);
	if (argc > 7)
		total = strtoull(argv[7], NULL, 10);
	if (max_segs < 1 || max_segs > SEGS || dests > 65535) {
		fprintf(stderr, "SEGS must be in 1..%d, DESTS in 0..65535\n", SEGS);
		return 2;
	}
	payload = strtoul(argv[2], NULL, 10);
	fd = open(argv[1], O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0 || payload == 0 ||
	    payload + HDR > MAX_DGRAM) {
		perror(argv[1]);
		return 1;
	}
	size = st.st_size;
	if (!total)
		total = size;
	media = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	sock = socket(AF_INET, SOCK_DGRAM, 0);
	sin.sin_port = htons(atoi(argv[4]));
	if (media == MAP_FAILED || sock < 0 ||
	    inet_pton(AF_INET, argv[3], &sin.sin_addr) != 1 ||
	    (!dests && connect(sock, (struct sockaddr *)&sin, sizeof(sin)))) {
		perror("setup");
		return 1;
	}

	getrusage(RUSAGE_SELF, &ru0);
	while (sent < total) {
		unsigned int nmsg = 0, npkt = 0, niov = 0;

		if (off == size)
			off = 0;	/* BYTES asks for more than the file */

		while (nmsg < MSGS && off < size) {
			struct msghdr *mh = &msgs[nmsg].msg_hdr;
			unsigned int segs = 0;
			size_t seg = HDR + (size - off < payload ?
					    size - off : payload);
			size_t bytes = 0;

			memset(mh, 0, sizeof(*mh));
			mh->msg_iov = &iov[niov];
			if (dests) {
				dest[nmsg] = sin;
				dest[nmsg].sin_port = htons(ntohs(sin.sin_port) +
							    next_dest);
				next_dest = (next_dest + 1) % dests;
				mh->msg_name = &dest[nmsg];
				mh->msg_namelen = sizeof(dest[nmsg]);
			}
			while (segs < max_segs && off < size &&
			       bytes + seg <= MAX_DGRAM) {
				size_t len = size - off < payload ?
					     size - off : payload;
				uint8_t *h = hdrs[npkt++];

				if (HDR + len != seg)
					break;
				h[0] = 0x80;
				h[1] = 33;
				h[2] = seq >> 8;
				h[3] = seq;
				seq++;
				memset(h + 4, 0, 8);
				iov[niov].iov_base = h;
				iov[niov++].iov_len = HDR;
				iov[niov].iov_base = (void *)(media + off);
				iov[niov++].iov_len = len;
				mh->msg_iovlen += 2;
				off += len;
				sent += len;
				bytes += seg;
				segs++;
			}
			if (segs > 1) {
				struct cmsghdr *cm;

				mh->msg_control = cms[nmsg].buf;
				mh->msg_controllen = sizeof(cms[nmsg].buf);
				cm = CMSG_FIRSTHDR(mh);
				cm->cmsg_level = IPPROTO_UDP;
				cm->cmsg_type = 103;	/* UDP_SEGMENT */
				cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
				*(uint16_t *)CMSG_DATA(cm) = (uint16_t)seg;
			}
			packets += segs;
			nmsg++;
			if (npkt + SEGS > CALL_PKTS)
				break;
		}
		for (unsigned int m = 0; m < nmsg;) {
			int r = sendmmsg(sock, msgs + m, nmsg - m, 0);

			calls++;
			if (r < 0) {
				perror("sendmmsg");
				return 1;
			}
			m += r;
		}
	}
	getrusage(RUSAGE_SELF, &ru);
	printf("%.6f %llu %llu\n",
	       (ru.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
	       (ru.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
	       (ru.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
	       (ru.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6,
	       (unsigned long long)packets, (unsigned long long)calls);
	return 0;
}
