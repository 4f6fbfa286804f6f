/* The allocated size (st_blocks) a target image's fstat reports, with
 * BLKFAULT_ALLOCATED_SIZE=length: never less than its length. Over blkdebug QEMU cannot
 * learn an image's allocated size (blkdebug has none to give:
 * bdrv_get_allocated_file_size is -ENOTSUP), so qcow2's metadata-preallocation check
 * (qcow2_detect_metadata_preallocation, at the first block-status query) always comes
 * out false. Over file-posix, as in the preload's run, it compares st_blocks with the
 * clusters the refcounts say are in use: a file with holes (copied by `cp`, or
 * preallocation=metadata) is taken for a metadata-preallocated image, and block status
 * then asks the file for its holes (lseek SEEK_DATA/SEEK_HOLE), which changes what
 * qemu-img commit, convert and map do. Reporting the file as fully allocated makes the
 * check come out false as it does over blkdebug.
 * Off by default: where no rule fires the program must see what it sees without
 * blkfault, and this is blkdebug's side effect, not a fault. Only images attached as
 * targets (a followed backing file has no blkdebug node over it). */
#include "shim.h"

#include <stdlib.h>
#include <string.h>

/* Image handles attached as targets; handles beyond the table are left alone. */
#define TARGETS_MAX 4096
static _Atomic unsigned char targets[TARGETS_MAX];

void shim_target_attached(int32_t image)
{
    if (image >= 0 && image < TARGETS_MAX)
        atomic_store_explicit(&targets[image], 1, memory_order_relaxed);
}

static int allocated_size_as_length(void)
{
    static _Atomic int cached = -1; /* racing threads compute the same answer */
    int m = atomic_load_explicit(&cached, memory_order_relaxed);
    if (m < 0) {
        const char *e = getenv("BLKFAULT_ALLOCATED_SIZE");
        m = e != NULL && strcmp(e, "length") == 0;
        atomic_store_explicit(&cached, m, memory_order_relaxed);
    }
    return m;
}

void shim_stat_seen(int fd, struct stat64 *st)
{
    int32_t image = shim_fd_image(fd);
    if (image < 0 || image >= TARGETS_MAX || !atomic_load_explicit(&targets[image], memory_order_relaxed) ||
        !S_ISREG(st->st_mode) || !allocated_size_as_length())
        return;
    __typeof__(st->st_blocks) whole = (st->st_size + 511) / 512;
    if (st->st_blocks < whole)
        st->st_blocks = whole;
}
