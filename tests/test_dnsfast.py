"""The DNS fast path (csrc/dnsfast.c through routechain.dnsfast) held to
the Index it learns from: an answer it gives is byte for byte the one
dnsanswer.Index gives the same query; what it does not recognise it leaves
to Python; its table stays bounded; its RRL decides as rrl.py does; random
and mutated packets crash nothing. Then the server: a miss is answered and
then hit, a reload clears the answers, and the counters add up."""

from __future__ import annotations

import random
import socket
import struct
import time

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import pytest

from routechain import dns as rdns
from routechain import dnsanswer, dnsfast, rrl, zone
from routechain.config import DnsSettings
from test_dnsanswer import CONFIG, NOW, V6

ZONES = zone.build(CONFIG, now=NOW)
NAMES = sorted({rs.name.to_text() for z in ZONES for rs in z.rrsets}) + [
    "9.100.51.198.in-addr.arpa", "a.b.c." + V6, V6, "example.com", "in-addr.arpa",
    "99.32-27.2.0.192.in-addr.arpa", "x.y.2.100.51.198.in-addr.arpa"]
TYPES = ["PTR", "PTR", "PTR", "SOA", "NS", "CNAME", "TXT", "A", "AAAA", "MX"]


def plain_query(rng: random.Random, name: str | None = None, rdtype: str | None = None) -> bytes:
    """A plain query as a resolver sends it: random case (0x20), ID, RD,
    CD, EDNS or not, DO, payload size."""
    name = name or rng.choice(NAMES)
    name = "".join(c.upper() if rng.random() < 0.4 else c for c in name)
    edns = rng.choice([-1, 0, 0])
    q = dns.message.make_query(name, rdtype or rng.choice(TYPES), use_edns=edns,
                               want_dnssec=edns >= 0 and rng.random() < 0.3,
                               payload=rng.choice([512, 1232, 1400, 4096]))
    q.flags = rng.choice([0, dns.flags.RD]) | rng.choice([0, dns.flags.CD])
    q.id = rng.randrange(65536)
    return q.to_wire()


def recased(rng: random.Random, wire: bytes) -> bytes:
    """The same question with another ID and another 0x20 case."""
    end = wire.index(0, 12)
    name = bytes(c ^ 0x20 if chr(c).isalpha() and rng.random() < 0.5 else c
                 for c in wire[12:end])
    return rng.randbytes(2) + wire[2:12] + name + wire[end:]


def learn(table: dnsfast.Table, index: dnsanswer.Index, wire: bytes, udp: bool) -> None:
    """What the server does on a miss: answer in Python, publish."""
    reply, outcome = index.answer(wire, udp)
    if reply is not None:
        table.put(wire, reply, outcome)


def test_dnsfast_answers_equal_the_index_on_random_queries():
    """Random plain queries, fixed seed: each is learnt from one query and
    asked by another of the same name (other case, ID, flags, size): every
    answer the table gives equals the Index's, byte for byte, UDP and TCP."""
    index, table = dnsanswer.Index(ZONES), dnsfast.Table()
    rng = random.Random(21)
    hits = 0
    for i in range(4000):  # bounded
        udp = bool(i % 3)
        learn(table, index, plain_query(rng), udp)
        wire = plain_query(rng)
        fast, kind = table.answer(wire, udp)
        reference, outcome = index.answer(wire, udp)
        if fast is None:
            assert kind in (dnsfast.lib.RC_DNS_PASS_MISS, dnsfast.lib.RC_DNS_PASS_BIG), kind
            learn(table, index, wire, udp)
            fast, kind = table.answer(wire, udp)
            if fast is None:  # too large for this client, or not one to keep
                assert kind == dnsfast.lib.RC_DNS_PASS_BIG or reference[2] & 0x02 \
                    or outcome not in dnsfast.OUTCOME_KIND, (kind, outcome)
                continue
        hits += 1
        assert fast == reference, dns.message.from_wire(wire).question
        assert dnsfast.OUTCOME_KIND[outcome] == kind
    assert hits > 3000


def test_dnsfast_signed_do_answers_equal_the_index(tmp_path):
    """A signed zone: with DO (RRSIGs, NSEC denial) and without, the
    table's answers are the Index's."""
    from test_dnssec_serve import build, make_signer
    signer = make_signer(tmp_path)
    zones = [signer.sign(z) for z in build()]
    index, table = dnsanswer.Index(zones), dnsfast.Table()
    names = sorted({rs.name.to_text() for z in zones for rs in z.rrsets})
    names += ["200.32-27.100.51.198.in-addr.arpa", "x." + names[0]]
    rng = random.Random(5)
    hits = 0
    for _ in range(1500):  # bounded
        wire = plain_query(rng, rng.choice(names), rng.choice(["PTR", "TXT", "NSEC", "SOA"]))
        learn(table, index, bytes(wire), False)
        other = bytearray(wire)
        other[0:2] = rng.randbytes(2)
        fast, _ = table.answer(bytes(other), False)
        if fast is not None:
            hits += 1
            assert fast == index.answer(bytes(other), False)[0]
    assert hits > 1000


def tsig_query() -> bytes:
    q = dns.message.make_query("2.100.51.198.in-addr.arpa", "PTR")
    q.use_tsig(dns.tsigkeyring.from_text({"k.": "c2VjcmV0c2VjcmV0"}), keyname="k.")
    return q.to_wire()


def query_with(**kw) -> bytes:
    q = dns.message.make_query(kw.pop("qname", "2.100.51.198.in-addr.arpa"),
                               kw.pop("rdtype", "PTR"), **kw)
    return q.to_wire()


def patched(wire: bytes, at: int, value: bytes) -> bytes:
    return wire[:at] + value + wire[at + len(value):]


PLAIN = query_with()
# (what, query): none of these is looked up; Python answers each.
NOT_PLAIN = [
    ("ANY", query_with(rdtype="ANY")),
    ("AXFR", query_with(rdtype="AXFR")),
    ("IXFR", query_with(rdtype="IXFR")),
    ("NOTIFY", patched(PLAIN, 2, bytes([dns.opcode.NOTIFY << 3, 0]))),
    ("UPDATE", patched(PLAIN, 2, bytes([dns.opcode.UPDATE << 3, 0]))),
    ("a response", patched(PLAIN, 2, b"\x80\x00")),
    ("TSIG", tsig_query()),
    ("a cookie", query_with(use_edns=0, options=[dns.edns.CookieOption(b"12345678", b"")])),
    ("EDNS version 1", query_with(use_edns=1)),
    ("class CH", patched(PLAIN, len(PLAIN) - 2, b"\x00\x03")),
    ("two questions", patched(PLAIN, 4, b"\x00\x02")),
    ("an answer record", patched(PLAIN, 6, b"\x00\x01")),
    ("a compressed name", PLAIN[:12] + b"\x01a\xc0\x0c" + PLAIN[-4:]),
    ("a zero octet in a label", PLAIN[:13] + b"\x00" + PLAIN[14:]),
    ("trailing octets", PLAIN + b"\x00"),
    ("short", PLAIN[:15]),
    ("header only", PLAIN[:12]),
    ("empty", b""),
]


@pytest.mark.parametrize("what,wire", NOT_PLAIN, ids=[w for w, _ in NOT_PLAIN])
def test_dnsfast_leaves_what_it_does_not_recognise_to_python(what, wire):
    """Even with the plain query's answer in the table, these pass, counted
    as not plain; and none of them can be published."""
    index, table = dnsanswer.Index(ZONES), dnsfast.Table()
    learn(table, index, PLAIN, True)
    assert table.answer(PLAIN, True)[0] is not None
    reply, kind = table.answer(wire, True)
    assert (reply, kind) == (None, dnsfast.lib.RC_DNS_PASS_OTHER)
    assert table.put(wire, index.answer(PLAIN, True)[0], "rcode:NOERROR") \
        == -dnsfast.lib.RC_DNS_PUT_NOT_PLAIN


def test_dnsfast_publishes_only_the_query_s_whole_answer():
    index, table = dnsanswer.Index(ZONES), dnsfast.Table()
    reply, outcome = index.answer(PLAIN, True)
    other = query_with()  # another ID
    assert table.put(other, reply, outcome) == -dnsfast.lib.RC_DNS_PUT_NOT_ANSWER
    assert table.put(PLAIN, reply, "rcode:NXDOMAIN") == -dnsfast.lib.RC_DNS_PUT_NOT_ANSWER
    assert table.put(PLAIN, reply, "rcode:FORMERR") == -dnsfast.lib.RC_DNS_PUT_NOT_ANSWER
    tc = patched(reply, 2, bytes([reply[2] | 0x02]))
    assert table.put(PLAIN, tc, outcome) == -dnsfast.lib.RC_DNS_PUT_NOT_ANSWER
    assert table.put(PLAIN, reply + bytes(5000), outcome) == -dnsfast.lib.RC_DNS_PUT_TOO_BIG
    assert len(table) == 0
    assert table.put(PLAIN, reply, outcome) == 0 and len(table) == 1


def test_dnsfast_too_large_for_the_client_is_left_to_python():
    """An NS answer over 512 octets: kept (TCP takes it), but a UDP query
    without EDNS passes so that Python truncates it as always."""
    index, table = dnsanswer.Index(ZONES), dnsfast.Table()
    tcp = query_with(qname="100.51.198.in-addr.arpa", rdtype="NS")
    learn(table, index, tcp, False)
    assert table.answer(tcp, False)[0] == index.answer(tcp, False)[0]
    assert table.answer(tcp, True) == (None, dnsfast.lib.RC_DNS_PASS_BIG)
    assert index.answer(tcp, True)[0][2] & 0x02  # Python's: TC


def test_dnsfast_table_is_bounded_and_starts_again_when_full():
    """At most `entries` answers: the one past it clears the table (counted),
    and what was cleared is a miss again, then learnt again."""
    index, table = dnsanswer.Index(ZONES), dnsfast.Table(entries=8, arena=64 * 1024)
    resets = table.resets
    names = [f"{k}.100.51.198.in-addr.arpa" for k in range(1, 21)]
    for name in names:
        learn(table, index, dns.message.make_query(name, "PTR").to_wire(), True)
        assert len(table) <= 8
    assert table.resets - resets == 2  # 20 answers: cleared at the 9th and the 17th
    first = dns.message.make_query(names[0], "PTR").to_wire()
    assert table.answer(first, True) == (None, dnsfast.lib.RC_DNS_PASS_MISS)
    learn(table, index, first, True)
    assert table.answer(first, True)[0] == index.answer(first, True)[0]
    small = dnsfast.Table(entries=1000, arena=2048)  # the arena fills first
    for name in names:
        learn(small, index, dns.message.make_query(name, "PTR").to_wire(), True)
    assert len(small) < 20 and small.resets >= 1


def test_dnsfast_random_and_mutated_packets_crash_nothing():
    """Random bytes and mutations of plain queries, fixed seed: nothing
    crashes, and any answer the table gives equals the Index's."""
    index, table = dnsanswer.Index(ZONES), dnsfast.Table()
    rng = random.Random(7)
    seeds = [plain_query(rng) for _ in range(50)]
    for wire in seeds:
        learn(table, index, wire, True)
    answered = 0
    for i in range(6000):  # bounded
        if i % 3 == 0:
            wire = rng.randbytes(rng.randrange(0, 80))
        else:
            wire = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                if rng.random() < 0.2 and len(wire) > 12:
                    del wire[rng.randrange(12, len(wire)):]
                else:
                    wire[rng.randrange(len(wire))] = rng.randrange(256)
            wire = bytes(wire)
        reply, kind = table.answer(wire, True)
        if reply is not None:
            answered += 1
            assert reply == index.answer(wire, True)[0], wire
        table.put(wire, rng.randbytes(rng.randrange(0, 200)), "rcode:NOERROR")
        table.put(wire, wire, "rcode:NOERROR")
    assert answered > 100


def test_dnsfast_rrl_decides_as_rrl_py():
    """The C limiter and rrl.RateLimiter (the reference) fed the same random
    clients, errors and times, with a small table that fills and sweeps:
    every verdict and the table's size are the same."""
    for rate, errors, slip in ((20, 5, 2), (3, 0, 1), (50, 10, 0)):
        settings = DnsSettings(rate_limit=rate, rate_limit_errors=errors, rate_limit_slip=slip)
        c, py = dnsfast.Limiter(settings, table_max=64), rrl.RateLimiter(settings, table_max=64)
        rng = random.Random(rate)
        now = 1000.0
        verdicts = []
        for _ in range(20000):  # bounded
            now += rng.expovariate(2000.0)
            if rng.random() < 0.5:
                host = f"192.0.{rng.randrange(3)}.{rng.randrange(256)}"
            elif rng.random() < 0.5:
                host = f"198.{rng.randrange(256)}.{rng.randrange(256)}.1"
            else:
                host = f"2001:db8:{rng.randrange(4):x}:{rng.randrange(300):x}::1"
            error = rng.random() < 0.2
            got = c.check(dnsfast.client_key(host), error, now)
            assert got == py.check(rrl.prefix(host), error, now), (host, error, now)
            verdicts.append(got)
            assert len(c) == len(py)
        assert rrl.SEND in verdicts and (rrl.DROP in verdicts) == (slip != 1)
        assert (rrl.SLIP in verdicts) == (slip > 0)


def test_dnsfast_client_key_cuts_as_rrl_prefix():
    keys = {}
    for host in ("192.0.2.1", "192.0.2.200", "192.0.3.1", "2001:db8::1", "2001:db8:0:ff::1",
                 "2001:db8:0:100::1", "fe80::1%lo"):
        keys.setdefault(rrl.prefix(host), set()).add(dnsfast.client_key(host))
    assert all(len(v) == 1 for v in keys.values())
    assert len({k for v in keys.values() for k in v}) == len(keys) == 5


# --- the server ------------------------------------------------------------

def udp_ask(port: int, wire: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(wire, ("127.0.0.1", port))
        return s.recv(65535)


def tcp_ask(port: int, wire: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack("!H", len(wire)) + wire)
        size = struct.unpack("!H", s.recv(2, socket.MSG_WAITALL))[0]
        return s.recv(size, socket.MSG_WAITALL)


NO_RRL = DnsSettings(rate_limit=0, rate_limit_errors=0)


def test_dnsfast_server_miss_is_answered_then_hit():
    """The first query of a name is answered by Python and published; the
    next (another case and ID) by C; both as the Index answers; the
    counters count each once; a reload clears the table."""
    index = dnsanswer.Index(ZONES)
    rng = random.Random(3)
    with rdns.Server(ZONES, [("127.0.0.1", 0)], NO_RRL) as srv:
        port = srv.addresses[0][1]
        firsts = []
        for name in ("2.100.51.198.in-addr.arpa", "9.100.51.198.in-addr.arpa", "example.com"):
            first = plain_query(rng, name, "PTR")
            second = recased(rng, first)
            firsts.append(first)
            before = srv.counters()
            assert udp_ask(port, first) == index.answer(first, True)[0]
            mid = srv.counters()
            assert mid["fast:passed_miss"] == before["fast:passed_miss"] + 1
            assert udp_ask(port, second) == index.answer(second, True)[0]
            after = srv.counters()
            assert after["fast:passed_miss"] == mid["fast:passed_miss"]
            assert after["queries"] == before["queries"] + 2
            assert sum(after[f"fast:{r}"] for r in ("NOERROR", "NXDOMAIN", "REFUSED")) \
                == sum(mid[f"fast:{r}"] for r in ("NOERROR", "NXDOMAIN", "REFUSED")) + 1
        third = recased(rng, firsts[0])  # over TCP, from the same table
        assert tcp_ask(port, third) == index.answer(third, False)[0]
        assert srv.counters()["fast:answers"] == 3
        srv.reload(ZONES[:1], NO_RRL)
        again = plain_query(rng, "example.com", "PTR")
        before = srv.counters()
        udp_ask(port, again)
        assert srv.counters()["fast:passed_miss"] == before["fast:passed_miss"] + 1
        assert srv.counters()["fast:answers"] == 1


def test_dnsfast_server_reload_never_serves_the_old_zone():
    """A changed story: right after reload() returns, the first UDP query of
    a name the fast path had gets the new zone's answer."""
    from routechain.config import Config
    from routechain.chain import Chain, Hop, parse_prefix
    old = zone.build(CONFIG, now=NOW)
    changed = Config(chains=(Chain(parse_prefix("198.51.100.1/24"),
                                   (Hop(name="Another.story"),), where="t"),), dns=CONFIG.dns)
    new = zone.build(changed, now=NOW)
    wire = dns.message.make_query("2.100.51.198.in-addr.arpa", "PTR").to_wire()
    with rdns.Server(old, [("127.0.0.1", 0)], NO_RRL) as srv:
        port = srv.addresses[0][1]
        for _ in range(3):
            assert b"\x04Once" in udp_ask(port, wire)
        srv.reload(new, NO_RRL)
        assert udp_ask(port, wire) == dnsanswer.Index(new).answer(wire, True)[0]
        assert b"\x07Another" in udp_ask(port, wire)


def test_dnsfast_server_fast_path_off_answers_the_same():
    """[dns] fast_path = false: Python answers all, the same answers (the
    same bytes but for the order of records in a set of several, which
    dnspython shuffles once per server)."""
    rng = random.Random(9)
    queries = [plain_query(rng) for _ in range(200)]
    replies = {}
    for fast in (True, False):
        settings = DnsSettings(rate_limit=0, rate_limit_errors=0, fast_path=fast)
        with rdns.Server(ZONES, [("127.0.0.1", 0)], settings) as srv:
            port = srv.addresses[0][1]
            replies[fast] = [udp_ask(port, q) for q in queries + queries]
            c = srv.counters()
            assert (c.get("fast:received", 0) > 0) == fast
            assert c["queries"] == 400
    for a, b in zip(replies[True], replies[False]):
        assert a[:12] == b[:12] and len(a) == len(b)
        assert dns.message.from_wire(a) == dns.message.from_wire(b)


def test_dnsfast_server_rate_limits_a_flood_from_one_client():
    """One client asks 400 times for one name as fast as it can: the fast
    path limits it as rrl.py would (a second's worth of answers, then every
    other one slipped), and the counters say so."""
    settings = DnsSettings(rate_limit=20, rate_limit_errors=5, rate_limit_slip=2)
    wire = dns.message.make_query("2.100.51.198.in-addr.arpa", "PTR").to_wire()
    with rdns.Server(ZONES, [("127.0.0.1", 0)], settings) as srv:
        port = srv.addresses[0][1]
        full = slipped = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            start = time.monotonic()
            for _ in range(4):  # bounded: 4 bursts of 100
                for _ in range(100):
                    s.sendto(wire, ("127.0.0.1", port))
                time.sleep(0.05)
            s.settimeout(0.5)
            while True:
                try:
                    reply = s.recv(65535)
                except socket.timeout:
                    break
                if reply[2] & 0x02:
                    slipped += 1
                    assert len(reply) <= len(wire)
                else:
                    full += 1
            elapsed = time.monotonic() - start
        c = srv.counters()
    assert 20 <= full <= 20 + 20 * elapsed, (full, elapsed)  # a burst, then the refill
    assert slipped >= 1 and c["fast:slipped"] >= 1 and c["fast:ratelimited"] >= 1, c
    assert c["drop:ratelimited"] >= c["fast:ratelimited"] and c["slipped"] >= c["fast:slipped"]


def test_dnsfast_server_pipelined_tcp_queries_answered_in_order():
    """200 queries in one write (hits, misses, ANY, a malformed one): the
    answers come back in order, each the Index's, counted once each."""
    index = dnsanswer.Index(ZONES)
    rng = random.Random(12)
    first = [plain_query(rng) for _ in range(60)]
    queries = first + [recased(rng, q) for q in first] + [
        query_with(rdtype="ANY"), b"\x12\x34\x01\x00\x00\x01" + bytes(6)] + [
        recased(rng, q) for q in first + first[:18]]
    with rdns.Server(ZONES, [("127.0.0.1", 0)], NO_RRL) as srv:
        port = srv.addresses[0][1]
        before = srv.counters()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"".join(struct.pack("!H", len(q)) + q for q in queries))
            for q in queries:
                size = struct.unpack("!H", s.recv(2, socket.MSG_WAITALL))[0]
                reply = s.recv(size, socket.MSG_WAITALL)
                expected = index.answer(q, False)[0]
                assert dns.message.from_wire(reply) == dns.message.from_wire(expected)
                assert reply[:12] == expected[:12]
        after = srv.counters()
    assert after["tcp_queries"] - before["tcp_queries"] == len(queries) == 200
    answered = sum(after[k] - before[k] for k in after if k.startswith("rcode:"))
    assert answered == 200


def test_dnsfast_server_kept_ring_wraps_and_loses_nothing():
    """Large queries for Python (an EDNS option: not plain), 2.4 MB of them in
    bursts, wrap the 1 MiB ring of kept datagrams several times; and a
    burst of 300 misses at once: every one is answered, none dropped."""
    pad = dns.edns.GenericOption(65001, bytes(4000))  # a local option: not plain
    big = [dns.message.make_query(f"{k % 9}.100.51.198.in-addr.arpa", "PTR", use_edns=0,
                                  options=[pad]).to_wire(max_size=65535) for k in range(600)]
    misses = [dns.message.make_query(f"{k}.{k}.100.51.198.in-addr.arpa", "PTR").to_wire()
              for k in range(300)]
    with rdns.Server(ZONES, [("127.0.0.1", 0)], NO_RRL) as srv:
        port = srv.addresses[0][1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.settimeout(5)
            for burst in (big[k:k + 10] for k in range(0, len(big), 10)):
                for q in burst:
                    s.sendto(q, ("127.0.0.1", port))
                ids = sorted(s.recv(65535)[:2] for _ in burst)
                assert ids == sorted(q[:2] for q in burst)
            for q in misses:
                s.sendto(q, ("127.0.0.1", port))
            ids = sorted(s.recv(65535)[:2] for _ in misses)
            assert ids == sorted(q[:2] for q in misses)
        c = srv.counters()
    assert c["fast:passed_other"] == 600 and c["fast:passed_miss"] == 300, c
    assert c["fast:python_busy"] == 0 and c["queries"] == 900


def test_dnsfast_counts_reach_the_metrics():
    """What C answered is in the metrics' responses and queries, and its
    own counters are there as events."""
    from routechain import metrics
    wire = dns.message.make_query("2.100.51.198.in-addr.arpa", "PTR").to_wire()
    with rdns.Server(ZONES, [("127.0.0.1", 0)], NO_RRL) as srv:
        port = srv.addresses[0][1]
        for _ in range(3):
            udp_ask(port, wire)
        values = metrics.dns_counters(srv.counters())
    assert values[("queries", None)] == 3 and values[("responses", "NOERROR")] == 3
    assert values[("events", "fast:NOERROR")] == 2
    assert values[("events", "fast:passed_miss")] == 1
