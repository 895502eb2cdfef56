/* The layout of a serving loop (serve.c), private to C: Python makes one
 * with rc_worker_init() and never reads its fields. Include after
 * routechain.h. */
#ifndef ROUTECHAIN_WORKER_H
#define ROUTECHAIN_WORKER_H

#include "pool.h"
#include "book.h"

struct rc_worker {
    int fd;                  /* TUN queue, non-blocking */
    int stop_fd;             /* eventfd: readable means stop */
    const struct rc_table **live;
    const struct rc_table *in_use;  /* NULL while it waits */
    uint8_t *buf;
    size_t cap;
    struct rc_stats stats;
    /* Pacing (pace.c): the queue's own pool, book, random generator and
     * share of the global limit; the per-source buckets are shared by all
     * queues. */
    struct rc_pool pool;
    struct rc_book book;
    uint64_t rng;            /* generator state; seeded per start */
    uint64_t daemon_tat;     /* this queue's share of table->daemon */
    uint64_t *source_tat;    /* source_mask + 1 cells */
    uint32_t source_mask;
    uint64_t source_salt;    /* keys the source hash, the same in every queue */
};

#endif
