/* The matched I/O path under threads: T threads each do N cached 4 KiB preads of a
 * qcow2 image's guest data (as QEMU's worker threads do), after reading its metadata
 * once so that blkfault's engine knows the data clusters. Cost per pread is the
 * threads' CPU time (CLOCK_THREAD_CPUTIME_ID, so contention spinning counts) divided
 * by the preads; run once without LD_PRELOAD and once matched: the difference is what
 * blkfault adds per request, at 1 thread and at 8.
 * usage: threads IMAGE DATA_START DATA_BYTES THREADS [N]   prints ns CPU per pread. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "thread_cpu.h"

static int fd;
static long per_thread;
static off_t data_start, data_blocks;

static void *worker(void *arg)
{
    long id = (long)arg;
    char buf[4096];
    double start = cpu_ns();
    for (long i = 0; i < per_thread; i++) {
        /* Threads spread over the data, as a queue of 64 requests would. */
        off_t block = (i * 7 + id * 1031) % data_blocks;
        if (pread(fd, buf, sizeof buf, data_start + block * 4096) < 0) {
            perror("pread");
            exit(1);
        }
    }
    return cpu_spent_since(start);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s IMAGE DATA_START DATA_BYTES THREADS [N]\n", argv[0]);
        return 2;
    }
    data_start = atoll(argv[2]);
    data_blocks = atoll(argv[3]) / 4096;
    int threads = atoi(argv[4]);
    long total = argc > 5 ? atol(argv[5]) : 800000;
    if (data_blocks < 1 || threads < 1 || threads > 64) return 2;
    per_thread = total / threads;
    fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    /* QEMU's open and first accesses: header, tables, L2 tables (all before the data). */
    static char meta[65536];
    for (off_t at = 0; at < data_start; at += sizeof meta)
        if (pread(fd, meta, data_start - at < (off_t)sizeof meta ? (size_t)(data_start - at) : sizeof meta, at) < 0) {
            perror("pread");
            return 1;
        }
    printf("%.1f\n", run_workers(threads, per_thread, worker));
    return 0;
}
