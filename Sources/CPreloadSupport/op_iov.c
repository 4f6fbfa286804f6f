/* blkfault_thread.h's per-thread buffers: part of libblkfault-engine.so, next to
 * the Swift code that reads them (the shim only calls the engine's C ABI). */
#include "blkfault_thread.h"

#include <sys/uio.h>

/* initial-exec: a load off %fs per access. The engine is dlopen'ed, so this takes
 * glibc's static TLS reserve, which the statically linked Swift runtime needs anyway. */
static __thread const struct iovec *op_iov __attribute__((tls_model("initial-exec")));
static __thread int32_t op_iovcnt __attribute__((tls_model("initial-exec")));

void blkfault_set_op_iov(const struct iovec *iov, int32_t n)
{
    op_iov = iov;
    op_iovcnt = n;
}

const struct iovec *blkfault_get_op_iov(void) { return op_iov; }

int32_t blkfault_get_op_iovcnt(void) { return op_iovcnt; }
