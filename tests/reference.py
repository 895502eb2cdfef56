"""A slow, obviously correct reference for the reply core.

Written from docs/replies.md, not from csrc/reply.c: every reply is built
field by field with struct and summed in full, addresses are Python ints,
and the rules are checked in the documented order. The C core must agree
with it byte for byte.
"""

from __future__ import annotations

import copy
import ipaddress
import struct
from typing import Sequence

from routechain.chain import Chain
from routechain.chaintable import HEADROOM, Drop

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
                 next_header_at: int = 6, dont_fragment: bool = True,
                 flow_label: int = 0) -> None:
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
        self.dont_fragment = dont_fragment    # IPv6 routers never fragment
        self.flow_label = flow_label
        self.reply_to = src           # the sender, unless a NAT in front rewrote src


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
                 first_fragment=bool(fragment & 0x2000), dont_fragment=bool(fragment & 0x4000))


def parse_v6(packet: bytes, chains: Sequence[Chain]) -> Probe | Drop:
    if len(packet) < 40:
        return Drop.TRUNCATED
    word, payload, next_header, hop_limit, src, dst = struct.unpack("!IHBB16s16s", packet[:40])
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
                 first_fragment=first_fragment, next_header_at=next_header_at,
                 flow_label=word & 0xfffff)


def error_reply(probe: Probe, hop: bytes, ttl: int, icmp_type: int, code: int,
                rest: int, headroom: int, extension: bytes = b"",
                room: int = 1 << 20) -> bytes | Drop:
    """An ICMP error; with an RFC 4884 extension structure, the original
    datagram field is whole 32-bit (v4) / 64-bit (v6) words, at least 128
    octets, its length in the ICMP header, and the quote shrinks so that
    all of it stays within 576 / 1280 octets. room: the buffer's bytes from
    the probe on."""
    v4 = probe.family == 4
    header, limit, unit = (28, 576, 4) if v4 else (48, 1280, 8)
    if headroom < header:
        return Drop.NO_ROOM
    if extension:
        quote = probe.packet[:(limit - header - len(extension)) // unit * unit]
        field = max(128, -(-len(quote) // unit) * unit)
        if field + len(extension) > room:
            return Drop.NO_ROOM
        quote = quote.ljust(field, b"\0") + extension
        rest |= (field // unit) << (16 if v4 else 24)
    else:
        quote = probe.packet[:limit - header]
    message = struct.pack("!BBHI", icmp_type, code, 0, rest) + quote
    if v4:
        message = message[:2] + struct.pack("!H", checksum(message)) + message[4:]
        return ipv4_header(20 + len(message), probe.ident, ttl, 1, hop, probe.reply_to) + message
    total = checksum(pseudo_v6(hop, probe.reply_to, 58, len(message)) + message)
    message = message[:2] + struct.pack("!H", total) + message[4:]
    return ipv6_header(len(message), 58, ttl, hop, probe.reply_to) + message


def with_ip_header(probe: Probe, ttl: int, proto: int, upper: bytes) -> bytes:
    if probe.family == 4:
        return ipv4_header(20 + len(upper), probe.ident, ttl, proto, probe.dst, probe.src) + upper
    return ipv6_header(len(upper), proto, ttl, probe.dst, probe.src) + upper


def pseudo(probe: Probe, proto: int, length: int) -> bytes:
    make = pseudo_v4 if probe.family == 4 else pseudo_v6
    return make(probe.src, probe.dst, proto, length)


def prohibited(probe: Probe, ttl: int, headroom: int, extension: bytes, room: int) -> bytes | Drop:
    """A host filter's Destination Unreachable: v4 3/13, v6 1/1."""
    v4 = probe.family == 4
    return error_reply(probe, probe.dst, ttl, 3 if v4 else 1, 13 if v4 else 1, 0, headroom,
                       extension, room)


def tcp_reset(probe: Probe, ttl: int, bare: bool) -> bytes:
    """RFC 9293 3.10.7.1: RST-ACK, or <SEQ=SEG.ACK><CTL=RST> to a segment
    with ACK; a bare RST never carries ACK (SEQ 0 when there is no SEG.ACK)."""
    upper = probe.upper
    sport, dport, seq, ack, offset, flags = struct.unpack("!HHIIBB", upper[:14])
    if flags & 0x10 or bare:
        rst_seq, rst_ack, rst_flags = (ack if flags & 0x10 else 0), 0, 0x04
    else:
        length = len(upper) - (offset >> 4) * 4 + bool(flags & 0x02) + bool(flags & 0x01)
        rst_seq, rst_ack, rst_flags = 0, (seq + length) % 2**32, 0x14
    segment = struct.pack("!HHIIBBHHH", dport, sport, rst_seq, rst_ack, 0x50, rst_flags, 0, 0, 0)
    total = checksum(pseudo(probe, 6, 20) + segment)
    segment = segment[:16] + struct.pack("!H", total) + segment[18:]
    return with_ip_header(probe, ttl, 6, segment)


def initial_sequence(probe: Probe, syn_seq: int) -> int:
    """FNV-1a over the addresses, the ports as the SYN has them and its SEQ."""
    return fnv1a(probe.src + probe.dst + probe.upper[:4] + struct.pack("!I", syn_seq))


def tcp_syn_ack(probe: Probe, ttl: int, room: int) -> bytes | Drop:
    """RFC 9293 3.10.7.2: <SEQ=ISS><ACK=SEG.SEQ+1><CTL=SYN,ACK>, window
    65535, one option: MSS 1460 (v4) / 1440 (v6). ISS: FNV-1a over the
    addresses, the ports and the SYN's sequence number (docs/replies.md)."""
    upper = probe.upper
    if len(probe.packet) - len(upper) + 24 > room:
        return Drop.NO_ROOM
    sport, dport, seq = struct.unpack("!HHI", upper[:8])
    iss = initial_sequence(probe, seq)
    mss = 1460 if probe.family == 4 else 1440
    segment = struct.pack("!HHIIBBHHHBBH", dport, sport, iss, (seq + 1) % 2**32, 0x60, 0x12,
                          65535, 0, 0, 2, 4, mss)
    total = checksum(pseudo(probe, 6, 24) + segment)
    segment = segment[:16] + struct.pack("!H", total) + segment[18:]
    return with_ip_header(probe, ttl, 6, segment)


def host_reply(probe: Probe, ttl: int, headroom: int, extension: bytes = b"",
               room: int = 1 << 20, tcp: str = "closed", tcp_open: tuple[int, ...] = (),
               udp: str = "unreachable") -> bytes | Drop:
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
        if udp == "silent":
            return Drop.SILENT
        if udp == "prohibited":
            return prohibited(probe, ttl, headroom, extension, room)
        return error_reply(probe, probe.dst, ttl, 3 if v4 else 1, 3 if v4 else 4, 0, headroom,
                           extension, room)
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
        if tcp == "open" or dport in tcp_open:          # listening, no state kept
            if (flags & 0x12) == 0x02:
                return tcp_syn_ack(probe, ttl, room)
            # The handshake's ACK (ACK alone, PSH allowed, no data,
            # acknowledging ISS + 1) is taken silently, as a SYN cookie is.
            if ((flags & 0x17) == 0x10 and len(upper) == (offset >> 4) * 4
                    and ack == (initial_sequence(probe, (seq - 1) % 2**32) + 1) % 2**32):
                return Drop.TCP_HANDSHAKE
            return tcp_reset(probe, ttl, bare=False)
        if tcp == "silent":
            return Drop.SILENT
        if tcp == "prohibited":
            return prohibited(probe, ttl, headroom, extension, room)
        return tcp_reset(probe, ttl, bare=tcp == "rst")
    if probe.proto == 59 and not v4:
        return Drop.NO_NEXT_HEADER
    if v4:
        return error_reply(probe, probe.dst, ttl, 3, 2, 0, headroom, extension, room)
    return error_reply(probe, probe.dst, ttl, 4, 1, probe.next_header_at, headroom)


def fnv1a(data: bytes, h: int = 2166136261) -> int:
    for byte in data:
        h = ((h ^ byte) * 16777619) & 0xffffffff
    return h


def balance_hashes(probe: Probe, dst: bytes, ttl: int) -> dict[str, int]:
    """What an ECMP router hashes, by its balance mode. "flow": addresses,
    the IPv6 flow label, the protocol and the first four octets of the
    upper-layer header; "packet": those, the TTL, the IPv4 Identification
    and upper-layer octets 4..7; "destination": the destination address.
    dst and ttl are what the routers see: the probe's, or for a chapter
    its destination's and the TTL the probe would have there."""
    key = probe.src + dst
    if probe.family == 6:
        key += probe.flow_label.to_bytes(3, "big")
    upper = probe.upper[:8].ljust(8, b"\0")
    flow = key + bytes([probe.proto]) + upper[:4]
    ident = probe.packet[4:6] if probe.family == 4 else b""
    return {"flow": fnv1a(flow),
            "packet": fnv1a(flow + bytes([ttl]) + ident + upper[4:8]),
            "destination": fnv1a(dst)}


def choose(flow: int, k: int, n: int) -> int:
    x = (flow ^ (k * 0x9e3779b9)) & 0xffffffff
    x ^= x >> 16
    x = (x * 0x85ebca6b) & 0xffffffff
    x ^= x >> 13
    x = (x * 0xc2b2ae35) & 0xffffffff
    x ^= x >> 16
    return x % n


def csum_replace(check: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')."""
    s = (~check & 0xffff) + (~old & 0xffff) + new
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def rewritten(probe: Probe, props) -> Probe:
    """The probe after a router with nat / dscp / ecn / df forwards it: the
    fields changed word by word, each checksum that covers a word (the
    IPv4 header's; the upper layer's, with its pseudo-header for UDP, TCP
    and ICMPv6) patched as RFC 1624 says; a UDP checksum left 0 becomes
    0xffff; a zero IPv4 UDP checksum (none) stays zero."""
    v4 = probe.family == 4
    pkt = bytearray(probe.packet)
    up = len(pkt) - len(probe.upper)
    at = {17: 6, 6: 16, 1: 2, 58: 2}.get(probe.proto)
    pseudo = probe.proto != 1
    if at is not None and (len(probe.upper) < at + 2 or
                           (probe.proto == 17 and v4 and probe.upper[at:at + 2] == b"\0\0")):
        at = None

    def word(off: int, value: int, ip_header: bool, upper: bool) -> None:
        old = int.from_bytes(pkt[off:off + 2], "big")
        if ip_header and v4:
            pkt[10:12] = csum_replace(int.from_bytes(pkt[10:12], "big"), old, value).to_bytes(2, "big")
        if upper and at is not None:
            c = up + at
            pkt[c:c + 2] = csum_replace(int.from_bytes(pkt[c:c + 2], "big"), old, value).to_bytes(2, "big")
        pkt[off:off + 2] = value.to_bytes(2, "big")

    if props.dscp is not None or props.ecn is not None:
        w = int.from_bytes(pkt[0:2], "big")
        ds = w & 0xff if v4 else (w >> 4) & 0xff
        if props.dscp is not None:
            ds = (ds & 0x03) | props.dscp << 2
        if props.ecn is not None:
            ds = (ds & 0xfc) | props.ecn
        word(0, (w & 0xff00) | ds if v4 else (w & 0xf00f) | ds << 4, True, False)
    if props.df is not None:
        f = int.from_bytes(pkt[6:8], "big")
        word(6, f | 0x4000 if props.df == "set" else f & ~0x4000, True, False)
    if props.nat is not None:
        addr, port = props.nat
        base = 12 if v4 else 8
        for i in range(0, len(addr.packed), 2):
            word(base + i, int.from_bytes(addr.packed[i:i + 2], "big"), True, pseudo)
        if port is not None:
            if (probe.proto == 17 and len(probe.upper) >= 8) or (probe.proto == 6 and
                                                                  len(probe.upper) >= 20):
                word(up, port, False, True)
            elif (probe.proto == (1 if v4 else 58) and len(probe.upper) >= 8
                  and probe.upper[0] == (8 if v4 else 128)):
                word(up + 4, port, False, True)
    if at is not None and probe.proto == 17 and pkt[up + at:up + at + 2] == b"\0\0":
        pkt[up + at:up + at + 2] = b"\xff\xff"
    out = copy.copy(probe)
    out.packet = bytes(pkt)
    out.upper = bytes(pkt[up:])
    out.src = bytes(pkt[12:16] if v4 else pkt[8:24])
    if v4:
        out.ident = int.from_bytes(pkt[4:6], "big") ^ int.from_bytes(pkt[10:12], "big")
    return out


def extension(props, label_ttl: int) -> bytes:
    """RFC 4884 7 header + RFC 4950 MPLS object + RFC 5837 incoming-interface
    object, or b"" when the router has none of them."""
    objects = b""
    if props.mpls:
        stack = b"".join(struct.pack("!I", (e.label << 12) | (e.tc << 9)
                                     | ((n == len(props.mpls) - 1) << 8) | label_ttl)
                         for n, e in enumerate(props.mpls))
        objects += struct.pack("!HBB", 4 + len(stack), 1, 1) + stack
    ctype, body = 0, b""                       # role 0: incoming IP interface
    if props.ifindex is not None:
        ctype |= 0x08
        body += struct.pack("!I", props.ifindex)
    if props.ifaddr is not None:
        ctype |= 0x04
        body += struct.pack("!HH", 1 if props.ifaddr.version == 4 else 2, 0) + props.ifaddr.packed
    if props.iface is not None:
        ctype |= 0x02
        name = props.iface.encode()
        size = len(name) + 1
        size += -size % 4
        body += bytes([size]) + name + bytes(size - 1 - len(name))
    if props.ifmtu is not None:
        ctype |= 0x01
        body += struct.pack("!I", props.ifmtu)
    if ctype:
        objects += struct.pack("!HBB", 4 + len(body), 2, ctype) + body
    if not objects:
        return b""
    structure = struct.pack("!BBH", 0x20, 0, 0) + objects
    return structure[:2] + struct.pack("!H", checksum(structure)) + structure[4:]


def reference_reply(packet: bytes, chains: Sequence[Chain],
                    headroom: int = HEADROOM, slack: int = 0) -> bytes | Drop:
    """The reply route-chain sends to packet, or why it sends none; slack is
    the buffer's bytes behind the packet."""
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
    routed = chain.has_extensions
    forced = None           # (hop, branch) of an alternative the probe is addressed to
    if routed and not 1 <= k <= chain.length:
        for j in range(1, chain.length + 1):
            for b in range(1, len(chain.routers_at(j))):
                if chain.branch_address(j, b).packed == probe.dst:
                    forced = (j, b)
        if forced:
            k = forced[0]
    # A chapter: a probe to its address is a probe to the destination that
    # entered start - 1 hops on; only the host at the end answers from
    # the chapter's address (probe.dst), and the quote is the probe as sent.
    route_dst, route_ttl = probe.dst, probe.ttl
    if k > chain.length:
        for chapter in chain.chapters:
            if chain.chapter_address(chapter).packed == probe.dst:
                k = chain.length
                t += chapter.start - 1
                route_dst, route_ttl = chain.destination.packed, min(t, 255)
    hashes = balance_hashes(probe, route_dst, route_ttl)

    def branch_at(j: int) -> int:
        if forced and forced[0] == j:
            return forced[1]
        return choose(hashes[chain.balance(j)], j, 1 + len(chain.hop(j).alternatives))

    further = None          # (hop, branch) of a '++' router the probe expires at
    if routed and k > 0:
        # A longer branch: its '++' routers come after its '+' router.
        for j in range(1, min(k, chain.length)):
            if j >= t:
                break
            b = branch_at(j)
            if b == 0:
                continue
            alt = chain.hop(j).alternatives[b - 1]
            if not alt.further:
                continue
            if t - j <= len(alt.further):
                n_alts = len(chain.hop(j).alternatives)
                before = sum(len(a.further) for a in chain.hop(j).alternatives[:b - 1])
                further = (j, n_alts + before + t - j)
                break
            t -= len(alt.further)
    if k <= 0:
        answer, hop = "unreachable", 1
    elif k <= chain.length:
        answer, hop = ("host", k) if t >= k else ("time exceeded", t)
    elif t < chain.length:
        answer, hop = "time exceeded", t
    else:
        answer, hop = "unreachable", chain.length
    if not routed:
        if chain.hop(hop).silent:
            return Drop.SILENT
        ttl = max(1, chain.reply_ttl - (hop - 1))
        ext = b""
        address = chain.hop_address(hop).packed
    else:
        branch = branch_at(hop)
        if further:
            answer, (hop, branch) = "time exceeded", further
        elif k > 0 and probe.dont_fragment:
            for j in range(1, hop):
                mtu = chain.branch(j, branch_at(j)).props.mtu
                if mtu is not None and len(probe.packet) > mtu:
                    answer, hop, branch = "too big", j, branch_at(j)
                    break
        if (chain.end != "host" and not forced and hop == chain.length and k > 0
                and answer in ("host", "unreachable")):
            answer = "ending"
        router = chain.branch(hop, branch)
        if router.silent:
            return Drop.SILENT
        own = router.props.reply_ttl      # its own way back, not the chain's
        ttl = own if own is not None else max(1, chain.reply_ttl - (hop - 1))
        ext = extension(router.props, 1 if further else min(255, t - hop + 1))
        address = chain.branch_address(hop, branch).packed
    room = len(packet) + slack
    if routed and k > 0 and (answer != "host" or probe.proto not in (1 if v4 else 58, 6)):
        # Routers in front that rewrite what they forward: the quote shows it.
        for j in range(1, hop + 1 if further else hop):
            props = chain.branch(j, branch_at(j)).props
            if any(v is not None for v in (props.nat, props.dscp, props.ecn, props.df)):
                probe = rewritten(probe, props)
    if answer == "host":
        d = chain.defaults
        return host_reply(probe, ttl, headroom, ext, room, d.tcp or "closed", d.tcp_open or (),
                          d.udp or "unreachable")
    if answer == "time exceeded":
        return error_reply(probe, address, ttl, 11 if v4 else 3, 0, 0, headroom, ext, room)
    if answer == "too big":
        mtu = chain.branch(hop, branch).props.mtu
        if v4:
            return error_reply(probe, address, ttl, 3, 4, mtu, headroom, ext, room)
        return error_reply(probe, address, ttl, 2, 0, mtu, headroom)
    if answer == "ending":
        code = {"!N": (0, 0), "!H": (1, 3), "!X": (13, 1)}[chain.end][0 if v4 else 1]
        return error_reply(probe, address, ttl, 3 if v4 else 1, code, 0, headroom, ext, room)
    return error_reply(probe, address, ttl, 3 if v4 else 1, 1 if v4 else 3, 0, headroom, ext, room)
