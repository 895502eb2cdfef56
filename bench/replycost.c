/* The reply core's cost per probe against the number of chains, without a
 * TUN or a kernel in the way: rc_reply() on one IPv4 UDP probe with TTL 3
 * (a Time Exceeded), COUNT times, with tables of 1 .. 100,000 chains, the
 * probed chain first, last and in the middle of the table. Built and run by
 * bench/scale:
 *
 *   gcc -O2 -std=c11 -Icsrc -o replycost bench/replycost.c csrc/reply.c csrc/table.c
 *   ./replycost [COUNT]
 *
 * Prints one line per table size: nanoseconds per reply for each place. */
#define _POSIX_C_SOURCE 199309L  /* clock_gettime */
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "routechain.h"

enum { MAX_CHAINS = 100000, PROBE_LEN = 28 };

static struct rc_chain chains[MAX_CHAINS];

/* Chain i: 10.x.y.z/29 with the host at .1 of its /29, i = 0.. in address
 * order, which is the table's order (routechain.h). */
static void fill(uint32_t n)
{
    memset(chains, 0, sizeof chains);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t host = (10u << 24) + i * 8 + 1;

        chains[i].family = 4;
        chains[i].prefix_len = 29;
        chains[i].length = 5;
        chains[i].reply_ttl = 64;
        for (int b = 0; b < 4; b++) {
            chains[i].host[b] = (uint8_t)(host >> (24 - 8 * b));
            chains[i].mask[b] = b < 3 ? 0xff : 0xf8;
        }
    }
}

static void write_probe(uint8_t *p, uint32_t dst)
{
    static const uint8_t header[PROBE_LEN] = {
        0x45, 0, 0, PROBE_LEN, 0, 1, 0, 0, 3, 17, 0, 0, 192, 0, 2, 2, 0, 0, 0, 0,
        0x82, 0x9a, 0x82, 0x9a, 0, 8, 0, 0};
    uint32_t sum = 0;

    memcpy(p, header, PROBE_LEN);
    for (int b = 0; b < 4; b++)
        p[16 + b] = (uint8_t)(dst >> (24 - 8 * b));
    for (int i = 0; i < 20; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    p[10] = (uint8_t)(~sum >> 8);
    p[11] = (uint8_t)~sum;
}

static double ns_per_reply(const struct rc_table *table, uint32_t chain, long count)
{
    static uint8_t probe[PROBE_LEN], buf[RC_HEADROOM + 2048];
    uint32_t dst = (10u << 24) + chain * 8 + 4;   /* host + 3: mid-chain */
    struct timespec a, b;
    struct rc_where where;
    size_t off;

    write_probe(probe, dst);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < count; i++) {
        memcpy(buf + RC_HEADROOM, probe, PROBE_LEN);
        if (rc_reply(buf, RC_HEADROOM, PROBE_LEN, sizeof buf, table, &off, &where) <= 0) {
            fprintf(stderr, "replycost: no reply from chain %u\n", chain);
            exit(1);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    return ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / count;
}

int main(int argc, char **argv)
{
    static const uint32_t sizes[] = {1, 100, 1000, 10000, 100000};
    long count = argc > 1 ? atol(argv[1]) : 2000000;

    printf("%8s %10s %10s %10s   (ns per Time Exceeded, %ld replies each)\n",
           "chains", "first", "middle", "last", count);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        uint32_t n = sizes[s];
        struct rc_table table = {.n_chains = n, .chains = chains};

        fill(n);
        if (rc_table_check(&table, NULL) != RC_FAULT_NONE) {
            fprintf(stderr, "replycost: %s\n", rc_table_fault_text(rc_table_check(&table, NULL)));
            return 1;
        }
        printf("%8u %10.1f %10.1f %10.1f\n", n, ns_per_reply(&table, 0, count),
               ns_per_reply(&table, n / 2, count), ns_per_reply(&table, n - 1, count));
    }
    return 0;
}
