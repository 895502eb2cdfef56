/* rc_table_check() (csrc/table.c) under AddressSanitizer and UBSan: the
 * hand-built table of chains.h passes, and a copy that breaks one
 * invariant of routechain.h at a time is refused with that invariant's
 * fault, at the chain and router that break it. Each case starts from a
 * freshly built table, so no case leans on another. Prints "ok N". */
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chains.h"
#include "check.h"

/* The table's chains, in order (chains.h): CHAIN4, LONG4, SMALL4, EXT4,
 * CHAIN6, EXT6. */
enum { CHAIN4, LONG4, SMALL4, EXT4, CHAIN6, EXT6 };

static struct rc_table *fresh(void)
{
    /* make_test_table() aborts unless the good table passes. */
    return (struct rc_table *)make_test_table();
}

static struct rc_chain *chain(unsigned i)
{
    return &test_chains[i];
}

static void expect(int fault, uint32_t at_chain, uint32_t at_router, int line)
{
    struct rc_table_fault at = {99, 99};
    int got = rc_table_check(&test_table, &at);

    checks++;
    if (got != fault || at.chain != at_chain || at.router != at_router) {
        fprintf(stderr, "%s:%d: want fault %d at chain %u router %u, got %d (%s) at %u %u\n",
                __FILE__, line, fault, at_chain, at_router, got, rc_table_fault_text(got),
                at.chain, at.router);
        exit(1);
    }
}
#define EXPECT(fault, c, r) expect(fault, c, r, __LINE__)

/* An extension structure of len octets (len a multiple of 4): the RFC
 * 4884 header, then one interface object filling the rest. */
static uint8_t big_blob[1200];
static uint32_t make_blob(size_t len)
{
    uint32_t sum = 0;

    memset(big_blob, 0, sizeof big_blob);
    big_blob[0] = 0x20;
    big_blob[4] = (uint8_t)((len - 4) >> 8);
    big_blob[5] = (uint8_t)(len - 4);
    big_blob[6] = 2;
    for (size_t i = 8; i < len; i++)
        big_blob[i] = (uint8_t)i;
    for (size_t i = 0; i + 1 < len; i += 2)
        sum += (uint32_t)(big_blob[i] << 8 | big_blob[i + 1]);
    return sum;
}

/* Hop 1 of EXT4 or EXT6 carries a structure of len octets. */
static void give_hop1_blob(unsigned c, struct rc_hop *hops, size_t len)
{
    hops[1].ext_sum = make_blob(len);
    hops[1].ext_off = 0;
    hops[1].ext_len = (uint16_t)len;
    hops[1].n_labels = 0;
    hops[2].ext_len = hops[7].ext_len = 0;
    hops[2].n_labels = hops[7].n_labels = 0;
    chain(c)->ext = big_blob;
    chain(c)->ext_bytes = (uint32_t)len;
}

/* The cases that break one integer field, each of a freshly built table:
 * a chain's own (BREAK_CHAIN), or one of EXT4's or EXT6's routers
 * (BREAK_HOP, router k of ext_hops[0] or [1]). The fault is expected at
 * that chain and at router `at`. */
struct one_break {
    int line;
    int fault;
    unsigned chain;
    int router;                 /* -1: the chain's own field */
    size_t off, size;
    uint64_t value;
    uint32_t at;
};
#define BREAK_CHAIN(c, field, v, fault, at_router)                                 \
    {__LINE__, fault, c, -1, offsetof(struct rc_chain, field),                      \
     sizeof(((struct rc_chain *)0)->field), v, at_router}
#define BREAK_HOP(c, k, field, v, fault, at_router)                                \
    {__LINE__, fault, c, k, offsetof(struct rc_hop, field),                         \
     sizeof(((struct rc_hop *)0)->field), v, at_router}

static const struct one_break breaks[] = {
    BREAK_CHAIN(CHAIN4, family, 5, RC_FAULT_FAMILY, 0),
    /* [PREFIX]: longer than the address; a mask that is not the prefix's. */
    BREAK_CHAIN(SMALL4, prefix_len, 33, RC_FAULT_PREFIX, 0),
    BREAK_CHAIN(CHAIN6, mask[8], 0x80, RC_FAULT_PREFIX, 0),    /* /64 with one more bit */
    BREAK_CHAIN(SMALL4, length, 0, RC_FAULT_LENGTH, 0),
    /* [FLAGS]: an unknown bit in a chain's hop_flags and in a router's. */
    BREAK_CHAIN(CHAIN4, hop_flags[4], 0x80, RC_FAULT_FLAGS, 0),
    BREAK_HOP(EXT6, 5, flags, 0x02, RC_FAULT_FLAGS, 5),
    /* [END]: not an enum rc_end; an end on a chain without hops. */
    BREAK_CHAIN(EXT4, end, RC_END_PROHIBITED + 1, RC_FAULT_END, 0),
    BREAK_CHAIN(CHAIN4, end, RC_END_HOST_UNREACH, RC_FAULT_END, 0),
    /* [N_HOPS]: fewer routers than hops (hops[length] would be past);
     * n_hops set without hops. */
    BREAK_CHAIN(EXT4, n_hops, EXT_HOPS, RC_FAULT_N_HOPS, 0),
    BREAK_CHAIN(CHAIN4, n_hops, 6, RC_FAULT_N_HOPS, 0),
    /* [HOP_NUMBER]: hops[k].hop must be k; an alternative's, its hop. */
    BREAK_HOP(EXT4, 2, hop, 3, RC_FAULT_HOP_NUMBER, 2),
    BREAK_HOP(EXT6, 7, hop, 2, RC_FAULT_HOP_NUMBER, 7),
    /* [ALTERNATIVES]: reply.c reads hops[first_alt + b - 1], b <= n_alts:
     * two alternatives where one exists reads past n_hops; a gap (inside
     * the hops themselves); an alternative that claims alternatives of its
     * own; one nobody owns. */
    BREAK_HOP(EXT4, 3, n_alts, 2, RC_FAULT_ALTERNATIVES, 3),
    BREAK_HOP(EXT4, 3, first_alt, EXT_HOPS, RC_FAULT_ALTERNATIVES, 3),
    BREAK_HOP(EXT4, 7, n_alts, 1, RC_FAULT_ALTERNATIVES, 7),
    BREAK_HOP(EXT4, 3, n_alts, 0, RC_FAULT_ALTERNATIVES, 0),
    BREAK_HOP(EXT4, 7, reply_ttl, 0, RC_FAULT_REPLY_TTL, 7),
    /* [MTU]: min_mtu not the least; min_mtu that no hop has. */
    BREAK_CHAIN(EXT4, min_mtu, 1500, RC_FAULT_MTU, 3),
    BREAK_CHAIN(EXT4, min_mtu, 1000, RC_FAULT_MTU, 0),
    /* [EXT_RANGE]: past the chain's extension bytes. */
    BREAK_CHAIN(EXT4, ext_bytes, sizeof ext_blob - 1, RC_FAULT_EXT_RANGE, 1),
    BREAK_HOP(EXT4, 2, ext_off, 4, RC_FAULT_EXT_RANGE, 2),
    /* [EXT_LENGTH]: labels without a structure. */
    BREAK_HOP(EXT4, 4, n_labels, 1, RC_FAULT_EXT_LENGTH, 4),
    /* [TIMING]: n_timing short of the routers (hop 5 is router 5); n_timing
     * without timing. */
    BREAK_CHAIN(CHAIN4, n_timing, 5, RC_FAULT_TIMING, 0),
    BREAK_CHAIN(EXT4, n_timing, 3, RC_FAULT_TIMING, 0),
    /* [DESTINATION]: tcp, udp past their enums. */
    BREAK_CHAIN(SMALL4, tcp, RC_TCP_OPEN + 1, RC_FAULT_DESTINATION, 0),
    BREAK_CHAIN(CHAIN6, udp, RC_UDP_PROHIBITED + 1, RC_FAULT_DESTINATION, 0),
    /* [BALANCE]: any mode but flow on an alternative. */
    BREAK_HOP(EXT4, 7, balance, RC_BALANCE_PACKET, RC_FAULT_BALANCE, 7),
    /* [FURTHER]: a chain's longer that is not the greatest; a hop (not an
     * alternative) claiming to be longer. */
    BREAK_CHAIN(EXT4, longer, 1, RC_FAULT_FURTHER, 0),
    BREAK_CHAIN(SMALL4, longer, 1, RC_FAULT_FURTHER, 0),
    BREAK_HOP(EXT4, 3, longer, 1, RC_FAULT_FURTHER, 3),
    /* [REWRITE]: unknown bits, both DF bits, the chain's flag without a
     * rewriting router (and a rewriting router without the flag). */
    BREAK_CHAIN(EXT4, rewrites, 0, RC_FAULT_REWRITE, 0),
    BREAK_CHAIN(SMALL4, rewrites, 1, RC_FAULT_REWRITE, 0),
    BREAK_HOP(EXT4, 2, rewrite, RC_REWRITE_ALL + 1, RC_FAULT_REWRITE, 2),
    BREAK_HOP(EXT4, 2, rewrite, RC_REWRITE_DF_SET | RC_REWRITE_DF_CLEAR, RC_FAULT_REWRITE, 2),
    /* [CHAPTERS]: a count without chapters, or past RC_MAX_CHAPTERS. */
    BREAK_CHAIN(SMALL4, n_chapters, 1, RC_FAULT_CHAPTERS, 0),
    BREAK_CHAIN(CHAIN4, n_chapters, RC_MAX_CHAPTERS + 1, RC_FAULT_CHAPTERS, 0),
};

/* Build a fresh table, write b's value into its field (little or big
 * endian alike: through an integer of the field's own width) and expect
 * its fault, naming the table's line on failure. */
static void break_one(const struct one_break *b)
{
    uint8_t *base;
    uint8_t u8 = (uint8_t)b->value;
    uint16_t u16 = (uint16_t)b->value;
    uint32_t u32 = (uint32_t)b->value;

    fresh();
    base = b->router < 0 ? (uint8_t *)chain(b->chain)
                         : (uint8_t *)&ext_hops[b->chain == EXT6][b->router];
    CHECK(b->size == 1 || b->size == 2 || b->size == 4);
    memcpy(base + b->off, b->size == 1 ? (void *)&u8 : b->size == 2 ? (void *)&u16 : (void *)&u32,
           b->size);
    expect(b->fault, b->chain, b->at, b->line);
}

int main(void)
{
    struct rc_table *t;
    uint8_t blob[sizeof ext_blob];
    struct rc_chain swap;

    /* A good table passes, and every fault has its own line of text. */
    fresh();
    EXPECT(RC_FAULT_NONE, 0, 0);
    for (int f = 0; f < RC_FAULT_COUNT; f++) {
        CHECK(strlen(rc_table_fault_text(f)) > 5);
        for (int g = 0; g < f; g++)
            CHECK(strcmp(rc_table_fault_text(f), rc_table_fault_text(g)) != 0);
    }
    CHECK(strcmp(rc_table_fault_text(RC_FAULT_COUNT), "unknown fault") == 0);
    CHECK(strcmp(rc_table_fault_text(-1), "unknown fault") == 0);

    t = fresh();
    t->chains = NULL;
    EXPECT(RC_FAULT_NO_CHAINS, 0, 0);
    t->chains = test_chains;

    /* [ORDER]: out of order; overlapping; IPv6 before IPv4. */
    fresh();
    swap = test_chains[LONG4];
    test_chains[LONG4] = test_chains[SMALL4];
    test_chains[SMALL4] = swap;
    EXPECT(RC_FAULT_ORDER, SMALL4, 0);
    fresh();
    chain(SMALL4)->prefix_len = 24;                 /* 198.51.100.0/24 covers EXT4 */
    memset(chain(SMALL4)->mask, 0, sizeof chain(SMALL4)->mask);
    memset(chain(SMALL4)->mask, 0xff, 3);
    EXPECT(RC_FAULT_ORDER, EXT4, 0);
    fresh();
    swap = test_chains[EXT4];
    test_chains[EXT4] = test_chains[CHAIN6];
    test_chains[CHAIN6] = swap;
    EXPECT(RC_FAULT_ORDER, CHAIN6, 0);

    t = fresh();
    t->limited = 0;                                 /* but both buckets are on */
    EXPECT(RC_FAULT_LIMITED, 0, 0);
    t->limited = 1;
    t->daemon.interval_ns = t->source.interval_ns = 0;
    EXPECT(RC_FAULT_LIMITED, 0, 0);
    t->daemon = (struct rc_bucket){1000, 100000};
    t->source = (struct rc_bucket){2000, 50000};

    /* Each case of one field, in the table above. */
    for (size_t i = 0; i < sizeof breaks / sizeof breaks[0]; i++)
        break_one(&breaks[i]);

    /* [MTU]: below IPv6's 1280 (fine over IPv4); min_mtu not the least. */
    fresh();
    ext_hops[1][3].mtu = 1279;
    chain(EXT6)->min_mtu = 1279;
    EXPECT(RC_FAULT_MTU, EXT6, 3);
    fresh();
    ext_hops[0][3].mtu = 1279;
    chain(EXT4)->min_mtu = 1279;
    EXPECT(RC_FAULT_NONE, 0, 0);
    ext_hops[0][3].mtu = 67;
    chain(EXT4)->min_mtu = 67;
    EXPECT(RC_FAULT_MTU, EXT4, 3);

    /* [EXT_RANGE]: bytes but no ext. */
    fresh();
    chain(EXT6)->ext = NULL;
    EXPECT(RC_FAULT_EXT_RANGE, EXT6, 0);

    /* [EXT_LENGTH]: reply.c's limit - header - ext_len. 420 octets fit
     * beside a 128-octet quote under 576 (IPv4), 424 do not; IPv6 takes
     * up to 1104. Labels the structure has no room for; labels without
     * a structure. */
    fresh();
    give_hop1_blob(EXT4, ext_hops[0], 420);
    EXPECT(RC_FAULT_NONE, 0, 0);
    give_hop1_blob(EXT4, ext_hops[0], 424);
    EXPECT(RC_FAULT_EXT_LENGTH, EXT4, 1);
    fresh();
    give_hop1_blob(EXT6, ext_hops[1], 1104);
    EXPECT(RC_FAULT_NONE, 0, 0);
    give_hop1_blob(EXT6, ext_hops[1], 1108);
    EXPECT(RC_FAULT_EXT_LENGTH, EXT6, 1);
    fresh();
    ext_hops[0][2].n_labels = 5;                    /* 4 + 4 + 20 > the 12-octet object */
    ext_hops[0][2].ext_len = 16;
    EXPECT(RC_FAULT_EXT_LENGTH, EXT4, 2);

    /* [EXT_CONTENT]: a label TTL set; the checksum set; version 1; the
     * labels not the first object. */
    memcpy(blob, ext_blob, sizeof blob);
    fresh();
    blob[4 + 4 + 4 + 3] = 1;
    chain(EXT4)->ext = blob;
    EXPECT(RC_FAULT_EXT_CONTENT, EXT4, 1);
    memcpy(blob, ext_blob, sizeof blob);
    blob[3] = 1;
    EXPECT(RC_FAULT_EXT_CONTENT, EXT4, 1);
    memcpy(blob, ext_blob, sizeof blob);
    blob[0] = 0x10;
    EXPECT(RC_FAULT_EXT_CONTENT, EXT4, 1);
    memcpy(blob, ext_blob, sizeof blob);
    blob[6] = 2;
    EXPECT(RC_FAULT_EXT_CONTENT, EXT4, 1);

    fresh();
    ext_hops[0][7].ext_sum += 1;
    EXPECT(RC_FAULT_EXT_SUM, EXT4, 7);

    /* [TIMING]: pace.c reads timing[where.router] and hop_tat[...]. */
    fresh();
    chain(LONG4)->hop_tat = NULL;
    EXPECT(RC_FAULT_TIMING, LONG4, 0);
    fresh();
    chain(EXT4)->timing = test_timing[0];           /* 256 entries, 8 routers: fine */
    chain(EXT4)->hop_tat = test_hop_tat[0];
    chain(EXT4)->n_timing = EXT_ROUTERS;
    EXPECT(RC_FAULT_NONE, 0, 0);
    chain(EXT4)->n_timing = EXT_ROUTERS - 1;        /* the alternative has none */
    EXPECT(RC_FAULT_TIMING, EXT4, 0);

    fresh();
    test_timing[1][9].loss = ((uint64_t)1 << 32) + 1;
    EXPECT(RC_FAULT_LOSS, LONG4, 9);

    /* [DESTINATION]: tcp, udp and the open ports. */
    fresh();
    chain(EXT4)->n_open = RC_MAX_OPEN_PORTS;
    EXPECT(RC_FAULT_NONE, 0, 0);
    chain(EXT4)->n_open = RC_MAX_OPEN_PORTS + 1;
    EXPECT(RC_FAULT_DESTINATION, EXT4, 0);

    /* [BALANCE]: a mode past the enum; any mode but flow on an alternative. */
    fresh();
    ext_hops[0][3].balance = RC_BALANCE_DESTINATION;
    EXPECT(RC_FAULT_NONE, 0, 0);
    ext_hops[0][3].balance = RC_BALANCE_COUNT;
    EXPECT(RC_FAULT_BALANCE, EXT4, 3);

    /* [FURTHER]: a longer branch whose routers lie past the array. */
    fresh();
    ext_hops[0][7].longer = 1;
    ext_hops[0][7].first_further = EXT_ROUTERS;
    EXPECT(RC_FAULT_FURTHER, EXT4, 7);

    /* [CHAPTERS]: chapters without a count; a start of 1 (hop 1 is
     * where every trace starts) and past the length; an address outside
     * the prefix, at the destination, at or below an alternative, at the
     * IPv4 broadcast address; out of order, repeated. The good ones: the
     * last host address, and 32 of them. */
    fresh();
    chain(SMALL4)->chapters = test_chapters[0];
    EXPECT(RC_FAULT_CHAPTERS, SMALL4, 0);
    fresh();
    test_chapters[0][1].start = 1;
    EXPECT(RC_FAULT_CHAPTERS, CHAIN4, 1);
    test_chapters[0][1].start = 6;                  /* CHAIN4 has 5 hops */
    EXPECT(RC_FAULT_CHAPTERS, CHAIN4, 1);
    test_chapters[0][1].start = 5;
    EXPECT(RC_FAULT_NONE, 0, 0);
    test_chapters[0][1].addr[2] = 3;                /* 192.0.3.8: outside the /24 */
    EXPECT(RC_FAULT_CHAPTERS, CHAIN4, 1);
    fresh();
    test_chapters[0][0].addr[3] = 6;                /* 192.0.2.6: the destination */
    EXPECT(RC_FAULT_CHAPTERS, CHAIN4, 0);
    test_chapters[0][0].addr[3] = 7;
    test_chapters[0][1].addr[3] = 255;              /* the /24's broadcast address */
    EXPECT(RC_FAULT_CHAPTERS, CHAIN4, 1);
    test_chapters[0][1].addr[3] = 254;
    EXPECT(RC_FAULT_NONE, 0, 0);
    test_chapters[0][1].addr[3] = 7;                /* repeated */
    EXPECT(RC_FAULT_CHAPTERS, CHAIN4, 1);
    test_chapters[0][1].addr[3] = 6;                /* before the one before it */
    EXPECT(RC_FAULT_CHAPTERS, CHAIN4, 1);
    fresh();
    test_chapters[1][0].addr[3] -= 1;               /* EXT4's alternative, host + 7 */
    EXPECT(RC_FAULT_CHAPTERS, EXT4, 0);
    fresh();
    test_chapters[2][0].addr[9] = 0;                /* CHAIN6: below its destination */
    EXPECT(RC_FAULT_CHAPTERS, CHAIN6, 0);
    fresh();
    for (unsigned i = 0; i < RC_MAX_CHAPTERS; i++) {
        memcpy(test_chapters[0][i].addr, test_chains[CHAIN4].host, 4);
        test_chapters[0][i].addr[3] = (uint8_t)(7 + i);
        test_chapters[0][i].start = 2;
    }
    chain(CHAIN4)->n_chapters = RC_MAX_CHAPTERS;
    EXPECT(RC_FAULT_NONE, 0, 0);

    /* The table is good again for whoever comes next. */
    fresh();
    EXPECT(RC_FAULT_NONE, 0, 0);
    printf("ok %u\n", checks);
    return 0;
}
