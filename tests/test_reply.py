"""The reply core, table-driven: one table of (probe, expected reply) for
every reply kind over IPv4 and IPv6 and every rule that keeps the core
silent. Probes are built with scapy, and every reply is parsed by scapy:
checksums recomputed with scapy's own functions, fields as documented in
docs/replies.md, the quote byte-identical to the probe as received.

Chains (documentation prefixes only):

    CHAIN4  192.0.2.1/24      hops .2 .. .6, hop 3 (.4) silent, reply TTL 64
    CHAIN6  2001:db8:2::ffff:ffff:fffe/64
                              hops +1 .. +5 (+2 carries into the next 32-bit
                              word), hop 3 silent, reply TTL 64
    SMALL4  198.51.100.1/30   one hop (.2); .3 is the prefix's broadcast
    LONG4   198.18.0.1/15     255 hops, reply TTL 2
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption, in4_chksum
from scapy.layers.inet6 import (ICMPv6EchoRequest, ICMPv6NDOptSrcLLAddr, ICMPv6ND_NS,
                                ICMPv6TimeExceeded, ICMPv6Unknown, IPv6, IPv6ExtHdrDestOpt,
                                IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting,
                                in6_chksum)
from scapy.packet import Raw
from scapy.utils import checksum

from routechain import chaintable
from routechain.chain import Chain, Hop, parse_prefix

HOPS = tuple(Hop(silent=(k == 3)) for k in range(1, 6))
CHAIN4 = Chain(parse_prefix("192.0.2.1/24"), HOPS)
CHAIN6 = Chain(parse_prefix("2001:db8:2::ffff:ffff:fffe/64"), HOPS)
SMALL4 = Chain(parse_prefix("198.51.100.1/30"))
LONG4 = Chain(parse_prefix("198.18.0.1/15"), reply_ttl=2)
EMPTY6 = Chain(parse_prefix("2001:db8:9::1/128"))       # length 0: left out
CHAINS = [CHAIN4, CHAIN6, SMALL4, LONG4, EMPTY6]
TABLE = chaintable.Table(CHAINS)

SRC4, SRC6 = "198.51.100.77", "2001:db8:ffff::7"
PAYLOAD = bytes(range(48))


def d4(k: int) -> str:
    return str(CHAIN4.host + k)


def d6(k: int) -> str:
    return str(CHAIN6.host + k)


def v4(k: int, ttl: int, upper, **ip) -> bytes:
    fields = {"src": SRC4, "dst": d4(k), "ttl": ttl, "tos": 0xb8, "flags": "DF", "id": 0x1234}
    return bytes(IP(**(fields | ip)) / upper)


def v6(k: int, hlim: int, upper, *ext, **ip) -> bytes:
    fields = {"src": SRC6, "dst": d6(k), "hlim": hlim, "tc": 0xb8, "fl": 0x12345}
    packet = IPv6(**(fields | ip))
    for header in ext:
        packet = packet / header
    return bytes(packet / upper)


def udp() -> UDP:
    return UDP(sport=40000, dport=33434) / PAYLOAD


def tcp(flags: str = "S", payload: bytes = b"", **fields) -> TCP:
    base = {"sport": 40000, "dport": 80, "seq": 1000, "ack": 5000, "flags": flags,
            "window": 64240, "options": [("MSS", 1460)]}
    return TCP(**(base | fields)) / payload


def echo4() -> ICMP:
    return ICMP(type=8, id=0x4242, seq=7) / PAYLOAD


def echo6() -> ICMPv6EchoRequest:
    return ICMPv6EchoRequest(id=0x4242, seq=7) / PAYLOAD


def patched(packet: bytes, at: int, value: bytes) -> bytes:
    return packet[:at] + value + packet[at + len(value):]


def with_ipv4_checksum(packet: bytes) -> bytes:
    """Recompute the IPv4 header checksum after a patch."""
    ihl = (packet[0] & 0x0f) * 4
    header = patched(packet[:ihl], 10, b"\0\0")
    return patched(header, 10, struct.pack("!H", checksum(header))) + packet[ihl:]


@dataclasses.dataclass(frozen=True)
class Reply:
    """What the reply must be: its kind, the hop that sends it (its index
    in the chain) and its TTL / hop limit, plus per-kind details."""

    kind: chaintable.Kind
    hop: int
    ttl: int
    chain: Chain = CHAIN4
    pointer: int = 0              # ICMPv6 Parameter Problem
    seq: int | None = None        # TCP RST
    ack: int | None = None
    flags: str | None = None


def R(kind, hop, ttl, chain=None, **more):
    return lambda family: Reply(kind, hop, ttl, chain or (CHAIN4 if family == 4 else CHAIN6), **more)


K = chaintable.Kind
D = chaintable.Drop

# (name, IPv4 probe, IPv6 probe, expected); either probe may be None.
CASES = [
    # Mid-chain: every protocol, Time Exceeded from host + t.
    ("time_exceeded_udp", v4(5, 2, udp()), v6(5, 2, udp()), R(K.TIME_EXCEEDED, 2, 63)),
    ("time_exceeded_echo", v4(5, 1, echo4()), v6(5, 1, echo6()), R(K.TIME_EXCEEDED, 1, 64)),
    ("time_exceeded_tcp", v4(5, 4, tcp()), v6(5, 4, tcp()), R(K.TIME_EXCEEDED, 4, 61)),
    ("time_exceeded_informational", v4(5, 2, ICMP(type=13)),
     v6(5, 2, ICMPv6ND_NS(tgt="2001:db8::1")), R(K.TIME_EXCEEDED, 2, 63)),
    ("time_exceeded_other_protocol", v4(5, 2, Raw(PAYLOAD), proto=47),
     v6(5, 2, Raw(PAYLOAD), nh=47), R(K.TIME_EXCEEDED, 2, 63)),
    ("time_exceeded_ttl_zero_as_one", v4(5, 0, udp()), v6(5, 0, udp()),
     R(K.TIME_EXCEEDED, 1, 64)),
    ("time_exceeded_ignores_upper_checksum", v4(5, 2, UDP(chksum=0x1111) / PAYLOAD),
     v6(5, 2, UDP(chksum=0x1111) / PAYLOAD), R(K.TIME_EXCEEDED, 2, 63)),
    ("time_exceeded_first_fragment", v4(5, 2, udp(), flags="MF"),
     v6(5, 2, udp(), IPv6ExtHdrFragment(m=1, id=9)), R(K.TIME_EXCEEDED, 2, 63)),
    ("time_exceeded_beyond_chain", v4(40, 4, udp()), v6(40, 4, udp()),
     R(K.TIME_EXCEEDED, 4, 61)),
    ("time_exceeded_extension_headers", None,
     v6(5, 2, udp(), IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(addresses=[SRC6], segleft=0),
        IPv6ExtHdrDestOpt()), R(K.TIME_EXCEEDED, 2, 63)),
    ("time_exceeded_ipv4_options", v4(5, 2, udp(), options=[IPOption(b"\x01\x01\x01\x00")]),
     None, R(K.TIME_EXCEEDED, 2, 63)),
    # The destination answers as a host.
    ("port_unreachable", v4(5, 5, udp()), v6(5, 5, udp()), R(K.PORT_UNREACH, 5, 60)),
    ("port_unreachable_high_ttl", v4(2, 64, udp()), v6(2, 64, udp()), R(K.PORT_UNREACH, 2, 63)),
    ("port_unreachable_ipv4_no_checksum", v4(5, 9, UDP(chksum=0) / PAYLOAD), None,
     R(K.PORT_UNREACH, 5, 60)),
    ("echo_reply", v4(5, 9, echo4()), v6(5, 9, echo6()), R(K.ECHO_REPLY, 5, 60)),
    ("echo_reply_all_zero", v4(1, 9, ICMP(type=8, id=0, seq=0) / bytes(8)), None,
     R(K.ECHO_REPLY, 1, 64)),
    ("echo_reply_drops_options_and_extensions",
     v4(5, 9, echo4(), options=[IPOption(b"\x01" * 8)]),
     v6(5, 9, echo6(), IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt()), R(K.ECHO_REPLY, 5, 60)),
    ("tcp_syn_gets_rst_ack", v4(5, 9, tcp("S")), v6(5, 9, tcp("S")),
     R(K.TCP_RST, 5, 60, seq=0, ack=1001, flags="RA")),
    ("tcp_syn_ece_cwr_gets_rst_ack", v4(5, 9, tcp("SEC")), v6(5, 9, tcp("SEC")),
     R(K.TCP_RST, 5, 60, seq=0, ack=1001, flags="RA")),
    ("tcp_syn_fin_data_counts_all", v4(5, 9, tcp("SF", b"x" * 10)), v6(5, 9, tcp("SF", b"x" * 10)),
     R(K.TCP_RST, 5, 60, seq=0, ack=1012, flags="RA")),
    ("tcp_ack_gets_rst", v4(5, 9, tcp("PA", b"hello")), v6(5, 9, tcp("PA", b"hello")),
     R(K.TCP_RST, 5, 60, seq=5000, ack=0, flags="R")),
    ("tcp_rst_seq_wraps", v4(5, 9, tcp("S", seq=2**32 - 1)), v6(5, 9, tcp("S", seq=2**32 - 1)),
     R(K.TCP_RST, 5, 60, seq=0, ack=0, flags="RA")),
    ("protocol_unreachable", v4(5, 9, Raw(PAYLOAD), proto=47), v6(5, 9, Raw(PAYLOAD), nh=47),
     lambda f: R(K.PROTO_UNREACH, 5, 60, pointer=0 if f == 4 else 6)(f)),
    ("protocol_unreachable_after_extensions", None,
     v6(5, 9, Raw(PAYLOAD), IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(nh=132)),
     R(K.PROTO_UNREACH, 5, 60, pointer=48)),
    ("parameter_problem_hop_by_hop_not_first", None,
     v6(5, 9, udp(), IPv6ExtHdrDestOpt(), IPv6ExtHdrHopByHop()),
     R(K.PROTO_UNREACH, 5, 60, pointer=40)),
    ("time_exceeded_hop_by_hop_not_first", None,
     v6(5, 2, udp(), IPv6ExtHdrDestOpt(), IPv6ExtHdrHopByHop()), R(K.TIME_EXCEEDED, 2, 63)),
    # Outside the chain's hops but inside its prefix.
    ("host_unreachable_beyond_chain", v4(40, 64, udp()), v6(40, 64, udp()),
     R(K.HOST_UNREACH, 5, 60)),
    ("host_unreachable_beyond_chain_at_length", v4(40, 5, echo4()), v6(40, 5, echo6()),
     R(K.HOST_UNREACH, 5, 60)),
    ("host_unreachable_at_host", v4(0, 64, udp()), v6(0, 64, udp()), R(K.HOST_UNREACH, 1, 64)),
    ("host_unreachable_below_host", v4(-1, 1, tcp()), v6(-1000, 1, tcp()),
     R(K.HOST_UNREACH, 1, 64)),
    ("host_unreachable_far_beyond", v4(0, 255, udp(), dst="198.19.255.254"), None,
     R(K.HOST_UNREACH, 255, 1, chain=LONG4)),
    ("reply_ttl_clamped_to_one", v4(0, 100, udp(), dst="198.18.0.101"), None,
     R(K.PORT_UNREACH, 100, 1, chain=LONG4)),
    ("quote_truncated_to_limit", v4(5, 2, UDP() / bytes(1400)), v6(5, 2, UDP() / bytes(1400)),
     R(K.TIME_EXCEEDED, 2, 63)),
    ("quote_excludes_padding", v4(5, 2, udp()) + bytes(6), v6(5, 2, udp()) + bytes(6),
     R(K.TIME_EXCEEDED, 2, 63)),
    ("small_chain_port_unreachable", v4(0, 9, udp(), dst="198.51.100.2"), None,
     R(K.PORT_UNREACH, 1, 64, chain=SMALL4)),
    # No reply at all.
    ("silent_hop_time_exceeded", v4(5, 3, udp()), v6(5, 3, udp()), lambda f: D.SILENT),
    ("silent_hop_destination", v4(3, 9, udp()), v6(3, 9, udp()), lambda f: D.SILENT),
    ("icmp_error_destination_unreachable", v4(5, 9, ICMP(type=3, code=3) / PAYLOAD),
     v6(5, 9, ICMPv6Unknown(type=1, code=4, msgbody=PAYLOAD)), lambda f: D.ICMP_ERROR),
    ("icmp_error_mid_chain", v4(5, 1, ICMP(type=11) / PAYLOAD),
     v6(5, 1, ICMPv6TimeExceeded() / PAYLOAD), lambda f: D.ICMP_ERROR),
    ("icmp_unknown_type_as_error", v4(5, 1, ICMP(type=99) / PAYLOAD),
     v6(5, 1, ICMPv6Unknown(type=200, msgbody=PAYLOAD)), lambda f: D.ICMP_ERROR),
    ("icmp_informational_at_destination", v4(5, 9, ICMP(type=13) / bytes(12)),
     v6(5, 9, ICMPv6ND_NS(tgt="2001:db8::1") / ICMPv6NDOptSrcLLAddr()), lambda f: D.ICMP_INFO),
    ("icmp_echo_reply_at_destination", v4(5, 9, ICMP(type=0) / PAYLOAD),
     v6(5, 9, ICMPv6Unknown(type=129, msgbody=PAYLOAD)), lambda f: D.ICMP_INFO),
    ("icmp_shorter_than_header", v4(5, 1, Raw(b"\x08\x00\xf7\xff"), proto=1),
     v6(5, 1, Raw(b"\x80\x00\x00\x00"), nh=58), lambda f: D.TRUNCATED),
    ("non_first_fragment", v4(5, 2, udp(), frag=4),
     v6(5, 2, udp(), IPv6ExtHdrFragment(offset=4, id=9)), lambda f: D.FRAGMENT),
    ("first_fragment_at_destination", v4(5, 9, udp(), flags="MF"),
     v6(5, 9, udp(), IPv6ExtHdrFragment(m=1, id=9)), lambda f: D.FRAGMENT),
    ("multicast_destination", v4(0, 9, udp(), dst="224.0.0.1"),
     v6(0, 9, udp(), dst="ff02::1"), lambda f: D.MULTICAST),
    ("broadcast_destination", v4(0, 9, udp(), dst="255.255.255.255"), None,
     lambda f: D.MULTICAST),
    ("prefix_broadcast_destination", v4(0, 9, udp(), dst="198.51.100.3"), None,
     lambda f: D.MULTICAST),
    ("unspecified_source", v4(5, 9, udp(), src="0.0.0.0"), v6(5, 9, udp(), src="::"),
     lambda f: D.BAD_SOURCE),
    ("loopback_source", v4(5, 9, udp(), src="127.0.0.1"), v6(5, 9, udp(), src="::1"),
     lambda f: D.BAD_SOURCE),
    ("multicast_source", v4(5, 9, udp(), src="224.0.0.5"), v6(5, 9, udp(), src="ff02::5"),
     lambda f: D.BAD_SOURCE),
    ("broadcast_or_mapped_source", v4(5, 9, udp(), src="255.255.255.255"),
     v6(5, 9, udp(), src="::ffff:198.51.100.7"), lambda f: D.BAD_SOURCE),
    ("not_ours", v4(0, 9, udp(), dst="198.51.100.200"), v6(0, 9, udp(), dst="2001:db8:3::1"),
     lambda f: D.NOT_OURS),
    ("empty_chain_not_ours", None, v6(0, 9, udp(), dst="2001:db8:9::1"), lambda f: D.NOT_OURS),
    ("bad_udp_checksum", v4(5, 9, UDP(chksum=0x1111) / PAYLOAD),
     v6(5, 9, UDP(chksum=0x1111) / PAYLOAD), lambda f: D.BAD_CHECKSUM),
    ("ipv6_udp_zero_checksum", None, v6(5, 9, UDP(chksum=0) / PAYLOAD), lambda f: D.BAD_CHECKSUM),
    ("bad_tcp_checksum", v4(5, 9, TCP(chksum=0x1111)), v6(5, 9, TCP(chksum=0x1111)),
     lambda f: D.BAD_CHECKSUM),
    ("bad_echo_checksum", v4(5, 9, ICMP(type=8, chksum=0x1111)),
     v6(5, 9, ICMPv6EchoRequest(cksum=0x1111)), lambda f: D.BAD_CHECKSUM),
    ("tcp_rst_gets_nothing", v4(5, 9, tcp("R")), v6(5, 9, tcp("RA")), lambda f: D.TCP_RST),
    ("tcp_data_offset_under_five", v4(5, 9, TCP(dataofs=4)), v6(5, 9, TCP(dataofs=4)),
     lambda f: D.BAD_HEADER),
    ("tcp_data_offset_past_end", v4(5, 9, TCP(dataofs=15)), v6(5, 9, TCP(dataofs=15)),
     lambda f: D.TRUNCATED),
    ("udp_length_lies", v4(5, 9, UDP(len=200) / PAYLOAD), v6(5, 9, UDP(len=7) / PAYLOAD),
     lambda f: D.TRUNCATED),
    ("no_next_header", None, v6(5, 9, Raw(PAYLOAD), nh=59), lambda f: D.NO_NEXT_HEADER),
    ("too_many_extension_headers", None,
     v6(5, 2, udp(), *[IPv6ExtHdrDestOpt() for _ in range(9)]), lambda f: D.EXT_HEADERS),
    ("ihl_under_five", patched(v4(5, 2, udp()), 0, b"\x44"), None, lambda f: D.BAD_HEADER),
    ("bad_header_checksum", patched(v4(5, 2, udp()), 10, b"\x12\x34"), None,
     lambda f: D.BAD_HEADER),
    ("total_length_past_end", with_ipv4_checksum(patched(v4(5, 2, udp()), 2, b"\x01\x00")),
     patched(v6(5, 2, udp()), 4, b"\x01\x00"), lambda f: D.TRUNCATED),
    ("total_length_under_header", with_ipv4_checksum(patched(v4(5, 2, udp()), 2, b"\x00\x10")),
     None, lambda f: D.TRUNCATED),
    ("ipv6_jumbogram", None, patched(v6(5, 2, udp()), 4, b"\x00\x00"), lambda f: D.TRUNCATED),
    ("extension_header_past_end", None,
     patched(v6(5, 2, udp(), IPv6ExtHdrDestOpt()), 41, b"\x20"), lambda f: D.TRUNCATED),
    ("truncated_header", v4(5, 2, udp())[:19], v6(5, 2, udp())[:39], lambda f: D.TRUNCATED),
    ("truncated_packet", v4(5, 2, udp())[:-1], v6(5, 2, udp())[:-1], lambda f: D.TRUNCATED),
    ("bad_version", patched(v4(5, 2, udp()), 0, b"\x55"), patched(v6(5, 2, udp()), 0, b"\x75"),
     lambda f: D.BAD_VERSION),
]

PARAMS = [pytest.param(packet, expect(family), id=f"{name}-v{family}")
          for name, p4, p6, expect in CASES
          for family, packet in ((4, p4), (6, p6)) if packet is not None]


def ip_layer(reply: bytes):
    return IP(reply) if reply[0] >> 4 == 4 else IPv6(reply)


def as_received(probe: bytes) -> bytes:
    """The probe without link padding: what its length fields cover."""
    if probe[0] >> 4 == 4:
        return probe[:struct.unpack("!H", probe[2:4])[0]]
    return probe[:40 + struct.unpack("!H", probe[4:6])[0]]


def check_checksums(reply: bytes) -> None:
    """Recompute every checksum with scapy's functions and compare."""
    packet = ip_layer(reply)
    if reply[0] >> 4 == 4:
        assert reply[0] == 0x45 and len(reply) == packet.len
        assert checksum(patched(reply[:20], 10, b"\0\0")) == packet.chksum
        upper, at = reply[20:], 2 if packet.proto == 1 else 16
        if packet.proto == 1:
            assert checksum(patched(upper, at, b"\0\0")) == struct.unpack("!H", upper[at:at + 2])[0]
        else:
            assert in4_chksum(6, packet, patched(upper, at, b"\0\0")) == \
                struct.unpack("!H", upper[at:at + 2])[0]
    else:
        assert len(reply) == 40 + packet.plen
        upper, at = reply[40:], 2 if packet.nh == 58 else 16
        assert in6_chksum(packet.nh, packet, patched(upper, at, b"\0\0")) == \
            struct.unpack("!H", upper[at:at + 2])[0]


def check_outer(reply: bytes, probe: bytes, expect: Reply) -> None:
    """Source is the answering hop, destination the prober; TTL as given;
    IPv4 TOS 0 and DF clear, IPv6 class and flow label 0."""
    packet = ip_layer(reply)
    assert ipaddress.ip_address(packet.src) == expect.chain.hop_address(expect.hop)
    assert packet.dst == ip_layer(probe).src
    if reply[0] >> 4 == 4:
        assert (packet.tos, int(packet.flags), packet.frag, packet.ttl) == (0, 0, 0, expect.ttl)
        assert not packet.options
    else:
        assert (packet.tc, packet.fl, packet.hlim) == (0, 0, expect.ttl)


ERRORS = {
    (4, K.TIME_EXCEEDED): (11, 0), (4, K.PORT_UNREACH): (3, 3),
    (4, K.PROTO_UNREACH): (3, 2), (4, K.HOST_UNREACH): (3, 1),
    (6, K.TIME_EXCEEDED): (3, 0), (6, K.PORT_UNREACH): (1, 4),
    (6, K.PROTO_UNREACH): (4, 1), (6, K.HOST_UNREACH): (1, 3),
}


def check_error(reply: bytes, probe: bytes, expect: Reply) -> None:
    """The ICMP error: type and code, its fourth word, and a quote that is
    the probe as received up to 576 / 1280 bytes in all."""
    family = reply[0] >> 4
    header = 20 if family == 4 else 40
    icmp_type, code, _sum, rest = struct.unpack("!BBHI", reply[header:header + 8])
    assert (icmp_type, code) == ERRORS[family, expect.kind]
    assert rest == expect.pointer
    limit = 576 if family == 4 else 1280
    assert reply[header + 8:] == as_received(probe)[:limit - header - 8]
    assert len(reply) <= limit


def check_echo(reply: bytes, probe: bytes) -> None:
    """The request's message with the reply's type, its payload untouched."""
    family = reply[0] >> 4
    message = bytes(ip_layer(reply).payload)
    request = bytes(ip_layer(probe).getlayer(ICMP if family == 4 else ICMPv6EchoRequest))
    assert message[0] == (0 if family == 4 else 129)
    assert message[1] == request[1] and message[4:] == request[4:]


def check_rst(reply: bytes, probe: bytes, expect: Reply) -> None:
    segment = ip_layer(reply)[TCP]
    sent = ip_layer(probe)[TCP]
    assert (segment.sport, segment.dport) == (sent.dport, sent.sport)
    assert (segment.seq, segment.ack, str(segment.flags)) == (expect.seq, expect.ack, expect.flags)
    assert (segment.dataofs, segment.window, segment.urgptr) == (5, 0, 0)
    assert len(bytes(segment)) == 20 and not segment.options


@pytest.mark.parametrize("probe, expect", PARAMS)
def test_reply_follows_table(probe, expect):
    got = chaintable.reply(probe, TABLE)
    if isinstance(expect, chaintable.Drop):
        assert got == expect
        return
    assert isinstance(got, bytes), got
    assert got.kind == expect.kind
    check_checksums(got)
    check_outer(got, probe, expect)
    if expect.kind == K.ECHO_REPLY:
        check_echo(got, probe)
    elif expect.kind == K.TCP_RST:
        check_rst(got, probe, expect)
    else:
        check_error(got, probe, expect)


def test_reply_needs_headroom_for_errors():
    """An error reply needs 28 / 48 bytes in front of the packet."""
    assert chaintable.reply(v4(5, 2, udp()), TABLE, headroom=27) == D.NO_ROOM
    assert isinstance(chaintable.reply(v4(5, 2, udp()), TABLE, headroom=28), bytes)
    assert chaintable.reply(v6(5, 2, udp()), TABLE, headroom=47) == D.NO_ROOM
    assert isinstance(chaintable.reply(v6(5, 2, udp()), TABLE, headroom=48), bytes)


def test_reply_in_place_needs_no_headroom():
    """Echo Reply and RST are edits of the probe."""
    for probe in (v4(5, 9, echo4()), v6(5, 9, echo6()), v4(5, 9, tcp()), v6(5, 9, tcp())):
        assert isinstance(chaintable.reply(probe, TABLE, headroom=0), bytes)


def test_reply_refuses_buffer_smaller_than_packet():
    from routechain.chaintable import ffi, lib
    probe = v4(5, 2, udp())
    buf = bytearray(chaintable.HEADROOM + len(probe))
    off = ffi.new("size_t *")
    n = lib.rc_reply(ffi.from_buffer("uint8_t[]", buf), chaintable.HEADROOM, len(probe),
                     len(buf) - 1, TABLE.ptr, off, ffi.new("struct rc_where *"))
    assert n == -D.NO_ROOM


def test_reply_ipv4_id_varies_with_probe():
    a = IP(chaintable.reply(v4(5, 2, udp()), TABLE))
    b = IP(chaintable.reply(bytes(IP(src=SRC4, dst=d4(5), ttl=2, id=0x1235) / udp()), TABLE))
    assert a.id != b.id


def test_reply_echo_leaves_payload_in_place():
    """The reply's message starts where the request's did: nothing moved."""
    from routechain.chaintable import ffi, lib
    probe = v4(5, 9, echo4(), options=[IPOption(b"\x01" * 8)])
    buf = bytearray(chaintable.HEADROOM + len(probe))
    buf[chaintable.HEADROOM:] = probe
    off = ffi.new("size_t *")
    n = lib.rc_reply(ffi.from_buffer("uint8_t[]", buf), chaintable.HEADROOM, len(probe), len(buf),
                     TABLE.ptr, off, ffi.new("struct rc_where *"))
    assert n == len(probe) - 8 and off[0] == chaintable.HEADROOM + 8
    assert buf[chaintable.HEADROOM + 28 + 8:] == PAYLOAD


def test_table_skips_empty_chains():
    assert len(TABLE) == 4 and EMPTY6 not in TABLE.chains


def test_drop_mirrors_c_enum():
    from routechain.chaintable import lib
    assert chaintable.Drop.NO_ROOM == lib.RC_DROP_NO_ROOM
    assert len(chaintable.Drop) == lib.RC_DROP_COUNT and len(chaintable.Kind) == lib.RC_KIND_COUNT
