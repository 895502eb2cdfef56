/* The delay pool. No system call, no allocation, no globals. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "routechain.h"
#include "pool.h"

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
    p->small = at;
    p->large = at + (size_t)n_small * RC_SLOT_SMALL;
    p->n_small = n_small;
    p->n_large = n_large;
    p->free_small = link_free(p->slots, 0, n_small);
    p->free_large = link_free(p->slots, n_small, n_large);
    p->waiting = 0;
    p->seq = 0;
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

void rc_pool_prefetch_next(const struct rc_pool *p)
{
    /* The next soonest is one of the root's two children; a Time Exceeded
     * quoting a traceroute probe fits in two cache lines. */
    for (uint32_t i = 1; i <= 2 && i < p->waiting; i++) {
        const uint8_t *reply = locate(p, p->heap[i].slot);
        __builtin_prefetch(reply);
        __builtin_prefetch(reply + 64);
    }
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
