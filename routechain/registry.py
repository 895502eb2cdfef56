"""What a DN42 (RIPE-style) registry needs for each chain's block, as text
ready to paste: the inetnum/inet6num object with its nserver lines, and
the route/route6 object with max-length and the origin AS. Pure: a Config
in, text out (`route-chain registry --config FILE` prints it).

With [dnssec] enabled, each object whose block is one reverse zone gets a
`ds-rdata:` line (the KSK's SHA-256 DS for that zone, as the CLI hands it
in); a block spread over several zones gets a comment naming each zone's
DS. For a block longer than /24 the comment names the RFC 2317 zone the
registry's delegation must point at, in the config's zone_name_form.
"""

from __future__ import annotations

import re

from .config import Config, DnsSettings
from .errors import UsageError
from .zone import _classless, _classless_names, zone_origin

WIDTH = 20  # RIPE-style: the value starts in column 21


def render(config: Config, source: str = "DN42", ds: dict | None = None) -> str:
    """One inetnum/inet6num and one route/route6 object per chain; `ds`
    maps a zone origin to its DS rdata text (empty: not signed)."""
    ds = ds or {}
    reg = config.registry
    if reg.origin_as is None:
        raise UsageError(f"{config.path or 'config'}: set [registry] origin_as (the AS that "
                         "announces the chains) to print route objects")
    dns = config.dns
    ns = dns.names(config.chains)[0]
    out = []
    for chain in config.chains:
        net = chain.network
        four = net.version == 4
        first, last = net.network_address, net.broadcast_address
        if four:
            span = f"{first} - {last}"
        else:
            span = f"{first.exploded} - {last.exploded}"
        netname = "RC-" + re.sub(r"[.:/]+", "-", str(net)).upper()
        out.append(f"# {net} ({chain.where}): reverse zone {_zone_of(chain, dns)}")
        lines = [("inetnum" if four else "inet6num", span), ("cidr", str(net)),
                 ("netname", netname),
                 ("descr", "route-chain traceroute story")]
        if reg.admin_c:
            lines += [("admin-c", reg.admin_c), ("tech-c", reg.admin_c)]
        if reg.mnt_by:
            lines.append(("mnt-by", reg.mnt_by))
        lines += [("nserver", n) for n in ns]
        origins = _origins(chain, dns)
        if len(origins) == 1 and origins[0] in ds:
            lines.append(("ds-rdata", ds[origins[0]]))
        elif ds:
            out.extend(f"# ds-rdata for {o}: {ds[o]}" for o in origins if o in ds)
        lines += [("status", "ASSIGNED"), ("source", source)]
        out.extend(_lines(lines))
        out.append("")
        route = [("route" if four else "route6", str(net)), ("origin", f"AS{reg.origin_as}"),
                 ("max-length", str(net.prefixlen))]
        if reg.mnt_by:
            route.append(("mnt-by", reg.mnt_by))
        route.append(("source", source))
        out.extend(_lines(route))
        out.append("")
    return "\n".join(out)


def _lines(pairs) -> list[str]:
    return [f"{key + ':':<{WIDTH}}{value}" for key, value in pairs]


def _origins(chain, dns: DnsSettings) -> list:
    """The origins of the reverse zones a block's delegation names."""
    if _classless(chain):
        return [_classless_names(chain.network, dns.zone_name_form)[1]]
    step = 8 if chain.family == 4 else 4
    bits = max(step, -(-chain.network.prefixlen // step) * step)
    return [zone_origin(sub.network_address, bits) for sub in chain.network.subnets(
        new_prefix=bits)][:256] if bits != chain.network.prefixlen else \
        [zone_origin(chain.network.network_address, bits)]


def _zone_of(chain, dns: DnsSettings) -> str:
    """The reverse zone the block's delegation names."""
    if _classless(chain):
        return _classless_names(chain.network, dns.zone_name_form)[1].to_text()
    step = 8 if chain.family == 4 else 4
    bits = max(step, -(-chain.network.prefixlen // step) * step)
    if bits != chain.network.prefixlen:
        return (f"{zone_origin(chain.network.network_address, bits)} and the other /{bits} "
                f"zones of {chain.network}")
    return zone_origin(chain.network.network_address, bits).to_text()

