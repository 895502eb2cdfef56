/* Pacing, the policy: what happens to a reply between the reply core and the write.
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
#include "wire.h"

_Static_assert(sizeof ((struct rc_stats *)0)->paced / sizeof(uint64_t) >= RC_PACE_COUNT,
               "rc_stats.paced must hold every enum rc_pace");

bool rc_pace_take(uint64_t *tat, const struct rc_bucket *b, uint64_t now_ns)
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

uint64_t rc_pace_random(uint64_t *state)
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

    if (ip_version(reply) == 4) {
        for (size_t i = 0; i < IPV4_ADDR_LEN; i++)
            key = key << 8 | reply[IPV4_DESTINATION + i];
        return key | (uint64_t)4 << 32;
    }
    for (size_t i = 0; i < IPV6_SITE_PREFIX_LEN; i++)
        key = key << 8 | reply[IPV6_DESTINATION + i];
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
    return rc_pace_take(&w->source_tat[cell], &t->source, now_ns);
}

/* The hop's delay less or plus its jitter (+1 or -1), never below 0. */
static uint64_t edge_ns(const struct rc_hop_timing *h, int sign)
{
    int64_t us = (int64_t)h->delay_us + sign * (int64_t)h->jitter_us;

    return us > 0 ? (uint64_t)us * 1000 : 0;
}

/* delay_us, moved uniformly within +/- jitter_us and never below 0. */
static uint64_t draw_delay_ns(struct rc_worker *w, const struct rc_hop_timing *h)
{
    int64_t us = h->delay_us;

    if (h->jitter_us) {
        uint64_t span = 2 * (uint64_t)h->jitter_us + 1;
        us += (int64_t)(((rc_pace_random(&w->rng) >> 32) * span) >> 32) - (int64_t)h->jitter_us;
    }
    return us > 0 ? (uint64_t)us * 1000 : 0;
}

int rc_pace_reply(struct rc_worker *w, const struct rc_table *t, const struct rc_where *where,
                  const uint8_t *reply, size_t len, uint64_t now_ns)
{
    const struct rc_chain *c = &t->chains[where->chain];
    const struct rc_hop_timing *h = c->timing ? &c->timing[where->router] : NULL;
    uint64_t delay_ns = 0, due_ns;

    if (h && h->loss && rc_pace_random(&w->rng) >> 32 < h->loss)
        return RC_PACE_LOST;
    if (h && !rc_pace_take(&c->hop_tat[where->router], &h->rate, now_ns))
        return RC_PACE_HOP_LIMITED;
    if (!take_source(w, t, reply, now_ns))
        return RC_PACE_SOURCE_LIMITED;
    if (!rc_pace_take(&w->daemon_tat, &t->daemon, now_ns))
        return RC_PACE_GLOBAL_LIMITED;
    if (h)
        delay_ns = draw_delay_ns(w, h);
    if (delay_ns == 0)
        return -1;
    due_ns = rc_book_take(&w->book, now_ns + delay_ns, now_ns + edge_ns(h, -1),
                          now_ns + edge_ns(h, 1), now_ns);
    if (due_ns == 0)
        return RC_PACE_OVERLOADED;
    return rc_pool_add(&w->pool, reply, len, due_ns) ? RC_PACE_DELAYED : RC_PACE_POOL_FULL;
}
