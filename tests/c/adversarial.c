/* Adversarial inputs for the reply core under AddressSanitizer and UBSan:
 * every probe in the file argv[1] (2-byte big-endian length, then the
 * bytes) truncated at every length, with header bytes mutated (lying
 * lengths, IHL, extension-header lengths), with every headroom that
 * matters; then long extension-header chains and random bytes. Buffers are
 * sized exactly, so any access outside them aborts. */
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chains.h"

static unsigned long runs, replies;

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint32_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static void run(const uint8_t *data, size_t len, size_t headroom, const struct rc_table *t)
{
    runs++;
    if (run_exact(data, len, headroom, t) > 0)
        replies++;
}

static void mutate_and_run(const uint8_t *probe, size_t len, const struct rc_table *t)
{
    static const size_t headrooms[] = {RC_HEADROOM, 0, 1, 27, 28, 47, 48};
    uint8_t copy[65536];
    size_t reach = len < 128 ? len : 128;

    for (size_t h = 0; h < sizeof headrooms / sizeof headrooms[0]; h++)
        run(probe, len, headrooms[h], t);
    for (size_t cut = 0; cut <= len; cut++)
        run(probe, cut, RC_HEADROOM, t);
    for (size_t i = 0; i < reach; i++) {
        uint8_t values[] = {0x00, 0xff, (uint8_t)(probe[i] ^ 0x80), (uint8_t)(probe[i] + 1),
                            (uint8_t)(probe[i] - 1), (uint8_t)next_random()};

        for (size_t v = 0; v < sizeof values; v++) {
            memcpy(copy, probe, len);
            copy[i] = values[v];
            run(copy, len, RC_HEADROOM, t);
            fix_ipv4_checksum(copy, len);
            run(copy, len, RC_HEADROOM, t);
            run(copy, len - (len > 0 ? next_random() % (len < 64 ? len : 64) : 0), 28, t);
        }
    }
}

/* An IPv6 probe to the test chain's destination behind n extension
 * headers of the given kinds; every truncation is tried too. */
static void run_extension_chains(const struct rc_table *t)
{
    static const uint8_t kinds[] = {0, 43, 44, 51, 60};
    uint8_t p[40 + 21 * 16 + 16];

    for (unsigned n = 0; n <= 20; n++) {
        for (unsigned pattern = 0; pattern < 8; pattern++) {
            size_t off = 40;
            uint8_t *next = &p[6];

            memset(p, 0, sizeof p);
            p[0] = 0x60;
            p[7] = 64;
            p[8] = 0x20, p[9] = 0x01, p[10] = 0x0d, p[11] = 0xb8, p[23] = 7;
            memcpy(p + 24, test_chains[3].host, 16);
            p[39] += 2;
            for (unsigned i = 0; i < n; i++) {
                uint8_t kind = kinds[(i + pattern) % sizeof kinds];

                *next = kind;
                next = &p[off];
                if (kind == 44) {
                    p[off + 3] = pattern & 1;          /* M flag on some */
                    off += 8;
                } else if (kind == 51) {
                    p[off + 1] = 2;                    /* (2 + 2) * 4 = 16 */
                    off += 16;
                } else {
                    p[off + 1] = 1;                    /* (1 + 1) * 8 = 16 */
                    off += 16;
                }
            }
            *next = 17;
            p[off + 5] = 16;                           /* UDP length 16 */
            off += 16;
            p[4] = (uint8_t)((off - 40) >> 8);
            p[5] = (uint8_t)(off - 40);
            for (size_t cut = 0; cut <= off; cut++)
                run(p, cut, RC_HEADROOM, t);
            for (unsigned hl = 0; hl < 4; hl++) {
                p[7] = (uint8_t)hl;
                run(p, off, RC_HEADROOM, t);
            }
        }
    }
}

static void run_random_bytes(const struct rc_table *t, unsigned count)
{
    uint8_t p[1600];

    for (unsigned i = 0; i < count; i++) {
        size_t len = next_random() % sizeof p;

        for (size_t j = 0; j < len; j++)
            p[j] = (uint8_t)next_random();
        if (len >= 40 && (i & 1)) {
            if (i & 2) {
                p[0] = 0x60;
                memcpy(p + 24, test_chains[3].host, 15);
            } else {
                p[0] = (uint8_t)(0x40 | (p[0] & 0x0f));
                memcpy(p + 16, test_chains[i & 4 ? 0 : 1].host, 3);
                fix_ipv4_checksum(p, len);
            }
        }
        run(p, len, (i & 8) ? RC_HEADROOM : next_random() % 64, t);
    }
}

int main(int argc, char **argv)
{
    const struct rc_table *t = make_test_table();
    static uint8_t probe[65536];
    unsigned long probes = 0;
    FILE *f;
    int hi, lo;

    if (argc != 2 || !(f = fopen(argv[1], "rb"))) {
        fprintf(stderr, "usage: adversarial PROBES\n");
        return 2;
    }
    while ((hi = fgetc(f)) != EOF && (lo = fgetc(f)) != EOF) {
        size_t len = (size_t)(hi << 8 | lo);

        if (fread(probe, 1, len, f) != len)
            return 2;
        mutate_and_run(probe, len, t);
        probes++;
    }
    fclose(f);
    run_extension_chains(t);
    run_random_bytes(t, 200000);
    printf("probes %lu runs %lu replies %lu kinds", probes, runs, replies);
    for (int k = 0; k < RC_KIND_COUNT; k++)
        printf(" %lu", test_kinds[k]);
    printf("\n");
    return 0;
}
