/* A worker's memory and what others may read of it: laid out by
 * rc_worker_init() over one block Python allocates, so its layout
 * (worker.h) stays private to C; which table it holds; its counters. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "routechain.h"
#include "worker.h"

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

enum {
    ALIGN = 64               /* a cache line: queues never share one */
};

size_t rc_worker_bytes(const struct rc_worker_config *c)
{
    return ALIGN - 1 + round_up(sizeof(struct rc_worker), ALIGN) + round_up(c->cap, ALIGN)
         + round_up(rc_book_bytes(), ALIGN) + rc_pool_bytes(c->n_small, c->n_large);
}

struct rc_worker *rc_worker_init(void *mem, const struct rc_worker_config *c)
{
    uint8_t *at = (uint8_t *)round_up((uintptr_t)mem, ALIGN);
    struct rc_worker *w = (struct rc_worker *)at;

    memset(w, 0, sizeof *w);
    at += round_up(sizeof *w, ALIGN);
    w->fd = c->fd;
    w->stop_fd = c->stop_fd;
    w->live = c->live;
    w->buf = at;
    w->cap = c->cap;
    at += round_up(c->cap, ALIGN);
    rc_book_init(&w->book, at);
    at += round_up(rc_book_bytes(), ALIGN);
    rc_pool_init(&w->pool, at, c->n_small, c->n_large);
    w->rng = c->rng;
    w->source_tat = c->source_tat;
    w->source_mask = c->source_mask;
    w->source_salt = c->source_salt;
    return w;
}

int rc_worker_holds(const struct rc_worker *w, const struct rc_table *table)
{
    return __atomic_load_n(&w->in_use, __ATOMIC_SEQ_CST) == table;
}

void rc_worker_read_stats(const struct rc_worker *w, struct rc_stats *out)
{
    const struct rc_stats *s = &w->stats;
    out->received = __atomic_load_n(&s->received, __ATOMIC_RELAXED);
    out->sent = __atomic_load_n(&s->sent, __ATOMIC_RELAXED);
    for (size_t i = 0; i < sizeof s->replies / sizeof s->replies[0]; i++)
        out->replies[i] = __atomic_load_n(&s->replies[i], __ATOMIC_RELAXED);
    for (size_t i = 0; i < sizeof s->drops / sizeof s->drops[0]; i++)
        out->drops[i] = __atomic_load_n(&s->drops[i], __ATOMIC_RELAXED);
    for (size_t i = 0; i < sizeof s->paced / sizeof s->paced[0]; i++)
        out->paced[i] = __atomic_load_n(&s->paced[i], __ATOMIC_RELAXED);
    for (size_t i = 0; i < RC_LATE_BUCKETS; i++)
        out->late[i] = __atomic_load_n(&s->late[i], __ATOMIC_RELAXED);
    out->late_ns = __atomic_load_n(&s->late_ns, __ATOMIC_RELAXED);
    out->chapters = __atomic_load_n(&s->chapters, __ATOMIC_RELAXED);
    out->write_errors = __atomic_load_n(&s->write_errors, __ATOMIC_RELAXED);
    out->read_errors = __atomic_load_n(&s->read_errors, __ATOMIC_RELAXED);
    out->last_write_errno = __atomic_load_n(&s->last_write_errno, __ATOMIC_RELAXED);
    out->last_read_errno = __atomic_load_n(&s->last_read_errno, __ATOMIC_RELAXED);
}
