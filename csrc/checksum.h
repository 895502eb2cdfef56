/* The Internet checksum. A sum is kept unfolded in 64 bits while bytes are
 * added, folded once at the end. An edit of a packet patches its checksum
 * (RFC 1624); only bytes that are new to a reply are summed. */
#ifndef RC_CHECKSUM_H
#define RC_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/* RFC 1071 2(A),(C): add n bytes as big-endian 16-bit words, the odd last
 * byte padded with zero. Adding 32-bit words is the same sum once folded
 * (2^16 = 1 mod 2^16 - 1), at half the additions. Only the last piece of a
 * message may have an odd length. */
static inline uint64_t csum_add(uint64_t sum, const uint8_t *p, size_t n)
{
    size_t i = 0;

    for (; i + 4 <= n; i += 4)
        sum += (uint32_t)p[i] << 24 | (uint32_t)p[i + 1] << 16 |
               (uint32_t)p[i + 2] << 8 | p[i + 3];
    if (i + 2 <= n) {
        sum += (uint32_t)p[i] << 8 | p[i + 1];
        i += 2;
    }
    if (i < n)
        sum += (uint32_t)p[i] << 8;
    return sum;
}

/* RFC 1071 2(B): end-around carry down to 16 bits. Nonzero stays nonzero. */
static inline uint16_t csum_fold(uint64_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)sum;
}

/* The value for the checksum field of data whose sum (field zeroed) is sum. */
static inline uint16_t csum_finish(uint64_t sum)
{
    return (uint16_t)~csum_fold(sum);
}

/* RFC 1071: data summed with its checksum field in place is valid when the
 * folded sum is all ones. */
static inline int csum_is_valid(uint64_t sum)
{
    return csum_fold(sum) == 0xffff;
}

/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') when a 16-bit word goes from m to
 * m'. From a checksum other than 0xffff it never yields 0xffff, so it agrees
 * bit for bit with a full recomputation except when the new data is all
 * zero, where a full sum gives 0xffff (RFC 1624 3; see the echo reply). */
static inline uint16_t csum_replace2(uint16_t check, uint16_t old, uint16_t new)
{
    uint64_t sum = (uint16_t)~check;

    sum += (uint16_t)~old;
    sum += new;
    return (uint16_t)~csum_fold(sum);
}

#endif
