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
        check_host(self.interface, self.where)
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


def parse_chain_address(text: str, where: str = "command line") -> Interface:
    """A chain's `ADDR/PLEN` (parse_prefix), refused where it can never work."""
    return check_host(parse_prefix(text, where), where)


# What a chain's host can never be, and why (the kernel's and RFCs' rules).
_NEVER = (
    (lambda i: i.network.prefixlen == 0,
     "a /0 would take the whole address family, default route included, into the TUN"),
    (lambda i: i.ip.is_unspecified, "the unspecified address is no host (RFC 4291 2.5.2, "
                                    "RFC 1122 3.2.1.3)"),
    (lambda i: i.ip.is_loopback, "loopback addresses never leave the host (RFC 1122 3.2.1.3)"),
    (lambda i: i.ip.is_multicast, "a multicast address is never a probe's unicast "
                                  "destination, so nothing would be answered"),
    (lambda i: i.ip.is_link_local, "link-local addresses are never forwarded (RFC 3927 2.6, "
                                   "RFC 4291 2.5.6), so no probe from beyond the link arrives"),
    (lambda i: getattr(i, "scope_id", None) is not None,
     "a scoped address (%zone) belongs to one link; write the address without it"),
    (lambda i: i.version == 4 and i.network.prefixlen <= 30
     and i.ip == i.network.broadcast_address,
     "the broadcast address of its prefix is no host (RFC 919, RFC 1122 3.2.1.3)"),
)


def check_host(interface: Interface, where: str) -> Interface:
    """Refuse a chain host that can never answer a probe, naming why."""
    for never, why in _NEVER:
        if never(interface):
            raise UsageError(f"{where}: {interface} cannot be a chain: {why}")
    return interface


def check_overlap(chains: Iterable[Chain]) -> None:
    """Chains must not share an address: each packet belongs to one chain."""
    seen: list[Chain] = []
    for chain in chains:
        for other in seen:
            if chain.family == other.family and chain.network.overlaps(other.network):
                raise UsageError(
                    f"chains overlap: {other.interface} ({other.where}) and "
                    f"{chain.interface} ({chain.where})")
        seen.append(chain)
