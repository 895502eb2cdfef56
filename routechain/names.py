"""Forward names for stories: a chain's `name` (e.g. story.example.dn42)
answers A or AAAA with the chain's destination, so that `traceroute
story.example.dn42` tells the story. Each name is the apex of a zone of
its own, with the same SOA and NS as the reverse zones; two chains (IPv4
and IPv6) may share a name, which then has both records. A chapter
(`chapters = { LABEL = HOP }`) is `LABEL.NAME` in the same zone, answering
with the chapter's address (Chain.chapter_address), which a trace enters
at hop HOP. Pure data, like
zone.py, whose Zone it returns: the built-in server serves these zones
beside the reverse ones, and `route-chain zone` writes them too.
"""

from __future__ import annotations

import time

import dns.name
import dns.rrset

from .config import Config
from .zone import Zone


def build(config: Config, now: float | None = None) -> list[Zone]:
    """One zone per forward name, sorted by name; `now` fixes the default
    serial as zone.build's does."""
    settings = config.dns
    named = [c for c in config.chains if c.name is not None]
    if not named:
        return []
    ns, mname, rname = settings.names(config.chains)
    serial = settings.serial if settings.serial is not None else int(
        now if now is not None else time.time())
    addresses: dict[str, list[str]] = {}
    chapters: dict[str, dict[str, list[str]]] = {}
    for chain in named:  # config.chain_of: a named chain has a destination
        addresses.setdefault(chain.name, []).append(str(chain.destination))
        for chapter in chain.chapters:
            chapters.setdefault(chain.name, {}).setdefault(chapter.label, []).append(
                str(chain.chapter_address(chapter)))
    zones = []
    for name, found in sorted(addresses.items()):
        origin = dns.name.from_text(name)
        s = settings
        rrsets = [dns.rrset.from_text(origin, s.ttl, "IN", "SOA",
                                      f"{mname}. {rname}. {serial} {s.refresh} {s.retry} "
                                      f"{s.expire} {s.minimum}"),
                  dns.rrset.from_text_list(origin, s.ttl, "IN", "NS", [f"{n}." for n in ns])]
        owners = [(origin, found)] + [
            (dns.name.Name((label.encode(),)).concatenate(origin), at)
            for label, at in sorted(chapters.get(name, {}).items())]
        for owner, at in owners:
            for rdtype in ("A", "AAAA"):
                these = [a for a in at if (":" in a) == (rdtype == "AAAA")]
                if these:
                    rrsets.append(dns.rrset.from_text_list(owner, s.ttl, "IN", rdtype, these))
        zones.append(Zone(origin, tuple(rrsets)))
    return zones


def export(config: Config, output_dir) -> list:
    """Write the forward zones' master files beside the reverse ones."""
    from pathlib import Path

    from .errors import ConfigError
    output_dir = Path(output_dir)
    paths = []
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for z in build(config):
            path = output_dir / z.filename
            path.write_text(z.to_text(), encoding="ascii")
            paths.append(path)
    except OSError as e:
        raise ConfigError(f"{e.filename or output_dir}: cannot write zone: {e.strerror}") from None
    return paths
