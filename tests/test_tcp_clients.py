"""TCP clients against destinations that answer like servers (`tcp`,
`tcp_open`, `udp`): real traceroute -T, tcptraceroute, mtr --tcp, hping3
and nmap in network namespaces. mtr --tcp connect()s: the kernel's
handshake completes (its ACK is taken silently) and mtr's close is reset.

    ns "client" --veth-- ns "router" (gateway, hop 1) -- TUN "route-chain"
                                     198.18.0.1/24:  a, b, www (198.18.0.4)
                                     tcp_open = "80", tcp = "prohibited"
                                     2001:db8::1/64: a, b, www (2001:db8::4)
                                     tcp = "rst", udp = "silent"
                                     198.18.1.1/24:  a, b, db (198.18.1.4)
                                     tcp closed, udp = "prohibited"
                                     198.18.2.1/24:  a, b, fw (198.18.2.4)
                                     tcp = "silent"
"""

from __future__ import annotations

import re
import shutil
import sys

import pytest

from netns import CHAIN4, CHAIN6, Daemon, TestNet

pytestmark = pytest.mark.netns

DEST4, DEST6, CLOSED, SILENT = "198.18.0.4", "2001:db8::4", "198.18.1.4", "198.18.2.4"
CONFIG = (f'[[chain]]\naddress = "{CHAIN4}"\ntcp_open = "80"\ntcp = "prohibited"\n'
          'hops = ["a", "b", "www"]\n\n'
          f'[[chain]]\naddress = "{CHAIN6}"\ntcp = "rst"\nudp = "silent"\n'
          'hops = ["a", "b", "www"]\n\n'
          '[[chain]]\naddress = "198.18.1.1/24"\nudp = "prohibited"\nhops = ["a", "b", "db"]\n\n'
          '[[chain]]\naddress = "198.18.2.1/24"\ntcp = "silent"\nhops = ["a", "b", "fw"]\n\n'
          '[metrics]\nlisten = "127.0.0.1:9851"\n')
SCRAPE = ("import urllib.request; print(urllib.request.urlopen("
          "'http://127.0.0.1:9851/metrics', timeout=5).read().decode())")


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed (scripts/test installs it)", pytrace=False)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    conf = tmp_path_factory.mktemp("tcp") / "rc.toml"
    conf.write_text(CONFIG)
    with TestNet.create("tc") as net, Daemon(net, "--config", str(conf)) as d:
        d.wait_for("READY=1")
        yield net


def run(net, *args: str) -> str:
    done = net.run(net.client, *args, check=False, timeout=60)
    return done.stdout + done.stderr


def test_traceroute_tcp_reaches_an_open_port(net):
    """Hop 1 the gateway, then a, b and the destination, which answers the
    SYN (traceroute -T prints its address, no flag)."""
    out = run(net, "traceroute", "-T", "-p", "80", "-n", "-q", "1", "-w", "2", DEST4)
    last = out.strip().splitlines()[-1]
    assert re.match(rf"\s*4\s+{re.escape(DEST4)}\s+[\d.]+ ms$", last), out


def test_traceroute_tcp_prohibited_port_shows_x(net):
    out = run(net, "traceroute", "-T", "-p", "81", "-n", "-q", "1", "-w", "2", DEST4)
    assert re.search(rf"\s4\s+{re.escape(DEST4)}\s+[\d.]+ ms !X$", out, re.M), out


def test_tcptraceroute_prints_open(net):
    need("tcptraceroute")
    out = run(net, "tcptraceroute", "-n", "-q", "1", "-w", "2", DEST4, "80")
    assert re.search(rf"^\s*4\s+{re.escape(DEST4)} \[open\]", out, re.M), out


def counted(net) -> dict[tuple[str, str], float]:
    """(sample, kind or reason) -> the daemon's counter, summed over queues."""
    from test_metrics import samples
    out: dict[tuple[str, str], float] = {}
    text = net.run(net.router, sys.executable, "-c", SCRAPE).stdout
    for (name, labels), value in samples(text).items():
        label = dict(labels).get("kind") or dict(labels).get("reason") or ""
        out[name, label] = out.get((name, label), 0) + value
    return out


def test_mtr_tcp_completes_at_the_destination(net):
    """mtr connect()s: each SYN-ACK is counted as one, and the kernel's ACK
    that completes each handshake is taken (counted as a drop), not reset."""
    before = counted(net)
    out = run(net, "mtr", "--tcp", "-P", "80", "-r", "-n", "-c", "2", "-i", "0.2", DEST4)
    hosts = [line.split()[1] for line in out.splitlines() if re.match(r"\s*\d+\.\|--", line)]
    assert hosts == ["192.0.2.1", "198.18.0.2", "198.18.0.3", DEST4], out
    assert "error" not in out, out
    after = counted(net)

    def grew(name: str, label: str) -> float:
        return after.get((name, label), 0) - before.get((name, label), 0)

    syn_acks = grew("routechain_replies_total", "tcp_syn_ack")
    assert syn_acks >= 2 and grew("routechain_drops_total", "tcp_handshake") == syn_acks


def test_hping3_traceroute_shows_syn_ack(net):
    need("hping3")
    out = run(net, "timeout", "20", "hping3", "--traceroute", "-S", "-p", "80", "-c", "5",
              "-i", "u300000", "-n", DEST4)
    assert re.search(rf"ip={re.escape(DEST4)} .*flags=SA", out), out


def test_nmap_traceroute_shows_the_port_open_and_the_hops(net):
    need("nmap")
    out = run(net, "nmap", "-n", "-Pn", "-sS", "-p", "80,81", "--traceroute", DEST4)
    assert re.search(r"^80/tcp\s+open\b", out, re.M), out
    assert re.search(r"^81/tcp\s+filtered\b", out, re.M), out     # admin prohibited
    hops = re.findall(r"^(\d+)\s+[\d.]+ ms\s+(\S+)$", out, re.M)
    assert hops[-1] == ("4", DEST4) and hops[1] == ("2", "198.18.0.2"), out


def test_bare_rst_over_ipv6_seen_by_traceroute(net):
    """tcp = "rst": the destination still ends traceroute -T (a RST is an
    answer to a raw-socket client)."""
    out = run(net, "traceroute", "-6", "-T", "-p", "443", "-n", "-q", "1", "-w", "2", DEST6)
    last = out.strip().splitlines()[-1]
    assert re.match(rf"\s*4\s+{re.escape(DEST6)}\s+[\d.]+ ms$", last), out


def test_silent_udp_ends_in_stars(net):
    out = run(net, "traceroute", "-6", "-U", "-n", "-q", "1", "-w", "1", "-m", "5", DEST6)
    lines = out.strip().splitlines()
    assert re.match(r"\s*5\s+\*$", lines[-1]) and DEST6 not in out.split("\n", 1)[1], out


def test_tcptraceroute_prints_closed(net):
    need("tcptraceroute")
    out = run(net, "tcptraceroute", "-n", "-q", "1", "-w", "2", CLOSED, "80")
    assert re.search(rf"^\s*4\s+{re.escape(CLOSED)} \[closed\]", out, re.M), out


def test_prohibited_udp_shows_x(net):
    out = run(net, "traceroute", "-U", "-n", "-q", "1", "-w", "2", CLOSED)
    assert re.search(rf"^\s*4\s+{re.escape(CLOSED)}\s+[\d.]+ ms !X$", out, re.M), out


def test_silent_tcp_port_ends_in_stars(net):
    """The hops in front answer; the destination never does."""
    out = run(net, "traceroute", "-T", "-p", "80", "-n", "-q", "1", "-w", "1", "-m", "5", SILENT)
    lines = out.strip().splitlines()
    assert re.match(r"\s*3\s+198\.18\.2\.3\s", lines[3]), out
    assert [line.split() for line in lines[4:]] == [["4", "*"], ["5", "*"]], out


def test_nmap_sees_a_silent_port_filtered_and_a_closed_one_closed(net):
    need("nmap")
    out = run(net, "nmap", "-n", "-Pn", "-sS", "-p", "80", "--max-retries", "1", SILENT, CLOSED)
    reports = {part.split("\n", 1)[0]: part for part in out.split("Nmap scan report for ")[1:]}
    assert re.search(r"^80/tcp\s+filtered\b", reports[SILENT], re.M), out
    assert re.search(r"^80/tcp\s+closed\b", reports[CLOSED], re.M), out
