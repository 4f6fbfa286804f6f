/* The shim's machinery: real-function resolution, the fd -> image table,
 * targeting (which files are images), and the gate around the engine.
 * hooks.c holds the entry points; both share shim.h. */
#include "shim.h"

#include <dlfcn.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------------------
 * Real functions
 */

static const char *const sym_name[SYM_COUNT] = {
#define HOOK(name, ret, params, args, family) [SYM_##name] = #name,
#define HOOKV(name, ret, params, args, last, family) [SYM_##name] = #name,
#include "hooks.def"
};

_Atomic(void *) shim_sym_real[SYM_COUNT];

/* Stands in for a symbol this libc lacks (e.g. close_range before glibc 2.34).
 * Every hooked function returns an integer, so -1/ENOSYS fits all of them. */
static long missing_real(void)
{
    errno = ENOSYS;
    return -1;
}

void *shim_real(enum shim_sym sym)
{
    void *p = atomic_load_explicit(&shim_sym_real[sym], memory_order_acquire);
    if (SHIM_LIKELY(p != NULL))
        return p;
    /* Racing threads resolve the same pointer; whichever store lands is fine. */
    p = dlsym(RTLD_NEXT, sym_name[sym]);
    if (p == NULL)
        p = (void *)missing_real;
    atomic_store_explicit(&shim_sym_real[sym], p, memory_order_release);
    return p;
}

int shim_real_missing(enum shim_sym sym)
{
    return shim_real(sym) == (void *)missing_real;
}

/* ---------------------------------------------------------------------------
 * Guard and fd table
 */

__thread int shim_in_hook __attribute__((tls_model("initial-exec")));

_Atomic int32_t shim_fd_tab[SHIM_FD_MAX];
_Atomic int shim_fd_count;
/* Highest fd ever tracked, bounds the close_range scan. */
static _Atomic int fd_hi = -1;

/* Point fd at image (-1: untracked). A different image it pointed at before (a
 * close we did not see, or dup2 over it) is detached. Guard held by the caller. */
static void fd_assign(int fd, int32_t image)
{
    int32_t e = image >= 0 && image < INT32_MAX ? image + 1 : 0;
    int32_t old = atomic_exchange_explicit(&shim_fd_tab[fd], e, memory_order_acq_rel);
    if (e != 0) {
        int hi = atomic_load_explicit(&fd_hi, memory_order_relaxed);
        while (fd > hi && !atomic_compare_exchange_weak(&fd_hi, &hi, fd)) {
        }
    }
    /* The exchange makes each set/clear transition happen once: the count follows. */
    if (old == 0 && e != 0)
        atomic_fetch_add_explicit(&shim_fd_count, 1, memory_order_relaxed);
    else if (old != 0 && e == 0)
        atomic_fetch_sub_explicit(&shim_fd_count, 1, memory_order_relaxed);
    if (old != 0 && old != e)
        ENGINE(detach)(old - 1, fd);
}

/* Clear fd's entry, detaching what it carried. Guard held by the caller. */
static void fd_release(int fd)
{
    int32_t old = atomic_exchange_explicit(&shim_fd_tab[fd], 0, memory_order_acq_rel);
    if (old != 0) {
        atomic_fetch_sub_explicit(&shim_fd_count, 1, memory_order_relaxed);
        ENGINE(detach)(old - 1, fd);
    }
}

void shim_closing(int fd)
{
    /* Cleared before the real close, so the number is never reused while stale.
     * I/O racing with close on another thread may still carry the handle into
     * before/after after this detach (see blkfault_engine.h). */
    if ((unsigned)fd >= SHIM_FD_MAX || shim_in_hook ||
        atomic_load_explicit(&shim_fd_tab[fd], memory_order_relaxed) == 0)
        return;
    int saved = errno;
    shim_in_hook = 1;
    fd_release(fd);
    shim_in_hook = 0;
    errno = saved;
}

void shim_closing_range(unsigned first, unsigned last)
{
    int hi = atomic_load_explicit(&fd_hi, memory_order_relaxed);
    if (hi < 0 || first > (unsigned)hi || shim_in_hook)
        return;
    if (last > (unsigned)hi)
        last = (unsigned)hi;
    int saved = errno;
    shim_in_hook = 1;
    for (unsigned fd = first; fd <= last; fd++)
        if (atomic_load_explicit(&shim_fd_tab[fd], memory_order_relaxed) != 0)
            fd_release((int)fd);
    shim_in_hook = 0;
    errno = saved;
}

void shim_duplicated(int oldfd, int newfd)
{
    if ((unsigned)newfd >= SHIM_FD_MAX || shim_in_hook || oldfd == newfd)
        return;
    int32_t e = (unsigned)oldfd < SHIM_FD_MAX
                    ? atomic_load_explicit(&shim_fd_tab[oldfd], memory_order_acquire)
                    : 0;
    if (e == 0 && atomic_load_explicit(&shim_fd_tab[newfd], memory_order_relaxed) == 0)
        return;
    int saved = errno;
    shim_in_hook = 1;
    fd_assign(newfd, e - 1);
    shim_in_hook = 0;
    errno = saved;
}

/* ---------------------------------------------------------------------------
 * Bypasses
 */

void shim_bypass_fd(int fd, const char *what)
{
    int32_t image = shim_fd_image(fd);
    if (image < 0)
        return;
    int saved = errno;
    shim_in_hook = 1;
    ENGINE(bypass)(image, what);
    shim_in_hook = 0;
    errno = saved;
}

void shim_bypass_all(const char *what)
{
    int hi = atomic_load_explicit(&fd_hi, memory_order_relaxed);
    if (hi < 0 || shim_in_hook)
        return;
    int saved = errno;
    shim_in_hook = 1;
    /* One report per fd; the engine keeps one per image. */
    for (int fd = 0; fd <= hi; fd++) {
        int32_t e = atomic_load_explicit(&shim_fd_tab[fd], memory_order_acquire);
        if (e != 0)
            ENGINE(bypass)(e - 1, what);
    }
    shim_in_hook = 0;
    errno = saved;
}

/* ---------------------------------------------------------------------------
 * Targeting
 */

enum { MODE_UNKNOWN = 0, MODE_INERT, MODE_ACTIVE };
static _Atomic int mode;
/* BLKFAULT_IMAGE, NULL if unset (then: qcow2 magic sniffing). getenv's string,
 * read once: later setenv/unsetenv do not change what the shim targets. */
static const char *image_globs;

static int active(void)
{
    int m = atomic_load_explicit(&mode, memory_order_acquire);
    if (SHIM_LIKELY(m != MODE_UNKNOWN))
        return m == MODE_ACTIVE;
    /* Threads racing here compute the same answer. */
    image_globs = getenv("BLKFAULT_IMAGE");
    m = getenv("BLKFAULT_CONFIG") != NULL || getenv("BLKFAULT_TRACE") != NULL ? MODE_ACTIVE
                                                                              : MODE_INERT;
    atomic_store_explicit(&mode, m, memory_order_release);
    return m == MODE_ACTIVE;
}

/* The path as opened, made absolute: cwd or dirfd's target in front of a
 * relative path. Not normalised ("./" and ".." stay). */
static int absolute_path(int dirfd, const char *path, char *out, size_t size)
{
    size_t n;
    if (path[0] == '/') {
        n = 0;
    } else if (dirfd == AT_FDCWD) {
        if (getcwd(out, size) == NULL)
            return -1;
        n = strlen(out);
    } else {
        char link[40];
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t k = readlink(link, out, size - 1);
        if (k < 0)
            return -1;
        n = (size_t)k;
    }
    if (n > 0 && out[n - 1] != '/') {
        if (n + 1 >= size)
            return -1;
        out[n++] = '/';
    }
    size_t p = strlen(path);
    if (n + p >= size)
        return -1;
    memcpy(out + n, path, p + 1);
    return 0;
}

/* The file's canonical path: realpath of the absolute path, else the kernel's
 * name for the fd. */
static int resolved_path(int fd, const char *abs, char out[PATH_MAX])
{
    if (abs != NULL && realpath(abs, out) != NULL)
        return 0;
    char link[40];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t k = readlink(link, out, PATH_MAX - 1);
    if (k <= 0 || out[0] != '/')
        return -1;
    out[k] = '\0';
    return 0;
}

/* Does any colon-separated glob match one of the names? fnmatch flags 0. */
static int globs_match(const char *globs, const char *a, const char *b)
{
    char pat[PATH_MAX];
    while (*globs != '\0') {
        size_t n = strcspn(globs, ":");
        if (n > 0 && n < sizeof pat) {
            memcpy(pat, globs, n);
            pat[n] = '\0';
            if ((a != NULL && fnmatch(pat, a, 0) == 0) || (b != NULL && fnmatch(pat, b, 0) == 0))
                return 1;
        }
        globs += n;
        if (*globs == ':')
            globs++;
    }
    return 0;
}

/* The first bytes are the qcow2 magic. Regular files opened readable only; read
 * with the real pread64 (position untouched). O_DIRECT needs an aligned
 * block-sized read. */
static int qcow2_magic(int fd, int flags)
{
    static const unsigned char magic[4] = {'Q', 'F', 'I', 0xfb};
    struct stat st;
    if ((flags & O_ACCMODE) == O_WRONLY || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        st.st_size < 4)
        return 0;
    unsigned char buf[4096] __attribute__((aligned(4096)));
    size_t want = (flags & O_DIRECT) ? sizeof buf : sizeof magic;
    ssize_t n = REAL(pread64)(fd, buf, want, 0);
    return n >= 4 && memcmp(buf, magic, 4) == 0;
}

/* Is the fresh fd an image? On yes, its canonical path is in `real`. */
static int is_target(int fd, int dirfd, const char *path, int flags, char real[PATH_MAX])
{
    /* O_PATH fds do no I/O; an O_TMPFILE file has no name (its path is the directory). */
    if ((flags & O_PATH) || (flags & O_TMPFILE) == O_TMPFILE)
        return 0;
    if (image_globs != NULL) {
        char abs[PATH_MAX];
        int have_abs = path != NULL && absolute_path(dirfd, path, abs, sizeof abs) == 0;
        int have_real = resolved_path(fd, have_abs ? abs : NULL, real) == 0;
        if (!globs_match(image_globs, have_abs ? abs : NULL, have_real ? real : NULL))
            return 0;
        struct stat st;
        if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode))
            return 0;
        if (!have_real)
            strcpy(real, abs);
        return 1;
    }
    if (!qcow2_magic(fd, flags))
        return 0;
    char abs[PATH_MAX];
    int have_abs = path != NULL && absolute_path(dirfd, path, abs, sizeof abs) == 0;
    if (resolved_path(fd, have_abs ? abs : NULL, real) == 0)
        return 1;
    if (!have_abs)
        return 0;
    strcpy(real, abs);
    return 1;
}

/* The exit-time consistency check (blkfault_engine_exit): registered with atexit
 * at the first attach, not in a constructor, so a process that never opens an
 * image pays nothing and runs nothing at exit. */
static void exit_check_run(void)
{
    int saved = errno;
    shim_in_hook = 1; /* the engine's own fstat/pread go straight to libc */
    ENGINE(exit)();
    shim_in_hook = 0;
    errno = saved;
}

static void exit_check_arm(void)
{
    static atomic_flag armed = ATOMIC_FLAG_INIT;
    if (!atomic_flag_test_and_set(&armed))
        atexit(exit_check_run);
}

int shim_opened(int fd, int dirfd, const char *path, int flags)
{
    if (fd < 0 || fd >= SHIM_FD_MAX || shim_in_hook || !active())
        return fd;
    int saved = errno;
    shim_in_hook = 1;
    char real[PATH_MAX];
    int32_t image = -1;
    if (is_target(fd, dirfd, path, flags, real)) {
        shim_engine_load(real); /* the first image maps the engine; exit(1) if it cannot */
        image = ENGINE(attach)(real, fd); /* may exit(1) on a bad config */
        shim_target_attached(image);
    } else if (atomic_load_explicit(&shim_fd_count, memory_order_relaxed) > 0 && !(flags & O_PATH)) {
        /* Not a target: perhaps the backing file of a followed overlay (only a
         * followed image can name one, so nothing is asked before the first, and
         * the engine is loaded by then). */
        image = ENGINE(attach_backing)(fd);
    }
    if (image >= 0)
        exit_check_arm();
    /* Always assign: a fresh fd carrying an old entry means we missed its close. */
    fd_assign(fd, image);
    shim_in_hook = 0;
    errno = saved;
    return fd;
}

/* ---------------------------------------------------------------------------
 * The gate
 */

/* Where the call's implicit position is: the file position, or the end of file
 * for appending writes (O_APPEND, RWF_APPEND). -1 if unknown (not seekable). */
static int64_t position(const struct shim_req *r)
{
    if (r->op == BLKFAULT_OP_WRITE) {
        int fl = REAL(fcntl64)(r->fd, F_GETFL);
        if ((fl >= 0 && (fl & O_APPEND)) || (r->flags & RWF_APPEND)) {
            struct stat st;
            return fstat(r->fd, &st) == 0 ? (int64_t)st.st_size : -1;
        }
    }
    return lseek64(r->fd, 0, SEEK_CUR);
}

/* The gate's body, inlined into shim_gate and, with n = 1, into shim_gate1 (the hot
 * hooks' path: no loops or arrays left, ~60 instructions a request fewer; issue 7). */
static inline __attribute__((always_inline)) int64_t gate(int n, const int32_t *image, const struct shim_req *r,
                                                          shim_perform_fn *perform)
{
    int saved = errno;
    shim_in_hook = 1;
    int64_t off[2], len[2];
    int after[2] = {0, 0}; /* the engine wants its after call (not BLKFAULT_PERFORM_NO_AFTER) */
    int pretend = 0;
    for (int i = 0; i < n; i++) {
        if (image[i] < 0)
            continue;
        len[i] = r[i].len == SHIM_IOVLEN ? shim_iov_total(r[i].iov, r[i].iovcnt) : r[i].len;
        off[i] = r[i].off == SHIM_POS ? position(&r[i]) : r[i].off;
        /* The hooks asked the steady pre-filter about a request at an explicit offset
         * carrying no flush (shim_steady, shim_steady_at; for other kinds it says no):
         * the engine need not ask it again. A file-position request, copy_file_range's,
         * or one carrying a flush goes to the entry that asks first. */
        int checked = n == 1 && r[i].off != SHIM_POS && !(r[i].flags & (RWF_DSYNC | RWF_SYNC));
        int32_t d = (checked ? ENGINE(before_unfiltered) : ENGINE(before))(image[i], r[i].fd, r[i].op, off[i], len[i],
                                                                         r[i].iov, r[i].iovcnt);
        after[i] = d != BLKFAULT_PERFORM_NO_AFTER;
        if (!after[i])
            d = 0;
        if (d > 0) { /* refused: fail with d, nothing performed */
            shim_in_hook = 0;
            if (r->errret) {
                errno = saved;
                return d;
            }
            errno = d;
            return -1;
        }
        pretend |= d < 0;
    }
    if (pretend) { /* report success, nothing performed */
        shim_in_hook = 0;
        errno = saved;
        if (r->fake != SHIM_IOVLEN)
            return r->fake;
        return r->len == SHIM_IOVLEN ? shim_iov_total(r->iov, r->iovcnt) : r->len;
    }

    int64_t res = perform(r);
    int err = r->errret ? (int)res : res < 0 ? errno : 0;
    int64_t reported = r->errret && res != 0 ? -1 : res;
    for (int i = 0; i < n; i++) {
        if (image[i] < 0)
            continue;
        if (after[i])
            ENGINE(after)(image[i], r[i].fd, r[i].op, off[i], len[i], r[i].iov, r[i].iovcnt,
                          reported, err);
        /* pwritev2(RWF_DSYNC/RWF_SYNC): the write carried a flush. Asked for once
         * the write went through; a refused flush fails the call although the
         * data is written (as a failed FUA write would). */
        if (r[i].op == BLKFAULT_OP_WRITE && (r[i].flags & (RWF_DSYNC | RWF_SYNC)) && res >= 0) {
            int32_t d = ENGINE(before)(image[i], r[i].fd, BLKFAULT_OP_FLUSH, 0, 0, NULL, 0);
            if (d > 0) {
                res = -1;
                err = d;
            } else if (d == 0) {
                ENGINE(after)(image[i], r[i].fd, BLKFAULT_OP_FLUSH, 0, 0, NULL, 0, 0, 0);
            }
        }
    }

    errno = (err != 0 && !r->errret) ? err : saved;
    shim_in_hook = 0;
    return res;
}

int64_t shim_gate(int n, const int32_t *image, const struct shim_req *r, shim_perform_fn *perform)
{
    return gate(n, image, r, perform);
}

int64_t shim_gate1(int32_t image, const struct shim_req *r, shim_perform_fn *perform)
{
    return gate(1, &image, r, perform);
}
