"""A chain announced by BGP exactly as long as the daemon serves it.

AS A runs route-chain and BIRD 2 with systemd/bird-route-chain.conf; AS B
runs BIRD 2; a host behind B traces the story. A and B peer over one link
with DN42's usual tunnel MTU, in both families (a session each):

    ns "client" (H)         ns "router" (B)                ns A
    +--------------+ veth  +--------------------+  veth   +-----------------------+
    | c0 192.0.2.2 |-------| r0 192.0.2.1       |  1420   | a0 198.51.100.1       |
    | 2001:db8:ff::2|      |    2001:db8:ff::1  |---------|    2001:db8:ab::1     |
    +--------------+       | b0 198.51.100.2    |         | TUN "route-chain"     |
                           |    2001:db8:ab::2  |         |   198.18.0.1/24       |
                           | BIRD AS 4242420002 |         |   2001:db8::1/64      |
                           +--------------------+         | BIRD AS 4242420001    |
                                                          +-----------------------+

B announces H's networks (its direct routes on r0) to A, A's kernel
protocol puts them in A's kernel and learns route-chain's routes (proto
151) from it, and A announces those to B, whose kernel protocol installs
them. Each BIRD runs by pid with its own control socket (`bird -s`).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import cannot_run
from netns import CHAIN4, CHAIN6, Daemon, TestNet, sh, wait_until
from test_desired import hops

pytestmark = pytest.mark.netns

SNIPPET = Path(__file__).resolve().parents[1] / "systemd" / "bird-route-chain.conf"
A4, B4, A6, B6 = "198.51.100.1", "198.51.100.2", "2001:db8:ab::1", "2001:db8:ab::2"
ASN_A, ASN_B = 4242420001, 4242420002
TUNNEL_MTU = 1420
PREFIX4, PREFIX6 = "198.18.0.0/24", "2001:db8::/64"
EXTRA, EXTRA_PREFIX = "198.19.0.1/24", "198.19.0.0/24"
WITHDRAWN_WITHIN = 5.0   # seconds, from the daemon's death to B's table

CHAINS = f'''[[chain]]
address = "{CHAIN4}"
hops = ["over.the.hill", "down.the.lane", "a.narrow.gate | mtu=1300", "home"]
suffix = "story.example"

[[chain]]
address = "{CHAIN6}"
hops = ["over.the.hill", "down.the.lane", "a.narrow.gate | mtu=1280", "home"]
suffix = "story.example"

[dns]
listen = ["198.18.0.1:53", "[2001:db8::1]:53"]
'''
EXTRA_CHAIN = f'\n[[chain]]\naddress = "{EXTRA}"\nhops = ["elsewhere", "there"]\n' \
    'suffix = "story.example"\n'

BIRD_A = f'''router id {A4};
log stderr all;
include "{SNIPPET}";
protocol device {{ }}
protocol kernel {{ learn; ipv4 {{ import where route_chain(); export where source = RTS_BGP; }}; }}
protocol kernel {{ learn; ipv6 {{ import where route_chain(); export where source = RTS_BGP; }}; }}
protocol bgp b4 {{
  local {A4} as {ASN_A}; neighbor {B4} as {ASN_B};
  ipv4 {{ import all; export where route_chain(); }};
}}
protocol bgp b6 {{
  local {A6} as {ASN_A}; neighbor {B6} as {ASN_B};
  ipv6 {{ import all; export where route_chain(); }};
}}
'''

BIRD_B = f'''router id {B4};
log stderr all;
protocol device {{ }}
protocol direct {{ ipv4; ipv6; interface "r0"; }}
protocol kernel {{ ipv4 {{ import none; export where source = RTS_BGP; }}; }}
protocol kernel {{ ipv6 {{ import none; export where source = RTS_BGP; }}; }}
protocol bgp a4 {{
  local {B4} as {ASN_B}; neighbor {A4} as {ASN_A};
  ipv4 {{ import all; export where source = RTS_DEVICE; }};
}}
protocol bgp a6 {{
  local {B6} as {ASN_B}; neighbor {A6} as {ASN_A};
  ipv6 {{ import all; export where source = RTS_DEVICE; }};
}}
'''


class Bird:
    """One BIRD, in a namespace, by pid, with its own control socket."""

    def __init__(self, net: TestNet, ns: str, name: str, config: str, tmp: Path) -> None:
        self.net, self.ns = net, ns
        self.conf, self.socket, self.log = tmp / f"{name}.conf", tmp / f"{name}.ctl", \
            tmp / f"{name}.log"
        self.conf.write_text(config)
        with open(self.log, "w") as out:
            self.proc = net.popen(ns, shutil.which("bird"), "-f", "-c", str(self.conf),
                                  "-s", str(self.socket), stdout=out, stderr=subprocess.STDOUT)

    def birdc(self, *command: str) -> str:
        return sh("birdc", "-s", str(self.socket), *command).stdout

    def prefixes(self) -> set[str]:
        """The prefixes in BIRD's tables (`show route`), both families."""
        return set(re.findall(r"^(\S+/\d+)\s", self.birdc("show", "route"), re.M))

    def established(self) -> bool:
        """Both sessions up; False while BIRD has no control socket yet."""
        assert self.proc.poll() is None, self.log.read_text()
        shown = sh("birdc", "-s", str(self.socket), "show", "protocols", check=False)
        return shown.returncode == 0 and shown.stdout.count("Established") == 2

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()   # by pid: ip netns exec execs bird itself
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def peering(tmp_path_factory):
    """The network above, with both BIRDs up and both sessions established."""
    if shutil.which("bird") is None or shutil.which("birdc") is None:
        cannot_run("needs bird and birdc (Debian's bird2)")
    tmp = tmp_path_factory.mktemp("bgp")
    net = TestNet.create("bgp")
    a = f"rc-bgp-a{os.getpid()}"
    birds: list[Bird] = []
    try:
        net.add_router(a)
        sh("ip", "-n", net.router, "link", "add", "b0", "mtu", str(TUNNEL_MTU), "type", "veth",
           "peer", "name", "a0", "mtu", str(TUNNEL_MTU), "netns", a)
        for ns, dev, v4, v6 in ((net.router, "b0", B4, B6), (a, "a0", A4, A6)):
            sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        birds = [Bird(net, a, "a", BIRD_A, tmp), Bird(net, net.router, "b", BIRD_B, tmp)]
        wait_until(lambda: all(b.established() for b in birds), timeout=60,
                   what="both BGP sessions established: " + birds[0].log.read_text())
        # A has learned the way back to the client from B.
        wait_until(lambda: "192.0.2.0/24 via 198.51.100.2" in net.run(a, "ip", "route").stdout,
                   what="B's networks in A's kernel")
        yield net, a, birds[0], birds[1], tmp
    finally:
        for bird in birds:
            bird.close()
        net.close()


NAMED = '''options {{
  directory "{tmp}";
  pid-file none;
  listen-on {{ 192.0.2.1; }};
  listen-on-v6 {{ none; }};
  recursion yes;
  allow-query {{ any; }};
  allow-recursion {{ any; }};
  dnssec-validation no;
  empty-zones-enable no;   // 2001:db8::/32 and 198.18.0.0/15 are documentation/test nets
}};
zone "0.18.198.in-addr.arpa" {{ type forward; forward only; forwarders {{ 198.18.0.1; }}; }};
zone "0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa" {{
  type forward; forward only; forwarders {{ 2001:db8::1; }};
}};
zone "tale.example" {{ type forward; forward only; forwarders {{ 198.18.0.1; }}; }};
'''


@pytest.fixture
def resolver(peering):
    """B's resolver, named, forwarding the chains' reverse zones to A's
    built-in server; the client's resolv.conf names it (`ip netns exec`
    puts /etc/netns/NS/resolv.conf in place of /etc/resolv.conf)."""
    net, a, bird_a, bird_b, tmp = peering
    if shutil.which("named") is None:
        cannot_run("needs named (Debian's bind9)")
    conf = tmp / "named.conf"
    conf.write_text(NAMED.format(tmp=tmp))
    etc = Path("/etc/netns") / net.client
    etc.mkdir(parents=True)
    (etc / "resolv.conf").write_text("nameserver 192.0.2.1\noptions timeout:2 attempts:2\n")
    log = open(tmp / "named.log", "w")
    named = net.popen(net.router, shutil.which("named"), "-g", "-n", "1", "-c", str(conf),
                      stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "running" in (tmp / "named.log").read_text(), timeout=20,
                   what="named running: " + (tmp / "named.log").read_text())
        yield named
    finally:
        named.terminate()   # by pid
        try:
            named.wait(10)
        except subprocess.TimeoutExpired:
            named.kill()
            named.wait()
        log.close()
        shutil.rmtree(etc)


def announced(bird: Bird) -> set[str]:
    return bird.prefixes() & {PREFIX4, PREFIX6, EXTRA_PREFIX}


def start(net: TestNet, a: str, tmp: Path, chains: str = CHAINS) -> Daemon:
    config = tmp / "rc.toml"
    config.write_text(chains)
    daemon = Daemon(net, "--config", str(config), ns=a)
    daemon.wait_for("READY=1")
    return daemon


def test_b_learns_the_chains_and_the_host_behind_it_traces_the_story(peering):
    """B's BIRD has both prefixes from A over BGP, B's kernel routes them to
    A, and a traceroute from the client walks B, A, then the story. On A,
    each chain's prefix route is route-chain's (proto 151), the only one:
    the kernel added none of its own."""
    net, a, bird_a, bird_b, tmp = peering
    with start(net, a, tmp) as daemon:
        wait_until(lambda: announced(bird_b) == {PREFIX4, PREFIX6},
                   what="the chains in B's table")
        shown = bird_b.birdc("show", "route", "all", PREFIX4)
        assert f"BGP.as_path: {ASN_A}" in shown, shown
        routes = net.run(a, "ip", "-4", "route", "show", "table", "all").stdout \
            + net.run(a, "ip", "-6", "route", "show", "table", "all").stdout
        mine = [line.strip() for line in routes.splitlines()
                if line.startswith((PREFIX4, PREFIX6))]
        assert mine == [f"{PREFIX4} dev route-chain proto 151",
                        f"{PREFIX6} dev route-chain proto 151 metric 1024 pref medium"], routes
        assert hops(net, "198.18.0.5") == ["192.0.2.1", A4, "198.18.0.2", "198.18.0.3",
                                           "198.18.0.4", "198.18.0.5"]
        assert hops(net, "2001:db8::5", six=True) == [
            "2001:db8:ff::1", A6, "2001:db8::2", "2001:db8::3", "2001:db8::4", "2001:db8::5"]
        assert daemon.stop() == 0, daemon.output()


def withdrawn_after(bird: Bird, since: float) -> float:
    """Seconds from `since` until B has none of the prefixes (fails past the bound)."""
    deadline = since + WITHDRAWN_WITHIN
    while announced(bird):
        assert time.monotonic() < deadline, \
            f"still announced {WITHDRAWN_WITHIN}s later: {bird.birdc('show', 'route')}"
        time.sleep(0.05)
    return time.monotonic() - since


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGABRT], ids=["kill-9", "watchdog-abort"])
def test_a_killed_daemon_withdraws_and_a_restart_announces_again(peering, sig):
    """A killed daemon takes its TUN and its routes along: B's table loses
    the prefixes within 5 s with no help from anyone; the next daemon
    brings them back. SIGKILL, and SIGABRT, what systemd's watchdog sends
    a hung daemon: it ends it at once (nothing catches or blocks it)."""
    net, a, bird_a, bird_b, tmp = peering
    no_core = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, no_core[1]))  # no core file from the test
    try:
        daemon = start(net, a, tmp)
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, no_core)
    try:
        wait_until(lambda: announced(bird_b) == {PREFIX4, PREFIX6}, what="announced")
        killed = time.monotonic()
        os.kill(daemon.proc.pid, sig)
        withdrawn_after(bird_b, killed)
        assert daemon.proc.wait(10) == -sig
        assert "route-chain" not in net.run(a, "ip", "link").stdout
    finally:
        daemon.close()
    with start(net, a, tmp) as again:
        wait_until(lambda: announced(bird_b) == {PREFIX4, PREFIX6}, what="announced again")
        assert hops(net, "198.18.0.3") == ["192.0.2.1", A4, "198.18.0.2", "198.18.0.3"]
        assert again.stop() == 0, again.output()


def test_a_stopping_daemon_withdraws_before_it_stops(peering):
    """SIGTERM: the daemon deletes its routes itself, before its TUN goes
    (the kernel reports each deletion, which it never does for IPv4 routes
    that go with their link), B withdraws, and the daemon exits 0."""
    net, a, bird_a, bird_b, tmp = peering
    with start(net, a, tmp) as daemon:
        wait_until(lambda: announced(bird_b) == {PREFIX4, PREFIX6}, what="announced")
        monitor = net.popen(a, "ip", "monitor", "route", "link", stdout=subprocess.PIPE,
                            text=True)
        try:
            time.sleep(0.5)   # subscribed before the stop
            stopped = time.monotonic()
            assert daemon.stop() == 0, daemon.output()
            withdrawn_after(bird_b, stopped)
            time.sleep(0.3)
        finally:
            monitor.terminate()   # by pid
            events = monitor.communicate(timeout=10)[0].splitlines()
    deleted = [i for i, e in enumerate(events) if e.startswith("Deleted ")]
    route4 = [i for i in deleted if events[i].startswith(f"Deleted {PREFIX4} dev route-chain "
                                                         "proto 151")]
    route6 = [i for i in deleted if events[i].startswith(f"Deleted {PREFIX6} dev route-chain "
                                                         "proto 151")]
    link = [i for i in deleted if ": route-chain:" in events[i]]
    assert route4 and route6 and link and max(route4 + route6) < min(link), "\n".join(events)


def test_reload_adds_and_withdraws_a_chains_announcement(peering):
    """A reload that adds a chain announces its prefix; one that drops it
    withdraws it; the others stay announced throughout."""
    net, a, bird_a, bird_b, tmp = peering
    with start(net, a, tmp) as daemon:
        wait_until(lambda: announced(bird_b) == {PREFIX4, PREFIX6}, what="announced")
        (tmp / "rc.toml").write_text(CHAINS + EXTRA_CHAIN)
        daemon.reload()
        wait_until(lambda: announced(bird_b) == {PREFIX4, PREFIX6, EXTRA_PREFIX},
                   what="the new chain announced")
        assert hops(net, "198.19.0.3") == ["192.0.2.1", A4, "198.19.0.2", "198.19.0.3"]
        (tmp / "rc.toml").write_text(CHAINS)
        daemon.reload()
        wait_until(lambda: announced(bird_b) == {PREFIX4, PREFIX6},
                   what="the dropped chain withdrawn")
        assert daemon.stop() == 0, daemon.output()


def test_the_host_behind_b_reads_the_story_through_its_resolver(peering, resolver):
    """No -n: the client asks B's resolver, which forwards the chains'
    reverse zones to A's built-in server (reached by the BGP routes)."""
    net, a, bird_a, bird_b, tmp = peering
    with start(net, a, tmp) as daemon:
        wait_until(lambda: announced(bird_b) == {PREFIX4, PREFIX6}, what="announced")
        story = ["over.the.hill.story.example", "down.the.lane.story.example",
                 "a.narrow.gate.story.example", "home.story.example"]
        for dest, six in (("198.18.0.5", False), ("2001:db8::5", True)):
            assert hops(net, dest, six=six, names=True)[2:] == story, daemon.output()
        assert daemon.stop() == 0, daemon.output()


def test_the_host_behind_b_traces_a_chapter_by_name_through_its_resolver(peering, resolver):
    """The chains' forward name and a chapter, resolved by B's resolver
    (forwarding tale.example to A's built-in server): `traceroute
    midway.tale.example` shows the story from line 3 right behind the two
    routers, ending at the chapter's address with the last line's name;
    `traceroute tale.example` still shows it whole."""
    net, a, bird_a, bird_b, tmp = peering
    named = CHAINS.replace('suffix = "story.example"\n',
                           'suffix = "story.example"\nname = "tale.example"\n'
                           'chapters = { midway = 3 }\n')
    with start(net, a, tmp, named) as daemon:
        wait_until(lambda: announced(bird_b) == {PREFIX4, PREFIX6}, what="announced")
        story = ["over.the.hill.story.example", "down.the.lane.story.example",
                 "a.narrow.gate.story.example", "home.story.example"]
        for six in (False, True):
            assert hops(net, "tale.example", six=six, names=True)[2:] == story, daemon.output()
            assert hops(net, "midway.tale.example", six=six, names=True)[2:] == story[2:], \
                daemon.output()
        trace = net.run(net.client, "traceroute", "-4", "-q", "1", "-w", "1", "-m", "10",
                        "midway.tale.example", timeout=120).stdout
        assert trace.splitlines()[0].startswith("traceroute to midway.tale.example "
                                                "(198.18.0.6)"), trace
        assert re.search(r"^\s*4\s+home\.story\.example \(198\.18\.0\.6\)", trace,
                         re.MULTILINE), trace
        assert daemon.stop() == 0, daemon.output()


@pytest.mark.parametrize("family, dest, narrow, mtu", [
    (4, "198.18.0.5", "198.18.0.4", 1300),
    (6, "2001:db8::5", "2001:db8::4", 1280),
])
def test_tracepath_from_b_shows_the_tunnel_and_the_narrow_hop(peering, family, dest, narrow,
                                                              mtu):
    """From B the path starts at the tunnel's 1420; from the host behind B,
    B itself says 1420 (Fragmentation Needed / Packet Too Big for the
    link to A); both then meet the story's narrow gate and arrive."""
    net, a, bird_a, bird_b, tmp = peering
    with start(net, a, tmp) as daemon:
        wait_until(lambda: announced(bird_b) == {PREFIX4, PREFIX6}, what="announced")
        for ns in (net.router, net.client):
            net.run(ns, "ip", f"-{family}", "route", "flush", "cache")
        out = net.run(net.router, "tracepath", f"-{family}", "-n", dest).stdout
        assert re.search(rf"^\s*1\?: \[LOCALHOST\]\s.*pmtu {TUNNEL_MTU}\s*$", out, re.M), out
        assert re.search(rf"^\s*\d+:\s+{re.escape(narrow)}\s.*pmtu {mtu}\s*$", out, re.M), out
        assert f"Resume: pmtu {mtu}" in out, out
        # What B's own run learned (a PMTU exception to dest) would make B
        # send the client 1280 instead of the tunnel's 1420.
        net.run(net.router, "ip", f"-{family}", "route", "flush", "cache")
        out = net.run(net.client, "tracepath", f"-{family}", "-n", dest).stdout
        gateway = "192.0.2.1" if family == 4 else "2001:db8:ff::1"
        assert re.search(rf"^\s*\d+:\s+{re.escape(gateway)}\s.*pmtu {TUNNEL_MTU}\s*$", out,
                         re.M), out
        assert re.search(rf"^\s*\d+:\s+{re.escape(narrow)}\s.*pmtu {mtu}\s*$", out, re.M), out
        assert re.search(rf"^\s*\d+:\s+{re.escape(dest)}\s.*reached\s*$", out, re.M), out
        assert daemon.stop() == 0, daemon.output()
