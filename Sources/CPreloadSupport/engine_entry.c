/* blkfault_engine_before (shim/include/blkfault_engine.h) starts here, in C: a request
 * the steady pre-filter lets through is answered before any Swift runs (~11
 * instructions a request fewer than through the Swift entry); the others go on to the engine
 * (Preload.swift's blkfault_preload_before). */
#include "blkfault_steady.h"

#include <stdint.h>
#include <sys/uio.h>

/* BLKFAULT_PERFORM_NO_AFTER in blkfault_engine.h. */
#define PERFORM_NO_AFTER 0x10000

int32_t blkfault_preload_before(int32_t image, int32_t fd, int32_t op, int64_t offset, int64_t length,
                                const struct iovec *iov, int32_t iovcnt);

int32_t blkfault_engine_before(int32_t image, int32_t fd, int32_t op, int64_t offset, int64_t length,
                               const struct iovec *iov, int32_t iovcnt)
{
    if (blkfault_steady_allows(image, op, offset, length))
        return PERFORM_NO_AFTER;
    return blkfault_preload_before(image, fd, op, offset, length, iov, iovcnt);
}

int32_t blkfault_engine_before_unfiltered(int32_t image, int32_t fd, int32_t op, int64_t offset, int64_t length,
                                          const struct iovec *iov, int32_t iovcnt)
{
    return blkfault_preload_before(image, fd, op, offset, length, iov, iovcnt);
}
