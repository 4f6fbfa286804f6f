#include <stddef.h>
/* Bytes the process's malloc has handed out and not got back (mallinfo2's uordblks). */
size_t cheap_heap_in_use(void);
