/* blkfault_lock.h's slow paths: the classic three-state futex lock. */
#include "blkfault_lock.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

void blkfault_lock_slow(uint32_t *word)
{
    /* Spin first: the holder is usually about to release it. */
    for (int i = 0; i < 100; i++) {
        uint32_t expected = 0;
        if (__atomic_load_n(word, __ATOMIC_RELAXED) == 0
            && __atomic_compare_exchange_n(word, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    /* Mark it contended and sleep until the holder's release wakes one waiter; a
     * thread that gets it this way keeps it marked, as others may still sleep. */
    while (__atomic_exchange_n(word, 2, __ATOMIC_ACQUIRE) != 0)
        syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, 2, (void *)0, (void *)0, 0);
}

void blkfault_unlock_wake(uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, (void *)0, (void *)0, 0);
}
