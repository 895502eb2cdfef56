/* Included once per program (routechain.h has no include guards).
 * The chain table the sanitizer driver and the fuzz target run against. It
 * mirrors tests/test_reply.py's CHAIN4, CHAIN6, SMALL4 and LONG4, so the
 * probes that test writes reach every path. Test code: globals are fine. */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "routechain.h"

static struct rc_chain test_chains[4];
static struct rc_table test_table = {4, test_chains};

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

    /* In table order: by family, then first address (routechain.h). */
    set_chain(&test_chains[0], 4, 24, 5, 64, chain4, 3);
    set_chain(&test_chains[1], 4, 15, 255, 2, long4, 0);
    set_chain(&test_chains[2], 4, 30, 1, 64, small4, 0);
    set_chain(&test_chains[3], 6, 64, 5, 64, chain6, 3);
    return &test_table;
}

/* Run the core on data with exactly headroom bytes in front and not one
 * byte of slack behind, so AddressSanitizer sees any access outside, and
 * check what it claims about the reply. */
static int run_exact(const uint8_t *data, size_t len, size_t headroom, const struct rc_table *t)
{
    size_t cap = headroom + len, off = (size_t)-1;
    uint8_t *buf = malloc(cap ? cap : 1);
    int n;

    if (!buf)
        abort();
    memcpy(buf + headroom, data, len);
    n = rc_reply(buf, headroom, len, cap, t, &off);
    if (n > 0) {
        if (off > cap || (size_t)n > cap - off || n < 20)
            abort();
        if (rc_reply_kind(buf + off, (size_t)n) < 0)
            abort();
    } else if (n < -(int)RC_DROP_COUNT || n == 0) {
        abort();
    }
    free(buf);
    return n;
}

/* RFC 1071 over an IPv4 header, so mutations get past the header check. */
static void fix_ipv4_checksum(uint8_t *p, size_t len)
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
