/* The reply core: one received IPv4 or IPv6 packet in, the reply a chain of
 * real routers and a real host would send out, built in place in the same
 * buffer. No system call, no allocation, no globals; the work per packet is
 * bounded by log2 of the chain count, EXT_HEADERS_MAX and the bytes a
 * checksum must cover. docs/replies.md has the table of probe -> reply -> RFC clause. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "routechain.h"
#include "wire.h"
#include "checksum.h"

enum {
    EXT_HEADERS_MAX = 8,         /* bound on the IPv6 extension-header walk */
    /* RFC 9293 3.7.1, RFC 6691: an Ethernet host's MSS, its MTU (1500) less
     * the IP and TCP headers; and the window of a fresh listener. */
    SYN_ACK_MSS4 = 1460,
    SYN_ACK_MSS6 = 1440,
    SYN_ACK_WINDOW = 65535,
    IPV4_ERROR_HEADER = IPV4_HEADER_LEN + ICMP_HEADER_LEN,
    IPV6_ERROR_HEADER = IPV6_HEADER_LEN + ICMP_HEADER_LEN
};

/* Who answers, and how. */
enum answer {
    ANSWER_TIME_EXCEEDED,        /* hop host + t, mid-chain */
    ANSWER_HOST_UNREACH,         /* D beyond the chain or at/below its host */
    ANSWER_DESTINATION,          /* D itself, as a host */
    ANSWER_TOO_BIG,              /* a hop whose next-hop MTU the probe exceeds */
    ANSWER_ENDING                /* the chain's `end`, from its last hop */
};

/* The RFC 4884 extension structure an error carries: none when len is 0. */
struct extension {
    const uint8_t *bytes;        /* checksum and label TTLs zero */
    size_t len;
    uint32_t sum;                /* of bytes, unfolded */
    unsigned n_labels;
    uint8_t label_ttl;
};

/* What parsing learnt about the packet at buf + headroom. */
struct probe {
    uint8_t *ip;
    size_t ip_len;               /* from its length fields: padding excluded */
    size_t room;                 /* bytes of buffer from ip on */
    size_t upper_off;            /* upper-layer header, from ip */
    size_t upper_len;
    size_t next_header_off;      /* IPv6: the Next Header field naming proto */
    const uint8_t *src;          /* dst follows it, in both headers */
    const uint8_t *dst;
    const uint8_t *reply_to;     /* the sender: src, unless a NAT in front rewrote it */
    size_t addr_len;
    const struct rc_chain *chain;
    uint8_t family;
    uint8_t proto;
    uint8_t ttl;
    bool first_fragment;
    bool dont_fragment;          /* IPv4 DF; always true over IPv6 (RFC 8200 5) */
};

static bool is_all(const uint8_t *p, size_t n, uint8_t value)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != value)
            return false;
    return true;
}

/* Where dst sorts against the first address of chain's prefix, families
 * first (4 before 6): < 0 before, 0 at, > 0 after. */
static int compare_to_start(uint8_t family, const uint8_t *dst, size_t addr_len,
                            const struct rc_chain *chain)
{
    if (family != chain->family)
        return family < chain->family ? -1 : 1;
    for (size_t i = 0; i < addr_len; i++) {
        uint8_t start = chain->host[i] & chain->mask[i];

        if (dst[i] != start)
            return dst[i] < start ? -1 : 1;
    }
    return 0;
}

/* The chain whose prefix holds dst, or NULL. The table is sorted by family
 * and first address and its prefixes do not overlap (routechain.h), so the
 * only candidate is the last chain starting at or before dst: a binary
 * search, O(log n) in the chain count with no memory beyond the table. */
static const struct rc_chain *find_chain(const struct rc_table *table, uint8_t family,
                                         const uint8_t *dst, size_t addr_len)
{
    uint32_t lo = 0, hi = table->n_chains;   /* chains[hi..] start after dst */
    const struct rc_chain *chain;
    size_t i = 0;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;

        if (compare_to_start(family, dst, addr_len, &table->chains[mid]) < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (hi == 0)
        return NULL;
    chain = &table->chains[hi - 1];
    if (chain->family != family)
        return NULL;
    while (i < addr_len && ((dst[i] ^ chain->host[i]) & chain->mask[i]) == 0)
        i++;
    return i == addr_len ? chain : NULL;
}

/* k = D - host over every bit, with borrow. Returns 0 when D <= host,
 * RC_MAX_HOPS + 1 when k is past any chain, else k. */
static unsigned measure_distance(const uint8_t *dst, const uint8_t *host, size_t addr_len)
{
    uint8_t diff[IPV6_ADDR_LEN];
    int borrow = 0;

    for (size_t i = addr_len; i-- > 0;) {
        int v = dst[i] - host[i] - borrow;

        borrow = v < 0;
        diff[i] = (uint8_t)v;
    }
    if (borrow)
        return 0;
    if (!is_all(diff, addr_len - 1, 0))
        return RC_MAX_HOPS + 1;
    return diff[addr_len - 1];
}

/* host + k over every bit, with carry. */
static void add_to_address(uint8_t *out, const uint8_t *host, size_t addr_len, unsigned k)
{
    unsigned carry = k;

    for (size_t i = addr_len; i-- > 0;) {
        carry += host[i];
        out[i] = (uint8_t)carry;
        carry >>= 8;
    }
}

/* 0/8, 127/8, 224/4; 240/4 too (RFC 1812 5.3.7: reserved, never a
 * sender), which covers 255.255.255.255. */
static bool is_bad_ipv4_source(const uint8_t *a)
{
    return a[0] == 0 || a[0] == 127 || a[0] >= 224;
}

static bool is_bad_ipv6_source(const uint8_t *a)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (a[0] == 0xff)                                 /* ff00::/8 */
        return true;
    if (memcmp(a, mapped, sizeof mapped) == 0)        /* ::ffff:0:0/96 */
        return true;
    return is_all(a, 15, 0) && a[15] <= 1;            /* :: and ::1 */
}

/* RFC 919 / RFC 922: the all-ones host part of a prefix that has one. */
static bool is_prefix_broadcast(const uint8_t *dst, const struct rc_chain *chain)
{
    if (chain->prefix_len > 30)                       /* RFC 3021 /31, and /32 */
        return false;
    for (size_t i = 0; i < IPV4_ADDR_LEN; i++)
        if ((dst[i] | chain->mask[i]) != 0xff)
            return false;
    return true;
}

static int parse_ipv4(uint8_t *ip, size_t len, const struct rc_table *table, struct probe *p)
{
    size_t ihl, total;
    uint16_t fragment;

    if (len < IPV4_HEADER_LEN)
        return RC_DROP_TRUNCATED;
    ihl = ipv4_header_len(ip);
    if (ihl < IPV4_HEADER_LEN)
        return RC_DROP_BAD_HEADER;
    total = load16(ip + IPV4_TOTAL_LENGTH);
    /* Bytes past the total length are link padding, never part of it. */
    if (ihl > len || total > len || total < ihl)
        return RC_DROP_TRUNCATED;
    if (!csum_is_valid(csum_add(0, ip, ihl)))        /* RFC 1812 5.2.2 */
        return RC_DROP_BAD_HEADER;

    p->ip = ip;
    p->ip_len = total;
    p->upper_off = ihl;
    p->upper_len = total - ihl;
    p->src = ip + IPV4_SOURCE;
    p->reply_to = p->src;
    p->dst = ip + IPV4_DESTINATION;
    p->addr_len = IPV4_ADDR_LEN;
    p->family = 4;
    p->proto = ip[IPV4_PROTOCOL];
    p->ttl = ip[IPV4_TTL];

    if (is_bad_ipv4_source(p->src))                   /* RFC 1812 4.3.2.7 */
        return RC_DROP_BAD_SOURCE;
    if (ipv4_is_multicast(p->dst) || is_all(p->dst, IPV4_ADDR_LEN, 0xff))
        return RC_DROP_MULTICAST;                     /* RFC 1122 3.2.2 */
    p->chain = find_chain(table, 4, p->dst, IPV4_ADDR_LEN);
    if (!p->chain)
        return RC_DROP_NOT_OURS;
    if (is_prefix_broadcast(p->dst, p->chain))
        return RC_DROP_MULTICAST;                     /* RFC 1122 3.2.2 */
    fragment = load16(ip + IPV4_FRAGMENT);
    if (fragment & IPV4_FRAG_OFFSET_MASK)             /* RFC 1122 3.2.2 */
        return RC_DROP_FRAGMENT;
    p->first_fragment = (fragment & IPV4_FRAG_MORE) != 0;
    p->dont_fragment = (fragment & IPV4_FRAG_DONT) != 0;
    return RC_DROP_NONE;
}

static bool is_ipv6_extension(uint8_t next)
{
    return next == PROTO_HOP_BY_HOP || next == PROTO_ROUTING || next == PROTO_FRAGMENT ||
           next == PROTO_DEST_OPTIONS || next == PROTO_AH;
}

/* RFC 8200 4: find the upper-layer header behind at most EXT_HEADERS_MAX
 * extension headers, each of which must lie inside the payload. */
static int walk_ipv6_extensions(struct probe *p)
{
    const uint8_t *ip = p->ip;
    size_t off = IPV6_HEADER_LEN, next_off = IPV6_NEXT_HEADER;
    uint8_t next = ip[IPV6_NEXT_HEADER];

    for (unsigned n = 0; is_ipv6_extension(next); n++) {
        size_t ext_len;

        /* RFC 8200 4.1: Hop-by-Hop Options may only follow the IPv6 header.
         * Anywhere else it is a Next Header a host does not recognise, and
         * the destination answers Parameter Problem 1 pointing at it. */
        if (next == PROTO_HOP_BY_HOP && n > 0)
            break;
        if (n == EXT_HEADERS_MAX)
            return RC_DROP_EXT_HEADERS;
        if (p->ip_len - off < EXT_MIN_LEN)
            return RC_DROP_TRUNCATED;
        if (next == PROTO_FRAGMENT)
            ext_len = FRAG_HEADER_LEN;
        else if (next == PROTO_AH)
            ext_len = ((size_t)ip[off + EXT_LENGTH] + 2) * AH_UNIT;
        else
            ext_len = ((size_t)ip[off + EXT_LENGTH] + 1) * EXT_UNIT;
        if (ext_len > p->ip_len - off)
            return RC_DROP_TRUNCATED;
        if (next == PROTO_FRAGMENT) {
            uint16_t fragment = load16(ip + off + FRAG_OFFSET_FLAGS);

            /* RFC 8200 4.5: the upper-layer header is in the first. */
            if (fragment >> FRAG_OFFSET_SHIFT)
                return RC_DROP_FRAGMENT;
            /* RFC 6946: offset 0 without M is an atomic fragment, whole. */
            p->first_fragment = (fragment & FRAG_MORE) != 0;
        }
        next_off = off + EXT_NEXT_HEADER;
        next = ip[next_off];
        off += ext_len;
    }
    p->upper_off = off;
    p->upper_len = p->ip_len - off;
    p->next_header_off = next_off;
    p->proto = next;
    return RC_DROP_NONE;
}

static int parse_ipv6(uint8_t *ip, size_t len, const struct rc_table *table, struct probe *p)
{
    size_t payload;

    if (len < IPV6_HEADER_LEN)
        return RC_DROP_TRUNCATED;
    payload = load16(ip + IPV6_PAYLOAD_LENGTH);
    /* Zero is a jumbogram (RFC 2675), which no TUN delivers: a lie here. */
    if (payload == 0 || IPV6_HEADER_LEN + payload > len)
        return RC_DROP_TRUNCATED;

    p->ip = ip;
    p->ip_len = IPV6_HEADER_LEN + payload;
    p->src = ip + IPV6_SOURCE;
    p->reply_to = p->src;
    p->dst = ip + IPV6_DESTINATION;
    p->addr_len = IPV6_ADDR_LEN;
    p->family = 6;
    p->ttl = ip[IPV6_HOP_LIMIT];
    p->first_fragment = false;
    p->dont_fragment = true;

    if (is_bad_ipv6_source(p->src))                   /* RFC 4443 2.4(e.6) */
        return RC_DROP_BAD_SOURCE;
    if (p->dst[0] == 0xff)                            /* RFC 4443 2.4(e.3) */
        return RC_DROP_MULTICAST;
    p->chain = find_chain(table, 6, p->dst, IPV6_ADDR_LEN);
    if (!p->chain)
        return RC_DROP_NOT_OURS;
    return walk_ipv6_extensions(p);
}

static bool is_icmp_informational(uint8_t type)
{
    switch (type) {
    case ICMP_ECHO_REPLY: case ICMP_ECHO_REQUEST:
    case ICMP_ROUTER_ADVERT: case ICMP_ROUTER_SOLICIT:
    case ICMP_TIMESTAMP: case ICMP_TIMESTAMP_REPLY:
    case ICMP_INFO_REQUEST: case ICMP_INFO_REPLY:
    case ICMP_ADDRESS_MASK: case ICMP_ADDRESS_MASK_REPLY:
    case ICMP_EXT_ECHO_REQUEST: case ICMP_EXT_ECHO_REPLY:
        return true;
    default:
        return false;
    }
}

static bool is_icmp(const struct probe *p)
{
    return p->proto == (p->family == 4 ? PROTO_ICMP : PROTO_ICMPV6);
}

/* RFC 1122 3.2.2, RFC 1812 4.3.2.7, RFC 4443 2.4(e.1): no error about an
 * error; a type we do not know may be one, so it gets no reply either. */
static int check_icmp_error(const struct probe *p)
{
    uint8_t type;

    if (!is_icmp(p))
        return RC_DROP_NONE;
    if (p->upper_len < ICMP_HEADER_LEN)
        return RC_DROP_TRUNCATED;
    type = p->ip[p->upper_off + ICMP_TYPE];
    if (p->family == 4 ? !is_icmp_informational(type)
                       : type < ICMPV6_INFO_FIRST || type > ICMPV6_INFO_LAST_KNOWN)
        return RC_DROP_ICMP_ERROR;
    return RC_DROP_NONE;
}

/* The pseudo-header's sum: RFC 768, RFC 9293 3.1, RFC 8200 8.1. Swapping
 * source and destination leaves it unchanged. */
static uint64_t sum_pseudo_header(const struct probe *p, size_t upper_len, uint8_t proto)
{
    return csum_add(0, p->src, 2 * p->addr_len) + upper_len + proto;
}

/* The IPv4 ID of a reply. RFC 6864 4.1 lets an atomic datagram carry any
 * ID, but tools that tell replies apart by it want it to vary; without
 * state it comes from the probe, whose ID and header checksum (which
 * covers the TTL) vary from probe to probe. */
static uint16_t derive_ipv4_id(const uint8_t *ip)
{
    return load16(ip + IPV4_ID) ^ load16(ip + IPV4_CHECKSUM);
}

/* A fresh 20-byte header: TOS 0, DF clear, no options (RFC 1812 4.3.2.5). */
static void write_ipv4_header(uint8_t *h, size_t total, uint16_t id, uint8_t ttl,
                              uint8_t proto, const uint8_t *src, const uint8_t *dst)
{
    h[IPV4_VERSION_IHL] = IPV4_VERSION_IHL_PLAIN;
    h[IPV4_TOS] = 0;
    store16(h + IPV4_TOTAL_LENGTH, (uint16_t)total);
    store16(h + IPV4_ID, id);
    store16(h + IPV4_FRAGMENT, 0);
    h[IPV4_TTL] = ttl;
    h[IPV4_PROTOCOL] = proto;
    store16(h + IPV4_CHECKSUM, 0);
    memcpy(h + IPV4_SOURCE, src, IPV4_ADDR_LEN);
    memcpy(h + IPV4_DESTINATION, dst, IPV4_ADDR_LEN);
    store16(h + IPV4_CHECKSUM, csum_finish(csum_add(0, h, IPV4_HEADER_LEN)));
}

/* A fresh 40-byte header: traffic class 0, flow label 0. */
static void write_ipv6_header(uint8_t *h, size_t payload, uint8_t next, uint8_t hop_limit,
                              const uint8_t *src, const uint8_t *dst)
{
    store32(h + IPV6_VERSION_CLASS_FLOW, IPV6_VERSION_WORD);
    store16(h + IPV6_PAYLOAD_LENGTH, (uint16_t)payload);
    h[IPV6_NEXT_HEADER] = next;
    h[IPV6_HOP_LIMIT] = hop_limit;
    memcpy(h + IPV6_SOURCE, src, IPV6_ADDR_LEN);
    memcpy(h + IPV6_DESTINATION, dst, IPV6_ADDR_LEN);
}

/* RFC 4884 4, 7: the original datagram field becomes whole units of
 * at least 128 octets, zero-padded behind the quote, and the extension
 * structure follows it, label TTLs and checksum filled in; everything stays
 * within the family's limit, so the quote shrinks to make room. Returns the
 * field's length, or 0 when the buffer has no room behind the probe. */
static size_t append_extension(const struct probe *p, const struct extension *ext,
                               size_t *quote)
{
    size_t unit = p->family == 4 ? ICMP_LENGTH_UNIT : ICMPV6_LENGTH_UNIT;
    size_t header = p->family == 4 ? IPV4_ERROR_HEADER : IPV6_ERROR_HEADER;
    size_t limit = p->family == 4 ? IPV4_ERROR_MAX : IPV6_ERROR_MAX;
    /* ext->len <= limit - header - ICMP_EXT_MIN_FIELD: rc_table_check()
     * [EXT_LENGTH], so this neither wraps nor overruns the limit. */
    size_t most = (limit - header - ext->len) / unit * unit;
    size_t field;
    uint8_t *e;

    *quote = p->ip_len < most ? p->ip_len : most;
    field = (*quote + unit - 1) / unit * unit;
    if (field < ICMP_EXT_MIN_FIELD)
        field = ICMP_EXT_MIN_FIELD;
    if (field + ext->len > p->room)
        return 0;
    memset(p->ip + *quote, 0, field - *quote);
    e = p->ip + field;
    memcpy(e, ext->bytes, ext->len);
    /* The MPLS object, when there is one, comes first (rc_hop). */
    for (unsigned i = 0; i < ext->n_labels; i++)
        e[ICMP_EXT_HEADER_LEN + ICMP_EXT_OBJECT_HEADER_LEN + i * MPLS_ENTRY_LEN +
          MPLS_ENTRY_TTL] = ext->label_ttl;
    store16(e + ICMP_EXT_CHECKSUM,
            csum_finish(ext->sum + (uint64_t)ext->n_labels * ext->label_ttl));
    return field;
}

/* An ICMP error from hop_addr: a new IP + ICMP header in the headroom, in
 * front of the probe, which stays where it was read and is quoted as
 * received up to the family's limit. The checksum covers the new header
 * and the quote: all of it is new to the reply. An extension structure
 * sums to all ones with its own checksum in place, which adds nothing to
 * a nonzero sum: it is left out of the ICMP checksum. */
static int build_error(const struct probe *p, size_t headroom, const uint8_t *hop_addr,
                       uint8_t ttl, uint8_t type, uint8_t code, uint32_t rest,
                       const struct extension *ext, size_t *off)
{
    size_t header = p->family == 4 ? IPV4_ERROR_HEADER : IPV6_ERROR_HEADER;
    size_t limit = p->family == 4 ? IPV4_ERROR_MAX : IPV6_ERROR_MAX;
    size_t quote = p->ip_len < limit - header ? p->ip_len : limit - header;
    size_t body, field = 0;
    uint8_t *h, *icmp;
    uint64_t sum = 0;

    if (headroom < header)
        return -RC_DROP_NO_ROOM;
    h = p->ip - header;
    icmp = h + header - ICMP_HEADER_LEN;
    body = quote;
    if (ext && ext->len) {
        field = append_extension(p, ext, &quote);
        if (field == 0)
            return -RC_DROP_NO_ROOM;
        body = field + ext->len;
    }
    icmp[ICMP_TYPE] = type;
    icmp[ICMP_CODE] = code;
    store16(icmp + ICMP_CHECKSUM, 0);
    store32(icmp + ICMP_REST, rest);
    if (field && p->family == 4)
        icmp[ICMP_LENGTH] = (uint8_t)(field / ICMP_LENGTH_UNIT);
    else if (field)
        icmp[ICMPV6_LENGTH] = (uint8_t)(field / ICMPV6_LENGTH_UNIT);
    if (p->family == 4) {
        write_ipv4_header(h, header + body, derive_ipv4_id(p->ip), ttl, PROTO_ICMP,
                          hop_addr, p->reply_to);
    } else {
        write_ipv6_header(h, ICMP_HEADER_LEN + body, PROTO_ICMPV6, ttl, hop_addr,
                          p->reply_to);
        sum = csum_add(0, h + IPV6_SOURCE, 2 * IPV6_ADDR_LEN) + ICMP_HEADER_LEN + body +
              PROTO_ICMPV6;
    }
    sum = csum_add(sum, icmp, ICMP_HEADER_LEN + quote);
    store16(icmp + ICMP_CHECKSUM, csum_finish(sum));
    *off = headroom - header;
    return (int)(header + body);
}

/* The reply's IP header for an in-place reply whose upper layer starts at
 * upper (Echo Reply, RST): addresses swapped. The probe's addresses are
 * copied first because the new header may overlap them. */
static size_t write_swapped_header(const struct probe *p, uint8_t *upper, size_t upper_len,
                                   uint8_t ttl)
{
    uint8_t src[IPV6_ADDR_LEN], dst[IPV6_ADDR_LEN];

    memcpy(src, p->src, p->addr_len);
    memcpy(dst, p->dst, p->addr_len);
    if (p->family == 4) {
        uint16_t id = derive_ipv4_id(p->ip);

        write_ipv4_header(upper - IPV4_HEADER_LEN, IPV4_HEADER_LEN + upper_len, id, ttl,
                          p->proto, dst, src);
        return IPV4_HEADER_LEN;
    }
    write_ipv6_header(upper - IPV6_HEADER_LEN, upper_len, p->proto, ttl, dst, src);
    return IPV6_HEADER_LEN;
}

/* RFC 1624: a header without options becomes the reply's by patching the
 * words that change (version/TOS, ID, flags, TTL) and swapping addresses,
 * which leaves the sum alone. */
static void patch_ipv4_header(uint8_t *ip, uint8_t ttl)
{
    uint16_t check = load16(ip + IPV4_CHECKSUM);
    uint16_t id = derive_ipv4_id(ip);
    uint16_t ttl_proto = (uint16_t)(ttl << 8 | ip[IPV4_PROTOCOL]);
    uint8_t src[IPV4_ADDR_LEN];

    check = csum_replace2(check, load16(ip + IPV4_VERSION_IHL), IPV4_VERSION_IHL_PLAIN << 8);
    check = csum_replace2(check, load16(ip + IPV4_ID), id);
    check = csum_replace2(check, load16(ip + IPV4_FRAGMENT), 0);
    check = csum_replace2(check, load16(ip + IPV4_TTL), ttl_proto);
    ip[IPV4_TOS] = 0;
    store16(ip + IPV4_ID, id);
    store16(ip + IPV4_FRAGMENT, 0);
    ip[IPV4_TTL] = ttl;
    memcpy(src, ip + IPV4_SOURCE, IPV4_ADDR_LEN);
    memmove(ip + IPV4_SOURCE, ip + IPV4_DESTINATION, IPV4_ADDR_LEN);
    memcpy(ip + IPV4_DESTINATION, src, IPV4_ADDR_LEN);
    store16(ip + IPV4_CHECKSUM, check);
}

/* RFC 792 / RFC 4443 4.2: the request turned into its reply where it lies;
 * the payload is neither moved nor summed. The caller verified the
 * request's checksum. */
static int build_echo_reply(const struct probe *p, size_t headroom, uint8_t ttl, size_t *off)
{
    uint8_t *icmp = p->ip + p->upper_off;
    uint8_t reply = p->family == 4 ? ICMP_ECHO_REPLY : ICMPV6_ECHO_REPLY;
    uint16_t check = load16(icmp + ICMP_CHECKSUM);
    size_t ip_header;

    check = csum_replace2(check, load16(icmp + ICMP_TYPE),
                          (uint16_t)(reply << 8 | icmp[ICMP_CODE]));
    icmp[ICMP_TYPE] = reply;
    /* RFC 1624 3: an all-zero ICMPv4 reply sums to +0, whose checksum is
     * 0xffff, not the 0 that eqn. 3 gives. Rare; looked at only then. */
    if (check == 0 && p->family == 4 && icmp[ICMP_CODE] == 0 &&
        is_all(icmp + ICMP_REST, p->upper_len - ICMP_REST, 0))
        check = 0xffff;
    store16(icmp + ICMP_CHECKSUM, check);

    if (p->family == 4 && p->upper_off == IPV4_HEADER_LEN) {
        patch_ipv4_header(p->ip, ttl);
        *off = headroom;
        return (int)p->ip_len;
    }
    /* Options or extension headers are dropped: a fresh header goes right
     * in front of the message. */
    ip_header = write_swapped_header(p, icmp, p->upper_len, ttl);
    *off = headroom + p->upper_off - ip_header;
    return (int)(ip_header + p->upper_len);
}

/* RFC 9293 3.10.7.1, CLOSED: a 20-byte RST in place of the segment. Ports
 * and addresses swap, which leaves their sum alone; the rest is new. A
 * bare RST (rc_tcp RST, as filters send) never carries ACK: its SEQ is
 * SEG.ACK when the segment had one, else 0. */
static int build_tcp_rst(const struct probe *p, size_t headroom, uint8_t ttl, bool bare,
                         size_t *off)
{
    uint8_t *tcp = p->ip + p->upper_off;
    uint8_t flags = tcp[TCP_FLAGS];
    uint16_t sport = load16(tcp + TCP_SOURCE_PORT);
    uint32_t seq = load32(tcp + TCP_SEQ), ack = load32(tcp + TCP_ACK);
    size_t data = p->upper_len - tcp_header_len(tcp);
    size_t ip_header;

    store16(tcp + TCP_SOURCE_PORT, load16(tcp + TCP_DEST_PORT));
    store16(tcp + TCP_DEST_PORT, sport);
    if (flags & TCP_ACK_FLAG || bare) {
        /* <SEQ=SEG.ACK><CTL=RST> */
        store32(tcp + TCP_SEQ, flags & TCP_ACK_FLAG ? ack : 0);
        store32(tcp + TCP_ACK, 0);
        tcp[TCP_FLAGS] = TCP_RST;
    } else {
        /* <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; SYN and FIN count. */
        uint32_t seg_len = (uint32_t)data + !!(flags & TCP_SYN) + !!(flags & TCP_FIN);

        store32(tcp + TCP_SEQ, 0);
        store32(tcp + TCP_ACK, seq + seg_len);
        tcp[TCP_FLAGS] = TCP_RST | TCP_ACK_FLAG;
    }
    tcp[TCP_DATA_OFFSET] = TCP_DATA_OFFSET_PLAIN;
    store16(tcp + TCP_WINDOW, 0);
    store16(tcp + TCP_CHECKSUM, 0);
    store16(tcp + TCP_URGENT, 0);
    store16(tcp + TCP_CHECKSUM,
            csum_finish(csum_add(sum_pseudo_header(p, TCP_HEADER_LEN, PROTO_TCP),
                                 tcp, TCP_HEADER_LEN)));
    ip_header = write_swapped_header(p, tcp, TCP_HEADER_LEN, ttl);
    *off = headroom + p->upper_off - ip_header;
    return (int)(ip_header + TCP_HEADER_LEN);
}

/* FNV-1a (32 bits) over n bytes, continuing from h. */
static uint32_t hash_bytes(uint32_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

/* The initial sequence number of a SYN-ACK: no state and no secret (the
 * core has neither), so a hash (FNV-1a) of the addresses, the ports (as
 * the SYN carries them) and the SYN's sequence number: it differs from
 * connection to connection and from SYN to SYN, as RFC 9293 3.4.1 asks,
 * is the same for a retransmitted SYN, and lets the handshake's ACK be
 * recognised without state, as a SYN cookie is (RFC 4987 3.6). */
static uint32_t derive_iss(const struct probe *p, const uint8_t *tcp, uint32_t syn_seq)
{
    uint8_t seq[4];

    store32(seq, syn_seq);
    /* Source and destination lie side by side in both headers. */
    return hash_bytes(hash_bytes(hash_bytes(2166136261u, p->src, 2 * p->addr_len),
                                 tcp, TCP_SEQ),
                      seq, sizeof seq);
}

/* The ACK that completes a handshake our SYN-ACK began: ACK alone (PSH
 * allowed), no data, acknowledging ISS + 1 of a SYN whose SEQ was one
 * before this one's. */
static bool is_handshake_ack(const struct probe *p, const uint8_t *tcp)
{
    uint8_t flags = tcp[TCP_FLAGS] & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK_FLAG);
    uint32_t seq = load32(tcp + TCP_SEQ);

    return flags == TCP_ACK_FLAG && p->upper_len == tcp_header_len(tcp) &&
           load32(tcp + TCP_ACK) == derive_iss(p, tcp, seq - 1) + 1;
}

/* RFC 9293 3.10.7.2, LISTEN, a SYN: <SEQ=ISS><ACK=SEG.SEQ+1><CTL=SYN,ACK>
 * with an MSS option (3.7.1) and a window, in place of the segment. No TCB
 * is kept: the handshake's ACK is taken silently, as a SYN-cookie server
 * takes it, and whatever follows meets the listener again and is reset;
 * data on the SYN is not acknowledged (RCV.NXT stays SEG.SEQ + 1). */
static int build_tcp_syn_ack(const struct probe *p, size_t headroom, uint8_t ttl, size_t *off)
{
    uint8_t *tcp = p->ip + p->upper_off;
    uint16_t sport = load16(tcp + TCP_SOURCE_PORT);
    uint32_t seq = load32(tcp + TCP_SEQ), iss = derive_iss(p, tcp, seq);
    size_t ip_header;

    if (p->upper_off + TCP_SYN_ACK_HEADER_LEN > p->room)
        return -RC_DROP_NO_ROOM;
    store16(tcp + TCP_SOURCE_PORT, load16(tcp + TCP_DEST_PORT));
    store16(tcp + TCP_DEST_PORT, sport);
    store32(tcp + TCP_SEQ, iss);
    store32(tcp + TCP_ACK, seq + 1);
    tcp[TCP_DATA_OFFSET] = TCP_DATA_OFFSET_MSS;
    tcp[TCP_FLAGS] = TCP_SYN | TCP_ACK_FLAG;
    store16(tcp + TCP_WINDOW, SYN_ACK_WINDOW);
    store16(tcp + TCP_CHECKSUM, 0);
    store16(tcp + TCP_URGENT, 0);
    tcp[TCP_HEADER_LEN + TCP_OPT_KIND] = TCP_OPT_MSS;
    tcp[TCP_HEADER_LEN + TCP_OPT_LENGTH] = TCP_OPT_MSS_LEN;
    store16(tcp + TCP_HEADER_LEN + TCP_OPT_MSS_VALUE,
            p->family == 4 ? SYN_ACK_MSS4 : SYN_ACK_MSS6);
    store16(tcp + TCP_CHECKSUM,
            csum_finish(csum_add(sum_pseudo_header(p, TCP_SYN_ACK_HEADER_LEN, PROTO_TCP),
                                 tcp, TCP_SYN_ACK_HEADER_LEN)));
    ip_header = write_swapped_header(p, tcp, TCP_SYN_ACK_HEADER_LEN, ttl);
    *off = headroom + p->upper_off - ip_header;
    return (int)(ip_header + TCP_SYN_ACK_HEADER_LEN);
}

/* Whether the chain's destination listens on the segment's port. */
static bool is_open_port(const struct rc_chain *c, const uint8_t *tcp)
{
    uint16_t port = load16(tcp + TCP_DEST_PORT);

    if (c->tcp == RC_TCP_OPEN)
        return true;
    for (unsigned i = 0; i < c->n_open; i++)
        if (c->open_ports[i] == port)
            return true;
    return false;
}

/* Destination Unreachable, administratively prohibited (RFC 1812 5.2.7.1:
 * 3/13; RFC 4443 3.1: 1/1), from the destination itself: a host filter. */
static int build_prohibited(const struct probe *p, size_t headroom, uint8_t ttl,
                            const struct extension *ext, size_t *off)
{
    return build_error(p, headroom, p->dst, ttl,
                       p->family == 4 ? ICMP_DEST_UNREACH : ICMPV6_DEST_UNREACH,
                       p->family == 4 ? ICMP_ADMIN_PROHIBITED : ICMPV6_ADMIN_PROHIBITED, 0,
                       ext, off);
}

/* What the destination answers a TCP segment that passed check_tcp(). */
static int answer_tcp(const struct probe *p, size_t headroom, uint8_t ttl,
                      const struct extension *ext, size_t *off, uint32_t *kind)
{
    const uint8_t *tcp = p->ip + p->upper_off;

    if (is_open_port(p->chain, tcp)) {
        if ((tcp[TCP_FLAGS] & (TCP_SYN | TCP_ACK_FLAG)) == TCP_SYN) {
            *kind = RC_KIND_TCP_SYN_ACK;
            return build_tcp_syn_ack(p, headroom, ttl, off);
        }
        /* A client whose handshake is reset while it completes it reports
         * an error, not an open port (mtr --tcp): the ACK is taken. */
        if (is_handshake_ack(p, tcp))
            return -RC_DROP_TCP_HANDSHAKE;
        *kind = RC_KIND_TCP_RST;                      /* LISTEN, no TCB: reset */
        return build_tcp_rst(p, headroom, ttl, false, off);
    }
    switch (p->chain->tcp) {
    case RC_TCP_SILENT:
        return -RC_DROP_SILENT;
    case RC_TCP_PROHIBITED:
        *kind = RC_KIND_PROHIBITED;
        return build_prohibited(p, headroom, ttl, ext, off);
    default:
        *kind = RC_KIND_TCP_RST;
        return build_tcp_rst(p, headroom, ttl, p->chain->tcp == RC_TCP_RST, off);
    }
}

/* RFC 1122 4.1.3.4 / RFC 8200 8.1: a host drops a datagram whose checksum
 * fails; zero means "none" over IPv4 and is invalid over IPv6. */
static int check_udp(const struct probe *p)
{
    const uint8_t *udp = p->ip + p->upper_off;
    size_t length;

    if (p->upper_len < UDP_HEADER_LEN)
        return RC_DROP_TRUNCATED;
    length = load16(udp + UDP_LENGTH);
    if (length < UDP_HEADER_LEN || length > p->upper_len)
        return RC_DROP_TRUNCATED;
    if (load16(udp + UDP_CHECKSUM) == 0)
        return p->family == 4 ? RC_DROP_NONE : RC_DROP_BAD_CHECKSUM;
    if (!csum_is_valid(csum_add(sum_pseudo_header(p, length, PROTO_UDP), udp, length)))
        return RC_DROP_BAD_CHECKSUM;
    return RC_DROP_NONE;
}

static int check_tcp(const struct probe *p)
{
    const uint8_t *tcp = p->ip + p->upper_off;
    size_t header;

    if (p->upper_len < TCP_HEADER_LEN)
        return RC_DROP_TRUNCATED;
    header = tcp_header_len(tcp);
    if (header < TCP_HEADER_LEN)
        return RC_DROP_BAD_HEADER;
    if (header > p->upper_len)
        return RC_DROP_TRUNCATED;
    if (!csum_is_valid(csum_add(sum_pseudo_header(p, p->upper_len, PROTO_TCP),
                                tcp, p->upper_len)))
        return RC_DROP_BAD_CHECKSUM;                  /* RFC 9293 3.10.7.1 */
    if (tcp[TCP_FLAGS] & TCP_RST)                     /* RFC 9293 3.10.7.1 */
        return RC_DROP_TCP_RST;
    return RC_DROP_NONE;
}

static int check_echo_request(const struct probe *p)
{
    const uint8_t *icmp = p->ip + p->upper_off;
    uint8_t request = p->family == 4 ? ICMP_ECHO_REQUEST : ICMPV6_ECHO_REQUEST;
    uint64_t sum = p->family == 4 ? 0 : sum_pseudo_header(p, p->upper_len, PROTO_ICMPV6);

    if (icmp[ICMP_TYPE] != request)                   /* RFC 4443 2.4(b), RFC 1122 3.2.2 */
        return RC_DROP_ICMP_INFO;
    if (!csum_is_valid(csum_add(sum, icmp, p->upper_len)))
        return RC_DROP_BAD_CHECKSUM;
    return RC_DROP_NONE;
}

/* The destination D answers as a host would. */
static int answer_as_host(const struct probe *p, size_t headroom, uint8_t ttl,
                          const struct extension *ext, size_t *off, uint32_t *kind)
{
    int drop;

    /* A host reassembles before it answers; we do not, and a first
     * fragment alone cannot have its checksum verified. */
    if (p->first_fragment)
        return -RC_DROP_FRAGMENT;
    if (is_icmp(p)) {
        drop = check_echo_request(p);
        *kind = RC_KIND_ECHO_REPLY;
        return drop ? -drop : build_echo_reply(p, headroom, ttl, off);
    }
    switch (p->proto) {
    case PROTO_UDP:
        drop = check_udp(p);
        if (drop)
            return -drop;
        if (p->chain->udp == RC_UDP_SILENT)
            return -RC_DROP_SILENT;
        if (p->chain->udp == RC_UDP_PROHIBITED) {
            *kind = RC_KIND_PROHIBITED;
            return build_prohibited(p, headroom, ttl, ext, off);
        }
        *kind = RC_KIND_PORT_UNREACH;
        return build_error(p, headroom, p->dst, ttl,
                           p->family == 4 ? ICMP_DEST_UNREACH : ICMPV6_DEST_UNREACH,
                           p->family == 4 ? ICMP_PORT_UNREACH : ICMPV6_PORT_UNREACH, 0, ext,
                           off);
    case PROTO_TCP:
        drop = check_tcp(p);
        return drop ? -drop : answer_tcp(p, headroom, ttl, ext, off, kind);
    case PROTO_NO_NEXT_HEADER:
        if (p->family == 6)                           /* RFC 8200 4.7 */
            return -RC_DROP_NO_NEXT_HEADER;
        break;
    default:
        break;
    }
    *kind = RC_KIND_PROTO_UNREACH;
    if (p->family == 4)                               /* RFC 1122 3.2.2.1 */
        return build_error(p, headroom, p->dst, ttl, ICMP_DEST_UNREACH, ICMP_PROTO_UNREACH,
                           0, ext, off);
    /* RFC 8200 4, RFC 4443 3.4: the pointer names the Next Header field;
     * RFC 4884 gives Parameter Problem no length field: no extension. */
    return build_error(p, headroom, p->dst, ttl, ICMPV6_PARAM_PROBLEM,
                       ICMPV6_UNKNOWN_NEXT_HEADER, (uint32_t)p->next_header_off, NULL, off);
}

/* What an ECMP router hashes (docs/replies.md), one hash per enum
 * rc_balance:
 *  - FLOW: source and destination address, the IPv6 flow label, the
 *    upper-layer protocol and the first four octets of its header (ports
 *    for UDP and TCP; type, code and checksum for ICMP, which Paris
 *    traceroute keeps constant). Absent octets count as 0.
 *  - PACKET: those, and what changes from one probe of a flow to the next:
 *    the IPv4 Identification, the TTL / Hop Limit and upper-layer octets 4
 *    to 7 (UDP length and checksum, ICMP identifier and sequence, TCP
 *    sequence number). A balancer that sprays packets, as seen from the
 *    probes: the core keeps no state, so a probe sent twice, byte for
 *    byte, meets the same routers.
 *  - DESTINATION: the destination address alone. */
static void hash_probe(const struct probe *p, const uint8_t *dst, uint8_t ttl,
                       uint32_t hash[RC_BALANCE_COUNT])
{
    uint8_t l4[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    uint32_t h = 2166136261u;

    /* dst and ttl are what the routers see: the probe's, or for a chapter
     * its destination's and the TTL the probe would arrive with there. */
    h = hash_bytes(h, p->src, p->addr_len);
    h = hash_bytes(h, dst, p->addr_len);
    if (p->family == 6) {
        uint32_t label = ipv6_flow_label(p->ip);
        uint8_t flow[3] = {(uint8_t)(label >> 16), (uint8_t)(label >> 8), (uint8_t)label};

        h = hash_bytes(h, flow, sizeof flow);
    }
    h = hash_bytes(h, &p->proto, 1);
    memcpy(l4, p->ip + p->upper_off, p->upper_len < sizeof l4 ? p->upper_len : sizeof l4);
    hash[RC_BALANCE_FLOW] = hash_bytes(h, l4, 4);
    h = hash_bytes(hash[RC_BALANCE_FLOW], &ttl, 1);
    if (p->family == 4)
        h = hash_bytes(h, p->ip + IPV4_ID, 2);
    hash[RC_BALANCE_PACKET] = hash_bytes(h, l4 + 4, 4);
    hash[RC_BALANCE_DESTINATION] = hash_bytes(2166136261u, dst, p->addr_len);
}

/* Which of n routers at hop k a hash meets: a different, independent
 * choice at every hop, as routers seed their hashes differently. */
static unsigned pick_branch(uint32_t hash, unsigned k, unsigned n)
{
    uint32_t x = hash ^ (uint32_t)k * 0x9e3779b9u;

    x ^= x >> 16;                                     /* murmur3's finaliser */
    x *= 0x85ebca6bu;
    x ^= x >> 13;
    x *= 0xc2b2ae35u;
    x ^= x >> 16;
    return x % n;
}

/* The router of hop k that a probe meets, by the hash its balancer uses;
 * forced, when the probe is addressed to an alternative of hop k, is that
 * one. */
static const struct rc_hop *route_at(const struct rc_chain *chain, unsigned k,
                                     const uint32_t hash[RC_BALANCE_COUNT],
                                     const struct rc_hop *forced)
{
    const struct rc_hop *hop = &chain->hops[k];
    unsigned b;

    if (forced && forced->hop == k)
        return forced;
    if (hop->n_alts == 0)
        return hop;
    /* balance is an enum rc_balance: rc_table_check() [BALANCE]. */
    b = pick_branch(hash[hop->balance], k, hop->n_alts + 1u);
    return b ? &chain->hops[hop->first_alt + b - 1] : hop;
}

/* Branches of unequal length: the probe (t its TTL) crosses the routers
 * further along each longer branch it takes in front of hop `last`, where
 * it would arrive or expire. It expires at one of them, which is returned;
 * or it comes out that many hops later, and *t is what is left of its TTL
 * as if every branch were of equal length. */
static const struct rc_hop *walk_branches(const struct rc_chain *chain, unsigned *t,
                                          unsigned last, const uint32_t hash[RC_BALANCE_COUNT],
                                          const struct rc_hop *forced)
{
    for (unsigned j = 1; j < last && j < *t; j++) {
        const struct rc_hop *r = route_at(chain, j, hash, forced);

        if (r->longer == 0)
            continue;
        if (*t - j <= r->longer)                      /* [FURTHER] */
            return &chain->hops[r->first_further + (*t - j) - 1];
        *t -= r->longer;
    }
    return NULL;
}

/* RFC 1624: the 16-bit word at w becomes v, and the checksum at check
 * (NULL: none) follows. */
static void replace_word(uint8_t *w, uint16_t v, uint8_t *check)
{
    if (check)
        store16(check, csum_replace2(load16(check), load16(w), v));
    store16(w, v);
}

/* Where the probe's upper-layer checksum is, if it has one inside the
 * bytes received and it covers the pseudo-header (pseudo) or not. A zero
 * UDP checksum over IPv4 is none (RFC 768). */
static uint8_t *find_upper_checksum(const struct probe *p, bool *pseudo)
{
    uint8_t *l4 = p->ip + p->upper_off;
    size_t at;

    *pseudo = true;
    switch (p->proto) {
    case PROTO_UDP:
        at = UDP_CHECKSUM;
        break;
    case PROTO_TCP:
        at = TCP_CHECKSUM;
        break;
    case PROTO_ICMP:
        *pseudo = false;
        /* fall through */
    case PROTO_ICMPV6:
        at = ICMP_CHECKSUM;
        break;
    default:
        return NULL;
    }
    if (p->upper_len < at + 2 || (p->proto == PROTO_UDP && p->family == 4 &&
                                  load16(l4 + at) == 0))
        return NULL;
    return l4 + at;
}

/* One router's rewrite of a probe it forwards, in place, every checksum
 * patched (RFC 1624): the IPv4 header's, and the upper layer's where the
 * changed words are in it or its pseudo-header. A UDP checksum the patch
 * leaves zero is sent as all ones (RFC 768). */
static void apply_rewrite(struct probe *p, const struct rc_hop *r)
{
    uint8_t *ip = p->ip, *l4 = ip + p->upper_off;
    uint8_t *ip_check = p->family == 4 ? ip + IPV4_CHECKSUM : NULL;
    bool pseudo;
    uint8_t *check = find_upper_checksum(p, &pseudo);
    uint8_t *addr = ip + (p->family == 4 ? IPV4_SOURCE : IPV6_SOURCE);

    if (r->rewrite & (RC_REWRITE_DSCP | RC_REWRITE_ECN)) {
        /* The DS field: IPv4 TOS octet; IPv6 Traffic Class, bits 4..11. */
        uint16_t word = load16(ip), ds = p->family == 4 ? word & 0xff : (word >> 4) & 0xff;
        uint16_t keep = (r->rewrite & RC_REWRITE_DSCP ? 0 : 0xfc) |
                        (r->rewrite & RC_REWRITE_ECN ? 0 : 0x03);

        ds = (uint16_t)((ds & keep) | (r->ds & ~keep & 0xff));
        replace_word(ip, p->family == 4 ? (uint16_t)((word & 0xff00) | ds)
                                        : (uint16_t)((word & 0xf00f) | ds << 4), ip_check);
    }
    if (r->rewrite & (RC_REWRITE_DF_SET | RC_REWRITE_DF_CLEAR)) {
        uint16_t frag = load16(ip + IPV4_FRAGMENT);

        replace_word(ip + IPV4_FRAGMENT, r->rewrite & RC_REWRITE_DF_SET
                     ? (uint16_t)(frag | IPV4_FRAG_DONT)
                     : (uint16_t)(frag & ~IPV4_FRAG_DONT), ip_check);
    }
    if (r->rewrite & RC_REWRITE_SOURCE) {
        for (size_t i = 0; i < p->addr_len; i += 2) {
            uint16_t v = load16(r->nat_addr + i);

            if (ip_check)
                store16(ip_check, csum_replace2(load16(ip_check), load16(addr + i), v));
            replace_word(addr + i, v, check && pseudo ? check : NULL);
        }
    }
    if (r->rewrite & RC_REWRITE_PORT) {
        if ((p->proto == PROTO_UDP && p->upper_len >= UDP_HEADER_LEN) ||
            (p->proto == PROTO_TCP && p->upper_len >= TCP_HEADER_LEN))
            replace_word(l4 + UDP_SOURCE_PORT, r->nat_port, check);
        else if (is_icmp(p) && p->upper_len >= ICMP_HEADER_LEN &&
                 l4[ICMP_TYPE] == (p->family == 4 ? ICMP_ECHO_REQUEST : ICMPV6_ECHO_REQUEST))
            replace_word(l4 + ICMP_ECHO_ID, r->nat_port, check);
    }
    if (check && p->proto == PROTO_UDP && load16(check) == 0)
        store16(check, 0xffff);
}

/* The probe as the router that answers it, after hop `last` - 1 on its
 * path, receives it: each router in front that rewrites what it forwards
 * has done so, in the order crossed. The sender's address, which the error
 * goes back to, is kept in sender first (p->reply_to): a NAT translates the reply's
 * outer header back, while the quote shows what crossed it (RFC 5508 4.2
 * would translate the quote back as well; route-chain's NAT is one that
 * tools such as dublin-traceroute and tracebox can see). */
static void rewrite_probe(struct probe *p, const struct rc_chain *chain, unsigned last,
                          const uint32_t hash[RC_BALANCE_COUNT], const struct rc_hop *forced,
                          uint8_t sender[IPV6_ADDR_LEN])
{
    bool kept = false;

    for (unsigned j = 1; j < last; j++) {
        const struct rc_hop *r = route_at(chain, j, hash, forced);

        if (!r->rewrite)
            continue;
        if (!kept) {
            memcpy(sender, p->src, p->addr_len);
            p->reply_to = sender;
            kept = true;
        }
        apply_rewrite(p, r);
    }
}

/* The alternative whose address is dst, if any: a probe addressed to a
 * router of an ECMP branch. */
static const struct rc_hop *find_alternative(const struct rc_chain *chain, const uint8_t *dst,
                                             size_t addr_len)
{
    for (unsigned i = chain->length + 1u; i < chain->n_hops; i++)
        if (memcmp(chain->hops[i].addr, dst, addr_len) == 0)
            return &chain->hops[i];
    return NULL;
}

/* The chapter whose address is dst, if any: a probe past the chain. At
 * most RC_MAX_CHAPTERS, sorted (rc_table_check [CHAPTERS]). */
static const struct rc_chapter *find_chapter(const struct rc_chain *chain, const uint8_t *dst,
                                             size_t addr_len)
{
    for (uint32_t i = 0; i < chain->n_chapters; i++)
        if (memcmp(chain->chapters[i].addr, dst, addr_len) == 0)
            return &chain->chapters[i];
    return NULL;
}

/* RFC 1191 4, RFC 8201 4 (RFC 1812 5.2.6 (DF), RFC 8200 5): the first router
 * before `last` on the flow's path whose next-hop MTU the probe exceeds; it
 * drops the probe and says so. IPv4 without DF is fragmented and goes on,
 * which the destination's reassembly makes invisible: it passes. */
static const struct rc_hop *find_too_big(const struct probe *p, const struct rc_chain *chain,
                                         unsigned last, const uint32_t hash[RC_BALANCE_COUNT],
                                         const struct rc_hop *forced)
{
    if (chain->min_mtu == 0 || p->ip_len <= chain->min_mtu || !p->dont_fragment)
        return NULL;
    for (unsigned j = 1; j < last; j++) {
        const struct rc_hop *r = route_at(chain, j, hash, forced);

        if (r->mtu && p->ip_len > r->mtu)
            return r;
    }
    return NULL;
}

/* The Destination Unreachable code of a chain's `end` (enum rc_end). */
static uint8_t ending_code(uint8_t family, uint8_t end)
{
    /* RFC 792, RFC 1812 5.2.7.1; RFC 4443 3.1 */
    static const uint8_t v4[] = {0, ICMP_NET_UNREACH, ICMP_HOST_UNREACH, ICMP_ADMIN_PROHIBITED};
    static const uint8_t v6[] = {0, ICMPV6_NO_ROUTE, ICMPV6_ADDR_UNREACH, ICMPV6_ADMIN_PROHIBITED};

    /* end is an enum rc_end: rc_table_check() [END]. */
    return family == 4 ? v4[end] : v6[end];
}

/* MUST / MUST NOT, in the order they are applied (docs/replies.md):
 *  - The buffer must hold headroom + len bytes, else NO_ROOM.
 *  - MUST NOT reply to a packet shorter than its headers or whose length
 *    fields lie: IPv4 IHL (< 5 is BAD_HEADER), total length; IPv6 payload
 *    length (0, a jumbogram, counts as a lie); an extension header running
 *    past the payload; an ICMP message under 8 bytes. Bytes past the
 *    length fields are padding: never read as data, never quoted.
 *  - MUST drop an IPv4 header with a bad checksum (RFC 1812 5.2.2).
 *  - MUST NOT reply to an unspecified, loopback, multicast, broadcast or
 *    (IPv6) v4-mapped source (RFC 1122 3.2.2, RFC 1812 4.3.2.7, RFC 4443
 *    2.4(e.6)), nor to a multicast or broadcast destination, including the
 *    chain prefix's all-ones address when it is /30 or shorter (RFC 4443
 *    2.4(e.3)).
 *  - Only a destination inside a chain's prefix is ours.
 *  - MUST NOT reply to a non-first fragment (RFC 1122 3.2.2, RFC 1812
 *    4.3.2.7; IPv6 alike, RFC 8200 4.5); IPv6 walks at most
 *    EXT_HEADERS_MAX extension headers.
 *  - MUST NOT reply to an ICMP error (RFC 1122 3.2.2, RFC 1812 4.3.2.7,
 *    RFC 4443 2.4(e.1)); an unknown ICMP type counts as one.
 *  - A silent answering hop sends nothing at all.
 *  - At the destination only: a first fragment is dropped (no reassembly);
 *    an informational ICMP message other than Echo Request gets nothing
 *    (RFC 4443 2.4(b)); an upper-layer checksum that fails is dropped as a
 *    host would (RFC 1122 3.2.2 / 4.1.3.4, RFC 8200 8.1, RFC 9293); a RST
 *    gets nothing (RFC 9293 3.10.7.1); IPv6 No Next Header gets nothing
 *    (RFC 8200 4.7).
 *  - Routers do not check upper-layer checksums: Time Exceeded and Host
 *    Unreachable never do.
 *  - A probe past the chain to a chapter's address (rc_chapter) is decided
 *    as a probe to the destination arriving with its TTL + start - 1; the
 *    destination then answers from the chapter's address, and quotes show
 *    the probe as received.
 *  - A chain with per-hop properties (rc_hop): a hash of the probe picks
 *    the router of each hop that has ECMP alternatives, of its flow, the
 *    probe itself or its destination as the hop balances; the first router in front of the
 *    answering one whose MTU the probe exceeds answers instead (IPv4 only
 *    with DF: RFC 1191 4, RFC 1812 5.2.6; IPv6: RFC 8201 4); the last hop
 *    of a chain with an `end` answers Destination Unreachable with its code
 *    where it would answer as a host or for the addresses past it; errors
 *    from a router with an extension structure carry it (RFC 4884), except
 *    Packet Too Big and IPv6 Parameter Problem, which have no length field. */
int rc_reply(uint8_t *buf, size_t headroom, size_t len, size_t cap,
             const struct rc_table *table, size_t *off, struct rc_where *where)
{
    struct probe p;
    const struct rc_chain *chain;
    const struct rc_hop *router = NULL, *forced = NULL, *too_big = NULL, *further = NULL;
    const struct rc_chapter *chapter = NULL;
    struct extension ext = {NULL, 0, 0, 0, 0};
    uint8_t hop_addr[IPV6_ADDR_LEN], sender[IPV6_ADDR_LEN], chapter_dst[IPV6_ADDR_LEN];
    const uint8_t *source = hop_addr;
    unsigned t, k, hop;
    uint32_t hash[RC_BALANCE_COUNT] = {0, 0, 0};
    enum answer answer;
    int drop, ttl;
    bool silent;

    if (headroom > cap || len > cap - headroom)
        return -RC_DROP_NO_ROOM;
    if (len == 0)
        return -RC_DROP_TRUNCATED;
    switch (ip_version(buf + headroom)) {
    case 4:
        drop = parse_ipv4(buf + headroom, len, table, &p);
        break;
    case 6:
        drop = parse_ipv6(buf + headroom, len, table, &p);
        break;
    default:
        return -RC_DROP_BAD_VERSION;
    }
    if (drop)
        return -drop;
    drop = check_icmp_error(&p);
    if (drop)
        return -drop;
    p.room = cap - headroom;

    /* The chain rule. t = 0 never arrives over a real path; a router would
     * have answered it at t = 1. */
    chain = p.chain;
    t = p.ttl ? p.ttl : 1;
    k = measure_distance(p.dst, chain->host, p.addr_len);
    /* A chapter: only a probe past the chain looks (the plain path does
     * not), and one to a chapter's address is decided as a probe to the
     * destination with the TTL it would have there, start - 1 hops on.
     * Only the host that answers at the end answers from dst, as a host
     * does, and the quotes show the probe as received. */
    if (k > chain->length && chain->n_chapters) {
        chapter = find_chapter(chain, p.dst, p.addr_len);
        if (chapter) {
            add_to_address(chapter_dst, chain->host, p.addr_len, chain->length);
            k = chain->length;
            t += chapter->start - 1u;
        }
    }
    if (chain->hops && chain->n_hops > chain->length + 1u) {
        /* Only a chain with ECMP alternatives hashes the probe. A probe to
         * an alternative's own address is for a router of hop k, reached
         * over the hops in front of it. */
        if (chapter)
            hash_probe(&p, chapter_dst, (uint8_t)(t > 255 ? 255 : t), hash);
        else
            hash_probe(&p, p.dst, p.ttl, hash);
        if (k == 0 || k > chain->length)
            forced = find_alternative(chain, p.dst, p.addr_len);
        if (forced)
            k = forced->hop;
        if (chain->longer && k > 0)
            further = walk_branches(chain, &t, k <= chain->length ? k : chain->length,
                                    hash, forced);
    }
    if (k == 0) {
        answer = ANSWER_HOST_UNREACH;                 /* at or below the host */
        hop = 1;
    } else if (k <= chain->length) {
        answer = t >= k ? ANSWER_DESTINATION : ANSWER_TIME_EXCEEDED;
        hop = t >= k ? k : t;
    } else if (t < chain->length) {
        answer = ANSWER_TIME_EXCEEDED;                /* beyond, still on the way */
        hop = t;
    } else {
        answer = ANSWER_HOST_UNREACH;                 /* beyond: the last hop knows */
        hop = chain->length;
    }
    if (!chain->hops) {
        silent = chain->hop_flags[hop] & RC_HOP_SILENT;
        /* As if each hop sent with reply_ttl and the way back crossed the
         * hops in front of it, so traceroute --back sees a consistent path. */
        ttl = (int)chain->reply_ttl - (int)(hop - 1);
        if (ttl < 1)
            ttl = 1;
        if (answer != ANSWER_DESTINATION)             /* a host answers from D */
            add_to_address(hop_addr, chain->host, p.addr_len, hop);
    } else {
        /* Hops in front of the one that answers forward the probe, and the
         * first whose MTU it exceeds answers instead (k > 0: forwarded). */
        if (k > 0 && !further)
            too_big = find_too_big(&p, chain, hop, hash, forced);
        if (further) {
            answer = ANSWER_TIME_EXCEEDED;
            hop = further->hop;
            router = further;
        } else if (too_big) {
            answer = ANSWER_TOO_BIG;
            hop = too_big->hop;
            router = too_big;
        } else {
            router = route_at(chain, hop, hash, forced);
        }
        /* The last hop of a chain with an `end` is a router with no route
         * to what lies past it, its own address included. */
        if (chain->end != RC_END_HOST && !forced && hop == chain->length &&
            (answer == ANSWER_DESTINATION || answer == ANSWER_HOST_UNREACH) && k > 0)
            answer = ANSWER_ENDING;
        silent = router->flags & RC_HOP_SILENT;
        ttl = router->reply_ttl;                      /* computed with the table */
        source = router->addr;
        if (router->ext_len) {
            ext.bytes = chain->ext + router->ext_off;
            ext.len = router->ext_len;
            ext.sum = router->ext_sum;
            ext.n_labels = router->n_labels;
            /* Uniform model (RFC 3443): the label TTL is the TTL the probe
             * arrived with at this hop. */
            ext.label_ttl = further ? 1 : (uint8_t)(t - hop + 1 > 255 ? 255 : t - hop + 1);
        }
    }
    if (silent)
        return -RC_DROP_SILENT;
    /* What routers in front rewrote shows in the quotes of errors: every
     * answer but the destination's, and of that, to UDP and other
     * protocols (Port or Protocol Unreachable). Echo Replies, RSTs and
     * SYN-ACKs go back through the NAT, which translates them back. */
    if (chain->hops && chain->rewrites && k > 0 &&
        (answer != ANSWER_DESTINATION || (!is_icmp(&p) && p.proto != PROTO_TCP)))
        rewrite_probe(&p, chain, further ? hop + 1 : hop, hash, forced, sender);
    where->chain = (uint32_t)(chain - table->chains);
    where->chapter = chapter ? (uint32_t)(chapter - chain->chapters) + 1u : 0;
    /* rc_hop and rc_hop_timing number routers alike: k for hop k, then the
     * '+' alternatives. */
    where->router = router ? (uint32_t)(router - chain->hops) : hop;

    /* Count where it is decided: each answer names its kind here. */
    switch (answer) {
    case ANSWER_DESTINATION:
        return answer_as_host(&p, headroom, (uint8_t)ttl, &ext, off, &where->kind);
    case ANSWER_TIME_EXCEEDED:                        /* RFC 1812 5.3.1, RFC 4443 3.3 */
        where->kind = RC_KIND_TIME_EXCEEDED;
        return build_error(&p, headroom, source, (uint8_t)ttl,
                           p.family == 4 ? ICMP_TIME_EXCEEDED : ICMPV6_TIME_EXCEEDED,
                           p.family == 4 ? ICMP_TTL_EXCEEDED : ICMPV6_HOP_LIMIT_EXCEEDED,
                           0, &ext, off);
    case ANSWER_TOO_BIG:
        where->kind = RC_KIND_TOO_BIG;
        if (p.family == 4)                            /* RFC 1191 4, RFC 4884 4 */
            return build_error(&p, headroom, source, (uint8_t)ttl, ICMP_DEST_UNREACH,
                               ICMP_FRAG_NEEDED, router->mtu, &ext, off);
        /* RFC 4443 3.2, RFC 8201 4: no length field, so no extension. */
        return build_error(&p, headroom, source, (uint8_t)ttl, ICMPV6_PACKET_TOO_BIG, 0,
                           router->mtu, NULL, off);
    case ANSWER_ENDING:                               /* RFC 1812 5.2.7.1, RFC 4443 3.1 */
        where->kind = RC_KIND_ENDING;
        return build_error(&p, headroom, source, (uint8_t)ttl,
                           p.family == 4 ? ICMP_DEST_UNREACH : ICMPV6_DEST_UNREACH,
                           ending_code(p.family, chain->end), 0, &ext, off);
    case ANSWER_HOST_UNREACH:                         /* RFC 1812 5.2.7.1, RFC 4443 3.1 */
    default:
        where->kind = RC_KIND_HOST_UNREACH;
        return build_error(&p, headroom, source, (uint8_t)ttl,
                           p.family == 4 ? ICMP_DEST_UNREACH : ICMPV6_DEST_UNREACH,
                           p.family == 4 ? ICMP_HOST_UNREACH : ICMPV6_ADDR_UNREACH,
                           0, &ext, off);
    }
}
