"""Reverse zones (routechain.zone): which zones, which records, and master
files that BIND's named-checkzone, Knot's kzonecheck and NSD's nsd-checkzone
all accept. The checkers are real binaries; a missing one skips here and
fails under CI=true."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import shutil
import subprocess

import dns.name
import dns.rdatatype
import pytest

from conftest import cannot_run
from routechain import zone
from routechain.chain import Chain, Chapter, Hop, parse_prefix
from routechain.config import Config, DnsSettings

NOW = 1_700_000_000


def chain(prefix: str, names: list, suffix: str | None = None) -> Chain:
    """A chain from hop names: "*" is silent, None unnamed, and a list is a
    hop followed by its '+' alternatives."""
    def hop(n):
        if isinstance(n, list):
            return Hop(name=n[0], alternatives=tuple(hop(a) for a in n[1:]))
        return Hop(silent=True) if n == "*" else Hop(name=n)
    hops = tuple(hop(n) for n in names)
    return Chain(parse_prefix(prefix), hops, where=f"test {prefix}", suffix=suffix)


ECMP = ["in", ["north", "north.b", "*", None], "out"]


STORY = ["Once.upon.a.time", "a.little.packet", "*", "set.out", None, "The.end"]

# name, chains, expected zone origins
LAYOUTS = [
    ("v4-24", [chain("198.51.100.1/24", STORY)], ["100.51.198.in-addr.arpa."]),
    ("v4-27-rfc2317", [chain("198.51.100.33/27", STORY)],
     ["32-27.100.51.198.in-addr.arpa.", "100.51.198.in-addr.arpa."]),
    ("v4-29-two-in-one-24", [chain("192.0.2.1/29", ["a", "b"]), chain("192.0.2.9/29", ["c"])],
     ["0-29.2.0.192.in-addr.arpa.", "8-29.2.0.192.in-addr.arpa.", "2.0.192.in-addr.arpa."]),
    ("v4-20-crossing-24", [chain("198.18.0.254/20", ["a", "b", "c"])],
     ["0.18.198.in-addr.arpa.", "1.18.198.in-addr.arpa."]),
    ("v4-16", [chain("198.18.0.1/16", ["a"])], ["18.198.in-addr.arpa."]),
    ("v6-64", [chain("2001:db8:5::1/64", STORY)], ["0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."]),
    ("v6-56", [chain("2001:db8:0:100::1/56", ["a", "b"])], ["1.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."]),
    ("v6-62", [chain("2001:db8:0:4::1/62", ["a"])], ["4.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."]),
    ("v4-27-ecmp", [chain("198.51.100.33/27", ECMP)],
     ["32-27.100.51.198.in-addr.arpa.", "100.51.198.in-addr.arpa."]),
    ("v6-64-ecmp", [chain("2001:db8:5::1/64", ECMP)], ["0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."]),
    ("mixed-suffix", [chain("198.51.100.1/24", ["Once", "upon"], suffix="story.example.net"),
                      chain("2001:db8:5::1/64", ["*", "x"], suffix="story.example.net")],
     ["100.51.198.in-addr.arpa.", "0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."]),
]


def config_of(chains, **dns) -> Config:
    return Config(chains=tuple(chains), dns=DnsSettings(**(dns or {})))


def records(z: zone.Zone) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for rrset in z.rrsets:
        key = (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype))
        out.setdefault(key, []).extend(r.to_text() for r in rrset)
    return out


@pytest.mark.parametrize("name,chains,origins", LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_zone_origins(name, chains, origins):
    zones = zone.build(config_of(chains), now=NOW)
    assert sorted(z.origin.to_text() for z in zones) == sorted(origins)
    for z in zones:
        assert z.filename == z.origin.to_text(omit_final_dot=True) + ".zone"
        assert z.rrsets[0].rdtype == dns.rdatatype.SOA and z.rrsets[0].name == z.origin
        assert z.rrsets[1].rdtype == dns.rdatatype.NS and z.rrsets[1].name == z.origin


def lookup(zones: list[zone.Zone], owner: str) -> list[str]:
    """PTR targets for owner as a server would find them: the zone with the
    longest origin holding it, one CNAME followed inside that zone."""
    name = dns.name.from_text(owner)
    holders = [z for z in zones if name.is_subdomain(z.origin)]
    if not holders:
        return []
    z = max(holders, key=lambda z: len(z.origin))
    recs = records(z)
    if (name.to_text(), "CNAME") in recs:
        name = dns.name.from_text(recs[(name.to_text(), "CNAME")][0])
    return recs.get((name.to_text(), "PTR"), [])


@pytest.mark.parametrize("name,chains,origins", LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_zone_has_a_ptr_for_every_named_hop_and_nothing_else(name, chains, origins):
    zones = zone.build(config_of(chains), now=NOW)
    named = 0
    for c in chains:
        for k, hop in enumerate(c.hops, 1):
            for b, router in enumerate((hop,) + hop.alternatives):
                owner = ipaddress.ip_address(c.branch_address(k, b)).reverse_pointer
                assert lookup(zones, owner) == ([f"{router.name}."] if router.name else []), owner
                named += bool(router.name)
    ptrs_in_own_zones = sum(len(rrset) for z in zones for rrset in z.rrsets
                            if rrset.rdtype == dns.rdatatype.PTR
                            and max((o for o in zones if rrset.name.is_subdomain(o.origin)),
                                    key=lambda o: len(o.origin)) is z)
    assert ptrs_in_own_zones == named


def test_zone_rfc2317_layout():
    zones = {z.origin.to_text(): z for z in
             zone.build(config_of([chain("198.51.100.33/27", STORY)]), now=NOW)}
    z27, parent = zones["32-27.100.51.198.in-addr.arpa."], zones["100.51.198.in-addr.arpa."]
    assert z27.origin.to_text() == "32-27.100.51.198.in-addr.arpa."
    assert records(z27)[("34.32-27.100.51.198.in-addr.arpa.", "PTR")] == ["Once.upon.a.time."]
    assert ("36.32-27.100.51.198.in-addr.arpa.", "PTR") not in records(z27)  # silent hop
    assert ("38.32-27.100.51.198.in-addr.arpa.", "PTR") not in records(z27)  # unnamed hop
    p = records(parent)
    assert p[("34.100.51.198.in-addr.arpa.", "CNAME")] == ["34.32-27.100.51.198.in-addr.arpa."]
    # The CNAME's target sits in the same file, so any server answers CNAME + PTR.
    assert p[("34.32-27.100.51.198.in-addr.arpa.", "PTR")] == ["Once.upon.a.time."]
    assert ("32-27.100.51.198.in-addr.arpa.", "NS") not in p  # no zone cut in the stand-in


def test_zone_parent_records_for_rfc2317():
    c = config_of([chain("198.51.100.33/27", STORY), chain("2001:db8:5::1/64", ["x"])],
                  ns=("ns1.example.net", "ns2.example.net"))
    text = zone.parent_records(c)
    lines = text.splitlines()
    assert lines[0] == ("; 198.51.100.32/27 (test 198.51.100.33/27): add to the zone "
                        "100.51.198.in-addr.arpa.")
    assert lines[1] == "$ORIGIN 100.51.198.in-addr.arpa."
    assert lines[2:4] == ["32-27\tIN\tNS\tns1.example.net.", "32-27\tIN\tNS\tns2.example.net."]
    cnames = lines[4:]
    assert len(cnames) == 32
    assert cnames[0] == "32\tIN\tCNAME\t32.32-27" and cnames[-1] == "63\tIN\tCNAME\t63.32-27"


def test_zone_parent_records_empty_without_classless_chains():
    assert zone.parent_records(config_of([chain("198.51.100.1/24", ["a"])])) == ""


def test_zone_defaults_ns_rname_serial():
    z, = zone.build(config_of([chain("198.51.100.1/24", ["a"], suffix="story.example.net")]),
                    now=NOW)
    soa = z.rrsets[0][0]
    assert soa.mname.to_text() == "ns.story.example.net."
    assert soa.rname.to_text() == "hostmaster.story.example.net."
    assert soa.serial == NOW
    assert [r.target.to_text() for r in z.rrsets[1]] == ["ns.story.example.net."]
    z, = zone.build(config_of([chain("198.51.100.1/24", ["a"])]), now=NOW)
    assert z.rrsets[1][0].target.to_text() == "ns.route-chain.invalid."


def test_zone_settings_are_used():
    c = config_of([chain("198.51.100.1/24", ["a"])], ns=("ns1.example.net", "ns2.example.net"),
                  soa_mname="primary.example.net", soa_rname="dns.example.net", serial=7,
                  ttl=60, refresh=1, retry=2, expire=3, minimum=4)
    z, = zone.build(c, now=NOW)
    soa = z.rrsets[0]
    assert soa.ttl == 60 and soa[0].to_text() == (
        "primary.example.net. dns.example.net. 7 1 2 3 4")
    assert sorted(r.target.to_text() for r in z.rrsets[1]) == [
        "ns1.example.net.", "ns2.example.net."]


def test_zone_serial_grows_with_time():
    c = config_of([chain("198.51.100.1/24", ["a"])])
    first, = zone.build(c, now=NOW)
    later, = zone.build(c, now=NOW + 1)
    assert later.soa[0].serial == first.soa[0].serial + 1


def test_zone_chain_without_names_has_no_zone():
    assert zone.build(config_of([chain("198.51.100.1/24", []),
                                 chain("192.0.2.1/24", ["*", None])]), now=NOW) == []


def test_zone_text_keeps_case_and_parses_back():
    import dns.zone
    z, = zone.build(config_of([chain("198.51.100.1/24", ["Once.Upon", "xn--caf-dma"])]), now=NOW)
    text = z.to_text()
    assert "2\t3600\tIN\tPTR\tOnce.Upon.\n" in text
    assert text.startswith("; 100.51.198.in-addr.arpa. written by route-chain\n"
                           "$ORIGIN 100.51.198.in-addr.arpa.\n$TTL 3600\n")
    parsed = dns.zone.from_text(text, origin=z.origin, relativize=False)
    assert parsed.find_rdataset("2.100.51.198.in-addr.arpa.", "PTR")[0].target.to_text() == \
        "Once.Upon."


def test_zone_export_writes_one_file_per_zone(tmp_path):
    c = config_of([chain("198.51.100.33/27", STORY), chain("2001:db8:5::1/64", STORY)])
    paths = zone.export(c, tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted([
        "32-27.100.51.198.in-addr.arpa.zone", "100.51.198.in-addr.arpa.zone",
        "0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.zone"])
    assert all(p.parent == tmp_path / "out" for p in paths)


CHECKERS = {
    "named-checkzone": lambda origin, path: ["named-checkzone", "-k", "fail", "-n", "fail",
                                             "-i", "full", origin, str(path)],
    "kzonecheck": lambda origin, path: ["kzonecheck", "-o", origin, str(path)],
    "nsd-checkzone": lambda origin, path: ["nsd-checkzone", origin, str(path)],
}


@pytest.mark.parametrize("checker", sorted(CHECKERS))
@pytest.mark.parametrize("name,chains,origins", LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_zone_files_pass_checker(tmp_path, checker, name, chains, origins):
    if shutil.which(checker) is None:
        cannot_run(f"{checker} is not installed (bind9-utils, knot-dnssecutils, nsd)")
    c = config_of(chains, ns=("ns1.example.net", "ns2.example.org"),
                  soa_rname="hostmaster.example.net")
    paths = zone.export(c, tmp_path)
    assert len(paths) == len(origins)
    for path in paths:
        origin = path.name[:-len(".zone")]
        done = subprocess.run(CHECKERS[checker](origin, path), capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, f"{checker} {path.name}:\n{done.stdout}{done.stderr}"


def test_zone_files_pass_checkers_with_default_ns(tmp_path):
    """The default NS (ns.route-chain.invalid) is out of zone and passes too."""
    if shutil.which("named-checkzone") is None:
        cannot_run("named-checkzone is not installed (bind9-utils)")
    for path in zone.export(config_of([chain("198.51.100.33/27", STORY)]), tmp_path):
        origin = path.name[:-len(".zone")]
        done = subprocess.run(CHECKERS["named-checkzone"](origin, path), capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr


# --- the fast writer (zone.drafts) against dnspython (zone.build) -------------

# Names as a story or a config can hand them over: plain host names, IDNA
# (turned into A-labels by dnspython's own codec), characters a master file
# must escape, labels of exactly 63 octets, names near the 255-octet limit.
def random_name(rng) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.choice(["café.example", "straße.example", "ü", "日本.example"])
    if kind == 1:
        return rng.choice(["a\\@b.example", "dollar$sign", "quote\\\"d", "semi\\;colon.x",
                           "back\\\\slash", "paren\\(x\\)", "sp\\032ace", "star*",
                           "under_score.-dash-", "trailing.dot."])
    if kind == 2:
        return ".".join("x" * 63 for _ in range(3)) + "." + "y" * rng.randrange(1, 62)
    if kind == 3:
        return "L" * 63
    words = ["Once", "upon", "a", "time", "packet", "ROUTER", "hop-7", "x1", "Z"]
    return ".".join(rng.choice(words) for _ in range(rng.randrange(1, 6)))


def random_hop(rng, family: int, room: list[int]):
    kind = rng.random()
    if kind < 0.12:
        return Hop(silent=True)
    if kind < 0.2:
        return Hop()
    alternatives = ()
    if rng.random() < 0.15 and room:
        alts = []
        for _ in range(rng.randrange(1, 3)):
            r = rng.random()
            if r < 0.3 and room:  # at an address written in the story
                from routechain.hopprops import Props
                alts.append(Hop(name=random_name(rng), props=Props(
                    address=ipaddress.ip_address(room.pop()))))
            elif r < 0.4:
                alts.append(Hop(silent=True))
            else:
                alts.append(Hop(name=random_name(rng)))
        alternatives = tuple(alts)
    return Hop(name=random_name(rng), alternatives=alternatives)


# (prefix template, hops at most): octet, classless (RFC 2317) and nibble
# zones, prefixes on a boundary and between two (several zones per chain).
SHAPES = [("198.18.{i}.1/24", 40), ("198.{j}.0.250/20", 12), ("198.18.{i}.{o}/27", 20),
          ("198.18.{i}.{o}/29", 4), ("198.18.{i}.{o}/30", 2), ("198.18.{i}.{o}/25", 60),
          ("10.{i}.0.1/16", 5), ("2001:db8:{i:x}::1/64", 40), ("2001:db8:{i:x}::ff/62", 30),
          ("2001:db8:{i:x}::fff0/60", 20), ("2001:db8:{i:x}::1/124", 12),
          ("2001:db8:{i:x}::1/56", 3), ("198.51.100.{q}/27", 25), ("198.51.100.{q}/27", 25)]


def random_config(rng, n: int) -> Config:
    chains = []
    shared = rng.sample(range(0, 256, 32), 8)  # /27s sharing one /24: one stand-in parent zone
    for i in range(n):
        shape, most = rng.choice(SHAPES)
        text = shape.format(i=i + 1, j=19 + i, q=shared.pop(),
                            o=rng.choice([0, 64, 128]) if "/25" not in shape
                            else rng.choice([0, 128]))
        iface = parse_prefix(text)
        if iface.version == 4 and iface.network.prefixlen > 24:
            iface = parse_prefix(f"{iface.network.network_address + 1}/{iface.network.prefixlen}")
        hops_n = rng.randrange(1, most + 1)
        host = int(iface.ip)
        last = int(iface.network.broadcast_address) - (1 if iface.version == 4 else 0)
        room = list(range(host + hops_n + 3, min(last, host + hops_n + 10) + 1))
        rng.shuffle(room)
        hops = [random_hop(rng, iface.version, room) for _ in range(hops_n)]
        hops[-1] = Hop(name=hops[-1].name, silent=hops[-1].silent)  # no '+' at the destination
        suffix = rng.choice([None, None, "story.example.net"])
        # Chapters: their addresses carry the destination's PTR.
        chapters = () if hops_n < 2 or rng.random() < 0.5 else tuple(
            Chapter(f"c{n}", rng.randint(2, hops_n)) for n in range(rng.randint(1, 3)))
        try:
            try:
                chains.append(Chain(iface, tuple(hops), where=f"random {i}", suffix=suffix,
                                    chapters=chapters))
            except Exception as e:  # noqa: BLE001 - no room for the chapters: go without
                assert "fit in" in str(e) or "no free address" in str(e), e
                chains.append(Chain(iface, tuple(hops), where=f"random {i}", suffix=suffix))
        except Exception as e:  # noqa: BLE001 - e.g. no room left: a shape that cannot be
            assert "no free address" in str(e) or "do not fit" in str(e), e
    ns = rng.choice([None, ("ns1.example.net", "NS2.Example.org")])
    return Config(chains=tuple(chains), dns=DnsSettings(ns=ns, ttl=rng.choice([60, 3600]),
                                                        zone_name_form=rng.choice("-/_"))
                  if ns else DnsSettings())


def test_zone_fast_writer_equals_dnspython_byte_for_byte():
    """Random stories, fixed seed: every master file the fast writer makes
    is the file dnspython writes, and the Zone it hands the server holds
    the same RRsets; the files come in the same order with the same names."""
    rng = random.Random(2317)
    compared = chapters = 0
    for round_ in range(40):  # bounded
        c = random_config(rng, rng.randrange(1, 8))
        chapters += sum(len(ch.chapters) for ch in c.chains
                        if ch.hops[-1].name and not ch.hops[-1].silent)
        reference = zone.build(c, now=NOW)
        fast = zone.drafts(c, now=NOW)
        assert [d.filename for d in fast] == [z.filename for z in reference]
        for ref, draft in zip(reference, fast):
            assert draft.to_text() == ref.to_text(), f"round {round_}: {ref.origin}"
            assert draft.zone().rrsets == ref.rrsets
            assert draft.zone().to_text() == ref.to_text()
            compared += 1
    assert compared > 100
    assert chapters > 20, chapters


def test_zone_chapter_addresses_carry_the_last_line():
    """A chapter's address has the destination's PTR (the story's last
    line), in both writers; a silent destination gives it none."""
    named = chain("198.51.100.1/27", ["one", "two", "the.end"])
    told = dataclasses.replace(named, chapters=(Chapter("a", 2), Chapter("b", 3)))
    silent = dataclasses.replace(
        chain("2001:db8:7::1/64", ["one", "two", "*"]), chapters=(Chapter("a", 2),))
    c = Config(chains=(told, silent))
    records = {(str(owner), target) for z in zone.build(c, now=NOW)
               for owner, _, target in [(r.name, r.rdtype, r[0].to_text()) for r in z.rrsets]}
    assert ("5.0-27.100.51.198.in-addr.arpa.", "the.end.") in records
    assert ("6.0-27.100.51.198.in-addr.arpa.", "the.end.") in records
    assert not any(owner.startswith("5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.") for owner, _ in records)
    drafts = {d.origin: d.to_text() for d in zone.drafts(c, now=NOW)}
    assert "\n6\t3600\tIN\tPTR\tthe.end.\n" in drafts["0-27.100.51.198.in-addr.arpa."]


def test_zone_fast_writer_refuses_what_dnspython_refuses():
    """A name dnspython cannot hold (a label over 63 octets, a name over 255)
    fails the export as it fails the reference, with dnspython's error."""
    import dns.exception
    for name in ("x" * 64, ".".join(["y" * 63] * 4) + ".zz"):
        c = config_of([chain("198.51.100.1/24", [name])])
        with pytest.raises(dns.exception.DNSException) as ref:
            zone.build(c, now=NOW)
        with pytest.raises(type(ref.value)):
            zone.drafts(c, now=NOW)  # at once: the server would make the zone on a query


def test_zone_export_writes_what_the_fast_writer_renders(tmp_path):
    c = config_of([chain("198.51.100.33/27", STORY), chain("2001:db8:5::1/64", ECMP)])
    paths = zone.export(c, tmp_path)
    assert [p.read_text() for p in paths] == [z.to_text() for z in zone.build(c)]


@pytest.mark.parametrize("form, label, filename", [
    ("-", "32-27", "32-27.100.51.198.in-addr.arpa.zone"),
    ("/", "32/27", "32_27.100.51.198.in-addr.arpa.zone"),
    ("_", "32_27", "32_27.100.51.198.in-addr.arpa.zone")])
def test_zone_rfc2317_name_forms(tmp_path, form, label, filename):
    """[dns] zone_name_form names the classless zone, the parent's CNAMEs
    and NS point at that name, and the file name holds no '/'."""
    c = config_of([chain("198.51.100.33/27", STORY)], ns=("ns1.example.net",),
                  zone_name_form=form)
    zones = {z.origin.to_text(): z for z in zone.build(c, now=NOW)}
    child = f"{label}.100.51.198.in-addr.arpa."
    assert set(zones) == {child, "100.51.198.in-addr.arpa."}
    assert records(zones[child])[(f"34.{child}", "PTR")] == ["Once.upon.a.time."]
    assert records(zones["100.51.198.in-addr.arpa."])[
        ("34.100.51.198.in-addr.arpa.", "CNAME")] == [f"34.{child}"]
    lines = zone.parent_records(c).splitlines()
    assert lines[2] == f"{label}\tIN\tNS\tns1.example.net."
    assert lines[3] == f"32\tIN\tCNAME\t32.{label}"
    paths = zone.export(c, tmp_path)
    assert sorted(p.name for p in paths) == sorted([filename, "100.51.198.in-addr.arpa.zone"])
    assert [d.to_text() for d in zone.drafts(c, now=NOW)] == \
        [z.to_text() for z in zone.build(c, now=NOW)]
    assert [d.filename for d in zone.drafts(c)] == [p.name for p in paths]
    if shutil.which("kzonecheck") is None:
        cannot_run("kzonecheck is not installed (knot-dnssecutils)")
    done = subprocess.run(["kzonecheck", "-o", child, str(tmp_path / filename)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
