"""The test network, built with iproute2 (independently of route-chain's own
netlink code), and the daemon run inside it as users run it.

    ns "client"                            ns "router"
    +----------------------+   veth   +---------------------------------------+
    | c0  192.0.2.2/24      |----------| r0  192.0.2.1/24     TUN "route-chain" |
    |     2001:db8:ff::2/64 |          |     2001:db8:ff::1/64  198.18.0.1/24   |
    | default via the router|          | forwarding on          2001:db8::1/64  |
    +----------------------+          +---------------------------------------+

A probe from the client to 198.18.0.6 crosses the router (hop 1, 192.0.2.1)
and enters the TUN with its TTL lowered by one, so hop n of a traceroute is
host + (n - 1), and the destination is hop 6.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from routechain.supervisor import Supervisor

GATEWAY4, CLIENT4 = "192.0.2.1", "192.0.2.2"
GATEWAY6, CLIENT6 = "2001:db8:ff::1", "2001:db8:ff::2"
CHAIN4, CHAIN6 = "198.18.0.1/24", "2001:db8::1/64"


def wait_until(check, timeout: float = 10.0, what="", step: float = 0.05):
    """Call check() every step seconds until it returns something true, and
    return that; past timeout, AssertionError naming what (a string, or a
    function that says it then, with the logs of the moment)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what() if callable(what) else what}")
        time.sleep(step)


def knot_head(rundir, db, listen: str, log: str) -> str:
    """The start of a knotd.conf for a test: one worker of each kind, its
    database in db, logging to stderr at level log; the zones and the rest
    follow it."""
    return (f'server:\n    rundir: "{rundir}"\n    listen: {listen}\n'
            "    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n"
            f'database:\n    storage: "{db}"\n'
            f"log:\n  - target: stderr\n    any: {log}\n")


def sh(*args: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, timeout=timeout, capture_output=True, text=True, **kw)


@dataclass
class TestNet:
    """Two namespaces joined by a veth pair; removed by close()."""

    __test__ = False  # a helper, not a test class

    client: str
    router: str
    _made: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, tag: str = "t") -> "TestNet":
        pid = os.getpid()
        net = cls(f"rc-{tag}-c{pid}", f"rc-{tag}-r{pid}")
        try:
            for ns in (net.client, net.router):
                sh("ip", "netns", "add", ns)
                net._made.append(ns)
                net.run(ns, "ip", "link", "set", "lo", "up")
            sh("ip", "-n", net.client, "link", "add", "c0", "type", "veth",
               "peer", "name", "r0", "netns", net.router)
            for ns, dev, v4, v6 in ((net.client, "c0", CLIENT4, CLIENT6),
                                    (net.router, "r0", GATEWAY4, GATEWAY6)):
                net.run(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                        "net.ipv6.conf.default.accept_dad=0")
                sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
                sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
                sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", net.client, "route", "add", "default", "via", GATEWAY4)
            sh("ip", "-n", net.client, "-6", "route", "add", "default", "via", GATEWAY6)
            # The router's own Time Exceeded (hop 1) is not what we test: lift
            # the kernel's per-peer ICMP rate limit so that it always comes.
            net.run(net.router, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                    "net.ipv6.conf.all.forwarding=1", "net.ipv4.icmp_ratelimit=0",
                    "net.ipv6.icmp.ratelimit=0")
            # Resolve the neighbours now: a first traceroute burst must not be
            # lost in the few packets the kernel queues while it resolves.
            for gateway in (GATEWAY4, GATEWAY6):
                net.run(net.client, "ping", "-c", "1", "-W", "5", gateway)
        except BaseException:
            net.close()
            raise
        return net

    def add_router(self, name: str) -> str:
        """One more namespace NAME (its name should hold the pid), removed
        with the rest: lo up, forwarding on, no DAD and no ICMP rate limit,
        as the router's. Returns NAME."""
        sh("ip", "netns", "add", name)
        self._made.append(name)
        self.run(name, "ip", "link", "set", "lo", "up")
        self.run(name, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                 "net.ipv6.conf.default.accept_dad=0", "net.ipv4.ip_forward=1",
                 "net.ipv6.conf.all.forwarding=1", "net.ipv4.icmp_ratelimit=0",
                 "net.ipv6.icmp.ratelimit=0")
        return name

    def run(self, ns: str, *args: str, check: bool = True, timeout: float = 60,
            **kw) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", ns, *args, check=check, timeout=timeout, **kw)

    def popen(self, ns: str, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(("ip", "netns", "exec", ns) + args, **kw)

    def close(self) -> None:
        while self._made:
            sh("ip", "netns", "del", self._made.pop(), check=False)

    def __enter__(self) -> "TestNet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Daemon(Supervisor):
    """route-chain running in a namespace (the router's unless `ns`), as
    `python -m routechain ARGS`, under a notify socket of the test's so that
    start-up is awaited on READY=1 (routechain.supervisor)."""

    def __init__(self, net: TestNet, *args: str, ns: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(("ip", "netns", "exec", ns or net.router, sys.executable, "-m",
                          "routechain", *args), env=env, start_new_session=True)

    def log_counters(self, last: str = "repairs: ") -> str:
        """SIGUSR1, and what the daemon logs for it (a line per queue,
        `total:`, `repairs:`, then `dns:` with a DNS server), once the line
        holding `last` is written."""
        since = len(self.output())
        self.signal(signal.SIGUSR1)
        return self.wait_for_line(last, since)


SHARED_BENCH = Path(__file__).resolve().parents[2] / "shared" / "bench"


def build_flood(workdir: Path) -> str:
    """../shared/bench/flood.c (beside the checkout, as in CI) built into
    workdir: a bounded, optionally paced probe generator. Its path."""
    source = SHARED_BENCH / "flood.c"
    if not source.exists():
        raise AssertionError(f"{source} is missing: ../shared must sit beside the checkout")
    out = Path(workdir) / "flood"
    sh("gcc", "-O2", "-o", str(out), str(source), timeout=120)
    return str(out)
