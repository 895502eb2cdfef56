"""Response rate limiting for the built-in DNS server over UDP, as BIND's and
Knot's RRL do it: a UDP query's source address can be forged, so a server
that answers every one reflects, and amplifies, floods at whoever the forger
names. Pure: the caller gives the time; no I/O.

Each client prefix (/24 for IPv4, /56 for IPv6: one site, as RRL counts
them) has two token buckets, one for answers (NOERROR, NXDOMAIN: what a
resolver doing traceroute lookups gets) and one for errors (REFUSED,
FORMERR, NOTIMP, BADVERS: what a flood of junk gets). A bucket holds one
second's worth of its rate and refills continuously. A response beyond it is
not sent; every `slip`-th one goes out instead truncated (TC, no records:
never larger than the query), so that a real resolver behind a forged
flood asks again over TCP, which cannot be forged, and is answered. slip 0
sends none, 1 truncates every limited response.

The table is bounded: a bucket idle long enough to be full again is the same
as no bucket and is forgotten on the next sweep (at most one a second); when
the table is still full, new prefixes share one bucket, so a flood from
very many forged prefixes is limited as one client.
"""

from __future__ import annotations

import socket

from .settings import DnsSettings

SEND, DROP, SLIP = 0, 1, 2
TABLE_MAX = 65536
_SWEEP_INTERVAL = 1.0
_SHARED = b"*"


def prefix(host: str) -> bytes:
    """The client prefix RRL counts by: /24 of an IPv4, /56 of an IPv6
    address, as the address text a socket gives ('%zone' ignored)."""
    if ":" in host:
        return socket.inet_pton(socket.AF_INET6, host.partition("%")[0])[:7]
    return socket.inet_pton(socket.AF_INET, host)[:3]


class RateLimiter:
    """check(prefix, error, now) -> SEND, DROP or SLIP for one UDP response,
    by the [dns] rate_limit (answers/s), rate_limit_errors (errors/s; 0
    turns either off) and rate_limit_slip."""

    def __init__(self, settings: DnsSettings, table_max: int = TABLE_MAX) -> None:
        self.rate = settings.rate_limit
        self.errors = settings.rate_limit_errors
        self.slip = settings.rate_limit_slip
        self._table_max = table_max
        # (prefix, error) -> [tokens, last refill time, responses limited]
        self._buckets: dict[tuple[bytes, bool], list] = {}
        self._next_sweep = 0.0

    def check(self, client: bytes, error: bool, now: float) -> int:
        rate = self.errors if error else self.rate
        if rate <= 0:
            return SEND
        key = (client, error)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._table_max and not self._sweep(now):
                key = (_SHARED, error)
                bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = [float(rate), now, 0]
        tokens = min(float(rate), bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return SEND
        bucket[0] = tokens
        bucket[2] += 1
        slip = self.slip
        return SLIP if slip and bucket[2] % slip == 0 else DROP

    def _sweep(self, now: float) -> bool:
        """Forget buckets full again; True if room was made."""
        if now < self._next_sweep:
            return False
        self._next_sweep = now + _SWEEP_INTERVAL
        full = [k for k, b in self._buckets.items()
                if b[0] + (now - b[1]) * (self.errors if k[1] else self.rate)
                >= (self.errors if k[1] else self.rate)]
        for k in full:
            del self._buckets[k]
        return len(self._buckets) < self._table_max

    def same(self, settings: DnsSettings) -> bool:
        """True if `settings` limit as this limiter does (a reload keeps its buckets)."""
        return (self.rate, self.errors, self.slip) == (
            settings.rate_limit, settings.rate_limit_errors, settings.rate_limit_slip)

    def __len__(self) -> int:
        return len(self._buckets)
