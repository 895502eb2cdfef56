"""DNSSEC signing (routechain.dnssec): keys kept and refused as they must
be, and signed zones that BIND's dnssec-verify, Knot's kzonecheck -d on and
ldns-verify-zone accept, and reject once one signature is altered (so the
checks can fail). The checkers are real binaries; a missing one skips here
and fails under CI=true."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import time

import dns.dnssec
import dns.rdatatype
import pytest

from configfile import refusal
from conftest import cannot_run
from routechain import dnssec, zone
from routechain.errors import ConfigError
from test_zone import LAYOUTS, config_of

NOW = 1_700_000_000


def settings(tmp_path, **kw) -> dnssec.Settings:
    return dnssec.Settings(enabled=True, key_dir=str(tmp_path / "keys"), **kw)


def test_dnssec_keys_made_once_and_kept(tmp_path):
    """The first load makes a KSK and a ZSK (0600 in a 0700 directory); the
    next load reads the same keys back."""
    s = settings(tmp_path)
    first = dnssec.load_keys(s)
    assert first.made and first.ksk.dnskey.flags == 257 and first.zsk.dnskey.flags == 256
    assert first.ksk.algorithm == first.zsk.algorithm == 13
    assert os.stat(tmp_path / "keys").st_mode & 0o777 == 0o700
    for role in ("ksk", "zsk"):
        assert os.stat(tmp_path / "keys" / f"{role}.pem").st_mode & 0o777 == 0o600
    again = dnssec.load_keys(s)
    assert not again.made
    assert (again.ksk.dnskey, again.zsk.dnskey) == (first.ksk.dnskey, first.zsk.dnskey)


def test_dnssec_ed25519_on_request(tmp_path):
    keys = dnssec.load_keys(settings(tmp_path, algorithm=15))
    assert keys.ksk.algorithm == keys.zsk.algorithm == 15


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_dnssec_key_readable_by_group_or_others_refused(tmp_path, mode):
    """The daemon's own key: not even its group may read it (a TSIG secret's
    may: files.secret_mode_refusal)."""
    s = settings(tmp_path)
    dnssec.load_keys(s)
    os.chmod(tmp_path / "keys" / "zsk.pem", mode)
    with pytest.raises(ConfigError, match=rf"zsk.pem: refusing DNSSEC key file: readable or "
                                          rf"writable by \w+ \(mode {mode:04o}\); chmod 600 it"):
        dnssec.load_keys(s)


def test_dnssec_keys_never_replaced_silently(tmp_path):
    """Another algorithm, or one key missing: refused, files untouched."""
    s = settings(tmp_path)
    dnssec.load_keys(s)
    before = (tmp_path / "keys" / "ksk.pem").read_bytes()
    with pytest.raises(ConfigError, match=r"ksk.pem: holds an algorithm 13 .* algorithm is 15"):
        dnssec.load_keys(settings(tmp_path, algorithm=15))
    (tmp_path / "keys" / "zsk.pem").unlink()
    with pytest.raises(ConfigError, match=r"zsk.pem: missing while .*ksk.pem exists"):
        dnssec.load_keys(s)
    assert (tmp_path / "keys" / "ksk.pem").read_bytes() == before
    assert not (tmp_path / "keys" / "zsk.pem").exists()


def test_dnssec_private_key_never_shown(tmp_path):
    keys = dnssec.load_keys(settings(tmp_path))
    pem = (tmp_path / "keys" / "ksk.pem").read_text()
    secret = "".join(pem.splitlines()[1:-1])
    for text in (repr(keys), str(keys), keys.describe()):
        assert secret not in text and "PRIVATE" not in text


def test_dnssec_default_key_dir_is_the_state_directory(monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/private/route-chain")
    assert str(dnssec.key_directory(dnssec.Settings())) == "/var/lib/private/route-chain/keys"
    monkeypatch.delenv("STATE_DIRECTORY")
    assert str(dnssec.key_directory(dnssec.Settings())) == dnssec.DEFAULT_KEY_DIR


def test_dnssec_signed_zone_validates_with_dnspython(tmp_path):
    """Every RRset has an RRSIG that validates against the zone's DNSKEY,
    and the NSEC chain runs through every owner back to the apex."""
    s = settings(tmp_path)
    keys = dnssec.load_keys(s)
    for z in zone.build(config_of(LAYOUTS[1][1]), now=NOW):
        signed = dnssec.sign(z, keys, s, time.time())
        data = {(r.name, r.rdtype): r for r in signed.rrsets if r.rdtype != dns.rdatatype.RRSIG}
        sigs = {(r.name, r.covers): r for r in signed.rrsets if r.rdtype == dns.rdatatype.RRSIG}
        assert set(data) == set(sigs)
        dnskey = data[z.origin, dns.rdatatype.DNSKEY]
        for key, rrset in data.items():
            dns.dnssec.validate(rrset, sigs[key], {z.origin: dnskey})
        nsec = {n: r[0].next for (n, t), r in data.items() if t == dns.rdatatype.NSEC}
        owner, seen = z.origin, []
        while True:
            seen.append(owner)
            owner = nsec[owner]
            if owner == z.origin:
                break
        assert seen == sorted({n for n, _ in data})
        assert abs(dnssec.expiration(signed) - time.time() - s.validity) < 5


def test_dnssec_due_within_refresh_margin(tmp_path):
    s = settings(tmp_path, validity=100, refresh=40)
    keys = dnssec.load_keys(s)
    signed = dnssec.sign(zone.build(config_of(LAYOUTS[0][1]), now=NOW)[0], keys, s, NOW)
    assert not dnssec.due(signed, s, NOW + 59)
    assert dnssec.due(signed, s, NOW + 60)
    assert not dnssec.due(zone.build(config_of(LAYOUTS[0][1]), now=NOW)[0], s, NOW + 1e9)


VERIFIERS = {
    "dnssec-verify": lambda origin, path: ["dnssec-verify", "-q", "-o", origin, str(path)],
    "kzonecheck": lambda origin, path: ["kzonecheck", "-d", "on", "-o", origin, str(path)],
    "ldns-verify-zone": lambda origin, path: ["ldns-verify-zone", str(path)],
}


def verify(checker: str, origin: str, path) -> subprocess.CompletedProcess:
    if shutil.which(checker) is None:
        cannot_run(f"{checker} is not installed (bind9-utils, knot-dnssecutils, ldnsutils)")
    return subprocess.run(VERIFIERS[checker](origin, path), capture_output=True, text=True,
                          timeout=60)


def signed_files(tmp_path, chains, algorithm=13):
    s = settings(tmp_path, algorithm=algorithm)
    keys = dnssec.load_keys(s)
    out = []
    for z in zone.build(config_of(chains)):
        path = tmp_path / z.filename
        path.write_text(dnssec.sign(z, keys, s, time.time()).to_text())
        out.append((z.origin.to_text(), path))
    return out


@pytest.mark.parametrize("algorithm", [13, 15])
@pytest.mark.parametrize("checker", sorted(VERIFIERS))
@pytest.mark.parametrize("name,chains,origins", LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_dnssec_signed_zone_passes_verifier(tmp_path, checker, algorithm, name, chains,
                                            origins):
    for origin, path in signed_files(tmp_path, chains, algorithm):
        done = verify(checker, origin, path)
        assert done.returncode == 0, f"{checker} {path.name}:\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("checker", sorted(VERIFIERS))
def test_dnssec_altered_signature_fails_verifier(tmp_path, checker):
    """One bit of one PTR's signature flipped in a copy: the verifier
    that accepted the original refuses the copy."""
    origin, path = signed_files(tmp_path, LAYOUTS[0][1])[0]
    assert verify(checker, origin, path).returncode == 0
    lines = path.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if "\tRRSIG\tPTR " in line)
    head, sig = lines[i].rsplit(" ", 1)
    raw = bytearray(base64.b64decode(sig + "=" * (-len(sig) % 4)))
    raw[5] ^= 0x01
    lines[i] = f"{head} {base64.b64encode(bytes(raw)).decode()}"
    copy = tmp_path / "altered.zone"
    copy.write_text("\n".join(lines) + "\n")
    done = verify(checker, origin, copy)
    assert done.returncode != 0, f"{checker} accepted an altered signature:\n{done.stdout}"


CONFIG = """\
[[chain]]
address = "172.22.130.241/28"
hops = ["a", "b"]
suffix = "story.dn42"

[[chain]]
address = "fd42:4242:1234::1/64"
hops = ["a", "b"]
suffix = "story.dn42"

[dns]
ns = ["ns1.story.dn42"]

[registry]
origin_as = 4242421234

[dnssec]
enabled = true
key_dir = "{keys}"
"""


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "routechain", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_dnssec_zone_command_exports_signed_zones_and_ds(tmp_path):
    """`route-chain zone` with [dnssec] writes signed zones that
    dnssec-verify accepts and prints each zone's DS; `route-chain registry`
    prints the same DS as ds-rdata; the keys made by the first command are
    the ones the second uses."""
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(keys=tmp_path / "keys"))
    done = cli("zone", "--config", config, "--output-dir", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "made DNSSEC keys: KSK" in done.stderr
    ds = {line.split("\t")[0]: line.split("\t", 4)[4]
          for line in done.stdout.splitlines() if "\tIN\tDS\t" in line}
    assert set(ds) == {"240-28.130.22.172.in-addr.arpa.", "130.22.172.in-addr.arpa.",
                       "0.0.0.0.4.3.2.1.2.4.2.4.2.4.d.f.ip6.arpa."}
    for path in sorted((tmp_path / "out").iterdir()):
        origin = path.name[:-len(".zone")].replace("_", "/") + "."
        result = verify("dnssec-verify", origin, path)
        assert result.returncode == 0, f"{path.name}:\n{result.stdout}{result.stderr}"
    again = cli("registry", "--config", config)
    assert again.returncode == 0, again.stderr
    assert "made DNSSEC keys" not in again.stderr
    rdata = [line.split(":", 1)[1].strip() for line in again.stdout.splitlines()
             if line.startswith("ds-rdata:")]
    assert rdata == [ds["240-28.130.22.172.in-addr.arpa."],
                     ds["0.0.0.0.4.3.2.1.2.4.2.4.2.4.d.f.ip6.arpa."]]


def test_dnssec_zone_command_signs_the_chapters(tmp_path):
    """A story's name and its chapters: the signed forward zone and the
    reverse zone holding the chapter's PTR pass dnssec-verify, and both
    chapter records are signed."""
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(keys=tmp_path / "keys").replace(
        'suffix = "story.dn42"\n', 'suffix = "story.dn42"\nname = "tale.dn42"\n'
        'chapters = { mid = 2 }\n', 1))
    done = cli("zone", "--config", config, "--output-dir", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    files = {p.name: p for p in (tmp_path / "out").iterdir()}
    for name, owner, rdtype in [("tale.dn42.zone", "mid", "A"),
                                ("240-28.130.22.172.in-addr.arpa.zone", "244", "PTR")]:
        text = files[name].read_text()
        assert re.search(rf"^{owner}\t\d+\tIN\t{rdtype}\t", text, re.MULTILINE), text
        assert re.search(rf"^{owner}\t\d+\tIN\tRRSIG\t{rdtype} ", text, re.MULTILINE), text
        result = verify("dnssec-verify", name[:-len(".zone")] + ".", files[name])
        assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"


def test_dnssec_own_signing_equals_dnspython(tmp_path):
    """Ed25519 signatures are deterministic (RFC 8032), so every RRSIG of a
    signed zone must equal, byte for byte, the one dnspython's sign() makes
    for the same RRset, key and times: the canonical form is held to a
    second implementation."""
    s = settings(tmp_path, algorithm=15)
    keys = dnssec.load_keys(s)
    now = 1_800_000_000
    compared = 0
    for z in zone.build(config_of(LAYOUTS[1][1] + LAYOUTS[5][1] + LAYOUTS[10][1]), now=NOW):
        signed = dnssec.sign(z, keys, s, now)
        rrsets = [r for r in signed.rrsets if r.rdtype != dns.rdatatype.RRSIG]
        sigs = {(r.name, r.covers): r[0] for r in signed.rrsets
                if r.rdtype == dns.rdatatype.RRSIG}
        for rrset in rrsets:
            key = keys.ksk if rrset.rdtype in (dns.rdatatype.DNSKEY, dns.rdatatype.CDS,
                                               dns.rdatatype.CDNSKEY) else keys.zsk
            theirs = dns.dnssec.sign(rrset, key.private, z.origin, key.dnskey,
                                     inception=now - dnssec.INCEPTION_SLACK,
                                     expiration=now + s.validity, origin=z.origin)
            assert sigs[rrset.name, rrset.rdtype] == theirs, rrset
            compared += 1
    assert compared > 30


@pytest.mark.parametrize("table, message", [
    ("enabled = true\nalgorithm = 14", r"3: algorithm 14: route-chain signs with 13"),
    ("algorithm = 8", r"2: .*algorithm.*8"),
    ("validity = 3600\nrefresh = 3600", r"3: refresh 3600 must be less than validity"),
    ("validity = 3600", r"2: validity 3600 must be more than refresh 604800"),
    ("validity = 30", r"2: .*validity.*30"),
    ("enable = true", r"2: .*enable"),
])
def test_dnssec_bad_settings_name_the_line(tmp_path, table, message):
    assert re.match(rf"route-chain\.toml:{message}", refusal(tmp_path, f"[dnssec]\n{table}\n"))


def test_dnssec_settings_read(tmp_path):
    from routechain import config
    path = tmp_path / "c.toml"
    path.write_text('[dnssec]\nenabled = true\nalgorithm = 15\nkey_dir = "/k"\n'
                    'validity = 86400\nrefresh = 3600\n')
    assert config.load(path).dnssec == dnssec.Settings(True, 15, "/k", 86400, 3600)
    path.write_text("")
    assert config.load(path).dnssec == dnssec.Settings()
