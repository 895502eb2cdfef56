"""Zone transfers out (routechain.xfr, tsig, notify) without namespaces: the
pure parts by tables, and the server on loopback asked by dnspython's own
transfer client (an independent reader of the messages and their TSIG).

    dns.query.xfr / dns.query.inbound_xfr ──TCP──▶ 127.0.0.1:P  dns.Server
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import struct
import threading
import time

import dns.flags
import dns.message
import dns.opcode
import dns.name
import dns.query
import dns.rdatatype
import dns.tsig
import dns.zone
import pytest

from routechain import dns as rdns, notify, tsig, xfr, zone
from routechain.chain import Chain, Hop, parse_prefix
from routechain.config import Config, DnsSettings
from routechain.errors import ConfigError

SECRET = bytes(range(32))
KEY = tsig.Key("xfr", "hmac-sha256", SECRET)
DKEY = KEY.dns_key()


def config(names: list[str], chains: int = 1) -> Config:
    return Config(chains=tuple(
        Chain(parse_prefix(f"2001:db8:{i:x}::1/64"), tuple(Hop(name=n) for n in names),
              where="t") for i in range(chains)), dns=DnsSettings(ns=("ns.example.net",)))


@pytest.mark.parametrize("a, b, greater", [
    (2, 1, True), (1, 2, False), (1, 1, False), (0, 0xFFFFFFFF, True),
    (0xFFFFFFFF, 0, False), (0x7FFFFFFF, 0, True), (0x80000000, 0, False)])
def test_xfr_serial_arithmetic_is_rfc1982(a, b, greater):
    assert xfr.serial_gt(a, b) is greater


@pytest.mark.parametrize("old, proposed, new", [
    (100, 200, 200), (200, 100, 201), (200, 200, 201), (0xFFFFFFFF, 5, 5),
    (0xFFFFFFFF, 0xFFFFFFFF, 0)])
def test_xfr_changed_zone_serial_always_rises(old, proposed, new):
    assert xfr.next_serial(old, proposed) == new and xfr.serial_gt(new, old)


POLICY = xfr.policy([ipaddress.ip_network("192.0.2.0/24")], ["xfr"],
                    [("198.51.100.7", None), ("2001:db8::53", "xfr")], [KEY])
XFR = dns.name.from_text("xfr")


@pytest.mark.parametrize("client, key, refusal", [
    ("192.0.2.9", XFR, None), ("192.0.2.9", None, "unsigned"),
    ("192.0.2.9", dns.name.from_text("other"), "badkey"), ("203.0.113.1", XFR, "address"),
    ("198.51.100.7", None, None), ("198.51.100.8", None, "address"),
    ("2001:db8::53", XFR, None), ("2001:db8::53", None, "unsigned"), ("::1", None, "address"),
    ("fe80::1%eth0", None, "address")])
def test_xfr_policy_table(client, key, refusal):
    assert POLICY.refusal(client, key) == refusal


def test_xfr_transfers_are_off_by_default():
    assert not xfr.Policy().enabled and xfr.Policy().refusal("127.0.0.1", None) == "address"


def transferred(versions: xfr.Versions) -> xfr.Versions:
    """versions, every one rendered as a transfer would."""
    for v in versions.by_origin.values():
        v.rendered()
    return versions


def test_xfr_unchanged_zone_keeps_its_version_and_serial():
    first = transferred(xfr.Versions.first(zone.build(config(["a", "b"]), now=1000)))
    again = first.next(zone.build(config(["a", "b"]), now=2000))
    assert again.changed == () and again.zones[0].soa[0].serial == 1000
    edited = again.next(zone.build(config(["a", "c"]), now=1000))
    key = first.zones[0].origin_key
    assert edited.changed == (key,)
    assert edited.zones[0].soa[0].serial == 1001
    (diff,) = edited.by_origin[key].diffs
    assert (diff.old_serial, diff.new_serial, len(diff.deleted), len(diff.added)) == \
        (1000, 1001, 1, 1)


def test_xfr_version_nobody_transferred_leaves_no_differences():
    """A changed zone whose version was never rendered for a transfer gets
    a greater serial and no differences (no secondary can hold it: IXFR
    from an older serial falls back to AXFR), and nothing is rendered."""
    first = xfr.Versions.first(zone.build(config(["a", "b"]), now=1000))
    edited = first.next(zone.build(config(["a", "c"]), now=1000))
    (version,) = edited.by_origin.values()
    assert version.serial == 1001 and version.diffs == () and not version.rendered_yet


def test_xfr_drafts_make_the_versions_zones_make_and_no_zone_is_made(monkeypatch):
    """Versions from zone.drafts hold what they hold from zone.build (zones,
    serials, rendered records, differences), and neither a first build nor
    a reload, changed or not, makes a zone of dnspython objects: drafts are
    compared and rendered as text."""
    two = lambda names, now: config(names, 2)  # noqa: E731 - two chains, two zones
    built = transferred(xfr.Versions.first(zone.build(two(["a", "b"], 0), now=1000)))
    made = []
    monkeypatch.setattr(zone.Draft, "zone", lambda d, real=zone.Draft.zone: (
        made.append(d.origin), real(d))[1])
    drafted = transferred(xfr.Versions.first(zone.drafts(two(["a", "b"], 0), now=1000)))
    assert made == []
    assert [v.rendered() for v in drafted.by_origin.values()] == \
        [v.rendered() for v in built.by_origin.values()]
    cfg = two(["a", "b"], 0)
    edited_cfg = Config(chains=(cfg.chains[0], Chain(parse_prefix("2001:db8:1::1/64"),
                                                     (Hop(name="a"), Hop(name="c")), where="t")),
                        dns=cfg.dns)
    again = drafted.next(zone.drafts(cfg, now=2000))
    assert again.changed == ()
    edited = again.next(zone.drafts(edited_cfg, now=1000))
    built_edited = built.next(zone.build(edited_cfg, now=1000))
    changed = built.zones[1].origin_key  # 2001:db8:1::/64's
    assert made == [] and edited.changed == (changed,) == built_edited.changed
    assert edited.by_origin[changed].diffs == built_edited.by_origin[changed].diffs
    assert [z.soa[0].serial for z in edited.zones] == [1000, 1001]
    assert [(z.origin, z.rrsets) for z in edited.zones] == \
        [(z.origin, z.rrsets) for z in built_edited.zones]
    (diff,) = edited.by_origin[changed].diffs
    assert (diff.old_serial, diff.new_serial, len(diff.deleted), len(diff.added)) == \
        (1000, 1001, 1, 1)


def test_xfr_draft_renders_as_its_zone_byte_for_byte():
    """A draft's records rendered from its text (for AXFR and IXFR) are the
    bytes its dnspython zone renders, on random stories (RFC 2317 zones in
    each name form, '+' alternatives, names dnspython escapes), at a serial
    other than the build's."""
    from test_zone import random_config
    rng = random.Random(1995)
    for _ in range(40):
        c = random_config(rng, rng.randrange(1, 8))
        for d in zone.drafts(c, now=1000):
            assert xfr._render_draft(d, 4242) == xfr._render(xfr._with_serial(d.zone(), 4242))


def test_xfr_server_of_drafts_transfers_only_when_asked_to(monkeypatch):
    """With transfers off the server keeps no version and makes no zone
    before a query; with them on, neither the start, the transfers nor a
    reload make a zone of dnspython objects (AXFR is rendered from the
    drafts' text), AXFR of a draft's zone is the zone zone.build makes, and
    a reload that changes nothing moves no serial."""
    c = config([f"hop{k}.story" for k in range(5)], 2)
    with rdns.Server(zone.drafts(c, now=1000), [("127.0.0.1", 0)]) as srv:
        assert srv._versions is None and not srv.index._zones._ready
        origin = zone.build(c, now=1000)[0].origin
        with pytest.raises(Exception):
            pull(srv, origin)
    made = []
    real = zone.Draft.zone
    monkeypatch.setattr(zone.Draft, "zone", lambda d: made.append(d.origin) or real(d))
    with rdns.Server(zone.drafts(c, now=1000), [("127.0.0.1", 0)],
                     transfers=POLICY_LOCAL) as srv:
        for ref in zone.build(c, now=1000):
            got = pull(srv, ref.origin)
            ours = {(r.name, r.rdtype, str(rd)) for r in ref.rrsets for rd in r}
            theirs = {(n.derelativize(ref.origin), rds.rdtype, str(rd))
                      for n, node in got.nodes.items() for rds in node for rd in rds}
            assert theirs == ours
        srv.reload(zone.drafts(c, now=2000), transfers=POLICY_LOCAL)
        assert made == []
        assert [z.soa[0].serial for z in srv.zones] == [1000, 1000]


def test_xfr_history_is_bounded():
    versions = transferred(xfr.Versions.first(zone.build(config(["a0", "b"]), now=1)))
    for k in range(1, xfr.HISTORY + 5):
        versions = versions.next(zone.build(config([f"a{k}", "b"]), now=1))
    assert len(versions.by_origin[versions.zones[0].origin_key].diffs) == xfr.HISTORY


@pytest.fixture
def server():
    srv = rdns.Server(zone.build(config([f"hop{k}.story" for k in range(30)], 3), now=1000),
                      [("127.0.0.1", 0)], transfers=POLICY_LOCAL)
    with srv:
        yield srv


POLICY_LOCAL = xfr.policy([ipaddress.ip_network("127.0.0.0/8")], ["xfr"], [], [KEY])


def pull(srv, origin, rdtype="AXFR", serial=0, key=DKEY) -> dns.zone.Zone | list:
    port = srv.addresses[0][1]
    if rdtype == "AXFR":
        z = dns.zone.Zone(origin)
        q = dns.message.make_query(origin, dns.rdatatype.AXFR)
        if key is not None:
            q.use_tsig(key)
        dns.query.inbound_xfr("127.0.0.1", z, query=q, port=port, timeout=5)
        return z
    return list(dns.query.xfr("127.0.0.1", origin, rdtype=dns.rdatatype.IXFR, serial=serial,
                              port=port, keyring={key.name: key} if key else None,
                              keyname=key.name if key else None, timeout=5))


def test_xfr_axfr_equals_the_zone_and_is_signed(server):
    for z in server.zones:
        got = pull(server, z.origin)
        ours = {(r.name, r.rdtype, str(rd)) for r in z.rrsets for rd in r}
        theirs = {(name, rds.rdtype, str(rd)) for name, rds in
                  ((n.derelativize(z.origin), rds) for n, node in got.nodes.items()
                   for rds in node) for rd in rds}
        assert theirs == ours
    assert server.counters()["xfr:axfr"] == len(server.zones)


def test_xfr_ixfr_sends_the_difference_and_old_clients_get_everything(server):
    """A secondary that transferred serial 1000 gets the step to 1001."""
    origin = server.zones[0].origin
    pull(server, origin)  # the secondary's first AXFR: serial 1000 is held
    names = [f"hop{k}.story" for k in range(30)]
    names[4] = "changed.story"
    server.reload(zone.build(config(names, 3), now=1000), transfers=POLICY_LOCAL)
    messages = pull(server, origin, "IXFR", serial=1000)
    records = [(r.rdtype, str(rd)) for m in messages for r in m.answer for rd in r]
    assert [t for t, _ in records] == [dns.rdatatype.SOA, dns.rdatatype.SOA,
                                       dns.rdatatype.PTR, dns.rdatatype.SOA,
                                       dns.rdatatype.PTR, dns.rdatatype.SOA]
    assert "hop4.story." in records[2][1] and "changed.story." in records[4][1]
    pull(server, origin, "IXFR", serial=1)  # older than the history: the whole zone
    up = pull(server, origin, "IXFR", serial=1001)
    assert [r.rdtype for m in up for r in m.answer] == [dns.rdatatype.SOA]
    c = server.counters()
    assert (c["xfr:axfr"], c["xfr:ixfr"], c["xfr:ixfr_full"], c["xfr:uptodate"]) == \
        (1, 1, 1, 1)


def test_xfr_wrong_key_unsigned_and_udp_are_refused_and_counted(server):
    origin = server.zones[0].origin
    wrong = dns.tsig.Key("xfr", bytes(32), dns.tsig.HMAC_SHA256)
    with pytest.raises(Exception):
        pull(server, origin, key=wrong)
    with pytest.raises(Exception):
        pull(server, origin, key=None)
    q = dns.message.make_query(origin, dns.rdatatype.AXFR)
    q.use_tsig(DKEY)
    r = dns.query.udp(q, "127.0.0.1", port=server.addresses[0][1], timeout=2)
    assert r.rcode() == dns.rcode.REFUSED
    c = server.counters()
    assert (c["xfr_refused:badsig"], c["xfr_refused:unsigned"], c["xfr_refused:udp"]) == \
        (1, 1, 1)


def test_xfr_reload_mid_transfer_does_not_change_what_streams():
    """A 3000-record zone read slowly while reloads change it: the transfer
    is the zone as it was when it started, each message at most 64 KiB."""
    names = [f"hop{k}.a-long-story-name-to-fill-messages" for k in range(250)]
    zs = zone.build(config(names, 1), now=1000)
    srv = rdns.Server(zs, [("127.0.0.1", 0)], transfers=POLICY_LOCAL)
    with srv, socket.create_connection(srv.addresses[0]) as s:
        origin = zs[0].origin
        q = dns.message.make_query(origin, dns.rdatatype.AXFR)
        q.use_tsig(DKEY)
        wire = q.to_wire()
        s.sendall(struct.pack("!H", len(wire)) + wire)
        for k in range(3):
            srv.reload(zone.build(config([f"x{k}"] + names[1:], 1), now=1000),
                       transfers=POLICY_LOCAL)
        f = s.makefile("rb")
        serials, count, sizes = set(), 0, []
        ctx = None
        while True:
            size = struct.unpack("!H", f.read(2))[0]
            sizes.append(size)
            m = dns.message.from_wire(f.read(size), keyring={DKEY.name: DKEY},
                                      request_mac=q.mac if ctx is None else b"",
                                      tsig_ctx=ctx, multi=True, xfr=True)
            ctx = m.tsig_ctx
            for r in m.answer:
                if r.rdtype == dns.rdatatype.SOA:
                    serials.add(r[0].serial)
                else:
                    count += len(r)
                    assert all("x0" not in str(rd) for rd in r)
            if len(serials) == 1 and count and m.answer[-1].rdtype == dns.rdatatype.SOA \
                    and count >= len(names) + 1:
                break
        assert serials == {1000} and max(sizes) <= 65535


def test_tsig_key_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "k"
    path.write_text("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"^k: refusing TSIG key file: readable or writable "
                                          r"by others \(mode 0644\); chmod g-wx,o-rwx it$"):
        tsig.read_secret(path, "k")
    os.chmod(path, 0o640)  # a name server's group may read it
    assert tsig.read_secret(path, "k") == SECRET
    assert "AAEC" not in repr(tsig.Key("xfr", "hmac-sha256", SECRET))


def test_xfr_ten_thousand_chains_of_thirty_hops_transfer_in_seconds():
    """10,000 zones of 30 PTRs each (330,000 records with SOA and NS), every
    zone pulled by AXFR over two pipelined connections: the issue asks for
    5 s; on a loaded shared machine it took 2.8 s, the test allows 10."""
    chains = tuple(Chain(parse_prefix(f"2001:db8:{i // 4096:x}:{i % 4096:x}::1/64"),
                         tuple(Hop(name=f"hop{k}.story{i}.example.net") for k in range(30)),
                         where="t") for i in range(10_000))
    zs = zone.build(Config(chains=chains, dns=DnsSettings(ns=("ns.example.net",))), now=1000)
    srv = rdns.Server(zs, [("127.0.0.1", 0)], transfers=xfr.policy(
        [ipaddress.ip_network("127.0.0.1/32")], [], [], []))
    expected = {z.origin.to_wire(): sum(len(r) for r in z.rrsets) + 1 for z in zs}
    results: list[int] = []

    def pull(origins: list[bytes]) -> None:
        with socket.create_connection(srv.addresses[0]) as s, s.makefile("rb") as f:
            def send() -> None:
                for i, origin in enumerate(origins):
                    q = struct.pack("!HHHHHH", i, 0, 1, 0, 0, 0) + origin + b"\x00\xfc\x00\x01"
                    s.sendall(struct.pack("!H", len(q)) + q)
            threading.Thread(target=send, daemon=True).start()
            total = 0
            for origin in origins:
                got = 0
                while got < expected[origin]:
                    m = f.read(struct.unpack("!H", f.read(2))[0])
                    assert m[3] & 0x0F == 0 and m[12:12 + len(origin)].lower() == origin
                    got += struct.unpack("!H", m[6:8])[0]
                assert got == expected[origin]
                total += got
            results.append(total)

    with srv:
        origins = list(expected)
        threads = [threading.Thread(target=pull, args=(origins[k::2],)) for k in range(2)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        took = time.monotonic() - start
    assert sum(results) == sum(expected.values()) == 10_000 * 33
    print(f"10,000 zones, {sum(results)} records transferred in {took:.2f} s")
    assert took <= 10, took


def test_xfr_a_client_that_does_not_read_stalls_no_query():
    """300 AXFRs asked on one connection whose client reads nothing: the
    server waits on that connection alone, and UDP queries are answered
    at once meanwhile."""
    names = [f"hop{k}.a-long-story-name-to-fill-messages" for k in range(250)]
    zs = zone.build(config(names, 1), now=1000)
    srv = rdns.Server(zs, [("127.0.0.1", 0)], transfers=xfr.policy(
        [ipaddress.ip_network("127.0.0.1/32")], [], [], []))
    with srv, socket.create_connection(srv.addresses[0]) as hog:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        q = dns.message.make_query(zs[0].origin, dns.rdatatype.AXFR).to_wire()
        hog.sendall((struct.pack("!H", len(q)) + q) * 300)
        time.sleep(0.5)  # the server has filled what the socket holds and waits
        ptr = dns.message.make_query(zs[0].rrsets[2].name, "PTR")
        for _ in range(20):
            start = time.monotonic()
            r = dns.query.udp(ptr, "127.0.0.1", port=srv.addresses[0][1], timeout=2)
            assert r.answer and time.monotonic() - start < 0.5
        assert 1 <= srv.counters()["xfr:axfr"] < 300  # still stuck on the hog


def test_xfr_udp_refusals_and_tsig_errors_reflect_no_more_than_the_query(server):
    """Over UDP a transfer, or a query signed with a key we do not know or a
    bad MAC, gets an answer no larger than the query: nothing to amplify."""
    port = server.addresses[0][1]
    origin = server.zones[0].origin
    unknown = dns.tsig.Key("nobody", bytes(32), dns.tsig.HMAC_SHA256)
    wrong = dns.tsig.Key("xfr", bytes(32), dns.tsig.HMAC_SHA256)
    cases = []
    for rdtype, key in ((dns.rdatatype.AXFR, None), (dns.rdatatype.IXFR, DKEY),
                        (dns.rdatatype.SOA, unknown), (dns.rdatatype.SOA, wrong)):
        q = dns.message.make_query(origin, rdtype)
        if key is not None:
            q.use_tsig(key)
        cases.append(q.to_wire())
    before = server.counters()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for wire in cases:
            s.sendto(wire, ("127.0.0.1", port))
            reply = s.recv(65535)
            assert reply[:2] == wire[:2] and len(reply) <= len(wire)
    c = server.counters()
    assert c["xfr_refused:udp"] - before["xfr_refused:udp"] == 2
    assert (c["tsig:badkey"], c["tsig:badsig"]) == (before["tsig:badkey"] + 1,
                                                    before["tsig:badsig"] + 1)


def test_xfr_signed_soa_query_is_answered_signed(server):
    """How BIND and NSD check a primary's serial: a signed SOA query gets a
    signed answer, which dnspython verifies with the key."""
    q = dns.message.make_query(server.zones[0].origin, dns.rdatatype.SOA)
    q.use_tsig(DKEY)
    r = dns.query.udp(q, "127.0.0.1", port=server.addresses[0][1], timeout=2)
    assert r.had_tsig and r.answer[0][0].serial == server.zones[0].soa[0].serial
    assert server.counters()["tsig:signed"] == 1


def notified_server(monkeypatch, listener: socket.socket, key: str | None):
    monkeypatch.setattr(notify, "FIRST_WAIT", 0.1)
    monkeypatch.setattr(notify, "TRIES", 3)
    secondary = notify.Secondary("127.0.0.1", listener.getsockname()[1], key)
    policy = xfr.policy([], [], [("127.0.0.1", key)], [KEY])
    return rdns.Server(zone.build(config(["a", "b"]), now=1000), [("127.0.0.1", 0)],
                       transfers=policy, secondaries=(secondary,))


def test_notify_is_signed_retried_until_acknowledged_and_counted(monkeypatch):
    """The secondary ignores the first NOTIFY and answers the second: one
    sent, one retried, one acked; each signed with its key (checked by
    dnspython), from the server's own address, after a wait that grows."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(3)
        srv = notified_server(monkeypatch, listener, "xfr")
        with srv:
            arrivals = []
            for attempt in range(2):
                wire, peer = listener.recvfrom(65535)
                arrivals.append(time.monotonic())
                m = dns.message.from_wire(wire, keyring={DKEY.name: DKEY})
                assert m.opcode() == dns.opcode.NOTIFY and m.had_tsig and m.flags & dns.flags.AA
                assert m.question[0].name == srv.zones[0].origin and peer[0] == "127.0.0.1"
                assert m.answer[0][0].serial == 1000
            r = dns.message.make_response(m)
            listener.sendto(r.to_wire(), peer)
            deadline = time.monotonic() + 3
            while srv.counters()["notify:acked"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            c = srv.counters()
        assert (c["notify:sent"], c["notify:retried"], c["notify:acked"], c["notify:failed"]) \
            == (1, 1, 1, 0)
        assert arrivals[1] - arrivals[0] >= 0.09


def test_notify_without_answer_fails_after_its_tries_and_is_logged(monkeypatch, caplog):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        srv = notified_server(monkeypatch, listener, None)
        with srv:
            deadline = time.monotonic() + 5  # 0.1 + 0.2 + 0.4 s of waiting
            while srv.counters()["notify:failed"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            c = srv.counters()
    assert (c["notify:sent"], c["notify:retried"], c["notify:failed"]) == (1, 2, 1)
    assert "no answer after 3 tries" in caplog.text


def test_notify_holds_a_bounded_number_in_flight(monkeypatch):
    """Five zones changed, two NOTIFYs may wait for an answer at once: the
    secondary sees two until it answers, then the rest, each once."""
    monkeypatch.setattr(notify, "IN_FLIGHT", 2)
    monkeypatch.setattr(notify, "FIRST_WAIT", 5.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        secondary = notify.Secondary("127.0.0.1", listener.getsockname()[1])
        srv = rdns.Server(zone.build(config(["a"], 5), now=1000), [("127.0.0.1", 0)],
                          transfers=xfr.policy([], [], [("127.0.0.1", None)], []),
                          secondaries=(secondary,))
        with srv:
            listener.settimeout(1.0)
            first = [listener.recvfrom(65535) for _ in range(2)]
            listener.settimeout(0.3)
            with pytest.raises(socket.timeout):
                listener.recvfrom(65535)  # a third waits for a slot
            seen = set()
            pending = first
            listener.settimeout(1.0)
            while pending:
                wire, peer = pending.pop()
                m = dns.message.from_wire(wire)
                seen.add(m.question[0].name)
                listener.sendto(dns.message.make_response(m).to_wire(), peer)
                if len(seen) + len(pending) < 5:
                    pending.append(listener.recvfrom(65535))
            deadline = time.monotonic() + 3
            while srv.counters()["notify:acked"] < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            c = srv.counters()
        assert seen == {z.origin for z in srv.zones}
        assert (c["notify:sent"], c["notify:retried"], c["notify:acked"]) == (5, 0, 5)
