// SPDX-License-Identifier: GPL-2.0
/*
 * SIGBUS-safe reads from file mappings (see guard.h).
 *
 * Why a handler and not fstat() before each read: a file may shrink
 * between the fstat() and the read, so a check alone narrows the window
 * but never closes it, and a system call per stream per round costs more
 * than a sigsetjmp() without the signal mask (a few register stores).
 *
 * Each guarded read publishes a jump buffer in a thread-local pointer for
 * the length of the read only. The handler jumps back only when the
 * faulting thread is inside such a read; any other SIGBUS goes to the
 * handler that was there before (Python's faulthandler, say) or to the
 * default action, so a real bug still ends the process as it would have.
 * SA_NODEFER: the handler leaves by siglongjmp() without restoring the
 * signal mask (no sigprocmask() per read), so SIGBUS must not stay
 * blocked after a jump.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

#include "guard.h"

/* initial-exec: no lazy TLS allocation inside the signal handler */
static __thread sigjmp_buf *guard_env
	__attribute__((tls_model("initial-exec")));
static struct sigaction old_bus;
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static int guard_err;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	sigjmp_buf *env = guard_env;

	if (env && si && si->si_code > 0) {
		guard_env = NULL;
		siglongjmp(*env, 1);
	}
	/* not a guarded read: what would have happened without us */
	if (old_bus.sa_flags & SA_SIGINFO) {
		if (old_bus.sa_sigaction) {
			old_bus.sa_sigaction(sig, si, uc);
			return;
		}
	} else if (old_bus.sa_handler != SIG_DFL &&
		   old_bus.sa_handler != SIG_IGN) {
		old_bus.sa_handler(sig);
		return;
	}
	/* the default action: a fault happens again on return, a sent
	 * signal is sent again */
	signal(SIGBUS, SIG_DFL);
	if (!si || si->si_code <= 0)
		raise(SIGBUS);
}

static void guard_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &old_bus))
		guard_err = -errno;
}

/* Install the handler (once per process); 0 or -errno. */
int kvod_guard_init(void)
{
	pthread_once(&guard_once, guard_install);
	return guard_err;
}

/*
 * Copy @n bytes from @src, which may lie in a file mapping, to @dst:
 * 0, or -EFAULT if the file no longer holds them (@dst is then partly
 * written). The caller must have called kvod_guard_init().
 */
int kvod_guard_copy(void *dst, const void *src, size_t n)
{
	sigjmp_buf env;
	sigjmp_buf *prev = guard_env;

	if (sigsetjmp(env, 0)) {
		guard_env = prev;
		return -EFAULT;
	}
	guard_env = &env;
	/* the reads stay between the two stores */
	atomic_signal_fence(memory_order_seq_cst);
	memcpy(dst, src, n);
	atomic_signal_fence(memory_order_seq_cst);
	guard_env = prev;
	return 0;
}

/*
 * Run @fn(@arg), which reads file mappings, with faults caught: its
 * return, or -EFAULT if a read faulted (@fn did not finish, so it must
 * hold no lock and own no memory at any read).
 */
int kvod_guard_run(int (*fn)(void *), void *arg)
{
	sigjmp_buf env;
	sigjmp_buf *prev = guard_env;
	int ret;

	if (sigsetjmp(env, 0)) {
		guard_env = prev;
		return -EFAULT;
	}
	guard_env = &env;
	atomic_signal_fence(memory_order_seq_cst);
	ret = fn(arg);
	atomic_signal_fence(memory_order_seq_cst);
	guard_env = prev;
	return ret;
}

KVOD_API int kvod_guarded_read(void *dst, const void *src, size_t n)
{
	int err = kvod_guard_init();

	return err ? err : kvod_guard_copy(dst, src, n);
}
