/* Pacing: what happens to a reply between the reply core and the write.
 * In order: the answering hop's loss, the hop's own rate limit, the
 * per-source and the daemon-wide limits (RFC 4443 2.4(f), RFC 1812
 * 4.3.2.8), then the hop's delay, for which the reply waits in the queue's
 * pool. A reply is charged to a bucket only once it got past the ones
 * before it, as a router's control plane would: a lost probe never reached
 * it. No system call, no allocation, no globals: the caller passes the
 * time. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "routechain.h"
#include "pace.h"

_Static_assert(sizeof ((struct rc_stats *)0)->paced / sizeof(uint64_t) >= RC_PACE_COUNT,
               "rc_stats.paced must hold every enum rc_pace");

enum {
    IPV4_DST = 16,               /* offsets in the reply: its destination is */
    IPV6_DST = 24,               /* the probe's source */
    IPV6_PREFIX64 = 8
};

bool rc_bucket_take(uint64_t *tat, const struct rc_bucket *b, uint64_t now_ns)
{
    uint64_t old, start;

    if (b->interval_ns == 0)
        return true;
    old = __atomic_load_n(tat, __ATOMIC_RELAXED);
    for (;;) {
        start = old > now_ns ? old : now_ns;
        if (start - now_ns > b->tolerance_ns)
            return false;
        /* Another queue may have taken from the same bucket meanwhile:
         * then old is refreshed and the test made again. */
        if (__atomic_compare_exchange_n(tat, &old, start + b->interval_ns, false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return true;
    }
}

uint64_t rc_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* The same mixing as the generator's output: a salted key spreads over
 * the whole table, so no source can pick its neighbours' cells. */
static uint64_t mix(uint64_t key)
{
    key = (key ^ (key >> 30)) * 0xbf58476d1ce4e5b9u;
    key = (key ^ (key >> 27)) * 0x94d049bb133111ebu;
    return key ^ (key >> 31);
}

/* The probe's source (the reply's destination): an IPv4 address, or an
 * IPv6 /64 (RFC 4443 2.4(f) leaves the scope open; one /64 is one site). */
static uint64_t read_source_key(const uint8_t *reply)
{
    uint64_t key = 0;

    if (reply[0] >> 4 == 4) {
        for (size_t i = 0; i < 4; i++)
            key = key << 8 | reply[IPV4_DST + i];
        return key | (uint64_t)4 << 32;
    }
    for (size_t i = 0; i < IPV6_PREFIX64; i++)
        key = key << 8 | reply[IPV6_DST + i];
    return key;
}

/* A source's bucket is one cell of a fixed table shared by all queues,
 * picked by hash: two sources that meet in a cell share its budget (the
 * table is sized so that this is rare, and the global limit bounds what
 * many sources together get). */
static bool take_source(struct rc_worker *w, const struct rc_table *t, const uint8_t *reply,
                        uint64_t now_ns)
{
    uint64_t cell;

    if (t->source.interval_ns == 0)
        return true;
    cell = mix(read_source_key(reply) ^ w->source_salt) & w->source_mask;
    return rc_bucket_take(&w->source_tat[cell], &t->source, now_ns);
}

/* delay_us, moved uniformly within +/- jitter_us and never below 0. */
static uint64_t draw_delay_ns(struct rc_worker *w, const struct rc_hop_timing *h)
{
    int64_t us = h->delay_us;

    if (h->jitter_us) {
        uint64_t span = 2 * (uint64_t)h->jitter_us + 1;
        us += (int64_t)(((rc_rng_next(&w->rng) >> 32) * span) >> 32) - (int64_t)h->jitter_us;
    }
    return us > 0 ? (uint64_t)us * 1000 : 0;
}

int rc_pace_reply(struct rc_worker *w, const struct rc_table *t, const struct rc_where *where,
                  const uint8_t *reply, size_t len, uint64_t now_ns)
{
    const struct rc_chain *c = &t->chains[where->chain];
    const struct rc_hop_timing *h = c->timing ? &c->timing[where->router] : NULL;
    uint64_t delay_ns = 0;

    if (h && h->loss && rc_rng_next(&w->rng) >> 32 < h->loss)
        return RC_PACE_LOST;
    if (h && !rc_bucket_take(&c->hop_tat[where->router], &h->rate, now_ns))
        return RC_PACE_HOP_LIMITED;
    if (!take_source(w, t, reply, now_ns))
        return RC_PACE_SOURCE_LIMITED;
    if (!rc_bucket_take(&w->daemon_tat, &t->daemon, now_ns))
        return RC_PACE_GLOBAL_LIMITED;
    if (h)
        delay_ns = draw_delay_ns(w, h);
    if (delay_ns == 0)
        return -1;
    if (!rc_pool_book(&w->pool, now_ns + delay_ns, now_ns))
        return RC_PACE_OVERLOADED;
    return rc_pool_add(&w->pool, reply, len, now_ns + delay_ns) ? RC_PACE_DELAYED
                                                                 : RC_PACE_POOL_FULL;
}


/* The book. A worker reads while nothing is due and writes what is due,
 * first. Left alone, under a flood that keeps its queue full, that swings:
 * a run of reads while nothing was due books a run of writes one delay
 * later, which crowds the reads out, which leaves the slice after it
 * empty, and so on, until writes pile up and go out milliseconds late.
 * The book counts the writes due in each slice of the next second and
 * takes at most RC_BOOK_SHARE percent of a slice's time for them, at the
 * measured cost of a write: what is booked is written on time, the rest
 * of the slice is left to reads, and a reply due in a full slice is
 * refused (RC_PACE_OVERLOADED), as a busy router drops rather than answer
 * late. Until a write has been measured nothing is refused. */

enum {
    WRITE_NS_MAX = 100000        /* a longer write was preempted: not its cost */
};

bool rc_pool_book(struct rc_pool *p, uint64_t due_ns, uint64_t now_ns)
{
    uint64_t slice = due_ns >> RC_BOOK_SHIFT;
    struct rc_book_bin *bin;

    if (slice - (now_ns >> RC_BOOK_SHIFT) >= RC_BOOK_BINS)
        return true;                       /* beyond the book: not counted */
    /* A bin whose slice differs holds one at least RC_BOOK_BINS slices
     * earlier (nothing is booked further ahead than that): it is past.
     * Slices are kept to 32 bits: one untouched for 2^32 slices (13 days)
     * and met again exactly then keeps its old count, which at worst
     * refuses one slice's worth of replies once. */
    bin = &p->book[slice & (RC_BOOK_BINS - 1)];
    if (bin->slice != (uint32_t)slice) {
        bin->slice = (uint32_t)slice;
        bin->writes = 0;
    }
    if (p->book_cap && bin->writes >= p->book_cap)
        return false;
    bin->writes++;
    return true;
}

void rc_pool_note_writes(struct rc_pool *p, uint32_t n, uint64_t ns)
{
    uint64_t each16, cap;

    if (n == 0 || ns / n > WRITE_NS_MAX)
        return;
    each16 = ns * 16 / n;
    /* A moving average over about 16 batches, in 1/16 ns. */
    if (p->write_ns16 == 0)
        p->write_ns16 = (uint32_t)each16;
    else
        p->write_ns16 = (uint32_t)((int64_t)p->write_ns16
                                   + ((int64_t)each16 - (int64_t)p->write_ns16) / 16);
    if (p->write_ns16 == 0)
        p->write_ns16 = 1;
    cap = ((uint64_t)RC_BOOK_SHARE << RC_BOOK_SHIFT) * 16 / 100 / p->write_ns16;
    p->book_cap = cap < 1 ? 1 : cap > UINT32_MAX ? UINT32_MAX : (uint32_t)cap;
}


/* The pool: a binary min-heap of (due_ns, seq, slot). A heap
 * rather than a timing wheel: due times stay exact (no tick to round to),
 * any delay up to the 10 s a story may ask for needs no second level, and
 * with n waiting an add or a removal costs log2(n) steps (15 for 20000). */

static size_t round8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

size_t rc_pool_bytes(uint32_t n_small, uint32_t n_large)
{
    size_t n = (size_t)n_small + n_large;

    return round8(n * sizeof(struct rc_slot)) + n * sizeof(struct rc_due)
         + RC_BOOK_BINS * sizeof(struct rc_book_bin)
         + (size_t)n_small * RC_SLOT_SMALL + (size_t)n_large * RC_SLOT_LARGE;
}

static uint32_t link_free(struct rc_slot *slots, uint32_t first, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++)
        slots[first + i].next = i + 1 < count ? first + i + 1 : RC_SLOT_NONE;
    return count ? first : RC_SLOT_NONE;
}

void rc_pool_init(struct rc_pool *p, void *mem, uint32_t n_small, uint32_t n_large)
{
    uint8_t *at = mem;
    size_t n = (size_t)n_small + n_large;

    p->slots = (struct rc_slot *)at;
    at += round8(n * sizeof(struct rc_slot));
    p->heap = (struct rc_due *)at;
    at += n * sizeof(struct rc_due);
    p->book = (struct rc_book_bin *)at;
    memset(p->book, 0, RC_BOOK_BINS * sizeof(struct rc_book_bin));
    at += RC_BOOK_BINS * sizeof(struct rc_book_bin);
    p->small = at;
    p->large = at + (size_t)n_small * RC_SLOT_SMALL;
    p->n_small = n_small;
    p->n_large = n_large;
    p->free_small = link_free(p->slots, 0, n_small);
    p->free_large = link_free(p->slots, n_small, n_large);
    p->waiting = 0;
    p->seq = 0;
    p->book_cap = 0;
    p->write_ns16 = 0;
}

static uint8_t *locate(const struct rc_pool *p, uint32_t slot)
{
    return slot < p->n_small ? p->small + (size_t)slot * RC_SLOT_SMALL
                             : p->large + (size_t)(slot - p->n_small) * RC_SLOT_LARGE;
}

/* Equal due times leave in the order they came; seq may wrap around, and
 * the signed difference orders it as long as fewer than 2^31 wait. */
static bool is_sooner(const struct rc_due *x, const struct rc_due *y)
{
    if (x->due_ns != y->due_ns)
        return x->due_ns < y->due_ns;
    return (int32_t)(x->seq - y->seq) < 0;
}

static void sift_up(struct rc_pool *p, uint32_t i)
{
    struct rc_due entry = p->heap[i];

    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!is_sooner(&entry, &p->heap[parent]))
            break;
        p->heap[i] = p->heap[parent];
        i = parent;
    }
    p->heap[i] = entry;
}

static void sift_down(struct rc_pool *p, uint32_t i)
{
    struct rc_due entry = p->heap[i];

    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= p->waiting)
            break;
        if (child + 1 < p->waiting && is_sooner(&p->heap[child + 1], &p->heap[child]))
            child++;
        if (!is_sooner(&p->heap[child], &entry))
            break;
        p->heap[i] = p->heap[child];
        i = child;
    }
    p->heap[i] = entry;
}

bool rc_pool_add(struct rc_pool *p, const uint8_t *reply, size_t len, uint64_t due_ns)
{
    uint32_t *head = len <= RC_SLOT_SMALL ? &p->free_small : &p->free_large;
    uint32_t slot;

    if (len > RC_SLOT_LARGE)
        return false;
    if (*head == RC_SLOT_NONE && head == &p->free_small)
        head = &p->free_large;                /* a small reply may take a large slot */
    slot = *head;
    if (slot == RC_SLOT_NONE)
        return false;
    *head = p->slots[slot].next;
    memcpy(locate(p, slot), reply, len);
    p->slots[slot].len = (uint32_t)len;
    p->heap[p->waiting++] = (struct rc_due){due_ns, p->seq++, slot};
    sift_up(p, p->waiting - 1);
    return true;
}

const uint8_t *rc_pool_first_due(const struct rc_pool *p, uint64_t now_ns, size_t *len)
{
    uint32_t slot;

    if (p->waiting == 0 || p->heap[0].due_ns > now_ns)
        return NULL;
    slot = p->heap[0].slot;
    *len = p->slots[slot].len;
    return locate(p, slot);
}

void rc_pool_remove_first(struct rc_pool *p)
{
    uint32_t slot = p->heap[0].slot;
    uint32_t *head = slot < p->n_small ? &p->free_small : &p->free_large;

    p->slots[slot].next = *head;
    *head = slot;
    p->heap[0] = p->heap[--p->waiting];
    if (p->waiting)
        sift_down(p, 0);
}

uint64_t rc_pool_next_due(const struct rc_pool *p)
{
    return p->waiting ? p->heap[0].due_ns : UINT64_MAX;
}
