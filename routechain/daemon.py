"""The conductor: wires the TUN, netlink, the C workers, DNS and systemd
together, and owns the signals. Setup is torn down in reverse order
(ExitStack), so a failure half-way leaves nothing behind.

Signals: SIGTERM and SIGINT stop, SIGHUP reloads, SIGUSR1 logs counters;
SIGUSR2 is how the netlink monitor wakes the main thread to repair the
link's desired state (desired.Keeper). They are blocked in every thread and
taken by the main thread alone with sigtimedwait, so the C loops are never
interrupted and every change to the link is made by the main thread.
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
from .config import DEFAULT_INTERFACE, Config
from .desired import Keeper
from .errors import RouteChainError
from .netlink import Link
from .tun import Tun

log = logging.getLogger("route-chain")

STATUS_INTERVAL = 5.0
LIVENESS_INTERVAL = 1.0  # how soon a dead worker or DNS thread is noticed
WAKE = signal.SIGUSR2
SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, WAKE}


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


def run(load: Callable[[], Config], notifier=None, user: str | None = None,
        config: Config | None = None) -> int:
    """Serve until SIGTERM or SIGINT. `load` gives the effective configuration
    (unless `config` is the one it just gave), and is called again on SIGHUP.
    Returns the exit status."""
    from . import service  # the systemd side is optional until the service starts

    notifier = notifier or service.Notifier()
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    config = config or load()
    settings = Settings.of(config)
    for warning in config.warnings:
        log.warning("%s", warning)

    with ExitStack() as stack:
        tun = stack.enter_context(Tun(settings.interface, settings.queues))
        link = stack.enter_context(Link(settings.interface))
        link.set_up(config.mtu)
        keeper = Keeper(link)
        stack.callback(keeper.remove_all)
        config = keeper.adopt(config, strict=True)
        if user:
            # Capabilities are per thread: drop before any thread starts.
            from .privilege import drop_to
            drop_to(user, keep=_capabilities_kept(config))
        live = core.Live(core.Table(config.chains))
        workers = Workers(tun.fds, live)
        stack.callback(workers.stop)
        main = threading.main_thread().ident
        keeper.watch(lambda: signal.pthread_kill(main, WAKE))
        stack.callback(keeper.stop)
        dns = stack.enter_context(DnsSide(config))
        _log_chains(config, settings)
        running = Running(load, config, settings, link, keeper, live, workers, dns, notifier)
        notifier.ready(_status(workers, keeper))
        status = running.serve()
        notifier.stopping()
        _log_counters(workers, keeper)
    return status


@dataclass
class Running:
    """A daemon whose setup is done: the main thread's loop and reload."""

    load: Callable[[], Config]
    config: Config
    settings: Settings
    link: Link
    keeper: Keeper
    live: core.Live
    workers: Workers
    dns: "DnsSide"
    notifier: object

    def serve(self) -> int:
        """Signals, watchdog pings and status updates until asked to stop."""
        watchdog = self.notifier.watchdog_interval()
        tick = min(LIVENESS_INTERVAL, watchdog) if watchdog else LIVENESS_INTERVAL
        next_status = time.monotonic() + STATUS_INTERVAL
        next_watchdog = time.monotonic()
        while True:
            info = signal.sigtimedwait(SIGNALS, tick)
            if not self.workers.alive():
                log.error("a worker stopped (%s): exiting so that the service restarts",
                          "; ".join(self.workers.failures) or "unknown reason")
                return 1
            if not self.dns.alive():
                log.error("the DNS server stopped: exiting so that the service restarts")
                return 1
            if not self.keeper.alive():
                log.error("the netlink monitor stopped (%s): exiting so that the service "
                          "restarts", self.keeper.failure or "unknown reason")
                return 1
            if watchdog and time.monotonic() >= next_watchdog:
                self.notifier.watchdog()
                next_watchdog = time.monotonic() + watchdog
            signo = info.si_signo if info else None
            if signo in (signal.SIGTERM, signal.SIGINT):
                log.info("%s received", signal.Signals(signo).name)
                return 0
            if signo == signal.SIGHUP:
                self.reload()
            elif signo == signal.SIGUSR1:
                _log_counters(self.workers, self.keeper)
            if self.keeper.pending():
                self.keeper.repair()
            if time.monotonic() >= next_status:
                self.notifier.status(_status(self.workers, self.keeper))
                next_status = time.monotonic() + STATUS_INTERVAL

    def reload(self) -> None:
        """Re-read the configuration and apply what changed without closing
        the TUN; a configuration that fails keeps the old one serving."""
        self.notifier.reloading()
        old = self.config
        try:
            new = self.load()
            for warning in new.warnings:
                log.warning("%s", warning)
            wanted = Settings.of(new)
            if wanted != self.settings:
                log.warning("reload: interface and queues need a restart: keeping %s "
                            "with %d queues", self.settings.interface, self.settings.queues)
            table = core.Table(new.chains)
            if new.mtu and new.mtu != old.mtu:
                self.link.set_mtu(new.mtu)
            try:
                applied = self.keeper.adopt(new, strict=False)
            except RouteChainError:
                self.keeper.adopt(old, strict=False)
                raise
            for warning in applied.warnings[len(new.warnings):]:
                log.warning("reload: %s", warning)
            if applied.chains != new.chains:
                table = core.Table(applied.chains)
            new = applied
            self.live.publish(table)
            self.dns.reload(new)
        except RouteChainError as e:
            log.error("reload failed, still serving the previous configuration: %s", e)
            self.notifier.ready(f"reload failed: {e}")
            return
        self.config = new
        log.info("reloaded: %d chains, %d routes", len(new.chains), len(new.routes))
        self.notifier.ready(_status(self.workers, self.keeper))


class DnsSide:
    """The built-in DNS server, when the configuration asks for one."""

    def __init__(self, config: Config) -> None:
        self._server = None
        self._listen = config.dns.listen if config.dns else ()
        if not self._listen:
            return
        from . import dns, zone
        zones = zone.build(config)
        self._server = dns.Server(zones, self._listen)
        self._server.start()
        log.info("DNS: serving %d zones on %s", len(zones), _addresses(self._listen))

    def reload(self, config: Config) -> None:
        """New zones for the running server; listeners stay as they were bound."""
        listen = config.dns.listen if config.dns else ()
        if listen != self._listen:
            log.warning("reload: DNS listeners change from %s to %s at the next restart",
                        _addresses(self._listen) or "none", _addresses(listen) or "none")
        if self._server is not None:
            from . import zone
            self._server.reload(zone.build(config))

    def alive(self) -> bool:
        return self._server is None or self._server.alive()

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


CHAINS_LOGGED = 20  # chains named one per line at start; the rest are counted


def _log_chains(config: Config, settings: Settings) -> None:
    for chain in config.chains[:CHAINS_LOGGED]:
        if chain.length:
            log.info("chain %s: hops %s .. %s (%s)", chain.interface, chain.hop_address(1),
                     chain.destination, chain.where)
    if len(config.chains) > CHAINS_LOGGED:
        log.info("and %d more chains", len(config.chains) - CHAINS_LOGGED)
    for chain in config.chains:
        if not chain.length:
            log.warning("chain %s has no room for a hop after its host: it answers nothing",
                        chain.interface)
    log.info("serving on %s with %d queues", settings.interface, settings.queues)


def _addresses(listen) -> str:
    return ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in listen)


def _status(workers: Workers, keeper: Keeper) -> str:
    return f"{workers.totals().summary()}, {keeper.repairs} repairs"


def _log_counters(workers: Workers, keeper: Keeper) -> None:
    for i, worker in enumerate(workers.workers):
        log.info("queue %d: %s", i, worker.stats().summary(detail=True))
    log.info("total: %s", workers.totals().summary(detail=True))
    log.info("repairs: %d (addresses, routes and link state put back)", keeper.repairs)
