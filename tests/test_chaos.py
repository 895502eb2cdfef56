"""Chaos: everything a public router throws at the daemon, at once.

While a paced flood runs through the chain and garbled DNS messages hit the
built-in server, the config flips 50 times between good and hostile
versions (deep nesting, a FIFO and /dev/zero as stories, a name that breaks
the SOA, an IDNA bomb, a route that is not ours...), a chain address is
deleted behind the daemon's back and the TUN's link flaps. At the end a
well-behaved client must still get its traceroute and its PTR answer; every
reload must have been applied or refused with a line; descriptors, threads
and memory must be flat; and nothing outside the daemon's own addresses and
routes may have changed.

    ns "client"                         ns "router"
    c0 192.0.2.2 ---- veth ---- r0 192.0.2.1    TUN "route-chain"
    flood (paced), garbled DNS,                  198.18.0.1/24  2001:db8::1/64
    traceroute, dig                              route 198.19.128.0/17 table 100
                                                 DNS 198.18.0.1:53
    (tests/netns.py has the addressing)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netns import CHAIN4, CHAIN6, Daemon, TestNet, build_flood

pytestmark = pytest.mark.netns

RELOADS = 50
HOST4 = "198.18.0.1"
STORY = "Once upon a time\na packet crossed the sea\n*\nand came home\n"
FOREIGN_ROUTE = "203.0.113.0/24"

GOOD = """\
[[chain]]
address = "{chain4}"
story = "story.txt"

[[chain]]
address = "{chain6}"
story = "story.txt"
{extra}
[[route]]
prefix = "198.19.128.0/17"
table = 100

[dns]
listen = ["{host4}:53"]
"""
EXTRA = '\n[[chain]]\naddress = "198.19.0.1/24"\nhops = ["one", "two"]\n'
# A route that someone else holds: a reload skips it with a warning, never takes it.
TAKEOVER = f'\n[[route]]\nprefix = "{FOREIGN_ROUTE}"\n'


def hostile(tmp: Path) -> list[str]:
    """Configs that must be refused with a line, each in its own way."""
    fifo = tmp / "fifo.story"
    if not fifo.exists():
        os.mkfifo(fifo)
    (tmp / "bomb.story").write_text("日" * 1000 + "\n")
    chain = '[[chain]]\naddress = "{}"\n'.format(CHAIN4)
    return [
        "x = " + "[" * 5000 + "]" * 5000 + "\n",                    # RecursionError in tomllib
        chain + f'story = "{fifo}"\n',                               # blocks on open
        chain + 'story = "/dev/zero"\n',                             # endless
        chain + 'story = "/dev/urandom"\n',
        chain + 'hops = ["a"]\nsuffix = "' + ".".join(["a" * 60] * 4) + '"\n'
        + f'[dns]\nlisten = ["{HOST4}:53"]\n',                        # SOA rname > 255 octets
        chain + f'story = "{tmp / "bomb.story"}"\n',                 # IDNA work
        '[[chain]]\naddress = "0.0.0.0/0"\n',
        '[[chain]]\naddress = "fe80::1%eth0/64"\n',
        "\xff\xfe not even UTF-8",
        '[daemon]\nqueues = 1024\n' + chain,
    ]


def proc_usage(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1)),
            "rss_kb": int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))}


def foreign_state(net: TestNet) -> tuple[list[str], list[str]]:
    """Addresses and routes in the router namespace that are not the daemon's,
    leaving out the link-local ones the kernel makes and moves through DAD
    by itself while the test runs."""
    def ours_or_kernels(line: str) -> bool:
        return " route-chain " in line or "dev route-chain" in line or "fe80:" in line
    addrs = net.run(net.router, "ip", "-o", "addr", "show").stdout.splitlines()
    routes = net.run(net.router, "ip", "-o", "route", "show", "table", "all").stdout
    return (sorted(re.sub(r"\s+valid_lft.*", "", a) for a in addrs if not ours_or_kernels(a)),
            sorted(r for r in routes.splitlines() if not ours_or_kernels(r)))


GARBLE = """
import os, random, socket, time
rng = random.Random(7)
deadline = time.monotonic() + {secs}
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = 0
while time.monotonic() < deadline and sent < 20000:
    u.sendto(rng.randbytes(rng.randrange(0, 600)), ("{host}", 53)); sent += 1
    if sent % 500 == 0:
        try:
            t = socket.create_connection(("{host}", 53), timeout=1)
            t.sendall(rng.randbytes(rng.randrange(1, 300))); t.close()
        except OSError:
            pass
        time.sleep(0.05)
print(sent)
"""


def test_chaos_daemon_survives_and_keeps_serving(tmp_path):
    (tmp_path / "story.txt").write_text(STORY)
    config = tmp_path / "rc.toml"

    def good(extra: bool, takeover: bool = False) -> None:
        config.write_text(GOOD.format(chain4=CHAIN4, chain6=CHAIN6, host4=HOST4,
                                      extra=(EXTRA if extra else "")
                                      + (TAKEOVER if takeover else "")))

    good(False)
    bad = hostile(tmp_path)
    flood = build_flood(tmp_path)
    with TestNet.create("ch") as net:
        net.run(net.router, "ip", "route", "add", FOREIGN_ROUTE, "dev", "lo")
        with Daemon(net, "--config", str(config), "--queues", "2") as daemon:
            daemon.wait_for("READY=1")
            pid = daemon.proc.pid
            assert net.run(net.client, "dig", "+short", "+time=2", f"@{HOST4}", "-x",
                           "198.18.0.2").stdout.strip() == "Once.upon.a.time."
            before, foreign = proc_usage(pid), foreign_state(net)

            flooding = net.popen(net.client, flood, "-4", "-d", "198.18.0.2", "-n", "8",
                                 "-t", "3", "-p", "udp", "-s", "25", "-r", "5000",
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            garbling = net.popen(net.client, sys.executable, "-c",
                                 GARBLE.format(secs=25, host=HOST4),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            applied = refused = 0
            try:
                for i in range(RELOADS):
                    if i % 2 == 0:
                        good(extra=i % 4 == 0, takeover=i % 8 == 2)
                    else:
                        config.write_text(bad[(i // 2) % len(bad)])
                    if i == 10:
                        net.run(net.router, "ip", "addr", "del", CHAIN4, "dev", "route-chain")
                    if i == 25:
                        net.run(net.router, "ip", "link", "set", "route-chain", "down")
                        net.run(net.router, "ip", "link", "set", "route-chain", "up")
                    ready = daemon.reload()
                    if "reload failed" in ready["STATUS"]:
                        refused += 1
                        assert i % 2 == 1, f"good config {i} refused: {ready}"
                    else:
                        applied += 1
                        assert i % 2 == 0, f"hostile config {i} applied:\n{bad[(i // 2) % len(bad)]}"
                good(False)
                daemon.signal(signal.SIGHUP)
                daemon.wait_for("READY=1", timeout=20)
            finally:
                flooding.wait(60)
                out, _ = garbling.communicate(timeout=60)
            assert int(out.strip()) > 1000, out

            log = daemon.output()
            assert (applied, refused) == (RELOADS // 2, RELOADS // 2)
            assert len(re.findall(r"reload failed, still serving", log)) == refused, log
            assert "Traceback" not in log, log
            assert FOREIGN_ROUTE in log, log  # the skipped route was named

            # The deleted address and what the flap took are back.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                addrs = net.run(net.router, "ip", "-o", "addr", "show", "dev",
                                "route-chain").stdout
                if CHAIN4 in addrs and CHAIN6 in addrs:
                    break
                time.sleep(0.2)
            assert CHAIN4 in addrs and CHAIN6 in addrs, addrs
            assert "198.19.128.0/17" in net.run(net.router, "ip", "route", "show",
                                                "table", "100").stdout

            trace = net.run(net.client, "traceroute", "-n", "-q", "1", "-w", "2",
                            "198.18.0.5", timeout=60).stdout
            hops = re.findall(r"^\s*\d+\s+(\S+)", trace, re.MULTILINE)
            assert hops == ["192.0.2.1", "198.18.0.2", "198.18.0.3", "*", "198.18.0.5"], trace
            assert net.run(net.client, "dig", "+short", "+time=2", f"@{HOST4}", "-x",
                           "198.18.0.3").stdout.strip() == "a.packet.crossed.the.sea."

            after = proc_usage(pid)
            assert after["fds"] == before["fds"], (before, after)
            assert after["threads"] == before["threads"], (before, after)
            assert after["rss_kb"] - before["rss_kb"] < 16 * 1024, (before, after)
            assert foreign_state(net) == foreign
        routes = net.run(net.router, "ip", "-o", "route", "show", FOREIGN_ROUTE).stdout
        assert "dev lo" in routes, routes
