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
from .config import DEFAULT_INTERFACE, Config, DnsSettings, one_line
from .desired import Keeper
from .netlink import Link
from .tun import DEFAULT_MTU, Tun

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
class Settings:
    """What a running daemon cannot change without a restart."""

    interface: str
    queues: int

    @classmethod
    def of(cls, config: Config) -> "Settings":
        return cls(config.interface or DEFAULT_INTERFACE, config.queues or default_queues())


class Workers:
    """One thread per TUN queue, each inside the C serving loop."""

    def __init__(self, fds: list[int], live: core.Live, pacing: core.Pacing) -> None:
        self._stop = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.workers = [core.Worker(fd, self._stop, live, pacing, i) for i, fd in enumerate(fds)]
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
    for warning in config.log_lines:
        log.warning("%s", warning)

    with ExitStack() as stack:
        tun = stack.enter_context(Tun(settings.interface, settings.queues))
        link = stack.enter_context(Link(settings.interface))
        link.set_up(config.mtu, config.txqueuelen)
        keeper = Keeper(link)
        stack.callback(keeper.remove_all)
        config = keeper.adopt(config, strict=True)
        # Every listener is bound here, while the process may still take a
        # port below 1024: `listen` is restart-only, so nothing is bound
        # after this and no capability to bind is kept.
        dns = stack.enter_context(DnsSide(config))
        exporter = None
        if config.metrics:
            from . import metrics
            exporter = stack.enter_context(metrics.Exporter(config.metrics))
        if user:
            # Capabilities are per thread: drop before any thread starts.
            from .privilege import drop_to
            drop_to(user, keep=CAPABILITIES_KEPT)
        live = core.Live(core.Table(config.chains, config.limits, settings.queues))
        pacing = core.Pacing(config.limits, settings.queues)
        workers = Workers(tun.fds, live, pacing)
        stack.callback(workers.stop)
        main = threading.main_thread().ident
        keeper.watch(lambda: signal.pthread_kill(main, WAKE))
        stack.callback(keeper.stop)
        dns.start()
        _log_chains(config, settings)
        running = Running(load, config, settings, link, keeper, live, workers, dns, notifier)
        if exporter is not None:
            exporter.serve(running)
            stack.callback(exporter.close)  # scrapes end before the workers stop
            log.info("metrics: serving on http://%s/metrics", exporter.where)
        notifier.ready(running.status())
        status = running.serve()
        notifier.stopping()
        _log_counters(workers, keeper, dns)
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
        try:
            new = self.load()
            for warning in new.log_lines:
                log.warning("%s", warning)
            wanted = Settings.of(new)
            if wanted != self.settings:
                log.warning("reload: interface and queues need a restart: keeping %s "
                            "with %d queues", self.settings.interface, self.settings.queues)
            if (new.limits.delay_pool, new.limits.seed) != (old.limits.delay_pool,
                                                            old.limits.seed):
                log.warning("reload: limits.delay_pool and limits.seed need a restart")
            table = core.Table(new.chains, new.limits, self.settings.queues)
            # System changes last, each with its undo: a failure half-way
            # puts back what the previous configuration had.
            undo.append(lambda: self.keeper.adopt(old, strict=False))
            applied = self.keeper.adopt(new, strict=False)
            for warning in applied.warnings[len(new.warnings):]:
                log.warning("reload: %s", warning)
            if applied.chains != new.chains:
                table = core.Table(applied.chains, new.limits, self.settings.queues)
            new = applied
            serving = self.live.table  # kept alive by the undo, so put back as it was
            undo.append(lambda: self.live.publish(serving))
            self.live.publish(table)
            undo.append(lambda: self.dns.reload(old))
            self.dns.reload(new)
            if new.mtu and new.mtu != old.mtu:
                self.link.set_mtu(new.mtu)
                undo.append(lambda: self.link.set_mtu(old.mtu or DEFAULT_MTU))
            if new.txqueuelen and new.txqueuelen != old.txqueuelen:
                self.link.set_txqueuelen(new.txqueuelen)
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
        log.info("reloaded: %d chains, %d routes", len(new.chains), len(new.routes))
        self.notifier.ready(self.status())


class DnsSide:
    """The built-in DNS server, when the configuration asks for one: its
    zones and limits from the config, its counts for the log, STATUS= and
    metrics."""

    def __init__(self, config: Config) -> None:
        """Bound, not yet serving: start() serves."""
        self._server = None
        self._listen = config.dns.listen if config.dns else ()
        if not self._listen:
            return
        from . import dns
        self._zones = _zones(config)
        self._keys = None
        self._server = dns.Server(self._zones, self._listen, *_dns_limits(config),
                                  *_dns_transfers(config), signer=self._signer(config))
        self._server.bind()

    def start(self) -> None:
        if self._server is not None:
            self._server.start()
            log.info("DNS: serving %d zones on %s", len(self._zones), _addresses(self._listen))

    def reload(self, config: Config) -> None:
        """New zones and limits for the running server; listeners stay as
        they were bound."""
        listen = config.dns.listen if config.dns else ()
        if listen != self._listen:
            log.warning("reload: DNS listeners change from %s to %s at the next restart",
                        _addresses(self._listen) or "none", _addresses(listen) or "none")
        if self._server is not None:
            self._server.reload(_zones(config), *_dns_limits(config),
                                *_dns_transfers(config), signer=self._signer(config))

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


def _dns_limits(config: Config):
    """The [dns] limits as the server takes them: (rate limits, TCP limits)."""
    from . import dns, rrl
    d = config.dns or DnsSettings()
    return (rrl.Limits(rate=d.rate_limit, errors=d.rate_limit_errors, slip=d.rate_limit_slip),
            dns.TcpLimits(connections=d.tcp_connections,
                          per_client=d.tcp_connections_per_client, idle=d.tcp_idle_timeout))


def _zones(config: Config) -> list:
    """Every zone the server holds: the reverse zones and the stories'
    forward names."""
    from . import names, zone
    return zone.build(config) + names.build(config)


def _dns_transfers(config: Config):
    """Who may transfer, and the secondaries to NOTIFY, as the server takes
    them: (xfr.Policy, secondaries)."""
    from . import xfr
    d = config.dns or DnsSettings()
    policy = xfr.policy(d.transfer, d.transfer_keys,
                        [(s.address, s.key) for s in d.secondaries], d.keys)
    return policy, d.secondaries


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


def _log_counters(workers: Workers, keeper: Keeper, dns: "DnsSide") -> None:
    for i, worker in enumerate(workers.workers):
        log.info("queue %d: %s", i, worker.stats().summary(detail=True))
    log.info("total: %s", workers.totals().summary(detail=True))
    log.info("repairs: %d (addresses, routes and link state put back)", keeper.repairs)
    if dns.summary():
        log.info("%s", dns.summary(detail=True))
