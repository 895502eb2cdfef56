"""DNSSEC for the zones the server holds: the keys, and a zone in, the same
zone signed out. The only module that imports dns.dnssec and cryptography.

Keys. One KSK (flags 257, signs the DNSKEY, CDS and CDNSKEY RRsets, and is
what the parent's DS names) and one ZSK (flags 256, signs everything else),
shared by every zone, kept as PKCS#8 PEM files `ksk.pem` and `zsk.pem` in
the key directory (`[dnssec] key_dir`, default `$STATE_DIRECTORY/keys`,
i.e. the unit's StateDirectory=, else /var/lib/route-chain/keys). Both are
made when neither exists (mode 0600, in a directory made 0700). They are
never replaced silently: one file without the other, a file that cannot be
read, one readable by group or others (files.check_secret_mode), or keys of another algorithm than
the configured one each stop the start with one line naming the file. A
private key never appears in a message or a repr.

Algorithm 13 (ECDSAP256SHA256) by default, 15 (ED25519) on request.

A signed zone is the zone with, at its apex, DNSKEY (both keys), CDS
(SHA-256 of the KSK) and CDNSKEY (the KSK) (RFC 7344), an NSEC chain over
every owner in canonical order (RFC 4034 4, 6.1; its TTL the negative TTL
of RFC 9077), and an RRSIG over every RRset. Signatures are valid from an
hour before signing (INCEPTION_SLACK, for clocks behind ours) for
`validity` seconds; `due()` says when a zone's signatures come within
`refresh` seconds of expiry, and the server signs it again then.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.rdtypes.ANY.RRSIG
import dns.rrset
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from . import files
from .settings import DNSSEC_ALGORITHMS as ALGORITHMS, DnssecSettings
from .errors import ConfigError
from .zone import Zone

INCEPTION_SLACK = 3600
DEFAULT_KEY_DIR = "/var/lib/route-chain/keys"
KSK_FLAGS, ZSK_FLAGS = 257, 256
_APEX_KSK_TYPES = (dns.rdatatype.DNSKEY, dns.rdatatype.CDS, dns.rdatatype.CDNSKEY)


Settings = DnssecSettings


def key_directory(settings: DnssecSettings) -> Path:
    """[dnssec] key_dir, else the unit's StateDirectory= ($STATE_DIRECTORY)
    /keys, else DEFAULT_KEY_DIR."""
    if settings.key_dir:
        return Path(settings.key_dir)
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) / "keys" if state else Path(DEFAULT_KEY_DIR)


@dataclass(frozen=True)
class Key:
    """One signing key: its role ("ksk" or "zsk"), the DNSKEY rdata, and the
    private key (never shown)."""

    role: str
    dnskey: object  # dns.rdtypes.ANY.DNSKEY.DNSKEY
    private: object = field(repr=False, compare=False)

    @property
    def tag(self) -> int:
        return dns.dnssec.key_id(self.dnskey)

    @property
    def algorithm(self) -> int:
        return int(self.dnskey.algorithm)


@dataclass(frozen=True)
class Keys:
    ksk: Key
    zsk: Key
    directory: Path
    made: bool = field(default=False, compare=False)  # made by this load

    def describe(self) -> str:
        """For the log: the tags and algorithm, nothing secret."""
        return (f"KSK {self.ksk.tag} and ZSK {self.zsk.tag}, algorithm {self.ksk.algorithm} "
                f"({ALGORITHMS[self.ksk.algorithm]}), in {self.directory}")


def load_keys(settings: Settings, create: bool = True) -> Keys:
    """The KSK and ZSK in settings' key directory; made there when neither
    exists and `create`. ConfigError naming the file for anything else."""
    directory = key_directory(settings)
    paths = {role: directory / f"{role}.pem" for role in ("ksk", "zsk")}
    present = {role: p.exists() for role, p in paths.items()}
    if not any(present.values()):
        if not create:
            raise ConfigError(f"{directory}: no DNSSEC keys (ksk.pem, zsk.pem); the daemon "
                              "makes them at its first start with [dnssec] enabled")
        return _make(directory, paths, settings.algorithm)
    for role, there in present.items():
        if not there:
            raise ConfigError(f"{paths[role]}: missing while "
                              f"{paths['ksk' if role == 'zsk' else 'zsk']} exists; refusing to "
                              "make a new key beside an old one (restore it, or move both away)")
    ksk = _load(paths["ksk"], "ksk", settings.algorithm)
    zsk = _load(paths["zsk"], "zsk", settings.algorithm)
    return Keys(ksk, zsk, directory)


def _load(path: Path, role: str, algorithm: int) -> Key:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read DNSSEC key: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        # The daemon's own key: its owner alone may read it (no group, as a
        # TSIG secret's may; files.secret_mode_refusal says why).
        files.check_secret_mode(os.fstat(f.fileno()).st_mode, str(path), "DNSSEC key file",
                                group_may_read=False)
        data = f.read()
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: not an unencrypted PKCS#8 PEM private key") from None
    found = _algorithm_of(private)
    if found is None:
        raise ConfigError(f"{path}: a key of a kind route-chain does not sign with "
                          f"(want algorithm {algorithm}, {ALGORITHMS.get(algorithm, '?')})")
    if found != algorithm:
        raise ConfigError(f"{path}: holds an algorithm {found} ({ALGORITHMS[found]}) key but "
                          f"[dnssec] algorithm is {algorithm}; keys are never replaced "
                          "silently: move both key files away to make new ones (and change "
                          "the DS at the parent)")
    return _key(role, private, found)


def _algorithm_of(private) -> int | None:
    if isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp256r1":
        return 13
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return 15
    return None


def _key(role: str, private, algorithm: int) -> Key:
    flags = KSK_FLAGS if role == "ksk" else ZSK_FLAGS
    return Key(role, dns.dnssec.make_dnskey(private.public_key(), algorithm, flags), private)


def _generate(algorithm: int):
    if algorithm == 13:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == 15:
        return ed25519.Ed25519PrivateKey.generate()
    raise ConfigError(f"[dnssec] algorithm {algorithm}: route-chain signs with 13 "
                      "(ECDSAP256SHA256) or 15 (ED25519)")


def _make(directory: Path, paths: dict[str, Path], algorithm: int) -> Keys:
    made = {}
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for role, path in paths.items():
            private = _generate(algorithm)
            pem = private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
            # O_EXCL: a key that appeared meanwhile is never overwritten.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            made[role] = _key(role, private, algorithm)
    except OSError as e:
        raise ConfigError(f"{e.filename or directory}: cannot make DNSSEC key: "
                          f"{e.strerror}") from None
    return Keys(made["ksk"], made["zsk"], directory, made=True)


# --- what the parent needs ---------------------------------------------------

def ds(origin: dns.name.Name, keys: Keys):
    """The DS rdata (SHA-256, RFC 4509) of the KSK for the zone origin."""
    return dns.dnssec.make_ds(origin, keys.ksk.dnskey, "SHA256")


def ds_lines(zones, keys: Keys) -> str:
    """Master-file DS records for the parent of each zone, given as
    (origin, TTL) pairs, ready to paste."""
    out = []
    for origin, ttl in zones:
        out.append(f"{origin.to_text()}\t{ttl}\tIN\tDS\t{ds(origin, keys).to_text()}")
    return "\n".join(out) + "\n" if out else ""


def export(zones, keys: Keys, settings: DnssecSettings, output_dir: Path, now: float):
    """Sign each zone and write its master file into output_dir (made if
    missing), one at a time: yields (path, zone) as each is written, so
    that a caller never holds more than one signed zone."""
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for z in zones:
            path = output_dir / z.filename
            path.write_text(sign(z, keys, settings, now).to_text(), encoding="ascii")
            yield path, z
    except OSError as e:
        raise ConfigError(f"{e.filename or output_dir}: cannot write zone: {e.strerror}") from None


# --- signing -----------------------------------------------------------------

def sign(zone: Zone, keys: Keys, settings: Settings, now: float) -> Zone:
    """zone with DNSKEY, CDS, CDNSKEY, NSEC and RRSIGs, signed at `now`."""
    origin, ttl = zone.origin, zone.soa.ttl
    negative_ttl = min(zone.soa.ttl, zone.soa[0].minimum)  # RFC 9077 3
    dnskey = dns.rrset.RRset(origin, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    dnskey.add(keys.ksk.dnskey, ttl)
    dnskey.add(keys.zsk.dnskey, ttl)
    cds = dns.rrset.RRset(origin, dns.rdataclass.IN, dns.rdatatype.CDS)
    cds.add(dns.dnssec.make_cds(origin, keys.ksk.dnskey, "SHA256"), ttl)
    cdnskey = dns.rrset.RRset(origin, dns.rdataclass.IN, dns.rdatatype.CDNSKEY)
    cdnskey.add(dns.dnssec.make_cdnskey(keys.ksk.private.public_key(), keys.ksk.algorithm,
                                        KSK_FLAGS), ttl)
    data = [*zone.rrsets[:2], dnskey, cds, cdnskey, *zone.rrsets[2:]]
    data += _nsec_chain(origin, data, negative_ttl)
    inception = int(now) - INCEPTION_SLACK
    expiration = int(now) + settings.validity
    signer = _wire(origin.labels).lower()
    tags = {"ksk": keys.ksk.tag, "zsk": keys.zsk.tag}
    out = []
    for rrset in data:
        key = keys.ksk if rrset.rdtype in _APEX_KSK_TYPES else keys.zsk
        rrsig = dns.rrset.RRset(rrset.name, dns.rdataclass.IN, dns.rdatatype.RRSIG,
                                covers=rrset.rdtype)
        rrsig.add(_rrsig(rrset, key, tags[key.role], origin, signer, inception, expiration),
                  rrset.ttl)
        out += (rrset, rrsig)
    return Zone(origin, tuple(out))


def _rrsig(rrset: dns.rrset.RRset, key: Key, tag: int, origin: dns.name.Name, signer: bytes,
           inception: int, expiration: int):
    """The RRSIG of rrset by key (RFC 4034 3.1.8.1: the RRSIG's fields but
    the signature, then each record in canonical form and order, 6.2-6.3).
    dnspython's own sign() gives the same signature but renders every name
    through objects, ten times slower for ip6.arpa owners."""
    labels = len(rrset.name.labels) - 1
    head = struct.pack("!HBBIIIH", rrset.rdtype, key.algorithm, labels, rrset.ttl,
                       expiration & 0xFFFFFFFF, inception & 0xFFFFFFFF, tag) + signer
    owner = _wire(rrset.name.labels).lower() + struct.pack("!HHI", rrset.rdtype,
                                                            rrset.rdclass, rrset.ttl)
    rdatas = sorted(_canonical(rdata, rrset.rdtype) for rdata in rrset)
    data = head + b"".join(owner + len(rd).to_bytes(2, "big") + rd for rd in rdatas)
    if key.algorithm == 13:
        r, s = decode_dss_signature(key.private.sign(data, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # RFC 6605 4
    else:
        signature = key.private.sign(data)  # RFC 8080 4
    return _RRSIG(dns.rdataclass.IN, dns.rdatatype.RRSIG, rrset.rdtype, key.algorithm, labels,
                  rrset.ttl, expiration, inception, tag, origin, signature)


class _RRSIG(dns.rdtypes.ANY.RRSIG.RRSIG):
    """An RRSIG whose hash is its signature's: an RRset hashes each record
    it takes, and dnspython's hash renders the signer's name through one
    object per label (three quarters of the time signing took). Equal
    RRSIGs have equal signatures, so the hash stays true to equality."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash(self.signature)


class _NSEC(dns.rdtypes.ANY.NSEC.NSEC):
    """An NSEC hashed by its next name (case-insensitive, as equality is)
    and type bitmap, for the same reason."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash((self.next, self.windows))


_NAMED = (dns.rdatatype.PTR, dns.rdatatype.CNAME, dns.rdatatype.NS)


def _canonical(rdata, rdtype: int) -> bytes:
    """rdata in canonical form (RFC 4034 6.2; NSEC's next name keeps its
    case, RFC 6840 5.1)."""
    if rdtype in _NAMED:
        return _wire(rdata.target.labels).lower()
    if rdtype == dns.rdatatype.NSEC:
        return _wire(rdata.next.labels) + b"".join(
            bytes((window, len(bitmap))) + bitmap for window, bitmap in rdata.windows)
    return rdata.to_digestable()


def _wire(labels: tuple[bytes, ...]) -> bytes:
    return b"".join([bytes((len(label),)) + label for label in labels])


def _nsec_chain(origin: dns.name.Name, rrsets, ttl: int) -> list[dns.rrset.RRset]:
    """An NSEC at each owner, naming the next owner in canonical order (the
    last names the apex) and the owner's types with RRSIG and NSEC."""
    types: dict[dns.name.Name, set[int]] = {}
    for rrset in rrsets:
        types.setdefault(rrset.name, {dns.rdatatype.RRSIG, dns.rdatatype.NSEC}).add(
            rrset.rdtype)
    owners = sorted(types)  # dns.name.Name orders canonically (RFC 4034 6.1)
    out = []
    for i, owner in enumerate(owners):
        following = owners[(i + 1) % len(owners)]
        nsec = dns.rrset.RRset(owner, dns.rdataclass.IN, dns.rdatatype.NSEC)
        nsec.add(_NSEC(dns.rdataclass.IN, dns.rdatatype.NSEC, following,
                       dns.rdtypes.ANY.NSEC.Bitmap.from_rdtypes(sorted(types[owner]))), ttl)
        out.append(nsec)
    return out


def expiration(zone: Zone) -> int | None:
    """When the signatures of a signed zone expire (its SOA's RRSIG), or
    None for a zone that is not signed."""
    for rrset in zone.rrsets:
        if rrset.rdtype == dns.rdatatype.RRSIG and rrset.covers == dns.rdatatype.SOA:
            return min(int(sig.expiration) for sig in rrset)
    return None


def due(zone: Zone, settings: Settings, now: float) -> bool:
    """True when zone's signatures come within settings.refresh of expiry."""
    expires = expiration(zone)
    return expires is not None and expires - settings.refresh <= now


@dataclass(frozen=True)
class Signer:
    """What the server signs with: the keys and [dnssec]'s times. `clock`
    is time.time, or a test's."""

    keys: Keys
    settings: DnssecSettings
    clock: object = field(default=time.time, compare=False, repr=False)

    def sign(self, zone: Zone) -> Zone:
        return sign(zone, self.keys, self.settings, self.clock())

    def due_at(self, zone: Zone) -> float | None:
        """When zone's signatures come within the refresh margin of expiry."""
        expires = expiration(zone)
        return None if expires is None else float(expires - self.settings.refresh)
