/* What a delayed reply costs in the queue's pool, without a TUN or a kernel
 * in the way, against what it would cost in a timing wheel: replies arrive
 * at RATE a second, each due 10 ms +/- 2 ms later (bench/run's `delayed`
 * case), and leave when due, for COUNT replies in the steady state.
 *
 *   gcc -O2 -std=c11 -Icsrc -o poolcost bench/poolcost.c csrc/pool.c
 *   ./poolcost [RATE [COUNT]]
 *
 * Prints nanoseconds per reply for:
 *   heap   the pool as built (csrc/pool.c): copy in, binary heap, copy out
 *   wheel  the same slots and copies, ordered by a hashed timing wheel of
 *          16 us buckets, each a list scanned for what is due (written here
 *          for the comparison only; exact due times kept, as the heap does)
 *   copy   the copies alone: 70 bytes into a free slot and out of it
 * The copy out stands for the write's copy of the reply into the kernel. */
#define _POSIX_C_SOURCE 199309L  /* clock_gettime */
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "routechain.h"
#include "pool.h"

enum {
    REPLY_LEN = 70,          /* a Time Exceeded quoting a traceroute UDP probe */
    SLOTS = 20000,           /* the default pool of one queue and more */
    WHEEL_SHIFT = 14,        /* 16.4 us buckets */
    WHEEL_BUCKETS = 1024     /* 16.8 ms: every due of 8 .. 12 ms fits */
};

static uint64_t rng = 7;

static uint64_t next_random(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15u);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t clock_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t draw_due(uint64_t now)
{
    return now + 8000000 + next_random() % 4000001;
}

static volatile uint64_t sink;

/* What the write would read: every byte of the reply. */
static void consume(const uint8_t *reply, size_t len)
{
    uint64_t sum = 0;

    for (size_t i = 0; i < len; i++)
        sum += reply[i];
    sink += sum;
}

static double run_heap(uint64_t step, uint64_t count)
{
    void *mem = malloc(rc_pool_bytes(SLOTS, 16));
    struct rc_pool p;
    uint8_t reply[REPLY_LEN];
    uint64_t now = 0, t0 = 0;
    const uint8_t *r;
    size_t len;

    memset(reply, 0x45, sizeof reply);
    rc_pool_init(&p, mem, SLOTS, 16);
    for (uint64_t i = 0; i < 2 * count; i++) {
        if (i == count)
            t0 = clock_ns();     /* the first half fills the pool: steady state */
        now += step;
        if (!rc_pool_add(&p, reply, sizeof reply, draw_due(now)))
            abort();
        while ((r = rc_pool_first_due(&p, now, &len)) != NULL) {
            consume(r, len);
            rc_pool_remove_first(&p);
        }
    }
    t0 = clock_ns() - t0;
    free(mem);
    return (double)t0 / (double)count;
}

struct entry {
    uint64_t due;
    uint32_t next;           /* in its bucket's list, or free list */
    uint32_t len;
};

static double run_wheel(uint64_t step, uint64_t count)
{
    struct entry *e = malloc(SLOTS * sizeof *e);
    uint8_t *data = malloc((size_t)SLOTS * RC_SLOT_SMALL);
    uint32_t head[WHEEL_BUCKETS], free_head = 0;
    uint8_t reply[REPLY_LEN];
    uint64_t now = 0, t0 = 0, swept = 0;   /* buckets before `swept` are empty */

    memset(reply, 0x45, sizeof reply);
    for (uint32_t i = 0; i < SLOTS; i++)
        e[i].next = i + 1 < SLOTS ? i + 1 : UINT32_MAX;
    for (uint32_t b = 0; b < WHEEL_BUCKETS; b++)
        head[b] = UINT32_MAX;
    for (uint64_t i = 0; i < 2 * count; i++) {
        if (i == count)
            t0 = clock_ns();
        now += step;
        uint64_t due = draw_due(now);
        uint32_t s = free_head, b = (uint32_t)(due >> WHEEL_SHIFT) & (WHEEL_BUCKETS - 1);
        if (s == UINT32_MAX)
            abort();
        free_head = e[s].next;
        memcpy(data + (size_t)s * RC_SLOT_SMALL, reply, sizeof reply);
        e[s] = (struct entry){due, head[b], sizeof reply};
        head[b] = s;
        /* Every bucket up to now's: what is due leaves, the rest stays. */
        for (; swept <= now >> WHEEL_SHIFT; swept++) {
            uint32_t *link = &head[swept & (WHEEL_BUCKETS - 1)];
            while (*link != UINT32_MAX) {
                uint32_t k = *link;
                if (e[k].due > now) {
                    link = &e[k].next;
                    continue;
                }
                consume(data + (size_t)k * RC_SLOT_SMALL, e[k].len);
                *link = e[k].next;
                e[k].next = free_head;
                free_head = k;
            }
            if (swept == now >> WHEEL_SHIFT)
                break;           /* now's bucket may fill again: look again */
        }
    }
    t0 = clock_ns() - t0;
    free(e);
    free(data);
    return (double)t0 / (double)count;
}

static double run_copy(uint64_t count)
{
    uint8_t *data = malloc((size_t)SLOTS * RC_SLOT_SMALL);
    uint8_t reply[REPLY_LEN];
    uint64_t t0, in = 0, out = 0;
    const uint64_t waiting = 2500;     /* 10 ms at 250,000/s */

    memset(reply, 0x45, sizeof reply);
    memset(data, 0, (size_t)SLOTS * RC_SLOT_SMALL);
    t0 = clock_ns();
    for (uint64_t i = 0; i < count; i++) {
        memcpy(data + (size_t)(in++ % waiting) * RC_SLOT_SMALL, reply, sizeof reply);
        if (in > waiting / 2)
            consume(data + (size_t)(out++ % waiting) * RC_SLOT_SMALL, sizeof reply);
    }
    t0 = clock_ns() - t0;
    free(data);
    return (double)t0 / (double)count;
}

int main(int argc, char **argv)
{
    uint64_t rate = argc > 1 ? strtoull(argv[1], NULL, 10) : 250000;
    uint64_t count = argc > 2 ? strtoull(argv[2], NULL, 10) : 5000000;
    uint64_t step = 1000000000u / (rate ? rate : 1);

    printf("rate %llu/s, %llu replies waiting on average\n", (unsigned long long)rate,
           (unsigned long long)(rate / 100));
    printf("heap  %6.1f ns/reply\n", run_heap(step, count));
    printf("wheel %6.1f ns/reply\n", run_wheel(step, count));
    printf("copy  %6.1f ns/reply\n", run_copy(count));
    return 0;
}
