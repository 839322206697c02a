// SPDX-License-Identifier: GPL-2.0
/*
 * krtp: an in-kernel RTP engine for kvod. /dev/krtp sends stored media as
 * RTP/UDP packets from hint records: krtpsendfile takes the payload from
 * the page cache, krtpmsend from a mapping of the caller; the kernel
 * builds the RTP headers and paces the packets. See uapi/krtp.h.
 *
 * Every open file of /dev/krtp is one engine with its own table of
 * streams. Locking: ctx->lock guards the table and is taken before a
 * worker's lock; a command looks its stream up, takes the stream's worker
 * lock and only then drops ctx->lock, so a concurrent close (which needs
 * both) cannot free the stream under it.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/xarray.h>

#include "krtp_core.h"

struct krtp_counters krtp_counters;

unsigned int krtp_max_streams = 65536;
module_param_named(max_streams, krtp_max_streams, uint, 0444);
MODULE_PARM_DESC(max_streams, "streams the module takes over all files");

struct krtp_ctx {
	struct mutex lock;	/* the stream table */
	struct xarray streams;	/* id -> struct krtp_stream */
	u32 next_id;
	bool ready;		/* the ABI handshake passed */
};

static int krtp_open(struct inode *inode, struct file *file)
{
	struct krtp_ctx *ctx;

	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL_ACCOUNT);
	if (!ctx)
		return -ENOMEM;
	mutex_init(&ctx->lock);
	xa_init_flags(&ctx->streams, XA_FLAGS_ALLOC1);
	file->private_data = ctx;
	atomic64_inc(&krtp_counters.files);
	return 0;
}

/* Stop and free @s, already out of the table. */
static void krtp_stream_destroy(struct krtp_stream *s)
{
	krtp_worker_remove(s);
	krtp_stream_free(s);
	atomic64_dec(&krtp_counters.streams);
}

static int krtp_release(struct inode *inode, struct file *file)
{
	struct krtp_ctx *ctx = file->private_data;
	struct krtp_stream *s;
	unsigned long id;

	xa_for_each(&ctx->streams, id, s) {
		xa_erase(&ctx->streams, id);
		krtp_stream_destroy(s);
	}
	xa_destroy(&ctx->streams);
	mutex_destroy(&ctx->lock);
	kfree(ctx);
	atomic64_dec(&krtp_counters.files);
	return 0;
}

static int krtp_ioc_hello(struct krtp_ctx *ctx, void __user *arg)
{
	struct krtp_hello in, out = {
		.abi_version = KRTP_ABI_VERSION,
		.features = KRTP_FEAT_SENDFILE | KRTP_FEAT_MSEND,
		.hello_size = sizeof(struct krtp_hello),
		.open_size = sizeof(struct krtp_open),
		.play_size = sizeof(struct krtp_play),
		.cmd_size = sizeof(struct krtp_cmd),
		.stats_size = sizeof(struct krtp_stats),
		.info_size = sizeof(struct krtp_info),
		.hint_header_size = KRTP_HINT_HEADER_SIZE,
		.hint_record_size = KRTP_HINT_RECORD_SIZE,
		.workers = krtp_workers_count(),
		.max_streams = krtp_max_streams,
	};
	bool match;

	if (copy_from_user(&in, arg, sizeof(in)))
		return -EFAULT;
	match = in.abi_version == out.abi_version &&
		in.hello_size == out.hello_size &&
		in.open_size == out.open_size &&
		in.play_size == out.play_size &&
		in.cmd_size == out.cmd_size &&
		in.stats_size == out.stats_size &&
		in.info_size == out.info_size &&
		in.hint_header_size == out.hint_header_size &&
		in.hint_record_size == out.hint_record_size;
	/* the module's view goes back either way, for the caller's message */
	if (copy_to_user(arg, &out, sizeof(out)))
		return -EFAULT;
	if (!match)
		return -EPROTO;
	WRITE_ONCE(ctx->ready, true);
	return 0;
}

static int krtp_ioc_open(struct krtp_ctx *ctx, void __user *arg)
{
	struct krtp_open p;
	struct krtp_stream *s;
	int err;

	if (copy_from_user(&p, arg, sizeof(p)))
		return -EFAULT;
	if (atomic64_inc_return(&krtp_counters.streams) > krtp_max_streams) {
		err = -EMFILE;
		goto err_count;
	}
	s = krtp_stream_new(&p);
	if (IS_ERR(s)) {
		err = PTR_ERR(s);
		goto err_count;
	}
	p.record_count = s->nrec;

	mutex_lock(&ctx->lock);
	err = xa_alloc_cyclic(&ctx->streams, &s->id, s, xa_limit_31b,
			      &ctx->next_id, GFP_KERNEL_ACCOUNT);
	if (err < 0) {
		mutex_unlock(&ctx->lock);
		goto err_free;
	}
	p.id = s->id;
	krtp_worker_add(s);
	mutex_unlock(&ctx->lock);
	atomic64_inc(&krtp_counters.streams_opened);

	if (copy_to_user(arg, &p, sizeof(p))) {
		/* the caller cannot know the id: do not leave it open */
		mutex_lock(&ctx->lock);
		s = xa_erase(&ctx->streams, p.id);
		mutex_unlock(&ctx->lock);
		if (s)
			krtp_stream_destroy(s);
		return -EFAULT;
	}
	return 0;

err_free:
	krtp_stream_free(s);
err_count:
	atomic64_dec(&krtp_counters.streams);
	return err;
}

/*
 * The stream @id of @ctx with its worker locked, or NULL. Release with
 * krtp_worker_unlock(s->worker).
 */
static struct krtp_stream *krtp_get(struct krtp_ctx *ctx, u32 id)
{
	struct krtp_stream *s;

	mutex_lock(&ctx->lock);
	s = xa_load(&ctx->streams, id);
	if (s)
		krtp_worker_lock(s->worker);
	mutex_unlock(&ctx->lock);
	return s;
}

/* Send from record @k at CLOCK_MONOTONIC @start (0: now); locked. */
static void krtp_start(struct krtp_stream *s, u64 k, s64 start)
{
	struct krtp_cursor c = { };
	struct krtp_hint_record r;

	s->next_record = k;
	s->retry_at = 0;
	s->err_pending = false;
	if (k == s->nrec) {
		s->state = KRTP_STATE_ENDED;
		return;
	}
	if (!start)
		start = ktime_get_ns();
	/* due(k) = start: the schedule keeps the hint's spacing */
	if (krtp_read_record(s, k, &r, &c))
		r.send_ns = 0;	/* unreadable: the pacer drops it at once */
	krtp_cursor_release(&c);
	s->t0 = (s64)((u64)start - r.send_ns);
	s->state = KRTP_STATE_PLAYING;
	krtp_worker_kick(s->worker);
}

static int krtp_ioc_play(struct krtp_ctx *ctx, void __user *arg)
{
	struct krtp_stream *s;
	struct krtp_play p;
	u64 k;

	if (copy_from_user(&p, arg, sizeof(p)))
		return -EFAULT;
	if (p.flags & ~KRTP_PLAY_UNPACED || p.start_ns < 0)
		return -EINVAL;
	s = krtp_get(ctx, p.id);
	if (!s)
		return -ENOENT;
	k = p.start_record == KRTP_RECORD_CONTINUE ? s->next_record :
						     p.start_record;
	if (k > s->nrec) {
		krtp_worker_unlock(s->worker);
		return -ERANGE;
	}
	s->unpaced = p.flags & KRTP_PLAY_UNPACED;
	krtp_start(s, k, p.start_ns);
	krtp_worker_unlock(s->worker);
	return 0;
}

static int krtp_ioc_cmd(struct krtp_ctx *ctx, unsigned int cmd,
			void __user *arg)
{
	struct krtp_stream *s;
	struct krtp_cmd c;
	int err = 0;

	if (copy_from_user(&c, arg, sizeof(c)))
		return -EFAULT;
	if (c.reserved)
		return -EINVAL;

	if (cmd == KRTP_IOC_CLOSE) {
		mutex_lock(&ctx->lock);
		s = xa_erase(&ctx->streams, c.id);
		mutex_unlock(&ctx->lock);
		if (!s)
			return -ENOENT;
		krtp_stream_destroy(s);
		return 0;
	}

	s = krtp_get(ctx, c.id);
	if (!s)
		return -ENOENT;
	switch (cmd) {
	case KRTP_IOC_PAUSE:
		if (s->state == KRTP_STATE_PLAYING ||
		    s->state == KRTP_STATE_WAITING)
			s->state = KRTP_STATE_PAUSED;
		break;
	case KRTP_IOC_SEEK:
		/* the next record; a playing stream goes on from it now */
		if (c.arg > s->nrec) {
			err = -ERANGE;
			break;
		}
		if (s->state == KRTP_STATE_PLAYING ||
		    s->state == KRTP_STATE_WAITING)
			krtp_start(s, c.arg, 0);
		else
			s->next_record = c.arg;
		break;
	case KRTP_IOC_FILL:
		s->fill_limit = c.arg;
		if (s->state == KRTP_STATE_WAITING) {
			s64 waited = ktime_get_ns() - s->blocked_due;

			/* shift the rest of the schedule by the wait */
			if (!s->unpaced && waited > 0)
				s->t0 = (s64)((u64)s->t0 + (u64)waited);
			s->state = KRTP_STATE_PLAYING;
			krtp_worker_kick(s->worker);
		}
		break;
	}
	krtp_worker_unlock(s->worker);
	return err;
}

static int krtp_ioc_stats(struct krtp_ctx *ctx, void __user *arg)
{
	struct krtp_stream *s;
	struct krtp_stats st;
	u32 id;

	if (get_user(id, (u32 __user *)arg))
		return -EFAULT;
	s = krtp_get(ctx, id);
	if (!s)
		return -ENOENT;
	st = s->st;
	st.id = id;
	st.state = s->state;
	st.record_count = s->nrec;
	st.next_record = s->next_record;
	st.fill_limit = s->fill_limit;
	krtp_worker_unlock(s->worker);
	if (copy_to_user(arg, &st, sizeof(st)))
		return -EFAULT;
	return 0;
}

static int krtp_ioc_info(void __user *arg)
{
	struct krtp_info info = {
		.streams = atomic64_read(&krtp_counters.streams),
		.streams_opened = atomic64_read(&krtp_counters.streams_opened),
		.files = atomic64_read(&krtp_counters.files),
		.pages_held = atomic64_read(&krtp_counters.pages_held),
		.packets_sent = atomic64_read(&krtp_counters.packets_sent),
		.packets_dropped = atomic64_read(&krtp_counters.packets_dropped),
		.spliced_octets = atomic64_read(&krtp_counters.spliced_octets),
		.copied_octets = atomic64_read(&krtp_counters.copied_octets),
		.workers = krtp_workers_count(),
		.max_streams = krtp_max_streams,
	};

	if (copy_to_user(arg, &info, sizeof(info)))
		return -EFAULT;
	return 0;
}

static long krtp_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct krtp_ctx *ctx = file->private_data;
	void __user *uarg = (void __user *)arg;

	if (cmd == KRTP_IOC_HELLO)
		return krtp_ioc_hello(ctx, uarg);
	switch (cmd) {
	case KRTP_IOC_OPEN:
	case KRTP_IOC_PLAY:
	case KRTP_IOC_PAUSE:
	case KRTP_IOC_SEEK:
	case KRTP_IOC_FILL:
	case KRTP_IOC_STATS:
	case KRTP_IOC_CLOSE:
	case KRTP_IOC_INFO:
		break;
	default:
		return -ENOTTY;
	}
	if (!READ_ONCE(ctx->ready))
		return -EPROTO;
	switch (cmd) {
	case KRTP_IOC_OPEN:
		return krtp_ioc_open(ctx, uarg);
	case KRTP_IOC_PLAY:
		return krtp_ioc_play(ctx, uarg);
	case KRTP_IOC_STATS:
		return krtp_ioc_stats(ctx, uarg);
	case KRTP_IOC_INFO:
		return krtp_ioc_info(uarg);
	default:
		return krtp_ioc_cmd(ctx, cmd, uarg);
	}
}

static const struct file_operations krtp_fops = {
	.owner = THIS_MODULE,
	.open = krtp_open,
	.release = krtp_release,
	.unlocked_ioctl = krtp_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice krtp_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = KRTP_DEVICE_NAME,
	.fops = &krtp_fops,
	.mode = 0600,
};

static int __init krtp_init(void)
{
	int err;

	err = krtp_workers_start();
	if (err)
		goto err_out;
	err = misc_register(&krtp_misc);
	if (err)
		goto err_workers;
	pr_info("ABI %u, %u pacing threads, %s\n", KRTP_ABI_VERSION,
		krtp_workers_count(), KRTP_SEND_MECHANISM);
	return 0;

err_workers:
	krtp_workers_stop();
err_out:
	return err;
}

static void __exit krtp_exit(void)
{
	misc_deregister(&krtp_misc);
	krtp_workers_stop();
	if (atomic64_read(&krtp_counters.pages_held) ||
	    atomic64_read(&krtp_counters.streams))
		pr_err("unloaded with %lld pages and %lld streams held\n",
		       (long long)atomic64_read(&krtp_counters.pages_held),
		       (long long)atomic64_read(&krtp_counters.streams));
}

module_init(krtp_init);
module_exit(krtp_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("In-kernel RTP engine for kvod (krtpsendfile, krtpmsend)");
MODULE_VERSION("0.1");
