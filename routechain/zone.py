"""Reverse zones for the chains' stories: what the built-in server serves and
what `route-chain zone` writes for BIND, Knot or NSD. Pure data, no I/O but
`export`.

Which zones:

- IPv6: ip6.arpa zones on nibble boundaries. The chain's prefix length is
  rounded up to a multiple of 4 (a /64 gives one 16-nibble zone, a /62 the
  /64 zones), and a zone is made for each such block holding a hop with a
  name.
- IPv4 of /24 or shorter: in-addr.arpa zones on octet boundaries, the same
  way (a /24 gives one zone, a /20 the /24 zones its hops touch).
- IPv4 longer than /24 (a DN42 /27 or /29): an RFC 2317 classless zone named
  `<first octet>-<prefix length>.<c>.<b>.<a>.in-addr.arpa`, e.g.
  `0-27.100.51.198.in-addr.arpa` (RFC 2317's examples use `/`, which cannot
  stand in a file name and is not a host-name character; `-` is the common
  alternative; `[dns] zone_name_form` picks `-`, `/` or `_`, and a file
  name has `_` for `/`, as Knot's `%s` does). The owners are the last octets: `2.0-27...`.
  Whoever runs the /24 zone adds an NS record for the classless zone and a
  CNAME for each address (`parent_records`). So that a resolver pointed
  straight at the built-in server (a lab, the demo) can look up the plain
  names too, a local stand-in for that parent zone is also made, holding
  the CNAME for each named hop and, beside it, the PTR it points to (no zone
  cut, so every server follows the CNAME inside the zone and answers CNAME
  plus PTR). Load that file only where you also run the /24.

Every zone has SOA and NS at its apex and a PTR for each hop (and each
load-balanced '+' alternative, at its own address) that has a name; silent
and unnamed hops have no record. A chapter's address has the destination's
PTR (the story's last line), as the host answering there is the destination.

Defaults: NS `ns.<suffix of the first chain with one>`, else
`ns.route-chain.invalid` (set [dns] ns for a real delegation); SOA mname the
first NS, rname `hostmaster.<mname without its first label>`; serial the Unix
time of the build, so that every reload or export that changes anything
carries a larger serial (RFC 1982 arithmetic holds until 2106).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.reversename

from .chain import Chain, StoryFacts
from .config import Config, DnsSettings
from .errors import ConfigError


@dataclass(frozen=True)
class Zone:
    """One reverse zone: its origin and every RRset in it (SOA first, then
    the apex NS, then the rest in address order). Names are absolute."""

    origin: dns.name.Name
    rrsets: tuple[dns.rrset.RRset, ...]

    @property
    def filename(self) -> str:
        """`<origin without the trailing dot>.zone`, `/` written `_`."""
        return f"{self.origin.to_text(omit_final_dot=True).replace('/', '_')}.zone"

    @property
    def soa(self) -> dns.rrset.RRset:
        return self.rrsets[0]

    @property
    def origin_key(self) -> bytes:
        """The origin as lower-case uncompressed wire: how the server and
        its transfers look a zone up."""
        return self.origin.to_digestable()

    def to_text(self) -> str:
        """The zone as an RFC 1035 master file."""
        ttl = self.soa.ttl
        lines = [f"; {self.origin} written by route-chain",
                 f"$ORIGIN {self.origin}", f"$TTL {ttl}"]
        for rrset in self.rrsets:
            owner = rrset.name.relativize(self.origin).to_text()
            for rdata in rrset:
                text = rdata.to_text(origin=None, relativize=False)
                lines.append(f"{owner}\t{rrset.ttl}\tIN\t"
                             f"{dns.rdatatype.to_text(rrset.rdtype)}\t{text}")
        return "\n".join(lines) + "\n"


def build(config: Config, now: float | None = None) -> list[Zone]:
    """The reverse zones of every chain with named hops, sorted by origin,
    as dnspython objects: the reference the fast writer (`drafts`,
    `Draft.to_text`) is held equal to, byte for byte, in the tests. `now`
    fixes the default serial (the Unix time of the build)."""
    settings = config.dns
    ns, mname, rname = settings.names(config.chains)
    serial = _serial(settings, now)
    records: dict[dns.name.Name, list[tuple[dns.name.Name, str, str]]] = {}
    for chain in config.chains:
        for origin, owner, rdtype, target in _chain_records(chain, settings.zone_name_form):
            records.setdefault(origin, []).append((owner, rdtype, target))
    zones = []
    for origin, recs in records.items():
        zones.append(_zone(origin, recs, ns, mname, rname, settings, serial))
    return sorted(zones, key=lambda z: (z.origin.labels[-2:], z.origin.to_text()))


def export(config: Config, output_dir: Path) -> list[Path]:
    """Write one master file per zone into output_dir (made if missing);
    returns the paths written, in zone order. Files are opened relative to
    the directory's descriptor: with ten thousand zones, builtin open()'s
    own work per file cost several times the writing."""
    output_dir = Path(output_dir)
    paths = []
    path = output_dir
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        directory = os.open(output_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for zone in drafts(config):
                path = output_dir / zone.filename
                data = zone.to_text().encode("ascii")
                fd = os.open(zone.filename, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                             0o644, dir_fd=directory)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
                paths.append(path)
        finally:
            os.close(directory)
    except OSError as e:
        raise ConfigError(f"{path}: cannot write zone: {e.strerror}") from None
    return paths


def parent_records(config: Config) -> str:
    """For each RFC 2317 chain, the NS and CNAME records the /24 zone above
    it must hold, as master-file text ready to paste; "" when there is none."""
    settings = config.dns
    ns = settings.names(config.chains)[0]
    out = []
    for chain in config.chains:
        if not _classless(chain):
            continue
        parent, label, _ = _classless_texts(chain, settings.zone_name_form)
        out.append(f"; {chain.network} ({chain.where}): add to the zone {parent}")
        out.append(f"$ORIGIN {parent}")
        out.extend(f"{label}\tIN\tNS\t{n}." for n in ns)
        first = int(chain.network.network_address) & 0xFF
        out.extend(f"{last}\tIN\tCNAME\t{last}.{label}"
                   for last in range(first, first + chain.network.num_addresses))
    return "\n".join(out) + "\n" if out else ""


def reverse_name(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dns.name.Name:
    return dns.reversename.from_address(str(address))


def zone_origin(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                bits: int) -> dns.name.Name:
    """The reverse name of the block of `bits` leading bits holding address;
    bits must be on an octet (IPv4) or nibble (IPv6) boundary."""
    step = 8 if address.version == 4 else 4
    drop = (address.max_prefixlen - bits) // step
    return reverse_name(address).split(len(reverse_name(address)) - drop)[1]


def _classless(chain: Chain) -> bool:
    return chain.family == 4 and chain.network.prefixlen > 24


def classless_label(first: int, prefixlen: int, form: str = "-") -> str:
    """The label of an RFC 2317 classless zone below its /24,
    `<first octet><form><prefix length>` (RFC 2317 5; `form` is
    [dns] zone_name_form): the one place both writers (and
    `parent_records`) take the zone's name from."""
    return f"{first}{form}{prefixlen}"


def _classless_names(network: ipaddress.IPv4Network,
                     form: str = "-") -> tuple[dns.name.Name, dns.name.Name]:
    """The /24 zone above a classless block and the block's own zone."""
    parent = zone_origin(network.network_address, 24)
    label = classless_label(int(network.network_address) & 0xFF, network.prefixlen, form)
    return parent, dns.name.Name((label.encode(),)).concatenate(parent)


def _chain_records(chain: Chain, form: str = "-"):
    """(zone origin, owner, type, target) for each named hop of a chain and
    each named '+' alternative, at its own address."""
    named = [(chain.branch_address(k, b), router.name)
             for k, hop in enumerate(chain.hops, 1)
             for b, router in enumerate(chain.routers_at(k))
             if router.name and not router.silent]
    last = chain.hops[-1] if chain.hops else None
    if last is not None and last.name and not last.silent:
        # A chapter's address is the story's end as well: the host that
        # answers there is the destination (docs/stories.md, chapters).
        named += [(chain.chapter_address(c), last.name) for c in chain.chapters]
    if not named:
        return
    if _classless(chain):
        parent, child = _classless_names(chain.network, form)
        for addr, name in named:
            last = str(addr).rsplit(".", 1)[1]
            owner = dns.name.Name((last.encode(),)).concatenate(child)
            yield child, owner, "PTR", name
            yield parent, reverse_name(addr), "CNAME", owner.to_text()
            yield parent, owner, "PTR", name
        return
    step = 8 if chain.family == 4 else 4
    bits = max(step, -(-chain.network.prefixlen // step) * step)
    for addr, name in named:
        yield zone_origin(addr, bits), reverse_name(addr), "PTR", name


def _zone(origin: dns.name.Name, recs, ns: tuple[str, ...], mname: str, rname: str,
          s: DnsSettings, serial: int) -> Zone:
    soa = dns.rrset.from_text(origin, s.ttl, "IN", "SOA",
                              f"{mname}. {rname}. {serial} {s.refresh} {s.retry} "
                              f"{s.expire} {s.minimum}")
    apex_ns = dns.rrset.from_text_list(origin, s.ttl, "IN", "NS", [f"{n}." for n in ns])
    seen: dict[tuple[dns.name.Name, str], dns.rrset.RRset] = {}
    order = []
    for owner, rdtype, target in recs:
        key = (owner, rdtype)
        target = target if target.endswith(".") else f"{target}."
        if key in seen:
            seen[key].add(dns.rrset.from_text(owner, s.ttl, "IN", rdtype, target)[0])
        else:
            seen[key] = dns.rrset.from_text(owner, s.ttl, "IN", rdtype, target)
            order.append(key)
    body = sorted((seen[k] for k in order), key=_address_order)
    return Zone(origin, (soa, apex_ns, *body))


def _address_order(rrset: dns.rrset.RRset):
    """Owners in numeric order of their labels, from the apex down."""
    labels = rrset.name.labels
    key = []
    for label in reversed(labels):
        text = label.decode()
        key.append((0, int(text), text) if text.isdigit() else
                   (0, int(text, 16), text) if len(text) == 1 and text in "0123456789abcdef"
                   else (1, 0, text))
    return key


# --- the fast writer: zones straight from the story model ---------------------
#
# `build` above makes a dnspython object of every record: 75-109 s for
# 10,000 chains of 30 named hops. The drafts below compute the same zones
# from the chain model with integers and strings, render the master file
# directly, and make dnspython objects only for the one zone a query asks
# for (`Draft.zone`). A test holds both to the same bytes on random stories.

_V4_ARPA, _V6_ARPA = "in-addr.arpa.", "ip6.arpa."
# A name dnspython writes back exactly as given (labels of letters, digits,
# '-' and '_', 1..63 octets): no escape, no IDNA. Anything else is rendered
# by dnspython itself, so the two writers cannot differ.
_PLAIN = re.compile(r"(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?\Z")


def _serial(settings: DnsSettings, now: float | None) -> int:
    if settings.serial is not None:
        return settings.serial
    return int(now if now is not None else time.time())


@dataclass(frozen=True)
class Head:
    """What every zone of one build shares: the TTL and the SOA and NS
    lines at the apex, as dnspython writes them (rendered once), and the
    RFC 2317 name form ([dns] zone_name_form)."""

    ttl: int
    lines: tuple[str, ...]
    soa: str
    ns: tuple[str, ...]
    minimum: int
    form: str = "-"

    @classmethod
    def of(cls, config: Config, now: float | None = None) -> "Head":
        s = config.dns
        ns, mname, rname = s.names(config.chains)
        soa = dns.rrset.from_text(dns.name.root, s.ttl, "IN", "SOA",
                                  f"{mname}. {rname}. {_serial(s, now)} {s.refresh} "
                                  f"{s.retry} {s.expire} {s.minimum}")
        apex_ns = dns.rrset.from_text_list(dns.name.root, s.ttl, "IN", "NS",
                                           [f"{n}." for n in ns])
        soa_text = soa[0].to_text(origin=None, relativize=False)
        ns_texts = tuple(r.to_text(origin=None, relativize=False) for r in apex_ns)
        lines = (f"@\t{s.ttl}\tIN\tSOA\t{soa_text}",
                 *(f"@\t{s.ttl}\tIN\tNS\t{t}" for t in ns_texts))
        return cls(s.ttl, lines, soa_text, ns_texts, s.minimum, s.zone_name_form)


class Draft:
    """One reverse zone as the story model gives it: its origin (absolute
    text), the Head it shares with the build, and the chains (with the part
    of each) that put records in it. The records are worked out when asked
    for, and the dnspython Zone too (`zone()`), so that a daemon with ten
    thousand zones builds none of them before a query."""

    __slots__ = ("origin", "head", "sources", "_shape")

    def __init__(self, origin: str, head: Head, sources: tuple) -> None:
        self.origin = origin
        self.head = head
        self.sources = sources
        self._shape: tuple | None = None

    @property
    def origin_key(self) -> bytes:
        """The origin as lower-case uncompressed wire (Zone.origin_key),
        without a dns.name.Name (the origin is plain text: digits, hex,
        '-', '/', '_' and dots)."""
        return b"".join(len(label).to_bytes(1, "big") + label
                        for label in self.origin.lower().encode("ascii").split(b".")[:-1]) \
            + b"\x00"

    @property
    def origin_name(self) -> dns.name.Name:
        """The origin as a dns.name.Name (Zone.origin), made when asked."""
        return dns.name.from_text(self.origin)

    @property
    def serial(self) -> int:
        """The serial its SOA proposes (the build's)."""
        return int(self.head.soa.split()[2])

    def same_records(self, other: "Draft") -> bool:
        """True when other makes the same zone but for the serial: the same
        SOA and NS otherwise, and the same records. Compared first by what
        the records are made of (each source chain's part, prefix and
        named addresses, kept once worked out), which is per hop, not per
        record; only drafts whose makings differ have their records
        rendered and compared (two stories may name a hop alike)."""
        if other is self:
            return True
        if self.origin_key != other.origin_key or _head_key(self.head) != _head_key(other.head):
            return False
        return self._making() == other._making() or self.records == other.records

    def _making(self) -> tuple:
        if self._shape is None:
            self._shape = tuple((part, chain.network, tuple(_named(chain)))
                                for chain, part in self.sources)
        return self._shape

    @property
    def filename(self) -> str:
        """`<origin without the trailing dot>.zone`, `/` written `_`, as
        Zone.filename."""
        return f"{self.origin[:-1].replace('/', '_')}.zone"

    def same(self, other: object) -> bool:
        """Whether `other` is a Draft of the same records: the same origin
        and head, from the very same Chain objects (config.Memo keeps a
        reload's unchanged chains as they were) with the same parts."""
        return (isinstance(other, Draft) and other.origin == self.origin
                and other.head == self.head and len(other.sources) == len(self.sources)
                and all(a[0] is b[0] and a[1] == b[1]
                        for a, b in zip(other.sources, self.sources)))

    @property
    def records(self) -> tuple[tuple[str, str, str], ...]:
        """(owner relative to the origin, type, target absolute) of every
        record below the apex, in the order `build` puts them; worked out
        each time (nothing kept: the server keeps what it made ready)."""
        return _draft_records(self)

    def to_text(self) -> str:
        """The zone as an RFC 1035 master file, the bytes of Zone.to_text."""
        ttl = self.head.ttl
        return "\n".join((f"; {self.origin} written by route-chain",
                          f"$ORIGIN {self.origin}", f"$TTL {ttl}", *self.head.lines,
                          *[f"{owner}\t{ttl}\tIN\t{rdtype}\t{target}"
                            for owner, rdtype, target in self.records])) + "\n"

    def zone(self) -> Zone:
        """This zone as dnspython objects (made each time: the server keeps
        it while it is in use): what the built-in server answers from."""
        origin = dns.name.from_text(self.origin)
        h = self.head
        rrsets = [dns.rrset.from_text(origin, h.ttl, "IN", "SOA", h.soa),
                  dns.rrset.from_text_list(origin, h.ttl, "IN", "NS", list(h.ns))]
        last = None
        for owner, rdtype, target in self.records:
            if last is not None and (owner, rdtype) == last:
                rrsets[-1].add(dns.rrset.from_text(rrsets[-1].name, h.ttl, "IN", rdtype,
                                                   target)[0])
                continue
            name = origin if owner == "@" else dns.name.from_text(owner, origin)
            rrsets.append(dns.rrset.from_text(name, h.ttl, "IN", rdtype, target))
            last = owner, rdtype
        return Zone(origin, tuple(rrsets))


def _head_key(head: Head) -> tuple:
    """A Head but for its serial: equal for two builds whose SOA and NS
    differ at most in the serial."""
    soa = head.soa.split()
    return head.ttl, tuple(soa[:2] + soa[3:]), head.ns, head.form


def drafts(config: Config, now: float | None = None) -> list[Draft]:
    """The zones `build` makes, in the same order, as Drafts: the work here
    is per chain (which zones it touches), never per record."""
    head = Head.of(config, now)
    sources: dict[str, list] = {}
    stories: set[int] = set()
    for chain in config.chains:
        for origin, part in _chain_zones(chain, head.form):
            sources.setdefault(origin, []).append((chain, part))
        if id(chain.hops) not in stories:
            # Every name rendered now, once per story (chains telling one
            # story share its hops): a name dnspython refuses fails here, as
            # it failed `build`, never later on a query.
            stories.add(id(chain.hops))
            for _, name in _named(chain):
                _target("PTR", name)
    return [Draft(origin, head, tuple(sources[origin])) for origin in sorted(sources)]


def _named(chain: Chain) -> list[tuple[int, str]]:
    """(address as an integer, name) of each named hop and '+' alternative,
    in the order `_chain_records` takes them."""
    host = int(chain.host)
    out = []
    for k, hop in enumerate(chain.hops, 1):
        if hop.name and not hop.silent:
            out.append((host + k, hop.name))
        for b, alt in enumerate(hop.alternatives, 1):
            if alt.name and not alt.silent:
                out.append((int(chain.branch_address(k, b)), alt.name))
    last = chain.hops[-1] if chain.hops else None
    if chain.chapters and last.name and not last.silent:
        out.extend((int(chain.chapter_address(c)), last.name) for c in chain.chapters)
    return out


def _has_names(chain: Chain) -> bool:
    """Whether the chain's story names a hop or alternative it serves:
    worked out once per story (StoryFacts), not once per chain telling it."""
    return StoryFacts.of(chain.hops).named


def _zone_bits(chain: Chain) -> int:
    """The zone's prefix length: the chain's rounded up to an octet (IPv4)
    or nibble (IPv6) boundary."""
    step = 8 if chain.family == 4 else 4
    return max(step, -(-chain.network.prefixlen // step) * step)


def _low_labels(address: int, family: int, count: int) -> str:
    """The first `count` labels of address's reverse name (least
    significant first), joined; "@" for none (the owner is the apex)."""
    if count == 0:
        return "@"
    if family == 4:
        return ".".join(str(address >> 8 * i & 0xFF) for i in range(count))
    return ".".join(f"{address:032x}"[:-count - 1:-1])


def _origin_text(address: int, family: int, bits: int) -> str:
    """The reverse name of the block of `bits` leading bits holding address."""
    if family == 4:
        drop = (32 - bits) // 8
        return "".join(f"{address >> 8 * i & 0xFF}." for i in range(drop, 4)) + _V4_ARPA
    drop = (128 - bits) // 4
    return "".join(f"{c}." for c in f"{address:032x}"[::-1][drop:]) + _V6_ARPA


def _classless_texts(chain: Chain, form: str = "-") -> tuple[str, str, str]:
    """(parent origin, child label, child origin) of an RFC 2317 chain."""
    first = int(chain.network.network_address)
    parent = _origin_text(first, 4, 24)
    label = classless_label(first & 0xFF, chain.network.prefixlen, form)
    return parent, label, f"{label}.{parent}"


def _chain_zones(chain: Chain, form: str = "-"):
    """(origin, part) of each zone the chain puts records in: part is
    "child" or "parent" for an RFC 2317 chain, else the block (the address
    shifted right past the zone's bits), or None when the chain's prefix is
    the zone (all its hops in one)."""
    if not _has_names(chain):
        return
    if _classless(chain):
        parent, _, child = _classless_texts(chain, form)
        yield child, "child"
        yield parent, "parent"
        return
    bits, family = _zone_bits(chain), chain.family
    if bits == chain.network.prefixlen:
        yield _origin_text(int(chain.network.network_address), family, bits), None
        return
    shift = chain.network.max_prefixlen - bits
    for block in sorted({address >> shift for address, _ in _named(chain)}):
        yield _origin_text(block << shift, family, bits), block


@functools.lru_cache(maxsize=65536)
def _target(rdtype: str, target: str) -> str:
    """A record's target as dnspython writes it back (absolute)."""
    if not target.endswith("."):
        target = f"{target}."
    if len(target) <= 254 and _PLAIN.match(target):
        return target
    return dns.rdata.from_text("IN", rdtype, target).to_text(origin=None, relativize=False)


def _label_key(label: str):
    """One label's place in `_address_order` (written apart from it on
    purpose: the tests hold the two writers' orders to each other)."""
    return ((0, int(label), label) if label.isdigit() else
            (0, int(label, 16), label) if len(label) == 1 and label in "0123456789abcdef"
            else (1, 0, label))


def _draft_records(draft: Draft) -> tuple[tuple[str, str, str], ...]:
    """The records of one draft in `build`'s order: in address order, an
    RFC 2317 stand-in's CNAMEs before the child's PTRs."""
    entries = []   # (sort key, owner, type, target)
    for chain, part in draft.sources:
        named = _named(chain)
        if part == "child" or part == "parent":
            _, label, _ = _classless_texts(chain, draft.head.form)
            for address, name in named:
                last = address & 0xFF
                target = _target("PTR", name)
                if part == "child":
                    entries.append(((0, last), str(last), "PTR", target))
                else:
                    # The labels below the apex, from the apex down.
                    entries.append((((0, last, str(last)),), str(last), "CNAME",
                                    f"{last}.{label}.{draft.origin}"))
                    entries.append(((_label_key(label), (0, last, str(last))),
                                    f"{last}.{label}", "PTR", target))
            continue
        family = chain.family
        bits = _zone_bits(chain)
        count = (chain.network.max_prefixlen - bits) // (8 if family == 4 else 4)
        shift = chain.network.max_prefixlen - bits
        low = (1 << shift) - 1
        for address, name in named:
            if part is None or address >> shift == part:
                # Every owner has `count` labels, each a number: address order.
                entries.append(((0, address & low), _low_labels(address, family, count),
                                "PTR", _target("PTR", name)))
    if len(draft.sources) > 1 and any(part != "parent" for _, part in draft.sources):
        # Chains of different kinds in one zone (they overlap, which a loaded
        # config refuses): the keys above do not compare, take the labels'.
        entries = [(_owner_key(e[1]),) + e[1:] for e in entries]
    # Same owner and type twice (overlapping chains again): one RRset, each
    # target once (names compare without case), at the first one's place.
    # One chain's addresses are distinct, and so are its owners.
    merged: dict[tuple[str, str], list] = {}
    if len(draft.sources) > 1:
        for entry in entries:
            merged.setdefault((entry[1], entry[2]), []).append(entry)
    if merged and len(merged) != len(entries):
        entries = []
        for group in merged.values():
            seen = set()
            for entry in group:
                if entry[3].lower() not in seen:
                    seen.add(entry[3].lower())
                    entries.append((group[0][0],) + entry[1:])
    entries.sort(key=_first)
    return tuple(entry[1:] for entry in entries)


def _first(entry):
    return entry[0]


def _owner_key(owner: str):
    """`_address_order` of a relative owner: its labels from the apex down."""
    return [] if owner == "@" else [_label_key(label) for label in reversed(owner.split("."))]
