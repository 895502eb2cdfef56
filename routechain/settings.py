"""Every setting route-chain takes, declared once: where it lives in the
TOML file, its type and range, what it means, and the command-line option
that also sets it. The TOML loader (config.py) and argparse (cli.py) both
check values through these declarations, so the two can never disagree.

Adding a setting: append a `Setting` to SETTINGS (and a `Table` to TABLES
for a new table, e.g. `Table("limits", False, ...)`, `Table("metrics",
False, ...)`); the loader then knows the key, refuses a value of the wrong
type or range with `file:line`, and hands the checked value to whatever
reads it (`_Loader.get(t, table, index, key)` in config.py). A setting with
`flag` also becomes a command-line option through `add_option`. Keys whose
value is structured (a story, a listen address, a duration such as
"70ms") are declared here too, with a `parse` that turns the text into the
value; a sub-table (e.g. `[chain.hop.N]`) is kind "table", checked by its
own reader.
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass
from typing import Any, Callable

from . import hopprops
from .hopprops import MAX_MTU, MAX_REPLY_TTL, MIN_MTU, MIN_MTU6
from .chain import parse_chain_address
from .errors import ConfigError, UsageError

U32 = 2**32 - 1
TTL_MAX = 2**31 - 1   # RFC 2181 8: a DNS TTL is at most 2^31 - 1.
MAX_QUEUES = 256      # the kernel's MAX_TAP_QUEUES (tun.MAX_QUEUES is the same)
MAX_TXQUEUELEN = 65536  # packets per TUN queue: the kernel allocates a ring this long per queue
RATE_MAX = 10_000_000  # replies per second; more than any TUN carries
POOL_MAX = 1_000_000   # delay pool slots: 256 MiB of small replies


@dataclass(frozen=True)
class Table:
    """A top-level TOML table: `[name]` once, or `[[name]]` (array) many
    times. `more` are keys another module declares and reads (a chain's
    per-hop properties: hopprops.KEYS)."""

    name: str
    array: bool
    meaning: str
    more: frozenset[str] = frozenset()


# What each kind of value accepts from TOML, and how a message says it.
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "strings": (lambda v: isinstance(v, (str, list)), "a list of strings"),
    # "N/s" or "off" (or 0); config.py's rate() reads the text.
    "rate": (lambda v: isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)),
             'a rate such as "1000/s", or "off"'),
    "table": (lambda v: isinstance(v, dict), "a table"),
}


@dataclass(frozen=True)
class Setting:
    """One key of one table. `kind` is one of KINDS ("strings" takes a
    lone string as a list of one; "table" is a sub-table whose reader
    checks it); a number is checked against low..high where given;
    `parse(text, where)` turns a string into the value (and raises
    UsageError naming `where`); `flag` is the command-line option that
    sets the same thing."""

    table: str
    key: str
    kind: str
    meaning: str
    low: int | float | None = None
    high: int | float | None = None
    parse: Callable[[str, str], Any] | None = None
    flag: str | None = None
    short: str | None = None
    metavar: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise AssertionError(f"{self.name}: unknown kind {self.kind!r}")

    @property
    def name(self) -> str:
        return f"{self.table}.{self.key}"

    def from_toml(self, value: Any, where: str,
                  element: Callable[[int], str] | None = None) -> Any:
        """The checked value of a TOML value (None when absent); ConfigError
        `where: reason` (`element(k)` is where element k of a list is)."""
        if value is None:
            return None
        accepts, what = KINDS[self.kind]
        if not accepts(value):
            raise ConfigError(f"{where}: {self.name} must be {what}, not {value!r}")
        if self.kind == "strings":
            value = [value] if isinstance(value, str) else value
            for k, item in enumerate(value):
                if not isinstance(item, str):
                    raise ConfigError(f"{element(k) if element else where}: {self.name} "
                                      f"must hold strings, not {item!r}")
        try:
            value = self._in_range(value)
            return self.parse(value, where) if self.parse and self.kind == "str" else value
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
                return self._in_range(value)
            except UsageError as e:
                raise UsageError(f"{where}: {e}") from None
        return self.parse(text, where) if self.parse else text

    def _in_range(self, value: Any) -> Any:
        if self.kind in ("int", "float"):
            low = self.low if self.low is not None else value
            high = self.high if self.high is not None else value
            if not low <= value <= high:
                raise UsageError(f"{self.name} = {value} is not in {self.low}..{self.high}")
        return value


def add_option(parser: argparse.ArgumentParser, setting: Setting, **kw) -> None:
    """`setting` as a command-line option: the same parse and range as the file."""
    names = [n for n in (setting.short, setting.flag) if n]
    default = kw.pop("default", None)
    shown = f" (config: {setting.name}" + (f"; default: {default}" if isinstance(default, int)
                                           else "") + ")"
    parser.add_argument(*names, type=setting.from_text, metavar=setting.metavar,
                        default=default, help=setting.meaning + shown, **kw)


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


TABLES = (
    Table("daemon", False, "the TUN interface and its workers (need a restart to change)"),
    Table("route", True, "an extra route into the TUN, e.g. a covering /48"),
    Table("chain", True, "a chain: host address and prefix, and its story",
          more=hopprops.CHAIN_KEYS),
    Table("dns", False, "the built-in authoritative server and the zones' SOA and NS"),
    Table("limits", False, "RFC 4443 2.4(f) rate limits and the delay pool"),
    Table("metrics", False, "the Prometheus endpoint (metrics.py)"),
    Table("tsig", True, "a TSIG key (RFC 8945) for zone transfers and NOTIFY"),
    Table("secondary", True, "a secondary server the built-in server NOTIFYs and lets "
          "transfer"),
    Table("registry", False, "what `route-chain registry` prints for a DN42 or RIPE-style "
          "registry"),
    Table("dnssec", False, "signing the zones of the built-in server and `route-chain zone`"),
)

SETTINGS = (
    Setting("daemon", "interface", "str", "TUN interface to create (default: route-chain); refused "
            "if it exists",
            parse=check_interface_name, flag="--interface", short="-i", metavar="NAME"),
    Setting("daemon", "queues", "int", "TUN queues, one worker thread each "
            "(default: the CPUs we may run on)", 1, MAX_QUEUES,
            flag="--queues", short="-q", metavar="N"),
    Setting("daemon", "mtu", "int", "interface MTU (default: the kernel's, 1500; "
            f"IPv6 chains need {MIN_MTU6})", MIN_MTU, MAX_MTU, flag="--mtu", metavar="BYTES"),
    Setting("daemon", "txqueuelen", "int", "probes each TUN queue holds for its worker before "
            "the kernel drops more (default: the kernel's, 500); under a flood each probe "
            "waits behind a full queue, so a shorter one keeps delays true",
            1, MAX_TXQUEUELEN, flag="--txqueuelen", metavar="PACKETS"),

    Setting("route", "prefix", "str", "extra route into the TUN, e.g. a covering /48",
            parse=parse_route_prefix, flag="--route", metavar="PREFIX"),
    Setting("route", "table", "int", "routing table of the route (default: main)", 1, U32,
            flag="--route-table", metavar="ID"),
    Setting("route", "metric", "int", "metric of the route", 0, U32,
            flag="--route-metric", metavar="N"),

    Setting("chain", "address", "str", "host address and prefix of a chain (a bare address "
            "is /32 or /128)", parse=parse_chain_address, metavar="ADDR/PLEN"),
    Setting("chain", "story", "str", "story file, one hop per line (relative to the config)"),
    Setting("chain", "hops", "strings", "the story written in the config, one hop per string"),
    Setting("chain", "suffix", "str", "domain appended to every hop name"),
    Setting("chain", "reply_ttl", "int", "initial TTL of hop 1's replies", 1, MAX_REPLY_TTL,
            flag="--reply-ttl", metavar="TTL"),
    Setting("chain", "name", "str", "forward name of the story: A/AAAA of the chain's "
            "destination, served by the built-in server (traceroute NAME)"),
    Setting("chain", "hop", "table", "[chain.hop.N]: properties of hop N (hopprops.py)"),

    Setting("dns", "listen", "strings", "ADDR:PORT or [ADDR6]:PORT for the built-in server"),
    Setting("dns", "ttl", "int", "TTL of every record", 0, TTL_MAX),
    Setting("dns", "ns", "strings", "NS names of every zone (default ns.<first suffix>)"),
    Setting("dns", "soa_mname", "str", "SOA primary (default: the first NS)"),
    Setting("dns", "soa_rname", "str", "SOA contact, user@domain or dotted "
            "(default: hostmaster.<mname's parent>)"),
    Setting("dns", "serial", "int", "SOA serial (default: the Unix time of the build)", 0, U32),
    Setting("dns", "refresh", "int", "SOA refresh", 0, TTL_MAX),
    Setting("dns", "retry", "int", "SOA retry", 0, TTL_MAX),
    Setting("dns", "expire", "int", "SOA expire", 0, TTL_MAX),
    Setting("dns", "minimum", "int", "SOA minimum (negative-answer TTL)", 0, TTL_MAX),
    Setting("dns", "rate_limit", "int", "UDP answers/s per client /24 or /56; 0 = off",
            0, 10**6),
    Setting("dns", "rate_limit_errors", "int", "UDP error answers/s per client prefix",
            0, 10**6),
    Setting("dns", "rate_limit_slip", "int", "every Nth limited answer goes out truncated; "
            "0 = none", 0, 10),
    Setting("dns", "tcp_connections", "int", "TCP connections at once, in total", 1, 65535),
    Setting("dns", "tcp_connections_per_client", "int", "TCP connections at once from one "
            "client address", 1, 65535),
    Setting("dns", "tcp_idle_timeout", "int", "seconds before an idle TCP connection is "
            "closed", 1, 3600),

    Setting("dns", "transfer", "strings", "prefixes whose clients may AXFR/IXFR every zone "
            "(default: none, transfers off)"),
    Setting("dns", "transfer_keys", "strings", "TSIG key names ([[tsig]]) a transfer from "
            "the `transfer` prefixes must be signed with (default: none needed)"),
    Setting("dns", "zone_name_form", "str", "RFC 2317 classless zone names: \"-\" "
            "(0-27.2.0.192.in-addr.arpa, the default), \"/\" (RFC 2317's own) or \"_\""),

    Setting("tsig", "name", "str", "the key's name, as the secondaries know it"),
    Setting("tsig", "algorithm", "str", "hmac-sha256 (default), hmac-sha384, hmac-sha512, "
            "hmac-sha224 or hmac-sha1"),
    Setting("tsig", "secret_file", "str", "file holding the base64 secret (or a BIND/Knot "
            "key clause), not readable by others; relative to the config"),

    Setting("secondary", "address", "str", "ADDR, ADDR:PORT or [ADDR6]:PORT of a secondary "
            "to NOTIFY (port 53 by default); it may also transfer"),
    Setting("secondary", "key", "str", "TSIG key name ([[tsig]]) its NOTIFY is signed "
            "with and its transfers must be signed with"),

    Setting("dnssec", "enabled", "bool", "sign every zone (DNSKEY, CDS, CDNSKEY, NSEC, "
            "RRSIG); keys are made at the first start"),
    Setting("dnssec", "algorithm", "int", "13 (ECDSAP256SHA256, the default) or 15 (ED25519)",
            13, 15),
    Setting("dnssec", "key_dir", "str", "where ksk.pem and zsk.pem live (default: "
            "$STATE_DIRECTORY/keys, else /var/lib/route-chain/keys)"),
    Setting("dnssec", "validity", "int", "seconds a signature is valid (default 14 days)",
            60, TTL_MAX),
    Setting("dnssec", "refresh", "int", "seconds before expiry a signature is made again "
            "(default 7 days; less than validity)", 10, TTL_MAX),
    Setting("registry", "origin_as", "int", "origin AS of the route/route6 objects, "
            "e.g. 4242420000", 1, U32),
    Setting("registry", "mnt_by", "str", "mnt-by of every object (default: none printed)"),
    Setting("registry", "admin_c", "str", "admin-c and tech-c of every inetnum "
            "(default: none printed)"),

    Setting("limits", "rate", "rate", 'all replies together, "N/s"; "off" (or 0) lifts it'),
    Setting("limits", "burst", "int", "default: one second of rate", 1, RATE_MAX),
    Setting("limits", "source_rate", "rate", 'per source address (IPv6: per /64), "N/s"; '
            '"off" (or 0) lifts it'),
    Setting("limits", "source_burst", "int", "default: one second of source_rate", 1, RATE_MAX),
    Setting("limits", "delay_pool", "int", "replies that may wait for their delay at once "
            "(all queues; restart)", 1, POOL_MAX),
    Setting("limits", "seed", "int", "jitter and loss generator seed (restart); default: "
            "random at each start", 0, 2**64 - 1),

    Setting("metrics", "listen", "str", "ADDR:PORT or [ADDR6]:PORT of the Prometheus "
            "endpoint (the port is required); absent = off"),
)


# The [dns] keys that bound the built-in server's work (dns.py reads them).
DNS_LIMIT_KEYS = ("rate_limit", "rate_limit_errors", "rate_limit_slip", "tcp_connections",
                  "tcp_connections_per_client", "tcp_idle_timeout")


def table(name: str) -> Table:
    return next(t for t in TABLES if t.name == name)


def keys(table_name: str) -> dict[str, Setting]:
    """The settings of one table, by key, in declaration order."""
    return {s.key: s for s in SETTINGS if s.table == table_name}


def setting(table_name: str, key: str) -> Setting:
    return keys(table_name)[key]
