"""The chain model: a host address with its prefix, and the hops behind it.

A chain whose host is H answers for the addresses H+1 .. H+length of its
prefix: a probe to D arriving with TTL t is answered by hop H+t with Time
Exceeded until H+t reaches D. Pure data, no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable

from .errors import UsageError

MAX_HOPS = 255
DEFAULT_REPLY_TTL = 64

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Hop:
    """One hop of a chain: its reverse-DNS name (None without a story) and
    whether it stays silent, with where it was written for messages."""

    name: str | None = None
    silent: bool = False
    where: str = ""


@dataclass(frozen=True)
class Chain:
    interface: Interface
    hops: tuple[Hop, ...] = ()
    reply_ttl: int = DEFAULT_REPLY_TTL
    where: str = "command line"
    suffix: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        room = room_after(self.interface)
        if len(self.hops) > room:
            raise UsageError(
                f"{self.where}: {len(self.hops)} hops do not fit after "
                f"{self.interface}: the prefix has room for {room}")
        if not 1 <= self.reply_ttl <= 255:
            raise UsageError(f"{self.where}: reply TTL {self.reply_ttl} is not in 1..255")

    @property
    def family(self) -> int:
        return self.interface.version

    @property
    def host(self) -> Address:
        return self.interface.ip

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return self.interface.network

    @property
    def length(self) -> int:
        """Hops host+1 .. host+length answer; a story fixes it, else the prefix."""
        return len(self.hops) if self.hops else room_after(self.interface)

    def hop_address(self, k: int) -> Address:
        if not 1 <= k <= self.length:
            raise IndexError(f"hop {k} is outside 1..{self.length} of {self.interface}")
        return self.host + k

    def hop(self, k: int) -> Hop:
        """Hop k (1-based); a chain without a story has anonymous hops."""
        self.hop_address(k)
        return self.hops[k - 1] if self.hops else Hop()

    @property
    def destination(self) -> Address | None:
        return self.host + self.length if self.length else None


def room_after(interface: Interface) -> int:
    """How many hops fit after the host inside its prefix: never the IPv4
    broadcast address of a /30 or shorter, never more than MAX_HOPS."""
    net = interface.network
    last = int(net.broadcast_address)
    if interface.version == 4 and net.prefixlen <= 30:
        last -= 1
    return max(0, min(MAX_HOPS, last - int(interface.ip)))


def parse_prefix(text: str, where: str = "command line") -> Interface:
    """`ADDR/PLEN` or a bare address (/32, /128), as the original takes them."""
    try:
        return ipaddress.ip_interface(text.strip())
    except ValueError:
        pass
    addr, _, plen = text.strip().partition("/")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise UsageError(f"{where}: bad address {addr!r} in {text!r}") from None
    raise UsageError(
        f"{where}: bad prefix length {plen!r} in {text!r}: "
        f"IPv{ip.version} takes 0..{ip.max_prefixlen}")


def span(chain: Chain) -> tuple[int, int, int]:
    """(family, first, last address) of the chain's prefix as integers: the
    order of the C core's table (core.Table) and of the overlap check."""
    net = chain.network
    return chain.family, int(net.network_address), int(net.broadcast_address)


def check_overlap(chains: Iterable[Chain]) -> None:
    """Chains must not share an address: each packet belongs to one chain.

    O(n log n): in the order of their first addresses, chains that do not
    overlap also end in increasing order, so the first chain to overlap an
    earlier one starts at or before the end of the one just before it. The
    pair is named in input order."""
    chains = list(chains)
    order = sorted(range(len(chains)), key=lambda i: span(chains[i])[:2])
    for before, i in zip(order, order[1:]):
        family, first, _ = span(chains[i])
        b_family, _, b_last = span(chains[before])
        if family == b_family and first <= b_last:
            a, b = sorted((before, i))
            raise UsageError(
                f"chains overlap: {chains[a].interface} ({chains[a].where}) and "
                f"{chains[b].interface} ({chains[b].where})")
