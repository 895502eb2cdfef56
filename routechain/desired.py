"""The link's desired state, and keeping it.

What the configuration asks for on the TUN is its desired state: one
address per chain (the chain's host, with its prefix), the extra routes,
and the link up. `Keeper.adopt` makes the kernel hold it by comparing with
what the kernel reports (a dump, never a memory of what was done), so a
SIGHUP re-applies everything that went missing, not only what changed in
the file. Between reloads a netlink Monitor reports losses (an address
deleted, a route deleted, the link set down, which also drops its IPv6
addresses and its routes); `Keeper.repair` then puts back what is missing,
logs it, and counts it in `repairs`.

Nothing that is not ours is ever changed: an address already on another
interface, or a route that already exists, is refused at start (SetupError,
exit 1) and skipped with a warning on reload or repair. Only what this
daemon added is ever removed; at exit, its routes are removed, and its
addresses go with the TUN.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import threading
import time
from collections import deque
from typing import Callable

from .chain import Chain, Interface
from .config import Config, Route
from .errors import RouteChainError, SetupError
from .netlink import Event, Link, Monitor, RouteKey, address_key, reason

log = logging.getLogger("route-chain")

LISTED = 10             # items named per log line; the rest are counted
REPAIR_INTERVAL = 0.5   # seconds between repair passes, should something fight us
RETRY_INTERVAL = 5.0    # seconds before what could not be added is tried again
MAX_EVENTS = 4096       # queued between repairs; past it, one "overrun" stands for all


class Keeper:
    """The desired state of one link, applied and kept."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self.config: Config | None = None  # the configuration as applied
        self.owned_addresses: set[Interface] = set()
        self.owned_routes: set[RouteKey] = set()
        self.repairs = 0                   # things put back that had gone missing
        self._events: deque[Event] = deque()
        self._monitor: Monitor | None = None
        self._wake: Callable[[], None] = lambda: None
        self._warned: set[object] = set()  # conflicts already logged during repairs
        self._lock = threading.Lock()
        self._not_before = 0.0
        self._retry_at: float | None = None

    # --- applying

    def adopt(self, config: Config, strict: bool) -> Config:
        """Make the link hold config's addresses and routes, put back what
        is missing and remove what we added that config no longer has.
        Returns the configuration as applied: with strict (at start) a
        collision with what is not ours is a SetupError, else the chain or
        route is left out with a warning (in the returned warnings)."""
        notes: list[str] = []
        chains, routes = self._reconcile(config.chains, config.routes, strict, notes,
                                         log_repairs=False)
        applied = dataclasses.replace(config, chains=chains, routes=routes,
                                      warnings=config.warnings + tuple(notes))
        self.config = applied
        self._warned.clear()
        return applied

    def _reconcile(self, chains: tuple[Chain, ...], routes: tuple[Route, ...], strict: bool,
                   notes: list[str], log_repairs: bool) -> tuple[tuple, tuple]:
        """The one place that changes the link: see adopt(). What was ours,
        went missing and is put back counts in `repairs`, and is logged now
        (log_repairs) or added to notes."""
        link = self._link
        by_key = {RouteKey.of(r): r for r in routes}
        state = link.state(k.table for k in by_key)
        put_back: list[str] = []
        if not state.up:
            link.set_up()
            put_back.append(f"link {link.name} up")
            state = link.state(k.table for k in by_key)

        def refuse(what: str, message: str) -> None:
            """What is not ours: never taken, so the chain or route is left out."""
            if strict:
                raise SetupError(message)
            notes.append(f"{message}: {what} left out")

        def postpone(message: str) -> None:
            """Any other refusal (the link went down meanwhile...): kept in
            the desired state, for the next repair or reload to try again."""
            if strict:
                raise SetupError(message)
            notes.append(f"{message}: to be tried again")
            self._retry_at = time.monotonic() + RETRY_INTERVAL

        # Addresses: a chain whose host address is on another interface
        # (and not on ours) is not ours to serve.
        kept: list[Chain] = []
        for chain in chains:
            iface = chain.interface
            holder = state.elsewhere.get(iface.ip.packed)
            if holder is not None and address_key(iface) not in state.addresses:
                refuse(f"chain {iface}", f"chain {iface} ({chain.where}): address {iface.ip} is "
                       f"already on interface {holder!r}; route-chain never takes over an "
                       "address it did not add")
                continue
            kept.append(chain)
        want = {c.interface: c for c in kept}
        # An address of ours that a new one would clash with goes first: IPv6
        # holds one prefix length per address, and an IPv4 address added in
        # the prefix of another becomes its secondary, which the kernel
        # deletes with the primary (unless promote_secondaries is set).
        ours = {i for i in self.owned_addresses if address_key(i) in state.addresses}
        clashes = {_clash_key(i) for i in want if address_key(i) not in state.addresses}
        first = [i for i in ours if i not in want and _clash_key(i) in clashes]
        self._delete_addresses(first)
        present = state.addresses - {address_key(i) for i in first}
        missing = [i for i in want if address_key(i) not in present]
        failed = link.add_addresses(missing)
        for iface, code in failed.items():
            if code == errno.EEXIST:  # added meanwhile, by someone: it is there
                continue
            postpone(f"chain {iface} ({want[iface].where}): cannot add address {iface} to "
                     f"{link.name!r}: {reason(code)}")
        added = [i for i in missing if i not in failed]
        put_back += [f"address {i}" for i in added if i in self.owned_addresses]
        self.owned_addresses.update(added)

        # Routes: created exclusively; one that exists and is not ours is refused.
        missing_routes = [k for k in by_key if k not in state.routes]
        failed_routes = link.add_routes(missing_routes)
        for key, code in failed_routes.items():
            route = by_key[key]
            if code == errno.EEXIST:
                del by_key[key]
                refuse(f"route {route.prefix}",
                       f"route {route.prefix} ({route.where}): a route to {key} already exists "
                       f"({link.route_holder(key)}); route-chain never replaces a route it did "
                       "not add")
            else:
                postpone(f"route {route.prefix} ({route.where}): cannot add it through "
                         f"{link.name!r}: {reason(code)}")
        added_routes = [k for k in missing_routes if k not in failed_routes]
        put_back += [f"route {k}" for k in added_routes if k in self.owned_routes]
        self.owned_routes.update(added_routes)

        # What we added and no longer want goes last, so that nothing that
        # stays loses its address or route for an instant.
        self._delete_routes([k for k in self.owned_routes if k not in by_key])
        self._delete_addresses([i for i in ours if i not in want and i not in first])
        # Ours that vanished and are no longer wanted are no longer ours.
        self.owned_addresses = {i for i in self.owned_addresses
                                if i in want or address_key(i) in state.addresses}
        self.repairs += len(put_back)
        if put_back and log_repairs:
            log.warning("repaired %s: put back %s", link.name, _listed(put_back))
        elif put_back:
            notes.append(f"repaired {link.name}: put back {_listed(put_back)}")
        return tuple(c for c in kept if c.interface in want), tuple(by_key.values())

    def _delete_addresses(self, interfaces: list[Interface]) -> None:
        _delete(interfaces, self._link.del_addresses, self.owned_addresses, "address")

    def _delete_routes(self, keys: list[RouteKey]) -> None:
        _delete(keys, self._link.del_routes, self.owned_routes, "route")

    def remove_all(self) -> None:
        """At exit: our routes. Our addresses go with the TUN, which is ours
        alone (one netlink request each would cost seconds with 10,000)."""
        try:
            self._delete_routes(list(self.owned_routes))
        except RouteChainError as e:
            log.warning("teardown: %s", e)

    # --- keeping

    def watch(self, wake: Callable[[], None]) -> None:
        """Start the netlink Monitor; wake() is called (from its thread)
        when something may need repair."""
        self._wake = wake
        self._monitor = Monitor(self._link.index, self._note)

    def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None

    def alive(self) -> bool:
        return self._monitor is None or self._monitor.alive()

    @property
    def failure(self) -> str | None:
        return self._monitor.failure if self._monitor else None

    def _note(self, event: Event) -> None:
        with self._lock:
            if len(self._events) >= MAX_EVENTS:
                # A repair compares with the kernel's dump anyway: one
                # "overrun" says as much as the events it replaces.
                self._events = deque([Event("overrun")])
            else:
                self._events.append(event)
        self._wake()

    def pending(self) -> bool:
        """Events to look at, or a retry that is due."""
        if self._retry_at is not None and time.monotonic() >= self._retry_at:
            self._retry_at = None
            with self._lock:
                self._events.append(Event("retry"))
        return bool(self._events)

    def repair(self) -> None:
        """Put back what the events since the last call say went missing
        from the desired state; events about what we no longer want (our own
        removals) are ignored. Never raises: a failure is logged."""
        if time.monotonic() < self._not_before:
            return  # events stay queued: a fight over the link costs little
        with self._lock:
            events, self._events = list(self._events), deque()
        if not events or self.config is None:
            return
        wanted = {c.interface for c in self.config.chains}
        routes = {RouteKey.of(r) for r in self.config.routes}
        losses = [e for e in events if e.kind in ("down", "gone", "overrun", "retry")
                  or (e.kind == "address" and e.item in wanted)
                  or (e.kind == "route" and e.item in routes)]
        if not losses:
            return
        if any(e.kind == "gone" for e in losses):
            log.error("interface %s was deleted: nothing left to repair", self._link.name)
            return
        notes: list[str] = []
        self._not_before = time.monotonic() + REPAIR_INTERVAL
        try:
            self._reconcile(self.config.chains, self.config.routes, False, notes,
                            log_repairs=True)
        except RouteChainError as e:
            log.error("repair failed: %s", e)
            return
        except Exception as e:  # a repair must never take the daemon down
            log.error("repair failed: %s: %s", type(e).__name__, e)
            return
        for note in notes:
            if note not in self._warned:
                self._warned.add(note)
                log.warning("repair: %s", note)


def _clash_key(iface: Interface) -> object:
    return iface.ip if iface.version == 6 else iface.network


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:LISTED])
    return shown + (f" and {len(items) - LISTED} more" if len(items) > LISTED else "")


def _delete(items: list, remove: Callable[[list], dict], owned: set, what: str) -> None:
    """Remove items (ours); those removed are ours no more, and any that
    could not be is one SetupError naming each."""
    failed = remove(items)
    owned.difference_update(i for i in items if i not in failed)
    if failed:
        raise SetupError("cannot remove " + ", ".join(
            f"{what} {item}: {reason(code)}" for item, code in failed.items()))
