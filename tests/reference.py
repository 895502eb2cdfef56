"""A slow, obviously correct reference for the reply core.

Written from docs/replies.md, not from csrc/reply.c: every reply is built
field by field with struct and summed in full, addresses are Python ints,
and the rules are checked in the documented order. The C core must agree
with it byte for byte.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Sequence

from routechain.chain import Chain
from routechain.core import HEADROOM, Drop

ICMP_INFO_V4 = {0, 8, 9, 10, 13, 14, 15, 16, 17, 18, 42, 43}
ICMP_INFO_V6 = set(range(128, 162))
IPV6_EXTENSIONS = {0, 43, 44, 51, 60}
MAX_EXTENSIONS = 8


def checksum(data: bytes) -> int:
    """RFC 1071 over data; 0 when data already carries a valid checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xffff:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff


def pseudo_v4(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    return src + dst + struct.pack("!BBH", 0, proto, length)


def pseudo_v6(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    return src + dst + struct.pack("!I3xB", length, proto)


def ipv4_header(total: int, ident: int, ttl: int, proto: int, src: bytes, dst: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, 0, ttl, proto, 0, src, dst)
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:]


def ipv6_header(payload: int, next_header: int, hop_limit: int, src: bytes, dst: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, payload, next_header, hop_limit, src, dst)


class Probe:
    """The fields of a received packet the rules look at."""

    def __init__(self, family: int, packet: bytes, src: bytes, dst: bytes, ttl: int,
                 proto: int, upper: bytes, ident: int = 0, first_fragment: bool = False,
                 next_header_at: int = 6) -> None:
        self.family = family
        self.packet = packet          # as received, trailing padding cut off
        self.src = src
        self.dst = dst
        self.ttl = ttl
        self.proto = proto
        self.upper = upper
        self.ident = ident            # the ID an IPv4 reply carries
        self.first_fragment = first_fragment
        self.next_header_at = next_header_at


def find_chain(chains: Sequence[Chain], family: int, dst: bytes) -> Chain | None:
    address = ipaddress.ip_address(dst)
    for chain in chains:
        if chain.length > 0 and chain.family == family and address in chain.network:
            return chain
    return None


def parse_v4(packet: bytes, chains: Sequence[Chain]) -> Probe | Drop:
    if len(packet) < 20:
        return Drop.TRUNCATED
    (ver_ihl, _tos, total, ident, fragment, ttl, proto, header_sum,
     src, dst) = struct.unpack("!BBHHHBBH4s4s", packet[:20])
    ihl = (ver_ihl & 0x0f) * 4
    if ihl < 20:
        return Drop.BAD_HEADER
    if ihl > len(packet) or total > len(packet) or total < ihl:
        return Drop.TRUNCATED
    if checksum(packet[:ihl]) != 0:
        return Drop.BAD_HEADER
    if src[0] in (0, 127) or src[0] >= 224:
        return Drop.BAD_SOURCE
    if ipaddress.IPv4Address(dst).is_multicast or dst == b"\xff" * 4:
        return Drop.MULTICAST
    chain = find_chain(chains, 4, dst)
    if chain is None:
        return Drop.NOT_OURS
    if chain.network.prefixlen <= 30 and ipaddress.IPv4Address(dst) == chain.network.broadcast_address:
        return Drop.MULTICAST
    if fragment & 0x1fff:
        return Drop.FRAGMENT
    packet = packet[:total]
    return Probe(4, packet, src, dst, ttl, proto, packet[ihl:], ident=ident ^ header_sum,
                 first_fragment=bool(fragment & 0x2000))


def parse_v6(packet: bytes, chains: Sequence[Chain]) -> Probe | Drop:
    if len(packet) < 40:
        return Drop.TRUNCATED
    _word, payload, next_header, hop_limit, src, dst = struct.unpack("!IHBB16s16s", packet[:40])
    if payload == 0 or 40 + payload > len(packet):
        return Drop.TRUNCATED
    source = ipaddress.IPv6Address(src)
    if (source.is_multicast or source == ipaddress.IPv6Address("::")
            or source == ipaddress.IPv6Address("::1") or source.ipv4_mapped is not None):
        return Drop.BAD_SOURCE
    if ipaddress.IPv6Address(dst).is_multicast:
        return Drop.MULTICAST
    if find_chain(chains, 6, dst) is None:
        return Drop.NOT_OURS
    packet = packet[:40 + payload]
    at, next_header_at, first_fragment, walked = 40, 6, False, 0
    while next_header in IPV6_EXTENSIONS:
        if next_header == 0 and walked:
            break  # Hop-by-Hop anywhere but first: an unrecognised Next Header
        if walked == MAX_EXTENSIONS:
            return Drop.EXT_HEADERS
        walked += 1
        if len(packet) - at < 8:
            return Drop.TRUNCATED
        if next_header == 44:
            size = 8
        elif next_header == 51:
            size = (packet[at + 1] + 2) * 4
        else:
            size = (packet[at + 1] + 1) * 8
        if at + size > len(packet):
            return Drop.TRUNCATED
        if next_header == 44:
            offset_flags = struct.unpack("!H", packet[at + 2:at + 4])[0]
            if offset_flags >> 3:
                return Drop.FRAGMENT
            first_fragment = bool(offset_flags & 1)
        next_header_at = at
        next_header = packet[at]
        at += size
    return Probe(6, packet, src, dst, hop_limit, next_header, packet[at:],
                 first_fragment=first_fragment, next_header_at=next_header_at)


def error_reply(probe: Probe, hop: bytes, ttl: int, icmp_type: int, code: int,
                rest: int, headroom: int) -> bytes | Drop:
    if probe.family == 4:
        if headroom < 28:
            return Drop.NO_ROOM
        quote = probe.packet[:576 - 28]
        message = struct.pack("!BBHI", icmp_type, code, 0, rest) + quote
        message = message[:2] + struct.pack("!H", checksum(message)) + message[4:]
        return ipv4_header(20 + len(message), probe.ident, ttl, 1, hop, probe.src) + message
    if headroom < 48:
        return Drop.NO_ROOM
    quote = probe.packet[:1280 - 48]
    message = struct.pack("!BBHI", icmp_type, code, 0, rest) + quote
    total = checksum(pseudo_v6(hop, probe.src, 58, len(message)) + message)
    message = message[:2] + struct.pack("!H", total) + message[4:]
    return ipv6_header(len(message), 58, ttl, hop, probe.src) + message


def with_ip_header(probe: Probe, ttl: int, proto: int, upper: bytes) -> bytes:
    if probe.family == 4:
        return ipv4_header(20 + len(upper), probe.ident, ttl, proto, probe.dst, probe.src) + upper
    return ipv6_header(len(upper), proto, ttl, probe.dst, probe.src) + upper


def pseudo(probe: Probe, proto: int, length: int) -> bytes:
    make = pseudo_v4 if probe.family == 4 else pseudo_v6
    return make(probe.src, probe.dst, proto, length)


def host_reply(probe: Probe, ttl: int, headroom: int) -> bytes | Drop:
    v4 = probe.family == 4
    upper = probe.upper
    if probe.first_fragment:
        return Drop.FRAGMENT
    if probe.proto == (1 if v4 else 58):
        if upper[0] != (8 if v4 else 128):
            return Drop.ICMP_INFO
        covered = upper if v4 else pseudo(probe, 58, len(upper)) + upper
        if checksum(covered) != 0:
            return Drop.BAD_CHECKSUM
        message = bytes([0 if v4 else 129, upper[1], 0, 0]) + upper[4:]
        covered = message if v4 else pseudo(probe, 58, len(message)) + message
        message = message[:2] + struct.pack("!H", checksum(covered)) + message[4:]
        return with_ip_header(probe, ttl, probe.proto, message)
    if probe.proto == 17:
        if len(upper) < 8:
            return Drop.TRUNCATED
        length, udp_sum = struct.unpack("!HH", upper[4:8])
        if length < 8 or length > len(upper):
            return Drop.TRUNCATED
        if udp_sum == 0:
            if not v4:
                return Drop.BAD_CHECKSUM
        elif checksum(pseudo(probe, 17, length) + upper[:length]) != 0:
            return Drop.BAD_CHECKSUM
        return error_reply(probe, probe.dst, ttl, 3 if v4 else 1, 3 if v4 else 4, 0, headroom)
    if probe.proto == 6:
        if len(upper) < 20:
            return Drop.TRUNCATED
        sport, dport, seq, ack, offset, flags = struct.unpack("!HHIIBB", upper[:14])
        if offset >> 4 < 5:
            return Drop.BAD_HEADER
        if (offset >> 4) * 4 > len(upper):
            return Drop.TRUNCATED
        if checksum(pseudo(probe, 6, len(upper)) + upper) != 0:
            return Drop.BAD_CHECKSUM
        if flags & 0x04:
            return Drop.TCP_RST
        if flags & 0x10:
            rst_seq, rst_ack, rst_flags = ack, 0, 0x04
        else:
            length = len(upper) - (offset >> 4) * 4 + bool(flags & 0x02) + bool(flags & 0x01)
            rst_seq, rst_ack, rst_flags = 0, (seq + length) % 2**32, 0x14
        segment = struct.pack("!HHIIBBHHH", dport, sport, rst_seq, rst_ack, 0x50, rst_flags, 0, 0, 0)
        total = checksum(pseudo(probe, 6, 20) + segment)
        segment = segment[:16] + struct.pack("!H", total) + segment[18:]
        return with_ip_header(probe, ttl, 6, segment)
    if probe.proto == 59 and not v4:
        return Drop.NO_NEXT_HEADER
    if v4:
        return error_reply(probe, probe.dst, ttl, 3, 2, 0, headroom)
    return error_reply(probe, probe.dst, ttl, 4, 1, probe.next_header_at, headroom)


def reference_reply(packet: bytes, chains: Sequence[Chain],
                    headroom: int = HEADROOM) -> bytes | Drop:
    """The reply route-chain sends to packet, or why it sends none."""
    if not packet:
        return Drop.TRUNCATED
    version = packet[0] >> 4
    if version == 4:
        probe = parse_v4(packet, chains)
    elif version == 6:
        probe = parse_v6(packet, chains)
    else:
        return Drop.BAD_VERSION
    if isinstance(probe, Drop):
        return probe
    v4 = probe.family == 4
    if probe.proto == (1 if v4 else 58):
        if len(probe.upper) < 8:
            return Drop.TRUNCATED
        if probe.upper[0] not in (ICMP_INFO_V4 if v4 else ICMP_INFO_V6):
            return Drop.ICMP_ERROR

    chain = find_chain(chains, probe.family, probe.dst)
    k = int(ipaddress.ip_address(probe.dst)) - int(chain.host)
    t = max(probe.ttl, 1)
    if k <= 0:
        answer, hop = "unreachable", 1
    elif k <= chain.length:
        answer, hop = ("host", k) if t >= k else ("time exceeded", t)
    elif t < chain.length:
        answer, hop = "time exceeded", t
    else:
        answer, hop = "unreachable", chain.length
    if chain.hop(hop).silent:
        return Drop.SILENT
    ttl = max(1, chain.reply_ttl - (hop - 1))
    if answer == "host":
        return host_reply(probe, ttl, headroom)
    address = chain.hop_address(hop).packed
    if answer == "time exceeded":
        return error_reply(probe, address, ttl, 11 if v4 else 3, 0, 0, headroom)
    return error_reply(probe, address, ttl, 3 if v4 else 1, 1 if v4 else 3, 0, headroom)
