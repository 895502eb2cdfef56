"""The link's desired state, and keeping it.

What the configuration asks for on the TUN is its desired state: one
address per chain (the chain's host, with its prefix; none with [daemon]
assign = "route") and the chain's prefix route, the extra routes, and the
link up. Every route carries the
configured protocol number ([daemon] route_protocol), and the addresses are added
without the kernel's own prefix route, so a routing daemon can learn the
chains' routes by protocol and announce them exactly while the TUN lives;
with uplinks, a proxy entry there for every chain address. `Keeper.adopt`
makes the kernel hold it by comparing with what the kernel reports (a
dump, never a memory of what was done), so a SIGHUP re-applies everything
that went missing, not only what changed in the file. Between reloads a
netlink Monitor reports losses (an address deleted, a route deleted, the
link set down, which also drops its IPv6 addresses and its routes), and
the keeper looks at the proxy entries every PROXY_CHECK_INTERVAL (the
kernel reports no change of those); `Keeper.repair` then puts back what
is missing, logs it, and counts it in `repairs`.

Three parts, each apart: plan.py decides (a pure function from the
desired state, the kernel's dump and what is ours to the actions);
`Applier` sends the actions over netlink and keeps the accounts (what is
ours, repairs, notes); `Keeper` schedules (adopt at start and reload,
repairs from the Monitor's events, retries, a pause between passes).

Nothing that is not ours is ever changed: an address already on another
interface, or a route that already exists, is refused at start (SetupError,
exit 1) and skipped with a warning on reload or repair; a proxy entry that
is not ours is left as it is, with a warning. Only what this daemon added
is ever removed; at exit, its proxy entries and routes are removed, and
its addresses go with the TUN.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import threading
import time
from collections import deque
from itertools import groupby
from typing import Callable

from .chain import Interface
from .config import Config
from .errors import RouteChainError, SetupError
from .netlink import Event, Link, Monitor
from .plan import (Action, AddAddress, AddProxy, AddRoute, DeleteAddress, DeleteProxy,
                   DeleteRoute, Desired, Forget, ForgetProxy, Owned, Postponement, Proxy,
                   Refusal, RouteKey, SetUp, plan, proxies_intact, reason, settle)

log = logging.getLogger("route-chain")

LISTED = 10             # items named per log line; the rest are counted
REPAIR_INTERVAL = 0.5   # seconds between repair passes, should something fight us
RETRY_INTERVAL = 5.0    # seconds before what could not be added is tried again
PROXY_CHECK_INTERVAL = 2.0  # seconds between looks at the proxy entries (no notifications)
MAX_EVENTS = 4096       # queued between repairs; past it, one "overrun" stands for all


class Applier:
    """A plan's actions sent over netlink, and the accounts: what is ours
    (added by us and not removed), what was put back (`repairs`), and what
    was refused or postponed (notes, or a SetupError when strict)."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self.owned_addresses: set[Interface] = set()
        self.owned_routes: set[RouteKey] = set()
        self.owned_proxies: set[Proxy] = set()
        self.uplinks: tuple[str, ...] = ()  # where our proxy entries may be
        self.repairs = 0                   # things put back that had gone missing
        self.postponed = False             # something to be tried again

    def reconcile(self, desired: Desired, strict: bool, notes: list[str],
                  log_repairs: bool) -> tuple[tuple, tuple]:
        """The one place that changes the link: see Keeper.adopt(). The plan says
        what to do (plan.py); this sends it and keeps the accounts. What was
        ours, went missing and is put back counts in `repairs`, and is
        logged now (log_repairs) or added to notes."""
        link = self._link
        tables = {k.table for k in desired.route_keys()}
        # Proxy entries on uplinks that left the config are looked for too.
        self.uplinks = tuple(dict.fromkeys(desired.uplinks + self.uplinks))
        steps = plan(desired, link.state(tables, self.uplinks), self._owned())
        put_back: list[str] = []
        if steps.actions == (SetUp(),):
            link.set_up()
            put_back.append(f"link {link.name} up")
            # Up now, as far as we know: the rest is planned from what the
            # kernel holds once it is (IPv6 addresses and routes went with down).
            state = dataclasses.replace(link.state(tables, self.uplinks), up=True)
            steps = plan(desired, state, self._owned())
        for refusal in steps.refusals:
            self._refused(refusal, strict, notes)
        notes += steps.notices
        left_out = self._apply(steps.actions, strict, notes)
        put_back += [p for p in steps.put_back if p not in left_out]
        self.repairs += len(put_back)
        if put_back and log_repairs:
            log.warning("repaired %s: put back %s", link.name, _listed(put_back))
        elif put_back:
            notes.append(f"repaired {link.name}: put back {_listed(put_back)}")
        return steps.chains, tuple(r for r in steps.routes if RouteKey.of(r) not in left_out)

    def _owned(self) -> Owned:
        return Owned(frozenset(self.owned_addresses), frozenset(self.owned_routes),
                     frozenset(self.owned_proxies))

    def _apply(self, actions: tuple[Action, ...], strict: bool, notes: list[str]) -> set:
        """Send actions in order, each run of one kind in one bulk request;
        what failed is settled (plan.settle) and noted. Returns what was
        not done: the put-backs that failed and the route keys refused."""
        link = self._link
        not_done: set = set()

        def add(things: list, run: list, send, owned: set, what: str) -> None:
            # An address or proxy entry: ours once added; a failure is settled.
            failed = send(things)
            for thing, action in zip(things, run):
                if thing in failed:
                    not_done.add(f"{what} {thing}")
                    self._settled(settle(action, failed[thing], link.name), strict, notes)
                else:
                    owned.add(thing)

        for kind, run in groupby(actions, type):
            run = list(run)
            if kind is AddAddress:
                add([a.interface for a in run], run, link.add_addresses, self.owned_addresses,
                    "address")
            elif kind is AddRoute:
                failed = link.add_routes(a.key for a in run)
                for a in run:
                    if a.key not in failed:
                        self.owned_routes.add(a.key)
                        continue
                    not_done.add(f"route {a.key}")
                    code = failed[a.key]
                    holder = link.route_holder(a.key) if code == errno.EEXIST else ""
                    outcome = settle(a, code, link.name, holder)
                    if isinstance(outcome, Refusal):
                        not_done.add(a.key)
                        self.owned_routes.discard(a.key)  # someone else's now
                    self._settled(outcome, strict, notes)
            elif kind is DeleteAddress:
                _delete([a.interface for a in run], link.del_addresses, self.owned_addresses,
                        "address")
            elif kind is DeleteRoute:
                _delete([a.key for a in run], link.del_routes, self.owned_routes, "route")
            elif kind is Forget:
                self.owned_addresses.difference_update(a.interface for a in run)
            elif kind is AddProxy:
                add([a.proxy for a in run], run, link.add_proxies, self.owned_proxies,
                    "proxy entry")
            elif kind is DeleteProxy:
                _delete([a.proxy for a in run], link.del_proxies, self.owned_proxies,
                        "proxy entry")
            elif kind is ForgetProxy:
                self.owned_proxies.difference_update(a.proxy for a in run)
        return not_done

    def proxies_intact(self, desired: Desired) -> bool:
        """One dump of the proxy entries, compared with the plan's."""
        if not desired.uplinks and not self.owned_proxies:
            return True
        return proxies_intact(desired, self._link.proxies(self.uplinks), self._owned())

    def _settled(self, outcome: Refusal | Postponement | None, strict: bool,
                 notes: list[str]) -> None:
        if isinstance(outcome, Refusal):
            self._refused(outcome, strict, notes)
        elif isinstance(outcome, Postponement):
            if strict:
                raise SetupError(outcome.message)
            notes.append(f"{outcome.message}: to be tried again")
            self.postponed = True

    @staticmethod
    def _refused(refusal: Refusal, strict: bool, notes: list[str]) -> None:
        """What is not ours: never taken, so the chain or route is left out."""
        if strict:
            raise SetupError(refusal.message)
        notes.append(f"{refusal.message}: {refusal.what} left out")

    def remove_all(self) -> None:
        """At exit: our proxy entries (those still ours) and our routes. Our
        addresses go with the TUN, which is ours alone (one netlink request
        each would cost seconds with 10,000)."""
        try:
            if self.owned_proxies:
                ours = self._link.proxies(self.uplinks).proxies
                self.owned_proxies &= ours
                _delete(list(self.owned_proxies), self._link.del_proxies, self.owned_proxies,
                        "proxy entry")
            _delete(list(self.owned_routes), self._link.del_routes, self.owned_routes, "route")
        except RouteChainError as e:
            log.warning("teardown: %s", e)

class Keeper:
    """The desired state of one link, applied (Applier) and kept: the
    scheduling of repairs, from the Monitor's events, retries of what was
    postponed, and a pause between passes."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._applier = Applier(link)
        self.config: Config | None = None  # the configuration as applied
        self._events: deque[Event] = deque()
        self._monitor: Monitor | None = None
        self._wake: Callable[[], None] = lambda: None
        self._warned: set[object] = set()  # conflicts already logged during repairs
        self._lock = threading.Lock()
        self._not_before = 0.0
        self._retry_at: float | None = None
        self._proxy_check_at = 0.0

    @property
    def repairs(self) -> int:
        return self._applier.repairs

    def adopt(self, config: Config, strict: bool) -> Config:
        """Make the link hold config's addresses and routes, put back what
        is missing and remove what we added that config no longer has.
        Returns the configuration as applied: with strict (at start) a
        collision with what is not ours is a SetupError, else the chain or
        route is left out with a warning (in the returned warnings)."""
        notes: list[str] = []
        chains, routes = self._reconcile(config, strict, notes, log_repairs=False)
        applied = dataclasses.replace(config, chains=chains, routes=routes,
                                      warnings=config.warnings + tuple(notes))
        self.config = applied
        self._warned.clear()
        return applied

    def _reconcile(self, config: Config, strict: bool, notes: list[str],
                   log_repairs: bool) -> tuple[tuple, tuple]:
        """The Applier's pass; what it postponed is tried again RETRY_INTERVAL later."""
        self._applier.postponed = False
        try:
            return self._applier.reconcile(_desired(config), strict, notes, log_repairs)
        finally:
            if self._applier.postponed:
                self._retry_at = time.monotonic() + RETRY_INTERVAL

    def remove_all(self) -> None:
        """At exit: see Applier.remove_all."""
        self._applier.remove_all()

    # --- keeping

    def watch(self, wake: Callable[[], None]) -> None:
        """Start the netlink Monitor; wake() is called (from its thread)
        when something may need repair."""
        self._wake = wake
        self._monitor = Monitor(self._link.index, self._note, self._link.protocol)

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
        """Events to look at, a retry that is due, or a look at the proxy
        entries: the kernel reports no change of those."""
        now = time.monotonic()
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            with self._lock:
                self._events.append(Event("retry"))
        proxied = self.config is not None and (self.config.daemon.proxy_uplinks
                                               or self._applier.owned_proxies)
        if proxied and now >= self._proxy_check_at:
            self._proxy_check_at = now + PROXY_CHECK_INTERVAL
            with self._lock:
                self._events.append(Event("proxies"))
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
        wanted = {c.interface for c in self.config.chains} \
            if self.config.daemon.assign != "route" else set()
        routes = set(_desired(self.config).route_keys())
        losses = [e for e in events if e.kind in ("down", "gone", "overrun", "retry")
                  or (e.kind == "address" and e.item in wanted)
                  or (e.kind == "route" and e.item in routes)]
        if not losses and any(e.kind == "proxies" for e in events):
            try:
                if not self._applier.proxies_intact(_desired(self.config)):
                    losses = [Event("proxies")]
            except RouteChainError as e:
                log.error("repair failed: %s", e)
                return
        if not losses:
            return
        if any(e.kind == "gone" for e in losses):
            log.error("interface %s was deleted: nothing left to repair", self._link.name)
            return
        notes: list[str] = []
        self._not_before = time.monotonic() + REPAIR_INTERVAL
        try:
            self._reconcile(self.config, False, notes, log_repairs=True)
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


def _desired(config: Config) -> Desired:
    d = config.daemon
    return Desired(config.chains, config.routes, d.route_table, d.route_metric,
                   tuple(dict.fromkeys(d.proxy_uplinks)), d.assign != "route")


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
