"""The serving runtime: the live table, one worker per TUN queue, what the
queues share for pacing, and their counters. With routechain.chaintable, the
only importers of routechain._core; the table itself is compiled and
checked there. Each worker's memory (its buffer, delay pool and book) is
laid out by the C side (rc_worker_init), which keeps that layout to itself.
"""

from __future__ import annotations

import enum
import math
import os
import time
from dataclasses import dataclass
from typing import Iterable

from ._core import ffi, lib
from .config import Limits
from .chaintable import NS, Drop, Kind, Table, constants

Pace = enum.IntEnum("Pace", constants("PACE"), module=__name__)
Pace.__doc__ = "What pacing did to a reply (enum rc_pace)."

# Upper edges of the buckets of Stats.late, in seconds; the last bucket is open.
LATE_EDGES = tuple(lib.rc_late_edges_ns[i] / NS for i in range(lib.RC_LATE_BUCKETS - 1))

BUFFER_SIZE = lib.RC_HEADROOM + 65536  # headroom + the largest IP packet


@dataclass(frozen=True)
class Stats:
    """One queue's counters, or their sum."""

    received: int = 0
    sent: int = 0
    replies: tuple[int, ...] = (0,) * len(Kind)
    drops: tuple[int, ...] = (0,) * len(Drop)
    write_errors: int = 0
    read_errors: int = 0
    last_write_errno: int = 0
    paced: tuple[int, ...] = (0,) * len(Pace)
    late: tuple[int, ...] = (0,) * (len(LATE_EDGES) + 1)  # delayed replies, by LATE_EDGES
    late_ns: int = 0
    last_read_errno: int = 0
    chapters: int = 0    # replies to probes addressed to a chapter (rc_where.chapter)

    @classmethod
    def total(cls, many: Iterable["Stats"]) -> "Stats":
        out = cls()
        for s in many:
            out = cls(out.received + s.received, out.sent + s.sent,
                      tuple(a + b for a, b in zip(out.replies, s.replies)),
                      tuple(a + b for a, b in zip(out.drops, s.drops)),
                      out.write_errors + s.write_errors, out.read_errors + s.read_errors,
                      s.last_write_errno or out.last_write_errno,
                      tuple(a + b for a, b in zip(out.paced, s.paced)),
                      tuple(a + b for a, b in zip(out.late, s.late)), out.late_ns + s.late_ns,
                      s.last_read_errno or out.last_read_errno,
                      out.chapters + s.chapters)
        return out

    @property
    def late_over_1ms(self) -> int:
        """Delayed replies written more than a millisecond after they were due."""
        return sum(n for edge, n in zip(LATE_EDGES + (math.inf,), self.late) if edge > 0.001)

    @property
    def dropped(self) -> int:
        return sum(self.drops)

    @property
    def rate_limited(self) -> int:
        return sum(self.paced[p] for p in (Pace.HOP_LIMITED, Pace.SOURCE_LIMITED,
                                           Pace.GLOBAL_LIMITED))

    def summary(self, detail: bool = False) -> str:
        text = (f"{self.received} received, {self.sent} replies, {self.dropped} dropped, "
                f"{self.rate_limited} rate-limited, {self.paced[Pace.LOST]} lost, "
                f"{self.paced[Pace.DELAYED]} delayed ({self.late_over_1ms} over 1 ms late), "
                f"{self.paced[Pace.POOL_FULL]} pool full, {self.paced[Pace.OVERLOADED]} overloaded, "
                f"{self.write_errors} write errors, {self.read_errors} read errors")
        if detail:
            kinds = ", ".join(f"{Kind(i).name.lower()}={n}" for i, n in enumerate(self.replies) if n)
            drops = ", ".join(f"{Drop(i).name.lower()}={n}" for i, n in enumerate(self.drops) if n)
            paced = ", ".join(f"{Pace(i).name.lower()}={n}" for i, n in enumerate(self.paced) if n)
            text += (f"; replies: {kinds or 'none'}; drops: {drops or 'none'}; "
                     f"paced: {paced or 'none'}")
            if self.chapters:
                text += f"; to chapters: {self.chapters}"
            if any(self.late):
                names = [f"<={_duration(e)}" for e in LATE_EDGES] + [f">{_duration(LATE_EDGES[-1])}"]
                text += "; late: " + ", ".join(f"{k}={n}" for k, n in zip(names, self.late) if n)
            if self.last_write_errno:
                text += f"; last write error: {os.strerror(self.last_write_errno)}"
            if self.last_read_errno:
                text += f"; last read error: {os.strerror(self.last_read_errno)}"
        return text


def _duration(seconds: float) -> str:
    return f"{seconds * 1e3:g}ms" if seconds >= 1e-3 else f"{seconds * 1e6:g}us"


class Pacing:
    """What the queues share for pacing, fixed for the daemon's life: the
    per-source buckets, the key of their hash, the generator seed and the
    size of each queue's delay pool.

    Source buckets are SOURCE_CELLS cells of 8 bytes (512 KiB), picked by a
    salted hash of the source: a source shares its cell's budget with any
    other source that lands there, so with F sources flooding at once a
    given source meets one of them with probability about F / SOURCE_CELLS."""

    SOURCE_CELLS = 65536

    def __init__(self, limits: Limits, queues: int) -> None:
        self.limits = limits
        self.queues = queues
        self.seed = limits.seed if limits.seed is not None else int.from_bytes(os.urandom(8))
        self.source_tat = ffi.new("uint64_t[]", self.SOURCE_CELLS)
        self.salt = int.from_bytes(os.urandom(8))
        # One second of replies at the global rate, shared out over the
        # queues; a sixteenth of the slots again are large.
        self.small = max(1, math.ceil(limits.pool / queues))
        self.large = max(16, self.small // 16)

    def worker_config(self, fd: int = -1, stop_fd: int = -1, live_cell=ffi.NULL,
                      queue: int = 0):
        """The `struct rc_worker_config` of queue number `queue`."""
        config = ffi.new("struct rc_worker_config *")
        config.fd = fd
        config.stop_fd = stop_fd
        config.live = live_cell
        config.cap = BUFFER_SIZE
        config.n_small = self.small
        config.n_large = self.large
        config.rng = (self.seed + queue * 0x9E3779B97F4A7C15) % 2**64
        config.source_tat = self.source_tat
        config.source_mask = self.SOURCE_CELLS - 1
        config.source_salt = self.salt
        return config

    @property
    def worker_bytes(self) -> int:
        """Memory of one queue's worker: its buffer, book and delay pool
        (the pool's arenas touched only as replies wait)."""
        return lib.rc_worker_bytes(self.worker_config())


class Live:
    """The table the workers read, swapped by publish() without a lock."""

    def __init__(self, table: Table) -> None:
        table.check()
        self._cell = ffi.new("const struct rc_table **", table.ptr)
        self._table = table
        self.workers: list[Worker] = []
        self._stuck: list[Table] = []

    @property
    def table(self) -> Table:
        """The table the workers read now."""
        return self._table

    def publish(self, table: Table, grace: float = 5.0) -> None:
        """Swap in table, once the C side has checked it again (a table is
        refused with ConfigError before any worker sees it); free the old
        one once no worker holds it."""
        table.check()
        old = self._table
        lib.rc_table_publish(self._cell, table.ptr)
        self._table = table
        deadline = time.monotonic() + grace
        while any(lib.rc_worker_holds(w.ptr, old.ptr) for w in self.workers):
            if time.monotonic() > deadline:
                # A worker that never lets go: keep the old table rather than
                # free it under the worker's feet.
                self._stuck.append(old)
                return
            time.sleep(0.001)


class Worker:
    """One TUN queue's serving loop and the memory it owns, laid out by the
    C side: its buffer, its delay pool, its book and its random generator."""

    # The pool's reply arenas are left as the kernel maps them: pages are
    # touched (and resident) only once replies wait in them.
    _uncleared = ffi.new_allocator(should_clear_after_alloc=False)

    def __init__(self, fd: int, stop_fd: int, live: Live, pacing: Pacing,
                 queue: int = 0) -> None:
        config = pacing.worker_config(fd, stop_fd, live._cell, queue)
        self._mem = self._uncleared("uint8_t[]", lib.rc_worker_bytes(config))
        self._pacing = pacing  # its source buckets live as long as this worker
        self.ptr = lib.rc_worker_init(self._mem, config)
        live.workers.append(self)

    def run(self) -> int:
        """Serve until stopped (the GIL is released inside); 0, or an errno."""
        return -lib.rc_serve(self.ptr)

    def stats(self) -> Stats:
        out = ffi.new("struct rc_stats *")
        lib.rc_worker_read_stats(self.ptr, out)
        return Stats(out.received, out.sent, tuple(out.replies[0:len(Kind)]),
                     tuple(out.drops[0:len(Drop)]), out.write_errors, out.read_errors,
                     out.last_write_errno, tuple(out.paced[0:len(Pace)]),
                     tuple(out.late[0:lib.RC_LATE_BUCKETS]), out.late_ns, out.last_read_errno,
                     out.chapters)
