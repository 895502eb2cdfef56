"""What route-chain runs: chains, routes, daemon settings and DNS, from the
command line and a TOML file. Pure data and parsing, no I/O beyond reading
the files named.

The loader (`load`) is filled in with the story rules; the daemon and the CLI
rely only on the dataclasses below.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from .chain import Chain

DEFAULT_INTERFACE = "route-chain"


@dataclass(frozen=True)
class Route:
    """An extra route into the TUN, e.g. a covering /48."""

    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
    table: int | None = None
    metric: int | None = None
    where: str = "command line"


@dataclass(frozen=True)
class DnsSettings:
    """The built-in authoritative server and the zones it (or an export) serves."""

    listen: tuple[tuple[str, int], ...] = ()
    ttl: int = 3600
    ns: tuple[str, ...] = ()
    soa_mname: str | None = None
    soa_rname: str | None = None
    serial: int | None = None
    refresh: int = 3600
    retry: int = 600
    expire: int = 604800
    minimum: int = 300


@dataclass(frozen=True)
class Config:
    chains: tuple[Chain, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DnsSettings | None = None
    interface: str | None = None
    queues: int | None = None
    mtu: int | None = None
    warnings: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)
