"""What a chain's destination answers to TCP and UDP (`tcp`, `tcp_open`,
`udp`), every field read back by scapy against RFC 9293 and RFC 792 /
4443: SYN-ACK from an open port, RST-ACK from a closed one, a bare RST,
silence, administratively prohibited.

    OPEN4  198.18.20.1/24   3 hops, tcp_open = 80,443 (other ports: closed)
    RST6   2001:db8:20::1/64  3 hops, tcp = "rst", udp = "silent"
    PROH4  198.18.21.1/24   3 hops, tcp = "prohibited", udp = "prohibited"
    SIL6   2001:db8:21::1/64  3 hops, tcp = "silent"
    ALL4   198.18.22.1/24   3 hops, tcp = "open"
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6

from routechain import chaintable
from routechain.chain import Chain, Hop, parse_prefix
from routechain.hopprops import Props
from reference import reference_reply

K, D = chaintable.Kind, chaintable.Drop
HOPS = (Hop(), Hop(), Hop())
OPEN4 = Chain(parse_prefix("198.18.20.1/24"), HOPS, defaults=Props(tcp_open=(80, 443)))
RST6 = Chain(parse_prefix("2001:db8:20::1/64"), HOPS, defaults=Props(tcp="rst", udp="silent"))
PROH4 = Chain(parse_prefix("198.18.21.1/24"), HOPS,
              defaults=Props(tcp="prohibited", udp="prohibited"))
SIL6 = Chain(parse_prefix("2001:db8:21::1/64"), HOPS, defaults=Props(tcp="silent"))
ALL4 = Chain(parse_prefix("198.18.22.1/24"), HOPS, defaults=Props(tcp="open"))
CHAINS = [OPEN4, RST6, PROH4, SIL6, ALL4]
TABLE = chaintable.Table(CHAINS)
SRC4, SRC6 = "192.0.2.77", "2001:db8:ff::77"


def to(chain: Chain, upper, ttl: int = 64) -> bytes:
    """A probe to the chain's destination (host + 3)."""
    dst = str(chain.hop_address(3))
    if chain.family == 4:
        return bytes(IP(src=SRC4, dst=dst, ttl=ttl, id=0x4242) / upper)
    return bytes(IPv6(src=SRC6, dst=dst, hlim=ttl) / upper)


SLACK = 64    # room behind the probe, as the daemon's buffer has


def answer(packet: bytes):
    got = chaintable.reply(packet, TABLE, slack=SLACK)
    assert got == reference_reply(packet, CHAINS, slack=SLACK)      # byte for byte
    return got


def syn(dport: int, seq: int = 1000, **kw) -> TCP:
    return TCP(sport=40000, dport=dport, seq=seq, flags="S", window=512, **kw)


@pytest.mark.parametrize("chain", [OPEN4, ALL4], ids=["listed", "all"])
def test_open_port_answers_syn_with_syn_ack(chain):
    got = answer(to(chain, syn(443, seq=0xfffffffe, options=[("MSS", 1400), ("SAckOK", b"")])))
    assert got.kind == K.TCP_SYN_ACK
    ip = IP(got)
    seg = ip[TCP]
    # From the destination, TTL 64 less the two hops in front (the chain's
    # model), DF clear, not a fragment.
    assert (ip.src, ip.dst, ip.ttl, ip.flags.value, ip.frag, ip.tos, ip.ihl, ip.len) == (
        str(chain.hop_address(3)), SRC4, 62, 0, 0, 0, 5, 20 + 24)
    assert (seg.sport, seg.dport) == (443, 40000)
    assert seg.flags == "SA" and seg.ack == 0xffffffff     # SEG.SEQ + 1, wrapping
    assert seg.dataofs == 6 and seg.options == [("MSS", 1460)]
    assert seg.window == 65535 and seg.urgptr == 0 and not bytes(seg.payload)
    # Checksums as scapy computes them.
    again = IP(bytes(ip))
    del again.chksum, again[TCP].chksum
    assert IP(bytes(again)).chksum == ip.chksum and IP(bytes(again))[TCP].chksum == seg.chksum
    # The ISN: different per connection and per SYN, the same for a retransmission.
    isn = seg.seq
    assert IP(answer(to(chain, syn(443, seq=0xfffffffe,
                                   options=[("MSS", 1400), ("SAckOK", b"")]))))[TCP].seq == isn
    assert IP(answer(to(chain, syn(443, seq=7))))[TCP].seq != isn
    assert IP(answer(to(chain, syn(80, seq=0xfffffffe))))[TCP].seq != isn


def test_open_port_v6_syn_ack_mss_and_checksum():
    chain = Chain(parse_prefix("2001:db8:22::1/64"), HOPS, defaults=Props(tcp="open"))
    table = chaintable.Table([chain])
    got = chaintable.reply(to(chain, syn(80)), table, slack=SLACK)
    assert got == reference_reply(to(chain, syn(80)), [chain], slack=SLACK)
    seg = IPv6(got)[TCP]
    assert seg.flags == "SA" and seg.ack == 1001 and seg.options == [("MSS", 1440)]
    again = IPv6(got)
    del again[TCP].chksum
    assert IPv6(bytes(again))[TCP].chksum == seg.chksum


@pytest.mark.parametrize("flags, want_flags, want_seq, want_ack", [
    ("A", "R", 777, 0),              # <SEQ=SEG.ACK><CTL=RST>
    ("PA", "R", 777, 0),
    ("SA", "R", 777, 0),             # a SYN-ACK to a listener is reset too
    ("F", "RA", 0, 1001),            # no ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN>
])
def test_open_port_resets_whatever_follows(flags, want_flags, want_seq, want_ack):
    """No state is kept: anything but a SYN (or the handshake's ACK) meets
    a listener with no TCB."""
    got = answer(to(OPEN4, TCP(sport=40000, dport=80, seq=1000, ack=777, flags=flags)))
    assert got.kind == K.TCP_RST
    check_rst(IP(got), 80, want_flags, want_seq, want_ack)


def check_rst(ip, sport: int, flags: str, seq: int, ack: int) -> None:
    """Every field of a RST (RFC 9293 3.1, 3.10.7.1), the checksum as scapy
    computes it."""
    seg = ip[TCP]
    assert (seg.sport, seg.dport, str(seg.flags), seg.seq, seg.ack) == (sport, 40000, flags,
                                                                       seq, ack)
    assert (seg.dataofs, seg.window, seg.urgptr, seg.options, bytes(seg.payload)) == (
        5, 0, 0, [], b"")
    again = ip.__class__(bytes(ip))
    del again[TCP].chksum
    assert ip.__class__(bytes(again))[TCP].chksum == seg.chksum


def test_open_port_takes_the_handshake_ack_and_resets_what_follows():
    """The ACK that completes the handshake (it acknowledges ISS + 1) is
    taken silently, as a SYN-cookie server takes it, so the client's
    connect() succeeds; a wrong ACK, data or a FIN are reset."""
    iss = IP(answer(to(OPEN4, syn(80, seq=0xffffffff))))[TCP].seq
    ack = (iss + 1) % 2**32

    def segment(flags: str, ack_no: int, data: bytes = b"") -> TCP:
        return TCP(sport=40000, dport=80, seq=0, ack=ack_no, flags=flags) / data

    assert answer(to(OPEN4, segment("A", ack))) == D.TCP_HANDSHAKE
    assert answer(to(OPEN4, segment("PA", ack))) == D.TCP_HANDSHAKE
    for flags, ack_no, data in (("A", ack + 1, b""), ("PA", ack, b"GET /"), ("FA", ack, b"")):
        got = answer(to(OPEN4, segment(flags, ack_no, data)))
        seg = IP(got)[TCP]
        assert got.kind == K.TCP_RST and (str(seg.flags), seg.seq) == ("R", ack_no), flags
    # Another destination's connection is not this one.
    assert answer(to(ALL4, TCP(sport=40000, dport=81, seq=0, ack=ack, flags="A"))).kind \
        == K.TCP_RST


def test_closed_port_answers_rst_ack():
    got = answer(to(OPEN4, syn(8080)))
    assert got.kind == K.TCP_RST
    check_rst(IP(got), 8080, "RA", 0, 1001)


def test_rst_answers_a_bare_rst():
    got = answer(to(RST6, syn(80)))
    assert got.kind == K.TCP_RST
    check_rst(IPv6(got), 80, "R", 0, 0)
    check_rst(IPv6(answer(to(RST6, TCP(sport=40000, dport=80, seq=5, ack=99, flags="A")))),
              80, "R", 99, 0)


@pytest.mark.parametrize("chain, upper", [
    (SIL6, syn(80)), (RST6, UDP(sport=5000, dport=33434)),
], ids=["tcp silent", "udp silent"])
def test_silent_destination_sends_nothing(chain, upper):
    assert answer(to(chain, upper)) == D.SILENT
    # The hops in front still answer.
    assert answer(to(chain, upper, ttl=2)).kind == K.TIME_EXCEEDED


@pytest.mark.parametrize("upper", [syn(80), UDP(sport=5000, dport=33434)], ids=["tcp", "udp"])
def test_prohibited_destination_answers_admin_prohibited(upper):
    probe = to(PROH4, upper)
    got = answer(probe)
    assert got.kind == K.PROHIBITED
    ip = IP(got)
    assert ip.src == str(PROH4.hop_address(3)) and (ip[ICMP].type, ip[ICMP].code) == (3, 13)
    assert bytes(ip[ICMP].payload)[:len(probe)] == probe


def test_prohibited_v6_is_1_1():
    chain = Chain(parse_prefix("2001:db8:23::1/64"), HOPS, defaults=Props(udp="prohibited"))
    probe = to(chain, UDP(sport=5000, dport=33434))
    got = chaintable.reply(probe, chaintable.Table([chain]))
    assert got == reference_reply(probe, [chain]) and got.kind == K.PROHIBITED
    icmp = IPv6(got)[ICMPv6DestUnreach]
    assert (icmp.type, icmp.code) == (1, 1)


def test_syn_ack_needs_four_octets_behind_a_bare_syn():
    """A 20-octet SYN becomes a 24-octet SYN-ACK in place: without room
    behind the probe the core refuses rather than write past the buffer."""
    probe = to(OPEN4, syn(80))
    assert chaintable.reply(probe, TABLE, slack=3) == D.NO_ROOM
    assert chaintable.reply(probe, TABLE, slack=4).kind == K.TCP_SYN_ACK
    assert reference_reply(probe, CHAINS, slack=3) == D.NO_ROOM
