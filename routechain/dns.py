"""The built-in authoritative DNS server's transport: UDP and TCP sockets on
an asyncio loop in a thread of its own, off the packet path (the C workers
run with the GIL released, so answering costs them CPU, never a stall).
What to answer is dnsanswer.Index's business; this module moves bytes and
bounds every buffer and count:

- UDP, with [dns] fast_path (the default): each socket has a C loop in a
  thread of its own (dnsfast.py, csrc/dnsfast.c; GIL released) that reads
  and writes datagrams in batches and answers every plain query whose
  answer is in the fast path's table; it keeps the others in a ring for
  this loop, which answers them as below and publishes each plain answer
  into the table, so the next query like it is answered in C. Responses
  are rate limited per client prefix, in C, by one limiter for both
  (rrl.py is its reference). A reload clears the table before it returns.
- UDP without it: a reader on the socket drains at most UDP_BATCH
  datagrams per turn of the loop (one wake-up for many queries, and TCP
  gets its turn). asyncio's own datagram endpoint reads one datagram per
  wake-up: with dnsperf on this server it answered 18-24k queries/s where
  the draining reader answers 76-87k (2 shared CPUs).
- TCP (RFC 7766): 2-byte length framing, several queries per connection,
  answered in order: all the whole queries one read brings, a run of the
  fast path's table hits in one C call, the answers written at once. At most [dns] tcp_connections at once and
  tcp_connections_per_client from one address (more are closed at once);
  an idle connection closes after tcp_idle_timeout seconds; a query must arrive whole within QUERY_DEADLINE of its
  first byte, however its bytes trickle in; when the answers a client does
  not read pass UNSENT_MAX bytes, the connection stops being read, and is
  closed if they are not taken within QUERY_DEADLINE. A connection yields
  to the loop after the answers to each read (at most TCP_READ bytes of
  queries), so no client starves UDP or the others.
- Zone transfers (xfr.py) over TCP stream from the versions in force when
  they start, one message per turn of the loop, so queries go on being
  answered; NOTIFY (notify.py) runs as tasks on the same loop.
- Seen: `counters()` gives flat counts ("queries", "rcode:NOERROR",
  "drop:ratelimited", ..., the fast path's answers folded in, and its own
  as "fast:..."); an exception while answering is counted
  ("internal_errors"), logged with its traceback the first time its place
  in the code is hit, and never stops the server.

The sockets are bound once in `start()`, so a later privilege drop does not
matter; `reload()` swaps the Index (and limits) in one reference
assignment each, so a query is answered from the old zones or the new ones,
and none is lost.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Iterable

from . import notify, rrl, xfr
try:
    from . import dnsfast
except ImportError:  # no C core (a source tree on PYTHONPATH): Python answers all
    dnsfast = None
from .dnsanswer import ERRORS, OUTCOMES, PAYLOAD_MAX, SIGNED, Index, truncated
from .errors import SetupError
from .settings import DnsSettings
from .zone import Draft, Zone

__all__ = ["Server", "PAYLOAD_MAX", "COUNTERS"]

log = logging.getLogger("route-chain")

UDP_BATCH = 64
QUERY_DEADLINE = 2.0
UNSENT_MAX = 64 * 1024
TCP_READ = 8 * 1024  # bytes of queries answered per turn of the loop (one read)
TRANSFER_DEADLINE = 30.0  # seconds a secondary may take to read one transfer message
_READ_LIMIT = 16 * 1024  # StreamReader pauses the socket past twice this
_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)

# Rate limited as errors (rrl.py): error rcodes, refused transfers, bad TSIG.
_ERRORS = ERRORS | {c for c in xfr.COUNTERS if c.startswith(("xfr_refused:", "tsig:bad"))}

# The fast path's answers by enum rc_dns_kind (0, 1, 2).
_FAST_OUTCOMES = (tuple(sorted(dnsfast.OUTCOME_KIND, key=dnsfast.OUTCOME_KIND.get))
                  if dnsfast is not None else ())


def _limiter(settings: DnsSettings):
    """RRL in C (dnsfast.Limiter), shared by the fast path and Python's;
    rrl.RateLimiter, the reference, when there is no C core."""
    return dnsfast.Limiter(settings) if dnsfast is not None else rrl.RateLimiter(settings)


def _client_key(host: str):
    """A client's RRL key, as _limiter()'s limiter takes it."""
    return dnsfast.client_key(host) if dnsfast is not None else rrl.prefix(host)

COUNTERS = ("queries", "tcp_queries", *OUTCOMES, "truncated", "slipped", "tcp_connections",
            "drop:ratelimited", "drop:tcp_limit", "drop:tcp_timeout", "drop:tcp_unsent",
            "internal_errors", *xfr.COUNTERS, *notify.COUNTERS, "dnssec:resigned")


UDP_RECEIVE_BUFFER = 4 << 20  # bytes the kernel may hold for a UDP listener
_SO_RCVBUFFORCE = 33          # socket(7), Linux; Python does not name it


def _widen_receive_buffer(sock: socket.socket) -> None:
    """Let a burst of queries wait in the kernel rather than be dropped:
    the default buffer (net.core.rmem_default, some 208 KiB) holds only a
    few hundred datagrams, each charged its whole buffer, and a resolver
    refilling its cache or the fast path's thread losing its CPU for a
    moment sends more. SO_RCVBUFFORCE passes net.core.rmem_max; it needs
    CAP_NET_ADMIN, which the daemon holds while it binds; without it the
    kernel caps SO_RCVBUF at rmem_max."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, UDP_RECEIVE_BUFFER)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)


class Server:
    """Serve `zones` on `listen` [(address, port), ...] over UDP and TCP,
    within the limits of `settings` ([dns] rate_limit*, tcp_*); transfers
    as `transfers` allows (xfr.policy of [dns] transfer*, [[secondary]]
    and [[tsig]]), and a NOTIFY to each of `secondaries` when a zone's
    serial moves.

    bind() binds every socket (SetupError naming the address if a bind
    fails) and start() serves them in a thread of its own; reload(zones,
    ...) swaps the zones atomically; stop() closes everything and returns
    within a second or so.
    `addresses` holds the bound (host, port) pairs (useful with port 0).
    """

    def __init__(self, zones: Iterable[Zone | Draft], listen: Iterable[tuple[str, int]],
                 settings: DnsSettings = DnsSettings(), transfers: xfr.Policy = xfr.Policy(),
                 secondaries: tuple[notify.Secondary, ...] = (), signer=None) -> None:
        self._transfers, self._secondaries = transfers, secondaries
        self._signer = signer  # dnssec.Signer or None
        # Reload (main thread) and re-signing (its own thread) each make
        # the next versions from the current ones: one at a time.
        self._lock = threading.Lock()
        self._versions: xfr.Versions | None = None
        self._sources: list[Zone | Draft] = []
        self.index: Index | None = None
        # The fast path (dnsfast.py): its answers, of self.index only; its
        # UDP loops, a thread per UDP socket. Chosen at start ([dns] fast_path).
        self._fast = settings.fast_path and dnsfast is not None
        self._table = dnsfast.Table() if self._fast else None
        self._udp_loops: list = []
        self._serve(zones)
        self._resigner: threading.Thread | None = None
        self._stop_resign = threading.Event()
        self._resign_wake = threading.Event()
        self._listen = tuple(listen)
        self._rrl = _limiter(settings)
        self._settings = settings
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._sockets: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._clients: dict[str, int] = {}
        self._writers: set[asyncio.StreamWriter] = set()
        self._logged: set[tuple] = set()
        self._notify = notify.Sender(self._counts)
        self.addresses: list[tuple[str, int]] = []
        self._bound = False

    # life cycle

    def bind(self) -> None:
        """Bind and listen on every address, starting no thread: the daemon
        binds while it may still take a port below 1024, drops privileges,
        then start()s. SetupError naming the address if a bind fails."""
        if self._bound:
            return
        try:
            for host, port in self._listen:
                self.addresses.append((host, self._bind_pair(host, port)))
        except BaseException:
            self._close_sockets()
            self.addresses = []
            raise
        self._bound = True

    def start(self) -> None:
        """Serve, in a thread of its own, on the sockets bind() made (it
        binds them first if it has not)."""
        self.bind()
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="route-chain-dns", daemon=True)
        self._thread.start()
        self._started.wait(timeout=10)
        self._send_notify(self._versions)
        self._resigner = threading.Thread(target=self._resign_loop,
                                          name="route-chain-dnssec", daemon=True)
        self._resigner.start()

    def reload(self, zones: Iterable[Zone | Draft], settings: DnsSettings | None = None,
               transfers: xfr.Policy | None = None,
               secondaries: tuple[notify.Secondary, ...] | None = None,
               signer=False) -> None:
        """Serve `zones` from now on (when transfers, secondaries or
        signing are set, a zone that changed gets a greater serial, new
        signatures when next needed, and its secondaries a NOTIFY), with the
        limits of `settings` and the transfer policy and secondaries given;
        the sockets stay as they are, and so do the rate limiter's buckets
        if its limits do. `signer`: a dnssec.Signer, None to stop signing,
        False (the default) to keep the one in use."""
        with self._lock:
            if transfers is not None:
                self._transfers, self._secondaries = transfers, secondaries or ()
            resign = frozenset()
            if signer is not False and signer != self._signer:
                # Other keys or times: every zone gets a new version, signed
                # again when next needed (its serial moves, and a NOTIFY goes).
                self._signer = signer
                resign = frozenset(self._versions.by_origin if self._versions else ())
            self._serve(zones, resign)
            versions = self._versions
        self._resign_wake.set()
        self._send_notify(versions)
        if settings is not None:
            if not self._rrl.same(settings):
                if dnsfast is not None:
                    self._rrl.configure(settings)  # the UDP loops keep their limiter
                else:
                    self._rrl = _limiter(settings)
            self._settings = settings

    def _serve(self, zones: Iterable[Zone | Draft], resign: frozenset = frozenset()) -> None:
        """Answer from `zones`. With nobody to transfer to and no signing,
        the Index takes them as they come (a Draft's records made on its
        first query) and no version is kept. With transfers or secondaries,
        or signing, each zone has an xfr.Version: a serial that rises only
        when its draft changes, made whole, signed and rendered only when
        first needed (a query, a transfer, the re-signing thread), never
        here; a zone whose draft is unchanged keeps its version (and its
        signatures) unless its origin is in `resign`."""
        sources = list(zones)
        if self._keep_versions or self._signer is not None:
            sign = self._sign
            versions = (xfr.Versions.first(sources, sign) if self._versions is None
                        else self._versions.next(sources, sign, resign))
            index = Index(versions.by_origin.values())
        else:
            versions, index = None, Index(sources, self.index if isinstance(self.index, Index) else None)
        self.index, self._versions, self._sources = index, versions, sources
        self._answers_of(index)

    @property
    def _sign(self):
        return self._signer.sign if self._signer is not None else None

    # DNSSEC: signatures made again before they expire.

    RESIGN_WAIT_MAX = 3600.0
    RESIGN_IDLE = 1.0  # seconds between looks while no zone is signed yet

    def _resign_wait(self) -> float:
        """Seconds until the first zone's signatures are due again (at most
        RESIGN_WAIT_MAX, so a signer set by reload is looked at)."""
        signer, versions = self._signer, self._versions
        if signer is None or versions is None:
            return self.RESIGN_WAIT_MAX
        due = [signer.due_at(v.signed) for v in versions.by_origin.values()
               if v.signed is not None]  # a zone not signed yet is signed when asked
        due = [d for d in due if d is not None]
        if not due:
            return self.RESIGN_WAIT_MAX if not versions.by_origin else self.RESIGN_IDLE
        return min(self.RESIGN_WAIT_MAX, max(0.0, min(due) - signer.clock()))

    def _resign_loop(self) -> None:
        """Sleep until the first zone is due (or a reload wakes it: new
        signatures, maybe new times), sign what is due, again."""
        while True:
            self._resign_wake.wait(self._resign_wait())
            self._resign_wake.clear()
            if self._stop_resign.is_set():
                return
            try:
                self.resign_due()
            except Exception as e:  # the old signatures serve on; counted and logged
                self._internal_error(e)
                self._stop_resign.wait(10.0)

    def resign_due(self) -> int:
        """Sign again every zone whose signatures are within the refresh
        margin of expiry (each gets a new serial, and its secondaries a
        NOTIFY); returns how many. A zone never signed yet is not due: it
        is signed, with fresh times, when first asked for."""
        with self._lock:
            signer, versions = self._signer, self._versions
            if signer is None or versions is None:
                return 0
            now = signer.clock()
            due = frozenset(o for o, v in versions.by_origin.items() if v.signed is not None
                            and (signer.due_at(v.signed) or now) <= now)
            if not due:
                return 0
            sources = [v.source for v in versions.by_origin.values()]
            versions = versions.next(sources, signer.sign, resign=due)
            for origin in due:  # signed again now, not on the next query
                versions.by_origin[origin].zone()
            self.index = Index(versions.by_origin.values())
            self._answers_of(self.index)
            self._versions = versions
            self._counts["dnssec:resigned"] += len(due)
        log.info("DNSSEC: signed %d zones again before their signatures expire", len(due))
        self._send_notify(versions)
        return len(due)

    @property
    def _keep_versions(self) -> bool:
        """Whether versions are kept for transfers (serials, and what AXFR
        and IXFR send, made when a transfer first asks)."""
        return self._transfers.enabled or bool(self._secondaries)

    @property
    def zones(self) -> list[Zone]:
        """The zones served, with the serials they are served with, made
        whole (signed when signing) here: for tests and tools."""
        if self._versions is not None:
            return self._versions.zones
        return [s if isinstance(s, Zone) else s.zone() for s in self._sources]

    def _send_notify(self, versions: xfr.Versions | None) -> None:
        if versions is not None and self._secondaries and versions.changed and self.alive():
            # Versions: a NOTIFY needs the origin and the SOA, not the zone.
            zones = [versions.by_origin[o] for o in versions.changed]
            try:
                self._loop.call_soon_threadsafe(
                    self._notify.send, zones, self._secondaries, self._transfers.keys,
                    tuple(host for host, _ in self.addresses))
            except RuntimeError:
                pass  # the loop closed meanwhile: the server is stopping

    def alive(self) -> bool:
        """True while the serving thread runs (for the watchdog)."""
        return self._thread is not None and self._thread.is_alive() \
            and all(loop.alive() for loop in self._udp_loops)

    def stop(self) -> None:
        self._stop_resign.set()
        self._resign_wake.set()
        if self._resigner is not None:
            self._resigner.join(timeout=2.0)
        if self._loop is not None and self.alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=2.0)
        self._close_sockets()

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def counters(self) -> dict[str, int]:
        """A snapshot of every count, by flat name: Python's and the fast
        path's together (a query the fast path answered or limited counts
        as one of "queries" and of its rcode or drop, as in Python; what it
        passed on, Python counts), and the fast path's own ("fast:...")."""
        counts = dict(self._counts)
        if self._table is None:
            return counts
        fast = dict.fromkeys(("fast:received", "fast:sent", "fast:read_errors",
                              *dnsfast.KIND_NAMES.values()), 0)
        for loop in list(self._udp_loops):
            for name, value in loop.stats().items():
                fast[name] += value
        # Python counts what it was passed; one dropped because Python had
        # a full ring waiting is lost as in a full socket buffer: no query.
        passed = fast["fast:passed_miss"] + fast["fast:passed_other"] + fast["fast:passed_big"]
        counts["queries"] += fast["fast:received"] - passed - fast["fast:python_busy"]
        for rcode in ("NOERROR", "NXDOMAIN", "REFUSED"):
            counts[f"rcode:{rcode}"] += fast[f"fast:{rcode}"]
        counts["drop:ratelimited"] += fast["fast:ratelimited"]
        counts["drop:busy"] = fast["fast:python_busy"]  # Python had a full ring waiting
        counts["slipped"] += fast["fast:slipped"]
        counts["truncated"] += fast["fast:slipped"]
        counts.update(fast)
        counts["fast:answers"] = len(self._table)
        counts["fast:table_resets"] = self._table.resets
        return counts

    def summary(self) -> str:
        """The counts that are not zero, short, for STATUS= and the log."""
        c = self.counters()
        text = f"{c['queries']} queries"
        transfers = sum(v for k, v in c.items() if k.startswith("xfr:"))
        refused = sum(v for k, v in c.items() if k.startswith("xfr_refused:"))
        if transfers or refused:
            text += f", {transfers} transfers, {refused} refused"
        if c["notify:failed"]:
            text += f", {c['notify:failed']} NOTIFY failed"
        drops = sum(v for k, v in c.items() if k.startswith("drop:"))
        text += f", {drops} dropped"
        if c["internal_errors"]:
            text += f", {c['internal_errors']} internal errors"
        return text

    def detail(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.counters().items() if v) or "nothing yet"

    PICK_TRIES = 16  # port 0: UDP ports the kernel picks until TCP has it free too

    def _bind_pair(self, host: str, port: int) -> int:
        """Bind UDP and TCP on host:port, the TCP socket listening; returns
        the port. With port 0 the kernel picks a free UDP port, whose number
        TCP may hold already (a client's ephemeral port): pick again."""
        for left in range(self.PICK_TRIES - 1 if port == 0 else 0, -1, -1):
            udp = self._bind(socket.SOCK_DGRAM, host, port)
            chosen = udp.getsockname()[1]
            try:
                self._bind(socket.SOCK_STREAM, host, chosen).listen(128)
                return chosen
            except SetupError:
                if not left:
                    raise
                for sock in self._sockets[-2:]:  # the pair given up
                    sock.close()
                del self._sockets[-2:]

    def _bind(self, kind: int, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
        sock = socket.socket(family, kind)
        self._sockets.append(sock)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            _widen_receive_buffer(sock)
        shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        try:
            try:
                sock.bind((host, port))
            except OSError as e:
                # A new IPv6 address is tentative until DAD ends: bind anyway.
                if e.errno != errno.EADDRNOTAVAIL or family != socket.AF_INET6:
                    raise
                sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
                sock.bind((host, port))
        except OSError as e:
            raise SetupError(f"DNS: cannot listen on {shown} ({proto}): {e.strerror}") from None
        sock.setblocking(False)
        return sock

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass
        self._sockets = []

    # the loop

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._started.set()
            self._loop.close()

    async def _main(self) -> None:
        servers = []
        try:
            for sock in self._sockets:
                if sock.type == socket.SOCK_DGRAM:
                    if self._fast:
                        fast = dnsfast.UdpLoop(sock, self._table, self._rrl)
                        self._udp_loops.append(fast)
                        self._loop.add_reader(fast.wake_fd, self._on_udp_kept, fast)
                        fast.start()
                    else:
                        self._loop.add_reader(sock.fileno(), self._on_udp_python, sock)
                else:
                    servers.append(await asyncio.start_server(
                        self._on_tcp, sock=sock, limit=_READ_LIMIT, backlog=128))
            self._started.set()
            await self._stopping.wait()
        finally:
            for fast in self._udp_loops:
                self._loop.remove_reader(fast.wake_fd)
                fast.stop()  # before stop() closes its socket
            for sock in self._sockets:
                if sock.type == socket.SOCK_DGRAM:
                    self._loop.remove_reader(sock.fileno())
            for server in servers:
                server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _internal_error(self, exc: BaseException) -> None:
        """Counted always; logged with its traceback once per place in the code."""
        self._counts["internal_errors"] += 1
        tb = traceback.extract_tb(exc.__traceback__)
        where = (type(exc).__name__, *((tb[-1].filename, tb[-1].lineno) if tb else ()))
        if where not in self._logged and len(self._logged) < 64:
            self._logged.add(where)
            log.error("DNS: internal error while answering (counted; logged once):\n%s",
                      "".join(traceback.format_exception(exc)).rstrip())

    def _answers_of(self, index: Index) -> None:
        """The fast path answers from `index` from now on: its table is
        cleared (before reload() returns, so no query after it gets an old
        zone's answer; one during it gets the old zones' or the new ones')
        and takes answers of `index` only."""
        if self._table is not None:
            self._table.clear(index)

    KEPT_TURN = 256  # datagrams kept for Python answered per turn of the loop

    def _on_udp_kept(self, fast) -> None:
        """Answer what a UDP loop left for Python, as before the fast path,
        and publish the answers; at most KEPT_TURN per turn, then the
        others' turn (waking ourselves for the rest)."""
        fast.clear_wake()
        table, now = self._table, time.monotonic()
        for _ in range(self.KEPT_TURN):
            kept = fast.first()
            if kept is None:
                return
            # The Index in force after this one arrived: a query that came
            # after a reload returned is never answered from the old zones.
            reply = self._answer_udp(kept[0], kept[1], self.index, self._rrl, now, table)
            if reply is not None:
                fast.reply(reply)
            fast.pop()
        os.eventfd_write(fast.wake_fd, 1)

    def _on_udp_python(self, sock: socket.socket) -> None:
        """Every query answered in Python ([dns] fast_path = false, or no
        C core): at most UDP_BATCH datagrams per turn of the loop."""
        index, limiter = self.index, self._rrl
        now = time.monotonic()
        for _ in range(UDP_BATCH):
            try:
                wire, peer = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            reply = self._answer_udp(wire, _client_key(peer[0]), index, limiter, now, None)
            if reply is None:
                continue
            try:
                sock.sendto(reply, peer)
            except OSError:
                pass  # a peer gone or a full socket buffer: as if lost on the way

    def _answer_udp(self, wire: bytes, client, index: Index, limiter, now: float,
                    table) -> bytes | None:
        """The reply to one datagram, rate limited, counted; with `table`,
        a plain answer is published there for the fast path."""
        counts = self._counts
        counts["queries"] += 1
        try:
            reply, outcome = index.answer(wire, True)
            if outcome in (SIGNED, "rcode:REFUSED") and xfr.is_transfer(wire):
                # RFC 5936 4.2: transfers over TCP only.
                reply, outcome = xfr.refuse_udp(wire, self._transfers), "xfr_refused:udp"
            elif outcome == SIGNED:
                reply, outcome = xfr.signed_answer(wire, True, self._transfers, index.answer)
            elif table is not None and reply is not None:
                table.put(wire, reply, outcome, index)  # refused unless plain: dnsfast.c
            if reply is not None:
                verdict = limiter.check(client, outcome in _ERRORS, now)
                if verdict == rrl.DROP:
                    counts["drop:ratelimited"] += 1
                    return None
                if verdict == rrl.SLIP:
                    reply = truncated(reply, wire)
                    if reply is None:
                        counts["drop:ratelimited"] += 1
                        return None
                    counts["slipped"] += 1
        except Exception as e:  # a bug must not take DNS down: count and log it
            self._internal_error(e)
            return None
        counts[outcome] += 1
        if reply is not None and reply[2] & 0x02:
            counts["truncated"] += 1
        return reply

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counts, limits = self._counts, self._settings
        peer = writer.get_extra_info("peername")
        host = peer[0] if peer else ""
        if len(self._writers) >= limits.tcp_connections \
                or self._clients.get(host, 0) >= limits.tcp_connections_per_client:
            counts["drop:tcp_limit"] += 1
            writer.transport.abort()
            return
        counts["tcp_connections"] += 1
        self._writers.add(writer)
        self._clients[host] = self._clients.get(host, 0) + 1
        writer.transport.set_write_buffer_limits(high=UNSENT_MAX)
        try:
            await self._serve_tcp(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except Exception as e:
            self._internal_error(e)
        finally:
            self._writers.discard(writer)
            left = self._clients.pop(host, 1) - 1
            if left:
                self._clients[host] = left
            writer.transport.abort()

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        """Answer the queries of one connection in order: every whole query
        one read brings is answered, and the answers written at once, then
        the others have their turn (a turn of the loop per read, not per
        query: with pipelining clients that is the difference between
        asyncio's cost per query and per read)."""
        counts, loop = self._counts, self._loop
        pending, begun = b"", 0.0  # the part of a query read so far; when its first byte came
        while True:
            if pending:
                # The whole message within QUERY_DEADLINE of its first byte:
                # bytes that trickle in do not move the deadline.
                wait = max(0.0, QUERY_DEADLINE - (loop.time() - begun))
            else:
                wait = self._settings.tcp_idle_timeout
            try:
                async with asyncio.timeout(wait):
                    data = await reader.read(TCP_READ)
            except TimeoutError:
                if pending:
                    counts["drop:tcp_timeout"] += 1
                return  # else idle: RFC 7766 6.2.3 lets the server close
            if not data:
                return
            if not pending:
                begun = loop.time()
            buf, at, out = pending + data if pending else data, 0, []
            table = self._fast_table()
            while len(buf) - at >= 2:
                if table is not None:
                    # Every query in a row the table answers, in one call.
                    answers, used, kinds = table.answer_stream(buf, at)
                    if used:
                        out.append(answers)
                        at += used
                        self._count_fast(kinds)
                        continue
                end = at + 2 + (buf[at] << 8 | buf[at + 1])
                if end > len(buf):
                    break
                wire, at = buf[at + 2:end], end
                counts["queries"] += 1
                counts["tcp_queries"] += 1
                if xfr.is_transfer(wire):
                    if out:
                        writer.write(b"".join(out))
                        out = []
                    peer = writer.get_extra_info("peername")
                    if not await self._transfer(wire, peer[0] if peer else "", writer):
                        return
                    continue
                try:
                    reply, outcome = self._answer_tcp(wire)
                except Exception as e:
                    self._internal_error(e)
                    continue
                counts[outcome] += 1
                if reply is not None:
                    out.append(len(reply).to_bytes(2, "big"))
                    out.append(reply)
            if at:
                pending, begun = buf[at:], loop.time()
            else:
                pending = buf
            if out:
                writer.write(b"".join(out))
            if writer.transport.get_write_buffer_size() > UNSENT_MAX:
                # Stop reading until the client takes its answers; close if it won't.
                try:
                    async with asyncio.timeout(QUERY_DEADLINE):
                        await writer.drain()
                except TimeoutError:
                    counts["drop:tcp_unsent"] += 1
                    return
            else:
                await asyncio.sleep(0)  # one read's answers per turn: the others' turn

    def _fast_table(self):
        """The fast path's table, or None when off."""
        return self._table

    def _count_fast(self, kinds: list[int]) -> None:
        """Count TCP answers the table gave ([NOERROR, NXDOMAIN, REFUSED])."""
        counts, n = self._counts, sum(kinds)
        counts["queries"] += n
        counts["tcp_queries"] += n
        for outcome, k in zip(_FAST_OUTCOMES, kinds):
            counts[outcome] += k

    def _answer_tcp(self, wire: bytes) -> tuple[bytes | None, str]:
        """The reply to one query over TCP that the fast path's table did
        not answer: from the Index (and published there when plain)."""
        index = self.index
        table = self._fast_table()
        reply, outcome = index.answer(wire, False)
        if outcome == SIGNED:
            return xfr.signed_answer(wire, False, self._transfers, index.answer)
        if table is not None and reply is not None:
            table.put(wire, reply, outcome, index)
        return reply, outcome

    async def _transfer(self, wire: bytes, host: str, writer: asyncio.StreamWriter) -> bool:
        """Stream one zone transfer from the versions in force now, a
        message per turn of the loop; False if the client stopped reading."""
        counts = self._counts
        try:
            outcome, messages = xfr.respond(wire, host, self._versions or xfr.Versions(),
                                            self._transfers)
        except Exception as e:
            self._internal_error(e)
            return True
        counts[outcome] += 1
        for message in messages:
            writer.write(len(message).to_bytes(2, "big") + message)
            try:
                async with asyncio.timeout(TRANSFER_DEADLINE):
                    await writer.drain()
            except TimeoutError:
                counts["drop:tcp_unsent"] += 1
                return False
            await asyncio.sleep(0)  # the other clients' turn between messages
        return True
