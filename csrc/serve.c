/* The serving loop: one per TUN queue, run by a worker thread with the GIL
 * released. While packets keep coming it makes one read and at most one
 * write per packet; it waits in ppoll() only when the queue is empty, until
 * the next packet or the next delayed reply is due, whichever comes first,
 * and stops when stop_fd (an eventfd) becomes readable.
 *
 * A reply with nothing to pace (the limits off, its chain without timing)
 * takes the same path as before pacing existed: no clock is read. Otherwise
 * pace.c decides its fate; delayed replies wait in the queue's own pool and
 * are written from this loop, so a reload never loses them; a stop drops
 * them. Each is counted by how late it went out, and while the queue is
 * busy the loop tells the book what its writes cost, which it uses to keep
 * the queue from taking more delayed replies than it can write on time
 * (book.c).
 *
 * Tables are swapped without locks (rc_table_publish) and reclaimed by
 * quiescent-state tracking: a worker records the table it holds in in_use,
 * and NULL while it sleeps, so the publisher knows when the old table is no
 * longer read. */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "routechain.h"
#include "pace.h"
#include "worker.h"

_Static_assert(sizeof ((struct rc_stats *)0)->drops / sizeof(uint64_t) >= RC_DROP_COUNT,
               "rc_stats.drops must hold every enum rc_drop");
_Static_assert(sizeof ((struct rc_stats *)0)->replies / sizeof(uint64_t) >= RC_KIND_COUNT,
               "rc_stats.replies must hold every enum rc_kind");

enum {
    BUSY_RUN = 64            /* reads in a row without running dry: busy */
};

/* Counters have one writer; relaxed atomics keep readers free of torn values. */
static inline void add(uint64_t *counter, uint64_t n)
{
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n,
                     __ATOMIC_RELAXED);
}

static inline void bump(uint64_t *counter)
{
    add(counter, 1);
}

/* Take the live table. Store-then-recheck pairs with the publisher's
 * store-then-wait: either the publisher sees us holding the old table and
 * waits, or we see its new table here and hold that instead. */
static const struct rc_table *hold_live(struct rc_worker *w)
{
    const struct rc_table *t = __atomic_load_n(w->live, __ATOMIC_SEQ_CST);
    for (;;) {
        __atomic_store_n(&w->in_use, t, __ATOMIC_SEQ_CST);
        const struct rc_table *now = __atomic_load_n(w->live, __ATOMIC_SEQ_CST);
        if (now == t)
            return t;
        t = now;
    }
}

static void release_live(struct rc_worker *w)
{
    __atomic_store_n(&w->in_use, NULL, __ATOMIC_SEQ_CST);
}

static uint64_t read_clock_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Sleep until the queue has a packet or a delayed reply is due (1), or
 * stop is asked (0); -errno if ppoll itself fails, or if the queue reports
 * an error (the TUN is gone). Arming the timer costs a microsecond or so
 * (a trap on a VM; under a flood, a quarter of a busy queue's time in
 * profiles), yet waiting awake for a reply due within 20 us instead gave
 * no measurable gain with a CPU of its own, and 0.82 of the throughput
 * (noisy) where the flood's sender shares the CPUs, whose slices a worker
 * that never sleeps competes for. It sleeps. */
static int wait_readable(const struct rc_worker *w)
{
    struct pollfd fds[2] = {
        { .fd = w->fd, .events = POLLIN },
        { .fd = w->stop_fd, .events = POLLIN },
    };
    for (;;) {
        uint64_t due = rc_pool_next_due(&w->pool), now = 0;
        struct timespec wait = {0, 0};

        if (due != UINT64_MAX) {
            now = read_clock_ns();
            if (due > now)
                wait = (struct timespec){(time_t)((due - now) / 1000000000u),
                                         (long)((due - now) % 1000000000u)};
        }
        int ready = ppoll(fds, 2, due == UINT64_MAX ? NULL : &wait, NULL);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (fds[1].revents)
            return 0;
        if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL))
            return -EIO;
        if (ready == 0 || fds[0].revents & POLLIN)
            return 1;
    }
}

/* A full queue or a vanished route loses this reply, not the loop. */
static void write_reply(struct rc_worker *w, const uint8_t *reply, size_t len)
{
    if (write(w->fd, reply, len) != (ssize_t)len) {
        bump(&w->stats.write_errors);
        __atomic_store_n(&w->stats.last_write_errno, errno, __ATOMIC_RELAXED);
        return;
    }
    bump(&w->stats.sent);
}

const uint64_t rc_late_edges_ns[RC_LATE_BUCKETS - 1] = {
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000
};

static void count_late(struct rc_stats *s, uint64_t late_ns)
{
    size_t b = 0;

    while (b < RC_LATE_BUCKETS - 1 && late_ns > rc_late_edges_ns[b])
        b++;
    bump(&s->late[b]);
    add(&s->late_ns, late_ns);
}

/* Write every reply due at now_ns. While the queue is busy (busy: it has
 * not run dry for a while), tell the pool what that cost: a write after
 * a sleep, with cold caches, says nothing of what the queue can do when
 * it counts, and would only make the book refuse replies it has time for. */
static void send_due(struct rc_worker *w, uint64_t now_ns, bool busy)
{
    const uint8_t *reply;
    size_t len;
    uint32_t n = 0;

    while ((reply = rc_pool_first_due(&w->pool, now_ns, &len)) != NULL) {
        count_late(&w->stats, now_ns - rc_pool_next_due(&w->pool));
        rc_pool_prefetch_next(&w->pool);
        write_reply(w, reply, len);
        rc_pool_remove_first(&w->pool);
        n++;
    }
    if (n && busy)
        rc_book_note_writes(&w->book, n, read_clock_ns() - now_ns);
}

int rc_serve(struct rc_worker *w)
{
    uint8_t *const packet = w->buf + RC_HEADROOM;
    const size_t room = w->cap - RC_HEADROOM;
    const struct rc_table *table = hold_live(w);

    /* A delayed reply is due at its nanosecond: the kernel's default 50 us
     * of slack on this thread's timers would add to every delay. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    uint32_t run = 0;        /* packets read since the queue last ran dry */

    for (;;) {
        if (w->pool.waiting)
            send_due(w, read_clock_ns(), run >= BUSY_RUN);
        ssize_t n = read(w->fd, packet, room);
        if (n < 0) {
            int err = errno;
            if (err == EINTR)
                continue;
            if (err != EAGAIN) {
                bump(&w->stats.read_errors);
                __atomic_store_n(&w->stats.last_read_errno, err, __ATOMIC_RELAXED);
            }
            /* Empty, or a failed read: either way, wait for the next packet
             * rather than spin on a queue that has nothing to give. */
            release_live(w);
            run = 0;
            int r = wait_readable(w);
            if (r <= 0)
                return r;
            table = hold_live(w);
            continue;
        }
        bump(&w->stats.received);
        run += run < BUSY_RUN;
        if (__atomic_load_n(w->live, __ATOMIC_ACQUIRE) != table)
            table = hold_live(w);

        size_t off = 0;
        struct rc_where where;
        int len = rc_reply(w->buf, RC_HEADROOM, (size_t)n, w->cap, table, &off, &where);
        /* Counted as the core decided; a reason or kind out of range (none
         * is) lands in slot 0 rather than outside the counters. */
        if (len < 0) {
            bump(&w->stats.drops[-len < RC_DROP_COUNT ? -len : RC_DROP_NONE]);
            continue;
        }
        bump(&w->stats.replies[where.kind < RC_KIND_COUNT ? where.kind : 0]);
        if (where.chapter)
            bump(&w->stats.chapters);
        /* Only what needs pacing reads the clock: a chain without timing,
         * with the limits off, is served exactly as before. */
        if (table->limited || table->chains[where.chain].timing) {
            int fate = rc_pace_reply(w, table, &where, w->buf + off, (size_t)len, read_clock_ns());
            if (fate >= 0) {
                bump(&w->stats.paced[fate]);
                continue;
            }
        }
        write_reply(w, w->buf + off, (size_t)len);
    }
}
