/* Pacing, between the reply core and the write: rate limits, loss, delay.
 * Pure like the core (no system call, no allocation, no globals): the
 * caller passes the time in, and serve.c does the reading, writing and
 * sleeping. Include after routechain.h. */
#ifndef ROUTECHAIN_PACE_H
#define ROUTECHAIN_PACE_H

#include <stdbool.h>

/* Take one reply's worth from a bucket (shared or not: compare-and-swap);
 * false when the bucket is empty. A bucket with interval_ns 0 always gives. */
bool rc_bucket_take(uint64_t *tat, const struct rc_bucket *b, uint64_t now_ns);

/* The next 64 random bits of a queue's generator (SplitMix64). */
uint64_t rc_rng_next(uint64_t *state);

/* Decide the fate of the reply the core built (len bytes at reply; where
 * says who answered) at now_ns. Returns -1 to send it now, or the enum
 * rc_pace it met: RC_PACE_DELAYED means it was copied into the pool. */
int rc_pace_reply(struct rc_worker *w, const struct rc_table *t, const struct rc_where *where,
                  const uint8_t *reply, size_t len, uint64_t now_ns);

/* Copy a reply into a free slot of its size, due at due_ns; false when
 * there is none (the pool is full for that size, or the reply is larger
 * than RC_SLOT_LARGE). */
bool rc_pool_add(struct rc_pool *p, const uint8_t *reply, size_t len, uint64_t due_ns);

/* The soonest waiting reply if it is due at now_ns (NULL otherwise), and
 * its length. It stays in the pool until rc_pool_remove_first(). */
const uint8_t *rc_pool_first_due(const struct rc_pool *p, uint64_t now_ns, size_t *len);

/* Free the soonest waiting reply's slot. The pool must not be empty. */
void rc_pool_remove_first(struct rc_pool *p);

/* Book a write for a reply due at due_ns in the slice of the book it
 * falls in; false when that slice is booked full. */
bool rc_pool_book(struct rc_pool *p, uint64_t due_ns, uint64_t now_ns);

/* n replies were just written in ns nanoseconds: update the measured cost
 * of a write, and with it how many writes a slice of the book takes. */
void rc_pool_note_writes(struct rc_pool *p, uint32_t n, uint64_t ns);

/* When the soonest waiting reply is due; UINT64_MAX when none waits. */
uint64_t rc_pool_next_due(const struct rc_pool *p);

#endif
