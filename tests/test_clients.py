"""Real traceroute clients through the daemon, over IPv4 and IPv6.

The network (tests/netns.py): client -- veth -- router (forwarding on, the
daemon's TUN holding 198.18.0.1/24 and 2001:db8::1/64). Every client must
show exactly the gateway, host+1 .. host+5 and stop at the destination
host+5, which is hop 6. A tshark capture of the whole run on the client's
side must show no malformed reply and no bad checksum.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import time

import pytest

from netns import CHAIN4, CHAIN6, GATEWAY4, GATEWAY6, Daemon, TestNet

pytestmark = pytest.mark.netns

DEST4, DEST6 = "198.18.0.6", "2001:db8::6"
HOPS = 6


def expected_path(family: int) -> list[str]:
    """Gateway, then host+1 .. host+5: the last is the destination."""
    host = ipaddress.ip_interface(CHAIN4 if family == 4 else CHAIN6).ip
    return [GATEWAY4 if family == 4 else GATEWAY6] + [str(host + k) for k in range(1, HOPS)]


@pytest.fixture(scope="module")
def net():
    with TestNet.create("cl") as net:
        yield net


@pytest.fixture(scope="module")
def capture(net, tmp_path_factory):
    """tshark on the client's veth for the whole module."""
    if shutil.which("tshark") is None:
        pytest.fail("tshark is not installed (scripts/test installs it)")
    pcap = tmp_path_factory.mktemp("pcap") / "clients.pcapng"
    proc = net.popen(net.client, "tshark", "-q", "-i", "c0", "-w", str(pcap),
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # tshark says "Capturing on 'c0'" once the capture is live.
    deadline = time.monotonic() + 20
    seen = ""
    while "Capturing on" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()
    assert "Capturing on" in seen, seen
    yield {"proc": proc, "pcap": pcap}
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def daemon(net, capture):
    with Daemon(net, CHAIN4, CHAIN6, "--queues", "2") as d:
        d.wait_for("READY=1")
        yield d


def hops_of(output: str, pattern: str) -> list[list[str]]:
    """Per hop line, the addresses it shows, in hop order."""
    hops: dict[int, list[str]] = {}
    for line in output.splitlines():
        m = re.match(pattern, line)
        if not m:
            continue
        addrs = re.findall(r"(?<![\w:.])(\d+\.\d+\.\d+\.\d+|[0-9a-f]*:[0-9a-f:]+)(?![\w:.])",
                           m.group(2))
        hops.setdefault(int(m.group(1)), []).extend(a for a in addrs if a not in hops.get(
            int(m.group(1)), []))
    return [hops[k] for k in sorted(hops)]


TRACEROUTE = r"^\s*(\d+)\s+(.*)$"
TRACEPATH = r"^\s*(\d+):\s+(\S+.*)$"
MTR = r"^\s*(\d+)\.\|--\s+(\S+)"

# (id, family, command, hop-line pattern)
CLIENTS = [
    ("traceroute-udp", 4, ["traceroute", "-n", "-q", "1", "-w", "2"], TRACEROUTE),
    ("traceroute-icmp", 4, ["traceroute", "-n", "-q", "1", "-w", "2", "-I"], TRACEROUTE),
    ("traceroute-tcp", 4, ["traceroute", "-n", "-q", "1", "-w", "2", "-T"], TRACEROUTE),
    ("traceroute-udp53", 4, ["traceroute", "-n", "-q", "1", "-w", "2", "-U"], TRACEROUTE),
    ("traceroute6-udp", 6, ["traceroute", "-6", "-n", "-q", "1", "-w", "2"], TRACEROUTE),
    ("traceroute6-icmp", 6, ["traceroute", "-6", "-n", "-q", "1", "-w", "2", "-I"], TRACEROUTE),
    ("traceroute6-tcp", 6, ["traceroute", "-6", "-n", "-q", "1", "-w", "2", "-T"], TRACEROUTE),
    ("traceroute6-udp53", 6, ["traceroute", "-6", "-n", "-q", "1", "-w", "2", "-U"], TRACEROUTE),
    ("tracepath", 4, ["tracepath", "-n", "-m", "12"], TRACEPATH),
    ("tracepath6", 6, ["tracepath", "-6", "-n", "-m", "12"], TRACEPATH),
    ("mtr-icmp", 4, ["mtr", "--report", "-n", "-c", "2"], MTR),
    ("mtr-udp", 4, ["mtr", "--report", "-n", "-c", "2", "-u"], MTR),
    ("mtr-tcp", 4, ["mtr", "--report", "-n", "-c", "2", "-T"], MTR),
    ("mtr6-icmp", 6, ["mtr", "-6", "--report", "-n", "-c", "2"], MTR),
    ("mtr6-udp", 6, ["mtr", "-6", "--report", "-n", "-c", "2", "-u"], MTR),
    ("mtr6-tcp", 6, ["mtr", "-6", "--report", "-n", "-c", "2", "-T"], MTR),
]


@pytest.mark.parametrize("family,command,pattern", [c[1:] for c in CLIENTS],
                         ids=[c[0] for c in CLIENTS])
def test_client_shows_exactly_the_chain(net, daemon, family, command, pattern):
    dest = DEST4 if family == 4 else DEST6
    out = net.run(net.client, *command, dest, timeout=90).stdout
    hops = hops_of(out, pattern)
    assert hops == [[a] for a in expected_path(family)], out
    assert expected_path(family)[-1] == dest


def test_traceroute_back_sees_a_consistent_return_path(net, daemon):
    """Reply TTLs fall with the hop's distance: --back marks no hop as asymmetric."""
    out = net.run(net.client, "traceroute", "-n", "-q", "1", "-w", "2", "--back", DEST4).stdout
    assert "'-" not in out, out
    assert hops_of(out, TRACEROUTE)[-1] == [DEST4], out


@pytest.mark.parametrize("family", [4, 6])
def test_ping_destination_answers(net, daemon, family):
    dest = DEST4 if family == 4 else DEST6
    out = net.run(net.client, "ping", f"-{family}", "-c", "2", "-i", "0.2", "-W", "2",
                  dest).stdout
    assert "2 received" in out, out


@pytest.mark.parametrize("family", [4, 6])
def test_ping_large_payload_comes_back_whole(net, daemon, family):
    dest = DEST4 if family == 4 else DEST6
    out = net.run(net.client, "ping", f"-{family}", "-c", "1", "-W", "2", "-s", "1200",
                  dest).stdout
    assert re.search(rf"1208 bytes from {re.escape(dest)}", out), out


@pytest.mark.parametrize("family", [4, 6])
def test_ping_low_ttl_gets_time_exceeded_from_that_hop(net, daemon, family):
    """TTL 3: the router takes one, so hop host+2 says Time Exceeded."""
    dest = DEST4 if family == 4 else DEST6
    out = net.run(net.client, "ping", f"-{family}", "-c", "1", "-W", "2", "-t", "3", dest,
                  check=False).stdout
    hop = expected_path(family)[2]
    assert re.search(rf"From {re.escape(hop)}.*Time (to live exceeded|exceeded: Hop limit)", out,
                     re.IGNORECASE), out


def test_counters_logged_on_sigusr1(daemon):
    out = daemon.log_counters()
    assert re.search(r"total: \d+ received, \d+ replies", out), out
    assert "time_exceeded=" in out and "echo_reply=" in out, out


def test_capture_has_no_malformed_reply_and_no_bad_checksum(net, daemon, capture):
    """Runs last: everything above was captured; tshark judges the replies."""
    time.sleep(0.5)
    capture["proc"].terminate()
    capture["proc"].wait(10)
    replies = f"(ip.src == {CHAIN4.split('/')[0]}/24 || ipv6.src == {CHAIN6.split('/')[0]}/64)"
    bad = ('_ws.malformed || _ws.expert.severity == "Error" || ip.checksum.status == "Bad" || '
           'icmp.checksum.status == "Bad" || icmpv6.checksum.status == "Bad" || '
           'tcp.checksum.status == "Bad" || udp.checksum.status == "Bad"')
    prefs = ["-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
             "-o", "udp.check_checksum:TRUE"]
    pcap = str(capture["pcap"])
    total = subprocess.run(["tshark", "-r", pcap, *prefs, "-Y", replies],
                           capture_output=True, text=True, timeout=120)
    assert total.returncode == 0, total.stderr
    assert len(total.stdout.splitlines()) > 200, "the capture holds too few replies"
    found = subprocess.run(["tshark", "-r", pcap, *prefs, "-Y", f"{replies} && ({bad})"],
                           capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    assert found.stdout == "", found.stdout


def test_sigterm_removes_everything_and_exits_zero(net, daemon):
    assert daemon.stop() == 0, daemon.output()
    links = net.run(net.router, "ip", "-o", "link").stdout
    assert "route-chain" not in links, links
    routes = net.run(net.router, "ip", "-o", "route").stdout
    assert "198.18.0.0" not in routes, routes
