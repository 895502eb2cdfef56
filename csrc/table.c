/* The table check: every index and length the reply path (reply.c) and
 * pacing (pace.c) trust, verified once before a table is published, so
 * that no packet ever meets a table Python built wrong. The invariants are
 * written beside the fields in routechain.h, each with the name of its
 * enum rc_fault. No system call, no allocation, no globals. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "routechain.h"
#include "wire.h"
#include "checksum.h"

enum {
    IPV4_EXT_MAX = IPV4_ERROR_MAX - IPV4_HEADER_LEN - ICMP_HEADER_LEN - ICMP_EXT_MIN_FIELD,
    IPV6_EXT_MAX = IPV6_ERROR_MAX - IPV6_HEADER_LEN - ICMP_HEADER_LEN - ICMP_EXT_MIN_FIELD,
    KNOWN_HOP_FLAGS = RC_HOP_SILENT
};

static const char *const fault_text[RC_FAULT_COUNT] = {
    [RC_FAULT_NONE] = "no fault",
    [RC_FAULT_NO_CHAINS] = "chains missing for a nonzero chain count",
    [RC_FAULT_ORDER] = "chains not sorted by family and first address, or overlapping",
    [RC_FAULT_LIMITED] = "'limited' disagrees with the daemon and source buckets",
    [RC_FAULT_FAMILY] = "family neither 4 nor 6",
    [RC_FAULT_PREFIX] = "prefix length past the address, or mask not the prefix's",
    [RC_FAULT_LENGTH] = "chain of no hops",
    [RC_FAULT_FLAGS] = "unknown hop flag bits",
    [RC_FAULT_END] = "end not an enum rc_end, or an end without per-hop properties",
    [RC_FAULT_N_HOPS] = "per-hop array shorter than the chain, or its fields set without it",
    [RC_FAULT_HOP_NUMBER] = "a router's hop number is not the hop it stands at",
    [RC_FAULT_ALTERNATIVES] = "alternatives not laid out hop by hop after the chain's hops",
    [RC_FAULT_REPLY_TTL] = "a router's reply TTL is 0",
    [RC_FAULT_MTU] = "an MTU below the family's minimum, or min_mtu not the least MTU",
    [RC_FAULT_EXT_RANGE] = "an extension structure outside the chain's extension bytes",
    [RC_FAULT_EXT_LENGTH] = "an extension structure too short for its labels, or too long "
                            "to fit the error beside a 128-octet quote",
    [RC_FAULT_EXT_CONTENT] = "an extension structure not version 2, with its checksum or a "
                             "label TTL set, or its labels not the first object",
    [RC_FAULT_EXT_SUM] = "an extension structure's sum is not the sum of its bytes",
    [RC_FAULT_TIMING] = "timing without its rate-limit state, or shorter than the routers",
    [RC_FAULT_LOSS] = "a loss above 2^32",
    [RC_FAULT_DESTINATION] = "tcp or udp not an enum rc_tcp / rc_udp, or too many open ports",
    [RC_FAULT_BALANCE] = "balance not an enum rc_balance, or set on an alternative",
    [RC_FAULT_FURTHER] = "a longer branch's routers not laid out after its hop's alternatives, "
                         "or the chain's longer not the greatest",
    [RC_FAULT_REWRITE] = "unknown rewrite bits, both DF bits, DF over IPv6, a rewrite "
                         "further along a branch, or the chain's rewrites wrong",
    [RC_FAULT_CHAPTERS] = "chapters missing, too many, out of order, outside the prefix, "
                          "not past every address the chain uses, or starting outside "
                          "2..length",
};

const char *rc_table_fault_text(int fault)
{
    return fault >= 0 && fault < RC_FAULT_COUNT ? fault_text[fault] : "unknown fault";
}

static size_t address_len(const struct rc_chain *c)
{
    return c->family == 4 ? IPV4_ADDR_LEN : IPV6_ADDR_LEN;
}

static int check_prefix(const struct rc_chain *c)
{
    size_t n = address_len(c);

    if (c->prefix_len > 8 * n)
        return RC_FAULT_PREFIX;
    for (size_t i = 0; i < sizeof c->mask; i++) {
        unsigned bits = c->prefix_len > 8 * i ? c->prefix_len - 8 * (unsigned)i : 0;
        uint8_t want = i >= n ? 0 : bits >= 8 ? 0xff : (uint8_t)(0xff00 >> bits);

        if (c->mask[i] != want)
            return RC_FAULT_PREFIX;
    }
    return RC_FAULT_NONE;
}

/* Sorted and apart: next's first address lies past prev's last. */
static bool is_after(const struct rc_chain *prev, const struct rc_chain *next)
{
    if (prev->family != next->family)
        return prev->family < next->family;
    for (size_t i = 0; i < address_len(prev); i++) {
        uint8_t last = prev->host[i] | (uint8_t)~prev->mask[i];
        uint8_t first = next->host[i] & next->mask[i];

        if (last != first)
            return last < first;
    }
    return false;
}

static int check_extension(const struct rc_chain *c, const struct rc_hop *h)
{
    size_t max = c->family == 4 ? IPV4_EXT_MAX : IPV6_EXT_MAX;
    size_t labels = (size_t)h->n_labels * MPLS_ENTRY_LEN;
    const uint8_t *e;

    if (h->ext_len == 0)
        return h->n_labels ? RC_FAULT_EXT_LENGTH : RC_FAULT_NONE;
    if (!c->ext || h->ext_off > c->ext_bytes || h->ext_len > c->ext_bytes - h->ext_off)
        return RC_FAULT_EXT_RANGE;
    if (h->ext_len < ICMP_EXT_HEADER_LEN ||
        (h->n_labels && h->ext_len < ICMP_EXT_HEADER_LEN + ICMP_EXT_OBJECT_HEADER_LEN + labels) ||
        h->ext_len > max)
        return RC_FAULT_EXT_LENGTH;
    e = c->ext + h->ext_off;
    if (e[0] >> ICMP_EXT_VERSION_SHIFT != ICMP_EXT_VERSION || load16(e + ICMP_EXT_CHECKSUM) != 0)
        return RC_FAULT_EXT_CONTENT;
    if (h->n_labels) {
        const uint8_t *object = e + ICMP_EXT_HEADER_LEN;

        if (load16(object + ICMP_EXT_OBJECT_LENGTH) < ICMP_EXT_OBJECT_HEADER_LEN + labels ||
            object[ICMP_EXT_OBJECT_CLASS] != ICMP_EXT_CLASS_MPLS)
            return RC_FAULT_EXT_CONTENT;
        for (size_t i = 0; i < h->n_labels; i++)
            if (object[ICMP_EXT_OBJECT_HEADER_LEN + i * MPLS_ENTRY_LEN + MPLS_ENTRY_TTL])
                return RC_FAULT_EXT_CONTENT;
    }
    if (csum_fold(csum_add(0, e, h->ext_len)) != csum_fold(h->ext_sum))
        return RC_FAULT_EXT_SUM;
    return RC_FAULT_NONE;
}

static int check_router(const struct rc_chain *c, const struct rc_hop *h)
{
    unsigned min_mtu = c->family == 4 ? IPV4_MIN_MTU : IPV6_MIN_MTU;
    unsigned df = RC_REWRITE_DF_SET | RC_REWRITE_DF_CLEAR;

    if (h->rewrite & ~RC_REWRITE_ALL || (h->rewrite & df) == df ||
        (c->family == 6 && h->rewrite & df))
        return RC_FAULT_REWRITE;
    if (h->reply_ttl == 0)
        return RC_FAULT_REPLY_TTL;
    if (h->flags & ~KNOWN_HOP_FLAGS)
        return RC_FAULT_FLAGS;
    if (h->mtu && (h->mtu < min_mtu || h->mtu < c->min_mtu))
        return RC_FAULT_MTU;
    return check_extension(c, h);
}

/* Hop k's alternatives (at *next) and the routers further along their
 * branches, right after them; *next moves past both. */
static int check_further(const struct rc_chain *c, unsigned k, unsigned *next,
                         unsigned *longest, struct rc_table_fault *at)
{
    const struct rc_hop *h = &c->hops[k];
    unsigned further = *next + h->n_alts;

    for (unsigned i = *next; i < *next + h->n_alts; i++) {
        const struct rc_hop *alt = &c->hops[i];

        at->router = i;
        if (alt->longer == 0) {
            if (alt->first_further)
                return RC_FAULT_FURTHER;
            continue;
        }
        if (alt->first_further != further || alt->longer > c->n_hops - further)
            return RC_FAULT_FURTHER;
        for (unsigned j = further; j < further + alt->longer; j++) {
            const struct rc_hop *f = &c->hops[j];

            at->router = j;
            if (f->hop != k)
                return RC_FAULT_HOP_NUMBER;
            if (f->n_alts || f->longer || f->first_further || f->balance)
                return RC_FAULT_FURTHER;
            if (f->rewrite)
                return RC_FAULT_REWRITE;
        }
        further += alt->longer;
        if (alt->longer > *longest)
            *longest = alt->longer;
    }
    *next = further;
    return RC_FAULT_NONE;
}

/* The per-hop array: hop numbers, the alternatives' layout, each router. */
static int check_hops(const struct rc_chain *c, struct rc_table_fault *at)
{
    unsigned next_alt = c->length + 1u, least_mtu = 0, longest = 0, rewrites = 0;
    int fault;

    if (c->n_hops < c->length + 1u)
        return RC_FAULT_N_HOPS;
    for (unsigned k = 1; k <= c->length; k++) {
        const struct rc_hop *h = &c->hops[k];

        at->router = k;
        if (h->hop != k)
            return RC_FAULT_HOP_NUMBER;
        if (h->balance >= RC_BALANCE_COUNT)
            return RC_FAULT_BALANCE;
        if (h->longer || h->first_further)
            return RC_FAULT_FURTHER;
        if (h->n_alts == 0)
            continue;
        if (h->first_alt != next_alt || h->n_alts > c->n_hops - next_alt)
            return RC_FAULT_ALTERNATIVES;
        for (unsigned i = next_alt; i < next_alt + h->n_alts; i++) {
            at->router = i;
            if (c->hops[i].hop != k)
                return RC_FAULT_HOP_NUMBER;
            if (c->hops[i].n_alts)
                return RC_FAULT_ALTERNATIVES;
            if (c->hops[i].balance != RC_BALANCE_FLOW)
                return RC_FAULT_BALANCE;
        }
        fault = check_further(c, k, &next_alt, &longest, at);
        if (fault)
            return fault;
    }
    at->router = 0;
    if (next_alt != c->n_hops)
        return RC_FAULT_ALTERNATIVES;
    if (longest != c->longer)
        return RC_FAULT_FURTHER;
    for (unsigned i = 1; i < c->n_hops; i++) {
        at->router = i;
        fault = check_router(c, &c->hops[i]);
        if (fault)
            return fault;
        rewrites |= c->hops[i].rewrite;
        if (c->hops[i].mtu && (least_mtu == 0 || c->hops[i].mtu < least_mtu))
            least_mtu = c->hops[i].mtu;
    }
    at->router = 0;
    if (!rewrites != !c->rewrites)
        return RC_FAULT_REWRITE;
    return least_mtu == c->min_mtu ? RC_FAULT_NONE : RC_FAULT_MTU;
}

static int check_timing(const struct rc_chain *c, struct rc_table_fault *at)
{
    unsigned routers = c->hops ? c->n_hops : c->length + 1u;

    if (!c->timing && !c->hop_tat)
        return c->n_timing ? RC_FAULT_TIMING : RC_FAULT_NONE;
    if (!c->timing || !c->hop_tat || c->n_timing < routers)
        return RC_FAULT_TIMING;
    for (unsigned i = 0; i < c->n_timing; i++) {
        at->router = i;
        if (c->timing[i].loss > (uint64_t)1 << 32)
            return RC_FAULT_LOSS;
    }
    at->router = 0;
    return RC_FAULT_NONE;
}

/* Whether a lies past b, both of the chain's family (network order). */
static bool is_past(const struct rc_chain *c, const uint8_t *a, const uint8_t *b)
{
    return memcmp(a, b, address_len(c)) > 0;
}

/* [CHAPTERS]: reply.c find_chapter matches a probe past the chain against
 * each chapter; these keep a chapter from shadowing a hop, an alternative
 * or another chapter, and from naming a hop the chain does not have. */
static int check_chapters(const struct rc_chain *c, struct rc_table_fault *at)
{
    size_t n = address_len(c);
    uint8_t last[IPV6_ADDR_LEN];
    unsigned carry = c->length;

    if (!c->chapters != !c->n_chapters || c->n_chapters > RC_MAX_CHAPTERS)
        return RC_FAULT_CHAPTERS;
    /* host + length, over every bit with carry: the destination. */
    for (size_t i = n; i-- > 0;) {
        carry += c->host[i];
        last[i] = (uint8_t)carry;
        carry >>= 8;
    }
    for (uint32_t j = 0; j < c->n_chapters; j++) {
        const struct rc_chapter *ch = &c->chapters[j];
        bool broadcast = c->family == 4 && c->prefix_len <= 30;

        at->router = j;
        if (ch->start < 2 || ch->start > c->length)
            return RC_FAULT_CHAPTERS;
        for (size_t i = 0; i < n; i++) {
            if ((ch->addr[i] ^ c->host[i]) & c->mask[i])
                return RC_FAULT_CHAPTERS;
            if ((ch->addr[i] | c->mask[i]) != 0xff)
                broadcast = false;
        }
        if (broadcast || !is_past(c, ch->addr, j ? c->chapters[j - 1].addr : last))
            return RC_FAULT_CHAPTERS;
        for (unsigned r = c->hops ? c->length + 1u : c->n_hops; r < c->n_hops; r++)
            if (!is_past(c, ch->addr, c->hops[r].addr))
                return RC_FAULT_CHAPTERS;
    }
    at->router = 0;
    return RC_FAULT_NONE;
}

static int check_chain(const struct rc_chain *c, struct rc_table_fault *at)
{
    int fault;

    if (c->family != 4 && c->family != 6)
        return RC_FAULT_FAMILY;
    fault = check_prefix(c);
    if (fault)
        return fault;
    if (c->length == 0)
        return RC_FAULT_LENGTH;
    for (size_t k = 0; k < sizeof c->hop_flags; k++)
        if (c->hop_flags[k] & ~KNOWN_HOP_FLAGS)
            return RC_FAULT_FLAGS;
    if (c->end > RC_END_PROHIBITED || (c->end != RC_END_HOST && !c->hops))
        return RC_FAULT_END;
    if (c->tcp > RC_TCP_OPEN || c->udp > RC_UDP_PROHIBITED || c->n_open > RC_MAX_OPEN_PORTS)
        return RC_FAULT_DESTINATION;
    if (!c->hops) {
        if (c->n_hops || c->min_mtu)
            return RC_FAULT_N_HOPS;
        if (c->longer)
            return RC_FAULT_FURTHER;
        if (c->rewrites)
            return RC_FAULT_REWRITE;
        if (c->ext || c->ext_bytes)
            return RC_FAULT_EXT_RANGE;
    } else {
        if (c->ext_bytes && !c->ext)
            return RC_FAULT_EXT_RANGE;
        fault = check_hops(c, at);
        if (fault)
            return fault;
    }
    fault = check_chapters(c, at);
    if (fault)
        return fault;
    return check_timing(c, at);
}

int rc_table_check(const struct rc_table *t, struct rc_table_fault *at)
{
    struct rc_table_fault spare;
    bool on = t->daemon.interval_ns || t->source.interval_ns;
    int fault;

    if (!at)
        at = &spare;
    *at = (struct rc_table_fault){0, 0};
    if (!t->limited != !on)
        return RC_FAULT_LIMITED;
    if (t->n_chains && !t->chains)
        return RC_FAULT_NO_CHAINS;
    for (uint32_t i = 0; i < t->n_chains; i++) {
        at->chain = i;
        fault = check_chain(&t->chains[i], at);
        if (fault)
            return fault;
        if (i > 0 && !is_after(&t->chains[i - 1], &t->chains[i]))
            return RC_FAULT_ORDER;
    }
    *at = (struct rc_table_fault){0, 0};
    return RC_FAULT_NONE;
}

/* A plain exchange: workers pick the new table up on their next packet
 * (serve.c hold_live), and the caller frees the old one once none holds
 * it (rc_worker_holds). */
const struct rc_table *rc_table_publish(const struct rc_table **live,
                                        const struct rc_table *table)
{
    return __atomic_exchange_n(live, table, __ATOMIC_SEQ_CST);
}
