/* The steady pre-filter: a lock-free answer to "is this a guest data read or write
 * that the engine would let through without changing anything?" (issue 7).
 *
 * The Swift engine publishes, under its image lock, what such a request needs: which
 * kinds can be skipped now, the sectors of the active rules a skipped request must not
 * touch, a bitmap of host clusters that are wholly guest data, and what the exit check's
 * witness watches. Publishing is a seqlock: `seq` is odd while the engine changes any
 * of it; a reader that saw the same even `seq` before and after its reads saw one
 * consistent snapshot. Bitmaps replaced by a larger one are never freed, so a reader
 * racing with the growth reads old memory, never freed memory. No allocation on the
 * read side. */
#ifndef BLKFAULT_STEADY_H
#define BLKFAULT_STEADY_H
#include <stdint.h>

#define BLKFAULT_STEADY_READS 1u
#define BLKFAULT_STEADY_WRITES 2u
/* Rules a skipped request is checked against; more active rules: nothing is skipped
 * (as shim/include/blkfault_steady_read.h). */
#define BLKFAULT_STEADY_RULES 8

struct blkfault_steady;

/* Writer side: the engine's image lock held. */
__attribute__((visibility("hidden"))) struct blkfault_steady *blkfault_steady_new(int counting);
/* Makes `f` the filter of image `handle` (before the handle is handed out). */
__attribute__((visibility("hidden"))) void blkfault_steady_register(int32_t handle, struct blkfault_steady *f);
__attribute__((visibility("hidden"))) void blkfault_steady_begin(struct blkfault_steady *f);
/* 1 when the last end closed both kinds: no reader looks past them, so until a kind
 * opens the writer may change the bitmap without a begin and an end. */
__attribute__((visibility("hidden"))) int blkfault_steady_closed(const struct blkfault_steady *f);
/* Forgets every cluster (the engine's layout changed). */
__attribute__((visibility("hidden"))) void blkfault_steady_clear(struct blkfault_steady *f);
/* Word `word` of the bitmap (clusters 64*word ... 64*word+63) becomes `bits`. */
__attribute__((visibility("hidden"))) void blkfault_steady_set_word(struct blkfault_steady *f, uint64_t word, uint64_t bits);
__attribute__((visibility("hidden"))) void blkfault_steady_rule(struct blkfault_steady *f, int32_t i, int64_t sector_byte, uint32_t iotypes);
/* Ends the change: `kinds` (BLKFAULT_STEADY_*), `nrules` rules set by blkfault_steady_rule,
 * the bitmap's clusters being 2^cluster_bits bytes (a change of it comes with a clear). */
__attribute__((visibility("hidden"))) void blkfault_steady_end(struct blkfault_steady *f, uint32_t kinds, int32_t nrules,
                                                               uint32_t cluster_bits);

/* The witness's watch (its own lock held): mode 0 nothing watched, 1 the size and up to
 * two byte ranges below, 2 writes cannot be skipped. A skipped write must not grow the
 * file past `size` nor touch a range. */
__attribute__((visibility("hidden"))) void blkfault_steady_witness(struct blkfault_steady *f, uint32_t mode, uint64_t size,
                                                                   uint64_t lo0, uint64_t hi0, uint64_t lo1, uint64_t hi1);

/* Reader side, any thread, no lock: 1 when a request of kind `op` (0 read, 1 write) at
 * offset/length may skip the engine (perform it, no after call), else 0. */
__attribute__((visibility("hidden"))) int blkfault_steady_allows(int32_t handle, int32_t op, int64_t offset, int64_t length);

/* Requests that skipped the engine (counted only when `counting`). */
__attribute__((visibility("hidden"))) uint64_t blkfault_steady_hits(struct blkfault_steady *f);

#endif
