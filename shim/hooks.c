/* The entry points. Each row of hooks.def becomes a wrapper (generated at the
 * bottom of this file) that calls its family's helper with the symbol's id; a
 * helper describes the call to the gate (core.c) and has a perform callback that
 * calls the real function of that id. Members of a family share one prototype
 * (checked at compile time), so the real call is typed, not cast. */
#include "shim.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

/* Positional reads and writes of a family: the offset is the call's own. */
#define IOV_REQ(sym_, fd_, op_, off_, iov_, cnt_)                                   \
    .sym = (sym_), .fd = (fd_), .op = (op_), .off = (off_), .len = SHIM_IOVLEN,     \
    .iov = (iov_), .iovcnt = (cnt_), .fake = SHIM_IOVLEN
/* IOV_REQ with its iovec and count given by one macro (STEADY's shapes). */
#define IOV_REQ_OF(...) IOV_REQ(__VA_ARGS__)

#define ARGS(...) __VA_ARGS__

/* ---- opening ---- */

typedef open_fn fam_open;
typedef openat_fn fam_openat;
typedef creat_fn fam_creat;
typedef __open_2_fn fam_open_2;
typedef __openat_2_fn fam_openat_2;

static mode_t open_mode(int flags, va_list ap)
{
    /* Like glibc: the mode argument exists only with O_CREAT or O_TMPFILE. */
    if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
        return (mode_t)va_arg(ap, int);
    return 0;
}

static int open_hook(enum shim_sym sym, const char *path, int flags, va_list ap)
{
    mode_t mode = open_mode(flags, ap);
    return shim_opened(REAL_AS(fam_open, sym)(path, flags, mode), AT_FDCWD, path, flags);
}

static int openat_hook(enum shim_sym sym, int dirfd, const char *path, int flags, va_list ap)
{
    mode_t mode = open_mode(flags, ap);
    return shim_opened(REAL_AS(fam_openat, sym)(dirfd, path, flags, mode), dirfd, path, flags);
}

static int creat_hook(enum shim_sym sym, const char *path, mode_t mode)
{
    return shim_opened(REAL_AS(fam_creat, sym)(path, mode), AT_FDCWD, path,
                       O_CREAT | O_WRONLY | O_TRUNC);
}

static int open_2_hook(enum shim_sym sym, const char *path, int flags)
{
    return shim_opened(REAL_AS(fam_open_2, sym)(path, flags), AT_FDCWD, path, flags);
}

static int openat_2_hook(enum shim_sym sym, int dirfd, const char *path, int flags)
{
    return shim_opened(REAL_AS(fam_openat_2, sym)(dirfd, path, flags), dirfd, path, flags);
}

/* ---- fd bookkeeping ---- */

typedef close_fn fam_close;
typedef dup_fn fam_dup;
typedef dup2_fn fam_dup2;
typedef dup3_fn fam_dup3;
typedef fcntl_fn fam_fcntl;

static int close_hook(enum shim_sym sym, int fd)
{
    shim_closing(fd);
    return REAL_AS(fam_close, sym)(fd);
}

#if __GLIBC_PREREQ(2, 34)
typedef close_range_fn fam_close_range;

static int close_range_hook(enum shim_sym sym, unsigned first, unsigned last, int flags)
{
    /* CLOSE_RANGE_CLOEXEC closes nothing now; invalid calls close nothing. */
    if (first <= last && (flags & ~(int)CLOSE_RANGE_UNSHARE) == 0)
        shim_closing_range(first, last);
    return REAL_AS(fam_close_range, sym)(first, last, flags);
}
#endif

static int dup_hook(enum shim_sym sym, int fd)
{
    int r = REAL_AS(fam_dup, sym)(fd);
    if (r >= 0)
        shim_duplicated(fd, r);
    return r;
}

static int dup2_hook(enum shim_sym sym, int fd, int fd2)
{
    int r = REAL_AS(fam_dup2, sym)(fd, fd2);
    if (r >= 0)
        shim_duplicated(fd, r);
    return r;
}

static int dup3_hook(enum shim_sym sym, int fd, int fd2, int flags)
{
    int r = REAL_AS(fam_dup3, sym)(fd, fd2, flags);
    if (r >= 0)
        shim_duplicated(fd, r);
    return r;
}

static int fcntl_hook(enum shim_sym sym, int fd, int cmd, va_list ap)
{
    /* The third argument is an int, a pointer or absent depending on cmd; like
     * glibc's own fcntl, take it as a pointer-sized word and pass it on. */
    void *arg = va_arg(ap, void *);
    int r = REAL_AS(fam_fcntl, sym)(fd, cmd, arg);
    if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
        shim_duplicated(fd, r);
    return r;
}

/* ---- reads ---- */

typedef read_fn fam_read;
typedef __read_chk_fn fam_read_chk;
typedef pread64_fn fam_pread;
typedef __pread64_chk_fn fam_pread_chk;
typedef readv_fn fam_readv;
typedef preadv64_fn fam_preadv;
typedef preadv64v2_fn fam_preadv2;

static int64_t do_read(const struct shim_req *r)
{
    return REAL_AS(fam_read, r->sym)(r->fd, r->iov->iov_base, r->iov->iov_len);
}

__attribute__((noinline)) static ssize_t read_tracked(enum shim_sym sym, int fd, void *buf, size_t n)
{
    struct iovec v = {buf, n};
    return shim_io(&(struct shim_req){IOV_REQ(sym, fd, BLKFAULT_OP_READ, SHIM_POS, &v, 1)}, do_read);
}

/* Untracked fds (nearly every call) go to libc before anything is built. */
static ssize_t read_hook(enum shim_sym sym, int fd, void *buf, size_t n)
{
    if (SHIM_UNTRACKED(fd))
        return REAL_AS(fam_read, sym)(fd, buf, n);
    return read_tracked(sym, fd, buf, n);
}

static int64_t do_read_chk(const struct shim_req *r)
{
    return REAL_AS(fam_read_chk, r->sym)(r->fd, r->iov->iov_base, r->iov->iov_len, r->buflen);
}

static ssize_t read_chk_hook(enum shim_sym sym, int fd, void *buf, size_t n, size_t buflen)
{
    struct iovec v = {buf, n};
    struct shim_req r = {IOV_REQ(sym, fd, BLKFAULT_OP_READ, SHIM_POS, &v, 1), .buflen = buflen};
    return n > buflen ? do_read_chk(&r) /* the real one aborts */ : shim_io(&r, do_read_chk);
}

static int64_t do_pread_chk(const struct shim_req *r)
{
    return REAL_AS(fam_pread_chk, r->sym)(r->fd, r->iov->iov_base, r->iov->iov_len, r->arg_off,
                                          r->buflen);
}

static ssize_t pread_chk_hook(enum shim_sym sym, int fd, void *buf, size_t n, off64_t off,
                              size_t buflen)
{
    struct iovec v = {buf, n};
    struct shim_req r = {IOV_REQ(sym, fd, BLKFAULT_OP_READ, off, &v, 1), .arg_off = off,
                         .buflen = buflen};
    return n > buflen ? do_pread_chk(&r) : shim_io(&r, do_pread_chk);
}

static int64_t do_readv(const struct shim_req *r)
{
    return REAL_AS(fam_readv, r->sym)(r->fd, r->iov, r->iovcnt);
}

static ssize_t readv_hook(enum shim_sym sym, int fd, const struct iovec *iov, int cnt)
{
    return shim_io(&(struct shim_req){IOV_REQ(sym, fd, BLKFAULT_OP_READ, SHIM_POS, iov, cnt)},
                   do_readv);
}

static int64_t do_preadv2(const struct shim_req *r)
{
    return REAL_AS(fam_preadv2, r->sym)(r->fd, r->iov, r->iovcnt, r->arg_off, r->flags);
}

static ssize_t preadv2_hook(enum shim_sym sym, int fd, const struct iovec *iov, int cnt, off64_t off,
                            int flags)
{
    int64_t at = off == -1 ? SHIM_POS : off;
    return shim_io(&(struct shim_req){IOV_REQ(sym, fd, BLKFAULT_OP_READ, at, iov, cnt), .arg_off = off,
                                      .flags = flags},
                   do_preadv2);
}

/* ---- writes ----
 * write/writev/pwritev2(-1) on an O_APPEND fd are reported at the end of file;
 * pwrite* on an O_APPEND fd (which Linux appends too) at the offset given. */

typedef write_fn fam_write;
typedef pwrite64_fn fam_pwrite;
typedef writev_fn fam_writev;
typedef pwritev64_fn fam_pwritev;
typedef pwritev64v2_fn fam_pwritev2;
typedef copy_file_range_fn fam_copy_file_range;

static int64_t do_write(const struct shim_req *r)
{
    return REAL_AS(fam_write, r->sym)(r->fd, r->iov->iov_base, r->iov->iov_len);
}

__attribute__((noinline)) static ssize_t write_tracked(enum shim_sym sym, int fd, const void *buf, size_t n)
{
    struct iovec v = {(void *)buf, n};
    return shim_io(&(struct shim_req){IOV_REQ(sym, fd, BLKFAULT_OP_WRITE, SHIM_POS, &v, 1)}, do_write);
}

static ssize_t write_hook(enum shim_sym sym, int fd, const void *buf, size_t n)
{
    if (SHIM_UNTRACKED(fd))
        return REAL_AS(fam_write, sym)(fd, buf, n);
    return write_tracked(sym, fd, buf, n);
}

static int64_t do_writev(const struct shim_req *r)
{
    return REAL_AS(fam_writev, r->sym)(r->fd, r->iov, r->iovcnt);
}

static ssize_t writev_hook(enum shim_sym sym, int fd, const struct iovec *iov, int cnt)
{
    return shim_io(&(struct shim_req){IOV_REQ(sym, fd, BLKFAULT_OP_WRITE, SHIM_POS, iov, cnt)},
                   do_writev);
}

static int64_t do_pwritev2(const struct shim_req *r)
{
    return REAL_AS(fam_pwritev2, r->sym)(r->fd, r->iov, r->iovcnt, r->arg_off, r->flags);
}

/* RWF_DSYNC/RWF_SYNC: the gate reports a WRITE, then a FLUSH. */
static ssize_t pwritev2_hook(enum shim_sym sym, int fd, const struct iovec *iov, int cnt,
                             off64_t off, int flags)
{
    int64_t at = off == -1 || (flags & RWF_APPEND) ? SHIM_POS : off;
    return shim_io(&(struct shim_req){IOV_REQ(sym, fd, BLKFAULT_OP_WRITE, at, iov, cnt), .arg_off = off,
                                      .flags = flags},
                   do_pwritev2);
}

static int64_t do_copy_file_range(const struct shim_req *r)
{
    return REAL_AS(fam_copy_file_range, r->sym)(r->fd, r->arg_ptr, r->arg_fd2, r->arg_ptr2,
                                                (size_t)r->arg_len, (unsigned)r->flags);
}

/* A READ on the source and a WRITE on the target, either or both tracked. */
static ssize_t copy_file_range_hook(enum shim_sym sym, int infd, off64_t *inoff, int outfd,
                                    off64_t *outoff, size_t n, unsigned flags)
{
    int32_t image[2] = {shim_fd_image(infd), shim_fd_image(outfd)};
    struct shim_req r[2] = {
        {.sym = sym, .fd = infd, .op = BLKFAULT_OP_READ, .off = inoff ? *inoff : SHIM_POS,
         .len = (int64_t)n, .fake = (int64_t)n, .arg_ptr = inoff, .arg_fd2 = outfd,
         .arg_ptr2 = outoff, .arg_len = (int64_t)n, .flags = (int)flags},
        {.sym = sym, .fd = outfd, .op = BLKFAULT_OP_WRITE, .off = outoff ? *outoff : SHIM_POS,
         .len = (int64_t)n},
    };
    if (SHIM_LIKELY(image[0] < 0 && image[1] < 0))
        return do_copy_file_range(r);
    return shim_gate(2, image, r, do_copy_file_range);
}

/* ---- the steady families ----
 * pread, preadv, pwrite and pwritev (and their 64 rows) are the hot positional data
 * calls. Untracked fds go to libc before anything is built; on a tracked fd the
 * steady pre-filter is asked first (shim.h: shim_steady_at), and what it lets
 * through goes straight to libc too; the rest is built into a request for the gate
 * (shim_io_gated). _tracked and _gated stay out of line so that _hook, inlined into
 * each wrapper, is only the untracked test. One row per family:
 *
 *   X(family, op, data, shape)
 *
 * data    the data parameters of the family's prototype, between fd and the offset
 * shape   ONE_BUF (`buf`, `n`) or VECTOR (`iov`, `cnt`): the *_ARGS, *_LEN, *_DECL,
 *         *_VEC and *_FROM_REQ macros below say how each is passed on, measured,
 *         made the request's iovec and read back from the request.
 */
#define STEADY_FAMILIES(X)                                                                 \
    X(pread,   BLKFAULT_OP_READ,  (void *buf, size_t n),              ONE_BUF)              \
    X(preadv,  BLKFAULT_OP_READ,  (const struct iovec *iov, int cnt), VECTOR)               \
    X(pwrite,  BLKFAULT_OP_WRITE, (const void *buf, size_t n),        ONE_BUF)              \
    X(pwritev, BLKFAULT_OP_WRITE, (const struct iovec *iov, int cnt), VECTOR)

#define ONE_BUF_ARGS      buf, n
#define ONE_BUF_LEN       (int64_t)n
#define ONE_BUF_DECL      struct iovec v = {(void *)buf, n};
#define ONE_BUF_VEC       &v, 1
#define ONE_BUF_FROM_REQ  r->iov->iov_base, r->iov->iov_len

#define VECTOR_ARGS       iov, cnt
#define VECTOR_LEN        shim_iov_total(iov, cnt)
#define VECTOR_DECL
#define VECTOR_VEC        iov, cnt
#define VECTOR_FROM_REQ   r->iov, r->iovcnt

#define STEADY(family, op, data, shape)                                                    \
    static int64_t do_##family(const struct shim_req *r)                                   \
    {                                                                                      \
        return REAL_AS(fam_##family, r->sym)(r->fd, shape##_FROM_REQ, r->arg_off);         \
    }                                                                                      \
                                                                                           \
    __attribute__((noinline)) static ssize_t family##_gated(int fd, ARGS data, off64_t off, \
                                                            enum shim_sym sym)             \
    {                                                                                      \
        shape##_DECL                                                                       \
        return shim_io_gated(&(struct shim_req){IOV_REQ_OF(sym, fd, op, off, shape##_VEC), \
                                                .arg_off = off},                           \
                             do_##family);                                                 \
    }                                                                                      \
                                                                                           \
    __attribute__((noinline)) static ssize_t family##_tracked(int fd, ARGS data, off64_t off, \
                                                              enum shim_sym sym)           \
    {                                                                                      \
        if (shim_steady_at(fd, op, off, shape##_LEN))                                      \
            return REAL_AS(fam_##family, sym)(fd, shape##_ARGS, off);                      \
        return family##_gated(fd, shape##_ARGS, off, sym);                                 \
    }                                                                                      \
                                                                                           \
    /* sym last in _tracked: the wrapper's arguments stay in their registers (issue 7). */ \
    static ssize_t family##_hook(enum shim_sym sym, int fd, ARGS data, off64_t off)        \
    {                                                                                      \
        if (SHIM_UNTRACKED(fd))                                                            \
            return REAL_AS(fam_##family, sym)(fd, shape##_ARGS, off);                      \
        return family##_tracked(fd, shape##_ARGS, off, sym);                               \
    }

STEADY_FAMILIES(STEADY)

#undef STEADY

/* ---- flushes ---- */

typedef fsync_fn fam_sync;
typedef sync_file_range_fn fam_sync_file_range;

static int64_t do_sync(const struct shim_req *r)
{
    return REAL_AS(fam_sync, r->sym)(r->fd);
}

static int sync_hook(enum shim_sym sym, int fd)
{
    return shim_io(&(struct shim_req){.sym = sym, .fd = fd, .op = BLKFAULT_OP_FLUSH}, do_sync);
}

static int64_t do_sync_file_range(const struct shim_req *r)
{
    return REAL_AS(fam_sync_file_range, r->sym)(r->fd, r->arg_off, r->arg_len, (unsigned)r->flags);
}

/* Only a range sync that waits for the writeback is a flush; the others are
 * forwarded unseen. The engine gets the range (n == 0: to the end of file). */
static int sync_file_range_hook(enum shim_sym sym, int fd, off64_t off, off64_t n, unsigned flags)
{
    struct shim_req r = {.sym = sym, .fd = fd, .op = BLKFAULT_OP_FLUSH, .off = off, .len = n,
                         .arg_off = off, .arg_len = n, .flags = (int)flags};
    if (!(flags & SYNC_FILE_RANGE_WAIT_AFTER))
        return (int)do_sync_file_range(&r);
    return (int)shim_io(&r, do_sync_file_range);
}

/* ---- size and allocation ---- */

typedef fallocate64_fn fam_fallocate;
typedef posix_fallocate64_fn fam_posix_fallocate;
typedef ftruncate64_fn fam_ftruncate;

static int64_t do_fallocate(const struct shim_req *r)
{
    return REAL_AS(fam_fallocate, r->sym)(r->fd, r->flags, r->arg_off, r->arg_len);
}

/* The operation a fallocate mode performs, -1 for the modes blkdebug has no
 * request for (collapse/insert/unshare range), which are forwarded unseen. */
static int32_t fallocate_op(int mode)
{
    if (mode & FALLOC_FL_PUNCH_HOLE)
        return (mode & FALLOC_FL_KEEP_SIZE) ? BLKFAULT_OP_DISCARD : BLKFAULT_OP_WRITE_ZEROES;
    if (mode & FALLOC_FL_ZERO_RANGE)
        return BLKFAULT_OP_WRITE_ZEROES;
    if ((mode & ~FALLOC_FL_KEEP_SIZE) == 0)
        return BLKFAULT_OP_ALLOCATE;
    return -1;
}

static int fallocate_hook(enum shim_sym sym, int fd, int mode, off64_t off, off64_t len)
{
    struct shim_req r = {.sym = sym, .fd = fd, .op = fallocate_op(mode), .off = off, .len = len,
                         .arg_off = off, .arg_len = len, .flags = mode};
    if (r.op < 0)
        return (int)do_fallocate(&r);
    return (int)shim_io(&r, do_fallocate);
}

static int64_t do_posix_fallocate(const struct shim_req *r)
{
    return REAL_AS(fam_posix_fallocate, r->sym)(r->fd, r->arg_off, r->arg_len);
}

/* Returns an error number instead of setting errno: the gate knows (errret). */
static int posix_fallocate_hook(enum shim_sym sym, int fd, off64_t off, off64_t len)
{
    return (int)shim_io(&(struct shim_req){.sym = sym, .fd = fd, .op = BLKFAULT_OP_ALLOCATE,
                                           .off = off, .len = len, .arg_off = off, .arg_len = len,
                                           .errret = 1},
                        do_posix_fallocate);
}

static int64_t do_ftruncate(const struct shim_req *r)
{
    return REAL_AS(fam_ftruncate, r->sym)(r->fd, r->arg_len);
}

/* TRUNCATE: offset = the new length, length 0. */
static int ftruncate_hook(enum shim_sym sym, int fd, off64_t len)
{
    return (int)shim_io(&(struct shim_req){.sym = sym, .fd = fd, .op = BLKFAULT_OP_TRUNCATE,
                                           .off = len, .len = 0, .arg_len = len},
                        do_ftruncate);
}

typedef fstat64_fn fam_fstat;

static int64_t do_fstat(const struct shim_req *r)
{
    return REAL_AS(fam_fstat, r->sym)(r->fd, r->arg_ptr);
}

/* STAT: offset and length 0; the engine never fails it. A target's allocated size is
 * reported as at least its length with BLKFAULT_ALLOCATED_SIZE=length (allocation.c). */
static int fstat_hook(enum shim_sym sym, int fd, struct stat64 *st)
{
    int rc = (int)shim_io(&(struct shim_req){.sym = sym, .fd = fd, .op = BLKFAULT_OP_STAT,
                                             .off = 0, .len = 0, .arg_ptr = st},
                          do_fstat);
    if (rc == 0 && st != NULL && !SHIM_UNTRACKED(fd))
        shim_stat_seen(fd, st);
    return rc;
}

/* ---- bypasses ----
 * Every helper forwards the call as it is; none decides or fails anything. They
 * cost one load (shim_tracking, shim_fd_image) while no image fd is tracked. */

/* linux-aio. libaio's struct iocb is the kernel's (linux/aio_abi.h): libaio hands the
 * array to io_submit(2) as it is. The fd is the u32 at offset 20 on every Linux ABI,
 * after aio_data, aio_key/aio_rw_flags (in either order) and aio_lio_opcode/aio_reqprio.
 * Only that prefix is declared here, so that libaio.h is not needed. */
struct shim_iocb_head {
    uint64_t aio_data;
    uint32_t aio_key_or_rw_flags[2];
    uint16_t aio_lio_opcode;
    int16_t aio_reqprio;
    uint32_t aio_fildes;
};
_Static_assert(offsetof(struct shim_iocb_head, aio_fildes) == 20,
               "struct iocb: aio_fildes is at offset 20 in the kernel ABI");

static const char aio_what[] = "linux-aio (io_submit)";

/* Read before the submission: once submitted, an iocb may complete and be reused. */
static void bypass_iocbs(long nr, struct iocb *const *iocbs)
{
    if (iocbs == NULL)
        return;
    for (long i = 0; i < nr; i++) {
        const char *cb = (const char *)iocbs[i];
        if (cb == NULL)
            continue; /* the kernel fails the call with EFAULT */
        uint32_t fd;
        memcpy(&fd, cb + offsetof(struct shim_iocb_head, aio_fildes), sizeof fd);
        shim_bypass_fd((int)fd, aio_what);
    }
}

typedef io_submit_fn fam_io_submit;

/* The rest of the kernel's struct iocb (linux/aio_abi.h), after the head above. */
struct shim_iocb {
    struct shim_iocb_head h;
    uint64_t aio_buf;
    uint64_t aio_nbytes;
    int64_t aio_offset;
    uint64_t aio_reserved2;
    uint32_t aio_flags;
    uint32_t aio_resfd;
};
_Static_assert(sizeof(struct shim_iocb) == 64, "struct iocb is 64 bytes in the kernel ABI");
/* aio_key and aio_rw_flags share 8 bytes, in byte order (linux/aio_abi.h's PADDED). */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define IOCB_RW_FLAGS 1
#else
#define IOCB_RW_FLAGS 0
#endif
enum { SHIM_IOCB_PREAD = 0, SHIM_IOCB_PWRITE = 1, SHIM_IOCB_FSYNC = 2, SHIM_IOCB_FDSYNC = 3,
       SHIM_IOCB_PREADV = 7, SHIM_IOCB_PWRITEV = 8, SHIM_IOCB_FLAG_RESFD = 1 };

/* Performs a linux-aio request on a tracked fd synchronously through the hooked
 * calls, so the engine sees, traces and may fail it like any other. Returns the
 * io_event result the kernel would have given: bytes done, or -errno. */
static int64_t aio_perform(const struct shim_iocb *cb)
{
    struct iovec one = {(void *)(uintptr_t)cb->aio_buf, (size_t)cb->aio_nbytes};
    const struct iovec *iov = &one;
    int cnt = 1;
    if (cb->h.aio_lio_opcode == SHIM_IOCB_PREADV || cb->h.aio_lio_opcode == SHIM_IOCB_PWRITEV) {
        iov = (const struct iovec *)(uintptr_t)cb->aio_buf;
        cnt = (int)cb->aio_nbytes;
    }
    int fd = (int)cb->h.aio_fildes;
    int rwf = (int)cb->h.aio_key_or_rw_flags[IOCB_RW_FLAGS];
    int64_t r;
    switch (cb->h.aio_lio_opcode) {
    case SHIM_IOCB_PREAD:
    case SHIM_IOCB_PREADV: r = preadv2(fd, iov, cnt, cb->aio_offset, rwf); break;
    case SHIM_IOCB_PWRITE:
    case SHIM_IOCB_PWRITEV: r = pwritev2(fd, iov, cnt, cb->aio_offset, rwf); break;
    case SHIM_IOCB_FSYNC: r = fsync(fd); break;
    default: r = fdatasync(fd); break;
    }
    return r < 0 ? -(int64_t)errno : r;
}

/* A completion for a request already performed: the same iocb (the program finds
 * its request by the iocb's address and aio_data, and may be woken through
 * aio_resfd) turned into a read of `res` bytes of an empty memfd (a hole, read as
 * zeros) into scratch memory, which the kernel completes with exactly `res` through
 * the program's own ring. Not /dev/zero: its read stops at the next page when the
 * thread has a signal pending (or is being frozen, traced...) and completes short,
 * which QEMU takes for a short write (-ENOSPC) or a short read (zero-padded data);
 * measured with 1 MiB reads and SIGUSR1 every 200 us: 353 of 3000 short from
 * /dev/zero, 0 of 3000 from a memfd. The kernel copies the iocb and the iovecs at
 * submission, so both are restored / dropped as soon as io_submit returns. */
enum { AIO_JUNK = 4 << 20, AIO_JUNK_IOVS = 256 };
static int aio_zero_fd = -1;
static void *aio_junk;
static pthread_once_t aio_junk_once = PTHREAD_ONCE_INIT;

static void aio_junk_init(void)
{
    void *mem = mmap(NULL, AIO_JUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int fd = memfd_create("blkfault-aio-completions", MFD_CLOEXEC);
    /* Sparse: as long as the largest completion, and never written (no memory). */
    if (fd >= 0 && REAL(ftruncate)(fd, (off_t)AIO_JUNK * AIO_JUNK_IOVS) != 0) {
        REAL(close)(fd);
        fd = -1;
    }
    if (fd < 0) /* no memfd (an old kernel, a seccomp filter): /dev/zero, short under signals */
        fd = REAL(open)("/dev/zero", O_RDONLY | O_CLOEXEC);
    if (mem == MAP_FAILED || fd < 0) {
        if (mem != MAP_FAILED)
            munmap(mem, AIO_JUNK);
        if (fd >= 0)
            REAL(close)(fd);
        return;
    }
    aio_junk = mem;
    aio_zero_fd = fd;
}

static int aio_complete_with(enum shim_sym sym, io_context_t ctx, struct shim_iocb *cb, int64_t res)
{
    pthread_once(&aio_junk_once, aio_junk_init);
    if (aio_zero_fd < 0 || res < 0 || res > (int64_t)AIO_JUNK * AIO_JUNK_IOVS)
        return -EIO;
    struct iovec iov[AIO_JUNK_IOVS];
    int cnt = 0;
    for (int64_t left = res; left > 0; left -= AIO_JUNK)
        iov[cnt++] = (struct iovec){aio_junk, (size_t)(left < AIO_JUNK ? left : AIO_JUNK)};
    struct shim_iocb saved = *cb;
    cb->h.aio_lio_opcode = SHIM_IOCB_PREADV;
    cb->h.aio_key_or_rw_flags[IOCB_RW_FLAGS] = 0;
    cb->h.aio_fildes = (uint32_t)aio_zero_fd;
    cb->aio_buf = (uint64_t)(uintptr_t)iov;
    cb->aio_nbytes = (uint64_t)cnt;
    cb->aio_offset = 0;
    struct iocb *one = (struct iocb *)cb;
    int r = REAL_AS(fam_io_submit, sym)(ctx, 1, &one);
    *cb = saved;
    return r;
}

/* Wakes a program waiting on the request's eventfd (QEMU): after a refused first
 * request it resubmits the rest only when woken. */
static void aio_kick(const struct shim_iocb *cb)
{
    if (cb->aio_flags & SHIM_IOCB_FLAG_RESFD) {
        uint64_t one = 1;
        (void)!REAL(write)((int)cb->aio_resfd, &one, sizeof one);
    }
}

/* Can aio_perform and aio_complete_with handle it? The commands a file request uses,
 * and no more bytes than one scratch completion can carry. */
static int aio_decodable(const struct shim_iocb *cb)
{
    uint64_t total = 0;
    switch (cb->h.aio_lio_opcode) {
    case SHIM_IOCB_FSYNC: case SHIM_IOCB_FDSYNC:
        return 1;
    case SHIM_IOCB_PREAD: case SHIM_IOCB_PWRITE:
        total = cb->aio_nbytes;
        break;
    case SHIM_IOCB_PREADV: case SHIM_IOCB_PWRITEV: {
        const struct iovec *iov = (const struct iovec *)(uintptr_t)cb->aio_buf;
        if (iov == NULL || cb->aio_nbytes > 1024 /* UIO_MAXIOV */)
            return 0;
        for (uint64_t i = 0; i < cb->aio_nbytes; i++)
            total += iov[i].iov_len;
        break;
    }
    default:
        return 0;
    }
    return total <= (uint64_t)AIO_JUNK * AIO_JUNK_IOVS;
}

/* libaio's io_submit. Requests on untracked fds go to the kernel as they are. A
 * request on a tracked fd is performed here, synchronously, through the hooked
 * calls (aio_perform); the call then stops there, as io_submit may (it returns how
 * many it took, and the program submits the rest again, as QEMU does):
 *  - requests before it are submitted and their count returned;
 *  - if it is first and succeeded (or a rule pretended success), its completion is
 *    queued (aio_complete_with) and 1 returned;
 *  - if it is first and failed (a rule, or the real call), -errno is returned: the
 *    kernel's own way to fail the first request of a submission, which QEMU
 *    completes with that error through its usual path.
 * BLKFAULT_AIO=report turns this off: the requests go to the kernel unseen and are
 * reported as a bypass, as io_uring's are. */
static int io_submit_hook(enum shim_sym sym, io_context_t ctx, long nr, struct iocb **iocbs)
{
    if (SHIM_UNLIKELY(shim_real_missing(sym)))
        return -ENOSYS;
    if (!shim_tracking() || iocbs == NULL || nr <= 0)
        return REAL_AS(fam_io_submit, sym)(ctx, nr, iocbs);
    static int mode = -1; /* 1: perform tracked requests here; 0: only report */
    if (mode < 0) {
        const char *e = getenv("BLKFAULT_AIO");
        mode = !(e != NULL && strcmp(e, "report") == 0);
    }
    long first = nr;
    for (long i = 0; i < nr && first == nr; i++) {
        struct shim_iocb *cb = (struct shim_iocb *)iocbs[i];
        if (cb != NULL && shim_fd_image((int)cb->h.aio_fildes) >= 0) {
            if (mode && aio_decodable(cb))
                first = i;
            else
                shim_bypass_fd((int)cb->h.aio_fildes, aio_what);
        }
    }
    if (first == nr)
        return REAL_AS(fam_io_submit, sym)(ctx, nr, iocbs);
    if (first > 0)
        return REAL_AS(fam_io_submit, sym)(ctx, first, iocbs);
    struct shim_iocb *cb = (struct shim_iocb *)iocbs[0];
    int64_t res = aio_perform(cb);
    if (res < 0) {
        if (nr > 1)
            aio_kick(cb);
        return (int)res;
    }
    int r = aio_complete_with(sym, ctx, cb, res);
    return r < 0 ? r : 1;
}

/* io_uring (liburing). A request names its fd only inside its submission queue
 * entry, in memory shared with the kernel, filled by liburing's inline
 * io_uring_get_sqe/io_uring_prep_*; io_uring_submit* pass nothing but the ring and
 * enter the kernel with liburing's own raw syscalls. Finding the fds would mean
 * reading the pending entries through liburing's struct io_uring layout (and
 * registered-file indexes for IOSQE_FIXED_FILE): not done, io_uring_submit* are
 * not hooked. Instead a ring set up while some image fd is tracked is reported for
 * every tracked image: QEMU sets up its aio=io_uring ring right after opening the
 * file, while its fd-monitoring rings (fdmon-io_uring, every AioContext) are set
 * up before any image is open and so are not reported. Missed: an image opened
 * after the ring that then serves it (a second aio=io_uring image in the same
 * QEMU AioContext), unless the program registers its fd (io_uring_register_files*).
 * Wrongly reported: an image open while a ring for something else is set up (an
 * iothread created after the image was opened). */
static const char uring_ring_what[] = "io_uring (a ring was set up while it was open)";
static const char uring_files_what[] = "io_uring (registered file)";

typedef io_uring_queue_init_fn fam_uring_init;
typedef io_uring_queue_init_params_fn fam_uring_init_params;
typedef io_uring_queue_init_mem_fn fam_uring_init_mem;
typedef io_uring_register_files_fn fam_uring_files;
typedef io_uring_register_files_tags_fn fam_uring_files_tags;
typedef io_uring_register_files_update_fn fam_uring_files_update;
typedef io_uring_register_files_update_tag_fn fam_uring_files_update_tag;

/* After a queue_init*: the result, passed through. */
static int uring_ring_made(int res)
{
    if (res >= 0 && shim_tracking())
        shim_bypass_all(uring_ring_what);
    return res;
}

static void uring_files_given(const int *files, unsigned nr)
{
    if (files == NULL || !shim_tracking())
        return;
    for (unsigned i = 0; i < nr; i++)
        shim_bypass_fd(files[i], uring_files_what); /* -1 (a sparse slot): untracked */
}

static int uring_init_hook(enum shim_sym sym, unsigned entries, struct io_uring *ring, unsigned flags)
{
    if (SHIM_UNLIKELY(shim_real_missing(sym)))
        return -ENOSYS;
    return uring_ring_made(REAL_AS(fam_uring_init, sym)(entries, ring, flags));
}

static int uring_init_params_hook(enum shim_sym sym, unsigned entries, struct io_uring *ring,
                                  struct io_uring_params *p)
{
    if (SHIM_UNLIKELY(shim_real_missing(sym)))
        return -ENOSYS;
    return uring_ring_made(REAL_AS(fam_uring_init_params, sym)(entries, ring, p));
}

static int uring_init_mem_hook(enum shim_sym sym, unsigned entries, struct io_uring *ring,
                               struct io_uring_params *p, void *buf, size_t size)
{
    if (SHIM_UNLIKELY(shim_real_missing(sym)))
        return -ENOSYS;
    return uring_ring_made(REAL_AS(fam_uring_init_mem, sym)(entries, ring, p, buf, size));
}

static int uring_files_hook(enum shim_sym sym, struct io_uring *ring, const int *files, unsigned nr)
{
    if (SHIM_UNLIKELY(shim_real_missing(sym)))
        return -ENOSYS;
    uring_files_given(files, nr);
    return REAL_AS(fam_uring_files, sym)(ring, files, nr);
}

static int uring_files_tags_hook(enum shim_sym sym, struct io_uring *ring, const int *files,
                                 const unsigned long long *tags, unsigned nr)
{
    if (SHIM_UNLIKELY(shim_real_missing(sym)))
        return -ENOSYS;
    uring_files_given(files, nr);
    return REAL_AS(fam_uring_files_tags, sym)(ring, files, tags, nr);
}

static int uring_files_update_hook(enum shim_sym sym, struct io_uring *ring, unsigned off,
                                   const int *files, unsigned nr)
{
    if (SHIM_UNLIKELY(shim_real_missing(sym)))
        return -ENOSYS;
    uring_files_given(files, nr);
    return REAL_AS(fam_uring_files_update, sym)(ring, off, files, nr);
}

static int uring_files_update_tag_hook(enum shim_sym sym, struct io_uring *ring, unsigned off,
                                       const int *files, const unsigned long long *tags, unsigned nr)
{
    if (SHIM_UNLIKELY(shim_real_missing(sym)))
        return -ENOSYS;
    uring_files_given(files, nr);
    return REAL_AS(fam_uring_files_update_tag, sym)(ring, off, files, tags, nr);
}

/* A mapping of the image: loads and stores through it reach the file unseen. */
typedef mmap64_fn fam_mmap;

static void *mmap_hook(enum shim_sym sym, void *addr, size_t len, int prot, int flags, int fd,
                       off64_t off)
{
    void *p = REAL_AS(fam_mmap, sym)(addr, len, prot, flags, fd, off);
    if (p != MAP_FAILED && !(flags & MAP_ANONYMOUS))
        shim_bypass_fd(fd, "mmap");
    return p;
}

/* syscall(2): glibc's generic wrapper, which QEMU and the Swift runtime call on hot
 * paths (futex). While no image fd is tracked it costs one load; otherwise a switch
 * on the number. Calls that do the I/O the rows above hook, on a tracked fd, are
 * reported, not decoded; a close is followed (else the fd number, reused by a
 * socket or eventfd, would stay tracked). Always forwards six arguments, as the
 * wrapper itself reads them: the unused ones are whatever the caller left. */
typedef syscall_fn fam_syscall;

static const char syscall_what[] = "syscall()";

static void syscall_seen(long number, const long a[6])
{
    switch (number) {
    case SYS_read:
    case SYS_write:
    case SYS_readv:
    case SYS_writev:
    case SYS_pread64:
    case SYS_pwrite64:
    case SYS_preadv:
    case SYS_pwritev:
#ifdef SYS_preadv2
    case SYS_preadv2:
    case SYS_pwritev2:
#endif
    case SYS_fsync:
    case SYS_fdatasync:
    case SYS_sync_file_range:
    case SYS_fallocate:
    case SYS_ftruncate:
        shim_bypass_fd((int)a[0], syscall_what);
        break;
#ifdef SYS_copy_file_range
    case SYS_copy_file_range:
        shim_bypass_fd((int)a[0], syscall_what);
        shim_bypass_fd((int)a[2], syscall_what);
        break;
#endif
    case SYS_mmap:
        if (!(a[3] & MAP_ANONYMOUS))
            shim_bypass_fd((int)a[4], "mmap");
        break;
    case SYS_io_submit: /* libaio's io_submit comes here too */
        bypass_iocbs(a[1], (struct iocb *const *)a[2]);
        break;
#ifdef SYS_io_uring_setup
    /* liburing 2.x makes these syscalls itself, not through syscall(); older
     * liburing and programs with their own io_uring code (fio) come here. */
    case SYS_io_uring_setup:
        shim_bypass_all(uring_ring_what);
        break;
    case SYS_io_uring_register:
        if (a[1] == 2 /* IORING_REGISTER_FILES: an int array, a[3] long */)
            uring_files_given((const int *)a[2], (unsigned)a[3]);
        break;
#endif
    case SYS_close:
        shim_closing((int)a[0]);
        break;
    default:
        break;
    }
}

static long syscall_hook(enum shim_sym sym, long number, va_list ap)
{
    long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    if (shim_tracking())
        syscall_seen(number, a);
    return REAL_AS(fam_syscall, sym)(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* ---- the wrappers, one per row of hooks.def ---- */

#define HOOK(name, ret, params, args, family)                                       \
    _Static_assert(__builtin_types_compatible_p(name##_fn, fam_##family),          \
                   #name " does not have the prototype of family " #family);       \
    ret name params                                                                 \
    {                                                                               \
        return family##_hook(SYM_##name, ARGS args);                                \
    }

#define HOOKV(name, ret, params, args, last, family)                                \
    _Static_assert(__builtin_types_compatible_p(name##_fn, fam_##family),          \
                   #name " does not have the prototype of family " #family);       \
    ret name params                                                                 \
    {                                                                               \
        va_list ap;                                                                 \
        va_start(ap, last);                                                         \
        ret r = family##_hook(SYM_##name, ARGS args, ap);                           \
        va_end(ap);                                                                 \
        return r;                                                                   \
    }

#include "hooks.def"
