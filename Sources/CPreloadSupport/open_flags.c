/* Open flags the Swift side cannot name (blkfault_thread.h). */
#define _GNU_SOURCE
#include <fcntl.h>

#include "blkfault_thread.h"

int32_t blkfault_flags_direct(int32_t flags)
{
    return (flags & O_DIRECT) != 0;
}
