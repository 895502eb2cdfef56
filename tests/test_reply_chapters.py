"""Chapters at the reply core (docs/stories.md, "Chapters"): a probe to a
chapter's address X arriving with TTL t is answered as a probe to the
chain's destination D arriving with TTL t + k - 1 (k the chapter's start),
by the same router with the same reply, except that at the destination
the host answers from X and every quote holds the probe as it was
received. Table-driven over chains with and without per-hop properties,
parsed by scapy.

Chains (documentation prefixes only):

    PLAIN4  192.0.2.1/24        7 hops, hop 4 silent; chapters at 2, 4, 7
    RICH4   198.51.100.129/25   7 hops, hop 1 mpls, hop 2 a NAT, hop 3 two '+'
                                (one with a '++' router further), balanced
                                by flow, hop 5 mtu 1400; chapters at 2, 3, 6
    RICH6   2001:db8:5::1/64    the same, balanced by destination, mtu 1280
    END6    2001:db8:6::1/64    4 hops, end = "!X"; chapter at 3
"""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.inet6 import (ICMPv6EchoRequest, IPerror6, IPv6, TCPerror as _TCPerror6,
                                UDPerror as _UDPerror6)

from routechain import chaintable
from routechain.chain import Chain, Chapter, Hop, parse_prefix
from routechain.hopprops import Label, Props

assert _TCPerror6 and _UDPerror6    # scapy's inet6 registers the quoted layers

NAT4 = (ipaddress.ip_address("198.51.100.200"), 40001)
NAT6 = (ipaddress.ip_address("2001:db8:ffff::200"), 40001)


def rich(family: int) -> tuple[Hop, ...]:
    nat = NAT4 if family == 4 else NAT6
    balance = "flow" if family == 4 else "destination"
    return (
        Hop(name="one", props=Props(mpls=(Label(16001),), iface="ge-0/0/1")),
        Hop(name="two", props=Props(nat=nat, dscp=46)),
        Hop(name="three", props=Props(balance=balance, mpls=(Label(3003),)),
            alternatives=(Hop(name="north", props=Props(mpls=(Label(3004),))),
                          Hop(name="south", further=(Hop(name="detour"),)))),
        Hop(name="four", props=Props(reply_ttl=255)),
        Hop(name="five", props=Props(mtu=1400 if family == 4 else 1280)),
        Hop(name="six"),
        Hop(name="seven"),
    )


def chapters(*starts: int) -> tuple[Chapter, ...]:
    return tuple(Chapter(f"c{k}", k, f"test:{k}") for k in starts)


PLAIN4 = Chain(parse_prefix("192.0.2.1/24"),
               tuple(Hop(name=f"line{k}", silent=k == 4) for k in range(1, 8)),
               chapters=chapters(2, 4, 7))
RICH4 = Chain(parse_prefix("198.51.100.129/25"), rich(4), chapters=chapters(2, 3, 6))
RICH6 = Chain(parse_prefix("2001:db8:5::1/64"), rich(6), chapters=chapters(2, 3, 6))
END6 = Chain(parse_prefix("2001:db8:6::1/64"), tuple(Hop(name=f"e{k}") for k in range(1, 5)),
             defaults=Props(end="!X"), chapters=chapters(3))
CHAINS = [PLAIN4, RICH4, RICH6, END6]
TABLE = chaintable.Table(CHAINS)
SLACK = 2000
SRC4, SRC6 = "192.0.2.250", "2001:db8:ff::2"


def probe(chain: Chain, dst, ttl: int, kind: str, sport: int, size: int = 24) -> bytes:
    if kind == "udp":
        upper = UDP(sport=sport, dport=33434) / bytes(size)
    elif kind == "tcp":
        upper = TCP(sport=sport, dport=80, flags="S", seq=1000)
    elif chain.family == 4:
        upper = ICMP(id=sport, seq=1) / bytes(size)
    else:
        upper = ICMPv6EchoRequest(id=sport, seq=1) / bytes(size)
    if chain.family == 4:
        return bytes(IP(src=SRC4, dst=str(dst), ttl=ttl, flags="DF", id=7) / upper)
    return bytes(IPv6(src=SRC6, dst=str(dst), hlim=ttl) / upper)


def parse(reply: bytes):
    return IP(reply) if reply[0] >> 4 == 4 else IPv6(reply)


def quoted(packet):
    """The quoted probe of an ICMP error, or None for a host's own reply."""
    for layer in (IPerror, IPerror6):
        if layer in packet:
            return packet[layer]
    return None


def ttl_of(packet) -> int:
    return packet.ttl if isinstance(packet, (IP, IPerror)) else packet.hlim


def outer_icmp(packet):
    """(type, code) of the reply, or the protocol of a host's own reply."""
    upper = packet.payload
    if isinstance(packet, IP) and packet.proto == 1 or isinstance(packet, IPv6) and packet.nh == 58:
        return upper.type, upper.code
    return packet.proto if isinstance(packet, IP) else packet.nh


def extension(reply: bytes) -> bytes:
    """The RFC 4884 extension structure behind the original datagram field,
    label TTLs included, or b"" (its offset from the ICMP length field)."""
    v4 = reply[0] >> 4 == 4
    icmp = reply[20:] if v4 else reply[40:]
    length = icmp[5] * 4 if v4 else icmp[4] * 8
    return bytes(icmp[8 + length:]) if length else b""


CASES = [(chain, chapter, kind)
         for chain in CHAINS for chapter in chain.chapters
         for kind in ("udp", "icmp", "tcp")]


@pytest.mark.parametrize("chain,chapter,kind", CASES,
                         ids=[f"{c.interface}-{ch.label}-{kind}" for c, ch, kind in CASES])
def test_chapter_answers_as_the_destination_entered_later(chain, chapter, kind):
    """For each TTL up to past arrival and several flows: the same router,
    kind, reply TTL, ICMP type and code and extension (label TTLs too) as
    the destination probed with TTL t + k - 1; the source X at arrival;
    the quote is the probe to X as received (after the NAT in front)."""
    x = chain.chapter_address(chapter)
    d = chain.destination
    arrived = replied = 0
    for sport in range(40000, 40012):
        for t in range(1, chain.length - chapter.start + 3):
            to_x = chaintable.reply(probe(chain, x, t, kind, sport), TABLE, slack=SLACK)
            to_d = chaintable.reply(probe(chain, d, t + chapter.start - 1, kind, sport), TABLE,
                                    slack=SLACK)
            if isinstance(to_d, chaintable.Drop):
                assert to_x == to_d, (t, sport)
                continue
            assert isinstance(to_x, bytes), (t, sport, to_x)
            replied += 1
            assert (to_x.kind, to_x.router) == (to_d.kind, to_d.router), (t, sport)
            px, pd = parse(to_x), parse(to_d)
            assert ttl_of(px) == ttl_of(pd)
            assert outer_icmp(px) == outer_icmp(pd)
            assert extension(to_x) == extension(to_d)
            qx, qd = quoted(px), quoted(pd)
            if to_d.kind in (chaintable.Kind.TIME_EXCEEDED, chaintable.Kind.TOO_BIG) or (
                    to_d.kind == chaintable.Kind.ENDING):
                # A router answers: from the same address, quoting the probe to X.
                assert px.src == pd.src != str(x)
                assert qx.dst == str(x) and ttl_of(qx) == t
                assert qx.src == qd.src                  # the NAT in front, alike
                # Ports, or ICMP type and code (an ICMPv6 checksum covers the address).
                same = 2 if kind == "icmp" else 4
                assert bytes(qx.payload)[:same] == bytes(qd.payload)[:same]
            else:
                # The destination answers, from the address probed, to the sender.
                arrived += 1
                assert pd.src == str(d) and px.src == str(x)
                assert px.dst == pd.dst
                if qx is not None:               # Port Unreachable: the probe as received
                    assert qx.dst == str(x) and ttl_of(qx) == t
    assert replied > 0
    if chain.end == "host":
        assert arrived > 0


def test_chapter_trace_starts_at_its_line():
    """TTL 1 to a chapter meets hop k (traceroute's first line shows line
    k), and each TTL after it the next hop, until the destination answers
    from the chapter's address."""
    for chain in (PLAIN4, RICH4, RICH6):
        for chapter in chain.chapters:
            x = chain.chapter_address(chapter)
            seen = []
            for t in range(1, chain.length + 2):
                got = chaintable.reply(probe(chain, x, t, "udp", 40000), TABLE, slack=SLACK)
                if isinstance(got, chaintable.Drop):
                    seen.append(None)
                    continue
                seen.append(parse(got).src)
                if got.kind == chaintable.Kind.PORT_UNREACH:
                    break
            for i, k in enumerate(range(chapter.start, chain.length + 1)):
                if chain.hop(k).silent:
                    assert seen[i] is None, (chapter, seen)
                elif k < chain.length:
                    routers = {str(chain.branch_address(k, b))
                               for b in range(len(chain.routers_at(k)))}
                    assert seen[i] in routers, (chapter, k, seen)
            assert seen[chain.length - chapter.start] == str(x), (chapter, seen)
            assert len(seen) == chain.length - chapter.start + 1


def test_plain_addresses_past_the_chain_are_unchanged():
    """Past the chain, an address that is no chapter is answered as before:
    Time Exceeded on the way, Host Unreachable from the last hop."""
    last = max(int(PLAIN4.chapter_address(c)) for c in PLAIN4.chapters)
    past = ipaddress.ip_address(last + 1)
    got = chaintable.reply(probe(PLAIN4, past, 1, "udp", 40000), TABLE)
    assert got.kind == chaintable.Kind.TIME_EXCEEDED and parse(got).src == str(PLAIN4.host + 1)
    got = chaintable.reply(probe(PLAIN4, past, 64, "udp", 40000), TABLE)
    assert got.kind == chaintable.Kind.HOST_UNREACH
    assert parse(got).src == str(PLAIN4.destination)


def test_chapter_addresses_follow_every_address_the_chain_uses():
    """The first free addresses after the destination and every '+' and
    '++' router, one per chapter, in order."""
    used = max([int(RICH4.destination)] + [int(RICH4.branch_address(k, b))
                                           for k in range(1, RICH4.length + 1)
                                           for b in range(len(RICH4.routers_at(k)))])
    assert [int(RICH4.chapter_address(c)) for c in RICH4.chapters] == [used + 1, used + 2,
                                                                       used + 3]
    assert [str(PLAIN4.chapter_address(c)) for c in PLAIN4.chapters] == [
        "192.0.2.9", "192.0.2.10", "192.0.2.11"]
