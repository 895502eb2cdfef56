"""The C core against the pure-Python reference, byte for byte, on random
chains and probes with a fixed seed."""

from __future__ import annotations

import collections
import ipaddress
import os
import random

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6

from routechain import chaintable

from probes import many_chains, random_chains, random_probe
from reference import reference_reply

SEED = 20261123
PROBES = int(os.environ.get("RC_RANDOM_PROBES", "4000"))


def label(value: chaintable.Kind | chaintable.Drop) -> str:
    return f"{type(value).__name__}.{value.name}"


def test_reply_matches_reference_on_random_probes():
    """Every reply and every drop reason agrees with the reference."""
    rng = random.Random(SEED)
    seen = collections.Counter()
    chains = random_chains(rng)
    table = chaintable.Table(chains)
    for n in range(PROBES):
        if n % 200 == 0:
            chains = random_chains(rng)
            table = chaintable.Table(chains)
        packet = random_probe(rng, chains)
        headroom = rng.choice([chaintable.HEADROOM] * 20 + [0, 27, 28, 47, 48])
        # Behind the probe: none, or what an extension needs, or plenty.
        slack = rng.choice([0, 64, 150, 2000, 2000, 2000])
        got = chaintable.reply(packet, table, headroom=headroom, slack=slack)
        want = reference_reply(packet, chains, headroom=headroom, slack=slack)
        assert got == want, f"probe {n}: {packet.hex()} with {chains}"
        # Kind and Drop are IntEnums whose values collide: count by name.
        seen[label(got.kind if isinstance(got, bytes) else got)] += 1
        if isinstance(got, bytes) and rfc4884_length(got):
            seen["extension"] += 1
    # The generator must reach every reply kind and every drop but the
    # ones only hand-made probes reach.
    # A handshake's ACK must acknowledge a 32-bit hash: test_reply_tcp.py.
    rare = {chaintable.Drop.NONE, chaintable.Drop.BAD_VERSION, chaintable.Drop.TCP_HANDSHAKE}
    wanted = [label(k) for k in chaintable.Kind] + [label(d) for d in chaintable.Drop if d not in rare]
    assert [name for name in wanted if not seen[name]] == [], seen
    assert seen["extension"] >= PROBES // 40, seen


def rfc4884_length(reply: bytes) -> int:
    """The original datagram field's length octet of an ICMP error, 0 if none."""
    if reply[0] >> 4 == 4:
        return reply[20 + 5] if reply[9] == 1 and reply[20] in (3, 11) else 0
    return reply[40 + 4] if reply[6] == 58 and reply[40] in (1, 3) else 0


def test_lookup_matches_reference_in_a_large_table():
    """Among 600 chains in random order, a probe to each chain's first hop,
    its destination, and the addresses just outside its prefix meets the
    chain the reference's linear scan finds (or none)."""
    rng = random.Random(SEED)
    chains = many_chains(rng, 600)
    table = chaintable.Table(chains)
    answered = 0
    for chain in chains:
        net = chain.network
        below, above = int(net.network_address) - 1, int(net.broadcast_address) + 1
        targets = [chain.hop_address(1), chain.destination]
        targets += [ipaddress.ip_address(a) for a in (below, above) if 0 <= a < 2**net.max_prefixlen]
        for dst in targets:
            for ttl in (1, 64):
                packet = udp_probe(dst, ttl)
                got = chaintable.reply(packet, table)
                assert got == reference_reply(packet, chains), f"{dst} ttl {ttl} among {chain}"
                answered += isinstance(got, bytes)
    assert answered >= 4 * len(chains), answered  # hop 1 and destination, twice each


def udp_probe(dst, ttl: int) -> bytes:
    if dst.version == 4:
        return bytes(IP(src="192.0.2.200", dst=str(dst), ttl=ttl) / UDP(dport=33434))
    return bytes(IPv6(src="2001:db8:ffff::7", dst=str(dst), hlim=ttl) / UDP(dport=33434))
