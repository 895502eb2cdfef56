"""Prometheus metrics: the only module that imports prometheus_client.

`[metrics] listen = "127.0.0.1:9850"` serves the text exposition format on
http://127.0.0.1:9850/metrics. Nothing is counted here: the C workers, the
DNS server and the daemon keep their own counters, and a scrape reads them
once (`Snapshot.of`) and renders them (`families`), so serving costs
nothing per packet and a scrape sees one consistent moment of each source.

    routechain_build_info{version}                      1
    routechain_received_packets_total{queue}            packets read from the TUN
    routechain_replies_total{queue,kind}                replies written, by kind
    routechain_drops_total{queue,reason}                packets not answered, by reason
    routechain_write_errors_total{queue}                replies the TUN refused
    routechain_read_errors_total{queue}                 failed reads from the TUN
    routechain_chapter_replies_total{queue}             replies to probes addressed to a chapter
    routechain_paced_total{queue,outcome}               what pacing did: delayed, lost, rate limited,
                                                        pool full, overloaded
    routechain_delay_lateness_seconds{queue}            histogram: how late delayed replies went out
    routechain_chains{family}, routechain_hops{family}  what is being served
    routechain_reloads_total{result}                    ok | failed (when the daemon counts them)
    routechain_last_reload_success                      1 or 0 (idem)
    routechain_address_repairs_total                    addresses and routes put back
    routechain_dns_queries_total                        built-in DNS server
    routechain_dns_responses_total{rcode}
    routechain_dns_drops_total{reason}
    routechain_dns_internal_errors_total
    routechain_dns_transfers_total{kind}                 AXFR/IXFR served
    routechain_dns_transfers_refused_total{reason}      AXFR/IXFR refused
    routechain_dns_notify_total{event}                  NOTIFY sent/retried/acked/failed
    routechain_dns_events_total{event}                  any other DNS counter
"""

from __future__ import annotations

import math
import socket
import threading
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, InfoMetricFamily, Metric)
from prometheus_client.utils import floatToGoString

from . import __version__
from .chain import Chain
from .chaintable import NS, Drop, Kind
from .workers import LATE_EDGES, Pace, Stats
from .errors import SetupError

PREFIX = "routechain"


@dataclass(frozen=True)
class Snapshot:
    """Every value a scrape shows, read at one moment. None: the daemon
    does not count that (yet), and the metric is left out, never shown 0."""

    queues: tuple[Stats, ...] = ()
    chains: tuple[Chain, ...] = ()
    reloads_ok: int | None = None
    reloads_failed: int | None = None
    last_reload_ok: bool | None = None
    repairs: int | None = None
    dns: dict[str, int] | None = None

    @classmethod
    def of(cls, running) -> "Snapshot":
        """Read a daemon.Running."""
        return cls(
            queues=tuple(w.stats() for w in running.workers.workers),
            chains=running.config.chains,
            reloads_ok=running.reloads_ok,
            reloads_failed=running.reloads_failed,
            last_reload_ok=running.last_reload_ok,
            repairs=running.keeper.repairs,
            dns=running.dns.counters() or None,  # {}: no DNS server
        )


# The DNS server's counter names (dns.COUNTERS) that are not of the forms
# "rcode:NAME" and "drop:REASON": -> (family, label value). "queries" counts
# UDP and TCP together; "tcp_queries" is the TCP part of it, an event.
_DNS_NAMES = {
    "queries": ("queries", None),
    "internal_errors": ("internal_errors", None),
}


# Counters "kind:detail" of zone transfers and NOTIFY -> family.
_DNS_KINDS = {"xfr": "transfers", "xfr_refused": "transfers_refused", "notify": "notify"}


def dns_counters(counters: dict[str, int]) -> dict[tuple[str, str | None], int]:
    """(family, label value) -> value: the DNS server's counters, summed
    where two of its names are one thing to a reader (UDP and TCP queries;
    NOERROR with and without data). An unknown name is an event."""
    out: dict[tuple[str, str | None], int] = {}
    for name, value in counters.items():
        kind, _, detail = name.partition(":")
        if name in _DNS_NAMES:
            key = _DNS_NAMES[name]
        elif kind == "rcode" and detail:
            key = ("responses", detail.upper())
        elif kind == "drop" and detail:
            key = ("drops", detail)
        elif kind in _DNS_KINDS and detail:
            key = (_DNS_KINDS[kind], detail)
        else:
            key = ("events", name)
        out[key] = out.get(key, 0) + value
    return out


def families(snap: Snapshot) -> Iterator[Metric]:
    """The metric families of one snapshot."""
    info = InfoMetricFamily(f"{PREFIX}_build", "route-chain version", labels=["version"])
    info.add_metric([__version__], {})
    yield info

    def per_queue(name: str, doc: str, value: Callable[[Stats], int]) -> CounterMetricFamily:
        family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["queue"])
        for q, stats in enumerate(snap.queues):
            family.add_metric([str(q)], value(stats))
        return family

    yield per_queue("received_packets", "Packets read from the TUN", lambda s: s.received)
    yield per_queue("write_errors", "Replies the TUN refused", lambda s: s.write_errors)
    yield per_queue("read_errors", "Failed reads from the TUN", lambda s: s.read_errors)
    yield per_queue("chapter_replies", "Replies to probes addressed to a chapter",
                    lambda s: s.chapters)
    replies = CounterMetricFamily(f"{PREFIX}_replies", "Replies written, by kind",
                                  labels=["queue", "kind"])
    drops = CounterMetricFamily(f"{PREFIX}_drops", "Packets not answered, by reason",
                                labels=["queue", "reason"])
    for q, stats in enumerate(snap.queues):
        for kind in Kind:
            replies.add_metric([str(q), kind.name.lower()], stats.replies[kind])
        for reason in Drop:
            if reason != Drop.NONE:
                drops.add_metric([str(q), reason.name.lower()], stats.drops[reason])
    yield replies
    yield drops
    paced = CounterMetricFamily(f"{PREFIX}_paced", "Replies by what pacing did to them "
                                "(rate limits, loss, delay)", labels=["queue", "outcome"])
    for q, stats in enumerate(snap.queues):
        for outcome in Pace:
            paced.add_metric([str(q), outcome.name.lower()], stats.paced[outcome])
    yield paced
    late = HistogramMetricFamily(f"{PREFIX}_delay_lateness_seconds", "How long after it was "
                                 "due each delayed reply was written", labels=["queue"])
    for q, stats in enumerate(snap.queues):
        buckets, count = [], 0
        for edge, n in zip(LATE_EDGES + (math.inf,), stats.late):
            count += n
            buckets.append((floatToGoString(edge), count))
        late.add_metric([str(q)], buckets, stats.late_ns / NS)
    yield late

    chains = GaugeMetricFamily(f"{PREFIX}_chains", "Chains served", labels=["family"])
    hops = GaugeMetricFamily(f"{PREFIX}_hops", "Hops served (story lines)", labels=["family"])
    for family in (4, 6):
        served = [c for c in snap.chains if c.family == family]
        chains.add_metric([str(family)], len(served))
        hops.add_metric([str(family)], sum(c.length for c in served))
    yield chains
    yield hops

    if snap.reloads_ok is not None and snap.reloads_failed is not None:
        reloads = CounterMetricFamily(f"{PREFIX}_reloads", "Reloads, by result",
                                      labels=["result"])
        reloads.add_metric(["ok"], snap.reloads_ok)
        reloads.add_metric(["failed"], snap.reloads_failed)
        yield reloads
    if snap.last_reload_ok is not None:
        yield GaugeMetricFamily(f"{PREFIX}_last_reload_success",
                                "1 if the last reload was applied, 0 if refused",
                                value=int(bool(snap.last_reload_ok)))
    if snap.repairs is not None:
        yield CounterMetricFamily(f"{PREFIX}_address_repairs",
                                  "Addresses and routes put back after someone removed them",
                                  value=snap.repairs)
    if snap.dns is not None:
        yield from _dns_families(dns_counters(snap.dns))


def _dns_families(values: dict[tuple[str, str | None], int]) -> Iterator[Metric]:
    yield CounterMetricFamily(f"{PREFIX}_dns_queries", "DNS queries received",
                              value=values.get(("queries", None), 0))
    yield CounterMetricFamily(f"{PREFIX}_dns_internal_errors",
                              "DNS queries that met a bug (no answer)",
                              value=values.get(("internal_errors", None), 0))
    for name, label, doc in (("responses", "rcode", "DNS responses, by RCODE"),
                             ("drops", "reason", "DNS queries dropped, by reason"),
                             ("transfers", "kind", "Zone transfers served, by kind "
                              "(axfr, ixfr, ixfr_full, uptodate)"),
                             ("transfers_refused", "reason", "Zone transfers refused, by "
                              "reason"),
                             ("notify", "event", "NOTIFY messages to secondaries: sent, "
                              "retried, acked, failed"),
                             ("events", "event", "Other DNS server counters")):
        family = CounterMetricFamily(f"{PREFIX}_dns_{name}", doc, labels=[label])
        for (kind, detail), value in sorted(values.items(), key=lambda kv: str(kv[0])):
            if kind == name:
                family.add_metric([detail], value)
        yield family


class Collector:
    """A prometheus_client collector over a snapshot taken at scrape time."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        return families(self._snapshot())


def registry(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    """Our collector and the process's own (CPU, memory, descriptors)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector(snapshot))
    ProcessCollector(registry=reg)
    return reg


class Exporter:
    """The HTTP endpoint. Made, it is bound (the daemon binds before it
    drops privileges, so a port below 1024 needs no capability kept);
    serve(running) answers scrapes in a thread of its own from then on."""

    def __init__(self, listen: tuple[str, int]) -> None:
        host, port = listen
        self.where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._running = None
        self._thread: threading.Thread | None = None
        server = _Server6 if ":" in host else _Server
        try:
            self._server = make_server(host, port, make_wsgi_app(registry(self._snapshot)),
                                       server, handler_class=_QuietHandler)
        except OSError as e:
            raise SetupError(f"metrics: cannot listen on {self.where}: "
                             f"{(e.strerror or str(e)).lower()}") from None

    def _snapshot(self) -> Snapshot:
        return Snapshot.of(self._running)

    def serve(self, running) -> None:
        """Answer scrapes with what `running` (a daemon.Running) counts."""
        self._running = running
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the socket; again, nothing."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "Exporter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per scrape, none outliving the daemon."""

    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per scrape."""

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base's name
        pass
