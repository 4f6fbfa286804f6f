/* libelf (elfutils, Debian's libelf-dev) for `blkfault doctor`, plus the few
 * function-like macros of <elf.h> and <gelf.h> that Swift cannot import; and
 * <sys/xattr.h>, which Glibc's module lacks. */
#ifndef BLKFAULT_CLIBELF_H
#define BLKFAULT_CLIBELF_H
#include <gelf.h>
#include <libelf.h>
#include <sys/xattr.h> /* getxattr: file capabilities */

static inline unsigned blkfault_elf_st_bind(unsigned char info) { return GELF_ST_BIND(info); }
static inline unsigned blkfault_elf_st_type(unsigned char info) { return GELF_ST_TYPE(info); }
static inline unsigned blkfault_elf_version_current(void) { return EV_CURRENT; }
#endif
