"""The DNS fast path's Python side: owns the C memory of csrc/dnsfast.c (a
table of prepared answers, the response rate limiter, one UDP loop per
socket) and says in Python terms what the C decided. dns.py wires it in:

- the UDP reader calls `UdpLoop.run()`, which reads and answers datagrams in
  batches with the GIL released, answering every plain query whose answer
  is in the `Table` and keeping the others for Python (`pending()`), which
  answers them as before and `Table.put()`s the answer, so that the next
  query of that name and type is a hit;
- the `Table` belongs to one dnsanswer.Index: dns.py clears it when the
  Index changes (reload, re-signing), in the thread that reads it, so no
  query sees half of one and none sees the old zones' answers after;
- `Limiter` is rrl.RateLimiter in C (rrl.py stays the reference it is held
  equal to), shared by the fast path and Python's, so a client has one
  pair of buckets however its queries are answered.

Every function here is called from the DNS server's thread only.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading

from ._core import ffi, lib
from .dnsanswer import ANSWERS_MAX
from .settings import DnsSettings

__all__ = ["Table", "Limiter", "UdpLoop", "client_key", "OUTCOME_KIND", "KIND_NAMES"]

# Bytes of answers (and their names) the table keeps: ANSWERS_MAX answers
# of about 250 octets; past either bound it starts again.
ARENA_BYTES = ANSWERS_MAX * 256
STREAM_BYTES = 64 * 1024  # answers over TCP made in one call
STOP_WAIT = 0.1  # seconds a UDP loop may take to see stop()

# An answer's outcome (dnsanswer's counter name) -> enum rc_dns_kind.
OUTCOME_KIND = {"rcode:NOERROR": lib.RC_DNS_NOERROR, "rcode:NXDOMAIN": lib.RC_DNS_NXDOMAIN,
                "rcode:REFUSED": lib.RC_DNS_REFUSED}
# enum rc_dns_kind -> the counter name dns.py shows it under.
KIND_NAMES = {
    lib.RC_DNS_NOERROR: "fast:NOERROR", lib.RC_DNS_NXDOMAIN: "fast:NXDOMAIN",
    lib.RC_DNS_REFUSED: "fast:REFUSED", lib.RC_DNS_PASS_MISS: "fast:passed_miss",
    lib.RC_DNS_PASS_OTHER: "fast:passed_other", lib.RC_DNS_PASS_BIG: "fast:passed_big",
    lib.RC_DNS_RATE_DROP: "fast:ratelimited", lib.RC_DNS_RATE_SLIP: "fast:slipped",
    lib.RC_DNS_SEND_ERROR: "fast:send_errors", lib.RC_DNS_PASS_DROPPED: "fast:python_busy",
}
_raw = ffi.new_allocator(should_clear_after_alloc=False)  # C lays each block out itself


def _salt() -> int:
    return int.from_bytes(os.urandom(8), "little")


def client_key(host: str) -> int:
    """The RRL key of an address's /24 or /56 (rrl.prefix's cut)."""
    packed = ipaddress.ip_address(host.partition("%")[0]).packed
    return lib.rc_dns_client_key(packed, len(packed))


class Table:
    """Prepared answers: put(query, reply, outcome) publishes the answer
    the slow path gave to query for every query that asks the same;
    answer(query, udp) is the fast path's reply, or None."""

    def __init__(self, entries: int = ANSWERS_MAX, arena: int = ARENA_BYTES) -> None:
        self._mem = _raw("uint8_t[]", lib.rc_dns_table_bytes(entries, arena))
        self.c = lib.rc_dns_table_init(self._mem, entries, arena, _salt())
        self.owner: object | None = None  # the Index whose answers it holds
        self._writing = threading.Lock()  # one writer at a time (the seqlock's rule)
        self._out = ffi.new("uint8_t[]", lib.RC_DNS_REPLY_MAX)
        self._kind = ffi.new("int *")
        self._stream = None  # made on the first TCP query

    def clear(self, owner: object | None = None) -> None:
        """Forget every answer: from now on it holds answers of `owner` only."""
        with self._writing:
            lib.rc_dns_table_clear(self.c)
            self.owner = owner

    def put(self, query: bytes, reply: bytes, outcome: str, owner: object | None = None) -> int:
        """Publish reply, the answer `owner` gave to query: 0 if stored,
        else -(enum rc_dns_put); not stored (1) if the table now holds
        another owner's answers (a reload came between)."""
        kind = OUTCOME_KIND.get(outcome)
        if kind is None:
            return -lib.RC_DNS_PUT_NOT_ANSWER
        with self._writing:
            if owner is not self.owner:
                return 1
            return lib.rc_dns_table_put(self.c, query, len(query), reply, len(reply), kind)

    def answer(self, query: bytes, udp: bool) -> tuple[bytes | None, int]:
        """(reply or None, enum rc_dns_kind)."""
        n = lib.rc_dns_answer(self.c, query, len(query), udp, self._out, lib.RC_DNS_REPLY_MAX,
                              self._kind)
        return (ffi.buffer(self._out, n)[:] if n else None), self._kind[0]

    def answer_stream(self, buf: bytes, at: int) -> tuple[bytes, int, list[int]]:
        """The framed answers to the whole TCP queries at buf[at:] the table
        answers, up to the first it does not: (answers, bytes of buf they
        took, [NOERROR, NXDOMAIN, REFUSED] answers given)."""
        if self._stream is None:
            self._stream = ffi.new("uint8_t[]", STREAM_BYTES)
            self._used = ffi.new("size_t *")
            self._counts = ffi.new("uint64_t[3]")
        counts = self._counts
        counts[0] = counts[1] = counts[2] = 0
        start = ffi.from_buffer("uint8_t[]", buf) + at
        n = lib.rc_dns_tcp_answer(self.c, start, len(buf) - at, self._used, self._stream,
                                  STREAM_BYTES, counts)
        return ffi.buffer(self._stream, n)[:], self._used[0], list(counts)

    def __len__(self) -> int:
        return lib.rc_dns_table_count(self.c)

    @property
    def resets(self) -> int:
        """Times the table was cleared: reloads and a full table."""
        return lib.rc_dns_table_resets(self.c)


class Limiter:
    """rrl.RateLimiter in C: check(client_key, error, now) -> rrl.SEND,
    DROP or SLIP, by the [dns] rate_limit* settings."""

    def __init__(self, settings: DnsSettings, table_max: int = 65536) -> None:
        self.rate = settings.rate_limit
        self.errors = settings.rate_limit_errors
        self.slip = settings.rate_limit_slip
        self._mem = _raw("uint8_t[]", lib.rc_dns_rrl_bytes(table_max))
        self.c = lib.rc_dns_rrl_init(self._mem, table_max, float(self.rate), float(self.errors),
                                     self.slip, _salt())

    def configure(self, settings: DnsSettings) -> None:
        """Limit by `settings` from now on, every bucket forgotten (a
        reload that changes the limits; the loops keep this limiter)."""
        self.rate = settings.rate_limit
        self.errors = settings.rate_limit_errors
        self.slip = settings.rate_limit_slip
        lib.rc_dns_rrl_configure(self.c, float(self.rate), float(self.errors), self.slip)

    def check(self, client: int, error: bool, now: float) -> int:
        return lib.rc_dns_rrl_check(self.c, client, error, now)

    def same(self, settings: DnsSettings) -> bool:
        """True if `settings` limit as this limiter does (a reload keeps its buckets)."""
        return (self.rate, self.errors, self.slip) == (
            settings.rate_limit, settings.rate_limit_errors, settings.rate_limit_slip)

    def __len__(self) -> int:
        return lib.rc_dns_rrl_count(self.c)


class UdpLoop:
    """The fast path of one UDP socket (non-blocking), in a thread of its
    own: start() runs rc_dns_udp_serve (GIL released) answering what the
    table answers; the datagrams it keeps for Python wake `wake_fd`
    (clear_wake()), and first() gives the oldest, as (bytes, RRL key), to
    answer with reply(bytes), then pop(). stop() ends the thread."""

    def __init__(self, sock: socket.socket, table: Table, limiter: Limiter) -> None:
        # The loop's own from now on: it waits in recvmmsg, at most
        # STOP_WAIT at a time, so that stop() is seen.
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                        struct.pack("@ll", 0, int(STOP_WAIT * 1e6)))
        fileno = sock.fileno()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._stop_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._mem = _raw("uint8_t[]", lib.rc_dns_udp_bytes())
        self._table, self._limiter = table, limiter  # the C reads them: kept alive
        config = ffi.new("struct rc_dns_udp_config *", {
            "fd": fileno, "stop_fd": self._stop_fd, "wake_fd": self.wake_fd,
            "table": table.c, "rrl": limiter.c})
        self.c = lib.rc_dns_udp_init(self._mem, config)
        self._len = ffi.new("size_t *")
        self._client = ffi.new("uint64_t *")
        self._stats = ffi.new("struct rc_dns_stats *")
        self._thread: threading.Thread | None = None
        self.result: int | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="route-chain-dns-udp",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.result = lib.rc_dns_udp_serve(self.c)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """End the thread (within a poll's wake-up) and close the eventfds."""
        if self._thread is not None:
            os.eventfd_write(self._stop_fd, 1)
            self._thread.join(timeout=5.0)
        if not self.alive():
            os.close(self._stop_fd)
            os.close(self.wake_fd)
            self._stop_fd = self.wake_fd = -1

    def first(self) -> tuple[bytes, int] | None:
        """The oldest datagram kept for Python, as (bytes, RRL key), or None;
        answer it with reply() (or not), then pop()."""
        at = lib.rc_dns_udp_first(self.c, self._len, self._client)
        if at == ffi.NULL:
            return None
        return ffi.buffer(at, self._len[0])[:], self._client[0]

    def reply(self, wire: bytes) -> int:
        """Answer the first: 0, or -errno (a peer gone, a full buffer: as
        if lost on the way)."""
        return lib.rc_dns_udp_reply(self.c, wire, len(wire))

    def pop(self) -> None:
        lib.rc_dns_udp_pop(self.c)

    def clear_wake(self) -> None:
        """Consume the wake-up (before reading what woke it)."""
        try:
            os.eventfd_read(self.wake_fd)
        except BlockingIOError:
            pass

    def stats(self) -> dict[str, int]:
        """Counters by name: "fast:received", "fast:sent", "fast:read_errors"
        and KIND_NAMES."""
        lib.rc_dns_udp_read_stats(self.c, self._stats)
        s = self._stats
        out = {"fast:received": s.received, "fast:sent": s.sent,
               "fast:read_errors": s.read_errors}
        for kind, name in KIND_NAMES.items():
            out[name] = s.kinds[kind]
        return out
