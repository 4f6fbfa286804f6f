#include "cheap.h"
#include <malloc.h>

/* Bytes in use: chunks in the arenas plus chunks glibc mmap'ed on their own (an
 * allocation above the mmap threshold, e.g. a dictionary reserved at its final size,
 * is not in uordblks). */
size_t cheap_heap_in_use(void)
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}
