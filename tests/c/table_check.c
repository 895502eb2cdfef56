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

    fresh();
    chain(CHAIN4)->family = 5;
    EXPECT(RC_FAULT_FAMILY, CHAIN4, 0);

    /* [PREFIX]: longer than the address; a mask that is not the prefix's. */
    fresh();
    chain(SMALL4)->prefix_len = 33;
    EXPECT(RC_FAULT_PREFIX, SMALL4, 0);
    fresh();
    chain(CHAIN6)->mask[8] = 0x80;                  /* /64 with one more bit */
    EXPECT(RC_FAULT_PREFIX, CHAIN6, 0);

    fresh();
    chain(SMALL4)->length = 0;
    EXPECT(RC_FAULT_LENGTH, SMALL4, 0);

    /* [FLAGS]: an unknown bit in a chain's hop_flags and in a router's. */
    fresh();
    chain(CHAIN4)->hop_flags[4] = 0x80;
    EXPECT(RC_FAULT_FLAGS, CHAIN4, 0);
    fresh();
    ext_hops[1][5].flags = 0x02;
    EXPECT(RC_FAULT_FLAGS, EXT6, 5);

    /* [END]: not an enum rc_end; an end on a chain without hops. */
    fresh();
    chain(EXT4)->end = RC_END_PROHIBITED + 1;
    EXPECT(RC_FAULT_END, EXT4, 0);
    fresh();
    chain(CHAIN4)->end = RC_END_HOST_UNREACH;
    EXPECT(RC_FAULT_END, CHAIN4, 0);

    /* [N_HOPS]: fewer routers than hops; n_hops set without hops. */
    fresh();
    chain(EXT4)->n_hops = EXT_HOPS;                 /* hops[length] would be past */
    EXPECT(RC_FAULT_N_HOPS, EXT4, 0);
    fresh();
    chain(CHAIN4)->n_hops = 6;
    EXPECT(RC_FAULT_N_HOPS, CHAIN4, 0);

    /* [HOP_NUMBER]: hops[k].hop must be k; an alternative's, its hop. */
    fresh();
    ext_hops[0][2].hop = 3;
    EXPECT(RC_FAULT_HOP_NUMBER, EXT4, 2);
    fresh();
    ext_hops[1][7].hop = 2;
    EXPECT(RC_FAULT_HOP_NUMBER, EXT6, 7);

    /* [ALTERNATIVES]: reply.c reads hops[first_alt + b - 1], b <= n_alts:
     * two alternatives where one exists reads past n_hops; a gap; an
     * alternative that claims alternatives of its own; one nobody owns. */
    fresh();
    ext_hops[0][3].n_alts = 2;
    EXPECT(RC_FAULT_ALTERNATIVES, EXT4, 3);
    fresh();
    ext_hops[0][3].first_alt = EXT_HOPS;            /* inside the hops themselves */
    EXPECT(RC_FAULT_ALTERNATIVES, EXT4, 3);
    fresh();
    ext_hops[0][7].n_alts = 1;
    EXPECT(RC_FAULT_ALTERNATIVES, EXT4, 7);
    fresh();
    ext_hops[0][3].n_alts = 0;
    EXPECT(RC_FAULT_ALTERNATIVES, EXT4, 0);

    fresh();
    ext_hops[0][7].reply_ttl = 0;
    EXPECT(RC_FAULT_REPLY_TTL, EXT4, 7);

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
    fresh();
    chain(EXT4)->min_mtu = 1500;
    EXPECT(RC_FAULT_MTU, EXT4, 3);
    fresh();
    chain(EXT4)->min_mtu = 1000;                    /* no hop has 1000 */
    EXPECT(RC_FAULT_MTU, EXT4, 0);

    /* [EXT_RANGE]: past the chain's extension bytes; bytes but no ext. */
    fresh();
    chain(EXT4)->ext_bytes = sizeof ext_blob - 1;
    EXPECT(RC_FAULT_EXT_RANGE, EXT4, 1);
    fresh();
    ext_hops[0][2].ext_off = 4;
    EXPECT(RC_FAULT_EXT_RANGE, EXT4, 2);
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
    fresh();
    ext_hops[0][4].n_labels = 1;
    EXPECT(RC_FAULT_EXT_LENGTH, EXT4, 4);

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
    chain(CHAIN4)->n_timing = 5;                    /* hop 5 is router 5 */
    EXPECT(RC_FAULT_TIMING, CHAIN4, 0);
    fresh();
    chain(EXT4)->n_timing = 3;                      /* without timing */
    EXPECT(RC_FAULT_TIMING, EXT4, 0);
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
    chain(SMALL4)->tcp = RC_TCP_OPEN + 1;
    EXPECT(RC_FAULT_DESTINATION, SMALL4, 0);
    fresh();
    chain(CHAIN6)->udp = RC_UDP_PROHIBITED + 1;
    EXPECT(RC_FAULT_DESTINATION, CHAIN6, 0);
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
    fresh();
    ext_hops[0][7].balance = RC_BALANCE_PACKET;
    EXPECT(RC_FAULT_BALANCE, EXT4, 7);

    /* [FURTHER]: a longer branch whose routers lie past the array; a hop
     * (not an alternative) claiming to be longer; a chain's longer that is
     * not the greatest. */
    fresh();
    ext_hops[0][7].longer = 1;
    ext_hops[0][7].first_further = EXT_ROUTERS;
    EXPECT(RC_FAULT_FURTHER, EXT4, 7);
    fresh();
    ext_hops[0][3].longer = 1;
    EXPECT(RC_FAULT_FURTHER, EXT4, 3);
    fresh();
    chain(EXT4)->longer = 1;
    EXPECT(RC_FAULT_FURTHER, EXT4, 0);
    fresh();
    chain(SMALL4)->longer = 1;
    EXPECT(RC_FAULT_FURTHER, SMALL4, 0);

    /* [REWRITE]: unknown bits, both DF bits, the chain's flag without a
     * rewriting router. */
    fresh();
    ext_hops[0][2].rewrite = RC_REWRITE_ALL + 1;
    EXPECT(RC_FAULT_REWRITE, EXT4, 2);
    fresh();
    ext_hops[0][2].rewrite = RC_REWRITE_DF_SET | RC_REWRITE_DF_CLEAR;
    EXPECT(RC_FAULT_REWRITE, EXT4, 2);
    fresh();
    chain(EXT4)->rewrites = 0;
    EXPECT(RC_FAULT_REWRITE, EXT4, 0);
    fresh();
    chain(SMALL4)->rewrites = 1;
    EXPECT(RC_FAULT_REWRITE, SMALL4, 0);

    /* The table is good again for whoever comes next. */
    fresh();
    EXPECT(RC_FAULT_NONE, 0, 0);
    printf("ok %u\n", checks);
    return 0;
}
