"""The RFC 4443 2.4(f) / RFC 1812 4.3.2.8 limits, on by default, against a
real flood and real clients.

    ns "client"                                 ns "router"
    +-------------------------------+  veth  +------------------------------+
    | c0  192.0.2.2   flood source  |--------| r0  192.0.2.1                |
    |     192.0.2.3   traceroute    |        | TUN "route-chain" 198.18.0.1/24 |
    +-------------------------------+        +------------------------------+

The flood (../shared/bench/flood) is paced below what the TUN carries, so
the kernel hands every probe to the daemon and what comes back is the
daemon's choice; replies are counted from the TUN's own kernel counters.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from contextlib import contextmanager

import pytest

from netns import CHAIN4, Daemon, TestNet, build_flood
from routechain.config import Limits

pytestmark = pytest.mark.netns

FLOOD_SOURCE, OTHER_SOURCE = "192.0.2.2", "192.0.2.3"
FLOOD_RATE, FLOOD_SECONDS = 40000, 3
# What a daemon without [limits] allows one source, as the declarations say.
SOURCE_RATE, SOURCE_BURST = Limits().source_rate, Limits().per_source_burst


@pytest.fixture(scope="module")
def flood(tmp_path_factory) -> str:
    return build_flood(tmp_path_factory.mktemp("flood"))


def tun_replies(net: TestNet) -> int:
    """Packets the daemon wrote into its TUN (the kernel's rx side)."""
    out = net.run(net.router, "ip", "-j", "-s", "link", "show", "dev", "route-chain").stdout
    return json.loads(out)[0]["stats64"]["rx"]["packets"]


def counters(daemon: Daemon) -> str:
    """The total line SIGUSR1 logs."""
    return daemon.log_counters().split("total:", 1)[1].splitlines()[0]


def probes(flood: str, secs: float, rate: int, source: str = FLOOD_SOURCE,
           dest: str = "198.18.0.10", count: int = 16, ttl: int = 3,
           proto: str = "udp") -> list[str]:
    """The flood's command line: probes to count addresses from dest (by
    default UDP with TTL 3, drawing Time Exceeded), paced to rate/s for
    secs, from source."""
    return [flood, "-4", "-d", dest, "-n", str(count), "-t", str(ttl), "-p", proto,
            "-s", str(secs), "-r", str(rate), "-b", source]


@contextmanager
def limited(tmp_path, tag: str, limits: str, chain: str = ""):
    """A TestNet and a daemon on 2 queues serving CHAIN4 (plus the chain
    lines given) under these [limits] lines; (net, daemon)."""
    config = tmp_path / "rc.toml"
    config.write_text(f'[limits]\n{limits}\n\n[[chain]]\naddress = "{CHAIN4}"\n{chain}')
    with TestNet.create(tag) as net, Daemon(net, "--config", str(config),
                                            "--queues", "2") as daemon:
        yield net, daemon


def test_flood_from_one_source_is_cut_while_another_source_loses_nothing(flood):
    with TestNet.create("lm") as net, Daemon(net, CHAIN4, "--queues", "2") as daemon:
        net.run(net.client, "ip", "addr", "add", f"{OTHER_SOURCE}/24", "dev", "c0")
        daemon.wait_for("READY=1")
        before = tun_replies(net)
        started = time.monotonic()
        proc = net.popen(net.client, *probes(flood, FLOOD_SECONDS, FLOOD_RATE),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1)
        # Mid-flood, from another source: every probe of a default-sized
        # traceroute (3 per hop) is answered.
        trace = net.run(net.client, "traceroute", "-n", "-w", "2", "-s", OTHER_SOURCE,
                        "198.18.0.6").stdout
        out, err = proc.communicate(timeout=FLOOD_SECONDS + 30)
        elapsed = time.monotonic() - started
        assert proc.returncode == 0, err
        time.sleep(0.2)
        replies = tun_replies(net) - before
        hops = re.findall(r"^\s*\d+\s+(.*)$", trace, re.MULTILINE)
        assert len(hops) == 6 and all(line.count(" ms") == 3 for line in hops), trace
        # GCRA: at most the burst, then the rate, over the time the flood
        # ran (measured around it, so an upper bound); plus the traceroute's
        # replies: 16 TTLs in flight at 3 probes each at most, 48.
        assert replies <= SOURCE_BURST + SOURCE_RATE * elapsed + 48, (replies, elapsed, out)
        # and the limit is what cut it: the flood sent far more.
        total = counters(daemon)
        limited = int(re.search(r"source_limited=(\d+)", total).group(1))
        received = int(re.search(r"(\d+) received", total).group(1))
        assert received >= FLOOD_RATE * FLOOD_SECONDS * 0.5, total
        assert replies >= SOURCE_BURST + SOURCE_RATE * (FLOOD_SECONDS - 1), (replies, total)
        assert limited >= received - replies - 20, total
        # Only the source limit cut (the flood it lets through is far below
        # the daemon's): every reply withheld by a limit is that one's.
        assert int(re.search(r"(\d+) rate-limited", total).group(1)) == limited, total
        status = daemon.next_status()
        assert int(re.search(r"(\d+) rate-limited", status).group(1)) >= limited, status
        print(f"flood: {received} received, {replies} replies in {elapsed:.2f} s")


def test_limits_off_when_written(flood, tmp_path):
    """`rate = "off"` and `source_rate = 0`: the same flood comes back whole."""
    with limited(tmp_path, "lo", 'rate = "off"\nsource_rate = 0') as (net, daemon):
        daemon.wait_for("READY=1")
        before = tun_replies(net)
        done = net.run(net.client, *probes(flood, 1, 5000))
        sent = int(re.search(r"sent=(\d+)", done.stdout).group(1))
        time.sleep(0.2)
        replies = tun_replies(net) - before
        assert replies == sent, (replies, done.stdout, done.stderr)
        total = counters(daemon)
        assert re.search(r"(\d+) rate-limited", total).group(1) == "0", total
        assert "source_limited" not in total and "global_limited" not in total, total


def test_flood_from_many_sources_is_cut_to_the_daemon_limit(flood, tmp_path):
    """Eight sources at 2000/s each, no per-source limit, the daemon's at
    2000/s with bursts of 2000: at most burst + rate x time come back. Each
    of the 2 queues holds half the limit, so if the kernel's flow hash put
    every flood on one queue only half would: the lower bound allows it."""
    sources = [f"192.0.2.{10 + i}" for i in range(8)]
    with limited(tmp_path, "lg", 'rate = "2000/s"\nsource_rate = "off"') as (net, daemon):
        for source in sources:
            net.run(net.client, "ip", "addr", "add", f"{source}/24", "dev", "c0")
        daemon.wait_for("READY=1")
        before = tun_replies(net)
        started = time.monotonic()
        procs = [net.popen(net.client, *probes(flood, FLOOD_SECONDS, 2000, source),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for source in sources]
        for proc in procs:
            proc.communicate(timeout=FLOOD_SECONDS + 30)
            assert proc.returncode == 0
        elapsed = time.monotonic() - started
        time.sleep(0.2)
        replies = tun_replies(net) - before
        assert replies <= 2000 + 2000 * elapsed, (replies, elapsed)
        assert replies >= 1000 * (FLOOD_SECONDS - 1), replies
        total = counters(daemon)
        assert re.search(r"global_limited=\d{4,}", total), total
        assert "source_limited" not in total, total


def test_default_limits_cost_normal_clients_nothing():
    """The defaults were computed for this: from one source at once,
    traceroute -m 64 (3 probes x 64 hops, 16 in flight) over IPv4 and IPv6,
    mtr -c 10 and tracepath, through a chain longer than 64 hops: not one
    probe goes unanswered, and nothing was rate-limited."""
    far4, far6 = "198.18.0.80", "2001:db8::80"
    with TestNet.create("ld") as net, Daemon(net, CHAIN4, "2001:db8::1/64",
                                              "--queues", "2") as daemon:
        daemon.wait_for("READY=1")
        clients = {
            "traceroute": ["traceroute", "-n", "-m", "64", "-w", "3", far4],
            "traceroute6": ["traceroute", "-6", "-n", "-m", "64", "-w", "3", far6],
            "mtr": ["mtr", "--report", "-n", "-c", "10", "-m", "64", far4],
            "tracepath": ["tracepath", "-n", "-m", "64", far4],
        }
        procs = {name: net.popen(net.client, *cmd, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
                 for name, cmd in clients.items()}
        out = {name: proc.communicate(timeout=180)[0] for name, proc in procs.items()}
        for name in ("traceroute", "traceroute6"):
            hops = re.findall(r"^\s*\d+\s+(.*)$", out[name], re.MULTILINE)
            assert len(hops) == 64, out[name]
            assert all(line.count(" ms") == 3 for line in hops), out[name]
        losses = re.findall(r"^\s*\d+\.\|--\s+\S+\s+([\d.]+)%", out["mtr"], re.MULTILINE)
        assert len(losses) == 64 and set(losses) == {"0.0"}, out["mtr"]
        assert "no reply" not in out["tracepath"] and re.search(r"^\s*64:", out["tracepath"],
                                                                 re.MULTILINE), out["tracepath"]
        total = counters(daemon)
        assert "limited" not in total.split("paced:")[1], total


def test_echo_replies_are_limited_per_source_too(flood, tmp_path):
    """Echo Requests to the destination at 5000/s from one source, the
    source limit at 500/s with bursts of 500: Echo Replies obey it as
    errors do (RFC 4443 2.4(f) speaks of errors; a flood of pings is no
    less a way to make the daemon send)."""
    with limited(tmp_path, "le", 'source_rate = "500/s"\nsource_burst = 500',
                 'hops = ["a", "b", "c"]\n') as (net, daemon):
        daemon.wait_for("READY=1")
        before = tun_replies(net)
        started = time.monotonic()
        net.run(net.client, *probes(flood, 2, 5000, dest="198.18.0.4", count=1, ttl=64,
                                    proto="icmp"))
        elapsed = time.monotonic() - started
        time.sleep(0.2)
        replies = tun_replies(net) - before
        total = counters(daemon)
        assert re.search(r"echo_reply=\d+", total), total
        assert 500 + 500 * (2 - 0.5) <= replies <= 500 + 500 * elapsed, (replies, total)
        assert re.search(r"source_limited=\d{4,}", total), total
