/* The contract between the C shim and the Swift engine (implemented in
 * Sources/BlkfaultPreload with @_cdecl; blkfault_engine_before enters in
 * Sources/CPreloadSupport/engine_entry.c). The shim calls these only for fds
 * of matching images, with its re-entrancy guard held and errno saved.
 * The engine is its own library, libblkfault-engine.so, which exports these
 * eight names and nothing else; the shim dlopens it (shim/engine.c) at the first
 * open of a matching image and calls them through pointers it looks up once. */
#ifndef BLKFAULT_ENGINE_H
#define BLKFAULT_ENGINE_H

#include <stdint.h>
#include <sys/uio.h>

#include "blkfault_steady_read.h"

/* What reached the image file. Mirrors blkdebug's iotypes where one exists. */
enum blkfault_op {
    BLKFAULT_OP_READ = 0,         /* pread*, preadv*, read, readv, copy_file_range source */
    BLKFAULT_OP_WRITE = 1,        /* pwrite*, pwritev*, write, writev, copy_file_range target */
    BLKFAULT_OP_WRITE_ZEROES = 2, /* fallocate ZERO_RANGE, or PUNCH_HOLE without KEEP_SIZE */
    BLKFAULT_OP_DISCARD = 3,      /* fallocate PUNCH_HOLE|KEEP_SIZE */
    BLKFAULT_OP_FLUSH = 4,        /* fsync, fdatasync, sync_file_range(WAIT_AFTER) */
    BLKFAULT_OP_TRUNCATE = 5,     /* ftruncate: never rule-checked (blkdebug passes it through) */
    BLKFAULT_OP_ALLOCATE = 6,     /* fallocate mode 0 / posix_fallocate: never rule-checked */
    BLKFAULT_OP_STAT = 7,         /* fstat64: never rule-checked, offset/length 0 (QEMU's
                                     metadata-preallocation check starts with one) */
};

/* How the shim (shim/) uses this contract:
 * - Calls arrive on any thread, concurrently; the engine locks its own state.
 * - Every call is made with the shim's per-thread guard held: libc I/O the
 *   engine does itself (reading the image, writing a trace) goes straight to libc,
 *   untracked. errno is saved by the shim; the engine need not preserve it.
 * - A handle names an image, not an fd: the shim copies it, without telling the
 *   engine, to fds made by dup/dup2/dup3/fcntl(F_DUPFD*), so several fds can carry
 *   one handle and detach comes once per fd. fds >= 65536 are never tracked.
 * - A thread doing I/O while another closes the fd may call before/after with a
 *   handle after its detach: handles must stay valid (or be ignored) after detach,
 *   and must not be reused for another image.
 * - Targets: BLKFAULT_IMAGE globs (fnmatch, flags 0) on the absolute path as
 *   opened and on the realpath; unset: regular files starting with the qcow2
 *   magic. Nothing is attached unless BLKFAULT_CONFIG or BLKFAULT_TRACE is set. */

/* Called after a successful open of a matching image. `path` is the resolved
 * absolute path. Returns an image handle >= 0 for the shim to keep with the fd,
 * or -1 if the engine will not follow this file. On a bad configuration the
 * engine prints "blkfault: FILE:LINE: problem" and terminates the process (exit 1)
 * before any I/O reaches the image. */
int32_t blkfault_engine_attach(const char *path, int32_t fd);

/* Called after a successful open of a file that is not a target, while at least one
 * fd is tracked (O_PATH opens excepted), with the guard held and errno saved like
 * attach. The engine reads the fd's /proc/self/fd link: if the file is in the backing
 * chain of a followed qcow2 overlay (the name in the overlay's header, relative to the
 * overlay's directory; then the name in that file's header, and so on), returns a
 * handle >= 0 for the shim to keep with the fd exactly like attach's (copied by dup,
 * detached on close), else -1. before on that handle always returns 0 (its I/O is
 * shown to the overlay's engine as backing I/O, never checked against the rules). */
int32_t blkfault_engine_attach_backing(int32_t fd);

/* Before an operation on a tracked fd. offset/length: the byte range; for
 * read/write/readv/writev and pwritev2/preadv2 with offset -1 the file position
 * (end of file for appending writes), -1 if the fd is not seekable. FLUSH: 0/0
 * for fsync/fdatasync and the flush of a RWF_DSYNC/RWF_SYNC pwritev2 (asked after
 * its WRITE succeeded), the range for sync_file_range (length 0 = to EOF).
 * TRUNCATE: offset = the new size, length 0. iov/iovcnt: the caller's buffers for
 * reads and writes (one entry for pread/pwrite/read/write), NULL/0 otherwise
 * (copy_file_range too). Returns:
 *    0  perform it, then call blkfault_engine_after;
 *   BLKFAULT_PERFORM_NO_AFTER  perform it, and do not call blkfault_engine_after
 *      (it would do nothing: a read of guest data or a flush that nothing traces,
 *      or a guest data read or write that the engine's steady pre-filter let through);
 *   >0  do not perform it: fail with this errno (always < BLKFAULT_PERFORM_NO_AFTER);
 *   <0  do not perform it: report success (blkdebug's negative errno). */
#define BLKFAULT_PERFORM_NO_AFTER 0x10000
int32_t blkfault_engine_before(int32_t image, int32_t fd, int32_t op,
                               int64_t offset, int64_t length,
                               const struct iovec *iov, int32_t iovcnt);

/* blkfault_engine_before without its first step, the steady pre-filter's check: for a
 * request the caller has just asked blkfault_steady_check about (the same answer, ~70
 * instructions fewer; the check is only a shortcut to what the engine decides). */
int32_t blkfault_engine_before_unfiltered(int32_t image, int32_t fd, int32_t op,
                                          int64_t offset, int64_t length,
                                          const struct iovec *iov, int32_t iovcnt);

/* The engine's steady pre-filter (blkfault_steady_read.h): the table of its published
 * state, one slot per image handle, which lives as long as the process. The shim's hot
 * entry points (pread*, pwrite*, preadv*, pwritev*) run blkfault_steady_check on it
 * themselves, without the guard: a READ or WRITE at an explicit offset, carrying no
 * flush, that the check lets through is performed with no before and no after call,
 * exactly as if before had returned BLKFAULT_PERFORM_NO_AFTER (before runs the same
 * check first). Asked once, when the engine is loaded. */
blkfault_steady_table *blkfault_engine_steady_table(void);

/* After a performed operation: result is the syscall's return value, error its
 * errno (0 on success). For reads the iovecs hold what was read. Not called for
 * refused or pretended operations, nor when blkfault_engine_before returned
 * BLKFAULT_PERFORM_NO_AFTER. posix_fallocate
 * (which returns an error number) is reported as result -1 / error = that number on
 * failure. */
void blkfault_engine_after(int32_t image, int32_t fd, int32_t op,
                           int64_t offset, int64_t length,
                           const struct iovec *iov, int32_t iovcnt,
                           int64_t result, int32_t error);

/* The fd no longer refers to the image (close, or dup2 over it). */
void blkfault_engine_detach(int32_t image, int32_t fd);

/* A way to a tracked image around the hooked calls was noticed: I/O the engine
 * will not see. The call itself is forwarded untouched. `what` is a short static
 * string naming the way, one of
 *   "linux-aio (io_submit)"   an iocb on the fd that the shim passes to the kernel:
 *                             through syscall(), with BLKFAULT_AIO=report, or one it
 *                             cannot perform itself (hooks.c: io_submit_hook)
 *   "io_uring (a ring was set up while it was open)"
 *                             io_uring_queue_init* (or the io_uring_setup syscall)
 *                             succeeded while the image was open; reported for
 *                             every tracked image, as a ring does not say its files
 *   "io_uring (registered file)"  io_uring_register_files*
 *   "mmap"                    a file mapping of the fd (mmap, mmap64, syscall())
 *   "syscall()"               I/O on the fd through glibc's syscall() wrapper
 * May come many times per image and from several threads; the engine reports
 * once per image per process. */
void blkfault_engine_bypass(int32_t image, const char *what);

/* At exit (an atexit handler the shim registers at the first attach), with the
 * guard held: the engine compares each image it follows with what it saw written
 * (size, qcow2 header, L1 table) and reports a change it did not see as
 * "blkfault: I/O bypassed blkfault on IMAGE: ..." on stderr and in the trace. */
void blkfault_engine_exit(void);

#endif
