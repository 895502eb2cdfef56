"""The built-in authoritative server (routechain.dns), asked by a real dig,
and compared with a real knotd serving the zone files `route-chain zone`
writes: the same questions get the same answers.

    dig ──UDP/TCP──▶ 127.0.0.1:P, [::1]:P   routechain.dns.Server  (zone.build)
    dig ──UDP/TCP──▶ 127.0.0.1:K, [::1]:K   knotd  (zone.export files, tmp dirs)

Everything stays on loopback; every sending loop is bounded; only processes
this file starts are stopped, by their pid.
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from configfile import refusal
from conftest import cannot_run
from netns import knot_head
from routechain import dns as rdns
from routechain import dnsanswer
from routechain import config, zone
from routechain.chain import Chain, Hop, parse_prefix
from routechain.config import Config, DnsSettings
from routechain.errors import SetupError

NOW = 1_700_000_000
NS = tuple(f"ns-{k}-{'x' * 40}.example.net" for k in range(12))  # an NS answer > 512 octets


def chain(prefix: str, names, suffix=None) -> Chain:
    hops = tuple(Hop(silent=True) if n == "*" else Hop(name=n) for n in names)
    return Chain(parse_prefix(prefix), hops, where=prefix, suffix=suffix)


CONFIG = Config(chains=(
    chain("198.51.100.1/24", ["Once.upon.a.time", "a.little.Packet", "*", None, "The.end"]),
    chain("192.0.2.33/27", ["Far.away.story.example.net", "*", "xn--caf-dma.story.example.net"]),
    chain("2001:db8:5::1/64", ["One", "Two", "*", "Three"]),
), dns=DnsSettings(ns=NS, soa_rname="hostmaster.example.net"))


def free_port() -> int:
    """A port free for UDP and TCP on both loopbacks (bounded tries)."""
    rng = random.Random()
    for _ in range(50):
        port = rng.randrange(20000, 60000)
        socks = []
        try:
            for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(family, kind)
                    socks.append(s)
                    s.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port found in 50 tries")


@pytest.fixture(scope="module")
def zones():
    return zone.build(CONFIG, now=NOW)


# Rate limiting off where a test asks faster than a resolver would: its own
# tests are in test_dns_limits.py.
NO_RRL = DnsSettings(rate_limit=0, rate_limit_errors=0)


@pytest.fixture(scope="module")
def server(zones):
    port = free_port()
    srv = rdns.Server(zones, [("127.0.0.1", port), ("::1", port)], settings=NO_RRL)
    srv.start()
    yield srv
    srv.stop()


def need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        cannot_run(f"{tool} is not installed ({package})")


def dig(port: int, *args: str, server: str = "127.0.0.1", check: bool = True) -> dict:
    """Run dig and parse what it prints into status, flags and sections."""
    need("dig", "bind9-dnsutils")
    done = subprocess.run(["dig", f"@{server}", "-p", str(port), "+time=2", "+tries=1",
                           "+nocookie", *args], capture_output=True, text=True, timeout=30)
    out = {"status": None, "flags": set(), "answer": [], "authority": [], "edns": None,
           "ede": None, "text": done.stdout}
    section = None
    for line in done.stdout.splitlines():
        if "->>HEADER<<-" in line:
            out["status"] = line.split("status: ")[1].split(",")[0]
        elif line.startswith(";; flags:"):
            out["flags"] = set(line.split(":")[1].split(";")[0].split())
        elif line.startswith("; EDNS:"):
            out["edns"] = int(line.rsplit("udp: ", 1)[1])
        elif line.startswith("; EDE:"):
            out["ede"] = line[len("; EDE: "):]
        elif line.startswith(";; ") and line.endswith("SECTION:"):
            section = line[3:-len(" SECTION:")].lower()
        elif line and not line.startswith(";") and section in ("answer", "authority"):
            out[section].append(" ".join(line.split()))
    assert out["status"] is not None or not check, done.stdout + done.stderr
    return out


# --- the built-in server, by dig -------------------------------------------

PTRS = [
    ("-x 198.51.100.2", "2.100.51.198.in-addr.arpa. 3600 IN PTR Once.upon.a.time."),
    ("-x 198.51.100.3", "3.100.51.198.in-addr.arpa. 3600 IN PTR a.little.Packet."),
    ("-x 198.51.100.6", "6.100.51.198.in-addr.arpa. 3600 IN PTR The.end."),
    ("-x 2001:db8:5::2",
     "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 3600 IN PTR One."),
    ("-x 2001:db8:5::5",
     "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 3600 IN PTR "
     "Three."),
    ("34.32-27.2.0.192.in-addr.arpa PTR",
     "34.32-27.2.0.192.in-addr.arpa. 3600 IN PTR Far.away.story.example.net."),
]


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("question,record", PTRS)
def test_dns_ptr_answers(server, transport, host, question, record):
    r = dig(server.addresses[0][1], transport, *question.split(), server=host)
    assert r["status"] == "NOERROR"
    assert r["answer"] == [record]
    assert "aa" in r["flags"] and "ra" not in r["flags"] and "tc" not in r["flags"]
    assert r["authority"] == []


def test_dns_rfc2317_plain_name_is_cname_then_ptr(server):
    r = dig(server.addresses[0][1], "-x", "192.0.2.36")
    assert r["status"] == "NOERROR" and "aa" in r["flags"]
    assert r["answer"] == [
        "36.2.0.192.in-addr.arpa. 3600 IN CNAME 36.32-27.2.0.192.in-addr.arpa.",
        "36.32-27.2.0.192.in-addr.arpa. 3600 IN PTR xn--caf-dma.story.example.net."]


@pytest.mark.parametrize("question", ["-x 198.51.100.4", "-x 198.51.100.99",
                                      "-x 2001:db8:5::4", "-x 192.0.2.35",
                                      "35.32-27.2.0.192.in-addr.arpa PTR"])
def test_dns_silent_unnamed_and_absent_hops_are_nxdomain_with_soa(server, question):
    r = dig(server.addresses[0][1], *question.split())
    assert r["status"] == "NXDOMAIN" and "aa" in r["flags"]
    assert r["answer"] == []
    soa, = r["authority"]
    assert " 300 IN SOA " in soa  # RFC 2308: min(SOA TTL, MINIMUM)
    assert f"hostmaster.example.net. {NOW} 3600 600 604800 300" in soa


def test_dns_existing_name_without_the_type_is_nodata(server):
    r = dig(server.addresses[0][1], "2.100.51.198.in-addr.arpa", "TXT")
    assert r["status"] == "NOERROR" and r["answer"] == [] and len(r["authority"]) == 1


def test_dns_empty_non_terminal_is_nodata(server):
    """RFC 8020: a name with names below it exists."""
    r = dig(server.addresses[0][1], "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
            "PTR")
    assert r["status"] == "NOERROR" and r["answer"] == [] and "SOA" in r["authority"][0]


def test_dns_soa_and_ns_at_every_apex(server, zones):
    for z in zones:
        origin = z.origin.to_text()
        soa = dig(server.addresses[0][1], origin, "SOA", "+tcp")
        assert soa["status"] == "NOERROR" and len(soa["answer"]) == 1 and "aa" in soa["flags"]
        ns = dig(server.addresses[0][1], origin, "NS", "+tcp")
        assert sorted(a.split()[-1] for a in ns["answer"]) == sorted(f"{n}." for n in NS)


def test_dns_refused_outside_the_zones(server):
    for question in (["example.com", "A"], ["-x", "203.0.113.1"], ["arpa", "SOA"]):
        r = dig(server.addresses[0][1], *question)
        assert r["status"] == "REFUSED" and "aa" not in r["flags"] and r["answer"] == []
        assert r["ede"] is not None and r["ede"].startswith("20")


def test_dns_edns_answered_only_when_asked(server):
    port = server.addresses[0][1]
    assert dig(port, "-x", "198.51.100.2")["edns"] == rdns.PAYLOAD_MAX
    assert dig(port, "+noedns", "-x", "198.51.100.2")["edns"] is None
    assert "BADVERS" == dig(port, "+edns=1", "+noednsneg", "-x", "198.51.100.2")["status"]


def test_dns_truncates_over_udp_and_answers_over_tcp(server):
    port = server.addresses[0][1]
    small = dig(port, "+noedns", "+ignore", "100.51.198.in-addr.arpa", "NS")
    assert "tc" in small["flags"] and small["answer"] == []
    edns = dig(port, "+bufsize=1232", "100.51.198.in-addr.arpa", "NS")
    assert "tc" not in edns["flags"] and len(edns["answer"]) == len(NS)
    tcp = dig(port, "+noedns", "+tcp", "100.51.198.in-addr.arpa", "NS")
    assert "tc" not in tcp["flags"] and len(tcp["answer"]) == len(NS)
    followed = dig(port, "+noedns", "100.51.198.in-addr.arpa", "NS")  # dig retries on TCP
    assert len(followed["answer"]) == len(NS)


def test_dns_rd_is_copied_and_never_ra(server):
    port = server.addresses[0][1]
    assert {"qr", "aa", "rd"} == dig(port, "+rec", "-x", "198.51.100.2")["flags"]
    assert {"qr", "aa"} == dig(port, "+norec", "-x", "198.51.100.2")["flags"]


# --- wire-level behaviour ---------------------------------------------------

def udp_exchange(port: int, wire: bytes, expect_reply: bool = True) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0 if expect_reply else 0.3)
        s.sendto(wire, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


def test_dns_malformed_queries_are_counted_and_dropped_or_formerr(server):
    port = server.addresses[0][1]
    before = server.counters()
    assert udp_exchange(port, b"\x12\x34\x01", expect_reply=False) is None
    # A header that promises a question the message does not hold.
    reply = udp_exchange(port, struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x07abc")
    assert reply is not None
    header = struct.unpack("!HHHHHH", reply[:12])
    assert header[0] == 0xBEEF and header[1] & 0x8000 and header[1] & 0xF == dns.rcode.FORMERR
    assert header[1] & 0x0100  # RD kept
    # A response is never answered (no loops between servers).
    response = dns.message.make_response(dns.message.make_query("example.com", "A"))
    assert udp_exchange(port, response.to_wire(), expect_reply=False) is None
    after = server.counters()
    assert after["drop:malformed"] == before["drop:malformed"] + 1
    assert after["rcode:FORMERR"] == before["rcode:FORMERR"] + 1
    assert after["drop:response"] == before["drop:response"] + 1


def test_dns_other_opcodes_are_notimp(server):
    q = dns.message.make_query("2.100.51.198.in-addr.arpa", "PTR")
    q.set_opcode(dns.opcode.STATUS)
    reply = dns.message.from_wire(udp_exchange(server.addresses[0][1], q.to_wire()))
    assert reply.rcode() == dns.rcode.NOTIMP


def test_dns_notify_to_the_primary_is_counted_and_ignored(server):
    """We are nobody's secondary: a NOTIFY from anyone gets no answer."""
    before = server.counters()["drop:notify"]
    q = dns.message.make_query("100.51.198.in-addr.arpa", "SOA")
    q.set_opcode(dns.opcode.NOTIFY)
    assert udp_exchange(server.addresses[0][1], q.to_wire(), expect_reply=False) is None
    assert server.counters()["drop:notify"] == before + 1


def test_dns_zone_transfer_is_refused_by_default(server):
    """Transfers are off unless [dns] transfer or [[secondary]] allow them."""
    before = server.counters()["xfr_refused:address"]
    r = dig(server.addresses[0][1], "100.51.198.in-addr.arpa", "AXFR", check=False)
    assert "Transfer failed" in r["text"] and "PTR" not in r["text"]
    assert server.counters()["xfr_refused:address"] == before + 1


def test_dns_tcp_several_queries_on_one_connection(server):
    port = server.addresses[0][1]
    names = ["2.100.51.198.in-addr.arpa", "3.100.51.198.in-addr.arpa", "example.com"]
    queries = [dns.message.make_query(n, "PTR") for n in names]
    wire = b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries))
    with socket.create_connection(("::1", port), timeout=2) as s:
        s.sendall(wire[:7])  # split mid-frame: the server must wait for the rest
        time.sleep(0.05)
        s.sendall(wire[7:])
        buf = b""
        replies = []
        for _ in range(100):  # bounded reads
            if len(replies) == len(queries):
                break
            buf += s.recv(65535)
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                n = struct.unpack("!H", buf[:2])[0]
                replies.append(dns.message.from_wire(buf[2:2 + n]))
                buf = buf[2 + n:]
    assert [r.id for r in replies] == [q.id for q in queries]
    assert [r.rcode() for r in replies] == [dns.rcode.NOERROR, dns.rcode.NOERROR,
                                            dns.rcode.REFUSED]
    assert replies[0].answer[0][0].target.to_text() == "Once.upon.a.time."


def test_dns_reload_swaps_zones_without_losing_queries(zones):
    port = free_port()
    new = zone.build(Config(chains=(chain("198.51.100.1/24", ["Another.story"]),),
                            dns=DnsSettings(ns=NS)), now=NOW + 1)
    with rdns.Server(zones, [("127.0.0.1", port)], settings=NO_RRL) as srv:
        answers = []
        query = dns.message.make_query("2.100.51.198.in-addr.arpa", "PTR")

        def ask() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(2.0)
                for _ in range(200):  # bounded
                    s.sendto(query.to_wire(), ("127.0.0.1", port))
                    answers.append(dns.message.from_wire(s.recv(65535)))

        asker = threading.Thread(target=ask)
        asker.start()
        time.sleep(0.01)
        srv.reload(new)
        asker.join(timeout=20)
        targets = {a.answer[0][0].target.to_text() for a in answers}
        assert len(answers) == 200 and targets <= {"Once.upon.a.time.", "Another.story."}
        r = dig(port, "-x", "198.51.100.2")
        assert r["answer"] == ["2.100.51.198.in-addr.arpa. 3600 IN PTR Another.story."]
        assert dig(port, "-x", "2001:db8:5::2")["status"] == "REFUSED"


def test_dns_start_names_the_address_it_cannot_bind(server):
    port = server.addresses[0][1]
    with pytest.raises(SetupError, match=rf"DNS: cannot listen on 127\.0\.0\.1:{port} \(udp\)"):
        rdns.Server([], [("127.0.0.1", port)]).start()
    with pytest.raises(SetupError, match=r"DNS: cannot listen on 192\.0\.2\.1:53 \(udp\)"):
        rdns.Server([], [("192.0.2.1", 53)]).start()


def test_dns_stop_does_not_wait_for_idle_clients(zones):
    port = free_port()
    srv = rdns.Server(zones, [("127.0.0.1", port)])
    srv.start()
    idle = socket.create_connection(("127.0.0.1", port), timeout=2)
    time.sleep(0.05)
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 1.5
    idle.settimeout(2)
    assert idle.recv(10) == b""  # closed by the server
    idle.close()


# --- the same answers from knotd --------------------------------------------

KNOT_CONF = """\
{head}template:
  - id: default
    storage: "{dir}/zones"
    file: "%s.zone"
    journal-content: none
    zonefile-sync: -1
zone:
{zones}
"""


@pytest.fixture(scope="module")
def knotd(zones, tmp_path_factory):
    need("knotd", "knot")
    base: Path = tmp_path_factory.mktemp("knot")
    for sub in ("run", "db"):
        (base / sub).mkdir()
    paths = zone.export(CONFIG, base / "zones")
    # export() stamps the serial with the time of the export: rewrite it to the
    # build's, so that both servers hold the very same records.
    for z, path in zip(zones, paths):
        assert path.name == z.filename
        path.write_text(z.to_text())
    port = free_port()
    conf = base / "knot.conf"
    head = knot_head(base / "run", base / "db", f'[ "127.0.0.1@{port}", "::1@{port}" ]',
                     "warning")
    conf.write_text(KNOT_CONF.format(head=head, dir=base, zones="\n".join(
        f'  - domain: "{z.origin.to_text()}"' for z in zones)))
    log = open(base / "knotd.log", "w")
    proc = subprocess.Popen(["knotd", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):  # up to 10 s for the zones to load
            if proc.poll() is not None:
                break
            r = dig(port, "+tcp", zones[-1].origin.to_text(), "SOA", check=False)
            if r["status"] == "NOERROR":
                break
            time.sleep(0.1)
        else:
            pytest.fail("knotd did not answer within 10 s")
        if proc.poll() is not None:
            pytest.fail(f"knotd exited: {(base / 'knotd.log').read_text()}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


QUESTIONS = [
    "-x 198.51.100.2", "-x 198.51.100.6", "-x 198.51.100.4", "-x 198.51.100.200",
    "-x 192.0.2.34", "-x 192.0.2.36", "-x 192.0.2.35", "-x 192.0.2.60",
    "34.32-27.2.0.192.in-addr.arpa PTR", "36.32-27.2.0.192.in-addr.arpa PTR",
    "32-27.2.0.192.in-addr.arpa SOA", "32-27.2.0.192.in-addr.arpa NS",
    "2.0.192.in-addr.arpa SOA", "100.51.198.in-addr.arpa SOA",
    "-x 2001:db8:5::2", "-x 2001:db8:5::5", "-x 2001:db8:5::4", "-x 2001:db8:5::99",
    "0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa SOA",
    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa PTR",
    "2.100.51.198.in-addr.arpa TXT", "example.com A",
]


def comparable(r: dict) -> tuple:
    """Knot keeps names in RDATA in lower case; the built-in server keeps the
    story's case. DNS names compare without case (RFC 4343), and the order of
    records in an RRset carries no meaning."""
    return (r["status"], r["flags"], sorted(a.lower() for a in r["answer"]),
            sorted(a.lower() for a in r["authority"]), r["edns"])


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("question", QUESTIONS)
def test_dns_answers_match_knotd(server, knotd, transport, host, question):
    ours = dig(server.addresses[0][1], transport, *question.split(), server=host)
    theirs = dig(knotd, transport, *question.split(), server=host)
    assert comparable(ours) == comparable(theirs), ours["text"] + theirs["text"]


# --- glibc takes every name ---------------------------------------------------

GLIBC_LOOKUP = r"""
import json, socket, sys
out = {}
for address in json.loads(sys.argv[1]):
    try:
        out[address] = socket.getnameinfo((address, 0), socket.NI_NAMEREQD)[0]
    except OSError as e:
        out[address] = f"ERROR {e}"
print(json.dumps(out))
"""

# The server and the resolver in separate processes, as with traceroute.
GLIBC_PROBE = r"""
import json, subprocess, sys
from routechain import dns as rdns, story, zone
from routechain.chain import Chain, parse_prefix
from routechain.config import Config, DnsSettings
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
told = story.parse_lines([(f"s:{k}", line) for k, line in enumerate(json.loads(sys.argv[1]), 1)])
chains = (Chain(parse_prefix("198.51.100.1/24"), told.hops),
          Chain(parse_prefix("192.0.2.33/27"), told.hops),
          Chain(parse_prefix("2001:db8:5::1/64"), told.hops))
written = {str(c.hop_address(k)): h.name for c in chains for k, h in enumerate(c.hops, 1)}
with rdns.Server(zone.build(Config(chains=chains, dns=DnsSettings())), [("127.0.0.1", 53)]):
    done = subprocess.run([sys.executable, "-c", sys.argv[2], json.dumps(list(written))],
                          capture_output=True, text=True, timeout=120, check=True)
shown = json.loads(done.stdout)
print(json.dumps([[a, written[a], shown[a]] for a in written]))
"""


@pytest.mark.root
def test_dns_glibc_getnameinfo_shows_every_story_name(tmp_path):
    """traceroute asks getnameinfo, and glibc drops PTR answers that fail its
    host-name check: in a throwaway mount and network namespace whose
    resolv.conf points at the built-in server, every name comes back as
    written, through the RFC 2317 CNAME too."""
    import json
    import sys
    need("unshare", "util-linux")
    lines = ["Once upon a time,", "snake_case -dash- trailing-", "café Straße 日本語",
             "x" * 70, "gateway.example.net", "Q&A: don't panic!", "1984",
             " ".join(["word"] * 40)]
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    script = tmp_path / "probe.py"
    script.write_text(GLIBC_PROBE)
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["unshare", "--mount", "--net", "sh", "-c",
         f'mount --bind "{resolv}" /etc/resolv.conf && exec "$0" "$@"',
         sys.executable, str(script), json.dumps(lines), GLIBC_LOOKUP],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(root),
                                                         "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) == 3 * len(lines)
    for address, written, shown in results:
        assert shown == written, f"{address}: glibc shows {shown!r} for {written!r}"


def test_dns_answer_never_raises_on_random_messages(zones):
    """Random and mangled messages, fixed seed: each gets a reply or nothing,
    and every reply parses."""
    index = dnsanswer.Index(zones)
    rng = random.Random(4)
    good = dns.message.make_query("2.100.51.198.in-addr.arpa", "PTR", use_edns=0).to_wire()
    for i in range(3000):  # bounded
        if i % 2:
            wire = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        else:
            wire = bytearray(good)
            for _ in range(rng.randrange(1, 4)):
                wire[rng.randrange(len(wire))] = rng.randrange(256)
            wire = bytes(wire)
        reply, _ = index.answer(wire, udp=bool(i % 3))
        if reply is not None:
            assert len(reply) >= 12 and reply[:2] == wire[:2]
            header = struct.unpack("!H", reply[2:4])[0]
            assert header & dns.flags.QR


def test_dns_internal_error_is_counted_and_logged_once_with_its_traceback(zones, caplog):
    """A bug in answering must not stop the server, nor go unseen."""
    port = free_port()

    class Broken:
        def answer(self, wire, udp):
            raise ValueError("a bug")

    with rdns.Server(zones, [("127.0.0.1", port)], settings=NO_RRL) as srv:
        srv.index = Broken()
        for _ in range(3):
            assert udp_exchange(port, dns.message.make_query("example.com", "A").to_wire(),
                                expect_reply=False) is None
        srv.reload(zones)
        assert dig(port, "-x", "198.51.100.2")["status"] == "NOERROR"
        assert srv.counters()["internal_errors"] == 3
    logged = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert len(logged) == 1 and "ValueError: a bug" in logged[0].getMessage()
    assert "Traceback" in logged[0].getMessage()


# --- limits: from the config file to the server ---------------------------

def test_dns_limits_load_from_the_dns_table(tmp_path):
    path = tmp_path / "rc.toml"
    path.write_text('[dns]\nlisten = ["127.0.0.1:5353"]\nrate_limit = 0\nrate_limit_errors = 5\n'
                    'rate_limit_slip = 1\ntcp_connections = 3\ntcp_connections_per_client = 2\n'
                    'tcp_idle_timeout = 4\n')
    d = config.load(path).dns
    assert (d.rate_limit, d.rate_limit_errors, d.rate_limit_slip) == (0, 5, 1)
    assert (d.tcp_connections, d.tcp_connections_per_client, d.tcp_idle_timeout) == (3, 2, 4)
    defaults = DnsSettings()
    assert (defaults.rate_limit, defaults.rate_limit_slip, defaults.tcp_connections) == \
        (100, 2, 128)


@pytest.mark.parametrize("line,message", [
    ("rate_limit = -1", r"3: dns\.rate_limit = -1 is not in 0\.\.1000000"),
    ("rate_limit_slip = 11", r"3: dns\.rate_limit_slip = 11 is not in 0\.\.10"),
    ("tcp_connections = 0", r"3: dns\.tcp_connections = 0 is not in 1\.\.65535"),
    ('tcp_idle_timeout = "10s"', r"3: dns\.tcp_idle_timeout must be an integer"),
])
def test_dns_limits_bad_values_name_file_and_line(tmp_path, line, message):
    text = f'[dns]\nlisten = ["127.0.0.1:5353"]\n{line}\n'
    assert re.match(rf"route-chain\.toml:{message}", refusal(tmp_path, text))


def test_dns_tcp_connections_capped_in_total(zones):
    """Past `connections` at once, a new connection is closed at once and
    counted; one that closes makes room again."""
    port = free_port()
    limits = replace(NO_RRL, tcp_connections=3, tcp_connections_per_client=8,
                     tcp_idle_timeout=10)
    query = dns.message.make_query("2.100.51.198.in-addr.arpa", "PTR").to_wire()
    frame = struct.pack("!H", len(query)) + query

    def answered(conn: socket.socket) -> bool:
        try:
            conn.sendall(frame)
            return len(conn.recv(4096)) > 2
        except OSError:
            return False

    with rdns.Server(zones, [("127.0.0.1", port)], settings=limits) as srv:
        held = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(3)]
        try:
            assert all(answered(c) for c in held)
            with socket.create_connection(("127.0.0.1", port), timeout=2) as extra:
                assert not answered(extra)
            assert srv.counters()["drop:tcp_limit"] == 1
            held.pop().close()
            for _ in range(50):  # until the server has seen the close (bounded: 5 s)
                with socket.create_connection(("127.0.0.1", port), timeout=2) as again:
                    if answered(again):
                        break
                time.sleep(0.1)
            else:
                pytest.fail("no room made by a closed connection")
        finally:
            for c in held:
                c.close()


def test_dns_reload_applies_new_rate_limits(zones):
    port = free_port()
    query = dns.message.make_query("2.100.51.198.in-addr.arpa", "PTR").to_wire()

    def burst(n: int = 10) -> int:
        """n queries at once: how many are answered."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(n):
                s.sendto(query, ("127.0.0.1", port))
            s.settimeout(0.5)
            got = 0
            try:
                for _ in range(n):
                    s.recv(65535)
                    got += 1
            except socket.timeout:
                pass
            return got

    strict = DnsSettings(rate_limit=1, rate_limit_errors=1, rate_limit_slip=0)
    with rdns.Server(zones, [("127.0.0.1", port)], settings=strict) as srv:
        assert 1 <= burst() <= 3  # one at once, one more a second
        srv.reload(zones, NO_RRL)
        assert burst() == 10
        assert srv.counters()["drop:ratelimited"] >= 7


def test_dns_limits_without_a_dns_table_are_the_defaults():
    """A reload to a config without [dns] (the server keeps its sockets
    until a restart) takes the default limits, not an error."""
    srv = rdns.Server([], [], settings=NO_RRL)
    srv.reload([], Config().dns)
    assert srv._rrl.same(DnsSettings()) and not srv._rrl.same(NO_RRL)


def test_dns_bind_on_port_0_picks_again_when_tcp_holds_the_udp_port(monkeypatch):
    """Port 0: the kernel picks a free UDP port, and a TCP socket may hold
    that number already (a client's ephemeral port: CI met it). The server
    picks again, and keeps no socket of the pair it gave up."""
    srv = rdns.Server([], [("127.0.0.1", 0)])
    real, blockers = srv._bind, []

    def bind(kind, host, port):
        if kind == socket.SOCK_STREAM and not blockers:  # the first TCP bind meets a listener
            blocker = socket.socket()
            blocker.bind((host, port))
            blocker.listen(1)
            blockers.append(blocker)
        return real(kind, host, port)

    monkeypatch.setattr(srv, "_bind", bind)
    try:
        srv.bind()
        port = srv.addresses[0][1]
        assert blockers and port != blockers[0].getsockname()[1]
        assert sorted(s.type for s in srv._sockets) == [socket.SOCK_STREAM, socket.SOCK_DGRAM]
        assert all(s.getsockname()[1] == port for s in srv._sockets)
    finally:
        srv._close_sockets()
        for b in blockers:
            b.close()


def test_dns_bind_on_a_taken_port_says_which():
    """A fixed port that TCP holds is not picked again: one line naming it."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        srv = rdns.Server([], [("127.0.0.1", port)])
        try:
            with pytest.raises(SetupError, match=f"127.0.0.1:{port} \\(tcp\\)"):
                srv.bind()
        finally:
            srv._close_sockets()
