"""The answering core of the built-in DNS server: the bytes of a query in,
the bytes of its answer (or nothing) and what happened out, from a read-only
`Index` built once per reload. No sockets, no clock, no I/O: the transport
(dns.py) owns those, and `Index.answer` can be called from a test directly.

What it answers (RFC 1034 4.3.2 for an authoritative-only server):

- a name in one of its zones (the longest origin that holds it): the RRset
  asked for with AA set; a CNAME is followed inside the same zone, as Knot
  and NSD do; an existing name without that type is NODATA and a missing
  name NXDOMAIN, both with the zone's SOA in the authority section, its TTL
  the smaller of the SOA's TTL and MINIMUM (RFC 2308 3); a name with
  nothing of its own but names below it exists (RFC 8020);
- ANY: one RRset of the name, never all of them (RFC 8482 4.2), so that
  ANY is no amplifier;
- a name outside its zones: REFUSED, without AA, with the extended error
  Not Authoritative (RFC 8914 4.21) when the query had EDNS;
- RD and CD copied, RA never set: it does not recurse;
- EDNS (RFC 6891): an OPT in the answer only when the query had one, the DO
  bit copied (RFC 3225); the answer fits the requester's UDP payload size, at
  most PAYLOAD_MAX (the DNS Flag Day 2020 value); version > 0 is BADVERS;
- DNSSEC (RFC 4035 3.1), for zones given signed (dnssec.py signs them):
  with DO, each RRset's RRSIG, and for NODATA/NXDOMAIN the SOA's RRSIG
  and the NSECs that prove it; the RRSIGs are kept apart from the other
  RRsets (`_Signed`), so without DO nothing of them is seen;
- over UDP an answer too large goes out with TC set and empty sections, so
  the client asks again over TCP (RFC 2181 9);
- a message too short for a header, or a response, is dropped; a query that
  cannot be parsed gets FORMERR, other opcodes NOTIMP, a NOTIFY nothing
  (we are nobody's secondary), zone transfers REFUSED (dns.py hands the
  ones it serves over TCP to xfr.py before they get here).

Two paths give the same answers. The slow path is dnspython: it parses the
query, resolves it against the zones and renders the response, and it takes
everything unusual (EDNS options, other classes, opcodes, errors). The fast
path takes a plain query -- one question, class IN, no EDNS option but a
cookie or padding (which a server that does neither ignores) -- and builds
the answer from bytes prepared ahead: the answer of each (name, type) that
has data, rendered by the slow path itself on the first query of it (a
reload stays cheap however many names there are) for a lower-case question
as long as the query's, so that every compression pointer stays valid when
the query's own question is copied in; and, per zone, the negative answer's
SOA record. Then a query is: check the header, look the question up, copy,
patch the ID, RD, CD and DO. The prepared answer with DO (signed, when the
zone is) is a form of its own beside the one without, so a query without
DO copies the same bytes as from an unsigned zone. A negative answer with
DO in a signed zone finds its proving NSECs by bisecting the zone's NSEC
owners (as label tuples, in RFC 4034 6.1 order) and copies the authority
section rendered for that set of NSECs on its first use (`_Denial`). `tests/test_dnsanswer.py` holds both paths to
the same parsed answers.

`answer()` returns (reply or None, outcome); outcome is a counter name:
"rcode:<RCODE>" for a reply, "drop:malformed" or "drop:response" for none.
"""

from __future__ import annotations

import bisect
import collections
import io
import ipaddress
from collections.abc import Iterable

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.reversename

from .zone import Draft, Zone

PAYLOAD_MAX = 1232
PAYLOAD_MIN = 512  # RFC 6891 6.2.5: a smaller advertised size counts as 512.
TCP_MAX = 65535
LOADED_MAX = 512     # zones made ready at once (about 100 kB each with 30 names)
ANSWERS_MAX = 16384  # rendered answers kept (about 1 kB each)
CNAME_CHAIN_MAX = 8
HEADER = 12

# The outcome of a TSIG-signed message: not answered here, no counter of
# its own; the transport checks the signature and asks again unsigned.
SIGNED = "signed"

# Outcomes that are errors to the requester: rate limited on their own (RRL).
ERRORS = frozenset({"rcode:REFUSED", "rcode:FORMERR", "rcode:NOTIMP", "rcode:BADVERS"})
OUTCOMES = ("rcode:NOERROR", "rcode:NXDOMAIN", *sorted(ERRORS), "drop:malformed",
            "drop:response", "drop:notify")

# RFC 8482 4.2: the one RRset an ANY query gets, the first of these the name has.
_ANY_ORDER = (dns.rdatatype.PTR, dns.rdatatype.CNAME, dns.rdatatype.SOA, dns.rdatatype.NS)
_QR, _AA, _TC = 0x8000, 0x0400, 0x0200
_RD_BYTE2, _CD_BYTE3 = 0x01, 0x10  # RD and CD as bits of header bytes 2 and 3
_OPT_TYPE = b"\x00\x29"
_COOKIE, _PADDING = 10, 12  # EDNS option codes (RFC 7873, RFC 7830)
_DO_BYTE = 0x80  # DO as a bit of the OPT TTL's third byte (RFC 3225 3)
_RCODE_KEY = {int(r): f"rcode:{r.name}" for r in dns.rcode.Rcode}


class _Positive:
    """A rendered answer with data, cut after its question: (header bytes
    4..12, the rest) without EDNS and with EDNS and DO clear; with DO set
    (signed, in a signed zone) only once a query with DO asks (`do_form`),
    so a query without DO never pays for the signed form."""

    __slots__ = ("flags", "plain", "edns", "edns_do", "outcome", "qend", "key")

    def __init__(self, plain: bytes, edns: bytes, qend: int, outcome: str,
                 key: bytes) -> None:  # key: the question as a query carries it
        self.flags = int.from_bytes(plain[2:4], "big")
        self.plain = plain[4:12], plain[qend:]
        self.edns = edns[4:12], edns[qend:]
        self.edns_do: tuple[bytes, bytes] | None = None
        self.outcome = outcome
        self.qend, self.key = qend, key

    def do_form(self, wire: bytes) -> None:
        self.edns_do = wire[4:12], wire[self.qend:]


class _Zone:
    """What a negative answer in one zone needs: the origin's length as wire
    and the SOA record after its owner, with the negative TTL."""

    __slots__ = ("origin_len", "soa_tail", "denial")

    def __init__(self, zone: Zone) -> None:
        soa = zone.soa
        ttl = min(soa.ttl, soa[0].minimum)  # RFC 2308 3
        rdata = soa[0].to_digestable()  # uncompressed, names as written
        self.denial: _Denial | None = None  # set for a signed zone
        self.origin_len = len(zone.origin.to_wire())
        self.soa_tail = (int(dns.rdatatype.SOA).to_bytes(2, "big") + b"\x00\x01"
                         + ttl.to_bytes(4, "big") + len(rdata).to_bytes(2, "big") + rdata)


class _Loaded:
    """One zone made ready for answering, on its first query: the slow
    path's nodes and names, and the fast path's sets, all lower-case wire."""

    __slots__ = ("zone", "nodes", "names", "negative", "wire_names", "cnames", "types",
                 "signed")

    def __init__(self, zone: Zone) -> None:
        nodes: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
        names: set[dns.name.Name] = set()
        sigs: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = {}
        for rrset in zone.rrsets:
            if rrset.rdtype == dns.rdatatype.RRSIG:  # kept apart: seen only with DO
                sigs[rrset.name, rrset.covers] = rrset
                continue
            nodes.setdefault(rrset.name, {})[rrset.rdtype] = rrset
            name = rrset.name
            while name != zone.origin and name not in names:
                names.add(name)
                name = name.parent()
        names.add(zone.origin)
        self.zone, self.nodes, self.names = zone, nodes, names
        self.negative = _Zone(zone)
        # A signed zone's RRSIGs and NSECs (dnssec.py signed it), or None.
        self.signed = _Signed(sigs, nodes) if sigs else None
        if self.signed is not None:
            self.negative.denial = _Denial(zone, self.signed)
        self.wire_names = {_key(n) for n in names}
        self.cnames: set[bytes] = set()          # CNAME owners: other types go slow
        self.types: dict[bytes, frozenset[int]] = {}  # name -> types with an answer
        every = frozenset(t for node in nodes.values() for t in node)
        for name, node in nodes.items():
            if dns.rdatatype.CNAME in node:
                self.cnames.add(_key(name))
                self.types[_key(name)] = every | {dns.rdatatype.ANY}
            else:
                self.types[_key(name)] = frozenset(node) | {dns.rdatatype.ANY}


class _Entry:
    """A zone of the Index: a Zone, or a zone.Draft (or an xfr.Version: a
    zone as the server keeps it for transfers or signing) whose dnspython
    objects are made by its zone() on the first query that reaches it (so
    that building an Index costs one dict entry per zone, however many
    records the zones hold)."""

    __slots__ = ("source", "key", "loaded")

    def __init__(self, source: Zone | Draft, key: bytes) -> None:
        self.source = source
        self.key = key  # _origin_key(source)
        self.loaded: _Loaded | None = None


class _Zones:
    """The Index's zones by lower-case origin wire, and the ones made ready:
    at most LOADED_MAX at once, so that a client walking every name of ten
    thousand zones costs bounded memory; the oldest made ready is let go
    first, and made again if asked for again."""

    def __init__(self, sources: Iterable[Zone | Draft], previous: "_Zones | None" = None
                 ) -> None:
        self.entries: dict[bytes, _Entry] = {}
        # The drafts' entries by origin as text: a reload finds the entry
        # a draft may keep without making its origin's wire form again.
        self.drafts: dict[str, _Entry] = {}
        before = previous.drafts if previous is not None else {}
        for source in sources:
            if isinstance(source, Draft):
                entry = before.get(source.origin)
                if entry is None or not source.same(entry.source):
                    entry = _Entry(source, _origin_key(source))
                self.drafts[source.origin] = entry
            else:
                entry = _Entry(source, _origin_key(source))
            self.entries[entry.key] = entry
        # The zones made ready that are kept stay ready, oldest first.
        self._ready: collections.deque[_Entry] = collections.deque(
            e for e in (previous._ready if previous is not None else ())
            if self.entries.get(e.key) is e)

    def ready(self, entry: _Entry) -> _Loaded:
        loaded = entry.loaded
        if loaded is None:
            source = entry.source
            loaded = entry.loaded = _Loaded(source if isinstance(source, Zone)
                                            else source.zone())
            self._ready.append(entry)
            if len(self._ready) > LOADED_MAX:
                self._ready.popleft().loaded = None
        return loaded

    def __len__(self) -> int:
        return len(self.entries)


def _origin_key(source) -> bytes:
    """A zone's origin as lower-case wire: Zone.origin_key, or a Draft's
    (or an xfr.Version's), made without a dns.name.Name."""
    return source.origin_key


class Index:
    """Every zone arranged for answering, built once per reload. Building
    it costs one dict entry per zone: a zone's records are made ready on
    the first query that reaches it, and an answer is rendered on the
    first query of its name and type (a memo: one dict insertion at a
    time), and is the one the slow path would give."""

    def __init__(self, zones: Iterable[Zone | Draft], previous: "Index | None" = None) -> None:
        """With `previous` (a reload), a draft of the same records as one
        of previous's (Draft.same) keeps its entry, and the records made
        ready for it: only the zones that changed are made again."""
        self._zones = _Zones(zones, previous._zones if previous is not None else None)
        self._slow = _Resolver(self._zones)
        # The rendered answers, made on a name's first query of a type, the
        # oldest let go past ANSWERS_MAX (made again when asked again).
        self._positive: collections.OrderedDict[tuple[bytes, int], _Positive] = \
            collections.OrderedDict()
        self._refused = self._precompute(_key(dns.name.from_text("refused.invalid.")),
                                         dns.rdatatype.A)

    def __len__(self) -> int:
        return len(self._zones)

    def _precompute(self, qname: bytes, rdtype: int) -> _Positive:
        """The slow path's answer to a query of qname (lower-case wire) with
        RD and CD clear: without EDNS and with it, DO clear (the DO form is
        rendered on the first query with DO: `_with_do`). The queries are
        written here, as a client's library would (ID 0, one question, an
        OPT offering PAYLOAD_MAX), not made by dnspython: on a name's first
        query that was a third of the time."""
        question = qname + rdtype.to_bytes(2, "big") + b"\x00\x01"
        (plain, _), (edns, outcome) = (self._render(question, opt) for opt in (b"", _opt(0)))
        return _Positive(plain, edns, HEADER + len(question), outcome, question)

    def _render(self, question: bytes, opt: bytes) -> tuple[bytes, str]:
        query = (b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00"
                 + (b"\x00\x01" if opt else b"\x00\x00") + question + opt)
        return self._slow.answer(query, udp=False)

    def _with_do(self, entry: _Positive) -> tuple[bytes, bytes]:
        """entry's form with DO set, rendered on the first query with DO
        (signed, in a signed zone: a query without DO never pays for it)."""
        if entry.edns_do is None:
            entry.do_form(self._render(entry.key, _opt(_DO_BYTE))[0])
        return entry.edns_do

    def answer(self, wire: bytes, udp: bool) -> tuple[bytes | None, str]:
        """The reply to one message and its outcome; None to send nothing."""
        n = len(wire)
        # The fast path's preconditions: a QUERY (QR and opcode clear), one
        # question, no answer or authority, at most the OPT in additional.
        if n < HEADER + 5 or wire[2] & 0xF8 or wire[4:10] != b"\x00\x01\x00\x00\x00\x00" \
                or wire[10] or wire[11] > 1:
            return self._slow.answer(wire, udp)
        z = wire.find(0, HEADER)
        if z < 0 or z - HEADER >= 255 or z + 5 > n or wire[z + 3:z + 5] != b"\x00\x01":
            return self._slow.answer(wire, udp)
        qend = z + 5
        limit = TCP_MAX
        if wire[11]:  # an OPT record, alone, version 0, with no option we act on
            if n < qend + 11 or wire[qend] or wire[qend + 1:qend + 3] != _OPT_TYPE \
                    or wire[qend + 6] or n != qend + 11 + (wire[qend + 9] << 8 | wire[qend + 10]) \
                    or n > qend + 11 and not _ignorable_options(wire, qend + 11):
                return self._slow.answer(wire, udp)
            if udp:
                limit = min(max(PAYLOAD_MIN, wire[qend + 3] << 8 | wire[qend + 4]), PAYLOAD_MAX)
            do = wire[qend + 7] & _DO_BYTE
        else:
            if n != qend:
                return self._slow.answer(wire, udp)
            if udp:
                limit = PAYLOAD_MIN
            do = None
        qname = wire[HEADER:z + 1].lower()
        qtype = wire[z + 1] << 8 | wire[z + 2]
        entry = self._positive.get((qname, qtype))
        if entry is None:
            found = self._zone_of(qname)
            if found is False:
                return self._slow.answer(wire, udp)
            if found is None:
                if qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
                    return self._slow.answer(wire, udp)
                entry = self._refused
            else:
                zone = self._zones.ready(found)
                if qtype in zone.types.get(qname, ()):
                    entry = self._positive[qname, qtype] = self._precompute(qname, qtype)
                    if len(self._positive) > ANSWERS_MAX:
                        self._positive.popitem(last=False)
                elif qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR) or qname in zone.cnames:
                    return self._slow.answer(wire, udp)
                elif do and zone.negative.denial is not None:
                    return self._negative_signed(wire, qend, zone, qname, do, limit)
                else:
                    return self._negative(wire, qend, zone.negative, qname in zone.wire_names,
                                          do, limit)
        counts, rest = entry.plain if do is None else self._with_do(entry) if do else entry.edns
        flags = entry.flags | (wire[2] & _RD_BYTE2) << 8 | wire[3] & _CD_BYTE3
        reply = b"".join((wire[:2], flags.to_bytes(2, "big"), counts, wire[HEADER:qend], rest))
        if len(reply) > limit:
            return _truncated(reply, qend, wire, do), entry.outcome
        return reply, entry.outcome

    def _zone_of(self, qname: bytes):
        """The zone holding qname (lower-case wire); None outside every zone;
        False for a name that is not well-formed (the slow path judges it)."""
        i, zones = 0, self._zones.entries
        while True:
            zone = zones.get(qname[i:] if i else qname)
            if zone is not None:
                return zone
            length = qname[i]
            if length == 0:
                return None if i + 1 == len(qname) else False
            if length > 63 or i + length + 1 >= len(qname):
                return False
            i += length + 1

    def _negative(self, wire: bytes, qend: int, zone: _Zone, exists: bool,
                  do: int | None, limit: int) -> tuple[bytes, str]:
        """NODATA or NXDOMAIN with the zone's SOA, its owner a pointer to the
        origin's place in the question."""
        rcode = 0 if exists else dns.rcode.NXDOMAIN
        flags = _QR | _AA | (wire[2] & _RD_BYTE2) << 8 | wire[3] & _CD_BYTE3 | rcode
        owner = 0xC000 | (qend - 4 - zone.origin_len)
        parts = [wire[:2], flags.to_bytes(2, "big"),
                 b"\x00\x01\x00\x00\x00\x01\x00\x01" if do is not None
                 else b"\x00\x01\x00\x00\x00\x01\x00\x00",
                 wire[HEADER:qend], owner.to_bytes(2, "big"), zone.soa_tail]
        if do is not None:
            parts.append(_opt(do))
        reply = b"".join(parts)
        outcome = "rcode:NOERROR" if exists else "rcode:NXDOMAIN"
        if len(reply) > limit:
            return _truncated(reply, qend, wire, do), outcome
        return reply, outcome


    def _negative_signed(self, wire: bytes, qend: int, zone: _Loaded, qname: bytes, do: int,
                         limit: int) -> tuple[bytes, str]:
        """NODATA or NXDOMAIN with DO in a signed zone: the authority section
        the slow path gives (SOA, NSECs, their RRSIGs), rendered once per
        set of proving NSECs and copied after the question."""
        denial, names = zone.negative.denial, zone.wire_names
        exists = qname in names
        proofs = [denial.covering(qname)]
        if not exists:
            i = 0
            while True:  # the closest encloser: the longest suffix that exists
                i += qname[i] + 1
                if qname[i:] in names:
                    break
            proofs.append(denial.covering(b"\x01*" + qname[i:]))
        count, body = denial.authority(tuple(dict.fromkeys(proofs)), qend,
                                       qend - 4 - zone.negative.origin_len)
        rcode = 0 if exists else dns.rcode.NXDOMAIN
        flags = _QR | _AA | (wire[2] & _RD_BYTE2) << 8 | wire[3] & _CD_BYTE3 | rcode
        reply = b"".join((wire[:2], flags.to_bytes(2, "big"), b"\x00\x01\x00\x00",
                          count.to_bytes(2, "big"), b"\x00\x01", wire[HEADER:qend], body,
                          _opt(do)))
        outcome = "rcode:NOERROR" if exists else "rcode:NXDOMAIN"
        if len(reply) > limit:
            return _truncated(reply, qend, wire, do), outcome
        return reply, outcome


class _Denial:
    """A signed zone's NSEC owners in canonical order as the fast path
    compares names (the labels of lower-case wire, last first: RFC 4034
    6.1's order is that of these tuples), and the authority sections of
    its negative answers with DO, rendered on first use per set of proving
    NSECs (at most MEMO_MAX of them; more are rendered each time)."""

    MEMO_MAX = 4096
    __slots__ = ("keys", "owners", "zone", "signed", "memo")

    def __init__(self, zone: Zone, signed: "_Signed") -> None:
        pairs = sorted((_order(_key(o)), o) for o in signed.owners)
        self.keys = [k for k, _ in pairs]
        self.owners = [o for _, o in pairs]
        self.zone, self.signed = zone, signed
        self.memo: dict[tuple, tuple[int, bytes]] = {}

    def covering(self, name: bytes) -> int:
        """The index of the NSEC that matches or covers name (lower-case
        wire in the zone; the apex sorts first, so there is one)."""
        return bisect.bisect_right(self.keys, _order(name)) - 1

    def authority(self, proofs: tuple[int, ...], at: int, origin_at: int) -> tuple[int, bytes]:
        """(records, wire) of the SOA, the NSECs at those indexes, and the
        RRSIG of each, to be put at offset `at` of a reply whose question
        holds the zone's origin at `origin_at`: names are compressed
        against it and each other (signed answers stay as small as the
        slow path's), so the memo keys on both offsets too."""
        key = (proofs, at)
        found = self.memo.get(key)
        if found is not None:
            return found
        response = dns.message.Message()
        _deny_proofs(response, self.zone, self.signed, [self.owners[i] for i in proofs])
        out = io.BytesIO()
        out.write(bytes(at))  # compression pointers count from the reply's start
        compress = {self.zone.origin: origin_at}
        count = sum(rrset.to_wire(out, compress) for rrset in response.authority)
        found = count, out.getvalue()[at:]
        if len(self.memo) < self.MEMO_MAX:
            self.memo[key] = found
        return found


def _order(wire: bytes) -> tuple[bytes, ...]:
    """A well-formed uncompressed name's labels, last first."""
    labels, i = [], 0
    while wire[i]:
        labels.append(wire[i + 1:i + 1 + wire[i]])
        i += 1 + wire[i]
    return tuple(reversed(labels))


def _ignorable_options(wire: bytes, i: int) -> bool:
    """True if the EDNS options from i to the end are well-formed and all
    ones a server without them answers as if absent: a COOKIE of a valid
    length (RFC 7873 5.2: a server that does not do cookies ignores them;
    a bad length is FORMERR, left to the slow path) and PADDING (RFC 7830)."""
    end = len(wire)
    while i < end:
        if i + 4 > end:
            return False
        code, length = wire[i] << 8 | wire[i + 1], wire[i + 2] << 8 | wire[i + 3]
        i += 4 + length
        if i > end:
            return False
        if code == _COOKIE:
            if length != 8 and not 16 <= length <= 40:
                return False
        elif code != _PADDING:
            return False
    return True


def truncated(reply: bytes, query: bytes) -> bytes | None:
    """reply cut to its header and question with TC set, and the OPT if the
    query had EDNS: the "slip" answer of rate limiting, never larger than the
    query it answers (so it reflects nothing). None if query is not a plain
    one (the caller then sends nothing)."""
    z = query.find(0, HEADER)
    if z < 0 or len(reply) < z + 5 or reply[HEADER:z + 5].lower() != query[HEADER:z + 5].lower():
        return None
    qend = z + 5
    do = None
    if query[11] and len(query) >= qend + 11 and query[qend + 1:qend + 3] == _OPT_TYPE:
        do = query[qend + 7] & _DO_BYTE
    return _truncated(reply, qend, query, do)


def _truncated(reply: bytes, qend: int, query: bytes, do: int | None) -> bytes:
    """Header and question of reply with TC, no records but the OPT."""
    counts = b"\x00\x01\x00\x00\x00\x00\x00\x01" if do is not None \
        else b"\x00\x01\x00\x00\x00\x00\x00\x00"
    parts = [reply[:2], bytes((reply[2] | _TC >> 8, reply[3])), counts, query[HEADER:qend]]
    if do is not None:
        parts.append(_opt(do))
    return b"".join(parts)


def _opt(do: int) -> bytes:
    """Our OPT record: root owner, PAYLOAD_MAX, version 0, DO as given."""
    return b"\x00" + _OPT_TYPE + PAYLOAD_MAX.to_bytes(2, "big") + bytes((0, 0, do, 0, 0, 0))


def _key(name: dns.name.Name) -> bytes:
    """A name as the fast path sees it: lower-case uncompressed wire."""
    return name.to_wire().lower()


# --- the slow path ----------------------------------------------------------

class _Resolver:
    """dnspython over the zones (the Index's entries, by lower-case origin
    wire): per zone, each owner's RRsets by type, and every name that
    exists (owners and the empty non-terminals above them)."""

    def __init__(self, zones: _Zones) -> None:
        self._zones = zones

    def zone_for(self, qname: dns.name.Name):
        """The zone with the longest origin holding qname: (zone, nodes,
        names, its _Signed or None), or None."""
        wire, i = qname.to_digestable(), 0
        while True:
            entry = self._zones.entries.get(wire[i:] if i else wire)
            if entry is not None:
                z = self._zones.ready(entry)
                return z.zone, z.nodes, z.names, z.signed
            if wire[i] == 0:
                return None
            i += wire[i] + 1

    def answer(self, wire: bytes, udp: bool) -> tuple[bytes | None, str]:
        if len(wire) < HEADER:
            return None, "drop:malformed"
        if wire[2] & 0x80:  # QR: never answer a response (no loops between servers)
            return None, "drop:response"
        if (wire[2] >> 3) & 0xF == dns.opcode.NOTIFY:
            # A primary acts on no NOTIFY (RFC 1996 3.10 concerns secondaries):
            # from anyone, it is counted and ignored.
            return None, "drop:notify"
        try:
            query = dns.message.from_wire(wire, ignore_trailing=False)
        except dns.message.UnknownTSIGKey:
            return None, SIGNED  # the transport checks the TSIG (xfr.signed_answer)
        except dns.exception.DNSException:
            return _header_only(wire, dns.rcode.FORMERR), "rcode:FORMERR"
        if query.opcode() != dns.opcode.QUERY:
            return self._render(_response(query, dns.rcode.NOTIMP), query, udp), "rcode:NOTIMP"
        if len(query.question) != 1:
            return _header_only(wire, dns.rcode.FORMERR), "rcode:FORMERR"
        if query.edns > 0:
            response = _response(query, dns.rcode.BADVERS)
            return self._render(response, query, udp), "rcode:BADVERS"
        response = self._resolve(query)
        return self._render(response, query, udp), _RCODE_KEY[response.rcode()]

    def _resolve(self, query: dns.message.Message) -> dns.message.Message:
        q = query.question[0]
        found = self.zone_for(q.name) if q.rdclass == dns.rdataclass.IN else None
        if found is None or q.rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            response = _response(query, dns.rcode.REFUSED)
            if query.edns >= 0:  # RFC 8914 4.21, as Knot says it too
                response.use_edns(0, response.ednsflags, PAYLOAD_MAX, options=[
                    dns.edns.EDEOption(dns.edns.EDECode.NOT_AUTHORITATIVE)])
            return response
        zone, nodes, names, signed = found
        # RFC 4035 3.1: RRSIGs (and NSECs for denial) only when DO is set.
        if not query.ednsflags & dns.flags.DO:
            signed = None
        response = _response(query, dns.rcode.NOERROR)
        response.flags |= dns.flags.AA
        name = q.name
        for _ in range(CNAME_CHAIN_MAX):
            node = nodes.get(name)
            if node is None:
                if name in names:
                    break  # an empty non-terminal: NODATA
                response.set_rcode(dns.rcode.NXDOMAIN)
                _deny(response, zone, names, signed, name, nxdomain=True)
                return response
            if q.rdtype == dns.rdatatype.ANY:
                rdtype = next(t for t in (*_ANY_ORDER, *node) if t in node)
                _add(response.answer, node[rdtype], name, signed)
                return response
            if q.rdtype in node:
                _add(response.answer, node[q.rdtype], name, signed)
                return response
            cname = node.get(dns.rdatatype.CNAME)
            if cname is None:
                break
            _add(response.answer, cname, name, signed)
            name = cname[0].target
            if not name.is_subdomain(zone.origin):
                return response  # out of zone: the resolver follows it
        _deny(response, zone, names, signed, name, nxdomain=False)
        return response

    def _render(self, response: dns.message.Message, query: dns.message.Message,
                udp: bool) -> bytes:
        limit = TCP_MAX
        if udp:
            limit = (max(PAYLOAD_MIN, min(query.payload, PAYLOAD_MAX)) if query.edns >= 0
                     else PAYLOAD_MIN)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer.clear()
            response.authority.clear()
            response.additional.clear()
            response.flags |= dns.flags.TC
            return response.to_wire(max_size=limit)


class _Signed:
    """A signed zone's RRSIGs by (owner, type covered), and its NSEC owners
    in canonical order (dns.name.Name orders as RFC 4034 6.1 does)."""

    __slots__ = ("sigs", "nsec", "owners")

    def __init__(self, sigs: dict, nodes: dict) -> None:
        self.sigs = sigs
        self.nsec = {name: node[dns.rdatatype.NSEC] for name, node in nodes.items()
                     if dns.rdatatype.NSEC in node}
        self.owners = sorted(self.nsec)

    def covering(self, name: dns.name.Name) -> dns.name.Name:
        """The owner of the NSEC that matches or covers name (the apex
        sorts first, so a name in the zone always has one)."""
        return self.owners[bisect.bisect_right(self.owners, name) - 1]


def _add(section: list, rrset: dns.rrset.RRset, name: dns.name.Name,
         signed: _Signed | None, ttl: int | None = None) -> None:
    """rrset under the owner name as reached, and its RRSIG when signed."""
    section.append(_named(rrset, name) if ttl is None else _with_ttl(rrset, ttl))
    if signed is not None:
        sig = signed.sigs.get((rrset.name, rrset.rdtype))
        if sig is not None:
            section.append(_named(sig, name) if ttl is None else _with_ttl(sig, ttl))


def _deny(response: dns.message.Message, zone: Zone, names: set, signed: _Signed | None,
          name: dns.name.Name, nxdomain: bool) -> None:
    """The authority section of NODATA or NXDOMAIN: the SOA and, signed,
    the NSECs that prove it (RFC 4035 3.1.3): for NODATA the name's own
    NSEC (or, for an empty non-terminal, the one covering it); for NXDOMAIN
    the NSEC covering the name and the one covering the wildcard at its
    closest encloser."""
    if signed is None:
        soa = _negative_soa(zone)
        _add(response.authority, soa, soa.name, None, soa.ttl)
        return
    proofs = [signed.covering(name)]
    if nxdomain:
        encloser = name.parent()
        while encloser not in names and encloser != zone.origin:
            encloser = encloser.parent()
        proofs.append(signed.covering(dns.name.Name((b"*",)).concatenate(encloser)))
    _deny_proofs(response, zone, signed, list(dict.fromkeys(proofs)))


def _deny_proofs(response: dns.message.Message, zone: Zone, signed: _Signed,
                 owners: list) -> None:
    """The signed authority section: SOA and RRSIG, then each NSEC and RRSIG."""
    soa = _negative_soa(zone)
    _add(response.authority, soa, soa.name, signed, soa.ttl)
    for owner in owners:
        _add(response.authority, signed.nsec[owner], owner, signed)


def _with_ttl(rrset: dns.rrset.RRset, ttl: int) -> dns.rrset.RRset:
    out = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype, rrset.covers)
    out.update(rrset)
    out.ttl = ttl
    return out


def _response(query: dns.message.Message, rcode: int) -> dns.message.Message:
    """An answer frame for query: QR, RD and CD copied, RA clear, EDNS echoed
    with our payload size and the DO bit copied (RFC 3225)."""
    response = dns.message.make_response(query, our_payload=PAYLOAD_MAX)
    response.flags &= ~dns.flags.RA
    response.flags |= query.flags & dns.flags.CD
    if query.edns >= 0:
        response.use_edns(0, query.ednsflags & dns.flags.DO, PAYLOAD_MAX)
    response.set_rcode(rcode)
    return response


def _header_only(wire: bytes, rcode: int) -> bytes:
    """A bare header answering a query that could not be parsed: its ID,
    opcode and RD kept, no sections (RFC 1035 4.1.1 FORMERR)."""
    flags = _QR | (int.from_bytes(wire[2:4], "big") & (0x7800 | dns.flags.RD)) | (rcode & 0xF)
    return wire[:2] + flags.to_bytes(2, "big") + bytes(8)


def _named(rrset: dns.rrset.RRset, name: dns.name.Name) -> dns.rrset.RRset:
    """rrset under the owner name as the chain reached it (the query's case)."""
    if rrset.name == name and rrset.name.to_text() == name.to_text():
        return rrset
    out = dns.rrset.RRset(name, rrset.rdclass, rrset.rdtype, rrset.covers)
    out.update(rrset)
    out.ttl = rrset.ttl
    return out


def _negative_soa(zone: Zone) -> dns.rrset.RRset:
    soa = zone.soa
    ttl = min(soa.ttl, soa[0].minimum)
    out = dns.rrset.RRset(soa.name, soa.rdclass, soa.rdtype)
    out.update(soa)
    out.ttl = ttl
    return out


# --- One query and its check, for `route-chain doctor` -----------------------

def doctor_query(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[bytes, int]:
    """A PTR query for address, in wire format, and its id."""
    query = dns.message.make_query(dns.reversename.from_address(str(address)), "PTR")
    return query.to_wire(), query.id


def doctor_reply(wire: bytes, qid: int) -> str | None:
    """None when wire is an authoritative answer to query qid (a name or
    NXDOMAIN: the server knows the zone); else what is wrong with it."""
    try:
        reply = dns.message.from_wire(wire)
    except dns.exception.DNSException as e:
        return f"an unreadable answer ({e})"
    if reply.id != qid:
        return "an answer to another query"
    rcode = dns.rcode.to_text(reply.rcode())
    if reply.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return f"it answers {rcode}"
    if not reply.flags & dns.flags.AA:
        return f"it answers {rcode} without authority: not route-chain's server for the zone"
    return None
