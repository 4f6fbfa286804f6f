/* The rows of shim/hooks.def as data, for `blkfault doctor`: which libc entry
 * points libblkfault.so interposes and in which family. Built from hooks.def
 * itself, so the CLI's list cannot drift from the shim's. */
#ifndef BLKFAULT_HOOK_TABLE_H
#define BLKFAULT_HOOK_TABLE_H

struct blkfault_hook_row {
    const char *name;   /* the exported symbol */
    const char *family; /* hooks.c's family helper, e.g. "pread", "io_submit" */
};

/* The number of rows, and row i (0 <= i < count). */
int blkfault_hook_count(void);
struct blkfault_hook_row blkfault_hook_row(int i);

#endif
