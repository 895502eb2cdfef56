"""What route-chain runs: chains, routes, daemon settings and DNS, from the
command line and a TOML file. Pure data and parsing, no I/O beyond reading
the files named.

`load(path)` reads a config file (schema in docs/stories.md) and its story
files; `merge(cli, file)` joins it with what the command line gave. Every
error is a ConfigError naming the file and line: `route-chain.toml:12: ...`.
tomllib gives no positions, so `_Locator` scans the text for the line of
each table, key and array element.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import hopprops, story
from .chain import DEFAULT_REPLY_TTL, Chain, check_overlap, parse_prefix
from .errors import ConfigError, UsageError

DEFAULT_INTERFACE = "route-chain"
DEFAULT_DNS_PORT = 53


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
    where: str = field(default="", compare=False)


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
class Config:
    chains: tuple[Chain, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DnsSettings | None = None
    interface: str | None = None
    queues: int | None = None
    mtu: int | None = None
    limits: Limits = Limits()
    warnings: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)
    metrics: tuple[str, int] | None = None  # [metrics] listen: the Prometheus endpoint


def load(path: Path) -> Config:
    """Read a TOML config file and the story files it names (relative to
    it). Raises ConfigError `file:line: reason` on anything wrong."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{source}: cannot read config: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 (byte offset {e.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(_toml_error(source, text, e)) from None
    return _Loader(Path(path), source, _Locator(text)).config(data)


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
        limits=file.limits,
        warnings=cli.warnings + file.warnings,
        path=file.path if file.path is not None else cli.path,
        metrics=file.metrics,
    )
    check_overlap(merged.chains)
    return merged


def check_interface_name(name: str, where: str) -> str:
    """A Linux interface name: 1..15 bytes (IFNAMSIZ - 1), no '/', no white
    space, not '.' or '..'."""
    raw = name.encode()
    if not 0 < len(raw) < 16 or b"/" in raw or any(c <= 32 or c == 127 for c in raw) \
            or name in (".", ".."):
        raise UsageError(f"{where}: bad interface name {name!r}: "
                         "1 to 15 bytes, no '/' or white space")
    return name


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

_TOP = {"daemon", "route", "chain", "dns", "limits", "metrics"}
_DAEMON = {"interface", "queues", "mtu"}
_ROUTE = {"prefix", "table", "metric"}
_CHAIN_OWN = frozenset({"address", "story", "hops", "suffix", "reply_ttl", "hop"})
_CHAIN = _CHAIN_OWN | hopprops.CHAIN_KEYS
_DNS_LIMITS = {"rate_limit": (0, 10**6), "rate_limit_errors": (0, 10**6),
               "rate_limit_slip": (0, 10), "tcp_connections": (1, 65535),
               "tcp_connections_per_client": (1, 65535), "tcp_idle_timeout": (1, 3600)}
_DNS = {"listen", "ttl", "ns", "soa_mname", "soa_rname", "serial",
        "refresh", "retry", "expire", "minimum", *_DNS_LIMITS}
_METRICS = {"listen"}
_LIMITS = {"rate", "burst", "source_rate", "source_burst", "delay_pool", "seed"}
_RATE_MAX = 10_000_000     # replies per second; more than any TUN carries
_POOL_MAX = 1_000_000      # slots: 256 MiB of small replies
_U32 = 2**32 - 1
_TTL_MAX = 2**31 - 1  # RFC 2181 8: a TTL is at most 2^31 - 1.


class _Loader:
    def __init__(self, path: Path, source: str, locator: "_Locator") -> None:
        self.path = path
        self.source = source
        self.loc = locator
        self.warnings: list[str] = []

    def at(self, table: str | None, index: int | None = None, key: str | None = None,
           element: int | None = None) -> str:
        return f"{self.source}:{self.loc.line(table, index, key, element)}"

    def config(self, data: dict[str, Any]) -> Config:
        for key in data:
            if key not in _TOP:
                raise ConfigError(f"{self.at(None, None, key)}: unknown table or key {key!r}: "
                                  f"expected one of {', '.join(sorted(_TOP))}")
        daemon = self.table(data, "daemon", _DAEMON)
        routes = tuple(self.route(t, i) for i, t in enumerate(self.tables(data, "route", _ROUTE)))
        chains = tuple(self.chain(t, i) for i, t in enumerate(self.tables(data, "chain", _CHAIN)))
        try:
            check_overlap(chains)
        except UsageError as e:
            raise ConfigError(f"{self.source}: {e}") from None
        dns = self.dns(self.table(data, "dns", _DNS)) if "dns" in data else None
        mtu = self.integer(daemon, "daemon", None, "mtu", 68, 65535)
        if mtu is not None and mtu < 1280 and any(c.family == 6 for c in chains):
            raise ConfigError(f"{self.at('daemon', None, 'mtu')}: mtu {mtu}: "
                              "IPv6 chains need an MTU of at least 1280")
        return Config(
            chains=chains, routes=routes, dns=dns,
            interface=self.interface(daemon),
            queues=self.integer(daemon, "daemon", None, "queues", 1, 1024),
            mtu=mtu, limits=self.limits(self.table(data, "limits", _LIMITS)),
            warnings=tuple(self.warnings), path=self.path,
            metrics=self.metrics(self.table(data, "metrics", _METRICS)) if "metrics" in data
            else None)

    # tables

    def table(self, data: dict, name: str, keys: set[str]) -> dict:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{self.at(None, None, name)}: {name} must be a table [{name}]")
        self.known(value, name, None, keys)
        return value

    def tables(self, data: dict, name: str, keys: set[str]) -> list[dict]:
        value = data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            raise ConfigError(f"{self.at(None, None, name)}: {name} must be an array of "
                              f"tables [[{name}]]")
        for i, t in enumerate(value):
            self.known(t, name, i, keys)
        return value

    def known(self, table: dict, name: str, index: int | None, keys: set[str]) -> None:
        for key in table:
            if key not in keys:
                raise ConfigError(f"{self.at(name, index, key)}: unknown key {key!r} in "
                                  f"[{name}]: expected one of {', '.join(sorted(keys))}")

    # values

    def string(self, t: dict, table: str, index: int | None, key: str) -> str | None:
        value = t.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{self.at(table, index, key)}: {table}.{key} must be a string, "
                              f"not {value!r}")
        return value

    def integer(self, t: dict, table: str, index: int | None, key: str,
                low: int, high: int) -> int | None:
        value = t.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.at(table, index, key)}: {table}.{key} must be an integer, "
                              f"not {value!r}")
        if not low <= value <= high:
            raise ConfigError(f"{self.at(table, index, key)}: {table}.{key} = {value} is not "
                              f"in {low}..{high}")
        return value

    def strings(self, t: dict, table: str, index: int | None, key: str) -> list[str] | None:
        value = t.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{self.at(table, index, key)}: {table}.{key} must be a list of "
                              f"strings, not {value!r}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(f"{self.at(table, index, key, i)}: {table}.{key} must hold "
                                  f"strings, not {item!r}")
        return value

    # sections

    def interface(self, daemon: dict) -> str | None:
        name = self.string(daemon, "daemon", None, "interface")
        if name is not None:
            try:
                check_interface_name(name, self.at("daemon", None, "interface"))
            except UsageError as e:
                raise ConfigError(str(e)) from None
        return name

    def route(self, t: dict, i: int) -> Route:
        where = self.at("route", i)
        text = self.string(t, "route", i, "prefix")
        if text is None:
            raise ConfigError(f"{where}: [[route]] needs a prefix")
        try:
            prefix = ipaddress.ip_network(text.strip())
        except ValueError as e:
            raise ConfigError(f"{self.at('route', i, 'prefix')}: bad route prefix {text!r}: {e}") \
                from None
        return Route(prefix, self.integer(t, "route", i, "table", 1, _U32),
                     self.integer(t, "route", i, "metric", 0, _U32), where)

    def chain(self, t: dict, i: int) -> Chain:
        where = self.at("chain", i)
        text = self.string(t, "chain", i, "address")
        if text is None:
            raise ConfigError(f"{where}: [[chain]] needs an address, e.g. \"172.20.0.1/27\"")
        try:
            interface = parse_prefix(text, self.at("chain", i, "address"))
        except UsageError as e:
            raise ConfigError(str(e)) from None
        reply_ttl = self.integer(t, "chain", i, "reply_ttl", 1, 255)
        suffix = self.string(t, "chain", i, "suffix")
        if suffix is not None:
            suffix = suffix.strip().rstrip(".")
            if not story.host_name_ok(suffix):
                raise ConfigError(f"{self.at('chain', i, 'suffix')}: suffix {suffix!r} is not a "
                                  "host name (labels of letters, digits and inner '-')")
        defaults = hopprops.from_table(t, lambda key: self.at("chain", i, key),
                                       hopprops.CHAIN, skip=_CHAIN_OWN)
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
        file = self.string(t, "chain", i, "story")
        inline = self.strings(t, "chain", i, "hops")
        if file is not None and inline is not None:
            raise ConfigError(f"{self.at('chain', i, 'hops')}: a chain takes story = FILE or "
                              "hops = [...], not both")
        if file is not None:
            shown = Path(self.source).parent / file
            result = story.read(self.path.parent / file, str(shown), suffix)
        elif inline is not None:
            pairs = [(self.at("chain", i, "hops", k), line) for k, line in enumerate(inline)]
            result = story.parse_lines(pairs, suffix)
            if not result.hops:
                raise ConfigError(f"{self.at('chain', i, 'hops')}: hops is empty")
        else:
            return ()
        self.warnings.extend(result.warnings)
        return result.hops

    def limits(self, t: dict) -> Limits:
        ints = {key: self.integer(t, "limits", None, key, 1, high)
                for key, high in (("burst", _RATE_MAX), ("source_burst", _RATE_MAX),
                                  ("delay_pool", _POOL_MAX))}
        return Limits(rate=self.rate(t, "rate", Limits.rate),
                      source_rate=self.rate(t, "source_rate", Limits.source_rate),
                      seed=self.integer(t, "limits", None, "seed", 0, 2**64 - 1),
                      where=self.at("limits"), **ints)

    def rate(self, t: dict, key: str, default: int) -> int | None:
        """`N/s`, or "off" / 0 (only when written) for no limit."""
        if key not in t:
            return default
        value, where = t[key], self.at("limits", None, key)
        if value == 0 or value == "off":
            return None
        m = re.fullmatch(r"\s*(\d+)\s*/\s*s\s*", value) if isinstance(value, str) else None
        if m is None:
            raise ConfigError(f"{where}: limits.{key} {value!r}: write a rate, e.g. "
                              f"\"{default}/s\", or \"off\"")
        n = int(m.group(1))
        if not 0 <= n <= _RATE_MAX:
            raise ConfigError(f"{where}: limits.{key} {value!r} is not in 0..{_RATE_MAX}/s")
        return n or None

    def dns(self, t: dict) -> DnsSettings:
        where = self.at("dns")
        listen = tuple(parse_listen(text, self.at("dns", None, "listen", k))
                       for k, text in enumerate(self.strings(t, "dns", None, "listen") or ()))
        names = {}
        for key in ("soa_mname", "soa_rname"):
            names[key] = self.name(t, key)
        ns = tuple(self.checked_name(n, self.at("dns", None, "ns", k), "ns")
                   for k, n in enumerate(self.strings(t, "dns", None, "ns") or ()))
        ints = {key: self.integer(t, "dns", None, key, 0, _TTL_MAX)
                for key in ("ttl", "refresh", "retry", "expire", "minimum")}
        ints.update({key: self.integer(t, "dns", None, key, *bounds)
                     for key, bounds in _DNS_LIMITS.items()})
        serial = self.integer(t, "dns", None, "serial", 0, _U32)
        defaults = DnsSettings()
        return DnsSettings(
            listen=listen, ns=ns, serial=serial, where=where,
            soa_mname=names["soa_mname"], soa_rname=names["soa_rname"],
            **{k: v if v is not None else getattr(defaults, k) for k, v in ints.items()})

    def name(self, t: dict, key: str) -> str | None:
        value = self.string(t, "dns", None, key)
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
        text = self.string(t, "metrics", None, "listen")
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


def _toml_error(source: str, text: str, e: tomllib.TOMLDecodeError) -> str:
    msg = str(e)
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
    if m:
        return f"{source}:{m.group(1)}: {msg[:m.start()]} (column {m.group(2)})"
    m = re.search(r"\s*\(at end of document\)$", msg)
    if m:
        return f"{source}:{text.count(chr(10)) + 1}: {msg[:m.start()]} (at end of file)"
    return f"{source}: {msg}"


# --- where things are -----------------------------------------------------

class _Locator:
    """Lines of tables, keys and array elements in a TOML text.

    A small scanner that understands just enough TOML to never mistake the
    inside of a string or an array for a key: comments, the four string
    forms, brackets and braces, table headers and dotted keys. Lookups take
    the top-level table name (None for the root), the index of an array of
    tables, a key and an element index, and fall back to the nearest thing
    found: the key, the table header, line 1.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.headers: dict[tuple[str | None, int | None], int] = {}
        self.keys: dict[tuple[str | None, int | None, str], int] = {}
        self.elements: dict[tuple[str | None, int | None, str], list[int]] = {}
        self.pos = 0
        self.lineno = 1
        self.counts: dict[str, int] = {}
        self.scan()

    def line(self, table: str | None, index: int | None = None, key: str | None = None,
             element: int | None = None) -> int:
        if key is not None:
            if element is not None:
                lines = self.elements.get((table, index, key), [])
                if element < len(lines):
                    return lines[element]
            if (table, index, key) in self.keys:
                return self.keys[(table, index, key)]
        if (table, index) in self.headers:
            return self.headers[(table, index)]
        return self.keys.get((None, None, table), 1) if table is not None else 1

    # scanning

    def peek(self, k: int = 0) -> str:
        i = self.pos + k
        return self.text[i] if i < len(self.text) else ""

    def advance(self, n: int = 1) -> None:
        self.lineno += self.text.count("\n", self.pos, self.pos + n)
        self.pos += n

    def skip_blank(self, newlines: bool) -> None:
        while self.pos < len(self.text):
            c = self.peek()
            if c in " \t\r" or (newlines and c == "\n"):
                self.advance()
            elif c == "#":
                end = self.text.find("\n", self.pos)
                self.advance((end if end >= 0 else len(self.text)) - self.pos)
            else:
                return

    def scan(self) -> None:
        table: tuple[str | None, int | None] = (None, None)
        while True:
            self.skip_blank(newlines=True)
            if self.pos >= len(self.text):
                return
            start = self.lineno
            if self.peek() == "[":
                array = self.peek(1) == "["
                self.advance(2 if array else 1)
                path = self.key_path("]")
                self.advance(2 if array else 1)
                top = path[0] if path else None
                index = None
                if array and len(path) == 1:
                    index = self.counts.get(top, 0)
                    self.counts[top] = index + 1
                elif len(path) > 1:
                    index = self.counts.get(top, 0) - 1 if top in self.counts else None
                table = (top, index)
                self.headers.setdefault(table, start)
                if len(path) > 1:
                    self.keys.setdefault((top, index, path[1]), start)
                elif top is not None:
                    self.keys.setdefault((None, None, top), start)
            else:
                path = self.key_path("=")
                self.advance()  # '='
                if path:
                    if table[0] is None:
                        self.keys.setdefault((None, None, path[0]), start)
                        if len(path) > 1:
                            self.keys.setdefault((path[0], None, path[1]), start)
                        owner = (path[0], None)
                        sub = path[1] if len(path) > 1 else None
                    else:
                        self.keys.setdefault((table[0], table[1], path[0]), start)
                        owner, sub = table, path[0]
                    self.value(owner, sub)
            self.skip_to_line_end()

    def skip_to_line_end(self) -> None:
        self.skip_blank(newlines=False)
        end = self.text.find("\n", self.pos)
        self.advance((end if end >= 0 else len(self.text)) - self.pos)

    def key_path(self, stop: str) -> list[str]:
        parts: list[str] = []
        current = ""
        while self.pos < len(self.text) and self.peek() not in (stop, "\n"):
            c = self.peek()
            if c in "\"'":
                current += self.string_value()
            elif c == ".":
                parts.append(current.strip())
                current = ""
                self.advance()
            else:
                current += c
                self.advance()
        parts.append(current.strip())
        return [p for p in parts if p]

    def string_value(self) -> str:
        quote = self.peek()
        if self.text.startswith(quote * 3, self.pos):
            end = self.text.find(quote * 3, self.pos + 3)
            end = len(self.text) if end < 0 else end + 3
            while end < len(self.text) and self.text[end] == quote:  # """a"""" is legal
                end += 1
            value = self.text[self.pos + 3:end - 3]
            self.advance(end - self.pos)
            return value
        i = self.pos + 1
        while i < len(self.text) and self.text[i] not in (quote, "\n"):
            i += 2 if quote == '"' and self.text[i] == "\\" else 1
        value = self.text[self.pos + 1:i]
        self.advance(min(i + 1, len(self.text)) - self.pos)
        return value

    def value(self, owner: tuple[str | None, int | None], key: str | None) -> None:
        """Skip one value, recording the line of each element of a top-level
        array under (owner, key)."""
        self.skip_blank(newlines=False)
        if self.peek() != "[":
            self.skip_simple()
            return
        lines = self.elements.setdefault((owner[0], owner[1], key or ""), [])
        self.advance()
        expect_element = True
        while self.pos < len(self.text):
            self.skip_blank(newlines=True)
            c = self.peek()
            if c == "]":
                self.advance()
                return
            if c == ",":
                expect_element = True
                self.advance()
                continue
            if expect_element:
                lines.append(self.lineno)
                expect_element = False
            if c in "[{":
                self.nested()
            elif c in "\"'":
                self.string_value()
            else:
                self.skip_simple()

    def nested(self) -> None:
        depth = 0
        while self.pos < len(self.text):
            c = self.peek()
            if c in "\"'":
                self.string_value()
                continue
            if c == "#":
                self.skip_blank(newlines=False)
                continue
            self.advance()
            if c in "[{":
                depth += 1
            elif c in "]}":
                depth -= 1
                if depth == 0:
                    return

    def skip_simple(self) -> None:
        """A scalar, an inline table, or a string, up to a separator."""
        while self.pos < len(self.text):
            c = self.peek()
            if c in "\"'":
                self.string_value()
            elif c == "{":
                self.nested()
            elif c in ",]\n#":
                return
            else:
                self.advance()
