/* hooks.def's rows as strings: only the name and family columns are expanded, so
 * none of the prototypes' types are needed here. */
#include "blkfault_hook_table.h"

#include <features.h> /* __GLIBC_PREREQ, used by hooks.def */

static const struct blkfault_hook_row rows[] = {
#define HOOK(name, ret, params, args, family) {#name, #family},
#define HOOKV(name, ret, params, args, last, family) {#name, #family},
#include "../../shim/hooks.def"
};

int blkfault_hook_count(void) { return (int)(sizeof rows / sizeof rows[0]); }

struct blkfault_hook_row blkfault_hook_row(int i) { return rows[i]; }
