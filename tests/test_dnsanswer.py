"""The DNS answering core (routechain.dnsanswer) without sockets: bytes of a query in, bytes of an answer
out. The fast path (precomputed answers, patched) is held to the slow path
(dnspython, obviously correct, compared with knotd in test_dns.py) on random
queries with a fixed seed; each answer is parsed back by dnspython."""

from __future__ import annotations

import random

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from routechain import daemon, dnsanswer, zone
from routechain.chain import Chain, Chapter, Hop, parse_prefix
from routechain.config import Config, DnsSettings

NOW = 1_700_000_000
NS = tuple(f"ns-{k}-{'x' * 40}.example.net" for k in range(12))  # an NS answer > 512 octets
CONFIG = Config(chains=(
    Chain(parse_prefix("198.51.100.1/24"),
          (Hop(name="Once.upon.a.time"), Hop(name="a.little.Packet"), Hop(silent=True),
           Hop(), Hop(name="The.end")), where="t"),
    Chain(parse_prefix("192.0.2.33/27"),
          (Hop(name="Far.away.example.net"), Hop(silent=True), Hop(name="Caf.example.net")),
          where="t"),
    Chain(parse_prefix("2001:db8:5::1/64"), (Hop(name="One"), Hop(name="Two")), where="t"),
), dns=DnsSettings(ns=NS, soa_rname="hostmaster.example.net"))

V6 = "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"


@pytest.fixture(scope="module")
def index():
    return dnsanswer.Index(zone.build(CONFIG, now=NOW))


def ask(index, name, rdtype="PTR", udp=True, **kw) -> tuple[dns.message.Message, str, bytes]:
    query = dns.message.make_query(name, rdtype, **kw)
    wire, outcome = index.answer(query.to_wire(), udp)
    assert wire[:2] == query.to_wire()[:2]
    return dns.message.from_wire(wire), outcome, wire


# (question, type, rcode, AA, answer as (type, rdata) in order, SOA in authority)
ANSWERS = [
    ("2.100.51.198.in-addr.arpa", "PTR", "NOERROR", True, [("PTR", "Once.upon.a.time.")], False),
    ("2.100.51.198.IN-ADDR.arpa", "PTR", "NOERROR", True, [("PTR", "Once.upon.a.time.")], False),
    ("2.100.51.198.in-addr.arpa", "TXT", "NOERROR", True, [], True),           # NODATA
    ("2.100.51.198.in-addr.arpa", "ANY", "NOERROR", True, [("PTR", "Once.upon.a.time.")], False),
    ("4.100.51.198.in-addr.arpa", "PTR", "NXDOMAIN", True, [], True),          # silent hop
    ("5.100.51.198.in-addr.arpa", "PTR", "NXDOMAIN", True, [], True),          # unnamed hop
    ("x.y.2.100.51.198.in-addr.arpa", "PTR", "NXDOMAIN", True, [], True),
    ("100.51.198.in-addr.arpa", "SOA", "NOERROR", True, [("SOA", None)], False),
    ("100.51.198.in-addr.arpa", "ANY", "NOERROR", True, [("SOA", None)], False),  # RFC 8482
    ("34.2.0.192.in-addr.arpa", "PTR", "NOERROR", True,
     [("CNAME", "34.32-27.2.0.192.in-addr.arpa."), ("PTR", "Far.away.example.net.")], False),
    ("34.2.0.192.in-addr.arpa", "TXT", "NOERROR", True,
     [("CNAME", "34.32-27.2.0.192.in-addr.arpa.")], True),
    ("34.2.0.192.in-addr.arpa", "ANY", "NOERROR", True,
     [("CNAME", "34.32-27.2.0.192.in-addr.arpa.")], False),
    ("36.32-27.2.0.192.in-addr.arpa", "PTR", "NOERROR", True, [("PTR", "Caf.example.net.")],
     False),
    (V6, "PTR", "NOERROR", True, [], True),                                    # RFC 8020 ENT
    (dns.reversename.from_address("2001:db8:5::2").to_text(), "PTR", "NOERROR", True,
     [("PTR", "One.")], False),
    ("example.com", "A", "REFUSED", False, [], False),
    ("arpa", "SOA", "REFUSED", False, [], False),
    (".", "NS", "REFUSED", False, [], False),
    ("100.51.198.in-addr.arpa", "AXFR", "REFUSED", False, [], False),
]


@pytest.mark.parametrize("edns", [-1, 0])
@pytest.mark.parametrize("name,rdtype,rcode,aa,answer,soa", ANSWERS)
def test_dnsanswer_answers(index, name, rdtype, rcode, aa, answer, soa, edns):
    for _ in range(2):  # the first answer is rendered, the second copied
        r, outcome, _ = ask(index, name, rdtype, use_edns=edns)
        assert dns.rcode.to_text(r.rcode()) == rcode and outcome == f"rcode:{rcode}"
        assert bool(r.flags & dns.flags.AA) == aa and not r.flags & dns.flags.RA
        got = [(dns.rdatatype.to_text(rs.rdtype), rs[0].to_text() if answer and
                dict(answer).get(dns.rdatatype.to_text(rs.rdtype)) else None) for rs in r.answer]
        assert got == answer
        assert [rs.rdtype for rs in r.authority] == ([dns.rdatatype.SOA] if soa else [])
        if soa:
            assert r.authority[0].ttl == 300  # RFC 2308 3: min(SOA TTL, MINIMUM)
        assert (r.edns >= 0) == (edns >= 0)
        if edns >= 0 and rcode == "REFUSED":
            assert [o.code for o in r.options] == [dns.edns.EDECode.NOT_AUTHORITATIVE]


def random_query(rng: random.Random, names: list[str]) -> bytes:
    name = rng.choice(names)
    name = "".join(c.upper() if rng.random() < 0.3 else c for c in name)
    rdtype = rng.choice(["PTR", "PTR", "SOA", "NS", "CNAME", "TXT", "A", "ANY", "AAAA"])
    edns = rng.choice([-1, 0])
    options = rng.choice([[], [], [dns.edns.CookieOption(rng.randbytes(8), b"")],
                          [dns.edns.CookieOption(rng.randbytes(8), rng.randbytes(16))],
                          [dns.edns.GenericOption(dns.edns.OptionType.PADDING, bytes(20))]])
    query = dns.message.make_query(name, rdtype, use_edns=edns, want_dnssec=rng.random() < 0.3,
                                   payload=rng.choice([512, 1232, 1400, 4096]),
                                   options=options if edns >= 0 else None)
    query.flags = rng.choice([0, dns.flags.RD]) | rng.choice([0, dns.flags.CD])
    return query.to_wire()


def test_dnsanswer_fast_path_matches_slow_path(index):
    """Random plain queries, fixed seed: the fast path's answer parses to the
    slow path's, and after the first query of a name and type the slow
    path is not asked at all."""
    zones = zone.build(CONFIG, now=NOW)
    names = [rs.name.to_text() for z in zones for rs in z.rrsets]
    cnames = {rs.name for z in zones for rs in z.rrsets if rs.rdtype == dns.rdatatype.CNAME}
    with_data = {dns.rdatatype.PTR, dns.rdatatype.CNAME, dns.rdatatype.SOA, dns.rdatatype.NS,
                 dns.rdatatype.ANY}
    names += ["9.100.51.198.in-addr.arpa", "a.b.c." + V6, V6, "example.com", "in-addr.arpa",
              "99.32-27.2.0.192.in-addr.arpa"]
    rng = random.Random(11)
    slow = index._slow
    for i in range(3000):  # bounded
        wire = random_query(rng, names)
        udp = bool(i % 2)
        index.answer(wire, udp)  # render on first sight
        asked = []
        index._slow = type("Spy", (), {"answer": lambda s, w, u: asked.append(w) or
                                       slow.answer(w, u)})()
        try:
            fast, outcome = index.answer(wire, udp)
        finally:
            index._slow = slow
        reference, ref_outcome = slow.answer(wire, udp)
        q = dns.message.from_wire(wire).question[0]
        # Only a type the zones lack, asked of a CNAME owner, takes the slow path.
        assert bool(asked) == (q.name in cnames and q.rdtype not in with_data), str(q)
        assert outcome == ref_outcome
        a, b = dns.message.from_wire(fast), dns.message.from_wire(reference)
        assert a == b and a.flags == b.flags and a.edns == b.edns and a.ednsflags == b.ednsflags \
            and a.payload == b.payload and a.options == b.options, f"{a}\n---\n{b}"


@pytest.mark.parametrize("loaded_max,answers_max", [(512, 16384), (1, 2)],
                         ids=["default-bounds", "tiny-bounds"])
def test_dnsanswer_index_of_drafts_answers_as_index_of_zones(monkeypatch, loaded_max,
                                                             answers_max):
    """The daemon's Index is built from zone.drafts, each zone made ready on
    its first query: on random queries (fixed seed) its answers parse to
    those of an Index of dnspython's zones (dnspython shuffles the records
    of an RRset as it renders, so bytes may differ only in that order), and
    building it made no zone. With tiny bounds on the zones kept ready and
    the answers kept, zones and answers are let go and made again, and the
    answers stay the same."""
    monkeypatch.setattr(dnsanswer, "LOADED_MAX", loaded_max)
    monkeypatch.setattr(dnsanswer, "ANSWERS_MAX", answers_max)
    reference = dnsanswer.Index(zone.build(CONFIG, now=NOW))
    drafts = zone.drafts(CONFIG, now=NOW)
    lazy = dnsanswer.Index(drafts)
    assert len(lazy) == len(drafts) == 4
    ready = lazy._zones._ready
    assert len(ready) == 0
    names = [rs.name.to_text() for z in zone.build(CONFIG, now=NOW) for rs in z.rrsets]
    names += ["9.100.51.198.in-addr.arpa", "a.b.c." + V6, V6, "example.com", "in-addr.arpa",
              "99.32-27.2.0.192.in-addr.arpa", "33.2.0.192.in-addr.arpa"]
    rng = random.Random(12)
    for i in range(2000):  # bounded
        wire = random_query(rng, names)
        (got, outcome), (want, ref_outcome) = (lazy.answer(wire, bool(i % 2)),
                                               reference.answer(wire, bool(i % 2)))
        assert outcome == ref_outcome and len(got) == len(want)
        a, b = dns.message.from_wire(got), dns.message.from_wire(want)
        assert a == b and a.flags == b.flags and a.ednsflags == b.ednsflags \
            and a.options == b.options, f"{a}\n---\n{b}"
        assert len(ready) <= loaded_max and len(lazy._positive) <= answers_max
    assert len(ready) == min(4, loaded_max)


def test_dnsanswer_index_from_a_previous_one_remakes_only_changed_zones():
    """A reload's Index (previous=): the zones whose drafts are the same
    records (the same Chain objects) keep their entries and what was made
    ready; the zone of the changed chain is made again and answers its new
    names, as an Index built from scratch does."""
    zone6 = "0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    HOP1_6, HOP2_6 = ("2." + "0." * 15 + zone6), ("3." + "0." * 15 + zone6)
    old_index = dnsanswer.Index(zone.drafts(CONFIG, now=NOW))
    for name in ("2.100.51.198.in-addr.arpa", HOP1_6):
        assert ask(old_index, name)[1] == "rcode:NOERROR"
    changed = Chain(parse_prefix("2001:db8:5::1/64"), (Hop(name="Uno"), Hop(name="Dos")),
                    where="t")
    config = Config(chains=CONFIG.chains[:2] + (changed,), dns=CONFIG.dns)
    new_index = dnsanswer.Index(zone.drafts(config, now=NOW), previous=old_index)
    old_entries, new_entries = old_index._zones.entries, new_index._zones.entries
    assert old_entries.keys() == new_entries.keys()
    kept = {k for k in new_entries if new_entries[k] is old_entries[k]}
    assert len(kept) == len(new_entries) - 1
    v4 = dnsanswer._key(dns.name.from_text("100.51.198.in-addr.arpa"))
    assert v4 in kept and new_entries[v4].loaded is not None  # made ready before: still
    assert [e for e in new_index._zones._ready] == [new_entries[v4]]
    fresh = dnsanswer.Index(zone.drafts(config, now=NOW))
    for name in ("2.100.51.198.in-addr.arpa", HOP1_6,
                 HOP2_6, "34.2.0.192.in-addr.arpa"):
        got, want = ask(new_index, name), ask(fresh, name)
        assert got[1] == want[1] and got[0].answer == want[0].answer, name
    assert ask(new_index, HOP1_6)[0].answer[0][0] \
        .target.to_text() == "Uno."


def test_dnsanswer_truncates_over_udp_only(index):
    big, _, wire = ask(index, "100.51.198.in-addr.arpa", "NS")
    assert big.flags & dns.flags.TC and not big.answer and len(wire) <= 512
    fits, _, _ = ask(index, "100.51.198.in-addr.arpa", "NS", use_edns=0, payload=1232)
    assert not fits.flags & dns.flags.TC and len(fits.answer[0]) == len(NS)
    tcp, _, _ = ask(index, "100.51.198.in-addr.arpa", "NS", udp=False)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == len(NS)


@pytest.mark.parametrize("name,rdtype", [("100.51.198.in-addr.arpa", "NS"),
                                         ("example.com", "A"), ("9.100.51.198.in-addr.arpa", "A")])
@pytest.mark.parametrize("edns", [-1, 0])
def test_dnsanswer_slip_answer_is_truncated_and_no_larger_than_the_query(index, name, rdtype,
                                                                           edns):
    query = dns.message.make_query(name, rdtype, use_edns=edns, want_dnssec=edns >= 0).to_wire()
    reply, _ = index.answer(query, False)
    slip = dnsanswer.truncated(reply, query)
    r = dns.message.from_wire(slip)
    assert len(slip) <= len(query)
    assert r.flags & dns.flags.TC and not r.answer and not r.authority
    assert r.id == dns.message.from_wire(query).id and r.rcode() == \
        dns.message.from_wire(reply).rcode()
    assert r.question == dns.message.from_wire(query).question
    assert (r.edns, bool(r.ednsflags & dns.flags.DO)) == ((0, True) if edns >= 0 else (-1, False))


MALFORMED = [
    (b"\x12\x34\x01", None, "drop:malformed"),
    (dns.message.make_response(dns.message.make_query("example.com", "A")).to_wire(), None,
     "drop:response"),
    (b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07abc", dns.rcode.FORMERR,
     "rcode:FORMERR"),
    (dns.message.make_query("2.100.51.198.in-addr.arpa", "PTR").to_wire() + b"\x00",
     dns.rcode.FORMERR, "rcode:FORMERR"),  # trailing junk
    (dns.message.make_query("2.100.51.198.in-addr.arpa", "PTR", use_edns=1).to_wire(),
     dns.rcode.BADVERS, "rcode:BADVERS"),
    (dns.message.make_query("2.100.51.198.in-addr.arpa", "PTR", use_edns=0, options=[
        dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"12345")]).to_wire(),
     dns.rcode.FORMERR, "rcode:FORMERR"),  # RFC 7873 5.2.2: a cookie of a bad length
]


@pytest.mark.parametrize("wire,rcode,outcome", MALFORMED)
def test_dnsanswer_malformed_and_odd_messages(index, wire, rcode, outcome):
    reply, got = index.answer(wire, True)
    assert got == outcome
    if rcode is None:
        assert reply is None
    else:
        r = dns.message.from_wire(reply)
        assert r.rcode() == rcode and reply[:2] == wire[:2]


def test_dnsanswer_other_opcodes_are_notimp(index):
    q = dns.message.make_query("2.100.51.198.in-addr.arpa", "PTR")
    q.set_opcode(dns.opcode.STATUS)
    reply, outcome = index.answer(q.to_wire(), True)
    assert dns.message.from_wire(reply).rcode() == dns.rcode.NOTIMP and outcome == "rcode:NOTIMP"


def test_dnsanswer_notify_is_ignored(index):
    q = dns.message.make_query("100.51.198.in-addr.arpa", "SOA")
    q.set_opcode(dns.opcode.NOTIFY)
    assert index.answer(q.to_wire(), True) == (None, "drop:notify")


def test_dnsanswer_answers_chapters():
    """The server's zones (the daemon's: reverse drafts and forward names)
    answer a chapter: LABEL.NAME with its address, and that address's PTR
    with the story's last line, as the destination's."""
    story = Chain(parse_prefix("198.51.100.1/24"),
                  (Hop(name="Once.upon.a.time"), Hop(name="a.little.Packet"), Hop(name="The.end")),
                  where="t", name="story.example.net",
                  chapters=(Chapter("second", 2), Chapter("last", 3)))
    config = Config(chains=(story,), dns=DnsSettings(ns=("ns1.example.net",)))
    index = dnsanswer.Index(daemon._zones(config))
    for name, rdtype, want in [
            ("second.story.example.net", "A", "198.51.100.5"),
            ("LAST.story.example.net", "A", "198.51.100.6"),
            ("story.example.net", "A", "198.51.100.4"),
            ("5.100.51.198.in-addr.arpa", "PTR", "The.end."),
            ("6.100.51.198.in-addr.arpa", "PTR", "The.end."),
            ("4.100.51.198.in-addr.arpa", "PTR", "The.end.")]:
        r, outcome, _ = ask(index, name, rdtype)
        assert outcome == "rcode:NOERROR" and [rs[0].to_text() for rs in r.answer] == [want], name
    r, outcome, _ = ask(index, "second.story.example.net", "AAAA")
    assert outcome == "rcode:NOERROR" and r.answer == []           # NODATA: IPv4 only
    r, outcome, _ = ask(index, "third.story.example.net", "A")
    assert outcome == "rcode:NXDOMAIN"
    r, outcome, _ = ask(index, "7.100.51.198.in-addr.arpa", "PTR")
    assert outcome == "rcode:NXDOMAIN"                            # past the chapters
