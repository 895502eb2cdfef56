"""The conductor: wires the TUN, netlink, the C workers, DNS and systemd
together, and owns the signals. Setup is torn down in reverse order
(ExitStack), so a failure half-way leaves nothing behind.

Signals: SIGTERM and SIGINT stop, SIGHUP reloads, SIGUSR1 logs counters.
They are blocked in every thread and taken by the main thread alone with
sigtimedwait, so the C loops are never interrupted.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable

from . import core
from .chain import Chain, Interface
from .config import DEFAULT_INTERFACE, Config, Route
from .errors import RouteChainError, SetupError
from .netlink import Link
from .tun import Tun

log = logging.getLogger("route-chain")

STATUS_INTERVAL = 5.0
SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1}


def default_queues() -> int:
    """One queue per CPU this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


@dataclass(frozen=True)
class Settings:
    """What a running daemon cannot change without a restart."""

    interface: str
    queues: int

    @classmethod
    def of(cls, config: Config) -> "Settings":
        return cls(config.interface or DEFAULT_INTERFACE, config.queues or default_queues())


class Addresses:
    """The addresses and routes this daemon put on its link, so that a reload
    changes only what differs and the exit removes exactly what it added."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self.interfaces: list[Interface] = []
        self.routes: list[Route] = []

    def apply(self, chains: tuple[Chain, ...], routes: tuple[Route, ...]) -> None:
        """Add what is new first, then remove what is gone, so that chains
        that did not change never lose their address for an instant."""
        want = [c.interface for c in chains]
        gone = [i for i in self.interfaces if i not in want]
        # IPv6 keeps one prefix length per address: a new length replaces it.
        for iface in [i for i in gone if any(w.ip == i.ip for w in want) and i.version == 6]:
            self._link.del_address(iface)
            self.interfaces.remove(iface)
            gone.remove(iface)
        for iface in want:
            if iface not in self.interfaces:
                self._link.add_address(iface)
                self.interfaces.append(iface)
        for route in routes:
            if route not in self.routes:
                self._link.add_route(route)
                self.routes.append(route)
        for route in [r for r in self.routes if r not in routes]:
            self._link.del_route(route)
            self.routes.remove(route)
        for iface in gone:
            self._link.del_address(iface)
            self.interfaces.remove(iface)

    def remove_all(self) -> None:
        for route in reversed(self.routes):
            _quietly(self._link.del_route, route)
        for iface in reversed(self.interfaces):
            _quietly(self._link.del_address, iface)
        self.routes.clear()
        self.interfaces.clear()


def _quietly(fn: Callable, *args) -> None:
    try:
        fn(*args)
    except RouteChainError as e:
        log.warning("teardown: %s", e)


class Workers:
    """One thread per TUN queue, each inside the C serving loop."""

    def __init__(self, fds: list[int], live: core.Live) -> None:
        self._stop = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.workers = [core.Worker(fd, self._stop, live) for fd in fds]
        self.failures: list[str] = []
        self._threads = [threading.Thread(target=self._serve, args=(i, w), daemon=True,
                                          name=f"queue-{i}")
                         for i, w in enumerate(self.workers)]
        for thread in self._threads:
            thread.start()

    def _serve(self, queue: int, worker: core.Worker) -> None:
        err = worker.run()
        if err:
            self.failures.append(f"queue {queue}: {os.strerror(err)}")

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        os.eventfd_write(self._stop, 1)
        for thread in self._threads:
            thread.join()
        os.close(self._stop)

    def totals(self) -> core.Stats:
        return core.Stats.total(w.stats() for w in self.workers)


def run(load: Callable[[], Config], notifier=None, user: str | None = None) -> int:
    """Serve until SIGTERM or SIGINT. `load` gives the effective configuration,
    and is called again on SIGHUP. Returns the exit status."""
    from . import service  # the systemd side is optional until the service starts

    notifier = notifier or service.Notifier()
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    config = load()
    settings = Settings.of(config)
    for warning in config.warnings:
        log.warning("%s", warning)

    with ExitStack() as stack:
        tun = stack.enter_context(Tun(settings.interface, settings.queues))
        link = stack.enter_context(Link(settings.interface))
        link.set_up(config.mtu)
        addresses = Addresses(link)
        stack.callback(addresses.remove_all)
        addresses.apply(config.chains, config.routes)
        if user:
            # Capabilities are per thread: drop before any thread starts.
            from .privilege import drop_to
            drop_to(user, keep=_capabilities_kept(config))
        live = core.Live(core.Table(config.chains))
        workers = Workers(tun.fds, live)
        stack.callback(workers.stop)
        dns = stack.enter_context(DnsSide(config))
        _log_chains(config, settings)
        notifier.ready(_status(workers))
        status = _serve(load, config, settings, link, addresses, live, workers, dns, notifier)
        notifier.stopping()
        _log_counters(workers)
    return status


def _serve(load, config, settings, link, addresses, live, workers, dns, notifier) -> int:
    """The main thread's loop: signals, watchdog pings and status updates."""
    watchdog = notifier.watchdog_interval()
    tick = min(STATUS_INTERVAL, watchdog) if watchdog else STATUS_INTERVAL
    next_status = time.monotonic() + STATUS_INTERVAL
    while True:
        info = signal.sigtimedwait(SIGNALS, tick)
        if not workers.alive():
            log.error("a worker stopped (%s): exiting so that the service restarts",
                      "; ".join(workers.failures) or "unknown reason")
            return 1
        if watchdog:
            notifier.watchdog()
        if info is None:
            pass
        elif info.si_signo in (signal.SIGTERM, signal.SIGINT):
            log.info("%s received", signal.Signals(info.si_signo).name)
            return 0
        elif info.si_signo == signal.SIGHUP:
            config = reload(load, config, settings, link, addresses, live, dns, notifier)
        elif info.si_signo == signal.SIGUSR1:
            _log_counters(workers)
        if time.monotonic() >= next_status:
            notifier.status(_status(workers))
            next_status = time.monotonic() + STATUS_INTERVAL


def reload(load, old: Config, settings, link, addresses, live, dns, notifier) -> Config:
    """Re-read the configuration and apply what changed without closing the
    TUN; a configuration that fails keeps the old one serving."""
    notifier.reloading()
    try:
        new = load()
        for warning in new.warnings:
            log.warning("%s", warning)
        for what, now in (("interface", Settings.of(new).interface),
                          ("queues", Settings.of(new).queues)):
            if now != getattr(settings, what):
                log.warning("reload: %s %s -> %s needs a restart; keeping %s",
                            what, getattr(settings, what), now, getattr(settings, what))
        table = core.Table(new.chains)
        if new.mtu and new.mtu != old.mtu:
            link.set_mtu(new.mtu)
        try:
            addresses.apply(new.chains, new.routes)
        except RouteChainError:
            addresses.apply(old.chains, old.routes)
            raise
        live.publish(table)
        dns.reload(new)
    except RouteChainError as e:
        log.error("reload failed, still serving the previous configuration: %s", e)
        notifier.ready(f"reload failed: {e}")
        return old
    log.info("reloaded: %d chains, %d routes", len(new.chains), len(new.routes))
    notifier.ready()
    return new


class DnsSide:
    """The built-in DNS server, when the configuration asks for one."""

    def __init__(self, config: Config) -> None:
        self._server = None
        self._start(config)

    def _start(self, config: Config) -> None:
        if config.dns is None or not config.dns.listen:
            return
        from . import dns, zone
        zones = zone.build(config)
        self._server = dns.Server(zones, config.dns.listen)
        self._server.start()
        log.info("DNS: serving %d zones on %s", len(zones),
                 ", ".join(f"{h}:{p}" for h, p in config.dns.listen))

    def reload(self, config: Config) -> None:
        if self._server is None:
            if config.dns is not None and config.dns.listen:
                log.warning("reload: DNS listeners added: they start at the next restart")
            return
        from . import zone
        self._server.reload(zone.build(config))

    def __enter__(self) -> "DnsSide":
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.stop()


def _capabilities_kept(config: Config) -> list[str]:
    keep = ["CAP_NET_ADMIN"]
    if config.dns and any(port < 1024 for _, port in config.dns.listen):
        keep.append("CAP_NET_BIND_SERVICE")
    return keep


def _log_chains(config: Config, settings: Settings) -> None:
    for chain in config.chains:
        if chain.length:
            log.info("chain %s: hops %s .. %s (%s)", chain.interface, chain.hop_address(1),
                     chain.destination, chain.where)
        else:
            log.warning("chain %s has no room for a hop after its host: it answers nothing",
                        chain.interface)
    log.info("serving on %s with %d queues", settings.interface, settings.queues)


def _status(workers: Workers) -> str:
    return workers.totals().summary()


def _log_counters(workers: Workers) -> None:
    for i, worker in enumerate(workers.workers):
        log.info("queue %d: %s", i, worker.stats().summary(detail=True))
    log.info("total: %s", workers.totals().summary(detail=True))
