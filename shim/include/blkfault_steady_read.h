/* The steady pre-filter as its readers see it: the layout the engine publishes
 * (Sources/CPreloadSupport/steady_filter.c writes it, under its image lock) and the
 * check both sides run. The shim runs the check inline in its hot entry points
 * (pread*, pwrite*, preadv*, pwritev*) with the table blkfault_engine_steady_table
 * hands it, so that a request the engine would let through unchanged costs no call
 * into the engine at all (issue 7); blkfault_engine_before runs it too. Part of the
 * shim/engine contract: both libraries are built from one tree.
 *
 * Publishing is a seqlock: `seq` is odd while the engine changes any of it; a reader
 * that saw the same even `seq` before and after its reads saw one consistent snapshot.
 * Bitmaps replaced by a larger one are never freed, so a reader racing with the growth
 * reads old memory, never freed memory. The check calls nothing, takes no lock,
 * allocates nothing and leaves errno alone. */
#ifndef BLKFAULT_STEADY_READ_H
#define BLKFAULT_STEADY_READ_H

#include <stdatomic.h>
#include <stdint.h>

/* As the engine's image table (Preload.swift's imageSlots). */
#define BLKFAULT_STEADY_SLOTS 4096
/* Rules a skipped request is checked against; more active rules: nothing is skipped. */
#define BLKFAULT_STEADY_RULES 8
/* A skipped write touches at most this many clusters. */
#define BLKFAULT_STEADY_MAX_CLUSTERS 64
/* A kind's npoints when no request of that kind may skip. */
#define BLKFAULT_STEADY_CLOSED UINT32_MAX

struct blkfault_steady_bitmap {
    uint64_t nwords;
    _Atomic uint64_t words[];
};

/* What a request of one kind (read, write) is checked against: the sector bytes of the
 * active rules of its iotype, or BLKFAULT_STEADY_CLOSED (the kind is not skippable now,
 * the cluster size is not valid, or an active rule of its iotype has no sector). */
struct blkfault_steady_kind {
    _Atomic uint32_t npoints;
    _Atomic uint64_t points[BLKFAULT_STEADY_RULES];
};

/* The published part of an image's filter. */
struct blkfault_steady_view {
    _Alignas(64) _Atomic uint64_t seq;
    _Atomic uint32_t cluster_bits; /* 9..30 while a kind is open */
    int counting;                  /* BLKFAULT_STATS: count what is let through */
    struct blkfault_steady_bitmap *_Atomic bitmap; /* never NULL: host clusters of guest data */
    struct blkfault_steady_kind kind[2];
    /* What the exit check's witness watches (its own seqlock): mode 0 nothing, 1 the
     * size and two byte ranges, 2 writes cannot be skipped. */
    _Atomic uint64_t wseq;
    _Atomic uint32_t wmode;
    _Atomic uint64_t wsize, wlo[2], whi[2];
    /* Writes inside [wfast_lo, wfast_hi) are allowed by the above whatever the mode says
     * (past every watched range, within the size): two compares instead of all of them
     * for the common write (issue 7). Mode 2: an empty window. */
    _Atomic uint64_t wfast_lo, wfast_hi;
    /* Its own line: counting makes every skipped request write it. */
    _Alignas(64) _Atomic uint64_t hits;
};

typedef struct blkfault_steady_view *_Atomic blkfault_steady_table[BLKFAULT_STEADY_SLOTS];

/* A skipped write must leave what the witness expects true: the file does not grow and
 * no watched range changes. */
__attribute__((always_inline)) static inline int blkfault_steady_witness_allows(const struct blkfault_steady_view *f, uint64_t start, uint64_t end)
{
    uint64_t s = atomic_load_explicit(&f->wseq, memory_order_acquire);
    if (s & 1) return 0;
    int ok = start >= atomic_load_explicit(&f->wfast_lo, memory_order_relaxed)
             && end <= atomic_load_explicit(&f->wfast_hi, memory_order_relaxed);
    if (__builtin_expect(!ok, 0)) {
        uint32_t mode = atomic_load_explicit(&f->wmode, memory_order_relaxed);
        ok = mode == 0;
        if (mode == 1) {
            ok = end <= atomic_load_explicit(&f->wsize, memory_order_relaxed);
            for (int i = 0; i < 2 && ok; i++)
                ok = end <= atomic_load_explicit(&f->wlo[i], memory_order_relaxed)
                     || start >= atomic_load_explicit(&f->whi[i], memory_order_relaxed);
        }
    }
    atomic_thread_fence(memory_order_acquire);
    return ok && atomic_load_explicit(&f->wseq, memory_order_relaxed) == s;
}

/* 1 when a request of kind `op` (0 read, 1 write) of image `handle` at offset/length is
 * guest data the engine would let through unchanged (perform it, no before, no after),
 * else 0. Any thread, no lock. */
__attribute__((always_inline)) static inline int blkfault_steady_check(blkfault_steady_table *table, int32_t handle, int32_t op,
                                        int64_t offset, int64_t length)
{
    if ((uint32_t)handle >= BLKFAULT_STEADY_SLOTS || (uint32_t)op > 1) return 0;
    struct blkfault_steady_view *f = atomic_load_explicit(&(*table)[handle], memory_order_acquire);
    if (!f) return 0;
    uint64_t s = atomic_load_explicit(&f->seq, memory_order_acquire);
    const struct blkfault_steady_kind *k = &f->kind[op];
    uint32_t n = atomic_load_explicit(&k->npoints, memory_order_relaxed);
    uint64_t start = (uint64_t)offset, len = (uint64_t)length, end = start + len;
    /* A change under way, a closed kind, a negative offset or length, an end past 2^63. */
    if ((s & 1) || n > BLKFAULT_STEADY_RULES || (offset | length | (int64_t)end) < 0) return 0;
    const struct blkfault_steady_bitmap *b = atomic_load_explicit(&f->bitmap, memory_order_acquire);
    uint32_t bits = atomic_load_explicit(&f->cluster_bits, memory_order_relaxed);
    uint64_t c = start >> (bits & 63);
    /* A read is classified by its first cluster (as the engine does); a write by all it touches. */
    uint64_t last = op == 1 && len > 0 ? (end - 1) >> (bits & 63) : c;
    if (last - c >= BLKFAULT_STEADY_MAX_CLUSTERS) return 0;
    for (;; c++) {
        uint64_t w = c >> 6;
        if (w >= b->nwords || !((atomic_load_explicit(&b->words[w], memory_order_relaxed) >> (c & 63)) & 1))
            return 0;
        if (c == last) break;
    }
    /* No active rule may cover the request (blkdebug's rule_check: a sector byte inside it). */
    for (uint32_t i = 0; i < n; i++)
        if (atomic_load_explicit(&k->points[i], memory_order_relaxed) - start < len) return 0;
    if (op == 1 && !blkfault_steady_witness_allows(f, start, end)) return 0;
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&f->seq, memory_order_relaxed) != s) return 0;
    if (f->counting) atomic_fetch_add_explicit(&f->hits, 1, memory_order_relaxed);
    return 1;
}

#endif
