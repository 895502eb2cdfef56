/* Pacing (pace.c), between the reply core and the write: rate limits,
 * loss, delay. Pure like the core (no system call, no allocation, no
 * globals): the caller passes the time in, and serve.c does the reading,
 * writing and sleeping. Include after routechain.h. */
#ifndef ROUTECHAIN_PACE_H
#define ROUTECHAIN_PACE_H

#include <stdbool.h>

#include "worker.h"

/* Take one reply's worth from a bucket (shared or not: compare-and-swap);
 * false when the bucket is empty. A bucket with interval_ns 0 always gives. */
bool rc_pace_take(uint64_t *tat, const struct rc_bucket *b, uint64_t now_ns);

/* The next 64 random bits of a queue's generator (SplitMix64). */
uint64_t rc_pace_random(uint64_t *state);

/* Decide the fate of the reply the core built (len bytes at reply; where
 * says who answered) at now_ns. Returns -1 to send it now, or the enum
 * rc_pace it met: RC_PACE_DELAYED means it was copied into the pool. */
int rc_pace_reply(struct rc_worker *w, const struct rc_table *t, const struct rc_where *where,
                  const uint8_t *reply, size_t len, uint64_t now_ns);

#endif
