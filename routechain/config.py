"""What route-chain runs: chains, routes, daemon settings and DNS, from the
command line and a TOML file. Pure data and parsing, no I/O beyond reading
the files named.

`load(path)` reads a config file (schema in settings.py, explained in
docs/stories.md) and its story files; `merge(cli, file)` joins it with what
the command line gave. Loading is five steps, each its own function:
read and parse the TOML (`load`), check every table against the
declarations (settings.walk: pure, tested with dicts), make each
[[chain]] a Chain with its story (`chain_of`: story files are read by
`Stories`, beside the walk), read each [[tsig]] key's secret and check
the keys transfers and secondaries name (`tsig_keys`: the secret files
are read by `secrets`, beside the walk), then the rules between settings
(CHECKS).
Every error is a ConfigError naming the file and line:
`route-chain.toml:12: ...`; tomllib gives no positions, so
tomlpos.Locator finds the line of each table, key and array element.
Whatever goes wrong while loading, the caller gets a ConfigError, never
another exception: a reload must be able to refuse any file.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from . import files, hopprops, settings, story, tomlpos
from .chain import Chain, Chapter, check_overlap
from .errors import ConfigError, RouteChainError, UsageError
from .hopprops import MIN_MTU6
from .notify import Secondary
# The tables' dataclasses are declared in settings.py, with their settings;
# a Config holds one of each.
from .settings import (ChainTable, Daemon, DnsSettings, DnssecSettings, Limits, Metrics,
                       Registry, Route)
from .tsig import Key as TsigKey, read_secret


# Probes per TUN queue when chains delay replies and the config does not
# say: bench/run's p99 timing error under a saturating flood is 0.1 ms with
# 64 and 1.5 ms with the kernel's 500 (docs/stories.md, "Under a flood").
DELAY_TXQUEUELEN = 64


@dataclass(frozen=True)
class Config:
    """One field per table of the file, named as the table (the arrays
    made into what uses them: [[chain]] `chains`, [[tsig]] `keys`,
    [[secondary]] `secondaries`). `warnings`
    are real problems (a hop left without a name...), one by one;
    `rewrites` say how each story line became a name, for `preview`;
    `summaries` say it in one line per file, for the logs; `origins` say
    where each [table] setting was given ("file:line: key value" or
    "--flag value"), for the checks between settings."""

    chains: tuple[Chain, ...] = ()
    routes: tuple[Route, ...] = ()
    daemon: Daemon = Daemon()
    dns: DnsSettings = DnsSettings()
    limits: Limits = Limits()
    metrics: Metrics = Metrics()
    registry: Registry = Registry()
    dnssec: DnssecSettings = DnssecSettings()
    keys: tuple[TsigKey, ...] = ()              # [[tsig]], their secrets read
    secondaries: tuple[Secondary, ...] = ()     # [[secondary]]
    warnings: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)
    rewrites: tuple[str, ...] = field(default=(), compare=False)
    summaries: tuple[str, ...] = field(default=(), compare=False)
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def txqueuelen(self) -> int | None:
        """The TUN's queue length this config asks for: `[daemon] txqueuelen`
        if given; else DELAY_TXQUEUELEN when a chain delays its replies
        (under a flood every probe waits behind a full queue before the
        daemon reads it and its delay starts: behind the kernel's 500 that
        is milliseconds, behind 64 a fraction of one); else None: the
        kernel's."""
        if self.daemon.txqueuelen:
            return self.daemon.txqueuelen
        return DELAY_TXQUEUELEN if any(c.has_delay for c in self.chains) else None

    @property
    def log_lines(self) -> tuple[str, ...]:
        """What start and reload log: never one line per rewritten story
        line, nor one per chain sharing a file (#13)."""
        return self.summaries + self.warnings


def load(path: Path, memo: "Memo | None" = None) -> Config:
    """Read a TOML config file and the story files it names (relative to
    it). Raises ConfigError `file:line: reason` on anything wrong. With a
    Memo (the daemon keeps one), what the last successful load made from
    the same input is kept: see Memo."""
    source = str(path)
    turn = memo.turn() if memo is not None else None
    try:
        config = _load(Path(path), source, turn)
    except RouteChainError as e:
        raise ConfigError(str(e)) from None
    except Exception as e:  # a bound we missed (MemoryError...) must still be one line
        raise ConfigError(f"{source}: cannot load: {one_line(e)}") from None
    if memo is not None:
        memo.keep(turn)
    return config


class Memo:
    """What one load of a file made that the next load of it may keep, so
    that a reload re-reads, re-checks and re-builds only what changed (#21):

    - a config file whose text is the same keeps its shape check and the
      lines of its tables, keys and elements (tomlpos.Locator);
    - a story file whose bytes are the same (compared whole: no clock or
      stat can miss an edit within the same second) keeps its Story, the
      hops tuple every chain telling it shares;
    - a [[chain]] table written the same (its TOML value and its line)
      keeps its checked table, and with the same Story its Chain: the
      object itself, so the reply table's rows (chaintable) and the
      zones' drafts made from it are kept too.

    A chain with inline `hops` or `[chain.hop.N]` tables is built again
    each time (their lines are in its hops' messages). Only a load that
    succeeds replaces what is kept: a refused reload leaves the memo as
    the serving configuration made it."""

    def __init__(self) -> None:
        self.kept = _Turn()

    def turn(self) -> "_Turn":
        """A new load: reads what was kept, fills a _Turn of its own."""
        return _Turn(self.kept)

    def keep(self, turn: "_Turn") -> None:
        turn.before = None
        self.kept = turn


class _Turn:
    """One load's use of a Memo: what the last one kept (`before`) and
    what this one made (to be kept if it succeeds)."""

    def __init__(self, before: "_Turn | None" = None) -> None:
        self.before = before
        self.text: tuple[str, str] | None = None   # (source, text) of the file
        self.at: settings.At | None = None          # its line locator
        self.stories: dict[tuple[str, str | None], tuple[bytes, story.Story]] = {}
        self.tables: dict[tuple[str, str, str], Any] = {}
        self.chains: dict[int, tuple[Any, story.Story | None, tuple]] = {}

    def table(self, key: tuple[str, str, str], read: Callable[[], Any]) -> Any:
        """The checked table for key (table name, TOML value as repr, line),
        kept or made by read()."""
        got = self.before.tables.get(key) if self.before is not None else None
        if got is None:
            got = read()
        self.tables[key] = got
        return got

    def story(self, key: tuple[str, str | None], data: bytes,
              parse: Callable[[], story.Story]) -> story.Story:
        got = self.before.stories.get(key) if self.before is not None else None
        told = got[1] if got is not None and got[0] == data else parse()
        self.stories[key] = (data, told)
        return told

    def chain(self, t: Any, told: story.Story | None, make: Callable[[], tuple]) -> tuple:
        """chain_of's result for checked table t telling `told`: kept when
        the last load made it from the same table object and Story."""
        got = self.before.chains.get(id(t)) if self.before is not None else None
        made = got[2] if got is not None and got[0] is t and got[1] is told else make()
        self.chains[id(t)] = (t, told, made)
        return made


def _load(path: Path, source: str, turn: _Turn | None = None) -> Config:
    data = files.read_bytes(path, source, "config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 (byte offset {e.start})") from None
    before = turn.before if turn is not None else None
    if before is not None and before.text == (source, text):
        at = before.at  # the same text: its shape passed, its lines are known
    else:
        problem = tomlpos.shape(text).problem()
        if problem:
            raise ConfigError(f"{source}:{problem[0]}: {problem[1]}")
        at = None
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(_toml_error(source, text, e)) from None
    at = at or locate(source, text)
    if turn is not None:
        turn.text, turn.at = (source, text), at
    return build(tree, at, source, Stories(path, source, turn).read, path,
                 secrets(path, source), turn)


def locate(source: str, text: str) -> settings.At:
    """`at(table, index, key, element)` -> "file:line" in a TOML file's text."""
    locator = tomlpos.Locator(text)

    def at(table: str | None, index: int | None = None, key: str | None = None,
           element: int | None = None) -> str:
        return f"{source}:{locator.line(table, index, key, element)}"
    return at


def one_line(e: BaseException, width: int = 300) -> str:
    """An exception as one line: its message, or its type when it has none."""
    text = str(e) if isinstance(e, RouteChainError) else \
        f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


# ReadStory(file as written, suffix) -> (the file as messages name it, its Story)
ReadStory = Callable[[str, "str | None"], "tuple[str, story.Story]"]


# ReadSecret(file as written) -> the TSIG secret it holds
ReadSecret = Callable[[str], bytes]


def build(tree: Mapping[str, Any], at: settings.At, source: str, read_story: ReadStory,
          path: Path | None = None, read_secret: ReadSecret | None = None,
          turn: _Turn | None = None) -> Config:
    """A parsed TOML file as a Config: the walk over the declarations,
    each [[chain]] with its story, the TSIG keys with their secrets, then
    CHECKS. Pure but for `read_story` and `read_secret` (default: files
    relative to `source`); `turn` keeps what the last load made (Memo)."""
    tables, origins = settings.walk(tree, at, turn.table if turn is not None else None)
    made = [_chain_of(t, i, at, source, read_story, turn)
            for i, t in enumerate(tables["chain"])]
    keys, secondaries = tsig_keys(tables, at, read_secret or secrets(Path(source), source))
    rewrites: dict[str, list[str]] = {}
    warnings: list[str] = []
    for _, shown, told in made:
        if told is not None:
            warnings.extend(told.warnings)
            rewrites.setdefault(shown, []).extend(told.rewrites)
    config = Config(
        chains=tuple(c for c, _, _ in made), routes=tables["route"], path=path,
        keys=keys, secondaries=secondaries,
        **{t.name: tables[t.name] for t in settings.TABLES if not t.array},
        warnings=tuple(_unique(warnings)),
        rewrites=tuple(_unique(r for rs in rewrites.values() for r in rs)),
        summaries=tuple(summaries(rewrites, source)), origins=origins)
    check(config, source)
    return config


class Stories:
    """Story files named by one config, relative to it, each read once per
    load whatever number of chains share it; with a _Turn, a file whose
    bytes did not change since the last load keeps its Story."""

    def __init__(self, path: Path, source: str, turn: _Turn | None = None) -> None:
        self.path = path
        self.source = source
        self.turn = turn
        self._read: dict[tuple[str, str | None], tuple[str, story.Story]] = {}
        self._named: dict[tuple[str, str | None], tuple[str, story.Story]] = {}

    def read(self, file: str, suffix: str | None) -> tuple[str, story.Story]:
        got = self._named.get((file, suffix))  # as written: no path work per chain
        if got is not None:
            return got
        shown = str(Path(self.source).parent / file)
        key = (os.path.normpath(self.path.parent / file), suffix)
        if key not in self._read:
            if self.turn is None:
                told = story.read(self.path.parent / file, shown, suffix)
            else:
                data = files.read_bytes(self.path.parent / file, shown, "story")
                told = self.turn.story(key, data, lambda: story.parse_bytes(data, shown,
                                                                            suffix))
            self._read[key] = shown, told
        self._named[(file, suffix)] = self._read[key]
        return self._read[key]


def secrets(path: Path, source: str) -> ReadSecret:
    """Reads a [[tsig]] secret_file, relative to the config (tsig.read_secret
    refuses one others may read)."""
    return lambda file: read_secret(path.parent / file, str(Path(source).parent / file))


def tsig_keys(tables: Mapping[str, Any], at: settings.At, read_secret: ReadSecret
              ) -> tuple[tuple[TsigKey, ...], tuple[Secondary, ...]]:
    """The [[tsig]] keys, each name once, with their secrets read, and the
    [[secondary]] servers as notify.py takes them: every key that [dns]
    transfer_keys or a secondary names must be a declared one."""
    keys: dict[str, TsigKey] = {}
    for i, t in enumerate(tables["tsig"]):
        if t.name in keys:
            raise ConfigError(f"{at('tsig', i, 'name')}: key {t.name!r} is declared twice "
                              f"(first at {keys[t.name].where})")
        keys[t.name] = TsigKey(t.name, t.algorithm, read_secret(t.secret_file), t.where)

    def known(name: str, where: str) -> None:
        if name not in keys:
            raise ConfigError(f"{where}: TSIG key {name!r} is not declared in a [[tsig]]")

    for k, name in enumerate(tables["dns"].transfer_keys):
        known(name, at("dns", None, "transfer_keys", k))
    secondaries = []
    for i, s in enumerate(tables["secondary"]):
        if s.key is not None:
            known(s.key, at("secondary", i, "key"))
        secondaries.append(Secondary(*s.address, s.key))
    return tuple(keys.values()), tuple(secondaries)


def _chain_of(t: ChainTable, i: int, at: settings.At, source: str, read_story: ReadStory,
              turn: _Turn | None) -> tuple[Chain, str, story.Story | None]:
    """chain_of, or what the last load made of the same table and Story."""
    if turn is None or t.story is None or t.hops is not None or t.hop is not None:
        return chain_of(t, i, at, source, read_story)
    told = read_story(t.story, t.suffix)[1]
    return turn.chain(t, told, lambda: chain_of(t, i, at, source, read_story))


def chain_of(t: ChainTable, i: int, at: settings.At, source: str,
             read_story: ReadStory) -> tuple[Chain, str, story.Story | None]:
    """One checked [[chain]] as a Chain, and its story (None without one)
    with the name of the file it was written in."""
    if t.story is not None and t.hops is not None:
        raise ConfigError(f"{at('chain', i, 'hops')}: a chain takes story = FILE or "
                          "hops = [...], not both")
    told, shown = None, source
    if t.story is not None:
        shown, told = read_story(t.story, t.suffix)
    elif t.hops is not None:
        pairs = [(at("chain", i, "hops", k), line) for k, line in enumerate(t.hops)]
        told = story.parse_lines(pairs, t.suffix)
        if not told.hops:
            raise ConfigError(f"{at('chain', i, 'hops')}: hops is empty")
    hops = told.hops if told is not None else ()
    if t.hop is not None:
        hops = hop_tables(t.hop, at("chain", i, "hop"), hops)
    chapters = chapters_of(t, at("chain", i, "chapters"))
    try:
        chain = Chain(t.address, hops, t.reply_ttl, t.where, t.suffix, t.props, t.name,
                      chapters)
    except UsageError as e:
        raise ConfigError(str(e)) from None
    if chain.name is not None and chain.destination is None:
        raise ConfigError(f"{at('chain', i, 'name')}: the chain has no hop after its host "
                          "to name")
    return chain, shown, told


def chapters_of(t: ChainTable, where: str) -> tuple[Chapter, ...]:
    """A [[chain]]'s `chapters = { LABEL = HOP, ... }`, in the order
    written: each LABEL one DNS label (kept in lower case, as `name`), each
    HOP an integer (Chain checks it against the chain's length)."""
    if t.chapters is None:
        return ()
    if t.name is None:
        raise ConfigError(f"{where}: chapters need the chain's name: each chapter is "
                          "LABEL.NAME")
    out, seen = [], set()
    for label, start in t.chapters.items():
        low = label.lower()
        if not story.host_name_ok(low) or "." in low:
            raise ConfigError(f"{where}: chapter {label!r} is not one DNS label (letters, "
                              f"digits and inner '-', at most {story.MAX_LABEL})")
        if len(f"{low}.{t.name}") > story.MAX_NAME:
            raise ConfigError(f"{where}: chapter name {low}.{t.name} is longer than "
                              f"{story.MAX_NAME} characters")
        if low in seen:
            raise ConfigError(f"{where}: chapter {label!r} is given twice")
        if not isinstance(start, int) or isinstance(start, bool):
            raise ConfigError(f"{where}: chapter {label!r} = {start!r}: write the hop it "
                              "starts at, an integer")
        seen.add(low)
        out.append(Chapter(low, start, where))
    return tuple(out)


def hop_tables(tables: dict, where: str, hops: tuple) -> tuple:
    """`[chain.hop.N]` tables (a table, as the walk checked): properties for
    hop N of the story."""
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


def summaries(rewrites: Mapping[str, list[str]], source: str) -> list[str]:
    """One line per file whose lines were rewritten into host names,
    however many chains share it (#13: quiet logs)."""
    out = []
    for shown, lines in rewrites.items():
        numbers = {r.split(": ", 1)[0] for r in lines}
        if numbers:
            out.append(f"{shown}: {len(numbers)} story lines rewritten into host names; "
                       f"`route-chain preview --config {source}` shows each")
    return out


# --- rules between settings -----------------------------------------------

def chains_apart(config: Config, source: str | None) -> None:
    """Chains must not share an address: each packet belongs to one chain."""
    try:
        check_overlap(config.chains)
    except UsageError as e:
        if source is None:
            raise
        raise ConfigError(f"{source}: {e}") from None


def zone_names_fit(config: Config, source: str | None) -> None:
    """The names every zone carries (NS, SOA mname and rname, defaults
    included) must fit DNS: 255 octets on the wire, MAX_NAME characters
    as text (RFC 1035 2.3.4). Checked here so that preview, zone, start
    and reload refuse the same files."""
    dns, chains = config.dns, config.chains
    where = dns.where or next((c.where for c in chains if c.suffix), source or "command line")
    ns, mname, rname = dns.names(chains)
    for what, name in [("NS name", n) for n in ns] + [("SOA mname", mname),
                                                     ("SOA rname", rname)]:
        if len(name) > story.MAX_NAME:
            raise ConfigError(
                f"{where}: the {what} {story.short(name)!r} is {len(name)} characters, "
                f"DNS holds at most {story.MAX_NAME}: set [dns] ns, soa_mname and "
                "soa_rname, or shorten the chain's suffix")


def chapter_names_apart(config: Config, source: str | None) -> None:
    """A chapter's name (LABEL.NAME) is a record in NAME's zone: a chain
    whose own name is the same would be a zone below it, and its records
    would hide the chapter's."""
    names = {c.name: c for c in config.chains if c.name is not None}
    for chain in config.chains:
        for chapter in chain.chapters:
            other = names.get(f"{chapter.label}.{chain.name}")
            if other is not None:
                raise ConfigError(f"{chapter.where}: chapter {chapter.label}.{chain.name} is "
                                  f"also the name of the chain at {other.where}")


def ipv6_mtu(config: Config, source: str | None) -> None:
    """An IPv6 chain needs the TUN's MTU at RFC 8200's minimum or more."""
    mtu = config.daemon.mtu
    if mtu is not None and mtu < MIN_MTU6 and any(c.family == 6 for c in config.chains):
        said = config.origins.get("daemon.mtu", f"mtu {mtu}")
        raise UsageError(f"{said}: IPv6 chains need an MTU of at least {MIN_MTU6}")


def dnssec_refresh_before_expiry(config: Config, source: str | None) -> None:
    """[dnssec] refresh must be less than validity, or every signature is
    due again as soon as it is made."""
    s = config.dnssec
    if s.refresh < s.validity:
        return
    why = "or every signature is due again as soon as it is made"
    if "dnssec.refresh" in config.origins or "dnssec.validity" not in config.origins:
        said = config.origins.get("dnssec.refresh", f"[dnssec] refresh {s.refresh}")
        raise ConfigError(f"{said} must be less than validity {s.validity}, {why}")
    raise ConfigError(f"{config.origins['dnssec.validity']} must be more than refresh "
                      f"{s.refresh} (the default), {why}")


# Run in this order by load and by merge; each raises naming the setting.
CHECKS = (chains_apart, zone_names_fit, chapter_names_apart, ipv6_mtu,
          dnssec_refresh_before_expiry)


def check(config: Config, source: str | None = None) -> None:
    """Every rule between settings; `source` names the file when loading one."""
    for rule in CHECKS:
        rule(config, source)


def merge(cli: Config, file: Config) -> Config:
    """Command-line chains and routes first, then the file's; a [table]
    setting the command line gave overrides the file's. Then CHECKS."""
    tables = {}
    for t in settings.TABLES:
        if not t.array:
            given = getattr(cli, t.name)
            tables[t.name] = replace(getattr(file, t.name), **{
                s.key: s.of(given) for s in t.settings if s.flag and s.of(given) is not None})
    merged = Config(
        chains=cli.chains + file.chains,
        routes=cli.routes + file.routes,
        warnings=cli.warnings + file.warnings,
        path=file.path if file.path is not None else cli.path,
        keys=file.keys, secondaries=file.secondaries,
        rewrites=cli.rewrites + file.rewrites,
        summaries=cli.summaries + file.summaries,
        origins={**file.origins, **cli.origins},
        **tables)
    check(merged)
    return merged


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
