"""Reconciling, decided: what to change on the link so that the kernel
holds the desired state. Pure: no I/O, no clock, no logging; frozen
dataclasses in, frozen dataclasses out (desired.py sends the actions over
netlink and keeps the accounts).

`plan(desired, state, owned)` compares the desired state (the chains'
addresses, prefix routes and proxy entries, the extra routes) with what
the kernel holds (`State`, a dump) and with what this daemon added
(`Owned`), and returns the `Plan`: the actions in the order they must be
sent, the refusals it already knows of, and what it leaves alone.
`settle(action, code, ...)` decides what a kernel's refusal of an action
means (it is there, it is someone else's, or to be tried again).

The rules, each a reason:
- What is not ours is never taken: a chain whose address is on another
  interface (and not on ours) is refused, so left out, with its route.
- A chain's prefix route is ours, not the kernel's (its address is added
  with IFA_F_NOPREFIXROUTE): it carries our protocol, table and metric, so
  a routing daemon can learn it and announce it while the TUN lives.
  With `addresses` off ([daemon] assign = "route") the route is all a
  chain takes: no address is added, and ours that are there go (after
  the routes, as any address no longer wanted).
- The link comes up first: a route through a down link is refused, and
  bringing it up changes what the kernel holds, so the rest is planned
  again from a fresh dump (desired.py).
- An address of ours that a new one would clash with goes first: IPv6
  holds one prefix length per address, and an IPv4 address added in the
  prefix of another becomes its secondary, which the kernel deletes with
  the primary (unless promote_secondaries is set).
- Proxy entries on the uplinks (every address of every chain) come after
  the routes and go before them; one that is not ours is left alone.
- What we added and no longer want goes last, so that nothing that stays
  loses its address or route for an instant.
- Something of ours that vanished and is no longer wanted is forgotten.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from dataclasses import dataclass
from typing import Union

from .chain import Address, Chain, Interface
from .config import Route

RT_TABLE_MAIN = 254
IP6_RT_PRIO_USER = 1024    # the kernel's metric for an IPv6 route given none


@dataclass(frozen=True)
class RouteKey:
    """A route as the kernel tells routes apart: prefix, table and metric,
    with the kernel's defaults filled in."""

    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
    table: int
    metric: int

    def __hash__(self) -> int:
        """Worked out once per key (a plan hashes each of 10,000 several
        times; ipaddress hashes a network anew each time), from what
        equality compares."""
        got = self.__dict__.get("_hash")
        if got is None:
            net = self.prefix
            got = hash((net.version, net.network_address.packed, net.prefixlen, self.table,
                        self.metric))
            object.__setattr__(self, "_hash", got)
        return got

    @classmethod
    def of(cls, route: Route) -> "RouteKey":
        metric = route.metric or 0
        if route.prefix.version == 6 and metric == 0:
            metric = IP6_RT_PRIO_USER  # as the kernel stores it (ip6_route_info_create)
        return cls(route.prefix, route.table if route.table is not None else RT_TABLE_MAIN,
                   metric)

    def __str__(self) -> str:
        table = "" if self.table == RT_TABLE_MAIN else f" table {self.table}"
        return f"{self.prefix}{table} metric {self.metric}"


@dataclass(frozen=True)
class Proxy:
    """A proxy neighbour entry (NTF_PROXY): the host answers neighbour
    solicitations (IPv6) or ARP requests (IPv4) for `address` on `uplink`."""

    uplink: str
    address: Address

    def __str__(self) -> str:
        return f"{self.address} on {self.uplink}"


@dataclass(frozen=True)
class State:
    """What the kernel holds: the addresses on our link and those of every
    other interface (address -> interface name), as (packed address,
    prefix length) pairs: decoding 10,000 of them must stay cheap; our
    routes in the tables asked about; whether the link is up; the proxy
    entries on the uplinks asked about, ours (our protocol) and others'."""

    addresses: frozenset[tuple[bytes, int]]
    elsewhere: dict[bytes, str]
    routes: frozenset[RouteKey]
    up: bool
    proxies: frozenset[Proxy] = frozenset()
    foreign_proxies: frozenset[Proxy] = frozenset()
    # (uplink, IP version, sysctl) that is 0 where the kernel needs 1 to
    # answer for a proxy entry of that version there.
    unready: frozenset[tuple[str, int, str]] = frozenset()


def address_key(interface: Interface) -> tuple[bytes, int]:
    """An Interface as State holds addresses (an interface is its address:
    ipaddress's Interface classes derive from the Address ones)."""
    return interface.packed, interface.network.prefixlen


@dataclass(frozen=True)
class Desired:
    """What the configuration asks of the link: its chains (each an address
    and a prefix route, in chain_table with chain_metric: None is main and
    the kernel's metric), the extra routes, and the uplinks where every
    address of every chain is answered for (proxy entries)."""

    chains: tuple[Chain, ...]
    routes: tuple[Route, ...]
    chain_table: int | None = None
    chain_metric: int | None = None
    uplinks: tuple[str, ...] = ()
    addresses: bool = True   # [daemon] assign = "address": each chain's host on the link

    def proxies(self, chains: tuple[Chain, ...] | list[Chain] | None = None
                ) -> dict[Proxy, Chain]:
        """The proxy entries of `chains` (default: all) on every uplink:
        each chain's host, hops and their alternatives."""
        wanted: dict[Proxy, Chain] = {}
        if not self.uplinks:
            return wanted  # no uplinks: no chain's 30 hops to list
        for chain in self.chains if chains is None else chains:
            for address in chain_addresses(chain):
                for uplink in self.uplinks:
                    wanted.setdefault(Proxy(uplink, address), chain)
        return wanted

    def route_keys(self, chains: tuple[Chain, ...] | list[Chain] | None = None
                   ) -> dict[RouteKey, Route]:
        """The routes by key, the prefix routes of `chains` (default: all)
        first; two with one key are one route (the first's place)."""
        routes = [Route(c.network, self.chain_table, self.chain_metric, c.where)
                  for c in (self.chains if chains is None else chains)]
        keys: dict[RouteKey, Route] = {}
        for r in routes + list(self.routes):
            keys.setdefault(RouteKey.of(r), r)
        return keys

    def extra_routes(self) -> tuple[Route, ...]:
        """The extra routes, one per key (the first's place)."""
        keys: dict[RouteKey, Route] = {}
        for r in self.routes:
            keys.setdefault(RouteKey.of(r), r)
        return tuple(keys.values())


@dataclass(frozen=True)
class Owned:
    """What this daemon added and has not removed."""

    addresses: frozenset[Interface] = frozenset()
    routes: frozenset[RouteKey] = frozenset()
    proxies: frozenset[Proxy] = frozenset()


# --- actions, sent in order; consecutive ones of a kind go in one bulk request

@dataclass(frozen=True)
class SetUp:
    """Bring the link up (it was ours and up: a put-back)."""


@dataclass(frozen=True)
class AddAddress:
    interface: Interface
    where: str          # the chain's place in the config, for a refusal
    put_back: bool      # ours before, gone since: a repair


@dataclass(frozen=True)
class DeleteAddress:
    interface: Interface


@dataclass(frozen=True)
class AddRoute:
    key: RouteKey
    route: Route
    put_back: bool


@dataclass(frozen=True)
class DeleteRoute:
    key: RouteKey


@dataclass(frozen=True)
class Forget:
    """Ours once, gone from the kernel, no longer wanted: ours no more."""

    interface: Interface


@dataclass(frozen=True)
class AddProxy:
    proxy: Proxy
    chain: str          # the chain's address and place in the config, for a refusal
    put_back: bool


@dataclass(frozen=True)
class DeleteProxy:
    proxy: Proxy


@dataclass(frozen=True)
class ForgetProxy:
    """Ours once, now gone or someone else's: ours no more, never deleted."""

    proxy: Proxy


Action = Union[SetUp, AddAddress, DeleteAddress, AddRoute, DeleteRoute, Forget, AddProxy,
               DeleteProxy, ForgetProxy]


# --- what cannot be done, as data

@dataclass(frozen=True)
class Refusal:
    """Not ours to take: left out of what is applied (`what`), never retried
    until the next reload or repair finds it free."""

    what: str
    message: str
    route: RouteKey | None = None   # a route left out


@dataclass(frozen=True)
class Postponement:
    """Refused for another reason (the link went down meanwhile...): kept
    in the desired state, for the next repair or reload to try again."""

    message: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    refusals: tuple[Refusal, ...] = ()
    chains: tuple[Chain, ...] = ()           # the chains kept: not refused
    routes: tuple[Route, ...] = ()           # the extra routes, one per key
    notices: tuple[str, ...] = ()            # what is left alone, said once

    @property
    def put_back(self) -> tuple[str, ...]:
        """What the plan puts back that was ours, as the repair log says it."""
        said = []
        for a in self.actions:
            if isinstance(a, AddAddress) and a.put_back:
                said.append(f"address {a.interface}")
            elif isinstance(a, AddRoute) and a.put_back:
                said.append(f"route {a.key}")
            elif isinstance(a, AddProxy) and a.put_back:
                said.append(f"proxy entry {a.proxy}")
        return tuple(said)


def plan(desired: Desired, state: State, owned: Owned) -> Plan:
    """The actions that make the kernel hold `desired`; see the module's rules."""
    if not state.up:
        return Plan((SetUp(),), chains=desired.chains, routes=desired.extra_routes())

    refusals: list[Refusal] = []
    kept: list[Chain] = []
    for chain in desired.chains:
        iface = chain.interface
        holder = state.elsewhere.get(chain.host.packed) if desired.addresses else None
        if holder is not None and address_key(iface) not in state.addresses:
            refusals.append(Refusal(
                f"chain {iface}", f"chain {iface} ({chain.where}): address {iface.ip} is "
                f"already on interface {holder!r}; route-chain never takes over an address "
                "it did not add"))
            continue
        kept.append(chain)
    want = {c.interface: c for c in kept} if desired.addresses else {}

    ours = sorted((i for i in owned.addresses if address_key(i) in state.addresses),
                  key=_order)
    clashes = {_clash_key(i) for i in want if address_key(i) not in state.addresses}
    first = [i for i in ours if i not in want and _clash_key(i) in clashes]
    present = state.addresses - {address_key(i) for i in first}

    # The kernel flushes a link's IPv4 routes with its last IPv4 address
    # (fib_disable_ip), and says nothing of it: if a clash takes the last
    # one away for an instant, they are added again after.
    flushed = any(i.version == 4 for i in first) and \
        not any(len(packed) == 4 for packed, _ in present)
    held = {k for k in state.routes if not (flushed and k.prefix.version == 4)}

    by_key = desired.route_keys(kept)   # a chain left out takes its route along
    actions: list[Action] = [DeleteAddress(i) for i in first]
    actions += [AddAddress(i, c.where, i in owned.addresses)
                for i, c in want.items() if address_key(i) not in present]
    actions += [AddRoute(k, r, k in owned.routes and k not in state.routes)
                for k, r in by_key.items() if k not in held]
    proxies, notices = _plan_proxies(desired, kept, state, owned)
    actions += [a for a in proxies if isinstance(a, AddProxy)]
    actions += [a for a in proxies if not isinstance(a, AddProxy)]
    actions += [DeleteRoute(k) for k in sorted((k for k in owned.routes if k not in by_key),
                                               key=_order)]
    gone = [i for i in ours if i not in want and i not in first]
    actions += [DeleteAddress(i) for i in gone]
    # Likewise when the link's last IPv4 address goes for good (the chains
    # that had it left, or [daemon] assign became "route"): the IPv4 routes
    # that stay are added again after it.
    if any(i.version == 4 for i in gone) and not any(i.version == 4 for i in want) and \
            not any(len(packed) == 4 for packed, _ in present - {address_key(i) for i in gone}):
        actions += [AddRoute(k, r, False) for k, r in by_key.items() if k.prefix.version == 4]
    actions += [Forget(i) for i in sorted((i for i in owned.addresses if i not in want
                                           and address_key(i) not in state.addresses),
                                          key=_order)]
    return Plan(tuple(actions), tuple(refusals), tuple(kept), desired.extra_routes(),
                tuple(notices))


def _plan_proxies(desired: Desired, kept: list[Chain] | tuple[Chain, ...], state: State,
                  owned: Owned) -> tuple[list[Action], list[str]]:
    """Proxy entries: added once the chain's route is there (traffic can
    only come then), removed before its route goes. An entry that exists
    and is not ours is left alone: it answers for the address all the
    same, and adding ours would silently take it over (the kernel
    replaces a proxy entry in place, NLM_F_EXCL or not)."""
    wanted = desired.proxies(kept)
    actions: list[Action] = []
    notices: list[str] = []
    for proxy, chain in sorted(wanted.items(), key=lambda pc: _order(pc[0])):
        if proxy in state.proxies:
            continue
        if proxy in state.foreign_proxies:
            notices.append(f"chain {chain.interface} ({chain.where}): a proxy entry for "
                           f"{proxy} is not route-chain's: left as it is")
            if proxy in owned.proxies:
                actions.append(ForgetProxy(proxy))
            continue
        actions.append(AddProxy(proxy, f"chain {chain.interface} ({chain.where})",
                                proxy in owned.proxies))
    for proxy in sorted(owned.proxies - wanted.keys(), key=_order):
        actions.append(DeleteProxy(proxy) if proxy in state.proxies else ForgetProxy(proxy))
    used = {(p.uplink, p.address.version) for p in wanted}
    for uplink, version, sysctl in sorted(state.unready):
        if (uplink, version) in used:
            notices.append(f"{sysctl} is 0: the kernel ignores the proxy entries on {uplink} "
                           "until it is 1")
    return actions, notices


def proxies_intact(desired: Desired, state: State, owned: Owned) -> bool:
    """Whether the proxy entries are as planned (a check cheaper than a
    plan: `state` need only hold the proxy entries). The kernel reports no
    change of a proxy entry, so the keeper asks from time to time."""
    return not _plan_proxies(desired, desired.chains, state, owned)[0]


def chain_addresses(chain: Chain) -> list[Address]:
    """Every address a chain answers from: its host, its hops and their
    alternatives (and the routers further along their branches), and its
    chapters (whose destination answers from the chapter's address)."""
    out = [chain.host] + [chain.hop_address(k) for k in range(1, chain.length + 1)]
    for k in range(1, chain.length + 1):
        out += [chain.branch_address(k, b) for b in range(1, len(chain.routers_at(k)))]
    return out + [chain.chapter_address(c) for c in chain.chapters]


def settle(action: AddAddress | AddRoute | AddProxy, code: int, link: str,
           holder: str = "a route") -> Refusal | Postponement | None:
    """What the kernel's errno `code` for an add means: None when what was
    to be added is there anyway (an address added meanwhile), a Refusal
    when it is someone else's (a route that exists: `holder` says how `ip
    route` would show it), else a Postponement (an uplink that does not
    exist yet...)."""
    if isinstance(action, AddProxy):
        return Postponement(f"{action.chain}: cannot add a proxy entry for "
                            f"{action.proxy.address} on {action.proxy.uplink!r}: {reason(code)}")
    if isinstance(action, AddAddress):
        if code == errno.EEXIST:
            return None
        return Postponement(f"chain {action.interface} ({action.where}): cannot add address "
                            f"{action.interface} to {link!r}: {reason(code)}")
    route, key = action.route, action.key
    if code == errno.EEXIST:
        return Refusal(f"route {route.prefix}",
                       f"route {route.prefix} ({route.where}): a route to {key} already "
                       f"exists ({holder}); route-chain never replaces a route it did not add",
                       route=key)
    return Postponement(f"route {route.prefix} ({route.where}): cannot add it through "
                        f"{link!r}: {reason(code)}")


def reason(code: int) -> str:
    """An errno from the kernel as a refusal's reason."""
    if code == errno.EPERM:
        return "operation not permitted (CAP_NET_ADMIN is needed)"
    return os.strerror(code) if code else "unknown error"


def _clash_key(iface: Interface) -> object:
    return iface.ip if iface.version == 6 else iface.network


def _order(item: Interface | RouteKey | Proxy) -> tuple:
    """A stable order for what comes from a set: the same plan every time."""
    # Packed addresses sort as the addresses do, without ipaddress's
    # comparisons in Python (a reload sorts the 10,000 addresses it owns).
    if isinstance(item, RouteKey):
        net = item.prefix
        return (net.version, net.network_address.packed, net.prefixlen, item.table,
                item.metric)
    if isinstance(item, Proxy):
        return (item.address.version, item.uplink, item.address.packed)
    return (item.version, item.ip.packed, item.network.prefixlen)
