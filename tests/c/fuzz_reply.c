/* libFuzzer target for the reply core. The first input byte chooses the
 * headroom and whether to repair the IPv4 header checksum (so mutations
 * get past it); the rest is the packet, in a buffer with no slack. */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "chains.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct rc_table *table;
    uint8_t *packet;

    if (!table)
        table = make_test_table();
    if (size < 1)
        return 0;
    packet = malloc(size);
    if (!packet)
        abort();
    memcpy(packet, data + 1, size - 1);
    if (data[0] & 0x80)
        fix_ipv4_checksum(packet, size - 1);
    run_exact(packet, size - 1, data[0] & 0x40 ? RC_HEADROOM : data[0] & 0x3f, table);
    free(packet);
    return 0;
}
