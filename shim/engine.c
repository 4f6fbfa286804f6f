/* Finding and loading the engine, libblkfault-engine.so (the Swift code behind
 * blkfault_engine.h, its runtime linked in statically). It is dlopen'ed at the
 * first open of a matching image and never before: a process that opens no image
 * maps, relocates and initialises none of it (the Swift runtime's initialisers
 * alone cost about 0.4 M instructions and 25 system calls). */
#include "shim.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENGINE_FILE "libblkfault-engine.so"

struct shim_engine shim_engine;
/* No image has a view until the engine hands its table over: readers need no null
 * test (zero pages, never written). */
static blkfault_steady_table no_views;
blkfault_steady_table *_Atomic shim_steady_tab = &no_views;
/* Set (release) once every pointer of shim_engine is. */
static _Atomic int loaded;

/* This library's file. The loader's name for it if absolute (LD_PRELOAD's entry or
 * the path it was found at); a relative LD_PRELOAD entry is relative to a directory
 * the process may have left since, so then the kernel's name, from /proc/self/maps. */
static int own_path(char out[PATH_MAX])
{
    Dl_info info;
    if (dladdr((void *)&shim_engine_load, &info) != 0 && info.dli_fname != NULL &&
        info.dli_fname[0] == '/' && strlen(info.dli_fname) < PATH_MAX) {
        strcpy(out, info.dli_fname);
        return 0;
    }
    uintptr_t self = (uintptr_t)&shim_engine_load;
    FILE *maps = fopen("/proc/self/maps", "re");
    if (maps == NULL)
        return -1;
    char line[PATH_MAX + 128];
    int found = -1;
    while (found != 0 && fgets(line, sizeof line, maps) != NULL) {
        unsigned long lo, hi;
        int name = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &name) < 2 || name == 0 ||
            self < lo || self >= hi || line[name] != '/')
            continue;
        line[strcspn(line, "\n")] = '\0';
        if (strlen(line + name) < PATH_MAX) {
            strcpy(out, line + name);
            found = 0;
        }
    }
    fclose(maps);
    return found;
}

/* BLKFAULT_ENGINE, else ENGINE_FILE in this library's directory. */
static int engine_path(char out[PATH_MAX])
{
    const char *env = getenv("BLKFAULT_ENGINE");
    if (env != NULL && env[0] != '\0') {
        if (strlen(env) >= PATH_MAX)
            return -1;
        strcpy(out, env);
        return 0;
    }
    if (own_path(out) != 0)
        return -1;
    size_t dir = (size_t)(strrchr(out, '/') - out) + 1;
    if (dir + sizeof ENGINE_FILE > PATH_MAX)
        return -1;
    memcpy(out + dir, ENGINE_FILE, sizeof ENGINE_FILE);
    return 0;
}

/* One message, from the first thread that fails; the process ends with it. */
static _Noreturn void load_failed(const char *image, const char *why)
{
    static atomic_flag failing = ATOMIC_FLAG_INIT;
    if (atomic_flag_test_and_set(&failing))
        for (;;) /* another thread is saying it and exiting */
            pause();
    char msg[3 * PATH_MAX];
    int n = snprintf(msg, sizeof msg,
                     "blkfault: cannot load the engine: %s (libblkfault.so looks for %s in its "
                     "own directory, or at BLKFAULT_ENGINE); stopping before any I/O reaches %s\n",
                     why, ENGINE_FILE, image);
    if (n > (int)sizeof msg - 1)
        n = (int)sizeof msg - 1;
    for (int done = 0; n > 0 && done < n;) {
        ssize_t k = REAL(write)(2, msg + done, (size_t)(n - done));
        if (k <= 0)
            break;
        done += (int)k;
    }
    _exit(1);
}

/* A fork child inherits the engine if it was loaded before the fork, else loads its
 * own at its first target; an exec'd program starts without it. */
void shim_engine_load(const char *image)
{
    if (SHIM_LIKELY(atomic_load_explicit(&loaded, memory_order_acquire)))
        return;
    char path[PATH_MAX];
    if (engine_path(path) != 0)
        load_failed(image, "the path of libblkfault.so (or BLKFAULT_ENGINE) is unknown or too long");
    /* Threads racing here all call dlopen: glibc serialises them, maps and
     * initialises the library once and hands each the same handle. RTLD_LOCAL keeps
     * its symbols out of the program's namespace; its own libc calls still bind to
     * the hooks, which pass them through while the guard is held (the caller holds
     * it, through the Swift runtime's initialisers too). dlopen's own open, mmap
     * and read are the loader's system calls and reach no hook. */
    /* RTLD_LAZY: of its ~250 calls into libc and libm (most of them the static Swift
     * runtime's, never made), only those made are bound, at their first call: binding
     * all of them cost ~0.2 M instructions in a process with qemu-img's 30 libraries
     * (issue 7). A missing one would fail at that call; every one is libc's or libm's. */
    void *h = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
    if (h == NULL) {
        const char *e = dlerror();
        load_failed(image, e != NULL ? e : path);
    }
    char why[PATH_MAX + 96];
#define RESOLVE(fn)                                                                         \
    do {                                                                                    \
        void *p = dlsym(h, "blkfault_engine_" #fn);                                        \
        if (p == NULL) {                                                                    \
            snprintf(why, sizeof why, "%s: no symbol blkfault_engine_" #fn                \
                     " (not blkfault's engine, or another version's)", path);               \
            load_failed(image, why);                                                        \
        }                                                                                   \
        atomic_store_explicit(&shim_engine.fn, (__typeof__(&blkfault_engine_##fn))p,         \
                              memory_order_relaxed);                                        \
    } while (0)
    RESOLVE(attach);
    RESOLVE(attach_backing);
    RESOLVE(before);
    RESOLVE(before_unfiltered);
    RESOLVE(after);
    RESOLVE(detach);
    RESOLVE(bypass);
    RESOLVE(exit);
    RESOLVE(steady_table);
#undef RESOLVE
    blkfault_steady_table *views = ENGINE(steady_table)();
    if (views)
        atomic_store_explicit(&shim_steady_tab, views, memory_order_relaxed);
    atomic_store_explicit(&loaded, 1, memory_order_release);
}
