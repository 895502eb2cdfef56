"""The C reply core as Python sees it: the only importer of routechain._core.

It builds the chain table the C side reads from `Chain` objects once (with
the rate limits and per-hop timing), names the C side's drop reasons, reply
kinds and pacing outcomes as enums generated from the library's own
constants (so they cannot drift), and offers `reply()` over a fresh buffer
for tests and tools. The serving loop does not go through `reply()`: it
hands the C side one buffer, one delay pool and one random generator per
queue.
"""

from __future__ import annotations

import enum
import math
import os
import time
from dataclasses import dataclass
from typing import Iterable

from . import extensions
from ._core import ffi, lib
from .chain import Chain, Timing, span
from .config import Limits

HEADROOM = lib.RC_HEADROOM


def _constants(prefix: str) -> dict[str, int]:
    """NAME -> value for the library's enum constants RC_<prefix>_NAME,
    without the RC_<prefix>_COUNT sentinel."""
    start = f"RC_{prefix}_"
    found = {name[len(start):]: getattr(lib, name) for name in dir(lib)
             if name.startswith(start) and name != f"{start}COUNT"}
    return dict(sorted(found.items(), key=lambda item: item[1]))


Drop = enum.IntEnum("Drop", _constants("DROP"), module=__name__)
Drop.__doc__ = "Why a packet got no reply (enum rc_drop)."

Kind = enum.IntEnum("Kind", _constants("KIND"), module=__name__)
Kind.__doc__ = "What a reply is (enum rc_kind)."

Pace = enum.IntEnum("Pace", _constants("PACE"), module=__name__)
Pace.__doc__ = "What pacing did to a reply (enum rc_pace)."

NS = 1_000_000_000
# Upper edges of the buckets of Stats.late, in seconds; the last bucket is open.
LATE_EDGES = tuple(lib.rc_late_edges_ns[i] / NS for i in range(lib.RC_LATE_BUCKETS - 1))
# Each queue's share of the global burst is never below one far traceroute
# (3 probes x 64 hops) with room to spare: a client whose probes all hash
# to one queue (traceroute -I, mtr: one flow) must still pass whole.
QUEUE_BURST_FLOOR = 256


class Table:
    """The read-only chain table the C core reads, built once, with the
    limits it applies: each of `queues` queues gets an equal share of the
    global limit (a flood from many sources spreads over the queues by the
    kernel's flow hash), while the per-source buckets are shared.

    Owns the cffi memory: it lives exactly as long as this object, so keep
    the Table alive while any C code may read `.ptr`. Chains of length 0
    answer nothing and are left out. The C lookup (find_chain) searches the
    chains by halving: they are sorted by family, then first address of
    their prefix, and must not overlap (chain.check_overlap)."""

    def __init__(self, chains: Iterable[Chain], limits: Limits = Limits(),
                 queues: int = 1) -> None:
        self.chains: tuple[Chain, ...] = tuple(sorted((c for c in chains if c.length > 0),
                                                      key=lambda c: span(c)[:2]))
        self.limits = limits
        # ffi.new never hands out a zero-length array: keep one unused slot.
        self._array = ffi.new("struct rc_chain[]", max(1, len(self.chains)))
        # The per-hop arrays, extension bytes and timing the slots point into.
        self._keep = [fill_chain(slot, chain) for slot, chain in zip(self._array, self.chains)]
        self._table = ffi.new("struct rc_table *")
        self._table.n_chains = len(self.chains)
        self._table.chains = self._array
        if limits.rate is not None:
            burst = limits.global_burst
            share = max(math.ceil(burst / queues), min(burst, QUEUE_BURST_FLOOR))
            fill_bucket(self._table.daemon, limits.rate / queues, share)
        if limits.source_rate is not None:
            fill_bucket(self._table.source, limits.source_rate, limits.per_source_burst)
        self._table.limited = int(limits.rate is not None or limits.source_rate is not None)

    @property
    def ptr(self):
        """The `struct rc_table *`, valid while this Table lives."""
        return self._table

    def __len__(self) -> int:
        return len(self.chains)


ENDS = {"host": lib.RC_END_HOST, "!N": lib.RC_END_NET, "!H": lib.RC_END_HOST_UNREACH,
        "!X": lib.RC_END_PROHIBITED}


def fill_bucket(bucket, rate: float, burst: int) -> None:
    """GCRA parameters for `rate` replies per second with bursts of `burst`."""
    interval = max(1, round(NS / rate))
    bucket.interval_ns = interval
    bucket.tolerance_ns = (burst - 1) * interval


def fill_chain(slot, chain: Chain) -> tuple:
    """Write one Chain into a `struct rc_chain` (zeroed by ffi.new). Returns
    the cffi memory the slot points into, which must live as long as it."""
    host = chain.host.packed
    mask = chain.network.netmask.packed
    slot.family = chain.family
    slot.prefix_len = chain.network.prefixlen
    slot.length = chain.length
    slot.reply_ttl = chain.reply_ttl
    ffi.memmove(slot.host, host, len(host))
    ffi.memmove(slot.mask, mask, len(mask))
    for k, hop in enumerate(chain.hops, 1):  # a chain without a story has no silent hop
        if hop.silent:
            slot.hop_flags[k] = lib.RC_HOP_SILENT
    return fill_timing_of(slot, chain) + fill_routers(slot, chain)


def fill_timing_of(slot, chain: Chain) -> tuple:
    """The timing array and rate-limit state of a chain with timing; ()
    and both NULL for a chain without."""
    if not chain.has_timing:
        return ()
    routers = routers_of(chain)
    timing = ffi.new("struct rc_hop_timing[]", len(routers))
    tat = ffi.new("uint64_t[]", len(routers))
    for i, (k, branch) in enumerate(routers):
        if k:
            fill_timing(timing[i], chain.timing(k, branch))
    slot.timing = timing
    slot.hop_tat = tat
    return timing, tat


def routers_of(chain: Chain) -> list[tuple[int, int]]:
    """(hop, branch) of every router, numbered as struct rc_where numbers
    them: index k is hop k itself (index 0 unused), then each hop's '+'
    alternatives in the order written."""
    alternatives = [(k, b) for k in range(1, chain.length + 1)
                    for b in range(1, len(chain.hop(k).alternatives) + 1)]
    return [(k, 0) for k in range(chain.length + 1)] + alternatives


def fill_timing(slot, timing: Timing) -> None:
    """Write one hop's resolved Timing into a `struct rc_hop_timing`."""
    slot.delay_us = timing.delay_us
    slot.jitter_us = timing.jitter_us
    slot.loss = round(timing.loss * 2**32)
    if timing.rate:
        fill_bucket(slot.rate, timing.rate, timing.burst or timing.rate)


def fill_routers(slot, chain: Chain) -> tuple:
    """The per-router array (struct rc_hop, numbered as routers_of) and the
    extension bytes of a chain with per-hop properties; () and hops NULL,
    the core's plain path, for a chain without. Equal extension structures
    share their bytes."""
    if not chain.has_extensions:
        return ()
    # Chain caps alternatives at 255 a hop (MAX_ALTERNATIVES), so the count
    # fits rc_chain.n_hops: 256 + 255 * 255 < 65536.
    routers = routers_of(chain)
    hops = ffi.new("struct rc_hop[]", len(routers))
    blob, offsets = bytearray(), {}
    mtus = []

    def fill(entry, k: int, b: int) -> None:
        router = chain.branch(k, b)
        addr = chain.branch_address(k, b).packed
        ffi.memmove(entry.addr, addr, len(addr))
        entry.hop = k
        entry.flags = lib.RC_HOP_SILENT if router.silent else 0
        # The chain's model: the way back crosses the k - 1 hops in front.
        # A router's own reply_ttl is what its replies leave with: its way
        # back is another path, which tracepath's "asymm" and traceroute
        # --back show (docs/replies.md).
        own = router.props.reply_ttl
        entry.reply_ttl = own if own is not None else max(1, chain.reply_ttl - (k - 1))
        if router.props.mtu is not None:
            entry.mtu = router.props.mtu
            mtus.append(router.props.mtu)
        ext = extensions.build(router.props)
        if ext is not None:
            if ext.data not in offsets:
                offsets[ext.data] = len(blob)
                blob.extend(ext.data)
            entry.ext_off = offsets[ext.data]
            entry.ext_len = len(ext.data)
            entry.ext_sum = ext.sum
            entry.n_labels = ext.labels

    for n, (k, b) in enumerate(routers):
        if k == 0:
            continue
        if b == 1:
            hops[k].first_alt = n
        if b:
            hops[k].n_alts = b
        fill(hops[n], k, b)
    data = ffi.new("uint8_t[]", max(1, len(blob)))
    ffi.memmove(data, bytes(blob), len(blob))
    slot.hops = hops
    slot.n_hops = len(routers)
    slot.ext = data
    slot.min_mtu = min(mtus, default=0)
    slot.end = ENDS[chain.end]
    return hops, data


def reply(packet: bytes, table: Table, headroom: int = HEADROOM,
          slack: int = 0) -> bytes | Drop:
    """The reply to one packet, or why there is none. The packet is copied
    into a buffer of exactly headroom + len(packet) + slack bytes."""
    buf = bytearray(headroom + len(packet) + slack)
    buf[headroom:headroom + len(packet)] = packet
    off = ffi.new("size_t *")
    n = lib.rc_reply(ffi.from_buffer("uint8_t[]", buf), headroom, len(packet),
                     len(buf), table.ptr, off, ffi.NULL)
    if n < 0:
        return Drop(-n)
    return bytes(buf[off[0]:off[0] + n])


def kind(built: bytes) -> Kind | None:
    """What a reply built by the core is, from its bytes."""
    k = lib.rc_reply_kind(built, len(built))
    return None if k < 0 else Kind(k)



# The serving loop: workers, the live table, counters.

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
                      tuple(a + b for a, b in zip(out.late, s.late)), out.late_ns + s.late_ns)
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
                f"{self.write_errors} write errors")
        if detail:
            kinds = ", ".join(f"{Kind(i).name.lower()}={n}" for i, n in enumerate(self.replies) if n)
            drops = ", ".join(f"{Drop(i).name.lower()}={n}" for i, n in enumerate(self.drops) if n)
            paced = ", ".join(f"{Pace(i).name.lower()}={n}" for i, n in enumerate(self.paced) if n)
            text += (f"; replies: {kinds or 'none'}; drops: {drops or 'none'}; "
                     f"paced: {paced or 'none'}")
            if any(self.late):
                names = [f"<={_duration(e)}" for e in LATE_EDGES] + [f">{_duration(LATE_EDGES[-1])}"]
                text += "; late: " + ", ".join(f"{k}={n}" for k, n in zip(names, self.late) if n)
            if self.last_write_errno:
                text += f"; last write error: {os.strerror(self.last_write_errno)}"
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

    @property
    def pool_bytes(self) -> int:
        """Memory of one queue's pool (touched only as replies wait)."""
        return lib.rc_pool_bytes(self.small, self.large)


class Live:
    """The table the workers read, swapped by publish() without a lock."""

    def __init__(self, table: Table) -> None:
        self._cell = ffi.new("const struct rc_table **", table.ptr)
        self._table = table
        self.workers: list[Worker] = []
        self._stuck: list[Table] = []

    @property
    def table(self) -> Table:
        """The table the workers read now."""
        return self._table

    def publish(self, table: Table, grace: float = 5.0) -> None:
        """Swap in table; free the old one once no worker holds it."""
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
    """One TUN queue's serving loop and the memory it owns: its buffer, its
    delay pool and its random generator."""

    # The pool's reply arenas are left as the kernel maps them: pages are
    # touched (and resident) only once replies wait in them.
    _uncleared = ffi.new_allocator(should_clear_after_alloc=False)

    def __init__(self, fd: int, stop_fd: int, live: Live, pacing: Pacing,
                 queue: int = 0) -> None:
        self._buf = ffi.new("uint8_t[]", BUFFER_SIZE)
        self._pool = self._uncleared("uint8_t[]", pacing.pool_bytes)
        self._pacing = pacing
        self.ptr = ffi.new("struct rc_worker *")
        self.ptr.fd = fd
        self.ptr.stop_fd = stop_fd
        self.ptr.live = live._cell
        self.ptr.buf = self._buf
        self.ptr.cap = BUFFER_SIZE
        lib.rc_pool_init(ffi.addressof(self.ptr.pool), self._pool, pacing.small, pacing.large)
        self.ptr.rng = (pacing.seed + queue * 0x9E3779B97F4A7C15) % 2**64
        self.ptr.source_tat = pacing.source_tat
        self.ptr.source_mask = Pacing.SOURCE_CELLS - 1
        self.ptr.source_salt = pacing.salt
        live.workers.append(self)

    def run(self) -> int:
        """Serve until stopped (the GIL is released inside); 0, or an errno."""
        return -lib.rc_serve(self.ptr)

    def stats(self) -> Stats:
        out = ffi.new("struct rc_stats *")
        lib.rc_stats_read(self.ptr, out)
        return Stats(out.received, out.sent, tuple(out.replies[0:len(Kind)]),
                     tuple(out.drops[0:len(Drop)]), out.write_errors, out.read_errors,
                     out.last_write_errno, tuple(out.paced[0:len(Pace)]),
                     tuple(out.late[0:lib.RC_LATE_BUCKETS]), out.late_ns)
