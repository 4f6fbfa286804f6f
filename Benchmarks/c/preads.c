/* Pass-through cost on an fd blkfault does not follow: N cached preads of 4 KiB
 * from a small file (page cache hits), timed around the loop only.
 * usage: preads FILE [N]   prints ns per pread. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE [N]\n", argv[0]);
        return 2;
    }
    long n = argc > 2 ? atol(argv[2]) : 1000000;
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    static char buf[4096];
    off_t size = lseek(fd, 0, SEEK_END);
    long blocks = size / 4096 > 0 ? size / 4096 : 1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        if (pread(fd, buf, sizeof buf, (off_t)(i % blocks) * 4096) < 0) {
            perror("pread");
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
    printf("%.1f ns per pread\n", ns / (double)n);
    return 0;
}
