/* Unit tests for pacing (csrc/pace.c) under AddressSanitizer and UBSan:
 * the delay pool's order, sequence wrap-around, full pool and slot reuse;
 * a table freed (as a reload frees it) while its replies still wait; the
 * buckets; loss and jitter from the generator; the book of writes. Every
 * pool is malloc'ed at its exact size, so a slot written past its end
 * aborts. Prints "ok N". */
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routechain.h"
#include "pace.h"
#include "pool.h"
#include "book.h"
#include "check.h"

static const uint64_t MS = 1000000;

struct pool_mem {
    struct rc_pool pool;
    void *mem;
    void *book;
};

static void make_pool(struct pool_mem *m, uint32_t n_small, uint32_t n_large)
{
    m->mem = malloc(rc_pool_bytes(n_small, n_large));
    m->book = NULL;
    CHECK(m->mem != NULL);
    rc_pool_init(&m->pool, m->mem, n_small, n_large);
}

/* A worker with a pool of its own and an empty book, each malloc'ed at its
 * exact size. */
static void make_worker(struct rc_worker *w, struct pool_mem *m, uint32_t n_small,
                        uint32_t n_large)
{
    memset(w, 0, sizeof *w);
    make_pool(m, n_small, n_large);
    w->pool = m->pool;
    m->book = malloc(rc_book_bytes());
    CHECK(m->book != NULL);
    rc_book_init(&w->book, m->book);
}

static void free_pool(struct pool_mem *m)
{
    free(m->mem);
    free(m->book);
}

/* A reply of len bytes whose every byte after the first says id, with an
 * IPv4 header whose destination (the probe's source) is 192.0.2.src. */
static void make_reply(uint8_t *out, size_t len, uint8_t id, uint8_t src)
{
    memset(out, id, len);
    out[0] = 0x45;
    if (len >= 20) {
        out[16] = 192, out[17] = 0, out[18] = 2, out[19] = src;
    }
}

/* Take the soonest reply due at now; returns its id byte, -1 if none. */
static int take(struct rc_pool *p, uint64_t now, size_t *len_out)
{
    size_t len = 0;
    const uint8_t *r = rc_pool_first_due(p, now, &len);
    int id;

    if (!r)
        return -1;
    id = r[len - 1];
    for (size_t i = 1; i < len; i++)
        if (i < 16 || i > 19)
            CHECK(r[i] == id);
    if (len_out)
        *len_out = len;
    rc_pool_remove_first(p);
    return id;
}

static void test_order_and_fifo(void)
{
    struct pool_mem m;
    uint8_t reply[100];
    uint64_t due[200], last = 0;
    uint64_t rng = 42;

    make_pool(&m, 200, 16);
    for (int i = 0; i < 200; i++) {
        due[i] = 1000 + rc_pace_random(&rng) % 50 * MS;
        make_reply(reply, sizeof reply, (uint8_t)i, 1);
        CHECK(rc_pool_add(&m.pool, reply, sizeof reply, due[i]));
    }
    CHECK(m.pool.waiting == 200);
    CHECK(rc_pool_first_due(&m.pool, 999, &(size_t){0}) == NULL);
    for (int n = 0; n < 200; n++) {
        uint64_t next = rc_pool_next_due(&m.pool);
        int id = take(&m.pool, UINT64_MAX - 1, NULL);
        CHECK(id >= 0 && due[id] == next && next >= last);
        /* Equal due times leave in the order they came. */
        for (int j = 0; j < id; j++)
            CHECK(due[j] != next);
        due[id] = UINT64_MAX;
        last = next;
    }
    CHECK(rc_pool_next_due(&m.pool) == UINT64_MAX);
    free_pool(&m);
}

static void test_seq_wraps_around(void)
{
    struct pool_mem m;
    uint8_t reply[40];

    make_pool(&m, 8, 0);
    m.pool.seq = UINT32_MAX - 3;
    for (int i = 0; i < 8; i++) {
        make_reply(reply, sizeof reply, (uint8_t)i, 1);
        CHECK(rc_pool_add(&m.pool, reply, sizeof reply, 5 * MS));
    }
    for (int i = 0; i < 8; i++)
        CHECK(take(&m.pool, 5 * MS, NULL) == i);
    free_pool(&m);
}

static void test_full_pool_and_reuse(void)
{
    struct pool_mem m;
    uint8_t small[RC_SLOT_SMALL], large[RC_SLOT_LARGE + 1];
    size_t len;

    make_pool(&m, 4, 2);
    make_reply(large, RC_SLOT_LARGE + 1, 9, 1);
    CHECK(!rc_pool_add(&m.pool, large, RC_SLOT_LARGE + 1, 1));    /* too large for any */
    for (int i = 0; i < 6; i++) {                                   /* small ones spill over */
        make_reply(small, sizeof small, (uint8_t)i, 1);
        CHECK(rc_pool_add(&m.pool, small, sizeof small, (uint64_t)(6 - i)));
    }
    CHECK(!rc_pool_add(&m.pool, small, 20, 1));
    CHECK(!rc_pool_add(&m.pool, large, RC_SLOT_LARGE, 1));
    CHECK(take(&m.pool, 1, &len) == 5 && len == sizeof small);
    CHECK(rc_pool_add(&m.pool, large, RC_SLOT_LARGE, 0));          /* its large slot again */
    CHECK(take(&m.pool, 0, &len) == 9 && len == RC_SLOT_LARGE);
    while (take(&m.pool, UINT64_MAX - 1, NULL) >= 0)
        ;
    CHECK(m.pool.waiting == 0);
    /* Many rounds of fill and drain in mixed sizes: every slot is reused
     * and no reply comes back with another's bytes. */
    for (uint64_t round = 0; round < 20000; round++) {
        size_t size = round % 3 == 0 ? 1500 : 60 + round % 190;
        uint8_t buf[1500];
        make_reply(buf, size, (uint8_t)(round & 0x7f), 1);
        if (!rc_pool_add(&m.pool, buf, size, round % 7)) {
            CHECK(m.pool.free_large == RC_SLOT_NONE);    /* full for its size */
            while (take(&m.pool, UINT64_MAX - 1, NULL) >= 0)
                ;
            CHECK(rc_pool_add(&m.pool, buf, size, round % 7));
        }
    }
    free_pool(&m);
}

/* A table with one chain of 3 hops; hop 2 delays by delay_ms. */
struct test_table {
    struct rc_table table;
    struct rc_chain chain;
    struct rc_hop_timing timing[4];
    uint64_t tat[4];
};

static struct test_table *make_table(uint32_t delay_ms, uint32_t jitter_ms, double loss)
{
    struct test_table *t = calloc(1, sizeof *t);

    CHECK(t != NULL);
    t->chain.family = 4;
    t->chain.length = 3;
    t->timing[2].delay_us = delay_ms * 1000;
    t->timing[2].jitter_us = jitter_ms * 1000;
    t->timing[2].loss = (uint64_t)(loss * 4294967296.0);
    t->chain.timing = t->timing;
    t->chain.hop_tat = t->tat;
    t->table.n_chains = 1;
    t->table.chains = &t->chain;
    return t;
}

static void test_reload_while_replies_wait(void)
{
    struct rc_worker w;
    struct pool_mem m;
    struct rc_where hop2 = {0, 2, 0, 0};
    uint8_t reply[80];
    struct test_table *old = make_table(10, 0, 0.0), *new_table;

    make_worker(&w, &m, 16, 16);
    for (int i = 0; i < 5; i++) {
        make_reply(reply, sizeof reply, (uint8_t)i, 1);
        CHECK(rc_pace_reply(&w, &old->table, &hop2, reply, sizeof reply, (uint64_t)i * MS)
              == RC_PACE_DELAYED);
    }
    free(old);                           /* the reload reclaims the old table */
    new_table = make_table(0, 0, 0.0);   /* the new story has no delay there */
    make_reply(reply, sizeof reply, 50, 1);
    CHECK(rc_pace_reply(&w, &new_table->table, &hop2, reply, sizeof reply, 6 * MS) == -1);
    CHECK(take(&w.pool, 9 * MS, NULL) == -1);
    for (int i = 0; i < 5; i++)
        CHECK(take(&w.pool, (uint64_t)(10 + i) * MS, NULL) == i);
    CHECK(w.pool.waiting == 0);
    free(new_table);
    free_pool(&m);
}

static void test_buckets(void)
{
    struct rc_bucket b = {100 * MS, 2 * 100 * MS};                  /* 10/s, burst 3 */
    struct rc_bucket off = {0, 0};
    uint64_t tat = 0, t0 = 5000 * MS;
    int given = 0;

    for (int i = 0; i < 10; i++)
        given += rc_pace_take(&tat, &b, t0);
    CHECK(given == 3);
    CHECK(!rc_pace_take(&tat, &b, t0 + 99 * MS));
    CHECK(rc_pace_take(&tat, &b, t0 + 100 * MS));
    CHECK(!rc_pace_take(&tat, &b, t0 + 100 * MS));
    /* Over 10 s at 1000 tries per second: the burst, then 10 per second. */
    given = 0;
    for (uint64_t t = t0 + 1000 * MS; t < t0 + 11000 * MS; t += MS)
        given += rc_pace_take(&tat, &b, t);
    CHECK(given >= 100 && given <= 103);
    for (int i = 0; i < 1000; i++)
        CHECK(rc_pace_take(&tat, &off, t0));
}

static void test_source_and_daemon_limits(void)
{
    struct rc_worker w;
    struct pool_mem m;
    struct rc_where hop1 = {0, 1, 0, 0};
    uint64_t cells[1024] = {0};
    uint8_t a[40], b[40];
    struct test_table *t = make_table(0, 0, 0.0);
    int sent_a = 0, sent_b = 0, limited = 0;

    make_worker(&w, &m, 4, 4);
    w.source_tat = cells;
    w.source_mask = 1023;
    w.source_salt = 12345;
    t->table.source = (struct rc_bucket){MS, 9 * MS};               /* 1000/s, burst 10 */
    t->table.daemon = (struct rc_bucket){MS / 2, 14 * MS / 2};      /* 2000/s, burst 15 */
    make_reply(a, sizeof a, 1, 1);
    make_reply(b, sizeof b, 1, 2);
    for (int i = 0; i < 20; i++)
        sent_a += rc_pace_reply(&w, &t->table, &hop1, a, sizeof a, MS) == -1;
    for (int i = 0; i < 20; i++) {
        int fate = rc_pace_reply(&w, &t->table, &hop1, b, sizeof b, MS);
        sent_b += fate == -1;
        limited += fate == RC_PACE_GLOBAL_LIMITED;
    }
    CHECK(sent_a == 10);                 /* a's own bucket, whatever b does */
    CHECK(sent_b == 5 && limited == 5);  /* b: the 5 left of the daemon's 15 */
    free(t);
    free_pool(&m);
}

static void test_loss_and_jitter(void)
{
    struct rc_worker w;
    struct pool_mem m;
    struct rc_where hop2 = {0, 2, 0, 0};
    uint8_t reply[40];
    struct test_table *t = make_table(3, 5, 0.25);
    uint64_t lost = 0, n = 200000, lowest = UINT64_MAX, highest = 0;
    size_t len;

    make_worker(&w, &m, 4, 0);
    w.rng = 7;
    make_reply(reply, sizeof reply, 3, 1);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t now = 1000 * MS;
        int fate = rc_pace_reply(&w, &t->table, &hop2, reply, sizeof reply, now);
        if (fate == RC_PACE_LOST) {
            lost++;
        } else if (fate == RC_PACE_DELAYED) {
            uint64_t due = rc_pool_next_due(&w.pool);
            CHECK(take(&w.pool, due, &len) == 3 && len == sizeof reply);
            lowest = due - now < lowest ? due - now : lowest;
            highest = due - now > highest ? due - now : highest;
        } else {
            CHECK(fate == -1);           /* 3 ms - 5 ms jitter: at most 0, now */
            lowest = 0;
        }
    }
    /* Binomial(200000, 0.25): sd = 194; 6 sd either side. */
    CHECK(lost > 50000 - 1164 && lost < 50000 + 1164);
    CHECK(lowest == 0 && highest == 8 * MS);
    free(t);
    free_pool(&m);
}

/* The book: nothing is refused before a write was measured; then each
 * slice takes RC_BOOK_SHARE percent of its time in writes at the measured
 * cost, and a reply due in a full slice is refused (and not kept); slices
 * are apart, a bin is fresh again one book later, and replies due beyond
 * the book are not counted. */
static void test_book(void)
{
    struct rc_worker w;
    struct pool_mem m;
    struct rc_where hop2 = {0, 2, 0, 0};
    uint8_t reply[40];
    struct test_table *near = make_table(10, 0, 0.0), *far = make_table(2000, 0, 0.0);
    const uint64_t slice = (uint64_t)1 << RC_BOOK_SHIFT, t0 = 4000 * slice;
    uint32_t cap, taken = 0;

    make_worker(&w, &m, 2048, 0);
    make_reply(reply, sizeof reply, 9, 1);
    for (int i = 0; i < 1000; i++)       /* one slice, nothing measured yet */
        CHECK(rc_pace_reply(&w, &near->table, &hop2, reply, sizeof reply, t0) == RC_PACE_DELAYED);
    while (take(&w.pool, t0 + 20 * MS, NULL) >= 0)
        ;

    rc_book_note_writes(&w.book, 10, 20000);        /* 2 us a write */
    cap = w.book.cap;
    CHECK(cap == (uint32_t)(RC_BOOK_SHARE * slice / 100 / 2000));
    for (uint32_t i = 0; i < cap + 50; i++)
        taken += rc_pace_reply(&w, &near->table, &hop2, reply, sizeof reply, t0 + 100 * slice)
                 == RC_PACE_DELAYED;
    CHECK(taken == cap && w.pool.waiting == cap);
    CHECK(rc_pace_reply(&w, &near->table, &hop2, reply, sizeof reply, t0 + 100 * slice)
          == RC_PACE_OVERLOADED);
    CHECK(w.pool.waiting == cap);
    /* The next slice has its own count; the same bin one book later too. */
    CHECK(rc_pace_reply(&w, &near->table, &hop2, reply, sizeof reply, t0 + 101 * slice)
          == RC_PACE_DELAYED);
    CHECK(rc_pace_reply(&w, &near->table, &hop2, reply, sizeof reply,
                        t0 + (100 + RC_BOOK_BINS) * slice) == RC_PACE_DELAYED);
    /* 2 s ahead is past the book (1.07 s): taken, however many. */
    for (uint32_t i = 0; i < cap + 10; i++)
        CHECK(rc_pace_reply(&w, &far->table, &hop2, reply, sizeof reply, t0 + 200 * slice)
              == RC_PACE_DELAYED);

    /* A batch slowed by preemption (over 100 us a write) is not a write's
     * cost; a slower batch moves the average a sixteenth of the way. */
    rc_book_note_writes(&w.book, 2, 2 * 150000);
    CHECK(w.book.cap == cap);
    rc_book_note_writes(&w.book, 4, 4 * 4000);
    CHECK(w.book.write_ns16 == 2125 * 16);
    CHECK(w.book.cap == (uint32_t)(RC_BOOK_SHARE * slice * 16 / 100 / (2125 * 16)));
    rc_book_note_writes(&w.book, 0, 0);
    CHECK(w.book.write_ns16 == 2125 * 16);
    free(near);
    free(far);
    free_pool(&m);
}

/* A full slice: its reply moves to the nearest slice with room, later
 * first, at the same place within that slice and never outside the hop's
 * [early, late]; with no room anywhere in the range (or within
 * RC_BOOK_REACH) it is refused; without jitter nothing moves. Every slice
 * keeps to its cap. */
static void test_book_moves_within_jitter(void)
{
    struct rc_book b;
    void *mem = malloc(rc_book_bytes());
    const uint64_t slice = (uint64_t)1 << RC_BOOK_SHIFT, now = 4000 * slice + 77;
    const uint64_t due = now + 40 * slice, early = due - 3 * slice - 5, late = due + 2 * slice + 9;
    uint32_t per_slice[8] = {0};
    uint64_t at;

    CHECK(mem != NULL);
    rc_book_init(&b, mem);
    rc_book_note_writes(&b, 10, 20000);
    for (uint32_t i = 0; i < b.cap; i++)
        CHECK(rc_book_take(&b, due, due, due, now) == due);
    CHECK(rc_book_take(&b, due, due, due, now) == 0);           /* no jitter: refused */
    /* Nearest first, later before sooner: +1, -1, +2, -2, then -3 (where
     * early lies, after the place the reply keeps), then none. */
    for (int n = 0; n < 6; n++) {
        for (uint32_t i = 0; i < b.cap; i++) {
            at = rc_book_take(&b, due, early, late, now);
            if (n == 5) {
                CHECK(at == 0);
                continue;
            }
            CHECK(at >= early && at <= late);
            CHECK((at & (slice - 1)) == (due & (slice - 1)) || at == early || at == late);
            per_slice[(at >> RC_BOOK_SHIFT) - (due >> RC_BOOK_SHIFT) + 4]++;
        }
    }
    CHECK(per_slice[5] == b.cap && per_slice[3] == b.cap && per_slice[6] == b.cap);
    CHECK(per_slice[2] == b.cap && per_slice[1] == b.cap && per_slice[4] == 0);
    CHECK(rc_book_take(&b, due, early, late, now) == 0);
    /* In slice -1 the same offset falls before early: moved to early. */
    {
        struct rc_book c;
        void *m2 = malloc(rc_book_bytes());
        const uint64_t e = due - slice + 100;

        CHECK(m2 != NULL);
        rc_book_init(&c, m2);
        rc_book_note_writes(&c, 10, 20000);
        for (uint32_t i = 0; i < c.cap; i++)
            CHECK(rc_book_take(&c, due, e, due, now) == due);
        CHECK(rc_book_take(&c, due, e, due, now) == e);
        free(m2);
    }
    /* A range wider than the reach: only RC_BOOK_REACH slices either side. */
    rc_book_init(&b, mem);
    rc_book_note_writes(&b, 10, 20000);
    {
        const uint64_t d2 = now + 200 * slice;
        uint32_t taken = 0;

        for (uint32_t i = 0; i < b.cap * (2 * RC_BOOK_REACH + 3); i++)
            taken += rc_book_take(&b, d2, now, d2 + 100 * slice, now) != 0;
        CHECK(taken == b.cap * (2 * RC_BOOK_REACH + 1));
    }
    free(mem);
}

int main(void)
{
    test_order_and_fifo();
    test_seq_wraps_around();
    test_full_pool_and_reuse();
    test_reload_while_replies_wait();
    test_buckets();
    test_source_and_daemon_limits();
    test_loss_and_jitter();
    test_book();
    test_book_moves_within_jitter();
    printf("ok %u\n", checks);
    return 0;
}
