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
and unnamed hops have no record.

Defaults: NS `ns.<suffix of the first chain with one>`, else
`ns.route-chain.invalid` (set [dns] ns for a real delegation); SOA mname the
first NS, rname `hostmaster.<mname without its first label>`; serial the Unix
time of the build, so that every reload or export that changes anything
carries a larger serial (RFC 1982 arithmetic holds until 2106).
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.reversename

from .chain import Chain
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
    """The reverse zones of every chain with named hops, sorted by origin.
    `now` fixes the default serial (the Unix time of the build)."""
    settings = config.dns
    ns, mname, rname = settings.names(config.chains)
    serial = settings.serial if settings.serial is not None else int(now if now is not None
                                                                       else time.time())
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
    returns the paths written, in zone order."""
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for zone in build(config):
            path = output_dir / zone.filename
            path.write_text(zone.to_text(), encoding="ascii")
            paths.append(path)
    except OSError as e:
        raise ConfigError(f"{e.filename or output_dir}: cannot write zone: {e.strerror}") from None
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
        parent, child = _classless_names(chain.network, settings.zone_name_form)
        out.append(f"; {chain.network} ({chain.where}): add to the zone {parent}")
        out.append(f"$ORIGIN {parent}")
        label = child.relativize(parent).to_text()
        out.extend(f"{label}\tIN\tNS\t{n}." for n in ns)
        for addr in chain.network:
            last = str(addr).rsplit(".", 1)[1]
            out.append(f"{last}\tIN\tCNAME\t{last}.{label}")
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


def _classless_names(network: ipaddress.IPv4Network,
                     form: str = "-") -> tuple[dns.name.Name, dns.name.Name]:
    """The /24 zone above a classless block and the block's own zone, its
    first label `<first octet><form><prefix length>` (RFC 2317 5)."""
    parent = zone_origin(network.network_address, 24)
    first = str(network.network_address).rsplit(".", 1)[1]
    label = f"{first}{form}{network.prefixlen}".encode()
    return parent, dns.name.Name((label,)).concatenate(parent)


def _chain_records(chain: Chain, form: str = "-"):
    """(zone origin, owner, type, target) for each named hop of a chain and
    each named '+' alternative, at its own address."""
    named = [(chain.branch_address(k, b), router.name)
             for k, hop in enumerate(chain.hops, 1)
             for b, router in enumerate((hop,) + hop.alternatives)
             if router.name and not router.silent]
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
