/* Process and thread behaviour under libblkfault.so, one mode per test
 * (Tests/IntegrationTests/ProcessTests.swift compiles it with gcc).
 * Every mode writes 4 KiB at byte 1 MiB of IMAGE ("the target"), where the test's
 * rule fails writes; each attempt prints "<who> write: ok" or "<who> write: <errno name>". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
static const char *image;
static char buf[4096];

static void attempt(const char *who, int fd)
{
    ssize_t n = pwrite(fd, buf, sizeof buf, 1 << 20);
    if (n == (ssize_t)sizeof buf)
        printf("%s write: ok\n", who);
    else
        printf("%s write: %s\n", who, n < 0 ? strerrorname_np(errno) : "short");
    fflush(stdout);
}

static int open_image(void)
{
    int fd = open(image, O_RDWR);
    if (fd < 0) { perror(image); exit(2); }
    return fd;
}

static int wait_child(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The child keeps working on its copy of the engine: a once-rule fires in each process. */
static int mode_fork(void)
{
    int fd = open_image();
    pid_t pid = fork();
    if (pid == 0) {
        attempt("child", fd);
        attempt("child", fd);
        _exit(0);
    }
    int rc = wait_child(pid);
    attempt("parent", fd);
    attempt("parent", fd);
    return rc;
}

/* exec starts a fresh engine: the once-rule fired before exec fires again after it. */
static int mode_exec(const char *self)
{
    int fd = open_image();
    attempt("before-exec", fd);
    char fdtext[16];
    snprintf(fdtext, sizeof fdtext, "%d", fd);
    /* The fd survives exec (no O_CLOEXEC); the new image's engine knows nothing of it
     * until it is opened again, so the new program opens it itself. */
    execl(self, self, "after-exec", image, fdtext, (char *)NULL);
    perror("execl");
    return 2;
}

static int mode_after_exec(void)
{
    int fd = open_image();
    attempt("after-exec", fd);
    attempt("after-exec", fd);
    return 0;
}

static int mode_spawn(const char *self)
{
    int fd = open_image();
    attempt("parent", fd);
    char *args[] = { (char *)self, "after-exec", (char *)image, NULL };
    pid_t pid;
    int err = posix_spawn(&pid, self, NULL, NULL, args, environ);
    if (err) { fprintf(stderr, "posix_spawn: %s\n", strerror(err)); return 2; }
    int rc = wait_child(pid);
    pid = vfork();
    if (pid == 0) {
        execve(self, args, environ);
        _exit(127);
    }
    rc |= wait_child(pid);
    attempt("parent", fd);
    return rc;
}

/* dup'd fds carry the image: writes through the duplicate are seen and failed. */
static int mode_dup(void)
{
    int fd = open_image();
    int d1 = dup(fd);
    int d2 = fcntl(fd, F_DUPFD_CLOEXEC, 100);
    int d3 = dup2(fd, 200);
    close(fd);
    attempt("dup", d1);
    attempt("F_DUPFD", d2);
    attempt("dup2", d3);
    close(d1); close(d2);
    attempt("dup2-after-close", d3);
    close(d3);
    return 0;
}

/* One thread does I/O while another closes the fd (and reopens it, so the number may
 * come back as another file): nothing may crash or hang. */
static volatile int io_fd;
static volatile int stop;
static void *io_thread(void *arg)
{
    (void)arg;
    long ok = 0, failed = 0;
    while (!stop) {
        if (pwrite(io_fd, buf, sizeof buf, 1 << 20) == (ssize_t)sizeof buf) ok++; else failed++;
        char r[512];
        if (pread(io_fd, r, sizeof r, 0) < 0) failed++;
    }
    fprintf(stderr, "io thread: %ld ok, %ld failed\n", ok, failed);
    return NULL;
}

static int mode_close_race(void)
{
    char other[4096];
    snprintf(other, sizeof other, "%s.other", image);
    for (int round = 0; round < 200; round++) {
        io_fd = open_image();
        stop = 0;
        pthread_t t;
        pthread_create(&t, NULL, io_thread, NULL);
        usleep(200);
        close(io_fd);
        int o = open(other, O_RDWR | O_CREAT, 0644);   /* likely the same number */
        usleep(200);
        stop = 1;
        pthread_join(t, NULL);
        if (o >= 0) close(o);
    }
    printf("close-race: done\n");
    return 0;
}

/* A signal interrupting a blocking read of a target (a FIFO named as the image):
 * the read returns -1/EINTR, as without blkfault. */
static void on_alarm(int sig) { (void)sig; }
static int mode_eintr(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;          /* no SA_RESTART */
    sigaction(SIGALRM, &sa, NULL);
    sigset_t set;                      /* the test runner may have it blocked */
    sigemptyset(&set);
    sigaddset(&set, SIGALRM);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    int fd = open(image, O_RDWR);      /* a FIFO opened read-write does not block */
    if (fd < 0) { perror(image); return 2; }
    alarm(1);
    char c;
    ssize_t n = read(fd, &c, 1);
    printf("read: %zd %s\n", n, n < 0 ? strerrorname_np(errno) : "");
    alarm(1);
    struct iovec v = { &c, 1 };
    n = readv(fd, &v, 1);
    printf("readv: %zd %s\n", n, n < 0 ? strerrorname_np(errno) : "");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: %s MODE IMAGE\n", argv[0]); return 2; }
    image = argv[2];
    memset(buf, 0x5a, sizeof buf);
    const char *m = argv[1];
    if (!strcmp(m, "fork")) return mode_fork();
    if (!strcmp(m, "exec")) return mode_exec(argv[0]);
    if (!strcmp(m, "after-exec")) return mode_after_exec();
    if (!strcmp(m, "spawn")) return mode_spawn(argv[0]);
    if (!strcmp(m, "dup")) return mode_dup();
    if (!strcmp(m, "close-race")) return mode_close_race();
    if (!strcmp(m, "eintr")) return mode_eintr();
    fprintf(stderr, "unknown mode %s\n", m);
    return 2;
}
