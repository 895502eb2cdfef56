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

from . import settings
from .chaintable import Table
from .config import Config, one_line
from .desired import Keeper
from .netlink import Link
from .tun import DEFAULT_MTU, DEFAULT_TXQUEUELEN, Tun
from .workers import Live, Pacing, Stats, Worker

log = logging.getLogger("route-chain")

STATUS_INTERVAL = 5.0
LIVENESS_INTERVAL = 1.0  # how soon a dead worker or DNS thread is noticed
WAKE = signal.SIGUSR2
SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, WAKE}
# What `--user` keeps: changing addresses and routes (at reload and repair)
# and removing them at exit. Binding is done before the drop and `listen`
# needs a restart, so CAP_NET_BIND_SERVICE is not kept.
CAPABILITIES_KEPT = ("CAP_NET_ADMIN",)


def default_queues() -> int:
    """One queue per CPU this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


@dataclass(frozen=True)
class Started:
    """What the daemon started with and keeps until a restart: the
    interface and queue count it made, and the [table] settings whose
    declarations say `restart=True` (settings.restart_changes)."""

    interface: str
    queues: int
    config: Config  # its [table]s only: what a reload compares with

    @classmethod
    def of(cls, config: Config) -> "Started":
        return cls(config.daemon.interface or settings.DEFAULT_INTERFACE,
                   config.daemon.queues or default_queues(),
                   Config(**{t.name: getattr(config, t.name)
                             for t in settings.TABLES if not t.array}))

    def kept(self, new: Config) -> list[str]:
        """What a reload to `new` leaves as it is until a restart."""
        return [f"{s.name} changes only at a restart: keeping {settings.shown(running)}, "
                f"not {settings.shown(wanted)}"
                for s, running, wanted in settings.restart_changes(self.config, new)]


class Workers:
    """One thread per TUN queue, each inside the C serving loop."""

    def __init__(self, fds: list[int], live: Live, pacing: Pacing) -> None:
        self._stop = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.workers = [Worker(fd, self._stop, live, pacing, i) for i, fd in enumerate(fds)]
        self.failures: list[str] = []
        self._threads = [threading.Thread(target=self._serve, args=(i, w), daemon=True,
                                          name=f"queue-{i}")
                         for i, w in enumerate(self.workers)]
        for thread in self._threads:
            thread.start()

    def _serve(self, queue: int, worker: Worker) -> None:
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

    def totals(self) -> Stats:
        return Stats.total(w.stats() for w in self.workers)


def run(load: Callable[[], Config], notifier=None, user: str | None = None,
        config: Config | None = None, took: "Phases | None" = None) -> int:
    """Serve until SIGTERM or SIGINT. `load` gives the effective configuration
    (unless `config` is the one it just gave), and is called again on SIGHUP.
    `took` holds the phases before (the load). Returns the exit status."""
    from . import service  # the systemd side is optional until the service starts

    notifier = notifier or service.Notifier()
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    config = config or load()
    started = Started.of(config)
    for warning in config.log_lines:
        log.warning("%s", warning)

    took = took or Phases()
    with ExitStack() as stack:
        tun = stack.enter_context(Tun(started.interface, started.queues))
        link = stack.enter_context(Link(started.interface, config.daemon.route_protocol))
        link.set_up(config.daemon.mtu, config.txqueuelen)
        keeper = Keeper(link)
        stack.callback(keeper.remove_all)
        asked = config
        took("TUN")
        config = keeper.adopt(config, strict=True)
        took("link")
        for warning in config.warnings[len(asked.warnings):]:  # what was left alone
            log.warning("%s", warning)
        # Every listener is bound here, while the process may still take a
        # port below 1024: `listen` is restart-only, so nothing is bound
        # after this and no capability to bind is kept.
        dns = stack.enter_context(DnsSide(config))
        took("DNS")
        exporter = None
        if config.metrics.listen:
            from . import metrics
            exporter = stack.enter_context(metrics.Exporter(config.metrics.listen))
        if user:
            # Capabilities are per thread: drop before any thread starts.
            from .privilege import drop_to
            drop_to(user, keep=CAPABILITIES_KEPT)
        live = Live(Table(config.chains, config.limits, started.queues))
        took("table")
        pacing = Pacing(config.limits, started.queues)
        workers = Workers(tun.fds, live, pacing)
        stack.callback(workers.stop)
        main = threading.main_thread().ident
        keeper.watch(lambda: signal.pthread_kill(main, WAKE))
        stack.callback(keeper.stop)
        dns.start()
        took("threads")
        _log_chains(config, started, took)
        running = Running(load, config, started, link, keeper, live, workers, dns, notifier)
        if exporter is not None:
            exporter.serve(running)
            stack.callback(exporter.close)  # scrapes end before the workers stop
            log.info("metrics: serving on http://%s/metrics", exporter.where)
        notifier.ready(running.status())
        status = running.serve()
        notifier.stopping()
        # Routes first, while everything else still serves: a routing
        # daemon withdraws their announcement before the TUN goes.
        keeper.stop()
        keeper.remove_all()
        _log_counters(workers, keeper, dns)
    return status


class Phases:
    """Where a start or reload spent its time, for its log line:
    `took("name")` ends the phase begun at the last call."""

    def __init__(self) -> None:
        self.begun = self.last = time.monotonic()
        self.spent: list[tuple[str, float]] = []

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.spent.append((name, now - self.last))
        self.last = now

    def __str__(self) -> str:
        return f"{self.last - self.begun:.2f} s (" + ", ".join(
            f"{name} {spent:.2f}" for name, spent in self.spent) + ")"


@dataclass
class Running:
    """A daemon whose setup is done: the main thread's loop and reload."""

    load: Callable[[], Config]
    config: Config
    started: Started
    link: Link
    keeper: Keeper
    live: Live
    workers: Workers
    dns: "DnsSide"
    notifier: object
    # Reload outcomes, for the logs' readers and the metrics.
    reloads_ok: int = 0
    reloads_failed: int = 0
    last_reload_ok: bool = True

    def serve(self) -> int:
        """Signals, watchdog pings and status updates until asked to stop."""
        from . import service
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
                service.answer_reload(info, self.last_reload_ok)
            elif signo == signal.SIGUSR1:
                _log_counters(self.workers, self.keeper, self.dns)
            if self.keeper.pending():
                self.keeper.repair()
            if time.monotonic() >= next_status:
                self.notifier.status(self.status())
                next_status = time.monotonic() + STATUS_INTERVAL

    def status(self) -> str:
        """The STATUS= line: the packet path's counts and repairs, then DNS's."""
        return "; ".join(filter(None, (
            f"{self.workers.totals().summary()}, {self.keeper.repairs} repairs",
            self.dns.summary())))

    def reload(self) -> None:
        """Re-read the configuration and apply what changed without closing
        the TUN. Everything that loads and applies runs under one guard: a
        failure of any kind (a RecursionError, a MemoryError, a DNS library
        error as much as a ConfigError) is logged, put in STATUS= and
        counted, and each step already applied is undone, latest first, so
        the previous configuration stays fully applied and serving."""
        self.notifier.reloading()
        old = self.config
        undo: list[Callable[[], None]] = []
        took = Phases()
        try:
            new = self.load()
            took("load")
            for warning in new.log_lines:
                log.warning("%s", warning)
            for kept in self.started.kept(new):
                log.warning("reload: %s", kept)
            table = Table(new.chains, new.limits, self.started.queues, self.live.table)
            took("table")
            # System changes last, each with its undo: a failure half-way
            # puts back what the previous configuration had.
            undo.append(lambda: self.keeper.adopt(old, strict=False))
            applied = self.keeper.adopt(new, strict=False)
            took("link")
            for warning in applied.warnings[len(new.warnings):]:
                log.warning("reload: %s", warning)
            if applied.chains != new.chains:
                table = Table(applied.chains, new.limits, self.started.queues, table)
            new = applied
            serving = self.live.table  # kept alive by the undo, so put back as it was
            undo.append(lambda: self.live.publish(serving))
            self.live.publish(table)
            undo.append(lambda: self.dns.reload(old))
            self.dns.reload(new)
            took("DNS")
            mtu, txqueuelen = new.daemon.mtu, new.txqueuelen
            if mtu and mtu != old.daemon.mtu:
                self.link.set_mtu(mtu)
                undo.append(lambda: self.link.set_mtu(old.daemon.mtu or DEFAULT_MTU))
            # A length given and then no longer said stays; the one delays
            # chose goes back to the kernel's when no chain delays any more.
            if txqueuelen != old.txqueuelen and (txqueuelen or not old.daemon.txqueuelen):
                self.link.set_txqueuelen(txqueuelen or DEFAULT_TXQUEUELEN)
        except Exception as e:  # noqa: BLE001 - whatever fails, the daemon serves on
            for step in reversed(undo):
                try:
                    step()
                except Exception as again:  # noqa: BLE001
                    log.error("reload: putting the previous configuration back: %s",
                              one_line(again))
            self.reloads_failed += 1
            self.last_reload_ok = False
            reason = one_line(e)
            log.error("reload failed, still serving the previous configuration: %s", reason)
            self.notifier.ready(f"reload failed, still serving the previous configuration: "
                                f"{reason}")
            return
        self.config = new
        self.reloads_ok += 1
        self.last_reload_ok = True
        log.info("reloaded: %d chains, %d routes in %s", len(new.chains), len(new.routes), took)
        self.notifier.ready(self.status())


class DnsSide:
    """The built-in DNS server, when the configuration asks for one: its
    zones and limits from the config, its counts for the log, STATUS= and
    metrics."""

    def __init__(self, config: Config) -> None:
        """Bound, not yet serving: start() serves."""
        self._server = None
        self._listen = config.dns.listen
        if not self._listen:
            return
        from . import dns
        # Drafts: a zone's records are made on its first query (signed then,
        # or on its first transfer, when the server signs), so that the
        # server answers every zone from the start at a cost per zone.
        self._zones = _zones(config)
        self._keys = None
        self._server = dns.Server(self._zones, self._listen, config.dns,
                                  *_dns_transfers(config), signer=self._signer(config))
        self._server.bind()

    def start(self) -> None:
        if self._server is not None:
            self._server.start()
            log.info("DNS: serving %d zones on %s", len(self._zones), _addresses(self._listen))

    def reload(self, config: Config) -> None:
        """New zones and limits for the running server; listeners stay as
        they were bound (dns.listen is restart-only)."""
        if self._server is not None:
            self._server.reload(_zones(config), config.dns, *_dns_transfers(config),
                                signer=self._signer(config))

    def _signer(self, config: Config):
        """A dnssec.Signer for [dnssec], or None when signing is off. The
        keys are read (or made, the first time) once, and again only when
        key_dir or algorithm change; a problem with them is a ConfigError
        (start fails, or a reload keeps the old config)."""
        s = config.dnssec
        if not s.enabled:
            return None
        from . import dnssec
        if self._keys is None or (self._keys[0].key_dir, self._keys[0].algorithm) != (
                s.key_dir, s.algorithm):
            keys = dnssec.load_keys(s)
            log.info("DNSSEC: %s %s", "made" if keys.made else "using", keys.describe())
            self._keys = (s, keys)
        return dnssec.Signer(self._keys[1], s)

    def alive(self) -> bool:
        return self._server is None or self._server.alive()

    def counters(self) -> dict[str, int]:
        """Flat counts ("queries", "rcode:NOERROR", "drop:ratelimited", ...);
        empty without a server."""
        return self._server.counters() if self._server is not None else {}

    def summary(self, detail: bool = False) -> str:
        """'' without a server; else 'dns: ...', short or with every count."""
        if self._server is None:
            return ""
        return "dns: " + (self._server.detail() if detail else self._server.summary())

    def __enter__(self) -> "DnsSide":
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.stop()


def _zones(config: Config) -> list:
    """Every zone the server holds: the reverse zones as drafts (made
    whole, and signed, when a query or transfer first needs one) and the
    stories' forward names (a zone each, a few records)."""
    from . import names, zone
    return zone.drafts(config) + names.build(config)


def _dns_transfers(config: Config):
    """Who may transfer, and the secondaries to NOTIFY, as the server takes
    them: (xfr.Policy, secondaries)."""
    from . import xfr
    policy = xfr.policy(config.dns.transfer, config.dns.transfer_keys,
                        [(s.address, s.key) for s in config.secondaries], config.keys)
    return policy, config.secondaries


def _log_chains(config: Config, started: Started, took: Phases) -> None:
    """One line for the whole start (however many chains), each chain at
    debug level (`-v`; `route-chain preview` shows the stories), and a
    warning for each chain that answers nothing."""
    hops = 0
    for chain in config.chains:
        if chain.length:
            hops += chain.length
            log.debug("chain %s: hops %s .. %s (%s)", chain.interface, chain.hop_address(1),
                      chain.destination, chain.where)
        else:
            log.warning("chain %s has no room for a hop after its host: it answers nothing",
                        chain.interface)
    families = {4: 0, 6: 0}
    for chain in config.chains:
        families[chain.family] += 1
    log.info("serving on %s with %d queues: %d chains (%d IPv4, %d IPv6), %d hops; "
             "set up in %s", started.interface, started.queues, len(config.chains),
             families[4], families[6], hops, took)


def _addresses(listen) -> str:
    return ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in listen)


def _log_counters(workers: Workers, keeper: Keeper, dns: "DnsSide") -> None:
    for i, worker in enumerate(workers.workers):
        log.info("queue %d: %s", i, worker.stats().summary(detail=True))
    log.info("total: %s", workers.totals().summary(detail=True))
    log.info("repairs: %d (addresses, routes and link state put back)", keeper.repairs)
    if dns.summary():
        log.info("%s", dns.summary(detail=True))
