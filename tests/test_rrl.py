"""Response rate limiting for the built-in DNS server (routechain.rrl):
pure, the time given, so each verdict is checked without sockets."""

from __future__ import annotations

import pytest

from routechain import rrl
from routechain.settings import DnsSettings


def limits(rate: int, errors: int, slip: int) -> DnsSettings:
    """The [dns] settings the limiter reads: rate_limit, rate_limit_errors, rate_limit_slip."""
    return DnsSettings(rate_limit=rate, rate_limit_errors=errors, rate_limit_slip=slip)


def run(limiter, steps) -> list[int]:
    """steps: (prefix, error, time) -> the verdicts."""
    return [limiter.check(p, e, t) for p, e, t in steps]


S, D, L = rrl.SEND, rrl.DROP, rrl.SLIP
A, B = rrl.prefix("192.0.2.7"), rrl.prefix("192.0.2.200")
C = rrl.prefix("198.51.100.7")


@pytest.mark.parametrize("settings,steps,expected", [
    # A burst of `rate` passes, then every second limited response slips.
    (limits(3, 1, 2), [(A, False, 0.0)] * 7, [S, S, S, D, L, D, L]),
    # One /24 is one client; another /24 is another.
    (limits(2, 1, 0), [(A, False, 0.0), (B, False, 0.0), (B, False, 0.0), (C, False, 0.0)],
     [S, S, D, S]),
    # Errors have their own, smaller, bucket.
    (limits(5, 1, 1), [(A, True, 0.0), (A, True, 0.0), (A, False, 0.0)],
     [S, L, S]),
    # Tokens come back at `rate` per second, never more than one second's worth.
    (limits(2, 1, 0),
     [(A, False, 0.0)] * 3 + [(A, False, 0.5), (A, False, 0.5), (A, False, 100.0)] +
     [(A, False, 100.0)] * 2, [S, S, D, S, D, S, S, D]),
    # 0 turns limiting off.
    (limits(0, 0, 2), [(A, False, 0.0)] * 1000 + [(A, True, 0.0)] * 1000,
     [S] * 2000),
])
def test_rrl_verdicts(settings, steps, expected):
    assert run(rrl.RateLimiter(settings), steps) == expected


def test_rrl_prefixes_are_slash_24_and_slash_56():
    assert rrl.prefix("192.0.2.1") == rrl.prefix("192.0.2.254") != rrl.prefix("192.0.3.1")
    assert rrl.prefix("2001:db8:0:ff::1") == rrl.prefix("2001:db8:0:1::2")
    assert rrl.prefix("2001:db8:0:100::1") != rrl.prefix("2001:db8:0:ff::1")
    assert rrl.prefix("fe80::1%lo") == rrl.prefix("fe80::2")


def test_rrl_table_is_bounded_and_full_tables_share_one_bucket():
    limiter = rrl.RateLimiter(limits(2, 1, 0), table_max=100)
    forged = [rrl.prefix(f"10.{i // 256}.{i % 256}.1") for i in range(1000)]
    verdicts = run(limiter, [(p, False, 0.0) for p in forged])
    assert len(limiter) <= 102
    assert verdicts[:100] == [S] * 100 and verdicts[100:].count(S) == 2  # the shared bucket
    # A second later every bucket is full again: forgotten, room for new prefixes.
    assert limiter.check(rrl.prefix("203.0.113.1"), False, 1.5) == S
    assert len(limiter) < 100
