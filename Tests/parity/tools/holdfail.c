/* An LD_PRELOAD for one experiment (Tests/parity/README.md, session 9, s9-3a): stacked
 * in FRONT of libblkfault.so, it holds every failed pread/pwrite/preadv/pwritev/
 * fdatasync made by a thread other than the main one until the main thread next waits
 * for events (enters ppoll or poll), then returns the failure unchanged. Successful
 * calls and the main thread's own calls pass straight through.
 *
 * It asks whether letting an injected error through "when QEMU's event loop next waits"
 * instead of "as soon as the worker thread has it" gives real blkdebug's outcome: blkdebug
 * (immediately=off) completes a failed request from a bottom half one event-loop pass
 * after the request was issued, a point no system call marks when a job's timer is due
 * (aio_poll then does not call ppoll). HOLDFAIL_MAX_MS (default 2000) bounds a hold.
 *
 * build: cc -shared -fPIC -O2 -o holdfail.so holdfail.c -ldl
 * use:   LD_PRELOAD=holdfail.so:libblkfault.so ... (repeat.py --hold) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static atomic_int main_waiting;
static atomic_ulong main_waits;
static long max_ms = 2000;

__attribute__((constructor)) static void holdfail_init(void)
{
    const char *v = getenv("HOLDFAIL_MAX_MS");
    if (v && *v)
        max_ms = strtol(v, NULL, 0);
}

static int on_main_thread(void)
{
    return syscall(SYS_gettid) == getpid();
}

/* A failed call on a worker thread: wait until the main thread waits (or has waited
 * since), keeping errno. */
static void hold(long ret)
{
    if (ret >= 0 || on_main_thread())
        return;
    int saved = errno;
    unsigned long seen = atomic_load(&main_waits);
    struct timespec step = { 0, 20000 };
    for (long spent_us = 0; spent_us < max_ms * 1000; spent_us += 20) {
        if (atomic_load(&main_waiting) || atomic_load(&main_waits) != seen)
            break;
        nanosleep(&step, NULL);
    }
    errno = saved;
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

/* the main thread's waits */
int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *m)
{
    static __typeof__(&ppoll) real;
    if (!real)
        real = NEXT(ppoll);
    if (!on_main_thread())
        return real(fds, n, t, m);
    atomic_fetch_add(&main_waits, 1);
    atomic_store(&main_waiting, 1);
    int r = real(fds, n, t, m);
    atomic_store(&main_waiting, 0);
    return r;
}

int poll(struct pollfd *fds, nfds_t n, int t)
{
    static __typeof__(&poll) real;
    if (!real)
        real = NEXT(poll);
    if (!on_main_thread())
        return real(fds, n, t);
    atomic_fetch_add(&main_waits, 1);
    atomic_store(&main_waiting, 1);
    int r = real(fds, n, t);
    atomic_store(&main_waiting, 0);
    return r;
}

/* the I/O whose failure is held */
#define WRAP(ret_t, name, params, args)                    \
    ret_t name params                                      \
    {                                                      \
        static __typeof__(&name) real;                     \
        if (!real)                                         \
            real = NEXT(name);                             \
        ret_t r = real args;                               \
        hold((long)r);                                     \
        return r;                                          \
    }

WRAP(ssize_t, pread, (int fd, void *b, size_t n, off_t o), (fd, b, n, o))
WRAP(ssize_t, pread64, (int fd, void *b, size_t n, off64_t o), (fd, b, n, o))
WRAP(ssize_t, pwrite, (int fd, const void *b, size_t n, off_t o), (fd, b, n, o))
WRAP(ssize_t, pwrite64, (int fd, const void *b, size_t n, off64_t o), (fd, b, n, o))
WRAP(ssize_t, preadv, (int fd, const struct iovec *v, int c, off_t o), (fd, v, c, o))
WRAP(ssize_t, preadv64, (int fd, const struct iovec *v, int c, off64_t o), (fd, v, c, o))
WRAP(ssize_t, pwritev, (int fd, const struct iovec *v, int c, off_t o), (fd, v, c, o))
WRAP(ssize_t, pwritev64, (int fd, const struct iovec *v, int c, off64_t o), (fd, v, c, o))
WRAP(int, fdatasync, (int fd), (fd))
