/* The wire format: every offset, length, type and code route-chain reads or
 * writes, and nothing else. Offsets are from the start of the header they
 * name; multi-byte fields are big-endian and read through load16/load32 so
 * no header is ever cast to a struct (no alignment or aliasing questions). */
#ifndef RC_WIRE_H
#define RC_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* RFC 791 3.1: the IPv4 header without options. */
enum ipv4_layout {
    IPV4_VERSION_IHL = 0,
    IPV4_TOS = 1,
    IPV4_TOTAL_LENGTH = 2,
    IPV4_ID = 4,
    IPV4_FRAGMENT = 6,           /* flags (3 bits) and offset (13 bits) */
    IPV4_TTL = 8,
    IPV4_PROTOCOL = 9,
    IPV4_CHECKSUM = 10,
    IPV4_SOURCE = 12,
    IPV4_DESTINATION = 16,
    IPV4_HEADER_LEN = 20,
    IPV4_ADDR_LEN = 4,
    IPV4_VERSION_IHL_PLAIN = 0x45, /* version 4, IHL 5: no options */
    IPV4_IHL_MASK = 0x0f,        /* the low nibble of IPV4_VERSION_IHL */
    IPV4_IHL_UNIT = 4            /* IHL counts 32-bit words */
};

enum ipv4_fragment_bits {
    IPV4_FRAG_DONT = 0x4000,
    IPV4_FRAG_MORE = 0x2000,
    IPV4_FRAG_OFFSET_MASK = 0x1fff
};

/* RFC 8200 3: the IPv6 header. */
enum ipv6_layout {
    IPV6_VERSION_CLASS_FLOW = 0,
    IPV6_PAYLOAD_LENGTH = 4,
    IPV6_NEXT_HEADER = 6,
    IPV6_HOP_LIMIT = 7,
    IPV6_SOURCE = 8,
    IPV6_DESTINATION = 24,
    IPV6_HEADER_LEN = 40,
    IPV6_ADDR_LEN = 16,
    IPV6_VERSION_WORD = 0x60000000, /* version 6, class 0, flow label 0 */
    IPV6_FLOW_LABEL_MASK = 0x000fffff, /* the low 20 bits of that word */
    IPV6_SITE_PREFIX_LEN = 8     /* octets of a /64: RFC 4291 2.5.4's site */
};

/* RFC 8200 4: extension headers. Every one starts with Next Header and a
 * length byte; the Fragment header is fixed at 8 bytes; AH (RFC 4302 2.2)
 * counts its length in 4-byte units minus 2, the others in 8-byte units
 * minus 1. */
enum ipv6_ext_layout {
    EXT_NEXT_HEADER = 0,
    EXT_LENGTH = 1,
    EXT_MIN_LEN = 8,
    EXT_UNIT = 8,
    AH_UNIT = 4,
    FRAG_OFFSET_FLAGS = 2,       /* offset (13 bits), reserved (2), M (1) */
    FRAG_HEADER_LEN = 8,
    FRAG_OFFSET_SHIFT = 3,
    FRAG_MORE = 0x0001
};

/* IANA protocol numbers: the IPv4 Protocol and IPv6 Next Header values the
 * core acts on. */
enum ip_protocol {
    PROTO_HOP_BY_HOP = 0,
    PROTO_ICMP = 1,
    PROTO_TCP = 6,
    PROTO_UDP = 17,
    PROTO_ROUTING = 43,
    PROTO_FRAGMENT = 44,
    PROTO_AH = 51,
    PROTO_ICMPV6 = 58,
    PROTO_NO_NEXT_HEADER = 59,
    PROTO_DEST_OPTIONS = 60
};

/* RFC 792 / RFC 4443 2.1: the first 8 bytes of every ICMP and ICMPv6
 * message; errors leave bytes 4..7 zero except Parameter Problem's pointer. */
enum icmp_layout {
    ICMP_TYPE = 0,
    ICMP_CODE = 1,
    ICMP_CHECKSUM = 2,
    ICMP_REST = 4,               /* unused, or ICMPv6 Parameter Problem pointer */
    ICMP_ECHO_ID = 4,            /* Echo Request identifier: a NAT's "port" (RFC 5508 3.1) */
    ICMP_HEADER_LEN = 8
};

/* RFC 792 and successors. Only the informational types listed here are
 * known; every other type is treated as an error (RFC 1122 3.2.2). */
enum icmp_type {
    ICMP_ECHO_REPLY = 0,
    ICMP_DEST_UNREACH = 3,
    ICMP_ECHO_REQUEST = 8,
    ICMP_ROUTER_ADVERT = 9,      /* RFC 1256 */
    ICMP_ROUTER_SOLICIT = 10,
    ICMP_TIME_EXCEEDED = 11,
    ICMP_TIMESTAMP = 13,
    ICMP_TIMESTAMP_REPLY = 14,
    ICMP_INFO_REQUEST = 15,
    ICMP_INFO_REPLY = 16,
    ICMP_ADDRESS_MASK = 17,      /* RFC 950 */
    ICMP_ADDRESS_MASK_REPLY = 18,
    ICMP_EXT_ECHO_REQUEST = 42,  /* RFC 8335 */
    ICMP_EXT_ECHO_REPLY = 43
};

enum icmp_code {
    ICMP_TTL_EXCEEDED = 0,       /* under ICMP_TIME_EXCEEDED */
    ICMP_NET_UNREACH = 0,        /* under ICMP_DEST_UNREACH */
    ICMP_HOST_UNREACH = 1,
    ICMP_PROTO_UNREACH = 2,
    ICMP_PORT_UNREACH = 3,
    ICMP_FRAG_NEEDED = 4,        /* RFC 1191 4: Next-Hop MTU in bytes 6..7 */
    ICMP_ADMIN_PROHIBITED = 13   /* RFC 1812 5.2.7.1 */
};

enum icmpv6_type {
    ICMPV6_DEST_UNREACH = 1,
    ICMPV6_PACKET_TOO_BIG = 2,      /* RFC 4443 3.2: MTU in bytes 4..7 */
    ICMPV6_TIME_EXCEEDED = 3,
    ICMPV6_PARAM_PROBLEM = 4,
    ICMPV6_ECHO_REQUEST = 128,
    ICMPV6_ECHO_REPLY = 129,
    /* 128..161 are the informational types IANA has assigned (161: RFC 8335
     * Extended Echo Reply); any other type is treated as an error. */
    ICMPV6_INFO_FIRST = 128,
    ICMPV6_INFO_LAST_KNOWN = 161
};

enum icmpv6_code {
    ICMPV6_HOP_LIMIT_EXCEEDED = 0,  /* under ICMPV6_TIME_EXCEEDED */
    ICMPV6_NO_ROUTE = 0,            /* under ICMPV6_DEST_UNREACH */
    ICMPV6_ADMIN_PROHIBITED = 1,
    ICMPV6_ADDR_UNREACH = 3,
    ICMPV6_PORT_UNREACH = 4,
    ICMPV6_UNKNOWN_NEXT_HEADER = 1  /* under ICMPV6_PARAM_PROBLEM */
};

/* RFC 768. */
enum udp_layout {
    UDP_SOURCE_PORT = 0,
    UDP_LENGTH = 4,
    UDP_CHECKSUM = 6,
    UDP_HEADER_LEN = 8
};

/* RFC 9293 3.1. */
enum tcp_layout {
    TCP_SOURCE_PORT = 0,
    TCP_DEST_PORT = 2,
    TCP_SEQ = 4,
    TCP_ACK = 8,
    TCP_DATA_OFFSET = 12,        /* high nibble, in 4-byte words */
    TCP_FLAGS = 13,
    TCP_WINDOW = 14,
    TCP_CHECKSUM = 16,
    TCP_URGENT = 18,
    TCP_HEADER_LEN = 20,
    TCP_DATA_OFFSET_PLAIN = 0x50, /* 5 words: no options */
    TCP_DATA_OFFSET_SHIFT = 4,
    TCP_DATA_OFFSET_UNIT = 4     /* the data offset counts 32-bit words */
};

enum tcp_flag {
    TCP_FIN = 0x01,
    TCP_SYN = 0x02,
    TCP_RST = 0x04,
    TCP_ACK_FLAG = 0x10
};

/* RFC 9293 3.2: the Maximum Segment Size option, the one a SYN-ACK carries. */
enum tcp_option {
    TCP_OPT_KIND = 0,            /* offsets in an option */
    TCP_OPT_LENGTH = 1,
    TCP_OPT_MSS_VALUE = 2,
    TCP_OPT_MSS = 2,
    TCP_OPT_MSS_LEN = 4,
    TCP_SYN_ACK_HEADER_LEN = TCP_HEADER_LEN + TCP_OPT_MSS_LEN,
    TCP_DATA_OFFSET_MSS = 0x60   /* 6 words: the MSS option */
};

/* RFC 4884: the length of the "original datagram" field, in the ICMP
 * header, of Time Exceeded and Destination Unreachable; when an extension
 * structure follows, the field is zero-padded to a whole number of units
 * and to at least 128 octets (RFC 4884 4). */
enum icmp_ext_length {
    ICMP_LENGTH = 5,             /* ICMPv4: one octet, in 32-bit words */
    ICMPV6_LENGTH = 4,           /* ICMPv6: one octet, in 64-bit words */
    ICMP_LENGTH_UNIT = 4,
    ICMPV6_LENGTH_UNIT = 8,
    ICMP_EXT_MIN_FIELD = 128
};

/* RFC 4884 7: the extension structure: a 4-byte header (version 2 in the
 * top nibble, checksum over the whole structure), then objects, each with
 * a 4-byte header (length, class, C-type). RFC 4950: the MPLS object's
 * label stack entries (RFC 3032 2.1: label 20 bits, TC 3, S 1, TTL 8). */
enum icmp_ext_layout {
    ICMP_EXT_VERSION_SHIFT = 4,  /* the version is the first octet's top nibble */
    ICMP_EXT_VERSION = 2,
    ICMP_EXT_CHECKSUM = 2,
    ICMP_EXT_HEADER_LEN = 4,
    ICMP_EXT_OBJECT_LENGTH = 0,  /* offsets in an object header */
    ICMP_EXT_OBJECT_CLASS = 2,
    ICMP_EXT_OBJECT_HEADER_LEN = 4,
    ICMP_EXT_CLASS_MPLS = 1,     /* RFC 4950 7: the incoming MPLS label stack */
    MPLS_ENTRY_LEN = 4,
    MPLS_ENTRY_TTL = 3
};

/* The smallest MTU a link may have: RFC 791 (IPv4), RFC 8200 5 (IPv6). */
enum ip_min_mtu {
    IPV4_MIN_MTU = 68,
    IPV6_MIN_MTU = 1280
};

/* Limits on what an ICMP error may carry. */
enum icmp_error_limit {
    IPV4_ERROR_MAX = 576,        /* RFC 1812 4.3.2.3 */
    IPV6_ERROR_MAX = 1280        /* RFC 4443 2.4(c) */
};

/* The version nibble, the first thing of IPv4 and IPv6 alike. */
static inline unsigned ip_version(const uint8_t *ip)
{
    return ip[IPV4_VERSION_IHL] >> 4;
}

/* RFC 791 3.1: the IPv4 header's length in octets, options included. */
static inline size_t ipv4_header_len(const uint8_t *ip)
{
    return (size_t)(ip[IPV4_VERSION_IHL] & IPV4_IHL_MASK) * IPV4_IHL_UNIT;
}

/* RFC 9293 3.1: the TCP header's length in octets, options included. */
static inline size_t tcp_header_len(const uint8_t *tcp)
{
    return (size_t)(tcp[TCP_DATA_OFFSET] >> TCP_DATA_OFFSET_SHIFT) * TCP_DATA_OFFSET_UNIT;
}

/* IPv4 224/4 (RFC 5771), multicast. */
static inline int ipv4_is_multicast(const uint8_t *addr)
{
    return addr[0] >> 4 == 0xe;
}

static inline uint16_t load16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void store16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void store32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* RFC 8200 3, RFC 6437: the IPv6 flow label. */
static inline uint32_t ipv6_flow_label(const uint8_t *ip)
{
    return load32(ip + IPV6_VERSION_CLASS_FLOW) & IPV6_FLOW_LABEL_MASK;
}

#endif
