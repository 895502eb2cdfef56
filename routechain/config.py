"""What route-chain runs: chains, routes, daemon settings and DNS, from the
command line and a TOML file. Pure data and parsing, no I/O beyond reading
the files named.

`load(path)` reads a config file (schema in settings.py, explained in
docs/stories.md) and its story files; `merge(cli, file)` joins it with what
the command line gave. Every error is a ConfigError naming the file and
line: `route-chain.toml:12: ...`; tomllib gives no positions, so
tomlpos.Locator finds the line of each table, key and array element.
Whatever goes wrong while loading, the caller gets a ConfigError, never
another exception: a reload must be able to refuse any file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import files, hopprops, settings, story, tomlpos
from .notify import Secondary
from .tsig import ALGORITHMS, Key as TsigKey, read_secret
from .chain import DEFAULT_REPLY_TTL, Chain, check_overlap
from .errors import ConfigError, RouteChainError, UsageError

DEFAULT_INTERFACE = "route-chain"
DEFAULT_DNS_PORT = 53
DEFAULT_NS = "ns.route-chain.invalid"


@dataclass(frozen=True)
class Route:
    """An extra route into the TUN, e.g. a covering /48."""

    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
    table: int | None = None
    metric: int | None = None
    where: str = "command line"


@dataclass(frozen=True)
class DnsSettings:
    """The built-in authoritative server and the zones it (or an export) serves.

    `listen` empty means no built-in server; the rest shapes every zone:
    `ns` the NS names (default `ns.<first chain's suffix>` or `ns.<zone>`),
    `soa_mname` the primary (default the first NS), `soa_rname` the contact
    in dotted form (default `hostmaster.<mname's parent>`), `serial` fixed or
    None for one derived from the zone's content.
    """

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
    # The built-in server's limits (docs/stories.md, "The built-in server").
    rate_limit: int = 100
    rate_limit_errors: int = 10
    rate_limit_slip: int = 2
    tcp_connections: int = 128
    tcp_connections_per_client: int = 8
    tcp_idle_timeout: int = 10
    # Zone transfers and NOTIFY (xfr.py, notify.py): off unless set.
    transfer: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    transfer_keys: tuple[str, ...] = ()
    keys: tuple[TsigKey, ...] = ()
    secondaries: tuple[Secondary, ...] = ()
    zone_name_form: str = "-"   # RFC 2317 zone names: "-", "/" or "_"
    forward: tuple[tuple[str, str], ...] = ()  # (chain's name, its destination): names.py
    where: str = field(default="", compare=False)

    def names(self, chains: tuple[Chain, ...]) -> tuple[tuple[str, ...], str, str]:
        """(NS names, SOA mname, SOA rname) of every zone, defaults filled
        in: NS `ns.<suffix of the first chain with one>`, else DEFAULT_NS;
        mname the first NS; rname `hostmaster.<mname without its first label>`."""
        ns = self.ns or next(((f"ns.{c.suffix}",) for c in chains if c.suffix), (DEFAULT_NS,))
        mname = self.soa_mname or ns[0]
        labels = mname.split(".")
        rname = self.soa_rname or "hostmaster." + ".".join(labels[1:] or labels)
        return ns, mname, rname


@dataclass(frozen=True)
class Limits:
    """[limits]: the daemon's ICMP rate limits (RFC 4443 2.4(f), RFC 1812
    4.3.2.8) and the pool delayed replies wait in. A rate of None is off,
    which only an explicit "off" or 0 asks for.

    The defaults never cost a normal user a reply: the largest burst one
    client sends is a traceroute to a far destination, 3 probes for each
    of 64 hops (`-m 64`) sent as fast as answers come back, 192 replies;
    mtr sends about one probe per hop per second (30/s at its default
    30 hops), tracepath one probe at a time. A source may burst 1000 (five
    such traceroutes at once, or 5 clients behind one NAT) and keep up
    1000/s; the daemon as a whole 20000/s, twenty such sources.
    """

    rate: int | None = 20000
    burst: int | None = None          # default: rate (one second's worth)
    source_rate: int | None = 1000
    source_burst: int | None = None   # default: source_rate
    delay_pool: int | None = None     # default: one second at rate (20000 when off)
    seed: int | None = None           # jitter and loss generator; default: random per start
    where: str = field(default="", compare=False)

    @property
    def global_burst(self) -> int | None:
        return None if self.rate is None else self.burst or self.rate

    @property
    def per_source_burst(self) -> int | None:
        return None if self.source_rate is None else self.source_burst or self.source_rate

    @property
    def pool(self) -> int:
        return self.delay_pool or self.rate or Limits.rate


@dataclass(frozen=True)
class Registry:
    """[registry]: what `route-chain registry` prints beside the ranges."""

    origin_as: int | None = None
    mnt_by: str | None = None
    admin_c: str | None = None


@dataclass(frozen=True)
class DnssecSettings:
    """[dnssec]: whether to sign, the algorithm, where the keys live (None:
    dnssec.key_directory's default), and in seconds how long a signature
    is valid and how long before its expiry it is made again."""

    enabled: bool = False
    algorithm: int = 13
    key_dir: str | None = None
    validity: int = 14 * 86400
    refresh: int = 7 * 86400


@dataclass(frozen=True)
class Config:
    """`warnings` are real problems (a hop left without a name...), one
    by one; `rewrites` say how each story line became a name, for
    `preview`; `summaries` say it in one line per file, for the logs."""

    chains: tuple[Chain, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DnsSettings | None = None
    interface: str | None = None
    queues: int | None = None
    mtu: int | None = None
    txqueuelen: int | None = None
    limits: Limits = Limits()
    warnings: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)
    metrics: tuple[str, int] | None = None  # [metrics] listen: the Prometheus endpoint
    registry: Registry = Registry()
    dnssec: DnssecSettings = DnssecSettings()
    rewrites: tuple[str, ...] = field(default=(), compare=False)
    summaries: tuple[str, ...] = field(default=(), compare=False)

    @property
    def log_lines(self) -> tuple[str, ...]:
        """What start and reload log: never one line per rewritten story
        line, nor one per chain sharing a file (#13)."""
        return self.summaries + self.warnings


def load(path: Path) -> Config:
    """Read a TOML config file and the story files it names (relative to
    it). Raises ConfigError `file:line: reason` on anything wrong."""
    source = str(path)
    try:
        return _load(Path(path), source)
    except RouteChainError as e:
        raise ConfigError(str(e)) from None
    except Exception as e:  # a bound we missed (MemoryError...) must still be one line
        raise ConfigError(f"{source}: cannot load: {one_line(e)}") from None


def _load(path: Path, source: str) -> Config:
    data = files.read_bytes(path, source, "config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 (byte offset {e.start})") from None
    problem = tomlpos.shape(text).problem()
    if problem:
        raise ConfigError(f"{source}:{problem[0]}: {problem[1]}")
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(_toml_error(source, text, e)) from None
    return _Loader(path, source, tomlpos.Locator(text)).config(tree)


def one_line(e: BaseException, width: int = 300) -> str:
    """An exception as one line: its message, or its type when it has none."""
    text = str(e) if isinstance(e, RouteChainError) else \
        f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def merge(cli: Config, file: Config) -> Config:
    """Command-line chains and routes first, then the file's; command-line
    daemon and DNS settings override the file's. Chains must not overlap."""
    merged = Config(
        chains=cli.chains + file.chains,
        routes=cli.routes + file.routes,
        dns=cli.dns if cli.dns is not None else file.dns,
        interface=cli.interface if cli.interface is not None else file.interface,
        queues=cli.queues if cli.queues is not None else file.queues,
        mtu=cli.mtu if cli.mtu is not None else file.mtu,
        txqueuelen=cli.txqueuelen if cli.txqueuelen is not None else file.txqueuelen,
        limits=file.limits,
        warnings=cli.warnings + file.warnings,
        path=file.path if file.path is not None else cli.path,
        metrics=file.metrics,
        registry=file.registry,
        dnssec=file.dnssec,
        rewrites=cli.rewrites + file.rewrites,
        summaries=cli.summaries + file.summaries,
    )
    check_overlap(merged.chains)
    return merged


def parse_listen(text: str, where: str) -> tuple[str, int]:
    """`ADDR:PORT`, `[ADDR6]:PORT` or a bare address (port 53)."""
    host, port = text.strip(), str(DEFAULT_DNS_PORT)
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", host)
    if m:
        host, port = m.group(1), m.group(2) or port
    elif host.count(":") == 1:
        host, port = host.split(":")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{where}: bad listen address {text!r}: "
                          "write ADDR:PORT or [ADDR6]:PORT") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{where}: bad port in listen address {text!r}: 1..65535")
    return str(addr), int(port)


# --- the loader -----------------------------------------------------------

class _Loader:
    """One config file's tree to a Config, through the declarations in
    settings.py; `at` gives the `file:line` of anything in it."""

    def __init__(self, path: Path, source: str, locator: tomlpos.Locator) -> None:
        self.path = path
        self.source = source
        self.loc = locator
        self.warnings: list[str] = []
        self.rewrites: dict[str, list[str]] = {}   # story file -> its rewrites
        self.stories: dict[tuple[str, str | None], story.Story] = {}  # read once per load

    def at(self, table: str | None, index: int | None = None, key: str | None = None,
           element: int | None = None) -> str:
        return f"{self.source}:{self.loc.line(table, index, key, element)}"

    def get(self, t: dict, table: str, index: int | None, key: str) -> Any:
        """The checked value of `key` (None when absent)."""
        return settings.setting(table, key).from_toml(
            t.get(key), self.at(table, index, key), lambda k: self.at(table, index, key, k))

    def config(self, data: dict[str, Any]) -> Config:
        tables = {t.name: t for t in settings.TABLES}
        for key in data:
            if key not in tables:
                raise ConfigError(f"{self.at(None, None, key)}: unknown table or key {key!r}: "
                                  f"expected one of {', '.join(sorted(tables))}")
        daemon = self.table(data, "daemon")
        routes = tuple(self.route(t, i) for i, t in enumerate(self.tables(data, "route")))
        chains = tuple(self.chain(t, i) for i, t in enumerate(self.tables(data, "chain")))
        try:
            check_overlap(chains)
        except UsageError as e:
            raise ConfigError(f"{self.source}: {e}") from None
        dns = self.dns(self.table(data, "dns")) if "dns" in data else None
        dns = self.transfers(data, dns, chains)
        self.check_zone_names(dns, chains)
        mtu = self.get(daemon, "daemon", None, "mtu")
        if mtu is not None and mtu < settings.MIN_MTU6 and any(c.family == 6 for c in chains):
            raise ConfigError(f"{self.at('daemon', None, 'mtu')}: mtu {mtu}: "
                              f"IPv6 chains need an MTU of at least {settings.MIN_MTU6}")
        return Config(
            chains=chains, routes=routes, dns=dns,
            interface=self.get(daemon, "daemon", None, "interface"),
            queues=self.get(daemon, "daemon", None, "queues"),
            mtu=mtu, txqueuelen=self.get(daemon, "daemon", None, "txqueuelen"),
            limits=self.limits(self.table(data, "limits")),
            warnings=tuple(_unique(self.warnings)), path=self.path,
            metrics=self.metrics(self.table(data, "metrics")) if "metrics" in data else None,
            registry=self.registry(self.table(data, "registry")),
            dnssec=self.dnssec(self.table(data, "dnssec")),
            rewrites=tuple(_unique(r for rs in self.rewrites.values() for r in rs)),
            summaries=tuple(self.summaries()))

    # tables

    def table(self, data: dict, name: str) -> dict:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{self.at(None, None, name)}: {name} must be a table [{name}]")
        self.known(value, name, None)
        return value

    def tables(self, data: dict, name: str) -> list[dict]:
        value = data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            raise ConfigError(f"{self.at(None, None, name)}: {name} must be an array of "
                              f"tables [[{name}]]")
        for i, t in enumerate(value):
            self.known(t, name, i)
        return value

    def known(self, table: dict, name: str, index: int | None) -> None:
        keys = set(settings.keys(name)) | settings.table(name).more
        for key in table:
            if key not in keys:
                raise ConfigError(f"{self.at(name, index, key)}: unknown key {key!r} in "
                                  f"[{name}]: expected one of {', '.join(sorted(keys))}")

    # sections

    def route(self, t: dict, i: int) -> Route:
        prefix = self.get(t, "route", i, "prefix")
        if prefix is None:
            raise ConfigError(f"{self.at('route', i)}: [[route]] needs a prefix")
        return Route(prefix, self.get(t, "route", i, "table"), self.get(t, "route", i, "metric"),
                     self.at("route", i))

    def chain(self, t: dict, i: int) -> Chain:
        where = self.at("chain", i)
        interface = self.get(t, "chain", i, "address")
        if interface is None:
            raise ConfigError(f"{where}: [[chain]] needs an address, e.g. \"172.20.0.1/27\"")
        reply_ttl = self.get(t, "chain", i, "reply_ttl")
        suffix = self.get(t, "chain", i, "suffix")
        if suffix is not None:
            suffix = suffix.strip().rstrip(".")
            if not story.host_name_ok(suffix):
                raise ConfigError(f"{self.at('chain', i, 'suffix')}: suffix {suffix!r} is not a "
                                  "host name (labels of letters, digits and inner '-')")
        defaults = hopprops.from_table(t, lambda key: self.at("chain", i, key),
                                       hopprops.CHAIN, skip=frozenset(settings.keys("chain")))
        hops = self.hop_tables(t, i, self.story(t, i, suffix))
        try:
            return Chain(interface, hops, reply_ttl or DEFAULT_REPLY_TTL, where, suffix,
                         defaults)
        except UsageError as e:
            raise ConfigError(str(e)) from None

    def hop_tables(self, t: dict, i: int, hops: tuple) -> tuple:
        """`[chain.hop.N]` tables: properties for hop N of the story."""
        tables = t.get("hop")
        if tables is None:
            return hops
        where = self.at("chain", i, "hop")
        if not isinstance(tables, dict):
            raise ConfigError(f"{where}: chain.hop must be tables [chain.hop.N], not {tables!r}")
        out = list(hops)
        for number, table in tables.items():
            if not number.isdigit() or not 1 <= int(number) <= len(hops):
                have = f"hops 1..{len(hops)}" if hops else "no story, so no numbered hops"
                raise ConfigError(f"{where}: [chain.hop.{number}]: the chain has {have}")
            if not isinstance(table, dict):
                raise ConfigError(f"{where}: [chain.hop.{number}] must be a table, "
                                  f"not {table!r}")
            k = int(number)
            props = hopprops.from_table(table, lambda key: f"{where}: [chain.hop.{number}]",
                                        hopprops.HOP)
            out[k - 1] = replace(out[k - 1], props=out[k - 1].props.merged(props, where))
        return tuple(out)

    def story(self, t: dict, i: int, suffix: str | None) -> tuple:
        file = self.get(t, "chain", i, "story")
        inline = self.get(t, "chain", i, "hops")
        if file is not None and inline is not None:
            raise ConfigError(f"{self.at('chain', i, 'hops')}: a chain takes story = FILE or "
                              "hops = [...], not both")
        if file is not None:
            shown = str(Path(self.source).parent / file)
            key = (os.path.normpath(self.path.parent / file), suffix)
            if key not in self.stories:
                self.stories[key] = story.read(self.path.parent / file, shown, suffix)
            result = self.stories[key]
        elif inline is not None:
            shown = self.source
            pairs = [(self.at("chain", i, "hops", k), line) for k, line in enumerate(inline)]
            result = story.parse_lines(pairs, suffix)
            if not result.hops:
                raise ConfigError(f"{self.at('chain', i, 'hops')}: hops is empty")
        else:
            return ()
        self.warnings.extend(result.warnings)
        self.rewrites.setdefault(shown, []).extend(result.rewrites)
        return result.hops

    def summaries(self) -> list[str]:
        """One line per file whose lines were rewritten into host names,
        however many chains share it (#13: quiet logs)."""
        out = []
        for shown, rewrites in self.rewrites.items():
            lines = {r.split(": ", 1)[0] for r in rewrites}
            if lines:
                out.append(f"{shown}: {len(lines)} story lines rewritten into host names; "
                           f"`route-chain preview --config {self.source}` shows each")
        return out

    def limits(self, t: dict) -> Limits:
        ints = {key: self.get(t, "limits", None, key)
                for key in ("burst", "source_burst", "delay_pool")}
        return Limits(rate=self.rate(t, "rate", Limits.rate),
                      source_rate=self.rate(t, "source_rate", Limits.source_rate),
                      seed=self.get(t, "limits", None, "seed"),
                      where=self.at("limits"), **ints)

    def rate(self, t: dict, key: str, default: int) -> int | None:
        """`N/s`, or "off" / 0 (only when written) for no limit."""
        value = self.get(t, "limits", None, key)  # a number or a string, by the schema
        if value is None:
            return default
        where = self.at("limits", None, key)
        if value == 0 or value == "off":
            return None
        m = re.fullmatch(r"\s*(\d+)\s*/\s*s\s*", value) if isinstance(value, str) else None
        if m is None:
            raise ConfigError(f"{where}: limits.{key} {value!r}: write a rate, e.g. "
                              f"\"{default}/s\", or \"off\"")
        n = int(m.group(1))
        if not 0 <= n <= settings.RATE_MAX:
            raise ConfigError(f"{where}: limits.{key} {value!r} is not in "
                              f"0..{settings.RATE_MAX}/s")
        return n or None

    def dns(self, t: dict) -> DnsSettings:
        listen = tuple(parse_listen(text, self.at("dns", None, "listen", k))
                       for k, text in enumerate(self.get(t, "dns", None, "listen") or ()))
        names = {key: self.name(t, key) for key in ("soa_mname", "soa_rname")}
        ns = tuple(self.checked_name(n, self.at("dns", None, "ns", k), "ns")
                   for k, n in enumerate(self.get(t, "dns", None, "ns") or ()))
        ints = {key: self.get(t, "dns", None, key)
                for key in ("ttl", "refresh", "retry", "expire", "minimum")}
        ints.update({key: self.get(t, "dns", None, key) for key in settings.DNS_LIMIT_KEYS})
        defaults = DnsSettings()
        return DnsSettings(
            listen=listen, ns=ns, serial=self.get(t, "dns", None, "serial"), where=self.at("dns"),
            soa_mname=names["soa_mname"], soa_rname=names["soa_rname"],
            **{k: v if v is not None else getattr(defaults, k) for k, v in ints.items()})

    def transfers(self, data: dict, dns: DnsSettings | None,
                  chains: tuple[Chain, ...]) -> DnsSettings | None:
        """[dns] transfer, transfer_keys and zone_name_form, [[tsig]] and
        [[secondary]], a chain's forward `name`: every key of zone
        transfers, NOTIFY and forward names, read here."""
        t = data.get("dns", {}) if isinstance(data.get("dns"), dict) else {}
        forward = []
        for i, c in enumerate(self.tables(data, "chain")):
            name = self.get(c, "chain", i, "name")
            if name is None:
                continue
            where = self.at("chain", i, "name")
            name = self.checked_name(name, where, "name").lower()
            if name.endswith(".arpa") or name == "arpa":
                raise ConfigError(f"{where}: name {name!r} is a reverse name: give the "
                                  "story a forward name, e.g. story.example.dn42")
            if chains[i].destination is None:
                raise ConfigError(f"{where}: the chain has no hop after its host to name")
            forward.append((name, str(chains[i].destination)))
        keys: dict[str, TsigKey] = {}
        for i, k in enumerate(self.tables(data, "tsig")):
            name = self.get(k, "tsig", i, "name")
            if name is None or self.get(k, "tsig", i, "secret_file") is None:
                raise ConfigError(f"{self.at('tsig', i)}: [[tsig]] needs a name and a "
                                  "secret_file")
            name = self.checked_name(name, self.at("tsig", i, "name"), "name").lower()
            algorithm = (self.get(k, "tsig", i, "algorithm") or "hmac-sha256").lower()
            if algorithm not in ALGORITHMS:
                raise ConfigError(f"{self.at('tsig', i, 'algorithm')}: unknown TSIG algorithm "
                                  f"{algorithm!r}: one of {', '.join(ALGORITHMS)}")
            if name in keys:
                raise ConfigError(f"{self.at('tsig', i, 'name')}: key {name!r} is declared "
                                  f"twice (first at {keys[name].where})")
            file = self.get(k, "tsig", i, "secret_file")
            shown = str(Path(self.source).parent / file)
            keys[name] = TsigKey(name, algorithm, read_secret(self.path.parent / file, shown),
                                 self.at("tsig", i))

        def known_key(value: str, where: str) -> str:
            name = value.strip().rstrip(".").lower()
            if name not in keys:
                raise ConfigError(f"{where}: TSIG key {value!r} is not declared in a [[tsig]]")
            return name

        secondaries = []
        for i, sec in enumerate(self.tables(data, "secondary")):
            text = self.get(sec, "secondary", i, "address")
            if text is None:
                raise ConfigError(f"{self.at('secondary', i)}: [[secondary]] needs an address")
            host, port = parse_listen(text, self.at("secondary", i, "address"))
            key = self.get(sec, "secondary", i, "key")
            if key is not None:
                key = known_key(key, self.at("secondary", i, "key"))
            secondaries.append(Secondary(host, port, key))
        transfer = tuple(
            self.prefix(text, self.at("dns", None, "transfer", k))
            for k, text in enumerate(self.get(t, "dns", None, "transfer") or ()))
        required = tuple(known_key(text, self.at("dns", None, "transfer_keys", k))
                         for k, text in enumerate(self.get(t, "dns", None, "transfer_keys") or ()))
        form = self.get(t, "dns", None, "zone_name_form") or "-"
        if form not in ("-", "/", "_"):
            raise ConfigError(f"{self.at('dns', None, 'zone_name_form')}: zone_name_form "
                              f"{form!r}: write \"-\", \"/\" or \"_\"")
        if not (keys or secondaries or transfer or required or form != "-" or forward):
            return dns
        return replace(dns or DnsSettings(where=self.source), transfer=transfer,
                       transfer_keys=required, keys=tuple(keys.values()),
                       secondaries=tuple(secondaries), zone_name_form=form,
                       forward=tuple(forward))

    def prefix(self, text: str, where: str):
        try:
            return ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"{where}: bad prefix {text!r}: write ADDR/PLEN, e.g. "
                              "\"192.0.2.0/24\"") from None

    def registry(self, t: dict) -> Registry:
        return Registry(*(self.get(t, "registry", None, key)
                          for key in ("origin_as", "mnt_by", "admin_c")))

    def dnssec(self, t: dict) -> DnssecSettings:
        """[dnssec]: every key read here, the one place to port."""
        given = {key: self.get(t, "dnssec", None, key)
                 for key in ("enabled", "algorithm", "key_dir", "validity", "refresh")}
        out = DnssecSettings(**{k: v for k, v in given.items() if v is not None})
        if out.algorithm not in (13, 15):
            raise ConfigError(f"{self.at('dnssec', None, 'algorithm')}: algorithm "
                              f"{out.algorithm}: route-chain signs with 13 (ECDSAP256SHA256) "
                              "or 15 (ED25519)")
        if out.refresh >= out.validity:
            raise ConfigError(f"{self.at('dnssec', None, 'refresh')}: refresh {out.refresh} "
                              f"must be less than validity {out.validity}, or every signature "
                              "is due again as soon as it is made")
        return out

    def name(self, t: dict, key: str) -> str | None:
        value = self.get(t, "dns", None, key)
        if value is None:
            return None
        where = self.at("dns", None, key)
        if key == "soa_rname" and "@" in value:
            user, _, domain = value.partition("@")
            if "." in user:
                raise ConfigError(f"{where}: soa_rname {value!r}: a mailbox with a dot before "
                                  "'@' cannot be written as a plain name")
            value = f"{user}.{domain}"
        return self.checked_name(value, where, key)

    def metrics(self, t: dict) -> tuple[str, int] | None:
        """`listen = "ADDR:PORT"` or `"[ADDR6]:PORT"`: the port is required
        (the DNS default of 53 means nothing here)."""
        text = self.get(t, "metrics", None, "listen")
        if text is None:
            return None
        where = self.at("metrics", None, "listen")
        if not re.fullmatch(r"\s*(\[[^\]]+\]|[^:\[\]]+):\d+\s*", text):
            raise ConfigError(f"{where}: bad metrics listen address {text!r}: "
                              "write ADDR:PORT or [ADDR6]:PORT")
        return parse_listen(text, where)

    def checked_name(self, value: str, where: str, key: str) -> str:
        value = value.strip().rstrip(".")
        if not story.host_name_ok(value):
            raise ConfigError(f"{where}: {key} {value!r} is not a host name")
        return value

    def check_zone_names(self, dns: DnsSettings | None, chains: tuple[Chain, ...]) -> None:
        """The names every zone carries (NS, SOA mname and rname, defaults
        included) must fit DNS: 255 octets on the wire, MAX_NAME characters
        as text (RFC 1035 2.3.4). Checked here so that preview, zone, start
        and reload refuse the same files."""
        where = dns.where if dns else next((c.where for c in chains if c.suffix), self.source)
        ns, mname, rname = (dns or DnsSettings()).names(chains)
        for what, name in [("NS name", n) for n in ns] + [("SOA mname", mname),
                                                         ("SOA rname", rname)]:
            if len(name) > story.MAX_NAME:
                raise ConfigError(
                    f"{where}: the {what} {story.short(name)!r} is {len(name)} characters, "
                    f"DNS holds at most {story.MAX_NAME}: set [dns] ns, soa_mname and "
                    "soa_rname, or shorten the chain's suffix")


def _unique(items) -> list[str]:
    """Items in order, each once: chains that share a story share its lines."""
    return list(dict.fromkeys(items))


def _toml_error(source: str, text: str, e: tomllib.TOMLDecodeError) -> str:
    msg = str(e)
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
    if m:
        return f"{source}:{m.group(1)}: {msg[:m.start()]} (column {m.group(2)})"
    m = re.search(r"\s*\(at end of document\)$", msg)
    if m:
        return f"{source}:{text.count(chr(10)) + 1}: {msg[:m.start()]} (at end of file)"
    return f"{source}: {msg}"
