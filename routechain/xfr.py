"""Zone transfers out: AXFR (RFC 5936) and IXFR (RFC 1995) from the zones
the built-in server holds, and the zone versions and serials they need.
Pure: a request's bytes, the client's address and a snapshot of the
versions in; what was decided (a counter name) and the response messages
out. dns.py owns the socket and streams the messages.

Versions and serials. Each reload hands `Versions.next` the zones just
built. A zone whose records are the same as before keeps its version and
its serial; a zone that changed gets a serial greater than the one it had
(RFC 1982: the build's serial if that is greater, else the old one plus
one), or secondaries would never refresh. "The same" is decided on the
zone.Draft (what its records are made of), never on dnspython objects, so a
start or reload costs one Version per zone: each is made whole, signed and
rendered only when a query, a transfer or the re-signing thread first needs
it, and kept then. A version once rendered for a transfer keeps the
differences between the last HISTORY versions of its zone, from which IXFR
answers; a client whose serial is older than that history gets the whole
zone (RFC 1995 4). `Versions` is never changed after it is made (a
Version only fills in what it makes lazily, the same each time it is
asked): a transfer takes the one in force when it starts, and a reload in
the middle does not touch what it streams.

Policy (off by default: no rule, no transfer). A transfer is allowed when
a rule matches the client: its address in the rule's prefix and, when the
rule names a TSIG key, the request signed by that key (tsig.py checks the
MAC and the time). Refusals are counted by reason: `udp` (a transfer over
UDP, RFC 5936 4.2), `address`, `unsigned` (a key was required), `badkey`
(a key we do not know or one the rule does not name), `badsig`, `badtime`,
`zone` (not one of ours), `malformed`.

Messages are at most MESSAGE_MAX octets. Every message repeats the
question (RFC 5936 2.2.1 allows it), so every owner name is written as its
labels below the origin and a pointer to the question's name.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import dns.exception
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.rrset
import dns.tsig

from . import tsig
from .zone import Draft, Zone

HISTORY = 16          # differences kept per zone for IXFR
MESSAGE_MAX = 65535   # a TCP DNS message's largest size (2-octet length)
_RESERVE = 1100       # room left for the OPT and TSIG records (names up to 255 octets)
_TO_ORIGIN = b"\xc0\x0c"  # a pointer to the question's name, which is the origin
_QR_AA = 0x8400
_OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"  # root, OPT, 1232, no flags, no data

# Signs a zone whose serial is set (dnssec.Signer.sign), or None.
Sign = Callable[[Zone], Zone]

AXFR, IXFR = int(dns.rdatatype.AXFR), int(dns.rdatatype.IXFR)
REASONS = ("udp", "address", "unsigned", "badkey", "badsig", "badtime", "zone", "malformed")
KINDS = ("axfr", "ixfr", "ixfr_full", "uptodate")
COUNTERS = (*(f"xfr:{k}" for k in KINDS), *(f"xfr_refused:{r}" for r in REASONS),
            "tsig:signed", "tsig:badkey", "tsig:badsig", "tsig:badtime")


# --- serials (RFC 1982) ------------------------------------------------------

def serial_gt(a: int, b: int) -> bool:
    """a > b in serial number arithmetic with SERIAL_BITS = 32."""
    return a != b and ((a - b) & 0xFFFFFFFF) < 0x80000000


def next_serial(old: int, proposed: int) -> int:
    """The serial of a zone that changed: proposed when it is greater than
    old, else old + 1 (mod 2^32)."""
    return proposed if serial_gt(proposed, old) else (old + 1) & 0xFFFFFFFF


# --- policy ------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Policy:
    """Who may transfer: rules of (prefix, TSIG key name or None), and the
    keys by name. No rule: transfers off."""

    rules: tuple[tuple[Network, dns.name.Name | None], ...] = ()
    keys: dict = field(default_factory=dict, compare=False)  # dns.name.Name -> dns.tsig.Key

    @property
    def enabled(self) -> bool:
        return bool(self.rules)

    def refusal(self, client: str, key: dns.name.Name | None) -> str | None:
        """None when a rule allows `client` with `key`; else the reason."""
        try:
            address = ipaddress.ip_address(client.split("%", 1)[0])
        except ValueError:
            return "address"
        near = False
        for network, wanted in self.rules:
            if address.version == network.version and address in network:
                if wanted is None or wanted == key:
                    return None
                near = True
        if not near:
            return "address"
        return "unsigned" if key is None else "badkey"

    def knows_address(self, client: str) -> bool:
        try:
            address = ipaddress.ip_address(client.split("%", 1)[0])
        except ValueError:
            return False
        return any(address.version == n.version and address in n for n, _ in self.rules)


def policy(allow: Iterable[Network], keys_required: Iterable[str],
           secondaries: Iterable[tuple[str, str | None]], keys: Iterable[tsig.Key]) -> Policy:
    """The policy of the config: every `allow` prefix with each required key
    (or none), and each secondary's address with its own key."""
    by_name = {dns.name.from_text(k.name): k.dns_key() for k in keys}
    required = [dns.name.from_text(k) for k in keys_required] or [None]
    rules = [(network, key) for network in allow for key in required]
    for address, key in secondaries:
        rules.append((ipaddress.ip_network(address),
                      dns.name.from_text(key) if key else None))
    return Policy(tuple(rules), by_name)


# --- versions ----------------------------------------------------------------

@dataclass(frozen=True)
class Diff:
    """From one serial to the next: the SOA records and the other records
    deleted and added, rendered."""

    old_soa: bytes
    new_soa: bytes
    old_serial: int
    new_serial: int
    deleted: tuple[bytes, ...]
    added: tuple[bytes, ...]


_MAKING = threading.Lock()  # one zone made (built, signed, rendered) at a time


class Version:
    """One zone as served: what it is made from (a zone.Draft, or a Zone as
    built), its serial, the differences that led here (IXFR), and what is
    made of it only when first needed, then kept: the zone signed (`zone()`,
    when signing: a query with DO, a transfer, the re-signing thread) and
    its records rendered for AXFR (`rendered()`). An unsigned zone is made
    as dnspython objects only for the Index that asks (which keeps a bounded
    number), and rendered for transfers straight from its draft. So a start
    or reload costs one object per zone, however many records; the DNS
    thread, a reload and the re-signing thread may each make a version
    first, and the first one made is the one kept."""

    __slots__ = ("source", "serial", "diffs", "_sign", "_origin", "_signed", "_rendered")

    def __init__(self, source: Zone | Draft, serial: int, sign: Sign | None = None,
                 diffs: tuple[Diff, ...] = ()) -> None:
        self.source, self.serial, self.diffs, self._sign = source, serial, diffs, sign
        self._origin: dns.name.Name | None = None
        self._signed: Zone | None = None
        self._rendered: tuple[bytes, tuple[bytes, ...]] | None = None

    @property
    def origin_key(self) -> bytes:
        return self.source.origin_key

    @property
    def origin(self) -> dns.name.Name:
        if self._origin is None:
            source = self.source
            self._origin = source.origin if isinstance(source, Zone) else source.origin_name
        return self._origin

    @property
    def signed(self) -> Zone | None:
        """The zone signed, if it has been (None unsigned or not yet)."""
        return self._signed

    @property
    def rendered_yet(self) -> bool:
        return self._rendered is not None

    def zone(self) -> Zone:
        """The zone as served, with this version's serial; signed (once,
        then kept) when signing."""
        if self._signed is not None:
            return self._signed
        if self._sign is None:
            return self._unsigned()
        with _MAKING:
            if self._signed is None:
                self._signed = self._sign(self._unsigned())
        return self._signed

    def _unsigned(self) -> Zone:
        source = self.source
        whole = source if isinstance(source, Zone) else source.zone()
        return whole if whole.soa[0].serial == self.serial else _with_serial(whole, self.serial)

    @property
    def soa(self) -> dns.rrset.RRset:
        """The SOA RRset with this version's serial (for NOTIFY), made
        without the rest of the zone."""
        if self._signed is not None:
            return self._signed.soa
        source = self.source
        if isinstance(source, Zone):
            soa = source.soa
        else:
            soa = dns.rrset.from_text(self.origin, source.head.ttl, "IN", "SOA", source.head.soa)
        return soa if soa[0].serial == self.serial else _with_serial(Zone(self.origin, (soa,)),
                                                                    self.serial).soa

    def rendered(self) -> tuple[bytes, tuple[bytes, ...]]:
        """(the SOA record, the other records in zone order) as a transfer
        writes them; made once. An unsigned draft is rendered from its
        records' text, the bytes `_render` gives of its zone (a test holds
        the two equal)."""
        if self._rendered is None:
            source = self.source
            if self._sign is None and isinstance(source, Draft):
                made = _render_draft(source, self.serial)
            else:
                made = _render(self.zone())
            with _MAKING:
                if self._rendered is None:
                    self._rendered = made
        return self._rendered

    def same_source(self, source: Zone | Draft) -> bool:
        """True when source makes this version's zone again (its serial
        aside): drafts compare as zone.Draft.same_records does, built zones
        record by record."""
        mine = self.source
        if source is mine:
            return True
        if isinstance(mine, Draft) and isinstance(source, Draft):
            return mine.same_records(source)
        if isinstance(mine, Zone) and isinstance(source, Zone):
            return _same_records(mine, source)
        return False


def _proposed(source: Zone | Draft) -> int:
    """The serial a zone's build proposes."""
    return source.soa[0].serial if isinstance(source, Zone) else source.serial


@dataclass(frozen=True)
class Versions:
    """Every zone's current version by origin (lower-case wire, as
    Zone.origin_key); never changed but for what a Version makes lazily."""

    by_origin: dict = field(default_factory=dict)  # bytes -> Version
    changed: tuple[bytes, ...] = ()

    @property
    def zones(self) -> list[Zone]:
        """Every zone whole (signed when signing): for tests and tools."""
        return [v.zone() for v in self.by_origin.values()]

    def get(self, name: dns.name.Name) -> Version | None:
        return self.by_origin.get(name.to_digestable())

    @classmethod
    def first(cls, zones: Iterable[Zone | Draft], sign: Sign | None = None) -> "Versions":
        """The first versions: each zone with the serial its build proposes,
        nothing made yet."""
        versions = {}
        for source in zones:
            versions[source.origin_key] = Version(source, _proposed(source), sign)
        return cls(versions, tuple(versions))

    def next(self, zones: Iterable[Zone | Draft], sign: Sign | None = None,
             resign: frozenset = frozenset()) -> "Versions":
        """The versions after a reload built `zones`. A zone made from the
        same records as its version's keeps that version (and its serial,
        and its signatures) unless its origin is in `resign`; any other gets
        a new version with a greater serial, made when needed. `changed`
        names the zones whose serial moved (new zones too).

        The differences to the new version (IXFR) are made only where a
        secondary may want them: for a zone whose old version was rendered
        for a transfer, unsigned. A signed zone is signed whole again, every
        RRSIG new, so the step is as large as the zone and a client gets
        AXFR anyway (`_diffs`); nothing is signed here."""
        out, changed = {}, []
        for source in zones:
            key = source.origin_key
            old = self.by_origin.get(key)
            if old is None:
                out[key] = Version(source, _proposed(source), sign)
                changed.append(key)
                continue
            if key not in resign and old.same_source(source):
                out[key] = old
                continue
            new = Version(source, next_serial(old.serial, _proposed(source)), sign)
            if sign is None and old.rendered_yet:
                new.diffs = _diffs(old, new)
            out[key] = new
            changed.append(key)
        return Versions(out, tuple(changed))


def _same_records(old: Zone | None, new: Zone) -> bool:
    """Two unsigned zones hold the same records (TTLs too), serials aside."""
    if old is None or not _same_soa(old, new) or len(old.rrsets) != len(new.rrsets):
        return False
    return all(a == b and a.ttl == b.ttl for a, b in zip(old.rrsets[1:], new.rrsets[1:]))


def _with_serial(zone: Zone, serial: int) -> Zone:
    soa = zone.soa
    rrset = dns.rrset.RRset(soa.name, soa.rdclass, soa.rdtype)
    rrset.update_ttl(soa.ttl)
    rrset.add(soa[0].replace(serial=serial))
    return replace(zone, rrsets=(rrset, *zone.rrsets[1:]))


def _same_soa(a: Zone, b: Zone) -> bool:
    """The SOAs equal but for the serial."""
    x, y = a.soa[0], b.soa[0]
    return a.soa.ttl == b.soa.ttl and (x.mname, x.rname, x.refresh, x.retry, x.expire,
                                       x.minimum) == (y.mname, y.rname, y.refresh, y.retry,
                                                      y.expire, y.minimum)


def _diffs(old: Version, new: Version) -> tuple[Diff, ...]:
    """old's history and the step from old to new, at most HISTORY long;
    none when the step is larger than the zone (then AXFR is cheaper)."""
    old_soa, old_records = old.rendered()
    new_soa, new_records = new.rendered()
    before, after = set(old_records), set(new_records)
    deleted = tuple(r for r in old_records if r not in after)
    added = tuple(r for r in new_records if r not in before)
    if len(deleted) + len(added) >= max(1, len(new_records)):
        return ()
    step = Diff(old_soa, new_soa, old.serial, new.serial, deleted, added)
    return (*old.diffs, step)[-HISTORY:]


def _render_draft(draft: Draft, serial: int) -> tuple[bytes, tuple[bytes, ...]]:
    """`_render` of draft.zone() with `serial`, from the draft's text: no
    dnspython object but the SOA's rdata, once per build."""
    head = draft.head
    rdata = _soa_rdata(head.soa)
    soa = rdata[:-20] + serial.to_bytes(4, "big") + rdata[-16:]  # RFC 1035 3.3.13
    ttl = struct.pack("!HI", 1, head.ttl)  # class IN, the TTL
    apex = _TO_ORIGIN
    records = [apex + b"\x00\x06" + ttl + len(soa).to_bytes(2, "big") + soa]
    for target in head.ns:
        rd = _text_wire(target)
        records.append(apex + b"\x00\x02" + ttl + len(rd).to_bytes(2, "big") + rd)
    types = {"PTR": b"\x00\x0c", "CNAME": b"\x00\x05"}
    for owner, rdtype, target in draft.records:
        rd = _text_wire(target)
        below = b"" if owner == "@" else _text_wire(f"{owner}.")[:-1]
        records.append(below + apex + types[rdtype] + ttl + len(rd).to_bytes(2, "big") + rd)
    return records[0], tuple(records[1:])


@functools.lru_cache(maxsize=16)
def _soa_rdata(text: str) -> bytes:
    return dns.rdata.from_text("IN", "SOA", text).to_wire()


@functools.lru_cache(maxsize=65536)
def _text_wire(text: str) -> bytes:
    """An absolute name's wire, its case kept: split at the dots where
    the text has no escape (dnspython's from_text does the same), else
    dnspython's. Kept: stories repeat their names from chain to chain, and
    chains their owners' low labels from zone to zone."""
    if "\\" in text:
        return dns.name.from_text(text).to_wire()
    return b"".join([len(label).to_bytes(1, "big") + label
                     for label in text.encode().split(b".")])


def _render(zone: Zone, soa_only: bool = False) -> tuple[bytes, tuple[bytes, ...]]:
    """The zone's SOA record and its other records as wire, each owner
    as labels below the origin and a pointer to the question."""
    depth = len(zone.origin.labels)
    records = []
    for rrset in zone.rrsets[:1] if soa_only else zone.rrsets:
        owner = _wire(rrset.name.labels[:len(rrset.name.labels) - depth]) + _TO_ORIGIN
        head = owner + struct.pack("!HHI", rrset.rdtype, rrset.rdclass, rrset.ttl)
        for rdata in rrset:
            target = getattr(rdata, "target", None)
            # A name's labels as wire (the root's empty label ends it): what
            # Name.to_wire() gives, several times faster for 300,000 PTRs.
            rd = _wire(target.labels) if target is not None else rdata.to_wire()
            records.append(head + len(rd).to_bytes(2, "big") + rd)
    return records[0], tuple(records[1:])


def _wire(labels: tuple[bytes, ...]) -> bytes:
    return b"".join([bytes((len(label),)) + label for label in labels])


# --- requests ----------------------------------------------------------------

def is_transfer(wire: bytes) -> bool:
    """True for a query (QR and opcode clear) whose first question asks
    AXFR or IXFR: a cheap look at the bytes, before any parsing."""
    if len(wire) < 17 or wire[2] & 0xF8 or wire[4:6] != b"\x00\x01":
        return False
    z = wire.find(0, 12)
    return 0 < z and z + 3 <= len(wire) and (wire[z + 1] << 8 | wire[z + 2]) in (AXFR, IXFR)


def refuse_udp(wire: bytes, rules: Policy | None = None) -> bytes:
    """REFUSED for a transfer asked over UDP (or from an address no rule
    names): the header and question, signed when the request was signed
    with a key we know (RFC 8945 5.3)."""
    if rules is not None and rules.keys:
        try:
            request = tsig.check(wire, rules.keys)
        except dns.exception.DNSException:
            request = None
        if request is not None and request.key is not None and request.refused is None:
            return tsig.error_response(request, dns.rcode.REFUSED)
    z = wire.find(0, 12)
    flags = 0x8000 | (wire[2] & 0x01) << 8 | dns.rcode.REFUSED
    return wire[:2] + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x00" \
        + wire[12:z + 5]


def respond(wire: bytes, client: str, versions: Versions,
            rules: Policy) -> tuple[str, Iterator[bytes]]:
    """(counter name, the messages to send) for a transfer request over TCP."""
    if rules.refusal(client, None) == "address":
        return "xfr_refused:address", iter((refuse_udp(wire),))
    try:
        request = tsig.check(wire, rules.keys)
    except dns.exception.DNSException:
        return "xfr_refused:malformed", iter((_formerr(wire),))
    if request.refused is not None:
        return f"xfr_refused:{request.refused}", iter(
            (tsig.error_response(request, dns.rcode.NOTAUTH),))
    query = request.message
    if len(query.question) != 1 or query.opcode() != dns.opcode.QUERY:
        return "xfr_refused:malformed", iter((_formerr(wire),))
    reason = rules.refusal(client, query.keyname if query.had_tsig else None)
    if reason is not None:
        return f"xfr_refused:{reason}", iter((tsig.error_response(request,
                                                                  dns.rcode.REFUSED),))
    question = query.question[0]
    version = versions.get(question.name)
    if version is None or question.rdclass != 1:
        return "xfr_refused:zone", iter((tsig.error_response(request, dns.rcode.NOTAUTH),))
    signer = tsig.Stream(request.key, query.mac, query.id) if request.key else None
    z = wire.find(0, 12)
    frame = _Frame(wire[:2], wire[12:z + 5], query.edns >= 0, signer)
    if question.rdtype == AXFR:
        return "xfr:axfr", frame.messages(_axfr(version))
    client_serial = _client_serial(query)
    if client_serial is None:
        return "xfr_refused:malformed", iter((_formerr(wire),))
    if not serial_gt(version.serial, client_serial):
        return "xfr:uptodate", frame.messages(iter((version.rendered()[0],)))
    steps = _steps(version, client_serial)
    if steps is None:
        return "xfr:ixfr_full", frame.messages(_axfr(version))
    return "xfr:ixfr", frame.messages(_ixfr(version, steps))


def signed_answer(wire: bytes, udp: bool, rules: Policy,
                  answer: Callable[[bytes, bool], tuple[bytes | None, str]]
                  ) -> tuple[bytes | None, str]:
    """The answer to a TSIG-signed query that is not a transfer (a
    secondary's SOA refresh, RFC 8945 5.3): the signature checked, the
    query answered as if unsigned by `answer`, the answer signed.
    Counted as "tsig:signed" or "tsig:<reason>" when refused."""
    try:
        request = tsig.check(wire, rules.keys)
    except dns.exception.DNSException:
        return _formerr(wire), "rcode:FORMERR"
    if request.refused is not None:
        return tsig.error_response(request, dns.rcode.NOTAUTH), f"tsig:{request.refused}"
    query = request.message
    signer = tsig.Stream(request.key, query.mac, query.id)
    query.tsig = None
    reply, _ = answer(query.to_wire(), udp)
    if reply is None:
        return None, "tsig:signed"
    return signer.sign(reply), "tsig:signed"


def _client_serial(query) -> int | None:
    """The serial of the SOA in an IXFR request's authority section."""
    for rrset in query.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return rrset[0].serial
    return None


def _steps(version: Version, serial: int) -> tuple[Diff, ...] | None:
    """The differences from `serial` to the current version, or None when
    the history does not reach back to it."""
    for i, diff in enumerate(version.diffs):
        if diff.old_serial == serial:
            steps = version.diffs[i:]
            if steps[-1].new_serial == version.serial:
                return steps
    return None


def _axfr(version: Version) -> Iterator[bytes]:
    """RFC 5936 2.2: the SOA, every other record, the SOA again (rendered,
    signed first when signing, on the transfer's first message)."""
    soa, records = version.rendered()
    yield soa
    yield from records
    yield soa


def _ixfr(version: Version, steps: tuple[Diff, ...]) -> Iterator[bytes]:
    """RFC 1995 4: the new SOA, then per step the old SOA and the records
    deleted, the new SOA and the records added; the new SOA last."""
    soa = version.rendered()[0]
    yield soa
    for step in steps:
        yield step.old_soa
        yield from step.deleted
        yield step.new_soa
        yield from step.added
    yield soa


@dataclass
class _Frame:
    """What every message of one response shares: the query's ID and
    question, an OPT when the query had one, and the TSIG stream."""

    ident: bytes
    question: bytes
    edns: bool
    signer: tsig.Stream | None

    def messages(self, records: Iterator[bytes]) -> Iterator[bytes]:
        budget = MESSAGE_MAX - 12 - len(self.question) - _RESERVE
        body, size = [], 0
        for record in records:
            if size + len(record) > budget and body:
                yield self._message(body)
                body, size = [], 0
            body.append(record)
            size += len(record)
        if body:
            yield self._message(body)

    def _message(self, body: list[bytes]) -> bytes:
        header = self.ident + struct.pack("!HHHHH", _QR_AA, 1, len(body), 0, int(self.edns))
        wire = b"".join((header, self.question, *body, _OPT if self.edns else b""))
        return self.signer.sign(wire) if self.signer else wire


def _formerr(wire: bytes) -> bytes:
    flags = 0x8000 | (int.from_bytes(wire[2:4], "big") & 0x7900) | dns.rcode.FORMERR
    return wire[:2] + flags.to_bytes(2, "big") + bytes(8)
