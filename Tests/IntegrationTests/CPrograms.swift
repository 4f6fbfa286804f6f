import Foundation
import Testing

/// Small C programs the doctor and exit-check tests build with the system's gcc.
enum CPrograms {
    /// `writer MODE IMAGE`: opens IMAGE with open(2) (so blkfault follows it), then
    /// changes it one way:
    ///   pwrite      8 bytes into the header with pwrite (seen by blkfault)
    ///   syscall     the same through syscall(SYS_pwrite64) (around the hooks)
    ///   stdio       the same through fopen/fwrite (libc's internal write: unseen)
    ///   mmap        the same through a shared mapping
    ///   grow        64 KiB appended through syscall(SYS_pwrite64)
    ///   aio_raw     the same through raw linux-aio system calls (syscall(SYS_io_submit))
    ///   libaio      the same through libaio (dlopen'ed; io_submit found as the program
    ///               would link it, so libblkfault.so's comes first); prints
    ///               "submit=N res=R" (io_submit's result, the completion's result)
    ///   io_uring    an io_uring made with syscall(SYS_io_uring_setup), no I/O
    ///   none        nothing
    static let writer = #"""
    #define _GNU_SOURCE
    #include <dlfcn.h>
    #include <fcntl.h>
    #include <linux/aio_abi.h>
    #include <time.h>
    #include <errno.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/mman.h>
    #include <sys/stat.h>
    #include <sys/syscall.h>
    #include <unistd.h>

    int main(int argc, char **argv)
    {
        if (argc != 3) { fprintf(stderr, "usage: writer MODE IMAGE\n"); return 2; }
        const char *mode = argv[1], *image = argv[2];
        int fd = open(image, O_RDWR);
        if (fd < 0) { perror("open"); return 1; }
        char buf[8] = "BYPASSED";
        const off_t at = 72; /* inside the qcow2 header */
        if (!strcmp(mode, "pwrite")) {
            if (pwrite(fd, buf, 8, at) != 8) { perror("pwrite"); return 1; }
        } else if (!strcmp(mode, "syscall")) {
            if (syscall(SYS_pwrite64, fd, buf, 8, at) != 8) { perror("syscall"); return 1; }
        } else if (!strcmp(mode, "stdio")) {
            FILE *f = fopen(image, "r+");
            if (!f || fseek(f, at, SEEK_SET) || fwrite(buf, 1, 8, f) != 8 || fclose(f)) { perror("stdio"); return 1; }
        } else if (!strcmp(mode, "mmap")) {
            char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p == MAP_FAILED) { perror("mmap"); return 1; }
            memcpy(p + at, buf, 8);
            munmap(p, 4096);
        } else if (!strcmp(mode, "grow")) {
            struct stat st;
            static char block[65536];
            if (fstat(fd, &st) || syscall(SYS_pwrite64, fd, block, sizeof block, st.st_size) != sizeof block) { perror("grow"); return 1; }
        } else if (!strcmp(mode, "aio_raw") || !strcmp(mode, "libaio")) {
            int (*setup)(int, aio_context_t *) = NULL;
            int (*submit)(aio_context_t, long, struct iocb **) = NULL;
            int (*getevents)(aio_context_t, long, long, struct io_event *, struct timespec *) = NULL;
            if (!strcmp(mode, "libaio")) {
                if (!dlopen("libaio.so.1", RTLD_NOW | RTLD_GLOBAL)) { fprintf(stderr, "%s\n", dlerror()); return 1; }
                setup = (int (*)(int, aio_context_t *))dlsym(RTLD_DEFAULT, "io_setup");
                submit = (int (*)(aio_context_t, long, struct iocb **))dlsym(RTLD_DEFAULT, "io_submit");
                getevents = (int (*)(aio_context_t, long, long, struct io_event *, struct timespec *))dlsym(RTLD_DEFAULT, "io_getevents");
            }
            aio_context_t ctx = 0;
            long r = setup ? setup(8, &ctx) : syscall(SYS_io_setup, 8, &ctx);
            if (r != 0) { fprintf(stderr, "io_setup: %ld\n", r); return 1; }
            struct iocb cb;
            memset(&cb, 0, sizeof cb);
            cb.aio_data = 42;
            cb.aio_lio_opcode = IOCB_CMD_PWRITE;
            cb.aio_fildes = (unsigned)fd;
            cb.aio_buf = (unsigned long)buf;
            cb.aio_nbytes = 8;
            cb.aio_offset = at;
            struct iocb *list[1] = {&cb};
            long submitted = submit ? submit(ctx, 1, list) : (syscall(SYS_io_submit, ctx, 1, list) < 0 ? -errno : 1);
            long res = 0;
            if (submitted == 1) {
                struct io_event ev;
                long got = getevents ? getevents(ctx, 1, 1, &ev, NULL) : syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL);
                res = got == 1 && ev.data == 42 ? (long)ev.res : -1000 - got;
            }
            printf("submit=%ld res=%ld\n", submitted, res);
        } else if (!strcmp(mode, "io_uring")) {
            char params[120] = {0}; /* struct io_uring_params */
            long ring = syscall(SYS_io_uring_setup, 1, params);
            if (ring >= 0)
                close((int)ring);
        } else if (strcmp(mode, "none")) {
            fprintf(stderr, "writer: unknown mode %s\n", mode);
            return 2;
        }
        close(fd);
        return 0;
    }
    """#

    /// Prints a line and exits: only for its ELF (static build, doctor verdict no).
    static let hello = #"""
    #include <stdio.h>
    int main(void) { puts("hello"); return 0; }
    """#

    /// Copies a file with stdio: a program that opens files blkfault never sees.
    static let stdioCopy = #"""
    #include <stdio.h>
    int main(int argc, char **argv)
    {
        if (argc != 3) return 2;
        FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
        char buf[4096];
        size_t n;
        if (!in || !out) return 1;
        while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
        return fclose(in) | fclose(out);
    }
    """#

    /// Builds `source` with gcc (extra `flags`, e.g. -static) into the scratch directory.
    static func build(_ s: Scratch, _ name: String, _ source: String, flags: [String] = []) throws -> String {
        let c = try s.write(name + ".c", source)
        let out = s.path(name)
        let r = try run("/usr/bin/gcc", ["-O1", "-o", out, c] + flags + ["-ldl"])
        try #require(r.status == 0, "gcc failed (scripts/setup installs gcc and libc6-dev): \(r)")
        return out
    }
}
