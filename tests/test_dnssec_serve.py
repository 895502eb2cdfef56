"""The built-in server with [dnssec] on, over loopback: answers to DO
queries that validate (dnspython, and unbound and delv with the printed DS
as the only trust anchor), answers without DO byte for byte as an unsigned
server gives them, what a DO answer weighs against its query, signatures
made again before they expire, a reload re-signed, signed transfers that
dnssec-verify accepts, and keys that survive a restart."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import time
from pathlib import Path

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.zone
import pytest

from conftest import cannot_run
from routechain import dns as rdns
from routechain import dnssec, dnsanswer, xfr, zone
from routechain.config import Config, DnsSettings, DnssecSettings
from test_zone import chain, config_of

STORY4 = ["Once.upon.a.time", "a.little.packet", "*", "set.out", None, "The.end"]
STORY6 = ["far", "farther", None, "home"]
CHAINS = [chain("198.51.100.33/27", STORY4, suffix="story.example"),
          chain("2001:db8:5::1/64", STORY6, suffix="story.example")]
CLASSLESS = dns.name.from_text("32-27.100.51.198.in-addr.arpa.")
V6 = dns.name.from_text("0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.")

# (query name, type, expected rcode, what it shows)
QUERIES = [
    ("34.32-27.100.51.198.in-addr.arpa.", "PTR", "NOERROR", "a story PTR"),
    ("35.100.51.198.in-addr.arpa.", "PTR", "NOERROR", "CNAME to the classless PTR"),
    ("2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR",
     "NOERROR", "an IPv6 story PTR"),
    ("60.32-27.100.51.198.in-addr.arpa.", "PTR", "NXDOMAIN", "past the last hop"),
    ("9.9.9.9.0.0.0.0.0.0.0.0.0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR", "NXDOMAIN",
     "an IPv6 name nobody has"),
    ("34.32-27.100.51.198.in-addr.arpa.", "TXT", "NOERROR", "NODATA"),
    ("0.0.0.0.0.0.0.0.0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR", "NOERROR",
     "NODATA at an empty non-terminal"),
    ("32-27.100.51.198.in-addr.arpa.", "DNSKEY", "NOERROR", "the keys"),
    ("32-27.100.51.198.in-addr.arpa.", "CDS", "NOERROR", "CDS"),
    ("32-27.100.51.198.in-addr.arpa.", "ANY", "NOERROR", "ANY: one RRset"),
]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_signer(tmp_path, clock=time.time, **kw) -> dnssec.Signer:
    s = DnssecSettings(enabled=True, key_dir=str(tmp_path / "keys"), **kw)
    return dnssec.Signer(dnssec.load_keys(s), s, clock)


def build(chains=CHAINS):
    return zone.build(config_of(chains), now=1_000_000)


def drafts(chains=CHAINS):
    """The zones as the daemon gives them to its server (zone.drafts)."""
    return zone.drafts(config_of(chains), now=1_000_000)


def ask(srv, name, rdtype, do=True, tcp=False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, want_dnssec=do, use_edns=0)
    q.flags &= ~dns.flags.RD
    send = dns.query.tcp if tcp else dns.query.udp
    return send(q, "127.0.0.1", port=srv.addresses[0][1], timeout=5)


def keys_of(srv, origin) -> dict:
    return {origin: ask(srv, origin, "DNSKEY", tcp=True).find_rrset(
        dns.message.ANSWER, origin, dns.rdataclass.IN, dns.rdatatype.DNSKEY)}


def check_signed(response: dns.message.Message, keys: dict, now: float | None = None) -> int:
    """Every RRset in the answer and authority sections has an RRSIG in
    the same section that validates; returns how many were checked."""
    checked = 0
    for section in (response.answer, response.authority):
        sigs = {(r.name, r.covers): r for r in section if r.rdtype == dns.rdatatype.RRSIG}
        data = [r for r in section if r.rdtype != dns.rdatatype.RRSIG]
        assert len(sigs) == len(data), response
        for rrset in data:
            dns.dnssec.validate(rrset, sigs[rrset.name, rrset.rdtype], keys, now=now)
            checked += 1
    return checked


def covers(nsec: dns.rrset.RRset, name: dns.name.Name, origin: dns.name.Name) -> bool:
    """NSEC owner < name < next, in canonical order, wrapping at the end."""
    owner, following = nsec.name, nsec[0].next
    if following == origin:
        return owner < name
    return owner < name < following


@pytest.fixture
def signed(tmp_path):
    signer = make_signer(tmp_path)
    with rdns.Server(drafts(), [("127.0.0.1", 0)], signer=signer) as srv:
        yield srv


@pytest.mark.parametrize("name,rdtype,rcode,what", QUERIES, ids=[q[3] for q in QUERIES])
def test_dnssec_serve_do_answer_validates(signed, name, rdtype, rcode, what):
    qname = dns.name.from_text(name)
    origin = CLASSLESS if qname.is_subdomain(CLASSLESS) else V6 if qname.is_subdomain(V6) \
        else dns.name.from_text("100.51.198.in-addr.arpa.")
    response = ask(signed, qname, rdtype)
    assert dns.rcode.to_text(response.rcode()) == rcode
    assert response.flags & dns.flags.AA and response.ednsflags & dns.flags.DO
    assert check_signed(response, keys_of(signed, origin)) >= 1
    nsecs = [r for r in response.authority if r.rdtype == dns.rdatatype.NSEC]
    if rcode == "NXDOMAIN":
        assert any(covers(n, qname, origin) for n in nsecs), response
        encloser = qname.parent()
        while encloser != origin and not any(n.name == encloser for n in nsecs) \
                and not any(n[0].next.is_subdomain(encloser) and n.name < encloser
                            for n in nsecs):
            encloser = encloser.parent()
        wildcard = dns.name.Name((b"*",)).concatenate(encloser)
        assert any(covers(n, wildcard, origin) for n in nsecs), response
    elif not response.answer:  # NODATA: the name's NSEC lacks the type, or one covers it
        assert any((n.name == qname and dns.rdatatype.from_text(rdtype) not in n[0].windows_types
                    if hasattr(n[0], "windows_types") else n.name == qname)
                   or covers(n, qname, origin) for n in nsecs), response


def test_dnssec_serve_without_do_is_byte_for_byte_unsigned(tmp_path):
    """Without DO (no EDNS, or EDNS with DO clear) the signed server's
    Index answers every query exactly as an unsigned one does."""
    zones = build()
    plain = dnsanswer.Index(zones)
    lazy = dnsanswer.Index(drafts())  # the unsigned server's: drafts made on first query
    signer = make_signer(tmp_path)
    signed_index = dnsanswer.Index([signer.sign(z) for z in zones])
    compared = 0
    for name, rdtype, _, _ in QUERIES:
        if rdtype in ("DNSKEY", "CDS", "ANY"):
            continue  # records only the signed zone has
        for edns in (-1, 0):
            for _ in range(2):  # the first query fills the memo, the second reads it
                q = dns.message.make_query(name, rdtype, use_edns=edns, want_dnssec=False)
                wire = q.to_wire()
                assert signed_index.answer(wire, True) == plain.answer(wire, True) \
                    == lazy.answer(wire, True)
                compared += 1
    assert compared == 28
    # No query above had DO: the signed forms were never rendered.
    memo = signed_index._positive
    assert memo and all(entry.edns_do is None for entry in memo.values())
    q = dns.message.make_query(QUERIES[0][0], "PTR", want_dnssec=True)
    reply = dns.message.from_wire(signed_index.answer(q.to_wire(), True)[0])
    assert [r.rdtype for r in reply.answer] == [dns.rdatatype.PTR, dns.rdatatype.RRSIG]
    assert sum(entry.edns_do is not None for entry in memo.values()) == 1


def test_dnssec_serve_do_amplification_is_bounded(signed, capsys):
    """Response/query size of DO answers over UDP: every one fits
    PAYLOAD_MAX, none is more than 11 times its query (the worst, an IPv4
    NXDOMAIN with two NSECs, is 609/61 bytes; without DO 149/61); the table goes to
    the test's output."""
    rows = []
    for name, rdtype, _, what in QUERIES:
        q = dns.message.make_query(name, rdtype, want_dnssec=True, use_edns=0,
                                   payload=dnsanswer.PAYLOAD_MAX)
        wire = q.to_wire()
        reply, _ = signed.index.answer(wire, True)
        assert not reply[2] & 0x02, f"{what}: truncated"
        assert len(reply) <= dnsanswer.PAYLOAD_MAX
        rows.append((len(reply) / len(wire), len(wire), len(reply), what))
    with capsys.disabled():
        print("\nDO amplification (response/query bytes):")
        for ratio, q, r, what in sorted(rows, reverse=True):
            print(f"  {ratio:5.2f} = {r:4d}/{q:3d}  {what}")
    assert max(r[0] for r in rows) < 11


def test_dnssec_serve_signatures_refreshed_before_expiry(tmp_path):
    """validity 120 s, refresh 60 s, on a clock the test moves: nothing is
    due at +59 s; at +61 s every zone is signed again with a greater serial,
    and its answers validate at a time the first signatures had expired."""
    clock = Clock(2_000_000_000)
    signer = make_signer(tmp_path, clock, validity=120, refresh=60)
    srv = rdns.Server(drafts(), [("127.0.0.1", 0)], signer=signer)
    before = {z.origin: (z.soa[0].serial, dnssec.expiration(z)) for z in srv.zones}
    clock.now += 59
    assert srv.resign_due() == 0
    clock.now += 2
    assert srv.resign_due() == len(before)
    assert srv.counters()["dnssec:resigned"] == len(before)
    for z in srv.zones:
        serial, expires = before[z.origin]
        assert xfr.serial_gt(z.soa[0].serial, serial)
        assert dnssec.expiration(z) == expires + 61
    with srv:
        late = clock.now + 100  # past the first signatures' expiry
        response = ask(srv, QUERIES[0][0], "PTR")
        keys = {CLASSLESS: ask(srv, CLASSLESS, "DNSKEY", tcp=True).answer[0]}
        assert check_signed(response, keys, now=late) == 1
        with pytest.raises(dns.dnssec.ValidationFailure):
            check_signed(response, keys, now=late + 100)


def test_dnssec_serve_refresh_thread_on_the_real_clock(tmp_path):
    """Signatures valid 4 s, refreshed 2 s before expiry: within 6 s the
    server has signed again on its own, and what it serves validates now."""
    signer = make_signer(tmp_path, validity=4 + dnssec.INCEPTION_SLACK, refresh=2)
    # validity counts from now (the inception is an hour back): 4 s left.
    signer = dnssec.Signer(signer.keys, DnssecSettings(
        enabled=True, key_dir=str(tmp_path / "keys"), validity=4, refresh=2))
    with rdns.Server(drafts(), [("127.0.0.1", 0)], signer=signer) as srv:
        first = {z.origin: dnssec.expiration(z) for z in srv.zones}
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and srv.counters()["dnssec:resigned"] < len(first):
            time.sleep(0.1)
        assert srv.counters()["dnssec:resigned"] >= len(first)
        assert all(dnssec.expiration(z) > first[z.origin] for z in srv.zones)
        time.sleep(max(0, max(first.values()) + 0.5 - time.time()))  # the first ones expired
        response = ask(srv, QUERIES[0][0], "PTR")
        assert check_signed(response, keys_of(srv, CLASSLESS)) == 1


def test_dnssec_serve_signing_turned_on_by_reload_is_refreshed_too(tmp_path):
    """A server started unsigned, signed from a reload on with 4 s
    signatures: the re-signing thread wakes for them (it does not sleep out
    the hour it waits with nothing signed), and a reload without a signer
    serves the zones unsigned again."""
    keys = make_signer(tmp_path).keys
    signer = dnssec.Signer(keys, DnssecSettings(enabled=True, key_dir=str(tmp_path / "keys"),
                                                validity=4, refresh=2))
    with rdns.Server(drafts(), [("127.0.0.1", 0)]) as srv:
        assert all(dnssec.expiration(z) is None for z in srv.zones)
        time.sleep(0.2)  # the thread is asleep, with nothing signed
        srv.reload(drafts(), signer=signer)
        assert all(dnssec.expiration(z) is not None for z in srv.zones)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and srv.counters()["dnssec:resigned"] == 0:
            time.sleep(0.1)
        assert srv.counters()["dnssec:resigned"] >= 1
        srv.reload(drafts(), signer=None)
        assert all(dnssec.expiration(z) is None for z in srv.zones)
        assert not ask(srv, QUERIES[0][0], "PTR").answer[1:]  # no RRSIG


def test_dnssec_serve_reload_with_changed_story_is_resigned(tmp_path):
    """A changed hop name: its zone gets a greater serial and a PTR whose
    new RRSIG validates; a zone that did not change keeps its signatures."""
    signer = make_signer(tmp_path)
    with rdns.Server(drafts(), [("127.0.0.1", 0)], signer=signer) as srv:
        old = {z.origin: z for z in srv.zones}
        story = list(STORY4)
        story[0] = "Twice.upon.a.time"
        srv.reload(drafts([chain("198.51.100.33/27", story, suffix="story.example"),
                          CHAINS[1]]))
        new = {z.origin: z for z in srv.zones}
        assert new[V6] is old[V6]
        assert xfr.serial_gt(new[CLASSLESS].soa[0].serial, old[CLASSLESS].soa[0].serial)
        response = ask(srv, QUERIES[0][0], "PTR")
        assert response.answer[0][0].target.to_text() == "Twice.upon.a.time."
        assert check_signed(response, keys_of(srv, CLASSLESS)) == 1


def test_dnssec_serve_axfr_carries_the_signed_zone(tmp_path):
    """An AXFR of a signed zone holds DNSKEY, NSEC and RRSIGs, and the
    transferred copy passes dnssec-verify."""
    if shutil.which("dnssec-verify") is None:
        cannot_run("dnssec-verify is not installed (bind9-utils)")
    policy = xfr.policy([ipaddress.ip_network("127.0.0.0/8")], [], [], [])
    with rdns.Server(drafts(), [("127.0.0.1", 0)], transfers=policy,
                     signer=make_signer(tmp_path)) as srv:
        for origin in (CLASSLESS, V6):
            z = dns.zone.Zone(origin)
            dns.query.inbound_xfr("127.0.0.1", z, port=srv.addresses[0][1], timeout=10)
            types = {rds.rdtype for node in z.nodes.values() for rds in node}
            assert {dns.rdatatype.DNSKEY, dns.rdatatype.NSEC, dns.rdatatype.RRSIG,
                    dns.rdatatype.CDS, dns.rdatatype.CDNSKEY} <= types
            path = tmp_path / f"{origin}zone"
            z.to_file(str(path), relativize=False)
            done = subprocess.run(["dnssec-verify", "-q", "-o", origin.to_text(), str(path)],
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stdout + done.stderr


def test_dnssec_serve_keys_survive_a_restart(tmp_path):
    """The daemon's DNS side made twice from one config (a restart): the
    second serves the DNSKEYs the first made, and made none."""
    from routechain.daemon import DnsSide
    cfg = Config(chains=tuple(CHAINS), dns=DnsSettings(listen=(("127.0.0.1", 0),)),
                 dnssec=DnssecSettings(enabled=True, key_dir=str(tmp_path / "keys")))
    served = []
    for _ in range(2):
        with DnsSide(cfg) as side:
            side.start()
            srv = side._server
            served.append(keys_of(srv, CLASSLESS)[CLASSLESS])
            assert check_signed(ask(srv, QUERIES[0][0], "PTR"), keys_of(srv, CLASSLESS)) == 1
    assert served[0] == served[1] and len(served[0]) == 2
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["ksk.pem", "zsk.pem"]


def test_dnssec_serve_validating_resolver_says_ad(tmp_path):
    """unbound, with each zone's DS (as `route-chain zone` prints it) as its
    only trust anchors and the built-in server as the zones' stub, answers
    a story PTR and an NXDOMAIN with AD; delv, asking through it with the
    same anchors, says "fully validated". Then a server whose signatures
    were made by another key: unbound answers SERVFAIL (so AD can fail)."""
    for tool in ("unbound", "delv", "dig"):
        if shutil.which(tool) is None:
            cannot_run(f"{tool} is not installed (unbound, bind9-dnsutils)")
    from test_dns import free_port
    signer = make_signer(tmp_path)
    zones = build()
    origins = [z.origin for z in zones]
    with rdns.Server(zones, [("127.0.0.1", 0)], signer=signer) as srv:
        port = srv.addresses[0][1]
        resolver = free_port()
        anchors = [f"{o} DS {dnssec.ds(o, signer.keys).to_text()}" for o in origins]
        conf = tmp_path / "unbound.conf"
        conf.write_text("\n".join([
            "server:",
            f"  interface: 127.0.0.1@{resolver}", "  port: 53",
            "  do-ip6: no", "  do-not-query-localhost: no", "  username: \"\"",
            "  chroot: \"\"", f"  directory: \"{tmp_path}\"", "  pidfile: \"\"",
            "  use-syslog: no", f"  logfile: \"{tmp_path}/unbound.log\"", "  verbosity: 1",
            "  module-config: \"validator iterator\"", "  val-log-level: 2",
            "  harden-referral-path: no", "  qname-minimisation: no",
            *(f"  local-zone: \"{p}\" nodefault" for p in
              ("100.51.198.in-addr.arpa.", "8.b.d.0.1.0.0.2.ip6.arpa.")),
            *(f"  trust-anchor: \"{a}\"" for a in anchors),
            *(line for o in origins for line in
              ("stub-zone:", f"  name: \"{o}\"", f"  stub-addr: 127.0.0.1@{port}")),
            "remote-control:", "  control-enable: no", ""]))
        check = subprocess.run(["unbound-checkconf", str(conf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        unbound = subprocess.Popen(["unbound", "-d", "-c", str(conf)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            def dig(name, rdtype="PTR"):
                deadline = time.monotonic() + 10
                while True:
                    done = subprocess.run(["dig", "+dnssec", "+timeout=2", "+tries=1",
                                           "-p", str(resolver), "@127.0.0.1", name, rdtype],
                                          capture_output=True, text=True, timeout=20)
                    if "status:" in done.stdout or time.monotonic() > deadline:
                        return done.stdout
                    time.sleep(0.2)

            story = dig(QUERIES[0][0])
            assert "status: NOERROR" in story and " ad" in story.split("flags:")[1].split(";")[0]
            assert "Once.upon.a.time." in story
            missing = dig(QUERIES[3][0])
            assert "status: NXDOMAIN" in missing
            assert " ad" in missing.split("flags:")[1].split(";")[0], missing
            v6 = dig(QUERIES[4][0])
            assert "status: NXDOMAIN" in v6 and " ad" in v6.split("flags:")[1].split(";")[0]
            cname = dig(QUERIES[1][0])
            assert "status: NOERROR" in cname and " ad" in cname.split("flags:")[1].split(";")[0]

            anchor_file = tmp_path / "delv.anchors"
            anchor_file.write_text("trust-anchors {\n" + "".join(
                f'  "{o}" static-ds {" ".join(dnssec.ds(o, signer.keys).to_text().split()[:3])}'
                f' "{dnssec.ds(o, signer.keys).to_text().split()[3]}";\n'
                for o in origins) + "};\n")
            for name in (QUERIES[0][0], QUERIES[3][0]):
                done = subprocess.run(["delv", "-a", str(anchor_file), f"+root={CLASSLESS}",
                                       "-p", str(resolver), "@127.0.0.1", name, "PTR"],
                                      capture_output=True, text=True, timeout=30)
                assert "fully validated" in done.stdout, done.stdout + done.stderr

            # Signed by keys the anchors do not name: bogus, SERVFAIL, no data.
            srv.reload(zones, signer=dnssec.Signer(
                dnssec.load_keys(DnssecSettings(enabled=True, key_dir=str(tmp_path / "other"))),
                signer.settings))
            bogus = dig(QUERIES[2][0])
            assert "status: SERVFAIL" in bogus and "far." not in bogus, bogus
        finally:
            unbound.terminate()
            unbound.wait(timeout=10)


def sections(wire: bytes):
    m = dns.message.from_wire(wire)
    def rows(section):
        return sorted((r.name.to_text().lower(), r.rdtype, r.covers, r.ttl,
                       tuple(sorted(rd.to_text() for rd in r))) for r in section)
    return m.rcode(), m.flags, rows(m.answer), rows(m.authority), m.ednsflags, m.payload


def test_dnssec_serve_fast_negative_equals_slow_path(tmp_path):
    """Negative answers with DO come from the fast path's memo of rendered
    proofs: for every owner, a name below each, names beside, and the
    empty non-terminals, in every zone, each answer parses to exactly what
    the slow path (dnspython) gives, and the memo is used (no second
    rendering for the same proof)."""
    signer = make_signer(tmp_path)
    index = dnsanswer.Index([signer.sign(z) for z in build()])
    names = set()
    for entry in list(index._zones.entries.values()):
        loaded = index._zones.ready(entry)
        origin, all_names = loaded.zone.origin, loaded.names
        for n in all_names:
            names.update({n, dns.name.from_text("zz", n), dns.name.from_text("0.a", n)})
        names.add(dns.name.from_text("9.9.9", origin))
    compared = 0
    for name in sorted(names):
        for rdtype in ("PTR", "TXT", "A"):
            q = dns.message.make_query(name.to_text().lower(), rdtype, want_dnssec=True)
            q.flags = 0
            wire = q.to_wire()
            fast, outcome = index.answer(wire, True)
            slow, slow_outcome = index._slow.answer(wire, True)
            assert outcome == slow_outcome
            assert sections(fast) == sections(slow), name
            compared += 1
    assert compared > 200
    assert all(e.loaded.negative.denial is None or len(e.loaded.negative.denial.memo) < compared
               for e in index._zones.entries.values())


def test_dnssec_serve_signing_off_keeps_the_lazy_path(tmp_path, monkeypatch):
    """Signing off (and no transfers): the server keeps no versions and
    makes no zone whole before a query reaches it."""
    with rdns.Server(drafts(), [("127.0.0.1", 0)]) as srv:
        assert srv._versions is None
        assert all(e.loaded is None for e in srv.index._zones.entries.values())
        srv.reload(drafts())
        assert srv._versions is None
        assert all(e.loaded is None for e in srv.index._zones.entries.values())


def test_dnssec_serve_signs_a_zone_when_first_asked_never_at_start(tmp_path, monkeypatch):
    """Signing on: neither the start nor a reload makes or signs a zone; the
    first DO query to a zone signs that one, and its answer validates at
    once; a reload with one story changed gives that zone a new version,
    signed again when next asked, while the zones that did not change keep
    their versions (and the signatures they have)."""
    made = []
    real = zone.Draft.zone
    monkeypatch.setattr(zone.Draft, "zone", lambda d: made.append(d.origin) or real(d))
    with rdns.Server(drafts(), [("127.0.0.1", 0)], signer=make_signer(tmp_path)) as srv:
        versions = srv._versions.by_origin
        assert made == [] and all(v.signed is None for v in versions.values())
        response = ask(srv, QUERIES[0][0], "PTR")
        assert check_signed(response, keys_of(srv, CLASSLESS)) == 1
        assert made == [CLASSLESS.to_text()]
        assert [v.origin for v in versions.values() if v.signed is not None] == [CLASSLESS]
        first = versions[CLASSLESS.to_digestable()].signed
        ask(srv, V6, "SOA")  # the IPv6 zone signed too (a query without DO)
        v6 = versions[V6.to_digestable()]
        assert v6.signed is not None
        story = list(STORY4)
        story[1] = "a.big.packet"
        srv.reload(drafts([chain("198.51.100.33/27", story, suffix="story.example"),
                           CHAINS[1]]))
        assert made == [CLASSLESS.to_text(), V6.to_text()]  # the reload made nothing
        after = srv._versions.by_origin
        assert after[V6.to_digestable()] is v6
        # The classless zone and its /24 parent (whose draft holds the
        # CNAMEs and the records under them) changed: new versions, unsigned yet.
        changed = {v.origin for k, v in after.items() if v is not versions[k]}
        assert changed == {CLASSLESS, dns.name.from_text("100.51.198.in-addr.arpa.")}
        assert after[CLASSLESS.to_digestable()].signed is None
        response = ask(srv, "35.32-27.100.51.198.in-addr.arpa.", "PTR")
        assert response.answer[0][0].target.to_text() == "a.big.packet."
        assert check_signed(response, keys_of(srv, CLASSLESS)) == 1
        assert after[CLASSLESS.to_digestable()].signed is not first
        assert xfr.serial_gt(after[CLASSLESS.to_digestable()].serial, first.soa[0].serial)


def test_dnssec_serve_signed_server_without_do_equals_unsigned_server(tmp_path):
    """Over UDP and TCP, a signed server over drafts answers every query
    without DO byte for byte as the unsigned (lazy) server does."""
    with rdns.Server(drafts(), [("127.0.0.1", 0)]) as plain, \
            rdns.Server(drafts(), [("127.0.0.1", 0)], signer=make_signer(tmp_path)) as signed:
        compared = 0
        for name, rdtype, _, _ in QUERIES:
            if rdtype in ("DNSKEY", "CDS", "ANY"):
                continue
            for edns in (-1, 0):
                wire = dns.message.make_query(name, rdtype, use_edns=edns,
                                              want_dnssec=False).to_wire()
                replies = []
                for srv in (plain, signed):
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                        s.settimeout(5)
                        s.sendto(wire, srv.addresses[0])
                        replies.append(s.recv(65535))
                assert replies[0] == replies[1], name
                compared += 1
        assert compared == 14
