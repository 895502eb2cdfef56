"""The C reply core as Python sees it: the only importer of routechain._core.

It builds the chain table the C side reads from `Chain` objects once, names
the C side's drop reasons and reply kinds as enums generated from the
library's own constants (so they cannot drift), and offers `reply()` over a
fresh buffer for tests and tools. The serving loop does not go through
`reply()`: it hands the C side one buffer per queue.
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass
from typing import Iterable

from ._core import ffi, lib
from .chain import Chain, span

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


class Table:
    """The read-only chain table the C core reads, built once.

    Owns the cffi memory: it lives exactly as long as this object, so keep
    the Table alive while any C code may read `.ptr`. Chains of length 0
    answer nothing and are left out. The C lookup (find_chain) searches the
    chains by halving: they are sorted by family, then first address of
    their prefix, and must not overlap (chain.check_overlap)."""

    def __init__(self, chains: Iterable[Chain]) -> None:
        self.chains: tuple[Chain, ...] = tuple(sorted((c for c in chains if c.length > 0),
                                                      key=lambda c: span(c)[:2]))
        # ffi.new never hands out a zero-length array: keep one unused slot.
        self._array = ffi.new("struct rc_chain[]", max(1, len(self.chains)))
        for slot, chain in zip(self._array, self.chains):
            fill_chain(slot, chain)
        self._table = ffi.new("struct rc_table *")
        self._table.n_chains = len(self.chains)
        self._table.chains = self._array

    @property
    def ptr(self):
        """The `struct rc_table *`, valid while this Table lives."""
        return self._table

    def __len__(self) -> int:
        return len(self.chains)


def fill_chain(slot, chain: Chain) -> None:
    """Write one Chain into a `struct rc_chain` (zeroed by ffi.new)."""
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


def reply(packet: bytes, table: Table, headroom: int = HEADROOM,
          slack: int = 0) -> bytes | Drop:
    """The reply to one packet, or why there is none. The packet is copied
    into a buffer of exactly headroom + len(packet) + slack bytes."""
    buf = bytearray(headroom + len(packet) + slack)
    buf[headroom:headroom + len(packet)] = packet
    off = ffi.new("size_t *")
    n = lib.rc_reply(ffi.from_buffer("uint8_t[]", buf), headroom, len(packet),
                     len(buf), table.ptr, off)
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

    @classmethod
    def total(cls, many: Iterable["Stats"]) -> "Stats":
        out = cls()
        for s in many:
            out = cls(out.received + s.received, out.sent + s.sent,
                      tuple(a + b for a, b in zip(out.replies, s.replies)),
                      tuple(a + b for a, b in zip(out.drops, s.drops)),
                      out.write_errors + s.write_errors, out.read_errors + s.read_errors,
                      s.last_write_errno or out.last_write_errno)
        return out

    @property
    def dropped(self) -> int:
        return sum(self.drops)

    def summary(self, detail: bool = False) -> str:
        text = (f"{self.received} received, {self.sent} replies, {self.dropped} dropped, "
                f"{self.write_errors} write errors")
        if detail:
            kinds = ", ".join(f"{Kind(i).name.lower()}={n}" for i, n in enumerate(self.replies) if n)
            drops = ", ".join(f"{Drop(i).name.lower()}={n}" for i, n in enumerate(self.drops) if n)
            text += f"; replies: {kinds or 'none'}; drops: {drops or 'none'}"
            if self.last_write_errno:
                text += f"; last write error: {os.strerror(self.last_write_errno)}"
        return text


class Live:
    """The table the workers read, swapped by publish() without a lock."""

    def __init__(self, table: Table) -> None:
        self._cell = ffi.new("const struct rc_table **", table.ptr)
        self._table = table
        self.workers: list[Worker] = []
        self._stuck: list[Table] = []

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
    """One TUN queue's serving loop and the buffer it owns."""

    def __init__(self, fd: int, stop_fd: int, live: Live) -> None:
        self._buf = ffi.new("uint8_t[]", BUFFER_SIZE)
        self.ptr = ffi.new("struct rc_worker *")
        self.ptr.fd = fd
        self.ptr.stop_fd = stop_fd
        self.ptr.live = live._cell
        self.ptr.buf = self._buf
        self.ptr.cap = BUFFER_SIZE
        live.workers.append(self)

    def run(self) -> int:
        """Serve until stopped (the GIL is released inside); 0, or an errno."""
        return -lib.rc_serve(self.ptr)

    def stats(self) -> Stats:
        out = ffi.new("struct rc_stats *")
        lib.rc_stats_read(self.ptr, out)
        return Stats(out.received, out.sent, tuple(out.replies[0:len(Kind)]),
                     tuple(out.drops[0:len(Drop)]), out.write_errors, out.read_errors,
                     out.last_write_errno)
