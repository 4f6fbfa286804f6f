/* blkfault_steady.h: the lock-free pre-filter of the engine's I/O path. */
#include "blkfault_steady.h"
/* The reader side and the layout, shared with the shim. */
#include "../../shim/include/blkfault_steady_read.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* As ClusterSet's bitmap limit: clusters past it are never skipped. */
#define STEADY_MAX_WORDS ((uint64_t)1 << 21)

struct steady_rule {
    int64_t sector_byte;
    uint32_t iotypes;
};

struct blkfault_steady {
    /* What readers read (first, so that a view pointer is the filter's). */
    struct blkfault_steady_view v;
    /* Writer only (under the engine lock): the rules set since the last end, and the
     * words set since the last clear. */
    _Alignas(64) struct steady_rule rules[BLKFAULT_STEADY_RULES];
    uint64_t dirty_lo, dirty_hi;
};

static blkfault_steady_table table;
/* Every filter starts with this one (no words), so readers need no null check. */
static struct blkfault_steady_bitmap no_words;

struct blkfault_steady *blkfault_steady_new(int counting)
{
    struct blkfault_steady *f = aligned_alloc(64, sizeof *f);
    if (!f) return NULL;
    memset(f, 0, sizeof *f);
    f->v.counting = counting;
    /* Nothing watched yet (mode 0): every write is clear of the witness. */
    atomic_store_explicit(&f->v.wfast_hi, UINT64_MAX, memory_order_relaxed);
    atomic_store_explicit(&f->v.bitmap, &no_words, memory_order_relaxed);
    for (int k = 0; k < 2; k++)
        atomic_store_explicit(&f->v.kind[k].npoints, BLKFAULT_STEADY_CLOSED, memory_order_relaxed);
    f->dirty_lo = UINT64_MAX;
    return f;
}

void blkfault_steady_register(int32_t handle, struct blkfault_steady *f)
{
    if (handle >= 0 && handle < BLKFAULT_STEADY_SLOTS) atomic_store_explicit(&table[handle], &f->v, memory_order_release);
}

void blkfault_steady_begin(struct blkfault_steady *f)
{
    uint64_t s = atomic_load_explicit(&f->v.seq, memory_order_relaxed);
    atomic_store_explicit(&f->v.seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

int blkfault_steady_closed(const struct blkfault_steady *f)
{
    return atomic_load_explicit(&f->v.kind[0].npoints, memory_order_relaxed) == BLKFAULT_STEADY_CLOSED
           && atomic_load_explicit(&f->v.kind[1].npoints, memory_order_relaxed) == BLKFAULT_STEADY_CLOSED;
}

void blkfault_steady_end(struct blkfault_steady *f, uint32_t kinds, int32_t nrules, uint32_t cluster_bits)
{
    int valid = cluster_bits >= 9 && cluster_bits <= 30 && nrules >= 0 && nrules <= BLKFAULT_STEADY_RULES;
    for (int k = 0; k < 2; k++) {
        uint32_t iotype = 1u << k; /* blkdebug's iotype bit of a read (k 0) or a write (k 1) */
        int open = valid && (kinds & (k == 0 ? BLKFAULT_STEADY_READS : BLKFAULT_STEADY_WRITES));
        uint32_t n = 0;
        for (int32_t i = 0; open && i < nrules; i++) {
            if (!(f->rules[i].iotypes & iotype)) continue;
            if (f->rules[i].sector_byte == -1) open = 0;
            else atomic_store_explicit(&f->v.kind[k].points[n++], (uint64_t)f->rules[i].sector_byte, memory_order_relaxed);
        }
        atomic_store_explicit(&f->v.kind[k].npoints, open ? n : BLKFAULT_STEADY_CLOSED, memory_order_relaxed);
    }
    atomic_store_explicit(&f->v.cluster_bits, cluster_bits, memory_order_relaxed);
    uint64_t s = atomic_load_explicit(&f->v.seq, memory_order_relaxed);
    atomic_store_explicit(&f->v.seq, s + 1, memory_order_release);
}

void blkfault_steady_clear(struct blkfault_steady *f)
{
    struct blkfault_steady_bitmap *b = atomic_load_explicit(&f->v.bitmap, memory_order_relaxed);
    if (f->dirty_lo == UINT64_MAX) return;
    for (uint64_t w = f->dirty_lo; w <= f->dirty_hi && w < b->nwords; w++)
        atomic_store_explicit(&b->words[w], 0, memory_order_relaxed);
    f->dirty_lo = UINT64_MAX;
    f->dirty_hi = 0;
}

void blkfault_steady_set_word(struct blkfault_steady *f, uint64_t word, uint64_t bits)
{
    if (word >= STEADY_MAX_WORDS) return;
    struct blkfault_steady_bitmap *b = atomic_load_explicit(&f->v.bitmap, memory_order_relaxed);
    if (word >= b->nwords) {
        if (!bits) return;
        uint64_t n = b->nwords ? b->nwords : 64;
        while (n <= word) n *= 2;
        if (n > STEADY_MAX_WORDS) n = STEADY_MAX_WORDS;
        struct blkfault_steady_bitmap *grown = calloc(1, sizeof *grown + n * sizeof grown->words[0]);
        if (!grown) return;
        grown->nwords = n;
        for (uint64_t w = 0; w < b->nwords; w++)
            atomic_store_explicit(&grown->words[w], atomic_load_explicit(&b->words[w], memory_order_relaxed),
                                  memory_order_relaxed);
        /* The old bitmap stays allocated: a reader may still be in it. Sizes double, so
         * all retired ones together are smaller than the current one. */
        atomic_store_explicit(&f->v.bitmap, grown, memory_order_release);
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
    f->rules[i].sector_byte = sector_byte;
    f->rules[i].iotypes = iotypes;
}

/* The window of blkfault_steady_read.h's witness check: only writes its full check
 * allows. A write [start, end) (end < 2^63) starting at or past a range's end, or ending
 * at or before its start, is clear of it; a range starting at UINT64_MAX (unused) is clear
 * of every write. So past the last used range's end and within the size is allowed. */
static void witness_window(uint32_t mode, uint64_t size, uint64_t lo0, uint64_t hi0, uint64_t lo1, uint64_t hi1,
                           uint64_t *fast_lo, uint64_t *fast_hi)
{
    if (mode == 0) { *fast_lo = 0; *fast_hi = UINT64_MAX; return; }
    if (mode != 1) { *fast_lo = UINT64_MAX; *fast_hi = 0; return; }
    uint64_t past = 0;
    if (lo0 != UINT64_MAX && hi0 > past) past = hi0;
    if (lo1 != UINT64_MAX && hi1 > past) past = hi1;
    *fast_lo = past;
    *fast_hi = size;
}

void blkfault_steady_witness(struct blkfault_steady *f, uint32_t mode, uint64_t size,
                             uint64_t lo0, uint64_t hi0, uint64_t lo1, uint64_t hi1)
{
    uint64_t s = atomic_load_explicit(&f->v.wseq, memory_order_relaxed);
    atomic_store_explicit(&f->v.wseq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&f->v.wmode, mode, memory_order_relaxed);
    atomic_store_explicit(&f->v.wsize, size, memory_order_relaxed);
    atomic_store_explicit(&f->v.wlo[0], lo0, memory_order_relaxed);
    atomic_store_explicit(&f->v.whi[0], hi0, memory_order_relaxed);
    atomic_store_explicit(&f->v.wlo[1], lo1, memory_order_relaxed);
    atomic_store_explicit(&f->v.whi[1], hi1, memory_order_relaxed);
    uint64_t fast_lo, fast_hi;
    witness_window(mode, size, lo0, hi0, lo1, hi1, &fast_lo, &fast_hi);
    atomic_store_explicit(&f->v.wfast_lo, fast_lo, memory_order_relaxed);
    atomic_store_explicit(&f->v.wfast_hi, fast_hi, memory_order_relaxed);
    atomic_store_explicit(&f->v.wseq, s + 2, memory_order_release);
}

int blkfault_steady_allows(int32_t handle, int32_t op, int64_t offset, int64_t length)
{
    return blkfault_steady_check(&table, handle, op, offset, length);
}

/* The shim's entry (blkfault_engine.h): the table it runs the check on itself. */
__attribute__((visibility("default"))) blkfault_steady_table *blkfault_engine_steady_table(void)
{
    return &table;
}

uint64_t blkfault_steady_hits(struct blkfault_steady *f)
{
    return atomic_load_explicit(&f->v.hits, memory_order_relaxed);
}
