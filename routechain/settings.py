"""Every setting route-chain takes, declared once, and the one walk that
reads them. Pure: a parsed TOML tree in, frozen dataclasses out, no I/O.

A table of the TOML file is a frozen dataclass below (`Daemon` is
`[daemon]`, `Route` one `[[route]]`...), and each of its settings is one
field made by `declare(...)`: the field's name is the key, and the
declaration carries its kind, default, range, meaning, command-line flag,
and whether a running daemon needs a restart to take a change. From these
alone:

- `walk(tree, at)` checks a file's tree and fills the dataclasses; an error
  names `file:line` (`at` is the locator) and the bad value;
- cli.py builds its options and their --help (`add_option`), and
  `command_line` reads them back;
- config.merge lets a command-line value override the file's;
- `restart_changes(old, new)` is what a reload keeps until a restart.

Adding a setting: add one `declare(...)` field to its table's dataclass,
then read it where it is used (`config.daemon.foo`), and show it in the
example config of docs/stories.md. The file then takes it (and refuses a
value of the wrong kind or out of range, naming file:line); a `flag` makes
it a command-line option too, with the meaning as its --help (a flag on a
`[table]` defaults to None, "not given", so the file's value stands);
`restart=True` makes a reload keep the running value and say so. A value
the TOML types cannot check alone (an address, a host name) takes a
`parse(text, where)`; a rule between settings is a named check in
config.CHECKS. A new table is a new `@section` dataclass, listed in
TABLES, and a field of config.Config of the same name.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import re
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, Callable, Mapping

from . import hopprops, story
from .chain import DEFAULT_REPLY_TTL, parse_chain_address
from .errors import ConfigError, UsageError
from .hopprops import MAX_MTU, MAX_RATE, MAX_REPLY_TTL, MIN_MTU, MIN_MTU6, NO_PROPS, Props

U32 = 2**32 - 1
DNS_TTL_MAX = 2**31 - 1  # RFC 2181 8: a DNS TTL is at most 2^31 - 1.
MAX_QUEUES = 256         # the kernel's MAX_TAP_QUEUES (tun.py checks against it)
MAX_TXQUEUELEN = 65536   # packets per TUN queue: the kernel allocates a ring this long per queue
POOL_MAX = 1_000_000     # delay pool slots: 256 MiB of small replies
DEFAULT_DNS_PORT = 53
DEFAULT_INTERFACE = "route-chain"
# The `proto` of our routes: registered nowhere (not in the kernel's RTPROT_*,
# iproute2's rt_protos, FRR's 186..198, Calico's 80, nor the 114 a known
# wrapper script uses), so a route with it is ours and nobody else's; above
# RTPROT_STATIC (4), so the kernel gives it no meaning of its own.
ROUTE_PROTOCOL = 151
ROUTE_PROTOCOL_MIN = 5

# at(table, index, key, element) -> "file:line": where a table, key or list
# element of the file is (tomlpos.Locator.line behind a file name).
At = Callable[..., str]

# What each kind of value accepts from TOML, and how a message says it.
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "strings": (lambda v: isinstance(v, (str, list)), "a list of strings"),
    # "N/s" or "off" (or 0): None is off.
    "rate": (lambda v: isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)),
             'a rate such as "1000/s", or "off"'),
    "table": (lambda v: isinstance(v, dict), "a table"),
}

_SPEC = "route-chain setting"  # the dataclasses.field metadata key declare() fills


@dataclass(frozen=True)
class Setting:
    """One key of one table, and the dataclass field of the same name it
    fills. `kind` is one of KINDS ("strings" takes a lone string as a list
    of one, and gives a tuple; "table" is a sub-table whose reader checks
    it); a number is checked against low..high; `parse(text, where)` turns
    a string (each string, for "strings") into the value, or checks an
    int further (a set of allowed numbers), raising
    UsageError; `flag` is the command-line option that sets it too;
    `restart`: a running daemon keeps its value until restarted;
    `required`: what the refusal of a table without it says is missing."""

    table: str
    key: str
    kind: str
    meaning: str
    low: int | float | None = None
    high: int | float | None = None
    default: Any = None
    parse: Callable[[str, str], Any] | None = None
    flag: str | None = None
    short: str | None = None
    metavar: str | None = None
    restart: bool = False
    required: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise AssertionError(f"{self.name}: unknown kind {self.kind!r}")

    @property
    def name(self) -> str:
        return f"{self.table}.{self.key}"

    @property
    def dest(self) -> str:
        """The argparse attribute the flag fills."""
        return (self.flag or "").lstrip("-").replace("-", "_")

    def of(self, section: Any) -> Any:
        """This setting's value in a filled dataclass of its table."""
        return getattr(section, self.key)

    def from_toml(self, value: Any, where: str,
                  element: Callable[[int], str] | None = None) -> Any:
        """The checked value of a TOML value (None when absent); ConfigError
        `where: reason` (`element(k)` is where element k of a list is)."""
        if value is None:
            return None
        accepts, what = KINDS[self.kind]
        if not accepts(value):
            raise ConfigError(f"{where}: {self.name} must be {what}, not {value!r}")
        try:
            if self.kind == "strings":
                value = [value] if isinstance(value, str) else value
                for k, item in enumerate(value):
                    if not isinstance(item, str):
                        raise ConfigError(f"{element(k) if element else where}: {self.name} "
                                          f"must hold strings, not {item!r}")
                return tuple(self.parse(item, element(k) if element else where)
                             if self.parse else item for k, item in enumerate(value))
            if self.kind == "rate":
                return self._rate(value, where)
            value = self._in_range(value)
            return self.parse(value, where) if self.parse and self.kind in ("str", "int") \
                else value
        except ConfigError:
            raise
        except UsageError as e:
            text = str(e)
            raise ConfigError(text if text.startswith(where) else f"{where}: {text}") from None

    def from_text(self, text: str) -> Any:
        """The checked value of a command-line argument; UsageError naming the flag."""
        where = f"{self.flag} {text}"
        if self.kind in ("int", "float"):
            try:
                value = int(text, 10) if self.kind == "int" else float(text)
            except ValueError:
                raise UsageError(f"{where}: {self.name} must be "
                                 f"{KINDS[self.kind][1]}") from None
            try:
                value = self._in_range(value)
            except UsageError as e:
                raise UsageError(f"{where}: {e}") from None
            return self.parse(value, where) if self.parse and self.kind == "int" else value
        return self.parse(text, where) if self.parse else text

    def _in_range(self, value: Any) -> Any:
        if self.kind in ("int", "float"):
            low = self.low if self.low is not None else value
            high = self.high if self.high is not None else value
            if not low <= value <= high:
                raise UsageError(f"{self.name} = {value} is not in {self.low}..{self.high}")
        return value

    def _rate(self, value: int | str, where: str) -> int | None:
        """`N/s`, or "off" / 0 for no limit (None)."""
        if value == 0 or value == "off":
            return None
        m = re.fullmatch(r"\s*(\d+)\s*/\s*s\s*", value) if isinstance(value, str) else None
        if m is None:
            raise ConfigError(f"{where}: {self.name} {value!r}: write a rate, e.g. "
                              f"\"{self.default}/s\", or \"off\"")
        n = int(m.group(1))
        if not 0 <= n <= MAX_RATE:
            raise ConfigError(f"{where}: {self.name} {value!r} is not in 0..{MAX_RATE}/s")
        return n or None


def declare(kind: str, meaning: str, default: Any = None, low: int | float | None = None,
            high: int | float | None = None, **kw: Any) -> Any:
    """A setting, as the field of its table's dataclass (see Setting for
    what `kw` takes); `@section` turns it into a Setting."""
    spec = dict(kind=kind, meaning=meaning, default=default, low=low, high=high, **kw)
    return dataclasses.field(default=default, metadata={_SPEC: spec})


@dataclass(frozen=True)
class Table:
    """A top-level TOML table: `[name]` once, or `[[name]]` (array) many
    times, filling `cls`. `more` are keys another module declares and
    reads: `read_more(table, where)` gives the value of the field `props`
    (a chain's per-hop properties: hopprops.CHAIN_KEYS)."""

    name: str
    array: bool
    meaning: str
    cls: type
    settings: tuple[Setting, ...]
    more: frozenset[str] = frozenset()
    read_more: Callable[[dict, Callable[[str], str]], Any] | None = None

    @cached_property
    def keys(self) -> frozenset[str]:
        return frozenset(s.key for s in self.settings) | self.more

    @cached_property
    def _has_where(self) -> bool:
        return "where" in {f.name for f in fields(self.cls)}

    def read(self, raw: dict, index: int | None, at: At,
             origins: dict[str, str] | None = None) -> Any:
        """One table of the file as its dataclass; `origins` gets where
        each value given was written ("file:line: key value")."""
        for key in raw:
            if key not in self.keys:
                raise ConfigError(f"{at(self.name, index, key)}: unknown key {key!r} in "
                                  f"[{self.name}]: expected one of "
                                  f"{', '.join(sorted(self.keys))}")
        values: dict[str, Any] = {}
        for s in self.settings:
            if s.key not in raw:
                if s.required:
                    raise ConfigError(f"{at(self.name, index)}: [[{self.name}]] needs "
                                      f"{s.required}")
                continue
            where = at(self.name, index, s.key)
            value = s.from_toml(raw[s.key], where,
                                lambda k, key=s.key: at(self.name, index, key, k))
            values[s.key] = value  # None only where the file said "off"
            if origins is not None:
                origins[s.name] = f"{where}: {s.key} {raw[s.key]}"
        if self.read_more:
            values["props"] = self.read_more(raw, lambda key: at(self.name, index, key))
        if self._has_where:
            values["where"] = at(self.name, index)
        return self.cls(**values)


def section(name: str, meaning: str, array: bool = False, more: frozenset[str] = frozenset(),
            read_more: Callable | None = None) -> Callable[[type], type]:
    """Make a class the frozen dataclass of table `name`, its `declare`
    fields its settings (in `cls.TABLE`)."""
    def make(cls: type) -> type:
        cls = dataclass(frozen=True)(cls)
        found = tuple(Setting(name, f.name, **f.metadata[_SPEC])
                      for f in fields(cls) if _SPEC in f.metadata)
        for s in found:
            # A flag on a [table] overrides the file's value only when given;
            # only an element of an [[array]] can lack a key it needs.
            assert array or not s.flag or s.default is None, s.name
            assert array or not s.required, s.name
        cls.TABLE = Table(name, array, meaning, cls, found, more, read_more)
        return cls
    return make


# --- values the TOML types cannot check alone -------------------------------

def check_interface_name(name: str, where: str) -> str:
    """A Linux interface name: 1..15 bytes (IFNAMSIZ - 1), no '/', no white
    space, not '.' or '..'."""
    raw = name.encode()
    if not 0 < len(raw) < 16 or b"/" in raw or any(c <= 32 or c == 127 for c in raw) \
            or name in (".", ".."):
        raise UsageError(f"{where}: bad interface name {name!r}: "
                         "1 to 15 bytes, no '/' or white space")
    return name


def parse_route_prefix(text: str, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A network as `ip route` takes it: no host bits set. A /0 is a
    default route, which a policy-routing table may well send into the TUN;
    one that already exists is refused when the route is created
    (desired.Keeper: never replaced, never removed)."""
    try:
        return ipaddress.ip_network(text.strip())
    except ValueError as e:
        raise UsageError(f"{where}: bad route prefix {text!r}: {e}") from None


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


def parse_endpoint(text: str, where: str) -> tuple[str, int]:
    """`ADDR:PORT` or `[ADDR6]:PORT`, the port required (the metrics
    endpoint: DNS's default of 53 means nothing there)."""
    if not re.fullmatch(r"\s*(\[[^\]]+\]|[^:\[\]]+):\d+\s*", text):
        raise ConfigError(f"{where}: bad metrics listen address {text!r}: "
                          "write ADDR:PORT or [ADDR6]:PORT")
    return parse_listen(text, where)


def host_name(key: str) -> Callable[[str, str], str]:
    """A name every zone carries (NS, SOA): a host name, trailing dot dropped."""
    def parse(text: str, where: str) -> str:
        value = text.strip().rstrip(".")
        if not story.host_name_ok(value):
            raise ConfigError(f"{where}: {key} {value!r} is not a host name")
        return value
    return parse


def parse_rname(text: str, where: str) -> str:
    """The SOA contact: `user@domain` or already dotted."""
    if "@" in text:
        user, _, domain = text.partition("@")
        if "." in user:
            raise ConfigError(f"{where}: soa_rname {text!r}: a mailbox with a dot before "
                              "'@' cannot be written as a plain name")
        text = f"{user}.{domain}"
    return host_name("soa_rname")(text, where)


def parse_suffix(text: str, where: str) -> str:
    suffix = text.strip().rstrip(".")
    problem = story.suffix_problem(suffix)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return suffix


def parse_story_name(text: str, where: str) -> str:
    """A chain's forward name: a host name (lower case), not under .arpa."""
    name = host_name("name")(text, where).lower()
    if name == "arpa" or name.endswith(".arpa"):
        raise ConfigError(f"{where}: name {name!r} is a reverse name: give the story a "
                          "forward name, e.g. story.example.dn42")
    return name


def parse_key_name(text: str, where: str) -> str:
    """A [[tsig]] key's name: a host name, compared in lower case."""
    return host_name("name")(text, where).lower()


def key_named(text: str, where: str) -> str:
    """A TSIG key as transfer_keys and a secondary's key name it, in the
    form [[tsig]] names are kept (config.py checks that one is declared)."""
    return text.strip().rstrip(".").lower()


def parse_algorithm(text: str, where: str) -> str:
    from .tsig import ALGORITHMS  # dnspython: only when a [[tsig]] is given
    algorithm = text.strip().lower()
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"{where}: unknown TSIG algorithm {algorithm!r}: one of "
                          f"{', '.join(ALGORITHMS)}")
    return algorithm


def parse_transfer_prefix(text: str, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A prefix whose clients may transfer; host bits are ignored."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ConfigError(f"{where}: bad prefix {text!r}: write ADDR/PLEN, e.g. "
                          "\"192.0.2.0/24\"") from None


ZONE_NAME_FORMS = ("-", "/", "_")


ASSIGNS = ("address", "route")


def parse_assign(text: str, where: str) -> str:
    if text not in ASSIGNS:
        raise ConfigError(f"{where}: assign {text!r}: write \"address\" or \"route\"")
    return text


def parse_zone_name_form(text: str, where: str) -> str:
    if text not in ZONE_NAME_FORMS:
        raise ConfigError(f"{where}: zone_name_form {text!r}: write \"-\", \"/\" or \"_\"")
    return text


def chain_props(raw: dict, where: Callable[[str], str]) -> Props:
    """A [[chain]]'s per-hop property keys: defaults for every hop."""
    return hopprops.from_table(raw, where, hopprops.CHAIN, skip=frozenset(
        s.key for s in table("chain").settings))


# --- the tables ---------------------------------------------------------------

@section("daemon", "the TUN interface and its workers")
class Daemon:
    """[daemon]. None is "not given": the daemon's or the kernel's default."""

    interface: str | None = declare(
        "str", f"TUN interface to create (default: {DEFAULT_INTERFACE}); refused if it exists",
        parse=check_interface_name, flag="--interface", short="-i", metavar="NAME",
        restart=True)
    queues: int | None = declare(
        "int", "TUN queues, one worker thread each (default: the CPUs we may run on)",
        None, 1, MAX_QUEUES, flag="--queues", short="-q", metavar="N", restart=True)
    mtu: int | None = declare(
        "int", f"interface MTU (default: the kernel's, 1500; IPv6 chains need {MIN_MTU6})",
        None, MIN_MTU, MAX_MTU, flag="--mtu", metavar="BYTES")
    txqueuelen: int | None = declare(
        "int", "probes each TUN queue holds for its worker before the kernel drops more "
        "(default: 64 when a chain delays its replies, else the kernel's, 500); under a "
        "flood each probe waits behind a full queue, so a shorter one keeps delays true",
        None, 1, MAX_TXQUEUELEN, flag="--txqueuelen", metavar="PACKETS")
    route_protocol: int = declare(
        "int", "routing protocol number (`proto`) of every route route-chain adds, chains' "
        f"and extra ones (default: {ROUTE_PROTOCOL}); BIRD learns them by it (krt_source)",
        ROUTE_PROTOCOL, ROUTE_PROTOCOL_MIN, 255, restart=True)
    route_table: int | None = declare(
        "int", "routing table of the chains' prefix routes (default: main)", None, 1, U32)
    route_metric: int | None = declare(
        "int", "metric of the chains' prefix routes (default: the kernel's, 0 for IPv4 and "
        "1024 for IPv6)", None, 0, U32)
    assign: str | None = declare(
        "str", "how the TUN takes each chain: \"address\" (default: the chain's host "
        "address on the TUN, the kernel's own, and its prefix route) or \"route\" (the prefix "
        "route alone: the host is answered as the chain's addresses below hop 1 are, and "
        "10,000 chains start in a fraction of the kernel's time for addresses)", None,
        parse=parse_assign, flag="--assign", metavar="address|route")
    proxy_uplinks: tuple[str, ...] = declare(
        "strings", "interfaces where the chains' prefixes are on-link (a VPS's /64): "
        "route-chain answers there for every chain address with proxy NDP (IPv6) and proxy "
        "ARP (IPv4) entries; needs proxy_ndp=1 there", (), parse=check_interface_name)


@section("route", "an extra route into the TUN, e.g. a covering /48", array=True)
class Route:
    """An extra route into the TUN, e.g. a covering /48."""

    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network = declare(
        "str", "extra route into the TUN, e.g. a covering /48", parse=parse_route_prefix,
        flag="--route", metavar="PREFIX", required="a prefix")
    table: int | None = declare("int", "routing table of the route (default: main)", None, 1,
                                U32, flag="--route-table", metavar="ID")
    metric: int | None = declare("int", "metric of the route", None, 0, U32,
                                 flag="--route-metric", metavar="N")
    where: str = "command line"


@section("chain", "a chain: host address and prefix, and its story", array=True,
         more=hopprops.CHAIN_KEYS, read_more=chain_props)
class ChainTable:
    """One [[chain]] as written; config.py reads its story and makes the Chain."""

    address: Any = declare(
        "str", "host address and prefix of a chain (a bare address is /32 or /128)",
        parse=parse_chain_address, metavar="ADDR/PLEN",
        required='an address, e.g. "172.20.0.1/27"')
    story: str | None = declare("str", "story file, one hop per line (relative to the config)")
    hops: tuple[str, ...] | None = declare(
        "strings", "the story written in the config, one hop per string")
    suffix: str | None = declare("str", "domain appended to every hop name", parse=parse_suffix)
    reply_ttl: int = declare("int", "initial TTL of hop 1's replies", DEFAULT_REPLY_TTL, 1,
                             MAX_REPLY_TTL, flag="--reply-ttl", metavar="TTL")
    name: str | None = declare(
        "str", "forward name of the story: A/AAAA of the chain's destination, served by the "
        "built-in server (traceroute NAME)", parse=parse_story_name)
    chapters: dict | None = declare(
        "table", "chapters of a named story, { LABEL = HOP, ... }: LABEL.NAME answers with an "
        "address a trace enters at hop HOP (2..length), so it starts the story there")
    hop: dict | None = declare("table", "[chain.hop.N]: properties of hop N (hopprops.py)")
    props: Props = NO_PROPS
    where: str = ""


@section("dns", "the built-in authoritative server and the zones' SOA and NS")
class DnsSettings:
    """The built-in authoritative server and the zones it (or an export) serves.

    `listen` empty means no built-in server; the rest shapes every zone:
    `ns` the NS names (default `ns.<first chain's suffix>` or `ns.<zone>`),
    `soa_mname` the primary (default the first NS), `soa_rname` the contact
    in dotted form (default `hostmaster.<mname's parent>`), `serial` fixed or
    None for the Unix time of the build. The rate_limit* keys
    bound the UDP answers (rrl.RateLimiter), the tcp_* keys the TCP
    connections (dns.Server): docs/stories.md, "The built-in server".
    `transfer` and `transfer_keys` say who may AXFR/IXFR (with [[tsig]]
    and [[secondary]]: daemon._dns_transfers makes the xfr.Policy), and
    `zone_name_form` how RFC 2317 zones are named (zone.py).
    """

    listen: tuple[tuple[str, int], ...] = declare(
        "strings", "ADDR:PORT or [ADDR6]:PORT for the built-in server", (),
        parse=parse_listen, restart=True)
    ttl: int = declare("int", "TTL of every record", 3600, 0, DNS_TTL_MAX)
    ns: tuple[str, ...] = declare(
        "strings", "NS names of every zone (default ns.<first suffix>)", (),
        parse=host_name("ns"))
    soa_mname: str | None = declare("str", "SOA primary (default: the first NS)",
                                    parse=host_name("soa_mname"))
    soa_rname: str | None = declare("str", "SOA contact, user@domain or dotted "
                                    "(default: hostmaster.<mname's parent>)", parse=parse_rname)
    serial: int | None = declare(
        "int", "SOA serial (default: the Unix time of the build)", None, 0, U32)
    refresh: int = declare("int", "SOA refresh", 3600, 0, DNS_TTL_MAX)
    retry: int = declare("int", "SOA retry", 600, 0, DNS_TTL_MAX)
    expire: int = declare("int", "SOA expire", 604800, 0, DNS_TTL_MAX)
    minimum: int = declare("int", "SOA minimum (negative-answer TTL)", 300, 0, DNS_TTL_MAX)
    rate_limit: int = declare("int", "UDP answers/s per client /24 or /56; 0 = off",
                              100, 0, 10**6)
    rate_limit_errors: int = declare("int", "UDP error answers/s per client prefix; 0 = off",
                                     10, 0, 10**6)
    rate_limit_slip: int = declare("int", "every Nth limited answer goes out truncated; "
                                   "0 = none", 2, 0, 10)
    fast_path: bool = declare("bool", "answer plain queries from prepared answers in C "
                              "(dnsfast.py); false: every query in Python", True, restart=True)
    tcp_connections: int = declare("int", "TCP connections at once, in total", 128, 1, 65535)
    tcp_connections_per_client: int = declare(
        "int", "TCP connections at once from one client address", 8, 1, 65535)
    tcp_idle_timeout: int = declare(
        "int", "seconds before an idle TCP connection is closed", 10, 1, 3600)
    # Zone transfers and NOTIFY (xfr.py, notify.py): off unless set.
    transfer: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = declare(
        "strings", "prefixes whose clients may AXFR/IXFR every zone (default: none, "
        "transfers off)", (), parse=parse_transfer_prefix)
    transfer_keys: tuple[str, ...] = declare(
        "strings", "TSIG key names ([[tsig]]) a transfer from the `transfer` prefixes must be "
        "signed with (default: none needed)", (), parse=key_named)
    zone_name_form: str = declare(
        "str", "RFC 2317 classless zone names: \"-\" (0-27.2.0.192.in-addr.arpa, the "
        "default), \"/\" (RFC 2317's own) or \"_\"", "-", parse=parse_zone_name_form)
    where: str = dataclasses.field(default="", compare=False)

    def names(self, chains: tuple) -> tuple[tuple[str, ...], str, str]:
        """(NS names, SOA mname, SOA rname) of every zone, defaults filled
        in: NS `ns.<suffix of the first chain with one>`, else DEFAULT_NS;
        mname the first NS; rname `hostmaster.<mname without its first label>`."""
        ns = self.ns or next(((f"ns.{c.suffix}",) for c in chains if c.suffix), (DEFAULT_NS,))
        mname = self.soa_mname or ns[0]
        labels = mname.split(".")
        rname = self.soa_rname or "hostmaster." + ".".join(labels[1:] or labels)
        return ns, mname, rname


DEFAULT_NS = "ns.route-chain.invalid"


@section("limits", "RFC 4443 2.4(f) rate limits and the delay pool")
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

    rate: int | None = declare("rate", 'all replies together, "N/s"; "off" (or 0) lifts it',
                               20000)
    burst: int | None = declare("int", "default: one second of rate", None, 1, MAX_RATE)
    source_rate: int | None = declare(
        "rate", 'per source address (IPv6: per /64), "N/s"; "off" (or 0) lifts it', 1000)
    source_burst: int | None = declare("int", "default: one second of source_rate", None, 1,
                                       MAX_RATE)
    delay_pool: int | None = declare(
        "int", "replies that may wait for their delay at once (all queues); default: one "
        "second at rate (20000 when off)", None, 1, POOL_MAX, restart=True)
    seed: int | None = declare("int", "jitter and loss generator seed; default: random at "
                               "each start", None, 0, 2**64 - 1, restart=True)
    where: str = dataclasses.field(default="", compare=False)

    @property
    def global_burst(self) -> int | None:
        return None if self.rate is None else self.burst or self.rate

    @property
    def per_source_burst(self) -> int | None:
        return None if self.source_rate is None else self.source_burst or self.source_rate

    @property
    def pool(self) -> int:
        return self.delay_pool or self.rate or Limits.rate


@section("metrics", "the Prometheus endpoint (metrics.py)")
class Metrics:
    """[metrics]: the Prometheus endpoint; no listen is no endpoint."""

    listen: tuple[str, int] | None = declare(
        "str", "ADDR:PORT or [ADDR6]:PORT of the Prometheus endpoint (the port is "
        "required); absent = off", parse=parse_endpoint, restart=True)


@section("tsig", "a TSIG key (RFC 8945) for zone transfers and NOTIFY", array=True)
class TsigTable:
    """One [[tsig]] as written; config.py reads its secret file (tsig.Key)."""

    name: str = declare("str", "the key's name, as the secondaries know it",
                        parse=parse_key_name, required="a name and a secret_file")
    algorithm: str = declare("str", "hmac-sha256 (default), hmac-sha384, hmac-sha512, "
                             "hmac-sha224 or hmac-sha1", "hmac-sha256", parse=parse_algorithm)
    secret_file: str = declare(
        "str", "file holding the base64 secret (or a BIND/Knot key clause), not readable by "
        "others; relative to the config", required="a name and a secret_file")
    where: str = ""


@section("secondary", "a secondary server the built-in server NOTIFYs and lets transfer",
         array=True)
class SecondaryTable:
    """One [[secondary]] as written; config.py makes it a notify.Secondary."""

    address: tuple[str, int] = declare(
        "str", "ADDR, ADDR:PORT or [ADDR6]:PORT of a secondary to NOTIFY (port 53 by "
        "default); it may also transfer", parse=parse_listen, required="an address")
    key: str | None = declare("str", "TSIG key name ([[tsig]]) its NOTIFY is signed with and "
                              "its transfers must be signed with", parse=key_named)
    where: str = ""


@section("registry", "what `route-chain registry` prints for a DN42 or RIPE-style registry")
class Registry:
    """[registry]: what `route-chain registry` prints beside the ranges."""

    origin_as: int | None = declare("int", "origin AS of the route/route6 objects, "
                                    "e.g. 4242420000", None, 1, U32)
    mnt_by: str | None = declare("str", "mnt-by of every object (default: none printed)")
    admin_c: str | None = declare("str", "admin-c and tech-c of every inetnum "
                                  "(default: none printed)")


DNSSEC_ALGORITHMS = {13: "ECDSAP256SHA256", 15: "ED25519"}


def parse_dnssec_algorithm(number: int, where: str) -> int:
    """An algorithm route-chain signs with (RFC 8624's MUST and RECOMMENDED)."""
    if number not in DNSSEC_ALGORITHMS:
        raise ConfigError(f"{where}: algorithm {number}: route-chain signs with "
                          + " or ".join(f"{n} ({a})" for n, a in DNSSEC_ALGORITHMS.items()))
    return number


@section("dnssec", "signing the zones of the built-in server and `route-chain zone`")
class DnssecSettings:
    """[dnssec]: whether to sign, the algorithm, where the keys live (None:
    dnssec.key_directory's default), and in seconds how long a signature
    is valid and how long before its expiry it is made again (less than
    validity: config.CHECKS). dnssec.py reads and checks the key files."""

    enabled: bool = declare("bool", "sign every zone (DNSKEY, CDS, CDNSKEY, NSEC, RRSIG); "
                            "keys are made at the first start", False)
    algorithm: int = declare("int", "13 (ECDSAP256SHA256, the default) or 15 (ED25519)",
                             13, 13, 15, parse=parse_dnssec_algorithm)
    key_dir: str | None = declare("str", "where ksk.pem and zsk.pem live (default: "
                                  "$STATE_DIRECTORY/keys, else /var/lib/route-chain/keys)")
    validity: int = declare("int", "seconds a signature is valid (default 14 days)",
                            14 * 86400, 60, DNS_TTL_MAX)
    refresh: int = declare("int", "seconds before expiry a signature is made again "
                           "(default 7 days; less than validity)", 7 * 86400, 10, DNS_TTL_MAX)


# The file's tables, in the order they are checked.
TABLES: tuple[Table, ...] = tuple(c.TABLE for c in (Daemon, Route, ChainTable, DnsSettings,
                                                   Limits, Metrics, TsigTable, SecondaryTable,
                                                   Registry, DnssecSettings))
SETTINGS: tuple[Setting, ...] = tuple(s for t in TABLES for s in t.settings)


def table(name: str) -> Table:
    return next(t for t in TABLES if t.name == name)


def keys(table_name: str) -> dict[str, Setting]:
    """The settings of one table, by key, in declaration order."""
    return {s.key: s for s in table(table_name).settings}


def setting(table_name: str, key: str) -> Setting:
    return keys(table_name)[key]


# --- the walk -----------------------------------------------------------------

def walk(tree: Mapping[str, Any], at: At, kept: Callable[[tuple, Callable[[], Any]], Any]
         | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """A parsed TOML file's tables, checked against the declarations:
    ({table: its dataclass, or a tuple of them for an array}, {setting name:
    where its value was written}). Raises ConfigError `file:line: reason`.
    `kept(key, read)`, when given, may return the element of an array
    that the last walk read from the same key (the array's name, the
    element's TOML value as repr, its place) instead of calling read()."""
    names = {t.name for t in TABLES}
    for key in tree:
        if key not in names:
            raise ConfigError(f"{at(None, None, key)}: unknown table or key {key!r}: "
                              f"expected one of {', '.join(sorted(names))}")
    out: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for t in TABLES:
        if t.array:
            raw = tree.get(t.name, [])
            if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
                raise ConfigError(f"{at(None, None, t.name)}: {t.name} must be an array of "
                                  f"tables [[{t.name}]]")
            if kept is None:
                out[t.name] = tuple(t.read(x, i, at) for i, x in enumerate(raw))
            else:
                out[t.name] = tuple(kept((t.name, repr(x), at(t.name, i)),
                                         lambda x=x, i=i: t.read(x, i, at))
                                    for i, x in enumerate(raw))
        elif t.name not in tree:
            out[t.name] = t.cls()  # every default, and no `where`: the file has no such table
        else:
            raw = tree[t.name]
            if not isinstance(raw, dict):
                raise ConfigError(f"{at(None, None, t.name)}: {t.name} must be a table "
                                  f"[{t.name}]")
            out[t.name] = t.read(raw, None, at, origins)
    return out, origins


def restart_changes(old: Any, new: Any) -> list[tuple[Setting, Any, Any]]:
    """(setting, running value, wanted value) of every restart-only setting
    whose value differs between two configurations (anything with an
    attribute per [table], as config.Config has)."""
    out = []
    for s in SETTINGS:
        if s.restart and not table(s.table).array:
            before, after = s.of(getattr(old, s.table)), s.of(getattr(new, s.table))
            if before != after:
                out.append((s, before, after))
    return out


def shown(value: Any) -> str:
    """A setting's value as a log line says it: addresses as ADDR:PORT."""
    if value is None:
        return "the default"
    if value == ():
        return "none"
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int) \
            and isinstance(value[0], str):
        host, port = value
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(value, tuple):
        return ", ".join(shown(v) for v in value)
    return str(value)


# --- the command line ---------------------------------------------------------

def add_option(parser: argparse.ArgumentParser, setting: Setting, **kw) -> None:
    """`setting` as a command-line option: the same parse and range as the
    file, its meaning and default as help."""
    names = [n for n in (setting.short, setting.flag) if n]
    default = kw.pop("default", setting.default)
    shown = f" (config: {setting.name}" + (f"; default: {default}" if isinstance(default, int)
                                           else "") + ")"
    parser.add_argument(*names, type=setting.from_text, metavar=setting.metavar,
                        default=default, help=setting.meaning + shown, **kw)


def add_options(parser: argparse.ArgumentParser) -> None:
    """Every setting with a flag; the key an array table's element needs
    (`--route PREFIX`) may be given many times."""
    for s in SETTINGS:
        if s.flag:
            many = table(s.table).array and s.required
            add_option(parser, s, **({"action": "append", "default": []} if many else {}))


def command_line(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The [table]s the options filled, as walk gives them ({name:
    dataclass}, {setting name: "--flag value"}); what was not given stays
    None."""
    out: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for t in TABLES:
        if t.array:
            continue
        given = {s.key: getattr(args, s.dest) for s in t.settings
                 if s.flag and getattr(args, s.dest) is not None}
        origins.update({f"{t.name}.{k}": f"{setting(t.name, k).flag} {v}"
                        for k, v in given.items()})
        out[t.name] = t.cls(**given)
    return out, origins
