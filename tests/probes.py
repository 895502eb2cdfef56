"""Random chains and probes for the byte-for-byte comparisons and the
fuzzers' seed corpus. Documentation prefixes only: 192.0.2.0/24,
198.51.100.0/24, 198.18.0.0/15, 2001:db8::/32."""

from __future__ import annotations

import dataclasses
import ipaddress
import random

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption
from scapy.layers.inet6 import (ICMPv6EchoRequest, ICMPv6Unknown, IPv6, IPv6ExtHdrDestOpt,
                                IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting)
from scapy.packet import Raw

from routechain.chain import Chain, Chapter, Hop, parse_prefix
from routechain.errors import UsageError
from routechain.hopprops import BALANCES, TCP_ANSWERS, UDP_ANSWERS, Label, Props

SOURCES_V4 = ["198.51.100.7", "192.0.2.200", "198.19.255.1"]
SOURCES_V6 = ["2001:db8:ffff::7", "2001:db8:aaaa::1"]
BAD_SOURCES_V4 = ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "240.0.0.1"]
BAD_SOURCES_V6 = ["::", "::1", "ff02::1", "::ffff:198.51.100.7"]


def random_chains(rng: random.Random) -> list[Chain]:
    """Non-overlapping chains of both families, some with silent hops,
    some hosts placed so hop addresses carry across bytes and words."""
    v4_hosts = [("192.0.2.1", 24), ("198.18.0.250", 15), ("198.51.100.100", 26)]
    v6_hosts = [("2001:db8:1::1", 64), ("2001:db8:2:0:ffff:ffff:ffff:ff80", 64),
                ("2001:db8:3::ff00", 120), ("2001:db8:4::fffe", 127)]
    chains = []
    for text, plen in rng.sample(v4_hosts, rng.randint(1, 3)) + rng.sample(v6_hosts, rng.randint(1, 4)):
        interface = parse_prefix(f"{text}/{plen}")
        room = Chain(interface).length
        if room == 0:
            continue
        hops: tuple[Hop, ...] = ()
        extended = rng.random() < 0.5
        if rng.random() < 0.6:
            length = rng.randint(1, min(room, 40))
            hops = tuple(random_hop(rng, interface.version, k, extended and k < length)
                         for k in range(1, length + 1))
        reply_ttl = rng.choice([1, 5, 30, 64, 255])
        # What the destination answers to TCP and UDP (half the chains).
        destination = {} if rng.random() < 0.5 else {
            "tcp": rng.choice(TCP_ANSWERS),
            "tcp_open": rng.choice([None, (80,), (443, 80), (22, 80, 443, 8080)]),
            "udp": rng.choice(UDP_ANSWERS)}
        defaults = Props(end=rng.choice(["host", "!N", "!H", "!X"]) if extended else None,
                         balance=rng.choice((None,) + BALANCES), **destination)
        length = len(hops) or room
        chapters = () if length < 2 or rng.random() < 0.5 else tuple(
            Chapter(f"c{n}", rng.randint(2, length), f"random:chapter {n}")
            for n in range(rng.choice([1, 1, 2, 3])))
        try:
            try:
                chains.append(Chain(interface, hops, reply_ttl=reply_ttl, defaults=defaults,
                                    chapters=chapters))
            except UsageError:   # no room for the chapters: go without
                chains.append(Chain(interface, hops, reply_ttl=reply_ttl, defaults=defaults))
        except UsageError:   # no room for the alternatives' addresses: go without
            hops = tuple(Hop(silent=h.silent, where=h.where,
                             props=dataclasses.replace(h.props, balance=None)) for h in hops)
            chains.append(Chain(interface, hops, reply_ttl=reply_ttl, defaults=defaults))
    return chains


def random_props(rng: random.Random, family: int, extended: bool) -> Props:
    """Per-hop properties: label stacks, interface information of every
    shape (name lengths across the 4-octet padding), MTUs, reply TTLs."""
    if not extended or rng.random() < 0.3:
        return Props()
    name = "".join(rng.choice("abcxyz-/0é") for _ in range(rng.randint(1, 40)))
    name = name.encode()[:63].decode("utf-8", "ignore") or "x"
    low = 68 if family == 4 else 1280
    return Props(
        mpls=tuple(Label(rng.randrange(2**20), rng.randrange(8))
                   for _ in range(rng.randint(1, 8))) if rng.random() < 0.6 else None,
        iface=name if rng.random() < 0.5 else None,
        ifindex=rng.randrange(2**32) if rng.random() < 0.3 else None,
        ifaddr=ipaddress.ip_address(rng.choice(["192.0.2.9", "2001:db8::9"]))
        if rng.random() < 0.3 else None,
        ifmtu=rng.choice([1500, 9000, 2**32 - 1]) if rng.random() < 0.3 else None,
        mtu=rng.choice([low, low + 1, max(low, 576), 1280, 1400, 1500])
        if rng.random() < 0.2 else None,
        reply_ttl=rng.choice([1, 64, 255]) if rng.random() < 0.2 else None,
        # What a router rewrites in what it forwards: a NAT, DS re-marks, DF.
        nat=(ipaddress.ip_address("198.51.100.200" if family == 4 else "2001:db8:ffff::200"),
             rng.choice([None, 1, 40000, 65535])) if rng.random() < 0.15 else None,
        dscp=rng.choice([0, 10, 46, 63]) if rng.random() < 0.15 else None,
        ecn=rng.randrange(4) if rng.random() < 0.15 else None,
        df=rng.choice(["set", "clear"]) if family == 4 and rng.random() < 0.1 else None)


def random_hop(rng: random.Random, family: int, k: int, extended: bool) -> Hop:
    """Hop k, and when extended sometimes one to three '+' alternatives."""
    alternatives = ()
    if extended and rng.random() < 0.2:
        # Some branches are longer: '++' routers further along (no mtu).
        alternatives = tuple(Hop(silent=rng.random() < 0.1, where=f"random:{k}+{n}",
                                 props=random_props(rng, family, True),
                                 further=tuple(Hop(silent=rng.random() < 0.1,
                                                   where=f"random:{k}+{n}+{m}",
                                                   props=dataclasses.replace(
                                                       random_props(rng, family, True), mtu=None,
                                                       nat=None, dscp=None, ecn=None, df=None))
                                               for m in range(rng.choice([0, 0, 1, 2]))))
                             for n in range(rng.randint(1, 3)))
    props = random_props(rng, family, extended)
    if alternatives and rng.random() < 0.5:
        props = dataclasses.replace(props, balance=rng.choice(BALANCES))
    return Hop(silent=rng.random() < 0.1, where=f"random:{k}", props=props,
               alternatives=alternatives)


def pick_destination(rng: random.Random, chains: list[Chain]) -> str:
    chain = rng.choice(chains)
    branches = [(k, b) for k in range(1, len(chain.hops) + 1)
                for b in range(1, len(chain.routers_at(k)))]
    if branches and rng.random() < 0.2:
        return str(chain.branch_address(*rng.choice(branches)))
    if chain.chapters and rng.random() < 0.25:
        return str(chain.chapter_address(rng.choice(chain.chapters)))
    roll = rng.random()
    if roll < 0.7:
        k = rng.randint(-3, chain.length + 3)
    elif roll < 0.9:
        k = rng.randint(-(2**20), 2**20)
    else:
        return "203.0.113.9" if chain.family == 4 else "2001:db9::1"
    address = chain.host + 0
    try:
        address = chain.host + k
    except ipaddress.AddressValueError:
        pass
    if address not in chain.network:
        address = chain.network.broadcast_address if k > 0 else chain.network.network_address
    return str(address)


def random_upper(rng: random.Random, family: int):
    payload = Raw(bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 7, 32, 200, 600, 1400]))))
    roll = rng.random()
    if roll < 0.3:
        return UDP(sport=rng.randrange(1, 65536), dport=rng.randrange(33434, 33535)) / payload
    if roll < 0.55:
        flags = rng.choice(["S", "SE", "SEC", "A", "PA", "FA", "R", "RA", "", "F", "SF"])
        options = [("MSS", 1460), ("SAckOK", b"")] if rng.random() < 0.3 else []
        return TCP(sport=rng.randrange(1, 65536),
                   dport=rng.choice([80, 443, rng.randrange(1, 65536)]),
                   seq=rng.randrange(2**32), ack=rng.randrange(2**32), flags=flags,
                   options=options) / payload
    if roll < 0.8:
        if family == 4:
            return ICMP(type=8, id=rng.randrange(65536), seq=rng.randrange(65536)) / payload
        return ICMPv6EchoRequest(id=rng.randrange(65536), seq=rng.randrange(65536)) / payload
    if roll < 0.9:
        if family == 4:
            return ICMP(type=rng.choice([0, 3, 11, 13, 17, 5, 99, 42]), code=rng.randrange(4)) / payload
        return ICMPv6Unknown(type=rng.choice([1, 3, 4, 129, 133, 135, 161, 162, 200, 255]),
                             code=rng.randrange(4), msgbody=bytes(payload))
    return Raw(bytes([rng.randrange(256) for _ in range(8)])) / payload


def random_probe(rng: random.Random, chains: list[Chain]) -> bytes:
    """One packet, usually well formed, sometimes corrupted."""
    dst = pick_destination(rng, chains)
    family = ipaddress.ip_address(dst).version
    ttl = rng.choice([0, 1, 2, 3, 64, 64, 64, rng.randrange(256)])
    upper = random_upper(rng, family)
    if family == 4:
        src = rng.choice(BAD_SOURCES_V4) if rng.random() < 0.05 else rng.choice(SOURCES_V4)
        ip = IP(src=src, dst=dst, ttl=ttl, tos=rng.randrange(256), id=rng.randrange(65536),
                flags=rng.choice(["", "", "DF", "DF", "MF"]),
                frag=rng.choice([0] * 9 + [rng.randrange(1, 8192)]))
        if rng.random() < 0.2:
            ip.options = [IPOption(b"\x01" * rng.choice([1, 4, 8, 40]))]
        if isinstance(upper, Raw):
            ip.proto = rng.choice([47, 50, 132, 59, 255])
    else:
        src = rng.choice(BAD_SOURCES_V6) if rng.random() < 0.05 else rng.choice(SOURCES_V6)
        ip = IPv6(src=src, dst=dst, hlim=ttl, tc=rng.randrange(256), fl=rng.randrange(2**20))
        for _ in range(rng.choice([0, 0, 0, 1, 2, 3, 8, 9])):
            ip = ip / rng.choice([
                IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(),
                IPv6ExtHdrRouting(addresses=["2001:db8::1"], segleft=0),
                IPv6ExtHdrFragment(offset=rng.choice([0, 0, 3]), m=rng.randrange(2), id=7)])
        if isinstance(upper, Raw):
            ip = ip / IPv6ExtHdrDestOpt(nh=rng.choice([47, 50, 132, 59, 255]))
    packet = bytearray(bytes(ip / upper))
    corrupt(rng, packet)
    return bytes(packet)


def corrupt(rng: random.Random, packet: bytearray) -> None:
    roll = rng.random()
    if roll < 0.05:
        del packet[rng.randrange(len(packet)):]
    elif roll < 0.1:
        packet.extend(bytes(rng.randrange(1, 30)))     # link padding
    elif roll < 0.15:
        packet[rng.randrange(len(packet))] ^= 1 << rng.randrange(8)
    elif roll < 0.18 and len(packet) > 4:
        packet[2 if packet[0] >> 4 == 4 else 4] ^= 0xff  # a lying length field


def many_chains(rng: random.Random, n: int) -> list[Chain]:
    """n chains of both families in random order that do not overlap, with
    random prefix lengths, random gaps between prefixes (some none at all)
    and hosts anywhere in their prefix: a table the lookup must search."""
    chains = []
    for family, base, lengths in ((4, int(ipaddress.IPv4Address("198.18.0.0")), (22, 32)),
                                  (6, int(ipaddress.IPv6Address("2001:db8::")), (56, 128))):
        bits = 32 if family == 4 else 128
        cursor = base
        for _ in range(n // 2 if family == 4 else n - n // 2):
            plen = rng.randint(*lengths)
            size = 1 << (bits - plen)
            start = -(-cursor // size) * size + size * rng.choice([0, 0, 1, 3])
            # Anywhere but the broadcast address, which is never a chain's host.
            host = start + rng.randrange(size - 1 if family == 4 and plen <= 30 else size)
            interface = ipaddress.ip_interface((host, plen))
            if Chain(interface).length:
                chains.append(Chain(interface))
            cursor = start + size
    rng.shuffle(chains)
    return chains
