#include "cheap.h"
#include <malloc.h>

size_t cheap_heap_in_use(void)
{
    return mallinfo2().uordblks;
}
