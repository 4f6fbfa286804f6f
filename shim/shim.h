/* Internal to the shim: what core.c and hooks.c share. Nothing declared here is
 * exported from the .so (everything is static or SHIM_HIDDEN); only the rows of
 * hooks.def are (SHIM_EXPORT). */
#ifndef BLKFAULT_SHIM_H
#define BLKFAULT_SHIM_H

/* The wrappers must define the plain symbols: no fortify inlines, no
 * _FILE_OFFSET_BITS=64 redirects of pread to pread64 and so on. */
#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS
#undef _TIME_BITS
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "blkfault_engine.h"

/* The types of the libaio and liburing rows of hooks.def, under those libraries'
 * own names. Their headers are not needed to build: only pointers pass through,
 * and the one field the shim reads (an iocb's fd) is at a fixed offset of the
 * kernel ABI (hooks.c). */
typedef struct io_context *io_context_t; /* libaio.h */
struct iocb;                             /* libaio.h; the kernel's struct iocb */
struct io_uring;                         /* liburing.h */
struct io_uring_params;                  /* linux/io_uring.h */

#define SHIM_EXPORT __attribute__((visibility("default")))
#define SHIM_HIDDEN __attribute__((visibility("hidden")))
#define SHIM_LIKELY(x) __builtin_expect(!!(x), 1)
#define SHIM_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* pread and pread64 (etc.) share one family helper: same prototype on LP64 only. */
_Static_assert(sizeof(off_t) == 8 && sizeof(off_t) == sizeof(off64_t),
               "blkfault's shim supports 64-bit glibc targets only");

/* ---- generated from hooks.def: real-function types, ids, exported declarations ---- */

#define HOOK(name, ret, params, args, family) typedef ret (*name##_fn) params;
#define HOOKV(name, ret, params, args, last, family) typedef ret (*name##_fn) params;
#include "hooks.def"

enum shim_sym {
#define HOOK(name, ret, params, args, family) SYM_##name,
#define HOOKV(name, ret, params, args, last, family) SYM_##name,
#include "hooks.def"
    SYM_COUNT
};

#define HOOK(name, ret, params, args, family) SHIM_EXPORT ret name params;
#define HOOKV(name, ret, params, args, last, family) SHIM_EXPORT ret name params;
#include "hooks.def"

/* The next definition of symbol `sym` (dlsym RTLD_NEXT), resolved on first use and
 * cached in an atomic. Never NULL: a symbol the libc lacks resolves to a stub that
 * fails with -1/ENOSYS. */
SHIM_HIDDEN void *shim_real(enum shim_sym sym);
/* Did `sym` resolve to that stub? For the libaio/liburing rows, which report
 * failure as a negative errno instead (-ENOSYS, as libaio does without the syscall). */
SHIM_HIDDEN int shim_real_missing(enum shim_sym sym);

/* The cache shim_real fills; read inline on the hot path. */
SHIM_HIDDEN extern _Atomic(void *) shim_sym_real[SYM_COUNT];
static inline void *shim_real_cached(enum shim_sym sym)
{
    void *p = atomic_load_explicit(&shim_sym_real[sym], memory_order_acquire);
    return SHIM_LIKELY(p != NULL) ? p : shim_real(sym);
}

#define REAL(name) ((name##_fn)shim_real_cached(SYM_##name))
/* For family helpers, which get the id at run time: `type` is the family's type. */
#define REAL_AS(type, sym) ((type)shim_real_cached(sym))

/* ---- the engine (engine.c) ----
 * libblkfault-engine.so's C ABI (blkfault_engine.h), dlopen'ed at the first open of
 * a matching image (never in a constructor): a process that opens none maps none
 * of it. Filled once, before any fd is tracked, so the fd table's acquire loads
 * order these relaxed ones; a call through one costs what a PLT call did. */
struct shim_engine {
    _Atomic(__typeof__(&blkfault_engine_attach)) attach;
    _Atomic(__typeof__(&blkfault_engine_attach_backing)) attach_backing;
    _Atomic(__typeof__(&blkfault_engine_before)) before;
    _Atomic(__typeof__(&blkfault_engine_before_unfiltered)) before_unfiltered;
    _Atomic(__typeof__(&blkfault_engine_after)) after;
    _Atomic(__typeof__(&blkfault_engine_detach)) detach;
    _Atomic(__typeof__(&blkfault_engine_bypass)) bypass;
    _Atomic(__typeof__(&blkfault_engine_exit)) exit;
    _Atomic(__typeof__(&blkfault_engine_steady_table)) steady_table;
};
SHIM_HIDDEN extern struct shim_engine shim_engine;
/* blkfault_engine_steady_table(), asked once at the load (same ordering as above). */
SHIM_HIDDEN extern blkfault_steady_table *_Atomic shim_steady_tab;
#define ENGINE(fn) (atomic_load_explicit(&shim_engine.fn, memory_order_relaxed))

/* Loads the engine unless it is loaded: called with the guard held, for the first
 * matching image (named in the error). If it cannot be loaded, prints why on
 * stderr and exits the process with status 1, before any I/O reaches the image:
 * rules that were asked for must not silently not apply. */
SHIM_HIDDEN void shim_engine_load(const char *image);

/* ---- re-entrancy guard ----
 * Set while the shim is inside the engine (and around the real call it gates), so
 * that the engine's own I/O, and anything it triggers, goes straight to libc. */
SHIM_HIDDEN extern __thread int shim_in_hook __attribute__((tls_model("initial-exec")));

/* ---- fd -> image table ----
 * Entry = engine handle + 1, 0 = untracked. Zero-initialised, lock-free. fds at or
 * above SHIM_FD_MAX are never tracked (I/O on them is not seen by the engine). */
#ifndef SHIM_FD_MAX /* overridable for tests */
#define SHIM_FD_MAX 65536
#endif
SHIM_HIDDEN extern _Atomic int32_t shim_fd_tab[SHIM_FD_MAX];
/* How many entries of shim_fd_tab are set: lets the bypass checks skip all work in
 * the common case of nothing tracked. */
SHIM_HIDDEN extern _Atomic int shim_fd_count;

/* The image behind fd, or -1 (untracked, or the guard is held). The untracked
 * case costs one array load. */
static inline int32_t shim_fd_image(int fd)
{
    if (SHIM_UNLIKELY((unsigned)fd >= SHIM_FD_MAX))
        return -1;
    int32_t e = atomic_load_explicit(&shim_fd_tab[fd], memory_order_acquire);
    if (SHIM_LIKELY(e == 0) || shim_in_hook)
        return -1;
    return e - 1;
}

/* The hot hooks' first test: no image behind fd (one load; the guard is checked
 * only for tracked fds, by shim_io). */
#define SHIM_UNTRACKED(fd) SHIM_LIKELY((unsigned)(fd) >= SHIM_FD_MAX || \
    atomic_load_explicit(&shim_fd_tab[(fd)], memory_order_acquire) == 0)

/* Is any fd tracked (and the guard not held)? One load. */
static inline int shim_tracking(void)
{
    return SHIM_UNLIKELY(atomic_load_explicit(&shim_fd_count, memory_order_relaxed) > 0) &&
           !shim_in_hook;
}

/* ---- bypasses: I/O that does not go through the hooked libc calls ----
 * Reported to the engine (blkfault_engine_bypass, which warns once per image);
 * the calls themselves are forwarded untouched. Both save errno and take the guard. */

/* fd is tracked: report its image. */
SHIM_HIDDEN void shim_bypass_fd(int fd, const char *what);
/* Report every image some fd is tracked for (a way in that names no fd). */
SHIM_HIDDEN void shim_bypass_all(const char *what);

/* After a successful open*: decide whether `fd` is a target, attach it. Returns fd.
 * `dirfd` is AT_FDCWD for the non-at calls; `flags` the open flags. */
SHIM_HIDDEN int shim_opened(int fd, int dirfd, const char *path, int flags);
/* allocation.c: attach returned `image` for a target (not a followed backing file). */
SHIM_HIDDEN void shim_target_attached(int32_t image);
/* allocation.c: after a successful fstat of tracked fd: with BLKFAULT_ALLOCATED_SIZE=length
 * a target's st_blocks is raised to its length, as QEMU over blkdebug cannot learn it
 * (metadata-preallocation check). */
SHIM_HIDDEN void shim_stat_seen(int fd, struct stat64 *st);
/* Before close(fd): detach it if tracked. */
SHIM_HIDDEN void shim_closing(int fd);
/* Before close_range(first, last, 0): detach every tracked fd in the range. */
SHIM_HIDDEN void shim_closing_range(unsigned first, unsigned last);
/* After a successful dup, dup2, dup3 or F_DUPFD*: newfd (fresh, or closed over
 * by dup2/dup3) now refers to what oldfd refers to. */
SHIM_HIDDEN void shim_duplicated(int oldfd, int newfd);

/* ---- the engine gate: the one place that calls before/after ---- */

/* One operation on a tracked fd, as the engine sees it, plus what its perform
 * callback needs to call the real function. */
struct shim_req {
    enum shim_sym sym;          /* which entry point: perform calls its real function */
    int fd;
    int32_t op;                 /* enum blkfault_op */
    int64_t off;                /* engine offset, or SHIM_POS (implicit file position) */
    int64_t len;                /* engine length, or SHIM_IOVLEN (total of iov) */
    const struct iovec *iov;
    int iovcnt;
    int64_t fake;               /* returned for "pretend success"; SHIM_IOVLEN: the length */
    /* the call's own arguments that the fields above do not carry as passed */
    int64_t arg_off;            /* offset argument (-1 = file position for the *v2 calls) */
    int64_t arg_len;
    void *arg_ptr;              /* copy_file_range: the offset pointers */
    void *arg_ptr2;
    int arg_fd2;                /* copy_file_range: the target fd */
    int flags;                  /* RWF_* (write + RWF_DSYNC/RWF_SYNC adds a FLUSH), fallocate mode */
    size_t buflen;              /* __*_chk */
    int errret;                 /* returns an error number, not -1/errno (posix_fallocate) */
};
#define SHIM_POS INT64_MIN
#define SHIM_IOVLEN INT64_MIN

typedef int64_t shim_perform_fn(const struct shim_req *);

/* Run a call under the engine: before for each tracked request (image >= 0), then
 * perform(r) (or refuse / pretend success), after, errno. n is 1, or 2 for
 * copy_file_range (READ on the source, WRITE on the target); fake, errret and
 * perform's arguments come from r[0]. */
SHIM_HIDDEN int64_t shim_gate(int n, const int32_t *image, const struct shim_req *r,
                              shim_perform_fn *perform);
/* shim_gate(1, &image, r, perform), compiled for one request. */
SHIM_HIDDEN int64_t shim_gate1(int32_t image, const struct shim_req *r, shim_perform_fn *perform);

static inline int64_t shim_iov_total(const struct iovec *iov, int cnt)
{
    int64_t n = 0;
    for (int i = 0; i < cnt; i++)
        n += (int64_t)iov[i].iov_len;
    return n;
}

/* Would the engine's steady pre-filter let this through (blkfault_steady_check on the
 * table the engine shares)? Then the gate would call before, get
 * BLKFAULT_PERFORM_NO_AFTER and perform it: so it is performed at once, without the
 * guard, errno's save, the gate or any call into the engine (issue 7: ~300
 * instructions a request fewer). `image`: from shim_fd_image (-1 is never let through). */
__attribute__((always_inline)) static inline int shim_steady_allows(int32_t image, int32_t op, int64_t off, int64_t len)
{
    /* Never null (engine.c's no_views until the engine's table). */
    return blkfault_steady_check(atomic_load_explicit(&shim_steady_tab, memory_order_relaxed), image, op, off, len);
}

/* shim_steady_allows for a request: reads and writes at an explicit offset, carrying no flush. */
static inline int shim_steady(int32_t image, const struct shim_req *r)
{
    if ((uint32_t)r->op > BLKFAULT_OP_WRITE || r->off == SHIM_POS || (r->flags & (RWF_DSYNC | RWF_SYNC)))
        return 0;
    int64_t len = r->len == SHIM_IOVLEN ? shim_iov_total(r->iov, r->iovcnt) : r->len;
    return shim_steady_allows(image, r->op, r->off, len);
}

/* The entry for every gated hook: untracked fds (the common case) go straight to
 * perform; inlined so that the perform callback is a direct call there. */
static inline int64_t shim_io(const struct shim_req *r, shim_perform_fn *perform)
{
    int32_t image = shim_fd_image(r->fd);
    if (SHIM_LIKELY(image < 0) || shim_steady(image, r))
        return perform(r);
    return shim_gate1(image, r, perform);
}

/* shim_steady for the hot positional calls (pread, pwrite, preadv, pwritev) on a
 * tracked fd, asked before their request is even built. fd < SHIM_FD_MAX. */
__attribute__((always_inline)) static inline int shim_steady_at(int fd, int32_t op, int64_t off, int64_t len)
{
    /* 0 (closed meanwhile) asks for handle -1. */
    int32_t e = atomic_load_explicit(&shim_fd_tab[fd], memory_order_acquire);
    return !shim_in_hook && shim_steady_allows(e - 1, op, off, len);
}

/* shim_io after shim_steady_at said no. */
static inline int64_t shim_io_gated(const struct shim_req *r, shim_perform_fn *perform)
{
    int32_t image = shim_fd_image(r->fd);
    if (image < 0)
        return perform(r);
    return shim_gate1(image, r, perform);
}

#endif
