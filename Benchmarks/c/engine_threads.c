/* The engine's cost per guest data read under threads, without the syscalls: dlopens
 * libblkfault-engine.so, attaches a qcow2 image, shows it the image's metadata reads
 * (header, tables, L2 tables: QEMU's open and first accesses), then T threads call
 * blkfault_engine_before for N 4 KiB reads of its data, as the shim does before each
 * pread. Cost per call is the threads' CPU time (CLOCK_THREAD_CPUTIME_ID: contention
 * spinning counts, waiting for the CPU does not) divided by the calls; the ratio at 8
 * threads over 1 is what the engine's locking adds (issue 7: at most 2x).
 * usage: engine_threads ENGINE.so IMAGE DATA_START DATA_BYTES THREADS [N]
 * (BLKFAULT_CONFIG names the rule file, as for the preload). Prints ns per call. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "thread_cpu.h"

typedef int32_t (*attach_fn)(const char *, int32_t);
typedef int32_t (*before_fn)(int32_t, int32_t, int32_t, int64_t, int64_t, const struct iovec *, int32_t);
typedef void (*after_fn)(int32_t, int32_t, int32_t, int64_t, int64_t, const struct iovec *, int32_t, int64_t, int32_t);

static before_fn before;
static int fd, handle;
static long per_thread;
static int64_t data_start, data_blocks;

static void *worker(void *arg)
{
    long id = (long)arg;
    static __thread char buf[4096];
    struct iovec v = {buf, sizeof buf};
    double start = cpu_ns();
    for (long i = 0; i < per_thread; i++) {
        int64_t block = (i * 7 + id * 1031) % data_blocks;
        int32_t r = before(handle, fd, 0, data_start + block * 4096, 4096, &v, 1);
        if (r != 0x10000) {
            fprintf(stderr, "engine_threads: before returned %d (not perform-without-after)\n", r);
            exit(1);
        }
    }
    return cpu_spent_since(start);
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s ENGINE.so IMAGE DATA_START DATA_BYTES THREADS [N]\n", argv[0]);
        return 2;
    }
    void *engine = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!engine) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    attach_fn attach = (attach_fn)dlsym(engine, "blkfault_engine_attach");
    before = (before_fn)dlsym(engine, "blkfault_engine_before");
    after_fn after = (after_fn)dlsym(engine, "blkfault_engine_after");
    char path[PATH_MAX];
    if (!attach || !before || !after || !realpath(argv[2], path)) return 1;
    data_start = atoll(argv[3]);
    data_blocks = atoll(argv[4]) / 4096;
    int threads = atoi(argv[5]);
    long total = argc > 6 ? atol(argv[6]) : 2000000;
    if (data_blocks < 1 || threads < 1 || threads > 64) return 2;
    per_thread = total / threads;
    fd = open(path, O_RDONLY);
    if (fd < 0 || (handle = attach(path, fd)) < 0) return 1;
    /* The metadata, read once through the engine as the shim would show it. */
    static char meta[65536];
    for (int64_t at = 0; at < data_start; at += sizeof meta) {
        size_t len = data_start - at < (int64_t)sizeof meta ? (size_t)(data_start - at) : sizeof meta;
        struct iovec v = {meta, len};
        if (before(handle, fd, 0, at, len, &v, 1) > 0) return 1;
        ssize_t n = pread(fd, meta, len, at);
        after(handle, fd, 0, at, len, &v, 1, n, 0);
    }
    /* One read of each data cluster first, single-threaded (the engine learns them). */
    static char buf[4096];
    struct iovec v = {buf, sizeof buf};
    for (int64_t b = 0; b < data_blocks; b += 16) before(handle, fd, 0, data_start + b * 4096, 4096, &v, 1);
    printf("%.1f\n", run_workers(threads, per_thread, worker));
    return 0;
}
