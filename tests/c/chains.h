/* Included once per program (routechain.h has no include guards).
 * The chain table the sanitizer driver and the fuzz target run against. It
 * mirrors tests/test_reply.py's CHAIN4, CHAIN6, SMALL4 and LONG4, so the
 * probes that test writes reach every path. CHAIN4 and LONG4 have timing
 * (delay, jitter, loss, a hop rate limit) and the source and daemon limits
 * are on, so every reply also goes through pacing and a small delay pool.
 * Test code: globals are fine. */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "routechain.h"
#include "pace.h"

static struct rc_chain test_chains[6];
static struct rc_table test_table = {
    .n_chains = 6, .chains = test_chains, .limited = 1,
    .daemon = {1000, 100000}, .source = {2000, 50000},
};
static struct rc_chapter test_chapters[3][RC_MAX_CHAPTERS + 1];
static struct rc_hop_timing test_timing[2][RC_MAX_HOPS + 1];
static uint64_t test_hop_tat[2][RC_MAX_HOPS + 1];
static uint64_t test_source_tat[64];
static struct rc_worker test_worker = {.rng = 1, .source_tat = test_source_tat,
                                       .source_mask = 63};
static uint64_t test_clock;
static unsigned long test_kinds[RC_KIND_COUNT];     /* replies by kind */

static void set_timing(struct rc_chain *c, struct rc_hop_timing *timing, uint64_t *tat)
{
    for (unsigned k = 0; k <= RC_MAX_HOPS; k++) {
        timing[k].delay_us = 1000 * (k % 4);
        timing[k].jitter_us = 1500 * (k % 3);
        timing[k].loss = k % 5 == 0 ? 0 : (uint64_t)1 << (28 + k % 5);
        timing[k].rate = (struct rc_bucket){k % 2 ? 500 : 0, 3000};
    }
    c->timing = timing;
    c->hop_tat = tat;
    c->n_timing = RC_MAX_HOPS + 1;
}

/* tests/test_reply_ext.py's EXT4 and EXT6: hops 1 and 2 with an extension
 * structure (two labels, an interface name), hop 3 with an MTU and one
 * alternative (host + 7) that has the extension too, balanced per packet,
 * hop 4 with reply TTL 255; EXT6 also ends with !X. Hop 2 is also a NAT
 * that re-marks DSCP and ECN (and clears DF over IPv4). */
enum { EXT_HOPS = 6, EXT_ROUTERS = EXT_HOPS + 2 };
static struct rc_hop ext_hops[2][EXT_ROUTERS];
static const uint8_t ext_blob[] = {
    0x20, 0, 0, 0,                                    /* RFC 4884 header */
    0, 12, 1, 1, 0x05, 0xdc, 0x1a, 0, 0, 0, 0x11, 0,  /* MPLS: 24001:5, 16 (S) */
    0, 16, 2, 2, 12, 'g', 'e', '-', '0', '/', '0', '/', '1', 0, 0, 0,  /* name */
};

static uint32_t sum_words(const uint8_t *p, size_t n)
{
    uint32_t sum = 0;

    for (size_t i = 0; i + 1 < n; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    return sum;
}

static void set_routers(struct rc_chain *c, struct rc_hop *hops, uint16_t mtu, uint8_t end)
{
    size_t width = c->family == 4 ? 4 : 16;

    memset(hops, 0, sizeof(struct rc_hop) * EXT_ROUTERS);
    for (unsigned k = 1; k < EXT_ROUTERS; k++) {
        unsigned carry = k <= EXT_HOPS ? k : 7;

        memcpy(hops[k].addr, c->host, width);
        for (size_t i = width; i-- > 0 && carry;) {
            carry += hops[k].addr[i];
            hops[k].addr[i] = (uint8_t)carry;
            carry >>= 8;
        }
        hops[k].hop = (uint8_t)(k <= EXT_HOPS ? k : 3);
        hops[k].reply_ttl = (uint8_t)(c->reply_ttl - (hops[k].hop - 1));
        if (k <= 2 || k == EXT_ROUTERS - 1) {
            hops[k].ext_len = sizeof ext_blob;
            hops[k].ext_sum = sum_words(ext_blob, sizeof ext_blob);
            hops[k].n_labels = 2;
        }
    }
    hops[3].mtu = mtu;
    hops[3].n_alts = 1;
    hops[3].first_alt = EXT_ROUTERS - 1;
    hops[3].balance = RC_BALANCE_PACKET;
    hops[4].reply_ttl = 255;
    /* Hop 2 is a NAT that re-marks: the quotes of hops 3 on are rewritten. */
    hops[2].rewrite = RC_REWRITE_SOURCE | RC_REWRITE_PORT | RC_REWRITE_DSCP | RC_REWRITE_ECN |
                      (c->family == 4 ? RC_REWRITE_DF_CLEAR : 0);
    hops[2].nat_addr[0] = c->family == 4 ? 198 : 0x20;
    hops[2].nat_addr[1] = c->family == 4 ? 51 : 0x01;
    hops[2].nat_port = 40000;
    hops[2].ds = 46 << 2 | 1;
    c->rewrites = 1;
    c->hops = hops;
    c->ext = ext_blob;
    c->ext_bytes = sizeof ext_blob;
    c->n_hops = EXT_ROUTERS;
    c->min_mtu = mtu;
    c->end = end;
}

static void set_chain(struct rc_chain *c, uint8_t family, uint8_t prefix_len, uint8_t length,
                      uint8_t reply_ttl, const uint8_t *host, int silent_hop)
{
    size_t width = family == 4 ? 4 : 16;

    memset(c, 0, sizeof *c);
    c->family = family;
    c->prefix_len = prefix_len;
    c->length = length;
    c->reply_ttl = reply_ttl;
    memcpy(c->host, host, width);
    for (size_t bit = 0; bit < prefix_len; bit++)
        c->mask[bit / 8] |= (uint8_t)(0x80 >> (bit % 8));
    if (silent_hop)
        c->hop_flags[silent_hop] = RC_HOP_SILENT;
}

static const struct rc_table *make_test_table(void)
{
    static const uint8_t chain4[4] = {192, 0, 2, 1};
    static const uint8_t chain6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0,
                                       0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};
    static const uint8_t small4[4] = {198, 51, 100, 1};
    static const uint8_t long4[4] = {198, 18, 0, 1};
    static const uint8_t ext4[4] = {198, 51, 100, 129};
    static const uint8_t ext6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 5, 0, 0,
                                     0, 0, 0, 0, 0, 0, 0, 1};

    /* In table order: by family, then first address (routechain.h). */
    set_chain(&test_chains[0], 4, 24, 5, 64, chain4, 3);
    set_chain(&test_chains[1], 4, 15, 255, 2, long4, 0);
    set_chain(&test_chains[2], 4, 30, 1, 64, small4, 0);
    set_chain(&test_chains[3], 4, 25, EXT_HOPS, 64, ext4, 0);
    set_routers(&test_chains[3], ext_hops[0], 1400, RC_END_HOST);
    set_chain(&test_chains[4], 6, 64, 5, 64, chain6, 3);
    set_chain(&test_chains[5], 6, 64, EXT_HOPS, 64, ext6, 0);
    set_routers(&test_chains[5], ext_hops[1], 1280, RC_END_PROHIBITED);
    /* What the destinations answer to TCP and UDP: every rc_tcp and rc_udp,
     * so a SYN-ACK (4 octets longer than a bare SYN) is built in buffers
     * sized exactly too. */
    test_chains[0].tcp = RC_TCP_RST;
    test_chains[0].n_open = 2;
    test_chains[0].open_ports[0] = 80;
    test_chains[0].open_ports[1] = 443;
    test_chains[1].tcp = RC_TCP_SILENT;
    test_chains[1].udp = RC_UDP_SILENT;
    test_chains[2].tcp = RC_TCP_PROHIBITED;
    test_chains[2].udp = RC_UDP_PROHIBITED;
    test_chains[4].tcp = RC_TCP_OPEN;
    test_chains[5].tcp = RC_TCP_PROHIBITED;
    test_chains[5].n_open = 1;
    test_chains[5].open_ports[0] = 80;
    set_timing(&test_chains[0], test_timing[0], test_hop_tat[0]);
    set_timing(&test_chains[1], test_timing[1], test_hop_tat[1]);
    /* Chapters (tests/test_reply_chapters.py): CHAIN4 at host + 6 (from hop
     * 2) and + 7 (from hop 5), EXT4 past its alternative (+ 7) at + 8
     * (from hop 3), CHAIN6 at host + 6, carrying across bytes (from 4). */
    memset(test_chapters, 0, sizeof test_chapters);
    memcpy(test_chapters[0][0].addr, chain4, 4);
    test_chapters[0][0].addr[3] += 6;
    test_chapters[0][0].start = 2;
    memcpy(test_chapters[0][1].addr, chain4, 4);
    test_chapters[0][1].addr[3] += 7;
    test_chapters[0][1].start = 5;
    memcpy(test_chapters[1][0].addr, ext4, 4);
    test_chapters[1][0].addr[3] += 8;
    test_chapters[1][0].start = 3;
    memcpy(test_chapters[2][0].addr, chain6, 16);
    memset(test_chapters[2][0].addr + 10, 0, 6);
    test_chapters[2][0].addr[9] = 1;
    test_chapters[2][0].addr[15] = 4;                /* ...:ffff:fffe + 6 */
    test_chapters[2][0].start = 4;
    test_chains[0].chapters = test_chapters[0];
    test_chains[0].n_chapters = 2;
    test_chains[3].chapters = test_chapters[1];
    test_chains[3].n_chapters = 1;
    test_chains[4].chapters = test_chapters[2];
    test_chains[4].n_chapters = 1;
    if (!test_worker.pool.slots) {
        static uint8_t pool_mem[1 << 16];
        static uint32_t book_mem[RC_BOOK_BINS * 2];
        if (rc_pool_bytes(8, 4) > sizeof pool_mem || rc_book_bytes() > sizeof book_mem)
            abort();
        rc_pool_init(&test_worker.pool, pool_mem, 8, 4);
        rc_book_init(&test_worker.book, book_mem);
    }
    /* A table written by hand must pass the check the daemon applies. */
    if (rc_table_check(&test_table, NULL) != RC_FAULT_NONE)
        abort();
    return &test_table;
}

/* Pace a reply on a clock that advances 50 us a reply, sending (here:
 * reading back) whatever is due, so the pool fills, drains and wraps. */
static void pace_reply(const struct rc_table *t, const struct rc_where *where,
                       const uint8_t *reply, size_t len)
{
    const uint8_t *due;
    size_t due_len;
    unsigned sum = 0;

    test_clock += 50000;
    if (t->limited || t->chains[where->chain].timing)
        rc_pace_reply(&test_worker, t, where, reply, len, test_clock);
    while ((due = rc_pool_first_due(&test_worker.pool, test_clock, &due_len)) != NULL) {
        for (size_t i = 0; i < due_len; i++)
            sum += due[i];
        if (due_len < 20 || (due[0] >> 4 != 4 && due[0] >> 4 != 6) || sum == 0)
            abort();
        rc_pool_remove_first(&test_worker.pool);
    }
}

/* Run the core on data with exactly headroom bytes in front and slack
 * behind, so AddressSanitizer sees any access outside, and check what it
 * claims about the reply. */
static int run_sized(const uint8_t *data, size_t len, size_t headroom, size_t slack,
                     const struct rc_table *t)
{
    size_t cap = headroom + len + slack, off = (size_t)-1;
    struct rc_where where = {0, 0, RC_KIND_COUNT, 0};
    uint8_t *buf = malloc(cap ? cap : 1);
    int n;

    if (!buf)
        abort();
    memcpy(buf + headroom, data, len);
    n = rc_reply(buf, headroom, len, cap, t, &off, &where);
    if (n > 0) {
        if (off > cap || (size_t)n > cap - off || n < 20)
            abort();
        if (where.kind >= RC_KIND_COUNT)              /* the core named no kind */
            abort();
        test_kinds[where.kind]++;
        if (where.chain >= t->n_chains || where.router < 1 ||
            (where.router > t->chains[where.chain].length &&
             (!t->chains[where.chain].hops || where.router >= t->chains[where.chain].n_hops)))
            abort();
        pace_reply(t, &where, buf + off, (size_t)n);
    } else if (n < -(int)RC_DROP_COUNT || n == 0) {
        abort();
    }
    free(buf);
    return n;
}

/* RFC 1071 over an IPv4 header, so mutations get past the header check. */
static inline void fix_ipv4_checksum(uint8_t *p, size_t len)
{
    size_t ihl;
    uint32_t sum = 0;

    if (len < 20 || p[0] >> 4 != 4)
        return;
    ihl = (size_t)(p[0] & 0x0f) * 4;
    if (ihl < 20 || ihl > len)
        return;
    p[10] = p[11] = 0;
    for (size_t i = 0; i + 1 < ihl; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    p[10] = (uint8_t)(~sum >> 8);
    p[11] = (uint8_t)~sum;
}

/* No slack behind the probe, then the room an RFC 4884 extension needs
 * (a 128-octet field and the structure) with not one byte more. */
static inline int run_exact(const uint8_t *data, size_t len, size_t headroom, const struct rc_table *t)
{
    size_t field = (len + 7) / 8 * 8;

    run_sized(data, len, headroom, 0, t);
    return run_sized(data, len, headroom, (field < 128 ? 128 : field) + sizeof ext_blob - len, t);
}
