"""The table compiler: `Chain` objects in, the C core's chain table out.

It builds the table the C side reads once (with the rate limits and per-hop
timing), has the C side check it (rc_table_check: every index and length
the reply path trusts) before anyone may publish it, names the C side's
drop reasons and reply kinds as enums generated from the library's own
constants (so they cannot drift), and offers `reply()` over a fresh buffer
for tests and tools. The serving loop (routechain.workers) does not go
through `reply()`. With routechain.workers, the only importers of
routechain._core.
"""

from __future__ import annotations

import enum
import math
from typing import Iterable

from . import extensions
from ._core import ffi, lib
from .chain import Chain, Timing, span
from .config import Limits
from .errors import ConfigError

HEADROOM = lib.RC_HEADROOM


def constants(prefix: str) -> dict[str, int]:
    """NAME -> value for the library's enum constants RC_<prefix>_NAME,
    without the RC_<prefix>_COUNT sentinel."""
    start = f"RC_{prefix}_"
    found = {name[len(start):]: getattr(lib, name) for name in dir(lib)
             if name.startswith(start) and name != f"{start}COUNT"}
    return dict(sorted(found.items(), key=lambda item: item[1]))


Drop = enum.IntEnum("Drop", constants("DROP"), module=__name__)
Drop.__doc__ = "Why a packet got no reply (enum rc_drop)."

Kind = enum.IntEnum("Kind", constants("KIND"), module=__name__)
Kind.__doc__ = "What a reply is (enum rc_kind)."

Fault = enum.IntEnum("Fault", constants("FAULT"), module=__name__)
Fault.__doc__ = "Which invariant of the table rc_table_check() found broken (enum rc_fault)."

NS = 1_000_000_000
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
                 queues: int = 1, previous: "Table | None" = None) -> None:
        self.chains: tuple[Chain, ...] = tuple(sorted((c for c in chains if c.length > 0),
                                                      key=lambda c: span(c)[:2]))
        self.limits = limits
        # ffi.new never hands out a zero-length array: keep one unused slot.
        self._array = ffi.new("struct rc_chain[]", max(1, len(self.chains)))
        # Each chain's row, compiled once per Chain object: a reload keeps
        # the rows of the chains it kept (config.Memo) from `previous`,
        # and copies all rows in with one memmove.
        self._rows = rows(self.chains, self._array, previous)
        # The per-hop arrays, extension bytes and timing the slots point into.
        self._keep = [self._rows[id(c)][2] for c in self.chains]
        for slot, chain in zip(self._array, self.chains):
            if chain.has_timing:
                # A table's rate-limit state is its own, as a new table's
                # always was: never shared with the one it replaces.
                slot.hop_tat = tat = ffi.new("uint64_t[]", slot.n_timing)
                self._keep.append(tat)
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
        self.check()

    def check(self) -> None:
        """Have the C side check every invariant the reply path trusts
        (routechain.h); a table that breaks one raises ConfigError naming
        the chain, the router and the invariant, and must never be
        published."""
        at = ffi.new("struct rc_table_fault *")
        fault = lib.rc_table_check(self._table, at)
        if fault == Fault.NONE:
            return
        text = ffi.string(lib.rc_table_fault_text(fault)).decode()
        where = "table"
        if at.chain < len(self.chains):
            chain = self.chains[at.chain]
            where = f"chain {chain.host}/{chain.network.prefixlen}"
            routers = routers_of(chain)
            if fault == Fault.CHAPTERS and at.router < len(chain.chapters):
                where += f" chapter {chain.chapters[at.router].label}"
            elif 0 < at.router < len(routers):
                k, branch = routers[at.router]
                where += f" hop {k}" + (f" branch {branch}" if branch else "")
        raise ConfigError(f"{where}: the C core refuses the table "
                          f"({Fault(fault).name.lower()}): {text}")

    @property
    def ptr(self):
        """The `struct rc_table *`, valid while this Table lives."""
        return self._table

    def __len__(self) -> int:
        return len(self.chains)


# The words of hopprops.TCP_ANSWERS and UDP_ANSWERS, from the C enums' names.
TCP = {name.lower(): value for name, value in constants("TCP").items()}
UDP = {name.lower(): value for name, value in constants("UDP").items()}
BALANCE = {name.lower(): value for name, value in constants("BALANCE").items()}

ENDS = {"host": lib.RC_END_HOST, "!N": lib.RC_END_NET, "!H": lib.RC_END_HOST_UNREACH,
        "!X": lib.RC_END_PROHIBITED}


def fill_bucket(bucket, rate: float, burst: int) -> None:
    """GCRA parameters for `rate` replies per second with bursts of `burst`."""
    interval = max(1, round(NS / rate))
    bucket.interval_ns = interval
    bucket.tolerance_ns = (burst - 1) * interval


ROW = ffi.sizeof("struct rc_chain")
Row = tuple  # (Chain, its slot in its table's array, the memory the slot points into)


def rows(chains: tuple[Chain, ...], array, previous: "Table | None") -> dict[int, Row]:
    """Fill `array` with the chains' rows, and give id(chain) -> Row: a
    row of `previous` (a slot, never written after it was built but for
    what hop_tat points at) is copied for the very Chain objects it has,
    the others are compiled (fill_chain) into a scratch slot; all go into
    `array` with one memmove."""
    kept = previous._rows if previous is not None else {}
    before = ffi.buffer(previous._array) if previous is not None else b""
    out: dict[int, Row] = {}
    data = bytearray(ROW * len(chains))
    scratch = ffi.new("struct rc_chain *")
    fresh = ffi.buffer(scratch, ROW)
    zero = bytes(ROW)
    for i, chain in enumerate(chains):
        row = kept.get(id(chain))
        if row is not None and row[0] is chain:
            data[i * ROW:(i + 1) * ROW] = before[row[1] * ROW:(row[1] + 1) * ROW]
            memory = row[2]
        else:
            fresh[:] = zero
            memory = fill_chain(scratch[0], chain)
            data[i * ROW:(i + 1) * ROW] = fresh
        out[id(chain)] = (chain, i, memory)
    ffi.memmove(array, data, len(data))
    return out


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
    fill_destination(slot, chain)
    return fill_timing_of(slot, chain) + fill_routers(slot, chain) + fill_chapters(slot, chain)


def fill_chapters(slot, chain: Chain) -> tuple:
    """The chain's chapters (struct rc_chapter: address and start hop), in
    the order of their addresses; () and NULL for a chain without."""
    if not chain.chapters:
        return ()
    entries = ffi.new("struct rc_chapter[]", len(chain.chapters))
    for entry, chapter in zip(entries, chain.chapters):
        addr = chain.chapter_address(chapter).packed
        ffi.memmove(entry.addr, addr, len(addr))
        entry.start = chapter.start
    slot.chapters = entries
    slot.n_chapters = len(chain.chapters)
    return (entries,)


def fill_destination(slot, chain: Chain) -> None:
    """What the chain's destination answers to TCP and UDP (enum rc_tcp,
    enum rc_udp, the open ports)."""
    props = chain.defaults
    slot.tcp = TCP[props.tcp or "closed"]
    slot.udp = UDP[props.udp or "unreachable"]
    ports = props.tcp_open or ()
    slot.n_open = len(ports)
    for i, port in enumerate(ports):
        slot.open_ports[i] = port


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
    slot.n_timing = len(routers)
    return timing, tat


def routers_of(chain: Chain) -> list[tuple[int, int]]:
    """(hop, branch) of every router, numbered as struct rc_where numbers
    them: index k is hop k itself (index 0 unused), then hop by hop its '+'
    alternatives in the order written and the '++' routers further along
    their branches (Chain.routers_at)."""
    alternatives = [(k, b) for k in range(1, chain.length + 1)
                    for b in range(1, len(chain.routers_at(k)))]
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
        fill_rewrite(entry, router.props)
        ext = extensions.build(router.props)
        if ext is not None:
            if ext.data not in offsets:
                offsets[ext.data] = len(blob)
                blob.extend(ext.data)
            entry.ext_off = offsets[ext.data]
            entry.ext_len = len(ext.data)
            entry.ext_sum = ext.sum
            entry.n_labels = ext.labels

    further = {}                  # hop -> index of its first '++' router
    for n, (k, b) in enumerate(routers):
        if k == 0:
            continue
        n_alts = len(chain.hop(k).alternatives)
        if b == 1:
            hops[k].first_alt = n
            hops[k].balance = BALANCE[chain.balance(k)]
        if 1 <= b <= n_alts:
            hops[k].n_alts = b
        if b == n_alts + 1:
            further[k] = n
        fill(hops[n], k, b)
    longest = 0
    for k, first in further.items():
        for b, alt in enumerate(chain.hop(k).alternatives, 1):
            entry = hops[hops[k].first_alt + b - 1]
            entry.longer = len(alt.further)
            entry.first_further = first if alt.further else 0
            first += len(alt.further)
            longest = max(longest, len(alt.further))
    data = ffi.new("uint8_t[]", max(1, len(blob)))
    ffi.memmove(data, bytes(blob), len(blob))
    slot.hops = hops
    slot.n_hops = len(routers)
    slot.ext = data
    slot.ext_bytes = len(blob)
    slot.min_mtu = min(mtus, default=0)
    slot.longer = longest
    slot.rewrites = int(any(hops[n].rewrite for n in range(1, len(routers))))
    slot.end = ENDS[chain.end]
    return hops, data


def fill_rewrite(entry, props) -> None:
    """What a router changes in the probes it forwards (enum rc_rewrite)."""
    bits = 0
    if props.nat is not None:
        addr, port = props.nat
        ffi.memmove(entry.nat_addr, addr.packed, len(addr.packed))
        bits |= lib.RC_REWRITE_SOURCE
        if port is not None:
            entry.nat_port = port
            bits |= lib.RC_REWRITE_PORT
    if props.dscp is not None:
        bits |= lib.RC_REWRITE_DSCP
    if props.ecn is not None:
        bits |= lib.RC_REWRITE_ECN
    entry.ds = ((props.dscp or 0) << 2) | (props.ecn or 0)
    if props.df is not None:
        bits |= lib.RC_REWRITE_DF_SET if props.df == "set" else lib.RC_REWRITE_DF_CLEAR
    entry.rewrite = bits


class Reply(bytes):
    """A reply's bytes, with the kind the core decided it is (`.kind`) and
    the router that sent it as rc_where numbers it (`.router`)."""

    kind: Kind
    router: int


def reply(packet: bytes, table: Table, headroom: int = HEADROOM,
          slack: int = 0) -> Reply | Drop:
    """The reply to one packet, or why there is none. The packet is copied
    into a buffer of exactly headroom + len(packet) + slack bytes."""
    buf = bytearray(headroom + len(packet) + slack)
    buf[headroom:headroom + len(packet)] = packet
    off = ffi.new("size_t *")
    where = ffi.new("struct rc_where *")
    n = lib.rc_reply(ffi.from_buffer("uint8_t[]", buf), headroom, len(packet),
                     len(buf), table.ptr, off, where)
    if n < 0:
        return Drop(-n)
    out = Reply(buf[off[0]:off[0] + n])
    out.kind = Kind(where.kind)
    out.router = where.router
    return out
