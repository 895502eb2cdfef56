"""The chain model: a host address with its prefix, and the hops behind it.

A chain whose host is H answers for the addresses H+1 .. H+length of its
prefix: a probe to D arriving with TTL t is answered by hop H+t with Time
Exceeded until H+t reaches D. Pure data, no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable

from .errors import UsageError
from .hopprops import MAX_REPLY_TTL, MIN_MTU6, NO_PROPS, REPLY_FIELDS, Props

MAX_HOPS = 255
MAX_ALTERNATIVES = 255   # routers of one hop besides itself (rc_hop.n_alts), and of a chain
MAX_CHAPTERS = 32        # RC_MAX_CHAPTERS: the reply core scans them for a probe past the chain
DEFAULT_REPLY_TTL = 64

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Hop:
    """One hop of a chain: its reverse-DNS name (None without a story),
    whether it stays silent, its properties (docs/stories.md), the routers
    load-balanced with it ('+' lines), on an alternative the routers
    further along its branch before it rejoins ('++' lines: the branch is
    that many hops longer), and where it was written."""

    name: str | None = None
    silent: bool = False
    where: str = ""
    props: Props = NO_PROPS
    alternatives: tuple["Hop", ...] = ()
    further: tuple["Hop", ...] = ()


@dataclass(frozen=True)
class Timing:
    """What one hop (or one of its alternatives) does to its replies, with
    the chain's defaults and the path's delay resolved."""

    delay_us: int = 0
    jitter_us: int = 0
    loss: float = 0.0
    rate: int | None = None
    burst: int | None = None


@dataclass(frozen=True)
class Chapter:
    """A chapter of a named chain: `<label>.<name>` is an address of the
    chain's prefix (Chain.chapter_address) that a trace enters at hop
    `start`, so that it shows the story from that line on (docs/stories.md)."""

    label: str
    start: int
    where: str = ""


@dataclass(frozen=True)
class Chain:
    interface: Interface
    hops: tuple[Hop, ...] = ()
    reply_ttl: int = DEFAULT_REPLY_TTL
    where: str = "command line"
    suffix: str | None = field(default=None, compare=False)
    defaults: Props = NO_PROPS
    name: str | None = field(default=None, compare=False)  # forward name (names.py)
    chapters: tuple[Chapter, ...] = ()

    def __post_init__(self) -> None:
        check_host(self.interface, self.where)
        room = room_after(self.interface)
        if len(self.hops) > room:
            raise UsageError(
                f"{self.where}: {len(self.hops)} hops do not fit after "
                f"{self.interface}: the prefix has room for {room}")
        if not 1 <= self.reply_ttl <= MAX_REPLY_TTL:
            raise UsageError(f"{self.where}: reply TTL {self.reply_ttl} is not in "
                             f"1..{MAX_REPLY_TTL}")
        self._check_properties()
        self._branch_addresses  # allocate now: a bad address is an error at load
        self._chapter_addresses

    def _check_properties(self) -> None:
        """What a chain's hops may not hold, checked once per story and
        family: chains telling one story share its hops (config.Stories),
        so 10,000 chains of 10 stories check 10 (StoryFacts)."""
        facts = StoryFacts.of(self.hops)
        if self.family not in facts.checked:
            check_hops(self.hops, self.family)
            facts.checked.add(self.family)

    @cached_property
    def _branch_addresses(self) -> dict[tuple[int, int], Address]:
        """(hop, branch) -> address of every '+' alternative: as written, or
        the next free address after the destination."""
        out: dict[tuple[int, int], Address] = {}
        if not StoryFacts.of(self.hops).alternatives:
            return out  # most chains: no '+' line, no set of their addresses to build
        wanted = [(k, b, alt) for k in range(1, len(self.hops) + 1)
                  for b, alt in enumerate(self.routers_at(k)[1:], 1)]
        host = int(self.host)
        taken = set(range(host, host + self.length + 1))
        for k, b, alt in wanted:
            addr = alt.props.address
            if addr is None:
                continue
            if addr.version != self.family or addr not in self.network:
                raise UsageError(f"{alt.where}: address {addr} is outside the chain's "
                                 f"prefix {self.network}")
            if int(addr) in taken:
                raise UsageError(f"{alt.where}: address {addr} is already the host, a hop "
                                 "or another alternative of this chain")
            taken.add(int(addr))
            out[(k, b)] = addr
        nxt = host + self.length + 1
        last = last_host(self.network)
        for k, b, alt in wanted:
            if alt.props.address is not None:
                continue
            while nxt in taken:
                nxt += 1
            if nxt > last:
                raise UsageError(f"{alt.where}: no free address left in {self.network} for "
                                 "this alternative: give it address=ADDR")
            taken.add(nxt)
            out[(k, b)] = ipaddress.ip_address(nxt)
        return out

    @cached_property
    def _chapter_addresses(self) -> tuple[Address, ...]:
        """The address of each chapter, in order: the first free addresses
        past every address the chain uses (hops, '+' and '++' routers)."""
        if not self.chapters:
            return ()
        if len(self.chapters) > MAX_CHAPTERS:
            raise UsageError(f"{self.chapters[MAX_CHAPTERS].where}: more than {MAX_CHAPTERS} "
                             "chapters in one chain")
        for chapter in self.chapters:
            if not 2 <= chapter.start <= self.length:
                raise UsageError(f"{chapter.where}: chapter {chapter.label!r} starts at hop "
                                 f"{chapter.start}: the chain has hops 1..{self.length}, and "
                                 "a chapter starts at 2 or later")
        used = max([int(self.host) + self.length]
                   + [int(a) for a in self._branch_addresses.values()])
        first, last = used + 1, used + len(self.chapters)
        if last > last_host(self.network):
            room = max(0, last_host(self.network) - used)
            n = len(self.chapters)
            raise UsageError(f"{self.where}: {n} chapter{'s' * (n > 1)} do{'es' * (n == 1)} "
                             f"not fit in "
                             f"{self.network}: it has room for {room} after the chain's last "
                             f"address {type(self.host)(used)}")
        return tuple(type(self.host)(a) for a in range(first, last + 1))

    def chapter_address(self, chapter: Chapter) -> Address:
        """The address a trace to this chapter is sent to."""
        return self._chapter_addresses[self.chapters.index(chapter)]

    @property
    def family(self) -> int:
        return self.interface.version

    @cached_property
    def host(self) -> Address:
        return self.interface.ip  # a new object each time ipaddress is asked

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
        if not 1 <= k <= self.length:
            self.hop_address(k)  # the IndexError, worded once
        return self.hops[k - 1] if self.hops else Hop()

    @property
    def destination(self) -> Address | None:
        return self.host + self.length if self.length else None

    def routers_at(self, k: int) -> tuple[Hop, ...]:
        """Hop k's routers as `branch` numbers them: the hop itself, its '+'
        alternatives in the order written, then the '++' routers further
        along those branches, branch by branch."""
        hop = self.hop(k)
        return ((hop,) + hop.alternatives
                + tuple(f for alt in hop.alternatives for f in alt.further))

    def branch(self, k: int, branch: int = 0) -> Hop:
        """Hop k's router number `branch` (routers_at)."""
        routers = self.routers_at(k)
        if not 0 <= branch < len(routers):
            raise IndexError(f"hop {k} of {self.interface} has no alternative {branch}")
        return routers[branch]

    def branch_address(self, k: int, branch: int = 0) -> Address:
        if branch == 0:
            return self.hop_address(k)
        self.branch(k, branch)
        return self._branch_addresses[(k, branch)]

    @cached_property
    def _path_delays(self) -> tuple[int, ...]:
        """The path's delay at hops 1..length (index 0 unused): the chain's
        delay at hop 1, `step` added per hop, `+D` added from a hop on and
        `D` setting it."""
        start = self.defaults.delay.us if self.defaults.delay else 0
        step = self.defaults.step_us or 0
        out, path = [0], start
        for k in range(1, self.length + 1):
            if k > 1:
                path += step
            delay = self.hop(k).props.delay
            if delay is not None:
                path = path + delay.us if delay.relative else delay.us
            out.append(path)
        return tuple(out)

    def timing(self, k: int, branch: int = 0) -> Timing:
        """What hop k's router `branch` does to its replies."""
        props, d = self.branch(k, branch).props, self.defaults

        def pick(name):
            own = getattr(props, name)
            return own if own is not None else getattr(d, name)

        rate = pick("rate")
        burst = pick("burst")
        return Timing(delay_us=self._path_delays[k] + (props.slow_us or 0),
                      jitter_us=pick("jitter_us") or 0, loss=pick("loss") or 0.0,
                      rate=rate, burst=burst if burst is not None else rate)

    def balance(self, k: int) -> str:
        """How the router in front of hop k picks among its routers: "flow",
        "packet" or "destination" (hopprops.BALANCES)."""
        return self.hop(k).props.balance or self.defaults.balance or "flow"

    @property
    def end(self) -> str:
        """How the story ends: "host", or the flag of the last hop's unreachable."""
        return self.defaults.end or "host"

    @cached_property
    def has_timing(self) -> bool:
        """Any delay, jitter, loss or rate limit anywhere in the chain."""
        return timed(self.defaults) or StoryFacts.of(self.hops).timed

    @cached_property
    def has_delay(self) -> bool:
        """Any reply of the chain waits: a delay, step, slow hop or jitter."""
        return waits(self.defaults) or StoryFacts.of(self.hops).waits

    @cached_property
    def has_extensions(self) -> bool:
        """Anything that changes what a reply carries or who sends it."""
        facts = StoryFacts.of(self.hops)
        return self.end != "host" or facts.alternatives or facts.extended


def timed(p: Props) -> bool:
    """Whether properties delay, jitter, lose or rate-limit replies."""
    return bool((p.delay and p.delay.us) or p.step_us or p.slow_us or p.jitter_us
                or p.loss or p.rate)


def waits(p: Props) -> bool:
    """Whether properties make replies wait: a delay, step, slow hop or jitter."""
    return bool((p.delay and p.delay.us) or p.step_us or p.slow_us or p.jitter_us)


def extended(p: Props) -> bool:
    """Whether properties change what a reply carries or who sends it."""
    return any(getattr(p, name) is not None for name in REPLY_FIELDS)


def routers(hops: tuple[Hop, ...]) -> Iterable[Hop]:
    """Every router of a story: each hop, its '+' alternatives and the '++'
    routers further along their branches (Chain.routers_at, hop by hop)."""
    for hop in hops:
        yield hop
        yield from hop.alternatives
        for alt in hop.alternatives:
            yield from alt.further


class StoryFacts:
    """What a story's hops say whichever chain tells them, worked out once
    per hops tuple (chains telling one story share it: config.Stories reads
    each file once, and a reload keeps an unchanged file's Story): whether
    any router is timed, makes its replies wait or changes them, whether any hop has '+'
    alternatives, whether any hop or alternative has a name to serve, and
    the families the hops were checked for (check_hops).
    Kept by identity, with the tuple itself so that its id is not reused,
    at most MEMO of them."""

    MEMO = 4096
    _memo: dict[int, tuple[tuple[Hop, ...], "StoryFacts"]] = {}

    __slots__ = ("timed", "waits", "extended", "alternatives", "named", "checked")

    def __init__(self, hops: tuple[Hop, ...]) -> None:
        every = list(routers(hops))
        self.timed = any(timed(h.props) for h in every)
        self.waits = any(waits(h.props) for h in every)
        self.extended = any(extended(h.props) for h in every)
        self.alternatives = any(h.alternatives for h in hops)
        # A PTR to serve: a hop or '+' alternative with a name, not silent.
        self.named = any(r.name and not r.silent for h in hops for r in (h,) + h.alternatives)
        self.checked: set[int] = set()

    @classmethod
    def of(cls, hops: tuple[Hop, ...]) -> "StoryFacts":
        held = cls._memo.get(id(hops))
        if held is not None and held[0] is hops:
            return held[1]
        if len(cls._memo) >= cls.MEMO:
            cls._memo.clear()
        facts = cls(hops)
        cls._memo[id(hops)] = (hops, facts)
        return facts


def check_hops(hops: tuple[Hop, ...], family: int) -> None:
    """A story's hops as a chain of `family` may tell them: rewrites of
    that family, MTUs IPv6 carries, balance only where there is a choice,
    no '+' at the destination, alternatives within MAX_ALTERNATIVES."""
    alternatives = 0
    for k, hop in enumerate(hops, 1):
        for branch in (hop,) + hop.alternatives:
            _check_rewrite(branch, family)
            mtu = branch.props.mtu
            if mtu is not None and family == 6 and mtu < MIN_MTU6:
                raise UsageError(f"{branch.where}: mtu {mtu}: IPv6 links carry at least "
                                 f"{MIN_MTU6} (RFC 8200 5)")
        if hop.props.balance is not None and not hop.alternatives:
            raise UsageError(f"{hop.where}: balance={hop.props.balance} on a hop with no "
                             "'+' alternatives: there is nothing to balance")
        if hop.alternatives and k == len(hops):
            raise UsageError(f"{hop.alternatives[0].where}: the destination (the last hop) "
                             "cannot have '+' alternatives: it is one host")
        if len(hop.alternatives) > MAX_ALTERNATIVES:
            raise UsageError(f"{hop.alternatives[MAX_ALTERNATIVES].where}: more than "
                             f"{MAX_ALTERNATIVES} '+' alternatives at one hop")
        for alt in hop.alternatives:
            for further in alt.further:
                if further.props.mtu is not None:
                    raise UsageError(f"{further.where}: mtu on a '++' router: the narrow "
                                     "hop of a branch is its '+' line")
                if rewrites(further.props):
                    raise UsageError(f"{further.where}: nat, dscp, ecn or df on a '++' "
                                     "router: a branch rewrites at its '+' line")
        # The reply core scans a chain's alternatives for a probe addressed
        # past the chain: bounded per chain, that scan is bounded per packet.
        for router in hop.alternatives + tuple(f for a in hop.alternatives for f in a.further):
            if alternatives == MAX_ALTERNATIVES:
                raise UsageError(f"{router.where}: more than {MAX_ALTERNATIVES} '+' "
                                 "alternatives in one chain")
            alternatives += 1


def last_host(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> int:
    """The last address of `network` that may be a host: never the IPv4
    broadcast address of a /30 or shorter (RFC 919, RFC 1122 3.2.1.3; a /31
    has none, RFC 3021)."""
    last = int(network.broadcast_address)
    return last - 1 if network.version == 4 and network.prefixlen <= 30 else last


def rewrites(p: Props) -> bool:
    """Whether a router changes the probes it forwards (nat, dscp, ecn, df)."""
    return any(v is not None for v in (p.nat, p.dscp, p.ecn, p.df))


def _check_rewrite(router: Hop, family: int) -> None:
    p = router.props
    if p.nat is not None and p.nat[0].version != family:
        raise UsageError(f"{router.where}: nat={p.nat[0]}: an IPv{p.nat[0].version} address "
                         f"in an IPv{family} chain")
    if p.df is not None and family == 6:
        raise UsageError(f"{router.where}: df={p.df}: IPv6 has no DF bit (RFC 8200 5)")


def room_after(interface: Interface) -> int:
    """How many hops fit after the host inside its prefix, up to
    last_host, never more than MAX_HOPS."""
    return max(0, min(MAX_HOPS, last_host(interface.network) - int(interface.ip)))


def parse_prefix(text: str, where: str = "command line") -> Interface:
    """`ADDR/PLEN` or a bare address (/32, /128), as the original takes them."""
    text = text.strip()
    try:
        # ip_interface would try IPv4 first, and raise, for every IPv6 one.
        return (ipaddress.IPv6Interface if ":" in text else ipaddress.IPv4Interface)(text)
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
    (lambda i, ip: i.network.prefixlen == 0,
     "a /0 would take the whole address family, default route included, into the TUN"),
    (lambda i, ip: ip.is_unspecified, "the unspecified address is no host (RFC 4291 2.5.2, "
                                    "RFC 1122 3.2.1.3)"),
    (lambda i, ip: ip.is_loopback, "loopback addresses never leave the host (RFC 1122 3.2.1.3)"),
    (lambda i, ip: ip.is_multicast, "a multicast address is never a probe's unicast "
                                  "destination, so nothing would be answered"),
    (lambda i, ip: ip.is_link_local, "link-local addresses are never forwarded (RFC 3927 2.6, "
                                   "RFC 4291 2.5.6), so no probe from beyond the link arrives"),
    (lambda i, ip: getattr(i, "scope_id", None) is not None,
     "a scoped address (%zone) belongs to one link; write the address without it"),
    (lambda i, ip: int(ip) > last_host(i.network),
     "the broadcast address of its prefix is no host (RFC 919, RFC 1122 3.2.1.3)"),
)


def check_host(interface: Interface, where: str) -> Interface:
    """Refuse a chain host that can never answer a probe, naming why."""
    ip = interface.ip  # a new object each time ipaddress is asked: once here
    for never, why in _NEVER:
        if never(interface, ip):
            raise UsageError(f"{where}: {interface} cannot be a chain: {why}")
    return interface


def span(chain: Chain) -> tuple[int, int, int]:
    """(family, first, last address) of the chain's prefix as integers: the
    order of the C core's table (chaintable.Table) and of the overlap check."""
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
