"""Per-hop properties: how a hop behaves beyond its name. Pure parsing over
frozen dataclasses, no I/O.

One vocabulary, written the same way everywhere (docs/stories.md, "How each
hop behaves"): `key=value` words after a `|` on a story line or an inline
`hops` string, and the same keys with the same values in a `[[chain]]` table
(defaults for every hop) or a `[chain.hop.N]` table (one hop). `KEYS` below
is the one place that says what each key takes and where it may stand; the
story reader and the TOML loader both go through it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, fields
from typing import Callable, Iterable

from .errors import ConfigError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

SEPARATOR = "|"          # a story line's text | its properties
ALTERNATIVE = "+"        # a line starting with '+ ' is another router at the hop above
FURTHER = "++"           # ... '++ ', the next router on the '+' branch above: one hop longer
MAX_DURATION_US = 10_000_000
MAX_LABELS = 8
MAX_LABEL = 2**20 - 1    # RFC 3032: 20 bits
MAX_TC = 7               # RFC 5462: 3 bits
MAX_IFNAME = 63          # RFC 5837 4.3: the name sub-object holds at most 63 octets
MAX_RATE = 10_000_000    # replies per second, of a hop or of [limits]: more than any TUN carries
MIN_MTU = 68             # RFC 791: every IPv4 module takes 68 octets
MIN_MTU6 = 1280          # RFC 8200 5: IPv6 needs 1280 on every link
MAX_MTU = 65535
IP_TTL_MAX = 255         # the 8-bit IPv4 TTL and IPv6 Hop Limit
MAX_REPLY_TTL = IP_TTL_MAX
ENDINGS = ("host", "!N", "!H", "!X")
TCP_ANSWERS = ("closed", "rst", "silent", "prohibited", "open")  # enum rc_tcp, in order
UDP_ANSWERS = ("unreachable", "silent", "prohibited")            # enum rc_udp, in order
MAX_OPEN_PORTS = 16      # RC_MAX_OPEN_PORTS
BALANCES = ("flow", "packet", "destination")                     # enum rc_balance, in order

# Where a key may stand.
CHAIN, HOP, BRANCH = "chain", "hop", "branch"


@dataclass(frozen=True)
class Label:
    """One MPLS label stack entry as received (RFC 3032): label and traffic class."""

    label: int
    tc: int = 0


@dataclass(frozen=True)
class Delay:
    """A path delay: absolute, or `+` added from this hop on."""

    us: int
    relative: bool = False


@dataclass(frozen=True)
class Props:
    """The properties as written at one place; None is "not set here"."""

    delay: Delay | None = None
    step_us: int | None = None
    slow_us: int | None = None
    jitter_us: int | None = None
    loss: float | None = None
    rate: int | None = None
    burst: int | None = None
    mpls: tuple[Label, ...] | None = None
    iface: str | None = None
    ifindex: int | None = None
    ifaddr: Address | None = None
    ifmtu: int | None = None
    mtu: int | None = None
    reply_ttl: int | None = None
    address: Address | None = None
    end: str | None = None
    tcp: str | None = None
    tcp_open: tuple[int, ...] | None = None
    udp: str | None = None
    balance: str | None = None
    nat: tuple[Address, int | None] | None = None
    dscp: int | None = None
    ecn: int | None = None
    df: str | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def merged(self, other: "Props", where: str) -> "Props":
        """These and `other`'s together; a key set in both is an error."""
        out = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine is not None and theirs is not None:
                raise ConfigError(f"{where}: {_key_of(f.name)} is set twice for this hop "
                                  "(on its story line and in [chain.hop.N])")
            out[f.name] = mine if mine is not None else theirs
        return Props(**out)


NO_PROPS = Props()


# --- values ---------------------------------------------------------------

_NUMBER = r"(\d+(?:\.\d+)?)"
_UNITS_US = {"us": 1, "ms": 1_000, "s": 1_000_000}


def parse_duration(text: str) -> int:
    """`70ms`, `0.5ms`, `250us`, `1s` -> microseconds (0 .. 10 s)."""
    m = re.fullmatch(_NUMBER + r"(us|ms|s)", text)
    if not m:
        raise ValueError("write a number and a unit (us, ms or s), e.g. 70ms")
    us = round(float(m.group(1)) * _UNITS_US[m.group(2)])
    if us > MAX_DURATION_US:
        raise ValueError("more than 10s")
    return us


def parse_delay(text: str) -> Delay:
    relative = text.startswith("+")
    return Delay(parse_duration(text[1:] if relative else text), relative)


def parse_percent(text: str) -> float:
    m = re.fullmatch(_NUMBER + "%", text)
    if not m:
        raise ValueError("write a percentage, e.g. 5%")
    value = float(m.group(1))
    if value > 100:
        raise ValueError("more than 100%")
    return value / 100


def parse_rate(text: str) -> int:
    m = re.fullmatch(r"(\d+)/s", text)
    if not m:
        raise ValueError("write replies per second, e.g. 10/s")
    value = int(m.group(1))
    if not 1 <= value <= MAX_RATE:
        raise ValueError(f"not in 1/s..{MAX_RATE}/s (a hop that never answers is '*')")
    return value


def int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not re.fullmatch(r"\d+", text):
            raise ValueError("not a whole number")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"not in {low}..{high}")
        return value
    return parse


def parse_mpls(text: str) -> tuple[Label, ...]:
    """`LABEL[:TC],...`, top of the stack first."""
    entries = text.split(",")
    if len(entries) > MAX_LABELS:
        raise ValueError(f"{len(entries)} labels: at most {MAX_LABELS}")
    stack = []
    for entry in entries:
        m = re.fullmatch(r"(\d+)(?::(\d+))?", entry)
        if not m:
            raise ValueError(f"{entry!r}: write LABEL or LABEL:TC, labels separated by ','")
        label, tc = int(m.group(1)), int(m.group(2) or 0)
        if label > MAX_LABEL:
            raise ValueError(f"label {label} is not in 0..{MAX_LABEL}")
        if tc > MAX_TC:
            raise ValueError(f"traffic class {tc} is not in 0..{MAX_TC}")
        stack.append(Label(label, tc))
    return tuple(stack)


def parse_ifname(text: str) -> str:
    size = len(text.encode("utf-8"))
    if not 0 < size <= MAX_IFNAME:
        raise ValueError(f"{size} octets of UTF-8: 1..{MAX_IFNAME}")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("control characters")
    return text


def parse_address(text: str) -> Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError("not an IP address") from None


def parse_end(text: str) -> str:
    if text not in ENDINGS:
        raise ValueError(f"write one of {', '.join(ENDINGS)}")
    return text


def parse_nat(text: str) -> tuple[Address, int | None]:
    """ADDR, ADDR:PORT or [ADDR]:PORT (IPv6): a NAT's outside address and,
    if given, the port (or Echo identifier) it maps the probe's to."""
    host, port = text, None
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:]+):(\d+)", text)
    if m:
        host, port = m.group(1) or m.group(3), int(m.group(2) or m.group(4))
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not 1..65535")
    return parse_address(host), port


def one_of(words: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in words:
            raise ValueError(f"write one of {', '.join(words)}")
        return text
    return parse


def parse_ports(text: str) -> tuple[int, ...]:
    """`80,443`: TCP ports, 1 .. 65535, each once, at most MAX_OPEN_PORTS."""
    ports = []
    for word in text.split(","):
        if not word.isdigit() or not 1 <= int(word) <= 65535:
            raise ValueError(f"{word!r} is not a port 1..65535 (write ports as 80,443)")
        if int(word) in ports:
            raise ValueError(f"port {word} is written twice")
        ports.append(int(word))
    if len(ports) > MAX_OPEN_PORTS:
        raise ValueError(f"{len(ports)} ports: at most {MAX_OPEN_PORTS}")
    return tuple(ports)


# What a property changes (Key.changes): when a reply leaves (TIMING), what
# a reply carries or who sends it (REPLY: the chain takes the slower path
# that builds extensions, Chain.has_extensions), or neither by itself
# (PLACE: an alternative's address, a chain's ending, how its destination
# answers TCP and UDP; Chain and chaintable.py read them).
TIMING, REPLY, PLACE = "timing", "reply", "place"


@dataclass(frozen=True)
class Key:
    """One property: its name as written, the field it fills, what parses
    it, where it may stand, what it changes, and whether TOML may give it
    as an integer."""

    name: str
    field: str
    parse: Callable[[str], object]
    where: frozenset[str]
    example: str
    changes: str
    integer: bool = False
    listed: bool = False     # TOML may give it as a list of integers: [80, 443]


_ALL = frozenset({CHAIN, HOP, BRANCH})
_HOPS = frozenset({HOP, BRANCH})

KEYS: dict[str, Key] = {k.name: k for k in (
    Key("delay", "delay", parse_delay, frozenset({CHAIN, HOP}), "+70ms", TIMING),
    Key("step", "step_us", parse_duration, frozenset({CHAIN}), "0.5ms", TIMING),
    Key("slow", "slow_us", parse_duration, _HOPS, "40ms", TIMING),
    Key("jitter", "jitter_us", parse_duration, _ALL, "2ms", TIMING),
    Key("loss", "loss", parse_percent, _ALL, "5%", TIMING),
    Key("rate", "rate", parse_rate, _ALL, "10/s", TIMING),
    Key("burst", "burst", int_in(1, MAX_RATE), _ALL, "10", TIMING, integer=True),
    Key("mpls", "mpls", parse_mpls, _HOPS, "24001:0,16", REPLY),
    Key("iface", "iface", parse_ifname, _HOPS, "xe-0/0/0", REPLY),
    Key("ifindex", "ifindex", int_in(0, 2**32 - 1), _HOPS, "12", REPLY, integer=True),
    Key("ifaddr", "ifaddr", parse_address, _HOPS, "192.0.2.1", REPLY),
    Key("ifmtu", "ifmtu", int_in(68, 2**32 - 1), _HOPS, "9000", REPLY, integer=True),
    Key("mtu", "mtu", int_in(MIN_MTU, MAX_MTU), _HOPS, "1400", REPLY, integer=True),
    Key("reply_ttl", "reply_ttl", int_in(1, MAX_REPLY_TTL), _HOPS, "255", REPLY, integer=True),
    Key("address", "address", parse_address, frozenset({BRANCH}), "198.51.100.40", PLACE),
    Key("end", "end", parse_end, frozenset({CHAIN}), "!N", PLACE),
    Key("tcp", "tcp", one_of(TCP_ANSWERS), frozenset({CHAIN}), "open", PLACE),
    Key("tcp_open", "tcp_open", parse_ports, frozenset({CHAIN}), "80,443", PLACE,
        integer=True, listed=True),
    Key("udp", "udp", one_of(UDP_ANSWERS), frozenset({CHAIN}), "silent", PLACE),
    Key("balance", "balance", one_of(BALANCES), frozenset({CHAIN, HOP}), "packet", PLACE),
    Key("nat", "nat", parse_nat, _HOPS, "198.51.100.200:40000", REPLY),
    Key("dscp", "dscp", int_in(0, 63), _HOPS, "46", REPLY, integer=True),
    Key("ecn", "ecn", int_in(0, 3), _HOPS, "1", REPLY, integer=True),
    Key("df", "df", one_of(("set", "clear")), _HOPS, "clear", REPLY),
)}

# The Props fields that change what a hop's replies carry or who sends them.
REPLY_FIELDS = tuple(k.field for k in KEYS.values() if k.changes == REPLY)

# The keys a [[chain]] table takes as properties (reply_ttl is the chain's own key).
CHAIN_KEYS = frozenset(k.name for k in KEYS.values() if CHAIN in k.where)

_PLACE = {CHAIN: "a [[chain]]", HOP: "a hop", BRANCH: "a '+' alternative"}


def _key_of(field_name: str) -> str:
    return next(k.name for k in KEYS.values() if k.field == field_name)


def build(pairs: Iterable[tuple[str, str, str]], place: str) -> Props:
    """Props from (key, value text, where) triples written at `place`
    (CHAIN, HOP or BRANCH). Raises ConfigError naming the key and value."""
    values: dict[str, object] = {}
    for name, text, where in pairs:
        key = KEYS.get(name)
        if key is None:
            raise ConfigError(f"{where}: unknown property {name!r}: expected one of "
                              f"{', '.join(sorted(KEYS))}")
        if place not in key.where:
            allowed = " or ".join(_PLACE[p] for p in (CHAIN, HOP, BRANCH) if p in key.where)
            raise ConfigError(f"{where}: {name} belongs on {allowed}, not on {_PLACE[place]}")
        if key.field in values:
            raise ConfigError(f"{where}: {name} is set twice")
        if place == CHAIN and name == "delay" and text.startswith("+"):
            raise ConfigError(f"{where}: delay {text!r}: a chain's delay is where the path "
                              "starts; '+' belongs on a hop")
        try:
            values[key.field] = key.parse(text)
        except ValueError as e:
            raise ConfigError(f"{where}: {name} {text!r}: {e}") from None
    return Props(**values)


_TOKEN = re.compile(r'\s*([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?=\s|$)')


def parse_words(text: str, where: str, place: str = HOP) -> Props:
    """The `key=value ...` words after a story line's `|`."""
    pairs = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            bad = text[pos:].split()[0]
            raise ConfigError(f"{where}: {bad!r} is not key=value (quote a value with "
                              'spaces: iface="Ocean Gate 1")')
        value = m.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs.append((m.group(1), value, where))
        pos = m.end()
    return build(pairs, place)


def from_table(table: dict, where: Callable[[str], str], place: str,
               skip: frozenset[str] = frozenset()) -> Props:
    """Props from a TOML table's keys (all but `skip`); `where(key)` gives a
    key's `file:line`. Integers are taken where the key is a number, lists of
    integers where it is a list (tcp_open = [80, 443])."""
    pairs = []
    for name, value in table.items():
        if name in skip:
            continue
        key = KEYS.get(name)
        if (key is not None and key.listed and isinstance(value, list) and value
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            value = ",".join(map(str, value))
        if key is not None and (isinstance(value, bool) or not (
                isinstance(value, str) or (isinstance(value, int) and key.integer))):
            raise ConfigError(f"{where(name)}: {name} {value!r}: write it as text with its "
                              f'unit, the same as in a story line: {name} = "{key.example}"')
        pairs.append((name, str(value), where(name)))
    return build(pairs, place)


def split_line(text: str) -> tuple[int, str, str | None]:
    """A story line as (0 for a hop, 1 for a '+' alternative, 2 for a '++'
    router further on the branch above; its text; its property words or
    None). The text is stripped; the marker must be followed by white space
    or the end of the line."""
    stripped = text.strip()
    alternative = 0
    for level, marker in ((2, FURTHER), (1, ALTERNATIVE)):
        if stripped == marker or (stripped.startswith(marker) and
                                  stripped[len(marker):len(marker) + 1].isspace()):
            alternative = level
            stripped = stripped[len(marker):].strip()
            break
    body, sep, words = stripped.partition(SEPARATOR)
    return alternative, body.strip(), words if sep else None
