"""The pacing side of the table (routechain.chaintable) and the counters
(routechain.workers), without
root: what the C side will read for each hop, each limit and each queue."""

from __future__ import annotations

import errno
import os

from routechain import chaintable, config, workers
from routechain.chain import Chain, Hop, parse_prefix
from routechain.chaintable import ffi


def timed_chain(tmp_path) -> Chain:
    path = tmp_path / "rc.toml"
    path.write_text('[[chain]]\naddress = "192.0.2.1/24"\ndelay = "2ms"\n'
                    'hops = ["a", "b | loss=25% jitter=1ms", "c | rate=4/s burst=3", "d"]\n')
    return config.load(path).chains[0]


def test_table_carries_timing_only_for_chains_that_have_it(tmp_path):
    plain = Chain(parse_prefix("198.51.100.1/24"), (Hop(name="x"),))
    timed = timed_chain(tmp_path)
    table = chaintable.Table([plain, timed])
    slot = table.ptr.chains[table.chains.index(plain)]  # the table is sorted by prefix
    assert slot.timing == ffi.NULL and slot.hop_tat == ffi.NULL
    hops = table.ptr.chains[table.chains.index(timed)].timing
    assert [hops[k].delay_us for k in range(1, 5)] == [2000] * 4
    assert (hops[2].jitter_us, hops[2].loss) == (1000, 2**30)       # 25 % of 2^32
    assert hops[1].loss == 0 and hops[1].rate.interval_ns == 0
    # 4/s: one reply per 250 ms; a burst of 3 may run 2 intervals ahead.
    assert (hops[3].rate.interval_ns, hops[3].rate.tolerance_ns) == (250_000_000, 500_000_000)


def test_table_limits_default_on_and_shared_out_over_queues():
    table = chaintable.Table([], config.Limits(), queues=4)
    assert table.ptr.limited == 1
    # 20000/s over 4 queues: 5000/s each, burst 5000; per source 1000/s, burst 1000.
    assert (table.ptr.daemon.interval_ns, table.ptr.daemon.tolerance_ns) == (200_000,
                                                                            4999 * 200_000)
    assert (table.ptr.source.interval_ns, table.ptr.source.tolerance_ns) == (1_000_000,
                                                                            999 * 1_000_000)


def test_table_queue_share_never_below_a_far_traceroute():
    """A burst of 1000 over 64 queues would leave 16 each: the floor is 256."""
    table = chaintable.Table([], config.Limits(rate=1000, burst=1000), queues=64)
    interval = table.ptr.daemon.interval_ns
    assert interval == 64_000_000 and table.ptr.daemon.tolerance_ns == 255 * interval


def test_table_limits_off_when_written():
    table = chaintable.Table([], config.Limits(rate=None, source_rate=None), queues=2)
    assert table.ptr.limited == 0
    assert table.ptr.daemon.interval_ns == 0 and table.ptr.source.interval_ns == 0


def test_pacing_pool_is_one_second_at_the_rate_shared_out():
    pacing = workers.Pacing(config.Limits(seed=5), queues=2)
    assert (pacing.small, pacing.large, pacing.seed) == (10000, 625, 5)
    # Slot records (8 bytes) and heap entries (16), the book (4096 slices of
    # 8 bytes), the replies and the read buffer; the rest is the worker's
    # own fields (counters, pool and book heads), private to C, and cache
    # line alignment.
    exact = 10625 * (8 + 16) + 4096 * 8 + 10000 * 256 + 625 * 1536 + workers.BUFFER_SIZE
    assert 0 <= pacing.worker_bytes - exact < 1024


def test_stats_sum_and_say_what_pacing_did():
    one = workers.Stats(received=5, sent=2, paced=(1, 2, 0, 3, 0, 1, 2),
                     late=(4, 0, 0, 0, 1, 0, 0, 0, 2), late_ns=9)
    two = workers.Stats(received=1, paced=(0, 0, 4, 0, 1, 0, 1),
                     late=(1, 0, 0, 0, 0, 3, 0, 0, 0), late_ns=1)
    total = workers.Stats.total([one, two])
    assert total.paced == (1, 2, 4, 3, 1, 1, 3) and total.rate_limited == 8
    assert total.late == (5, 0, 0, 0, 1, 3, 0, 0, 2) and total.late_ns == 10
    assert total.late_over_1ms == 5               # the 2.5 ms bucket and the open one
    text = total.summary(detail=True)
    assert "8 rate-limited, 2 lost, 1 delayed (5 over 1 ms late), 1 pool full, " \
           "3 overloaded" in text
    assert "paced: delayed=1, lost=2, hop_limited=4, source_limited=3, global_limited=1, " \
           "pool_full=1, overloaded=3" in text
    assert "late: <=50us=5, <=1ms=1, <=2.5ms=3, >10ms=2" in text


def test_stats_sum_and_show_replies_to_chapters():
    total = workers.Stats.total([workers.Stats(chapters=3), workers.Stats(chapters=4)])
    assert total.chapters == 7
    assert "; to chapters: 7" in total.summary(detail=True)
    assert "to chapters" not in workers.Stats().summary(detail=True)


def test_stats_show_read_errors_and_the_last_one():
    """A failed read of the TUN is counted and its errno seen in the log."""
    one = workers.Stats(read_errors=2, last_read_errno=errno.EIO)
    two = workers.Stats(read_errors=1, last_read_errno=errno.EBADFD)
    total = workers.Stats.total([one, two])
    assert total.read_errors == 3 and total.last_read_errno == errno.EBADFD
    assert "3 read errors" in total.summary()
    assert total.summary(detail=True).endswith(f"; last read error: {os.strerror(errno.EBADFD)}")
    assert "last read error" not in workers.Stats(read_errors=0).summary(detail=True)


def test_table_timing_of_alternatives_follows_the_hops(tmp_path):
    """A '+' alternative's timing sits after hop `length`, as rc_where
    numbers routers: here index 4 is hop 2's alternative, with its own loss."""
    path = tmp_path / "rc.toml"
    path.write_text('[[chain]]\naddress = "192.0.2.1/24"\n'
                    'hops = ["a", "b | delay=+3ms", "+ b2 | loss=50%", "c"]\n')
    chain = config.load(path).chains[0]
    timing = chaintable.Table([chain]).ptr.chains[0].timing
    assert [timing[k].delay_us for k in (1, 2, 3)] == [0, 3000, 3000]
    assert timing[2].loss == 0
    assert (timing[4].loss, timing[4].delay_us) == (2**31, chain.timing(2, 1).delay_us)
