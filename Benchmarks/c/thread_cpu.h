/* What threads.c and engine_threads.c share: each worker's CPU time (so contention
 * spinning counts) and running T workers to get the CPU nanoseconds per request. */
#ifndef THREAD_CPU_H
#define THREAD_CPU_H
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

static inline double cpu_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

/* A worker's result: its CPU time, from `start`, in a heap cell the joiner frees. */
static inline void *cpu_spent_since(double start)
{
    double *spent = malloc(sizeof *spent);
    *spent = cpu_ns() - start;
    return spent;
}

/* Runs `threads` workers (argument: their index, 0...) and returns the CPU nanoseconds
 * per request, `per_thread` requests each. */
static inline double run_workers(int threads, long per_thread, void *(*worker)(void *))
{
    pthread_t t[64];
    for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    double spent = 0;
    for (int i = 0; i < threads; i++) {
        void *r;
        pthread_join(t[i], &r);
        spent += *(double *)r;
        free(r);
    }
    return spent / (per_thread * threads);
}
#endif
