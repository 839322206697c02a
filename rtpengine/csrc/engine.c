// SPDX-License-Identifier: GPL-2.0
/*
 * The engine's API: engine and stream life cycle, validation of what the
 * caller hands in (sockets, media and hint files are untrusted), the
 * stream table and the commands. The per-packet work is in pacer.c.
 *
 * Locking: e->table_lock guards the id -> stream table and is taken
 * before a pacer's lock. A command looks the stream up, takes its pacer's
 * lock and only then drops the table lock, so a concurrent close (which
 * needs both) cannot free the stream under it.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/net_tstamp.h>

#include "kvod_types_check.h"
#include "filemap.h"
#include "clock.h"
#include "pacer.h"
#include "send.h"
#include "tcp.h"

#define KVOD_MAX_THREADS	256
/* id = generation << KVOD_SLOT_BITS | slot; a stale id is caught by the
 * generation as long as its slot was not reused 2047 times since */
#define KVOD_SLOT_BITS		20
#define KVOD_MAX_SLOTS		(1u << KVOD_SLOT_BITS)
#define KVOD_GEN_MAX		2047

static __thread char kvod_errmsg[256];

/* Record why the call fails, for kvod_last_error(); returns -err. */
__attribute__((format(printf, 2, 3)))
static int kvod_fail(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(kvod_errmsg, sizeof(kvod_errmsg), fmt, ap);
	va_end(ap);
	return -err;
}

KVOD_API const char *kvod_last_error(void)
{
	return kvod_errmsg;
}

KVOD_API int64_t kvod_now_ns(void)
{
	return kvod_clock_ns();
}

KVOD_API int kvod_file_writeback(int fd, int64_t offset, int64_t size)
{
	if (fd < 0 || offset < 0 || size <= 0 || offset > INT64_MAX - size)
		return kvod_fail(EINVAL, "no bytes %lld+%lld of fd %d to write back",
				 (long long)offset, (long long)size, fd);
	if (sync_file_range(fd, offset, size, SYNC_FILE_RANGE_WRITE) < 0)
		return kvod_fail(errno, "write-back of fd %d: %s", fd,
				 strerror(errno));
	return 0;
}

static const char *const strategy_names[KVOD_STRATEGY_COUNT] = {
	[KVOD_STRATEGY_AUTO] = "auto",
	[KVOD_STRATEGY_GSO] = "gso",
	[KVOD_STRATEGY_SENDMMSG] = "sendmmsg",
	[KVOD_STRATEGY_READ_SEND_RTP] = "read_send_rtp",
	[KVOD_STRATEGY_READ_WRITEV] = "read_writev",
	[KVOD_STRATEGY_MMAP_WRITEV] = "mmap_writev",
	[KVOD_STRATEGY_RTP_SENDFILE] = "rtp_sendfile",
	[KVOD_STRATEGY_SENDFILE_MORE] = "sendfile_more",
	[KVOD_STRATEGY_GSO_ZEROCOPY] = "gso_zerocopy",
	[KVOD_STRATEGY_URING_GSO] = "uring_gso",
};

KVOD_API const char *kvod_strategy_name(int strategy)
{
	if (strategy < 0 || strategy >= KVOD_STRATEGY_COUNT)
		return "unknown";
	return strategy_names[strategy];
}

/* Does a fresh UDP socket take @opt = 1 (or @val)? */
static bool sockopt_taken(int level, int opt, int val)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	ok = setsockopt(fd, level, opt, &val, sizeof(val)) == 0;
	close(fd);
	return ok;
}

/* Does a fresh UDP socket take departure times on CLOCK_MONOTONIC? */
static bool txtime_taken(void)
{
	struct sock_txtime t = { .clockid = CLOCK_MONOTONIC, .flags = 0 };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	ok = setsockopt(fd, SOL_SOCKET, SO_TXTIME, &t, sizeof(t)) == 0;
	close(fd);
	return ok;
}

/*
 * What this kernel offers, asked rather than guessed from its version, so
 * that backports, missing features and sysctls that switch them off
 * (kernel.io_uring_disabled) all come out right.
 */
KVOD_API uint32_t kvod_probe_features(void)
{
	uint32_t f = 0;

	if (sockopt_taken(SOL_UDP, UDP_SEGMENT, 1200))
		f |= KVOD_FEAT_UDP_SEGMENT;
	if (sockopt_taken(SOL_SOCKET, SO_ZEROCOPY, 1))
		f |= KVOD_FEAT_ZEROCOPY;
	if (kvod_uring_probe() == 0)
		f |= KVOD_FEAT_IO_URING;
	/* taken is not honoured: only the fq qdisc acts on it (Python's
	 * rtpengine.qdisc tells where it is) */
	if (txtime_taken())
		f |= KVOD_FEAT_TXTIME;
	return f;
}

static uint32_t strategy_needs(int strategy)
{
	switch (strategy) {
	case KVOD_STRATEGY_GSO:
		return KVOD_FEAT_UDP_SEGMENT;
	case KVOD_STRATEGY_GSO_ZEROCOPY:
		return KVOD_FEAT_UDP_SEGMENT | KVOD_FEAT_ZEROCOPY;
	case KVOD_STRATEGY_URING_GSO:
		return KVOD_FEAT_UDP_SEGMENT | KVOD_FEAT_IO_URING;
	default:
		return 0;
	}
}

/* the next strategy to try when @strategy's features are missing */
static int strategy_fallback(int strategy)
{
	switch (strategy) {
	case KVOD_STRATEGY_GSO_ZEROCOPY:
	case KVOD_STRATEGY_URING_GSO:
		return KVOD_STRATEGY_GSO;
	default:
		return KVOD_STRATEGY_SENDMMSG;
	}
}

static const char *feature_name(uint32_t f)
{
	if (f & KVOD_FEAT_UDP_SEGMENT)
		return "UDP_SEGMENT (UDP GSO)";
	if (f & KVOD_FEAT_ZEROCOPY)
		return "SO_ZEROCOPY";
	if (f & KVOD_FEAT_IO_URING)
		return "io_uring";
	if (f & KVOD_FEAT_TXTIME)
		return "SO_TXTIME";
	return "?";
}

/*
 * The cheapest first, as `kvod bench datapath` measures them on a stock
 * kernel: gso and uring_gso cost the same within noise (uring_gso needs a
 * ring per thread), zero-copy loses at RTP packet sizes, and sendmmsg
 * needs nothing beyond a UDP socket.
 */
static const int auto_order[] = {
	KVOD_STRATEGY_GSO, KVOD_STRATEGY_URING_GSO, KVOD_STRATEGY_SENDMMSG,
};

/*
 * The strategy to run for @want given the features @have; a strategy the
 * kernel cannot do falls back (uring_gso and gso_zerocopy to gso, gso to
 * sendmmsg) and @why says what was refused.
 */
static int resolve_strategy(int want, uint32_t have, char *why, size_t len)
{
	int s = want;
	size_t i;

	why[0] = 0;
	if (want == KVOD_STRATEGY_AUTO) {
		for (i = 0; i < sizeof(auto_order) / sizeof(auto_order[0]); i++)
			if (!(strategy_needs(auto_order[i]) & ~have))
				return auto_order[i];
		return KVOD_STRATEGY_SENDMMSG;
	}
	while (strategy_needs(s) & ~have) {
		uint32_t missing = strategy_needs(s) & ~have;
		int next = strategy_fallback(s);
		size_t used = strlen(why);

		snprintf(why + used, len - used, "%s%s refused %s: using %s",
			 used ? "; " : "", kvod_strategy_name(s),
			 feature_name(missing), kvod_strategy_name(next));
		s = next;
	}
	return s;
}

static void engine_stop_pacers(struct kvod_engine *e)
{
	int i;

	for (i = 0; i < e->npacers; i++)
		kvod_pacer_stop(e->pacers[i]);
}

static void stream_free(struct kvod_stream *s)
{
	kvod_maps_put(s->maps, s->media);
	kvod_maps_put(s->maps, s->hint);
	if (s->media_fd >= 0)
		close(s->media_fd);
	if (s->hint_fd >= 0)
		close(s->hint_fd);
	free(s);
}

KVOD_API struct kvod_engine *kvod_engine_new(int threads, int strategy)
{
	struct kvod_engine_opts o = {
		.threads = threads,
		.strategy = strategy,
	};

	return kvod_engine_new_opts(&o);
}

KVOD_API struct kvod_engine *kvod_engine_new_opts(
	const struct kvod_engine_opts *o)
{
	struct kvod_engine *e;
	int threads, strategy, err, guard, i;
	char why[256];
	uint32_t have;

	if (!o) {
		errno = -kvod_fail(EINVAL, "no options");
		return NULL;
	}
	threads = o->threads;
	if (threads == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		threads = n > 0 ? (int)n : 1;
		if (threads > KVOD_MAX_THREADS)
			threads = KVOD_MAX_THREADS;
	}
	if (threads < 0 || threads > KVOD_MAX_THREADS) {
		errno = -kvod_fail(EINVAL, "threads %d is not in 0..%d",
				   threads, KVOD_MAX_THREADS);
		return NULL;
	}
	if (o->strategy < 0 || o->strategy >= KVOD_STRATEGY_COUNT) {
		errno = -kvod_fail(EINVAL, "unknown strategy %d", o->strategy);
		return NULL;
	}
	if (o->reserved || o->lookahead_ns < 0 ||
	    o->lookahead_ns > 1000000000LL || o->burst_ns < 0 ||
	    o->burst_ns > 1000000000LL) {
		errno = -kvod_fail(EINVAL,
				   "bad options (lookahead %lld ns, burst %lld ns: each must be in 0..1 s)",
				   (long long)o->lookahead_ns,
				   (long long)o->burst_ns);
		return NULL;
	}
	if (o->kernel_lookahead_ns < 0 ||
	    o->kernel_lookahead_ns > 1000000000LL) {
		errno = -kvod_fail(EINVAL,
				   "bad options (kernel lookahead %lld ns is not in 0..1 s)",
				   (long long)o->kernel_lookahead_ns);
		return NULL;
	}
	/* before any stream: hint records are read through guard.c */
	guard = kvod_guard_init();
	if (guard) {
		errno = -kvod_fail(-guard, "cannot install the SIGBUS handler");
		return NULL;
	}
	have = kvod_probe_features() & ~o->refuse;
	strategy = resolve_strategy(o->strategy, have, why, sizeof(why));

	e = calloc(1, sizeof(*e));
	if (!e)
		goto err_nomem;
	kvod_maps_init(&e->maps);
	e->strategy = strategy;
	e->requested = o->strategy;
	e->features = have;
	e->lookahead_ns = o->lookahead_ns ? o->lookahead_ns : KVOD_LOOKAHEAD_NS;
	e->burst_ns = o->burst_ns > e->lookahead_ns ? o->burst_ns :
		      e->lookahead_ns;
	e->klookahead_ns = o->kernel_lookahead_ns ? o->kernel_lookahead_ns :
						    KVOD_KERNEL_LOOKAHEAD_NS;
	snprintf(e->fallback, sizeof(e->fallback), "%s", why);
	e->pacers = calloc(threads, sizeof(*e->pacers));
	if (!e->pacers)
		goto err_engine;
	err = pthread_mutex_init(&e->table_lock, NULL);
	if (err)
		goto err_pacers;
	for (i = 0; i < threads; i++) {
		e->pacers[i] = calloc(1, sizeof(*e->pacers[i]));
		if (!e->pacers[i]) {
			err = ENOMEM;
			goto err_threads;
		}
		err = -kvod_pacer_init(e->pacers[i], strategy, e->lookahead_ns,
				       e->burst_ns, e->klookahead_ns);
		if (err) {
			free(e->pacers[i]);
			goto err_threads;
		}
		e->npacers++;
		err = -kvod_pacer_start(e->pacers[i]);
		if (err)
			goto err_threads;
	}
	return e;

err_threads:
	engine_stop_pacers(e);
	for (i = 0; i < e->npacers; i++) {
		kvod_pacer_destroy(e->pacers[i]);
		free(e->pacers[i]);
	}
	pthread_mutex_destroy(&e->table_lock);
	kvod_maps_destroy(&e->maps);
	free(e->pacers);
	free(e);
	errno = -kvod_fail(err, "cannot start pacing threads: %s",
			   strerror(err));
	return NULL;
err_pacers:
	free(e->pacers);
err_engine:
	kvod_maps_destroy(&e->maps);
	free(e);
err_nomem:
	errno = -kvod_fail(ENOMEM, "out of memory");
	return NULL;
}

KVOD_API void kvod_engine_free(struct kvod_engine *e)
{
	uint32_t i;
	int j;

	if (!e)
		return;
	engine_stop_pacers(e);
	/* the threads are gone: nothing else can touch the streams now */
	for (i = 0; i < e->nslots; i++) {
		struct kvod_stream *s = e->slots[i];

		if (s) {
			kvod_pacer_remove(s->pacer, s);
			stream_free(s);
		}
	}
	for (j = 0; j < e->npacers; j++) {
		kvod_pacer_destroy(e->pacers[j]);
		free(e->pacers[j]);
	}
	pthread_mutex_destroy(&e->table_lock);
	kvod_maps_destroy(&e->maps);
	free(e->pacers);
	free(e->slots);
	free(e->gens);
	free(e);
}

KVOD_API int kvod_engine_strategy(struct kvod_engine *e)
{
	if (!e)
		return kvod_fail(EINVAL, "no engine");
	return e->strategy;
}

KVOD_API int kvod_engine_threads(struct kvod_engine *e)
{
	if (!e)
		return kvod_fail(EINVAL, "no engine");
	return e->npacers;
}

KVOD_API int kvod_engine_features(struct kvod_engine *e)
{
	if (!e)
		return kvod_fail(EINVAL, "no engine");
	return (int)e->features;
}

KVOD_API const char *kvod_engine_fallback(struct kvod_engine *e)
{
	return e ? e->fallback : "";
}

KVOD_API int kvod_engine_stats(struct kvod_engine *e,
			       struct kvod_engine_stats *out)
{
	int i;

	if (!e || !out)
		return kvod_fail(EINVAL, "no engine or no stats buffer");
	memset(out, 0, sizeof(*out));
	for (i = 0; i < e->npacers; i++) {
		struct kvod_pacer *p = e->pacers[i];

		kvod_pacer_lock(p);
		out->rounds += p->st.rounds;
		out->syscalls += p->st.syscalls;
		out->packets += p->st.packets;
		out->zc_completions += p->st.zc_completions;
		out->zc_copied += p->st.zc_copied;
		out->messages += p->st.messages;
		kvod_pacer_unlock(p);
	}
	return 0;
}

KVOD_API int kvod_engine_unsettled(struct kvod_engine *e, int32_t *ids,
				   int max)
{
	uint32_t i;
	int n = 0, k;

	if (!e || (max && !ids) || max < 0)
		return kvod_fail(EINVAL, "no engine or no room for ids");
	/* the order every caller takes them in: table, then pacers */
	pthread_mutex_lock(&e->table_lock);
	for (k = 0; k < e->npacers; k++)
		kvod_pacer_lock(e->pacers[k]);
	for (i = 0; i < e->nslots; i++) {
		struct kvod_stream *s = e->slots[i];

		if (!s || s->state == KVOD_STATE_IDLE ||
		    s->state == KVOD_STATE_PLAYING ||
		    s->state == KVOD_STATE_PAUSED)
			continue;
		if (n < max)
			ids[n] = s->id;
		n++;
	}
	for (k = e->npacers - 1; k >= 0; k--)
		kvod_pacer_unlock(e->pacers[k]);
	pthread_mutex_unlock(&e->table_lock);
	return n;
}

KVOD_API int kvod_engine_check(struct kvod_engine *e)
{
	int i;

	if (!e)
		return kvod_fail(EINVAL, "no engine");
	for (i = 0; i < e->npacers; i++) {
		struct kvod_pacer *p = e->pacers[i];
		const char *wrong;

		kvod_pacer_lock(p);
		wrong = kvod_pacer_check(p);
		kvod_pacer_unlock(p);
		if (wrong)
			return kvod_fail(EUCLEAN, "thread %d: %s", i, wrong);
	}
	return 0;
}

/*
 * A private copy of a UDP socket: connected to its client, or (@shared)
 * unconnected, the client named per stream. *ino identifies the kernel
 * socket, so that streams sharing one are sent together.
 */
static int take_socket(int fd, bool shared, bool tcp, int *domain,
		       uint64_t *ino)
{
	struct sockaddr_storage peer;
	socklen_t len = sizeof(int);
	int type, proto, copy, err;
	struct stat st;

	copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (copy < 0)
		return kvod_fail(errno, "socket fd %d: %s", fd,
				 strerror(errno));
	if (getsockopt(copy, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
		err = kvod_fail(errno, "socket fd %d is not a socket", fd);
		goto err;
	}
	len = sizeof(int);
	if (getsockopt(copy, SOL_SOCKET, SO_DOMAIN, domain, &len) < 0 ||
	    getsockopt(copy, SOL_SOCKET, SO_PROTOCOL, &proto, &len) < 0 ||
	    fstat(copy, &st) < 0) {
		err = kvod_fail(errno, "socket fd %d: %s", fd, strerror(errno));
		goto err;
	}
	/*
	 * An interleaved stream writes to a TCP connection, or (RTSPS) to a
	 * Unix stream socket whose other end the daemon encrypts from.
	 */
	if (tcp && (type != SOCK_STREAM ||
		    (*domain != AF_UNIX && (proto != IPPROTO_TCP ||
		     (*domain != AF_INET && *domain != AF_INET6))))) {
		err = kvod_fail(EPROTOTYPE,
				"socket fd %d is not a TCP/IP or Unix stream socket",
				fd);
		goto err;
	}
	if (!tcp && (type != SOCK_DGRAM || proto != IPPROTO_UDP ||
		     (*domain != AF_INET && *domain != AF_INET6))) {
		err = kvod_fail(EPROTOTYPE,
				"socket fd %d is not a UDP/IP socket", fd);
		goto err;
	}
	*ino = st.st_ino;
	len = sizeof(peer);
	if (getpeername(copy, (struct sockaddr *)&peer, &len) < 0) {
		if (!shared) {
			err = kvod_fail(errno,
					"socket fd %d is not connected to a client",
					fd);
			goto err;
		}
	} else if (shared) {
		err = kvod_fail(EISCONN,
				"socket fd %d is connected: a shared socket names each client",
				fd);
		goto err;
	}
	return copy;
err:
	close(copy);
	return err;
}

/* The client of a stream on a shared socket, as sendmsg() wants it. */
static int set_dest(struct kvod_stream *s, const struct kvod_stream_params *p,
		    int domain)
{
	if (p->dest_family == AF_INET && domain == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&s->dest;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(p->dest_port);
		memcpy(&sin->sin_addr, p->dest_addr, 4);
		s->dest_len = sizeof(*sin);
	} else if (p->dest_family == AF_INET6 && domain == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&s->dest;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(p->dest_port);
		memcpy(&sin6->sin6_addr, p->dest_addr, 16);
		sin6->sin6_scope_id = p->dest_scope;
		s->dest_len = sizeof(*sin6);
	} else {
		return kvod_fail(EAFNOSUPPORT,
				 "destination family %d does not suit the socket's %d",
				 p->dest_family, domain);
	}
	if (!p->dest_port)
		return kvod_fail(EINVAL, "destination port 0");
	return 0;
}

static int dup_file(int fd, const char *what)
{
	int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);

	if (copy < 0)
		return kvod_fail(errno, "%s fd %d: %s", what, fd,
				 strerror(errno));
	return copy;
}

static int map_file(struct kvod_maps *maps, int fd, const char *what,
		    const uint8_t **map, uint64_t *size, uint64_t *dev,
		    uint64_t *ino)
{
	int err = kvod_maps_get(maps, fd, map, size, dev, ino);

	if (err == -EINVAL)
		return kvod_fail(EINVAL, "%s fd %d is not a regular file",
				 what, fd);
	if (err)
		return kvod_fail(-err, "%s fd %d: %s", what, fd,
				 strerror(-err));
	return 0;
}

/* A hint file's mapping and what its header says, once checked. */
struct hint_view {
	const uint8_t *hint;
	uint64_t hint_size;
	const struct kvod_hint_record *recs;
	uint64_t nrec;
	const uint8_t *blob;
	uint64_t blob_off;
	uint64_t blob_size;
	int payload_type;
};

static int check_record(const struct hint_view *v, uint64_t media_size,
			uint64_t k)
{
	const struct kvod_hint_record *r = &v->recs[k];
	uint64_t off = le64toh(r->offset);
	uint32_t len = le32toh(r->length);
	bool blob = le16toh(r->flags) & KRTP_REC_BLOB;
	uint64_t size = blob ? v->blob_size : media_size;

	if (r->prefix_len > KRTP_HINT_PREFIX_MAX)
		return kvod_fail(EBADMSG, "record %llu: prefix_len %u > %u",
				 (unsigned long long)k, r->prefix_len,
				 KRTP_HINT_PREFIX_MAX);
	if (KVOD_RTP_HEADER + r->prefix_len + (uint64_t)len > KVOD_MAX_DATAGRAM)
		return kvod_fail(EBADMSG,
				 "record %llu: %u payload bytes do not fit a UDP datagram",
				 (unsigned long long)k, len);
	if (off > size || len > size - off)
		return kvod_fail(ERANGE,
				 "record %llu: bytes %llu+%u lie beyond the %s (%llu bytes)",
				 (unsigned long long)k, (unsigned long long)off,
				 len, blob ? "hint blob area" : "media",
				 (unsigned long long)size);
	return 0;
}

/*
 * The header of the mapping in @v and its records from @check_from on
 * (the earlier ones were checked before, in this same file); @want_count
 * is KVOD_RECORDS_FROM_HINT or a count the file must hold. pacer.c checks
 * every record again when it sends, because the file may change under the
 * mapping.
 */
static int check_hint_mapped(struct hint_view *v, uint64_t media_size,
			     uint64_t want_count, uint64_t check_from)
{
	struct krtp_hint_header h;
	uint64_t count, room, blob_off, k;

	if (v->hint_size < sizeof(h))
		return kvod_fail(EBADMSG, "hint file truncated: %llu bytes",
				 (unsigned long long)v->hint_size);
	memcpy(&h, v->hint, sizeof(h));
	if (memcmp(h.magic, KRTP_HINT_MAGIC, sizeof(h.magic)))
		return kvod_fail(EBADMSG, "not a hint file (bad magic)");
	if (le16toh(h.version) != KRTP_HINT_VERSION)
		return kvod_fail(EBADMSG, "hint file version %u unsupported",
				 le16toh(h.version));
	if (le16toh(h.header_size) != KRTP_HINT_HEADER_SIZE ||
	    le16toh(h.record_size) != KRTP_HINT_RECORD_SIZE)
		return kvod_fail(EBADMSG, "hint layout %u/%u is not %u/%u",
				 le16toh(h.header_size),
				 le16toh(h.record_size),
				 KRTP_HINT_HEADER_SIZE, KRTP_HINT_RECORD_SIZE);
	room = (v->hint_size - KRTP_HINT_HEADER_SIZE) / KRTP_HINT_RECORD_SIZE;
	if (want_count == KVOD_RECORDS_FROM_HINT) {
		count = le64toh(h.record_count);
		if (count > room)
			return kvod_fail(EBADMSG,
					 "hint header promises %llu records, the file holds %llu",
					 (unsigned long long)count,
					 (unsigned long long)room);
	} else {
		count = want_count;
		if (count > room)
			return kvod_fail(EBADMSG,
					 "%llu records asked for, the hint file holds %llu",
					 (unsigned long long)count,
					 (unsigned long long)room);
	}
	blob_off = le64toh(h.blob_offset);
	v->blob_size = le64toh(h.blob_size);
	if (blob_off > v->hint_size || v->blob_size > v->hint_size - blob_off)
		return kvod_fail(EBADMSG,
				 "hint blob area lies outside the file");
	v->blob = v->blob_size ? v->hint + blob_off : NULL;
	v->blob_off = blob_off;
	v->recs = (const struct kvod_hint_record *)
		  (v->hint + KRTP_HINT_HEADER_SIZE);
	v->nrec = count;
	v->payload_type = h.payload_type;

	for (k = check_from; k < count; k++) {
		int err = check_record(v, media_size, k);

		if (err)
			return err;
	}
	return 0;
}

struct check_args {
	struct hint_view *v;
	uint64_t media_size, want_count, check_from;
};

static int check_hint_call(void *arg)
{
	struct check_args *a = arg;

	return check_hint_mapped(a->v, a->media_size, a->want_count,
				 a->check_from);
}

/* check_hint_mapped(), safe against the file shrinking meanwhile */
static int check_hint(struct hint_view *v, uint64_t media_size,
		      uint64_t want_count, uint64_t check_from)
{
	struct check_args a = { v, media_size, want_count, check_from };
	int err = kvod_guard_run(check_hint_call, &a);

	if (err == -EFAULT)
		return kvod_fail(EFAULT,
				 "the hint file shrank while it was checked");
	return err;
}

static int map_hint(struct kvod_maps *maps, int fd, struct hint_view *v,
		    uint64_t *dev, uint64_t *ino)
{
	memset(v, 0, sizeof(*v));
	return map_file(maps, fd, "hint", &v->hint, &v->hint_size, dev, ino);
}

static void use_hint(struct kvod_stream *s, const struct hint_view *v,
		     uint64_t dev, uint64_t ino)
{
	s->hint = v->hint;
	s->hint_size = v->hint_size;
	s->hint_dev = dev;
	s->hint_ino = ino;
	s->recs = v->recs;
	s->nrec = v->nrec;
	s->blob = v->blob;
	s->blob_off = v->blob_off;
	s->blob_size = v->blob_size;
	s->next_due = 0;	/* the cached due time was of the old records */
}

/*
 * The thread for a new stream on socket @ino: the least loaded, except
 * where the strategy keeps state in the socket between calls: the corked
 * or MSG_MORE datagram of rtp_sendfile and sendfile_more, the completion
 * ids of gso_zerocopy. Such a socket stays with one thread, or streams of
 * two threads would build one datagram, or read each other's completions.
 * With table_lock held, like every change of nstreams.
 */
static struct kvod_pacer *pick_pacer(struct kvod_engine *e, uint64_t ino,
				      bool tcp)
{
	struct kvod_pacer *best = e->pacers[0];
	int i;

	/* one connection's frames must come from one thread, in order */
	if (tcp || e->strategy == KVOD_STRATEGY_GSO_ZEROCOPY ||
	    e->strategy == KVOD_STRATEGY_RTP_SENDFILE ||
	    e->strategy == KVOD_STRATEGY_SENDFILE_MORE) {
		for (i = 0; i < e->npacers; i++) {
			struct kvod_pacer *p = e->pacers[i];
			bool found;

			kvod_pacer_lock(p);
			found = kvod_pacer_find_sock(p, ino) != NULL;
			kvod_pacer_unlock(p);
			if (found)
				return p;
		}
	}
	for (i = 1; i < e->npacers; i++)
		if (e->pacers[i]->nstreams < best->nstreams)
			best = e->pacers[i];
	return best;
}

/* A free slot, growing the table if needed; with table_lock held. */
static int table_slot(struct kvod_engine *e, uint32_t *slot)
{
	struct kvod_stream **slots;
	uint16_t *gens;
	uint32_t i, n;

	for (i = 0; i < e->nslots; i++) {
		if (!e->slots[i]) {
			*slot = i;
			return 0;
		}
	}
	if (e->nslots == KVOD_MAX_SLOTS)
		return kvod_fail(EMFILE, "too many streams (%u)",
				 KVOD_MAX_SLOTS);
	n = e->nslots ? e->nslots * 2 : 16;
	slots = realloc(e->slots, n * sizeof(*slots));
	if (!slots)
		return kvod_fail(ENOMEM, "out of memory");
	e->slots = slots;
	gens = realloc(e->gens, n * sizeof(*gens));
	if (!gens)
		return kvod_fail(ENOMEM, "out of memory");
	e->gens = gens;
	memset(slots + e->nslots, 0, (n - e->nslots) * sizeof(*slots));
	memset(gens + e->nslots, 0, (n - e->nslots) * sizeof(*gens));
	*slot = e->nslots;
	e->nslots = n;
	return 0;
}

KVOD_API int kvod_stream_open(struct kvod_engine *e,
			      const struct kvod_stream_params *p)
{
	struct kvod_stream *s;
	struct kvod_pacer *pacer;
	struct hint_view v;
	uint64_t hint_dev, hint_ino, media_dev, media_ino;
	uint32_t slot = 0;
	uint64_t ino = 0;
	int err, sock, domain = 0, want_pt;
	bool shared, tcp;

	if (!e || !p)
		return kvod_fail(EINVAL, "no engine or no parameters");
	if (p->flags & ~(KVOD_HINTS_GROWING | KVOD_PACE_KERNEL |
			 KVOD_INTERLEAVED))
		return kvod_fail(EINVAL, "unknown flags 0x%x", p->flags);
	tcp = p->flags & KVOD_INTERLEAVED;
	shared = p->dest_family != 0;
	if (tcp && shared)
		return kvod_fail(EINVAL,
				 "an interleaved stream has its connection, not a destination");
	if (tcp && p->channel == 255)
		return kvod_fail(EINVAL,
				 "channel 255 leaves no channel for RTCP");
	s = calloc(1, sizeof(*s));
	if (!s)
		return kvod_fail(ENOMEM, "out of memory");
	s->maps = &e->maps;
	s->media_fd = -1;
	s->hint_fd = -1;
	sock = take_socket(p->sock_fd, shared, tcp, &domain, &ino);
	if (sock < 0) {
		err = sock;
		goto err;
	}
	if (shared) {
		err = set_dest(s, p, domain);
		if (err)
			goto err_sock;
	}
	err = map_file(&e->maps, p->media_fd, "media", &s->media,
		       &s->media_size, &media_dev, &media_ino);
	if (err)
		goto err_sock;
	err = map_hint(&e->maps, p->hint_fd, &v, &hint_dev, &hint_ino);
	if (err)
		goto err_sock;
	/* stream_free() unmaps it from here on */
	use_hint(s, &v, hint_dev, hint_ino);
	err = check_hint(&v, s->media_size, KVOD_RECORDS_FROM_HINT,
			 kvod_maps_checked(&e->maps, p->hint_fd, s->media_size));
	if (err)
		goto err_sock;
	kvod_maps_set_checked(&e->maps, p->hint_fd, s->media_size, v.nrec);
	use_hint(s, &v, hint_dev, hint_ino);
	want_pt = p->payload_type == KVOD_PT_FROM_HINT ? v.payload_type :
							 p->payload_type;
	if (want_pt < 0 || want_pt > 127) {
		err = kvod_fail(EINVAL, "payload type %d is not in 0..127",
				want_pt);
		goto err_sock;
	}
	s->pt = (uint8_t)want_pt;
	s->growing = p->flags & KVOD_HINTS_GROWING;
	if (!kvod_is_mmsg_strategy(e->strategy)) {
		/* the research's paths read or sendfile from the files */
		s->media_fd = dup_file(p->media_fd, "media");
		if (s->media_fd < 0) {
			err = s->media_fd;
			goto err_sock;
		}
		s->hint_fd = dup_file(p->hint_fd, "hint");
		if (s->hint_fd < 0) {
			err = s->hint_fd;
			goto err_sock;
		}
	}

	s->ssrc = p->ssrc;
	s->seq0 = p->seq0;
	s->ts0 = p->ts0;
	s->strategy = e->strategy;
	s->gso = e->strategy == KVOD_STRATEGY_GSO ||
		 e->strategy == KVOD_STRATEGY_GSO_ZEROCOPY ||
		 e->strategy == KVOD_STRATEGY_URING_GSO;
	s->state = KVOD_STATE_IDLE;
	s->fill_limit = s->media_size;
	s->st.strategy = e->strategy;
	s->st.shared = shared;
	if (tcp) {
		/* one packet a frame, sendmsg of header and mapped payload:
		 * no GSO, no departure times on a byte stream */
		s->tcp = true;
		s->channel = p->channel;
		s->st.interleaved = 1;
		s->gso = false;
		s->strategy = KVOD_STRATEGY_MMAP_WRITEV;
		s->st.strategy = KVOD_STRATEGY_MMAP_WRITEV;
		s->max_lag_ns = p->tcp_max_lag_ms ?
				(int64_t)p->tcp_max_lag_ms * 1000000 :
				KVOD_TCP_MAX_LAG_NS;
	}
	/*
	 * Kernel pacing for the batched strategies (the research's per-packet
	 * paths stay as they were measured) on connected sockets only. fq
	 * queues a socket's packets as one flow and drops beyond flow_limit
	 * (100 packets by default): a shared socket's clients would all queue
	 * in that one flow, the kernel lookahead times their summed packet
	 * rate, and lose packets as viewers grow. So they stay engine-paced
	 * (and shared sockets already batch many clients per call).
	 * kvod_pacer_add() then asks the socket for SO_TXTIME.
	 */
	if ((p->flags & KVOD_PACE_KERNEL) && !shared && !tcp &&
	    kvod_is_mmsg_strategy(e->strategy)) {
		if (e->features & KVOD_FEAT_TXTIME)
			s->kpaced = true;
		else
			s->st.refused |= KVOD_FEAT_TXTIME;
	}

	pthread_mutex_lock(&e->table_lock);
	err = table_slot(e, &slot);
	if (err) {
		pthread_mutex_unlock(&e->table_lock);
		goto err_sock;
	}
	pacer = pick_pacer(e, ino, tcp);
	kvod_pacer_lock(pacer);
	err = kvod_pacer_add(pacer, s, sock, ino, domain, shared,
			     p->tcp_stall_ms ?
			     (int64_t)p->tcp_stall_ms * 1000000 :
			     KVOD_TCP_STALL_NS);
	kvod_pacer_unlock(pacer);
	if (err) {
		pthread_mutex_unlock(&e->table_lock);
		err = kvod_fail(-err, "out of memory");
		goto err_sock;
	}
	e->gens[slot] = e->gens[slot] % KVOD_GEN_MAX + 1;
	s->id = (int)((uint32_t)e->gens[slot] << KVOD_SLOT_BITS | slot);
	e->slots[slot] = s;
	pthread_mutex_unlock(&e->table_lock);
	return s->id;

err_sock:
	close(sock);
err:
	stream_free(s);
	return err;
}

/*
 * The stream @id with its pacer locked, or NULL (and *err) if there is
 * none. Release with kvod_pacer_unlock(s->pacer).
 */
static struct kvod_stream *stream_get(struct kvod_engine *e, int id, int *err)
{
	struct kvod_stream *s = NULL;
	uint32_t slot = (uint32_t)id & (KVOD_MAX_SLOTS - 1);

	if (!e) {
		*err = kvod_fail(EINVAL, "no engine");
		return NULL;
	}
	pthread_mutex_lock(&e->table_lock);
	if (id >= 0 && slot < e->nslots && e->slots[slot] &&
	    e->slots[slot]->id == id) {
		s = e->slots[slot];
		kvod_pacer_lock(s->pacer);
	}
	pthread_mutex_unlock(&e->table_lock);
	if (!s)
		*err = kvod_fail(ENOENT, "no stream %d", id);
	return s;
}

/* what @s sends first when it plays from record @k; -EFAULT if its hint
 * file lost that record (@s failed) */
static int play_start(struct kvod_stream *s, uint64_t k,
		      struct kvod_play_start *out)
{
	/* at the end: the last record's time (a title still empty: 0) */
	uint64_t r = k < s->nrec ? k : s->nrec - 1;
	struct kvod_hint_record rec;

	out->record = k;
	out->seq = (uint16_t)(s->seq0 + s->seq_count);
	out->rtp_ts = s->ts0;
	out->send_ns = 0;
	if (s->nrec) {
		if (kvod_stream_record(s, r, &rec))
			return -EFAULT;
		out->rtp_ts += le32toh(rec.rtp_ts);
		out->send_ns = (int64_t)le64toh(rec.send_ns);
	}
	return 0;
}

KVOD_API int kvod_stream_play(struct kvod_engine *e, int id,
			      uint64_t start_record, int64_t start_mono_ns,
			      int flags, struct kvod_play_start *out)
{
	struct kvod_stream *s;
	struct kvod_hint_record rec;
	uint64_t k, send_ns;
	int err;

	if (flags & ~(KVOD_PLAY_UNPACED | KVOD_PLAY_AFTER_WRITE))
		return kvod_fail(EINVAL, "unknown play flags 0x%x", flags);
	if (start_mono_ns < 0)
		return kvod_fail(EINVAL, "start time %lld is negative",
				 (long long)start_mono_ns);
	s = stream_get(e, id, &err);
	if (!s)
		return err;
	k = start_record == KVOD_RECORD_CONTINUE ? s->next_record :
						   start_record;
	if (k > s->nrec) {
		kvod_pacer_unlock(s->pacer);
		return kvod_fail(ERANGE,
				 "record %llu is beyond the last (%llu)",
				 (unsigned long long)k,
				 (unsigned long long)s->nrec);
	}
	if (!start_mono_ns)
		start_mono_ns = kvod_now_ns();
	if (out && play_start(s, k, out))
		goto gone;
	s->next_record = k;
	s->unpaced = flags & KVOD_PLAY_UNPACED;
	s->retry_at = 0;
	s->err_pending = false;
	if (k == s->nrec) {
		kvod_stream_at_last_record(s);
	} else {
		if (kvod_stream_record(s, k, &rec))
			goto gone;
		send_ns = le64toh(rec.send_ns);
		/* due(k) = start: the schedule keeps the hint's spacing */
		s->t0 = (int64_t)((uint64_t)start_mono_ns - send_ns);
		s->state = KVOD_STATE_PLAYING;
		s->wait_end = false;
		if (s->tcp && (flags & KVOD_PLAY_AFTER_WRITE)) {
			s->sk->hold_until = kvod_now_ns() + KVOD_TCP_HOLD_NS;
			kvod_pacer_kick(s->pacer, s);
		} else {
			kvod_pacer_serve_now(s->pacer, s);
		}
	}
	kvod_pacer_unlock(s->pacer);
	return 0;

gone:
	kvod_pacer_unlock(s->pacer);
	return kvod_fail(EFAULT, "stream %d: its hint file shrank under it",
			 id);
}

KVOD_API int kvod_stream_pause(struct kvod_engine *e, int id)
{
	struct kvod_stream *s;
	int err;

	s = stream_get(e, id, &err);
	if (!s)
		return err;
	if (s->state == KVOD_STATE_PLAYING || s->state == KVOD_STATE_WAITING)
		s->state = KVOD_STATE_PAUSED;
	kvod_pacer_unlock(s->pacer);
	return 0;
}

/*
 * A waiting stream whose wait may be over (more fill, more records) plays
 * on; with pacer->lock held.
 */
static void resume_waiting(struct kvod_stream *s)
{
	struct kvod_hint_record rec;
	int64_t now;

	if (s->state != KVOD_STATE_WAITING)
		return;
	if (s->next_record >= s->nrec) {
		/* still at the last record: it ends unless more will come */
		if (!s->growing) {
			s->state = KVOD_STATE_ENDED;
			s->wait_end = false;
		}
		return;
	}
	now = kvod_now_ns();
	if (s->wait_end) {
		if (kvod_stream_record(s, s->next_record, &rec))
			return;		/* failed: the caller sees it */
		/* the new record leaves now, the schedule goes on from it */
		s->t0 = (int64_t)((uint64_t)now - le64toh(rec.send_ns));
		s->wait_end = false;
	} else if (!s->unpaced && now > s->blocked_due) {
		/* shift the rest of the schedule by the wait: no late burst */
		s->t0 = (int64_t)((uint64_t)s->t0 +
				  (uint64_t)(now - s->blocked_due));
	}
	s->state = KVOD_STATE_PLAYING;
	kvod_pacer_kick(s->pacer, s);
}

KVOD_API int kvod_stream_set_fill_limit(struct kvod_engine *e, int id,
					uint64_t limit)
{
	struct kvod_stream *s;
	int err;

	s = stream_get(e, id, &err);
	if (!s)
		return err;
	s->fill_limit = limit;
	resume_waiting(s);
	kvod_pacer_unlock(s->pacer);
	return 0;
}

/*
 * The first record of @v at or after the media offset @s sends next, or
 * -ERANGE if @v's records end before that offset: the stream would send
 * again, later, the bytes between their end and where it is.
 */
static int64_t remap_next_mapped(const struct kvod_stream *s,
				 const struct hint_view *v)
{
	uint64_t off = 0, lo = 0, hi = v->nrec, reach = 0;

	if (s->next_record < s->nrec) {
		off = le64toh(s->recs[s->next_record].offset);
	} else if (s->nrec) {
		const struct kvod_hint_record *last = &s->recs[s->nrec - 1];

		off = le64toh(last->offset) + le32toh(last->length);
	}
	if (v->nrec) {
		const struct kvod_hint_record *last = &v->recs[v->nrec - 1];

		reach = le64toh(last->offset) + le32toh(last->length);
	}
	if (reach < off)
		return -ERANGE;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (le64toh(v->recs[mid].offset) < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (int64_t)lo;
}

struct remap_args {
	const struct kvod_stream *s;
	const struct hint_view *v;
	int64_t next;
};

static int remap_call(void *arg)
{
	struct remap_args *a = arg;

	a->next = remap_next_mapped(a->s, a->v);
	return 0;
}

/* remap_next_mapped(), or -EFAULT if either hint file shrank meanwhile */
static int64_t remap_next(const struct kvod_stream *s,
			  const struct hint_view *v)
{
	struct remap_args a = { s, v, -ERANGE };

	if (kvod_guard_run(remap_call, &a))
		return -EFAULT;
	return a.next;
}

KVOD_API int kvod_stream_set_hints(struct kvod_engine *e, int id,
				   int hint_fd, uint64_t record_count,
				   int flags)
{
	struct kvod_stream *s;
	struct hint_view v;
	uint64_t media_size, dev, ino, had_dev, had_ino, had_nrec;
	uint64_t check_from = 0, known;
	int64_t next;
	const uint8_t *old;
	int err, fd = -1;

	if (flags & ~(KVOD_HINTS_GROWING | KVOD_HINTS_REMAP | KVOD_HINTS_RESTART) ||
	    (flags & KVOD_HINTS_REMAP && flags & KVOD_HINTS_RESTART))
		return kvod_fail(EINVAL, "unknown hint flags 0x%x", flags);
	s = stream_get(e, id, &err);
	if (!s)
		return err;
	media_size = s->media_size;
	had_dev = s->hint_dev;
	had_ino = s->hint_ino;
	had_nrec = s->nrec;
	kvod_pacer_unlock(s->pacer);

	/* map and check without the pacer's lock: it may be many records */
	err = map_hint(&e->maps, hint_fd, &v, &dev, &ino);
	if (err)
		return err;
	/* the same file, grown: the records the stream has were checked */
	if (!(flags & (KVOD_HINTS_REMAP | KVOD_HINTS_RESTART)) &&
	    dev == had_dev && ino == had_ino)
		check_from = had_nrec;
	known = kvod_maps_checked(&e->maps, hint_fd, media_size);
	err = check_hint(&v, media_size, record_count,
			 known > check_from ? known : check_from);
	if (err)
		goto err_unmap;
	kvod_maps_set_checked(&e->maps, hint_fd, media_size, v.nrec);
	/* the research's paths pread blob records through their own fd */
	if (!kvod_is_mmsg_strategy(e->strategy)) {
		fd = dup_file(hint_fd, "hint");
		if (fd < 0) {
			err = fd;
			goto err_unmap;
		}
	}

	s = stream_get(e, id, &err);
	if (!s)
		goto err_unmap;
	if (check_from && (s->hint_dev != had_dev || s->hint_ino != had_ino ||
			   s->nrec != had_nrec)) {
		err = kvod_fail(EAGAIN, "stream %d got other hints meanwhile",
				id);
		goto err_unlock;
	}
	if (flags & KVOD_HINTS_RESTART) {
		next = 0;
	} else if (flags & KVOD_HINTS_REMAP) {
		next = remap_next(s, &v);
		if (next == -EFAULT) {
			err = kvod_fail(EFAULT,
					"a hint file of stream %d shrank under it",
					id);
			goto err_unlock;
		}
		if (next < 0) {
			err = kvod_fail(ERANGE,
					"the new hints end before the media offset stream %d is at",
					id);
			goto err_unlock;
		}
	} else if (s->next_record > v.nrec) {
		err = kvod_fail(ERANGE,
				"the new hints hold %llu records, the stream is at record %llu",
				(unsigned long long)v.nrec,
				(unsigned long long)s->next_record);
		goto err_unlock;
	} else {
		next = (int64_t)s->next_record;
	}
	old = s->hint;
	use_hint(s, &v, dev, ino);
	if (fd >= 0) {
		int had_fd = s->hint_fd;

		s->hint_fd = fd;
		fd = had_fd;
	}
	s->next_record = (uint64_t)next;
	s->growing = flags & KVOD_HINTS_GROWING;
	if (s->state == KVOD_STATE_PLAYING)
		kvod_pacer_kick(s->pacer, s);	/* its next due time moved */
	resume_waiting(s);
	kvod_pacer_unlock(s->pacer);
	/* the pacer only reads the mapping under its lock: this stream is
	 * done with it (others may still play it) */
	kvod_maps_put(&e->maps, old);
	if (fd >= 0)
		close(fd);
	return 0;

err_unlock:
	kvod_pacer_unlock(s->pacer);
err_unmap:
	if (fd >= 0)
		close(fd);
	kvod_maps_put(&e->maps, v.hint);
	return err;
}

KVOD_API int kvod_stream_stats(struct kvod_engine *e, int id,
			       struct kvod_stream_stats *out)
{
	struct kvod_stream *s;
	int err;

	if (!out)
		return kvod_fail(EINVAL, "no stats buffer");
	s = stream_get(e, id, &err);
	if (!s)
		return err;
	*out = s->st;
	out->state = s->state;
	out->strategy = (uint8_t)s->strategy;
	out->record_count = s->nrec;
	out->next_record = s->next_record;
	out->fill_limit = s->fill_limit;
	out->kernel_paced = s->kpaced;
	if (s->tcp)
		out->out_queued = (uint32_t)s->sk->out_len;
	kvod_pacer_unlock(s->pacer);
	return 0;
}

KVOD_API int kvod_sock_write(struct kvod_engine *e, int id, const void *data,
			     size_t len)
{
	struct kvod_stream *s;
	struct kvod_pacer *p;
	int err;

	if (!data && len)
		return kvod_fail(EINVAL, "no data");
	s = stream_get(e, id, &err);
	if (!s)
		return err;
	p = s->pacer;
	if (!s->tcp) {
		kvod_pacer_unlock(p);
		return kvod_fail(EPROTOTYPE, "stream %d is not interleaved", id);
	}
	err = kvod_tcp_write(p, s->sk, data, len, kvod_now_ns());
	if (!err && s->sk->hold_until) {
		struct kvod_stream *o;

		/* the reply a play waited for is out (or queued first) */
		s->sk->hold_until = 0;
		for (o = s->sk->streams; o; o = o->next)
			if (o->state == KVOD_STATE_PLAYING)
				kvod_pacer_kick(p, o);
	}
	/* queued: the thread writes it when the connection takes it */
	if (!err && s->sk->pending)
		pthread_cond_signal(&p->cond);
	kvod_pacer_unlock(p);
	if (err == -EPIPE)
		return kvod_fail(EPIPE, "stream %d: its connection failed", id);
	if (err == -ENOBUFS)
		return kvod_fail(ENOBUFS,
				 "stream %d: its connection's out-queue is full", id);
	if (err == -EMSGSIZE)
		return kvod_fail(EMSGSIZE, "%zu bytes are more than %d at once",
				 len, KVOD_TCP_CTRL_MAX);
	return err;
}

KVOD_API int kvod_stream_close(struct kvod_engine *e, int id)
{
	struct kvod_stream *s = NULL;
	struct kvod_pacer *pacer;
	uint32_t slot = (uint32_t)id & (KVOD_MAX_SLOTS - 1);

	if (!e)
		return kvod_fail(EINVAL, "no engine");
	pthread_mutex_lock(&e->table_lock);
	if (id >= 0 && slot < e->nslots && e->slots[slot] &&
	    e->slots[slot]->id == id) {
		s = e->slots[slot];
		e->slots[slot] = NULL;
		pacer = s->pacer;
		/* waits for the pacer's current round: it may be sending s */
		kvod_pacer_lock(pacer);
		kvod_pacer_remove(pacer, s);
		kvod_pacer_unlock(pacer);
	}
	pthread_mutex_unlock(&e->table_lock);
	if (!s)
		return kvod_fail(ENOENT, "no stream %d", id);
	stream_free(s);
	return 0;
}
