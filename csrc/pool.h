/* A queue's delay pool (pool.c): replies waiting for their due time, in
 * preallocated slots of two sizes, ordered by due time in a binary heap.
 * Written and read by its worker alone. Private to C: Python sees only
 * the slot counts and sizes (routechain.h). Include after routechain.h. */
#ifndef ROUTECHAIN_POOL_H
#define ROUTECHAIN_POOL_H

#include <stdbool.h>

enum {
    RC_SLOT_NONE = 0xffffffff    /* the end of a free list */
};

/* One reply's place in a pool. */
struct rc_slot {
    uint32_t next;           /* free list link */
    uint32_t len;
};

/* One entry of the heap: when a reply is due and which slot holds it.
 * The keys sit in the heap itself, so keeping it in order walks one array. */
struct rc_due {
    uint64_t due_ns;         /* CLOCK_MONOTONIC */
    uint32_t seq;            /* order among equal due times */
    uint32_t slot;
};

struct rc_pool {
    struct rc_slot *slots;   /* n_small + n_large; small ones first */
    struct rc_due *heap;     /* soonest due first */
    uint8_t *small;          /* n_small * RC_SLOT_SMALL bytes */
    uint8_t *large;          /* n_large * RC_SLOT_LARGE bytes */
    uint32_t n_small;
    uint32_t n_large;
    uint32_t free_small;     /* free list heads; RC_SLOT_NONE when empty */
    uint32_t free_large;
    uint32_t waiting;        /* slots in the heap */
    uint32_t seq;
};

/* Bytes of memory rc_pool_init() carves a pool of this many slots from. */
size_t rc_pool_bytes(uint32_t n_small, uint32_t n_large);

/* Lay the pool out over mem (rc_pool_bytes() long, 8-byte aligned; need
 * not be zeroed: the reply arenas are not touched until used), every slot
 * free. */
void rc_pool_init(struct rc_pool *pool, void *mem, uint32_t n_small, uint32_t n_large);

/* Copy a reply into a free slot of its size, due at due_ns; false when
 * there is none (the pool is full for that size, or the reply is larger
 * than RC_SLOT_LARGE). */
bool rc_pool_add(struct rc_pool *p, const uint8_t *reply, size_t len, uint64_t due_ns);

/* The soonest waiting reply if it is due at now_ns (NULL otherwise), and
 * its length. It stays in the pool until rc_pool_remove_first(). */
const uint8_t *rc_pool_first_due(const struct rc_pool *p, uint64_t now_ns, size_t *len);

/* Ask the CPU for the replies that may come after the soonest: a reply
 * waits for milliseconds, long enough to leave the caches, and its write
 * would otherwise wait for memory while the kernel copies it. */
void rc_pool_prefetch_next(const struct rc_pool *p);

/* Free the soonest waiting reply's slot. The pool must not be empty. */
void rc_pool_remove_first(struct rc_pool *p);

/* When the soonest waiting reply is due; UINT64_MAX when none waits. */
uint64_t rc_pool_next_due(const struct rc_pool *p);

#endif
