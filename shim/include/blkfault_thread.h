/* Small helpers the Swift side cannot reach through Glibc's module. */
#ifndef BLKFAULT_THREAD_H
#define BLKFAULT_THREAD_H
#include <stdint.h>
#include <unistd.h>
#include <sys/syscall.h>

static inline int32_t blkfault_current_tid(void) { return (int32_t)syscall(SYS_gettid); }

#endif
