/* blkfault_steady.h: the lock-free pre-filter of the engine's I/O path. */
#include "blkfault_steady.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* As the engine's image table (Preload.swift's imageSlots). */
#define STEADY_SLOTS 4096
/* As ClusterSet's bitmap limit: clusters past it are never skipped. */
#define STEADY_MAX_WORDS ((uint64_t)1 << 21)
/* A skipped write touches at most this many clusters. */
#define STEADY_MAX_CLUSTERS 64

struct steady_bitmap {
    uint64_t nwords;
    _Atomic uint64_t words[];
};

struct steady_rule {
    _Atomic int64_t sector_byte;
    _Atomic uint32_t iotypes;
};

struct blkfault_steady {
    /* Read by every request. */
    _Alignas(64) _Atomic uint64_t seq;
    _Atomic uint32_t kinds;
    _Atomic int32_t nrules;
    _Atomic uint32_t cluster_bits;
    int counting;
    struct steady_bitmap *_Atomic bitmap;
    struct steady_rule rules[BLKFAULT_STEADY_RULES];
    _Atomic uint64_t wseq;
    _Atomic uint32_t wmode;
    _Atomic uint64_t wsize, wlo[2], whi[2];
    /* Writer only (under the engine lock): the words set since the last clear. */
    _Alignas(64) uint64_t dirty_lo, dirty_hi;
    /* Its own line: counting makes every skipped request write it. */
    _Alignas(64) _Atomic uint64_t hits;
};

static struct blkfault_steady *_Atomic table[STEADY_SLOTS];

struct blkfault_steady *blkfault_steady_new(int counting)
{
    struct blkfault_steady *f = aligned_alloc(64, sizeof *f);
    if (!f) return NULL;
    memset(f, 0, sizeof *f);
    f->counting = counting;
    f->dirty_lo = UINT64_MAX;
    return f;
}

void blkfault_steady_register(int32_t handle, struct blkfault_steady *f)
{
    if (handle >= 0 && handle < STEADY_SLOTS) atomic_store_explicit(&table[handle], f, memory_order_release);
}

void blkfault_steady_begin(struct blkfault_steady *f)
{
    uint64_t s = atomic_load_explicit(&f->seq, memory_order_relaxed);
    atomic_store_explicit(&f->seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

void blkfault_steady_end(struct blkfault_steady *f, uint32_t kinds, int32_t nrules, uint32_t cluster_bits)
{
    atomic_store_explicit(&f->cluster_bits, cluster_bits, memory_order_relaxed);
    atomic_store_explicit(&f->kinds, kinds, memory_order_relaxed);
    atomic_store_explicit(&f->nrules, nrules, memory_order_relaxed);
    uint64_t s = atomic_load_explicit(&f->seq, memory_order_relaxed);
    atomic_store_explicit(&f->seq, s + 1, memory_order_release);
}

void blkfault_steady_clear(struct blkfault_steady *f)
{
    struct steady_bitmap *b = atomic_load_explicit(&f->bitmap, memory_order_relaxed);
    if (!b || f->dirty_lo == UINT64_MAX) return;
    for (uint64_t w = f->dirty_lo; w <= f->dirty_hi && w < b->nwords; w++)
        atomic_store_explicit(&b->words[w], 0, memory_order_relaxed);
    f->dirty_lo = UINT64_MAX;
    f->dirty_hi = 0;
}

void blkfault_steady_set_word(struct blkfault_steady *f, uint64_t word, uint64_t bits)
{
    if (word >= STEADY_MAX_WORDS) return;
    struct steady_bitmap *b = atomic_load_explicit(&f->bitmap, memory_order_relaxed);
    if (!b || word >= b->nwords) {
        if (!bits) return;
        uint64_t n = b ? b->nwords : 64;
        while (n <= word) n *= 2;
        if (n > STEADY_MAX_WORDS) n = STEADY_MAX_WORDS;
        struct steady_bitmap *grown = calloc(1, sizeof *grown + n * sizeof grown->words[0]);
        if (!grown) return;
        grown->nwords = n;
        if (b)
            for (uint64_t w = 0; w < b->nwords; w++)
                atomic_store_explicit(&grown->words[w], atomic_load_explicit(&b->words[w], memory_order_relaxed),
                                      memory_order_relaxed);
        /* The old bitmap stays allocated: a reader may still be in it. Sizes double, so
         * all retired ones together are smaller than the current one. */
        atomic_store_explicit(&f->bitmap, grown, memory_order_release);
        b = grown;
    }
    atomic_store_explicit(&b->words[word], bits, memory_order_relaxed);
    if (bits) {
        if (f->dirty_lo == UINT64_MAX || word < f->dirty_lo) f->dirty_lo = word;
        if (word > f->dirty_hi) f->dirty_hi = word;
    }
}

void blkfault_steady_rule(struct blkfault_steady *f, int32_t i, int64_t sector_byte, uint32_t iotypes)
{
    if (i < 0 || i >= BLKFAULT_STEADY_RULES) return;
    atomic_store_explicit(&f->rules[i].sector_byte, sector_byte, memory_order_relaxed);
    atomic_store_explicit(&f->rules[i].iotypes, iotypes, memory_order_relaxed);
}

void blkfault_steady_witness(struct blkfault_steady *f, uint32_t mode, uint64_t size,
                             uint64_t lo0, uint64_t hi0, uint64_t lo1, uint64_t hi1)
{
    uint64_t s = atomic_load_explicit(&f->wseq, memory_order_relaxed);
    atomic_store_explicit(&f->wseq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&f->wmode, mode, memory_order_relaxed);
    atomic_store_explicit(&f->wsize, size, memory_order_relaxed);
    atomic_store_explicit(&f->wlo[0], lo0, memory_order_relaxed);
    atomic_store_explicit(&f->whi[0], hi0, memory_order_relaxed);
    atomic_store_explicit(&f->wlo[1], lo1, memory_order_relaxed);
    atomic_store_explicit(&f->whi[1], hi1, memory_order_relaxed);
    atomic_store_explicit(&f->wseq, s + 2, memory_order_release);
}

static int has_bit(const struct steady_bitmap *b, uint64_t cluster)
{
    uint64_t w = cluster >> 6;
    return w < b->nwords && (atomic_load_explicit(&b->words[w], memory_order_relaxed) >> (cluster & 63)) & 1;
}

/* What the witness expects stays true after the write: the file does not grow and no
 * watched range changes. */
static int witness_allows(struct blkfault_steady *f, uint64_t start, uint64_t end)
{
    uint64_t s = atomic_load_explicit(&f->wseq, memory_order_acquire);
    if (s & 1) return 0;
    uint32_t mode = atomic_load_explicit(&f->wmode, memory_order_relaxed);
    int ok = mode == 0;
    if (mode == 1) {
        ok = end <= atomic_load_explicit(&f->wsize, memory_order_relaxed);
        for (int i = 0; i < 2 && ok; i++)
            ok = end <= atomic_load_explicit(&f->wlo[i], memory_order_relaxed)
                 || start >= atomic_load_explicit(&f->whi[i], memory_order_relaxed);
    }
    atomic_thread_fence(memory_order_acquire);
    return ok && atomic_load_explicit(&f->wseq, memory_order_relaxed) == s;
}

int blkfault_steady_allows(int32_t handle, int32_t op, int64_t offset, int64_t length)
{
    if (handle < 0 || handle >= STEADY_SLOTS || (op != 0 && op != 1) || offset < 0 || length < 0) return 0;
    struct blkfault_steady *f = atomic_load_explicit(&table[handle], memory_order_acquire);
    if (!f) return 0;
    uint64_t s = atomic_load_explicit(&f->seq, memory_order_acquire);
    if (s & 1) return 0;
    uint32_t want = op == 0 ? BLKFAULT_STEADY_READS : BLKFAULT_STEADY_WRITES;
    if (!(atomic_load_explicit(&f->kinds, memory_order_relaxed) & want)) return 0;
    struct steady_bitmap *b = atomic_load_explicit(&f->bitmap, memory_order_acquire);
    if (!b) return 0;
    uint64_t start = (uint64_t)offset, len = (uint64_t)length, end = start + len;
    if (end < start) return 0;
    uint32_t bits = atomic_load_explicit(&f->cluster_bits, memory_order_relaxed);
    if (bits < 9 || bits > 30) return 0;
    uint64_t first = start >> bits;
    /* A read is classified by its first cluster (as the engine does); a write by all it touches. */
    uint64_t last = op == 1 && len > 0 ? (end - 1) >> bits : first;
    if (last - first >= STEADY_MAX_CLUSTERS) return 0;
    for (uint64_t c = first; c <= last; c++)
        if (!has_bit(b, c)) return 0;
    /* No active rule may cover the request (blkdebug's rule_check: a sector byte inside it). */
    uint32_t iotype = 1u << (op == 0 ? 0 : 1);
    int32_t n = atomic_load_explicit(&f->nrules, memory_order_relaxed);
    if (n < 0 || n > BLKFAULT_STEADY_RULES) return 0;
    for (int32_t i = 0; i < n; i++) {
        int64_t sector = atomic_load_explicit(&f->rules[i].sector_byte, memory_order_relaxed);
        uint64_t target = (uint64_t)sector;
        int covers = sector == -1 || (len > 0 && target >= start && target < end);
        if (covers && (atomic_load_explicit(&f->rules[i].iotypes, memory_order_relaxed) & iotype)) return 0;
    }
    if (op == 1 && !witness_allows(f, start, end)) return 0;
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&f->seq, memory_order_relaxed) != s) return 0;
    if (f->counting) atomic_fetch_add_explicit(&f->hits, 1, memory_order_relaxed);
    return 1;
}

uint64_t blkfault_steady_hits(struct blkfault_steady *f)
{
    return atomic_load_explicit(&f->hits, memory_order_relaxed);
}
