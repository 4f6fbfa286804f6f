import Foundation
import Testing

/// libblkfault.so loads its engine (libblkfault-engine.so) at the first open of a matching
/// image and never before (shim/engine.c): a process that opens no image maps no Swift.
@Suite struct LazyEngineTests {
    /// `opener MODE FILE`:
    ///   maps     prints "before=N after=M": the lines of /proc/self/maps naming
    ///            libblkfault-engine.so before and after opening FILE and reading from it
    ///   threads  8 threads open FILE at the same moment and pread 4 KiB each; prints
    ///            "eio=N", how many reads failed with EIO
    ///   fork     a child forked before any open opens FILE and reads; then the parent
    ///            does, and a child forked after that reads the inherited fd; prints
    ///            "first=E parent=E inherited=E", each read's errno (0: it succeeded)
    static let opener = #"""
    #define _GNU_SOURCE
    #include <errno.h>
    #include <fcntl.h>
    #include <pthread.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/wait.h>
    #include <unistd.h>

    static const char *file;
    static pthread_barrier_t start;
    static int eio;
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

    static int engine_lines(void)
    {
        FILE *f = fopen("/proc/self/maps", "r");
        char line[4096];
        int n = 0;
        while (f && fgets(line, sizeof line, f))
            n += strstr(line, "libblkfault-engine.so") != NULL;
        if (f) fclose(f);
        return n;
    }

    /* errno of a 4 KiB read at 0 (0 on success). */
    static int read_errno(int fd)
    {
        char buf[4096];
        return pread(fd, buf, sizeof buf, 0) < 0 ? errno : 0;
    }

    static int open_and_read(void)
    {
        int fd = open(file, O_RDONLY);
        if (fd < 0) { perror("open"); exit(1); }
        int e = read_errno(fd);
        close(fd);
        return e;
    }

    static void *worker(void *arg)
    {
        (void)arg;
        pthread_barrier_wait(&start);
        if (open_and_read() == EIO) {
            pthread_mutex_lock(&lock);
            eio++;
            pthread_mutex_unlock(&lock);
        }
        return NULL;
    }

    /* Runs fn in a child, returns its exit status (the errno it saw). */
    static int in_child(int (*fn)(int), int arg)
    {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) _exit(fn(arg));
        int st;
        waitpid(pid, &st, 0);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 1000;
    }
    static int child_open(int unused) { (void)unused; return open_and_read(); }
    static int child_read(int fd) { return read_errno(fd); }

    int main(int argc, char **argv)
    {
        if (argc != 3) { fprintf(stderr, "usage: opener MODE FILE\n"); return 2; }
        file = argv[2];
        if (!strcmp(argv[1], "maps")) {
            int before = engine_lines();
            open_and_read();
            printf("before=%d after=%d\n", before, engine_lines() > 0);
        } else if (!strcmp(argv[1], "threads")) {
            pthread_t t[8];
            pthread_barrier_init(&start, NULL, 8);
            for (int i = 0; i < 8; i++) pthread_create(&t[i], NULL, worker, NULL);
            for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
            printf("eio=%d\n", eio);
        } else if (!strcmp(argv[1], "fork")) {
            int first = in_child(child_open, 0);
            int fd = open(file, O_RDONLY);
            if (fd < 0) { perror("open"); return 1; }
            int parent = read_errno(fd);
            int inherited = in_child(child_read, fd);
            printf("first=%d parent=%d inherited=%d\n", first, parent, inherited);
        } else {
            return 2;
        }
        return 0;
    }
    """#

    /// Reads fail with EIO (raw model: every read is read_aio).
    static let failReads = "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\n"

    /// The scratch directory (kept as long as the fixture is used), the built opener, a
    /// 64 KiB file of 0x5a bytes and the rule file.
    struct Fixture {
        let s: Scratch
        let opener: String
        let data: String
        let rules: String
    }

    func setup() throws -> Fixture {
        try requireTools()
        let s = try Scratch()
        let opener = try CPrograms.build(s, "opener", Self.opener, flags: ["-pthread"])
        let data = s.path("data.raw")
        try Data(repeating: 0x5a, count: 65536).write(to: URL(fileURLWithPath: data))
        return Fixture(s: s, opener: opener, data: data, rules: try s.write("reads.cfg", Self.failReads))
    }

    func env(_ rules: String, image: String?, _ extra: [String: String] = [:]) -> [String: String] {
        var e = ["LD_PRELOAD": Built.library, "BLKFAULT_CONFIG": rules, "BLKFAULT_MODEL": "raw"]
        if let image { e["BLKFAULT_IMAGE"] = image }
        return e.merging(extra) { $1 }
    }

    @Test func aProcessThatOpensNoImageMapsNoEngine() throws {
        let f = try setup()
        // data.raw is not a target here: by path (another glob), nor by content (no qcow2 magic).
        for image in [f.s.path("other.img"), nil] {
            let r = try run(f.opener, ["maps", f.data], env: env(f.rules, image: image))
            #expect(r == Outcome(stdout: "before=0 after=0\n", stderr: "", status: 0), "BLKFAULT_IMAGE=\(image ?? "unset"): \(r)")
        }
    }

    @Test func theFirstMatchingOpenLoadsIt() throws {
        let f = try setup()
        let r = try run(f.opener, ["maps", f.data], env: env(f.rules, image: f.data))
        #expect(r == Outcome(stdout: "before=0 after=1\n", stderr: "", status: 0), "\(r)")
        // Without BLKFAULT_IMAGE a qcow2 image is a target by its magic.
        let img = try f.s.image("t.qcow2")
        let q = try run(f.opener, ["maps", img], env: env(f.rules, image: nil, ["BLKFAULT_MODEL": "qemu-7.2"]))
        #expect(q == Outcome(stdout: "before=0 after=1\n", stderr: "", status: 0), "\(q)")
    }

    @Test func threadsRacingTheFirstOpenAllSeeTheRules() throws {
        let f = try setup()
        for _ in 0..<5 {
            let r = try run(f.opener, ["threads", f.data], env: env(f.rules, image: f.data))
            #expect(r == Outcome(stdout: "eio=8\n", stderr: "", status: 0), "\(r)")
        }
    }

    @Test func forkChildrenLoadOrInheritIt() throws {
        let f = try setup()
        let r = try run(f.opener, ["fork", f.data], env: env(f.rules, image: f.data))
        #expect(r == Outcome(stdout: "first=5 parent=5 inherited=5\n", stderr: "", status: 0), "\(r)")
    }

    /// An engine that cannot be loaded stops the program at its first matching open, before
    /// any I/O reaches the image, with one message naming the path; a program that opens no
    /// image runs as if blkfault were absent.
    @Test func aMissingEngineStopsTheFirstMatchingOpen() throws {
        let f = try setup()
        let missing = f.s.path("nowhere/libblkfault-engine.so")
        let r = try run(f.opener, ["maps", f.data], env: env(f.rules, image: f.data, ["BLKFAULT_ENGINE": missing]))
        #expect(r.status == 1)
        #expect(r.stdout == "")
        #expect(r.stderr == "blkfault: cannot load the engine: \(missing): cannot open shared object file: No such file or directory "
            + "(libblkfault.so looks for libblkfault-engine.so in its own directory, or at BLKFAULT_ENGINE); "
            + "stopping before any I/O reaches \(f.data)\n", "\(r)")
        let idle = try run(f.opener, ["maps", f.data], env: env(f.rules, image: f.s.path("other.img"), ["BLKFAULT_ENGINE": missing]))
        #expect(idle == Outcome(stdout: "before=0 after=0\n", stderr: "", status: 0), "\(idle)")

        // Not blkfault's engine: a library without its ABI.
        let libc = "/lib/x86_64-linux-gnu/libc.so.6"
        let wrong = try run(f.opener, ["maps", f.data], env: env(f.rules, image: f.data, ["BLKFAULT_ENGINE": libc]))
        #expect(wrong.status == 1)
        #expect(wrong.stderr.hasPrefix("blkfault: cannot load the engine: \(libc): no symbol blkfault_engine_attach"), "\(wrong)")
    }

    /// The engine is looked for next to the libblkfault.so the process loaded, also when
    /// LD_PRELOAD names it by a relative path.
    @Test func theEngineIsFoundNextToTheShim() throws {
        let f = try setup()
        let dir = f.s.path("lib")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Built.library, toPath: dir + "/libblkfault.so")
        let script = "cd \(f.s.url.path) && LD_PRELOAD=./lib/libblkfault.so exec \(f.opener) maps \(f.data)"
        let environment = ["BLKFAULT_CONFIG": f.rules, "BLKFAULT_MODEL": "raw", "BLKFAULT_IMAGE": f.data]
        let alone = try run("/bin/sh", ["-c", script], env: environment)
        #expect(alone.status == 1)
        #expect(alone.stderr.hasPrefix("blkfault: cannot load the engine: \(dir)/libblkfault-engine.so: cannot open shared object file"), "\(alone)")
        try FileManager.default.copyItem(atPath: Built.engine, toPath: dir + "/libblkfault-engine.so")
        let paired = try run("/bin/sh", ["-c", script], env: environment)
        #expect(paired == Outcome(stdout: "before=0 after=1\n", stderr: "", status: 0), "\(paired)")
    }
}
