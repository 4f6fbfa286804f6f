/* An LD_PRELOAD that only delays: writes of SLOWIO_MIN_BYTES or more (default 32 KiB)
 * sleep SLOWIO_MIN_MS..SLOWIO_MAX_MS (default 2..20) before they run, then do exactly
 * what libc does. Used by repeat.py to ask whether a case's outcome depends on when
 * QEMU's data writes complete: under real blkdebug alone, different outcomes mean
 * blkdebug's own result varies with timing (UNDECIDABLE_ONCE_OFF in scenarios.py).
 * SLOWIO_FSYNC_MS (default 0) also delays every fdatasync by up to that many ms.
 * SLOWIO_SEED fixes the delays' sequence (default: the pid, so every run differs).
 *
 * build: cc -shared -fPIC -O2 -o slowio.so slowio.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static long min_bytes = 32768, min_ms = 2, max_ms = 20, fsync_ms = 0;
static unsigned long seed;
static atomic_ulong counter;

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 0) : dflt;
}

__attribute__((constructor)) static void slowio_init(void)
{
    min_bytes = env_long("SLOWIO_MIN_BYTES", min_bytes);
    min_ms = env_long("SLOWIO_MIN_MS", min_ms);
    max_ms = env_long("SLOWIO_MAX_MS", max_ms);
    fsync_ms = env_long("SLOWIO_FSYNC_MS", fsync_ms);
    seed = (unsigned long)env_long("SLOWIO_SEED", (long)getpid());
}

/* splitmix64 of (seed, call number): thread-safe and reproducible per seed */
static unsigned long next_random(void)
{
    unsigned long z = seed + 0x9e3779b97f4a7c15UL * (atomic_fetch_add(&counter, 1) + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9UL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebUL;
    return z ^ (z >> 31);
}

static void sleep_ms_between(long lo, long hi)
{
    if (hi <= 0)
        return;
    long us = lo * 1000 + (long)(next_random() % (unsigned long)((hi - lo) * 1000 + 1));
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
    nanosleep(&ts, NULL);
}

static void maybe_delay(size_t bytes)
{
    if ((long)bytes >= min_bytes)
        sleep_ms_between(min_ms, max_ms);
}

static size_t iov_bytes(const struct iovec *iov, int n)
{
    size_t s = 0;
    for (int i = 0; i < n; i++)
        s += iov[i].iov_len;
    return s;
}

#define NEXT(name) static __typeof__(name) *real; if (!real) real = dlsym(RTLD_NEXT, #name)

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    NEXT(pwrite);
    maybe_delay(n);
    return real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    NEXT(pwrite64);
    maybe_delay(n);
    return real(fd, buf, n, off);
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    NEXT(pwritev);
    maybe_delay(iov_bytes(iov, n));
    return real(fd, iov, n, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int n, off_t off)
{
    NEXT(pwritev64);
    maybe_delay(iov_bytes(iov, n));
    return real(fd, iov, n, off);
}

int fdatasync(int fd)
{
    NEXT(fdatasync);
    sleep_ms_between(0, fsync_ms);
    return real(fd);
}
