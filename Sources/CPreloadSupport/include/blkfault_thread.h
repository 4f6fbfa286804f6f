/* Small helpers the Swift side cannot reach through Glibc's module. */
#ifndef BLKFAULT_THREAD_H
#define BLKFAULT_THREAD_H
#include <stdint.h>
#include <unistd.h>
#include <sys/syscall.h>

static inline int32_t blkfault_current_tid(void) { return (int32_t)syscall(SYS_gettid); }

/* The buffers of the operation this thread is handing to the engine, so that the
 * engine's byte gatherer can be a closure that captures nothing (a capturing one
 * costs a heap allocation per operation). Set for the span of one before/after. */
struct iovec;
__attribute__((visibility("hidden"))) void blkfault_set_op_iov(const struct iovec *iov, int32_t n);
__attribute__((visibility("hidden"))) const struct iovec *blkfault_get_op_iov(void);
__attribute__((visibility("hidden"))) int32_t blkfault_get_op_iovcnt(void);

/* Whether fcntl(F_GETFL) flags include O_DIRECT, which Glibc's module does not export
 * (open_flags.c). */
__attribute__((visibility("hidden"))) int32_t blkfault_flags_direct(int32_t flags);

#endif
