// SPDX-License-Identifier: GPL-2.0
/*
 * The pacing workers: one kernel thread per online CPU, each owning a
 * share of the streams. A worker sleeps on an hrtimer until the earliest
 * packet due among its streams, then sends what is due (krtp_send.c), so
 * a paced stream needs no system call after PLAY.
 *
 * A worker holds its lock while it sends; commands take it between
 * rounds. Everything here but the add/remove/kick calls runs in the
 * worker's thread.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kthread.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>

#include "krtp_core.h"

/* how late an hrtimer may wake a worker, to batch wake-ups */
#define KRTP_TIMER_SLACK_NS	20000

static struct krtp_worker *krtp_workers;
static unsigned int krtp_nworkers;
/* serialises choosing a worker for a new stream with adding it there */
static DEFINE_MUTEX(krtp_assign_lock);

/* Send what @s has due; returns when it needs its worker next. */
static s64 krtp_pump(struct krtp_worker *w, struct krtp_stream *s, s64 now)
{
	struct krtp_cursor c = { }, payload = { };
	s64 wake = S64_MAX;
	int n;

	if (s->retry_at > now)
		return s->retry_at;
	s->retry_at = 0;
	if (s->msend) {
		/* the mapping's owner has exited: nothing left to send */
		if (!mmget_not_zero(s->mm)) {
			s->state = KRTP_STATE_ENDED;
			s->st.last_errno = EFAULT;
			return S64_MAX;
		}
		kthread_use_mm(s->mm);
	}
	for (n = 0; s->state == KRTP_STATE_PLAYING; n++) {
		struct krtp_hint_record r;
		s64 due;
		int err;

		if (s->next_record >= s->nrec) {
			s->state = KRTP_STATE_ENDED;
			break;
		}
		if (n == KRTP_ROUND_PACKETS) {
			wake = now;
			break;
		}
		err = krtp_read_record(s, s->next_record, &r, &c);
		if (err) {
			krtp_drop(s, err);
			continue;
		}
		due = s->unpaced ? now : krtp_due(s, r.send_ns);
		if (due > now + KRTP_LOOKAHEAD_NS) {
			wake = due;
			break;
		}
		err = krtp_record_bounds(s, &r);
		if (err) {
			krtp_drop(s, err);
			continue;
		}
		if (!(r.flags & KRTP_REC_BLOB) &&
		    r.offset + r.length > s->fill_limit) {
			s->state = KRTP_STATE_WAITING;
			s->blocked_due = due;
			break;
		}
		if (!s->no_gso) {
			unsigned int m = krtp_gather(w, s, &c, &r, due, now);
			int sent = m > 1 ? krtp_send_gso(w, s, &payload, m, now) : 0;

			if (sent < 0) {
				wake = s->retry_at;
				break;
			}
			if (sent > 0) {
				n += sent - 1;
				now = ktime_get_ns();
				continue;
			}
		}
		if (krtp_send(w, s, &payload, &r, due, now)) {
			wake = s->retry_at;
			break;
		}
		now = ktime_get_ns();
	}
	krtp_cursor_release(&c);
	krtp_cursor_release(&payload);
	if (s->msend) {
		kthread_unuse_mm(s->mm);
		mmput(s->mm);
	}
	return wake;
}

/* --- workers ----------------------------------------------------------- */

static int krtp_worker_fn(void *data)
{
	struct krtp_worker *w = data;

	while (!kthread_should_stop()) {
		struct krtp_stream *s;
		s64 wake = S64_MAX;

		mutex_lock(&w->lock);
		WRITE_ONCE(w->kicked, false);
		list_for_each_entry(s, &w->streams, node) {
			s64 t;

			if (s->state != KRTP_STATE_PLAYING)
				continue;
			t = krtp_pump(w, s, ktime_get_ns());
			if (t < wake)
				wake = t;
		}
		mutex_unlock(&w->lock);

		if (wake <= (s64)ktime_get_ns()) {
			cond_resched();
			continue;
		}
		set_current_state(TASK_INTERRUPTIBLE);
		if (READ_ONCE(w->kicked) || kthread_should_stop()) {
			__set_current_state(TASK_RUNNING);
			continue;
		}
		if (wake == S64_MAX) {
			schedule();
		} else {
			ktime_t expires = ns_to_ktime(wake);

			schedule_hrtimeout_range(&expires, KRTP_TIMER_SLACK_NS,
						 HRTIMER_MODE_ABS);
		}
		__set_current_state(TASK_RUNNING);
	}
	return 0;
}

/* A command changed what @w has due: make it look again. */
void krtp_worker_kick(struct krtp_worker *w)
{
	WRITE_ONCE(w->kicked, true);
	wake_up_process(w->task);
}

void krtp_worker_lock(struct krtp_worker *w)
{
	mutex_lock(&w->lock);
}

void krtp_worker_unlock(struct krtp_worker *w)
{
	mutex_unlock(&w->lock);
}

#ifdef KRTP_SPLICE_PAGES
/* one sendmsg() per packet: any worker may share a socket with another */
static struct krtp_worker *krtp_worker_of_sock(struct socket *sock)
{
	return NULL;
}
#else
/*
 * A corked packet takes several calls: two workers sending on one socket
 * would mix their packets. Streams that share a socket (sessions sharing
 * a server port) therefore share a worker.
 */
static struct krtp_worker *krtp_worker_of_sock(struct socket *sock)
{
	struct krtp_worker *found = NULL;
	struct krtp_stream *s;
	unsigned int i;

	for (i = 0; i < krtp_nworkers && !found; i++) {
		struct krtp_worker *w = &krtp_workers[i];

		mutex_lock(&w->lock);
		list_for_each_entry(s, &w->streams, node) {
			if (s->sock == sock) {
				found = w;
				break;
			}
		}
		mutex_unlock(&w->lock);
	}
	return found;
}
#endif

/* Give @s to the worker of its socket, else to the one with fewest streams. */
void krtp_worker_add(struct krtp_stream *s)
{
	struct krtp_worker *best;
	unsigned int i;

	mutex_lock(&krtp_assign_lock);
	best = krtp_worker_of_sock(s->sock);
	if (!best) {
		best = &krtp_workers[0];
		for (i = 1; i < krtp_nworkers; i++)
			if (READ_ONCE(krtp_workers[i].nstreams) <
			    READ_ONCE(best->nstreams))
				best = &krtp_workers[i];
	}
	mutex_lock(&best->lock);
	s->worker = best;
	list_add_tail(&s->node, &best->streams);
	WRITE_ONCE(best->nstreams, best->nstreams + 1);
	mutex_unlock(&best->lock);
	mutex_unlock(&krtp_assign_lock);
}

/* Take @s from its worker; waits for a round that may be sending it. */
void krtp_worker_remove(struct krtp_stream *s)
{
	struct krtp_worker *w = s->worker;

	mutex_lock(&w->lock);
	list_del_init(&s->node);
	WRITE_ONCE(w->nstreams, w->nstreams - 1);
	mutex_unlock(&w->lock);
}

unsigned int krtp_workers_count(void)
{
	return krtp_nworkers;
}

void krtp_workers_stop(void)
{
	unsigned int i;

	for (i = 0; i < krtp_nworkers; i++) {
		struct krtp_worker *w = &krtp_workers[i];

		kthread_stop(w->task);
		WARN_ON(!list_empty(&w->streams));
#ifdef KRTP_SPLICE_PAGES
		page_frag_cache_drain(&w->frag);
#endif
		kvfree(w->bounce);
		mutex_destroy(&w->lock);
	}
	kfree(krtp_workers);
	krtp_workers = NULL;
	krtp_nworkers = 0;
}

int krtp_workers_start(void)
{
	unsigned int i, n = num_online_cpus();
	int err;

	krtp_workers = kcalloc(n, sizeof(*krtp_workers), GFP_KERNEL);
	if (!krtp_workers)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		struct krtp_worker *w = &krtp_workers[i];

		mutex_init(&w->lock);
		INIT_LIST_HEAD(&w->streams);
		w->bounce = kvmalloc(KRTP_MAX_DATAGRAM, GFP_KERNEL);
		if (!w->bounce) {
			err = -ENOMEM;
			goto err_worker;
		}
		w->task = kthread_run(krtp_worker_fn, w, "krtp/%u", i);
		if (IS_ERR(w->task)) {
			err = PTR_ERR(w->task);
			goto err_bounce;
		}
		krtp_nworkers++;
	}
	return 0;

err_bounce:
	kvfree(krtp_workers[i].bounce);
err_worker:
	mutex_destroy(&krtp_workers[i].lock);
	krtp_workers_stop();
	return err;
}
