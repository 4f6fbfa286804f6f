/* The lock around each image's engine (LockedEngine.withLock): a futex word, taken
 * and released inline with one atomic instruction each when nobody waits. A pthread
 * mutex cost ~67 instructions a request (two calls through the PLT, its type and owner
 * bookkeeping): 1.7 M of a 20 GiB qemu-img check's ~40 M (issue 7, callgrind).
 * Contended, it spins briefly (the engine holds it well under a microsecond) and then
 * sleeps in the kernel (lock.c). */
#ifndef BLKFAULT_LOCK_H
#define BLKFAULT_LOCK_H
#include <stdint.h>

/* 0 free, 1 held, 2 held with (possible) sleepers. */
__attribute__((visibility("hidden"))) void blkfault_lock_slow(uint32_t *word);
__attribute__((visibility("hidden"))) void blkfault_unlock_wake(uint32_t *word);

static inline __attribute__((always_inline)) void blkfault_lock(uint32_t *word)
{
    uint32_t expected = 0;
    if (!__atomic_compare_exchange_n(word, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        blkfault_lock_slow(word);
}

static inline __attribute__((always_inline)) void blkfault_unlock(uint32_t *word)
{
    if (__atomic_exchange_n(word, 0, __ATOMIC_RELEASE) == 2)
        blkfault_unlock_wake(word);
}

#endif
