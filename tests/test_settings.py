"""The settings schema (routechain.settings): the command line and the TOML
file take the same values for every setting they share, because both
check through one declaration. Each value below goes through argparse
(cli.run_parser) and through config.load, and both must agree."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from routechain import cli, config, hopprops, settings, story
from routechain.errors import ConfigError, UsageError

SHARED = [s for s in settings.SETTINGS if s.flag]

# Text values for the string settings: some good, some bad.
TEXTS = {
    ("daemon", "interface"): ["rc0", "a/b", "x" * 15, "x" * 16, "", "a b", ".."],
    ("daemon", "assign"): ["address", "route", "Route", "", "addresses"],
    ("route", "prefix"): ["2001:db8::/48", "198.19.0.0/16", "198.19.0.1/16", "banana",
                          "0.0.0.0/0", "::/0", "10.0.0.0/8"],
}


def values(s: settings.Setting) -> list:
    if s.kind == "int":
        return [s.low - 1, s.low, s.low + 1, s.high - 1, s.high, s.high + 1]
    return TEXTS[(s.table, s.key)]


def toml_literal(value) -> str:
    return str(value) if isinstance(value, int) else f'"{value}"'


def from_file(tmp_path: Path, s: settings.Setting, value) -> object:
    head = {"daemon": "[daemon]\n", "route": '[[route]]\nprefix = "2001:db8::/48"\n',
            "chain": '[[chain]]\naddress = "198.18.0.1/24"\n'}[s.table]
    if s.table == "route" and s.key == "prefix":
        head = "[[route]]\n"
    path = tmp_path / "rc.toml"
    path.write_text(f"{head}{s.key} = {toml_literal(value)}\n")
    loaded = config.load(path)
    return {"daemon": lambda: getattr(loaded.daemon, s.key),
            "route": lambda: getattr(loaded.routes[0], s.key),
            "chain": lambda: getattr(loaded.chains[0], s.key)}[s.table]()


def from_command_line(s: settings.Setting, value) -> object:
    args = cli.run_parser().parse_args([s.flag, str(value), "198.18.0.1/24"])
    got = getattr(args, s.flag.lstrip("-").replace("-", "_"))
    return got[0] if isinstance(got, list) else got


CASES = [(s, v) for s in SHARED for v in values(s)]


@pytest.mark.parametrize("setting,value", CASES,
                         ids=[f"{s.flag}={v}" for s, v in CASES])
def test_settings_command_line_and_file_agree(tmp_path, setting, value):
    results = []
    for source in (lambda: from_file(tmp_path, setting, value),
                   lambda: from_command_line(setting, value)):
        try:
            results.append(("ok", source()))
        except UsageError as e:
            results.append(("refused", str(e).split(": ", 1)[1] if ": " in str(e) else str(e)))
    (file_verdict, file_value), (cli_verdict, cli_value) = results
    assert file_verdict == cli_verdict, results
    if file_verdict == "ok":
        assert file_value == cli_value
    else:
        # Same reason, whatever the `where` in front of it.
        assert file_value.split(": ")[-1] == cli_value.split(": ")[-1], results


def test_settings_every_int_range_is_checked_at_both_ends():
    for s in settings.SETTINGS:
        if s.kind == "int":
            assert s.low is not None and s.high is not None and s.low < s.high, s


def test_settings_loader_knows_exactly_the_declared_keys(tmp_path):
    for table in settings.TABLES:
        path = tmp_path / "rc.toml"
        path.write_text(f"[{'[' if table.array else ''}{table.name}"
                        f"{']' if table.array else ''}]\nnot_a_key = 1\n")
        with pytest.raises(UsageError) as info:
            config.load(path)
        listed = str(info.value).split("expected one of ", 1)[1]
        assert listed == ", ".join(sorted(set(settings.keys(table.name)) | table.more)), info.value


def test_settings_help_says_what_each_option_means():
    text = cli.run_parser().format_help()
    for s in SHARED:
        assert s.flag in text and s.name in text, s


def test_settings_queues_is_the_tun_limit():
    """The TUN takes the most queues the setting allows, and refuses one more."""
    from routechain import tun
    high = settings.setting("daemon", "queues").high
    with pytest.raises(UsageError, match=f"bad queue count {high + 1}: 1..{high}$"):
        tun.Tun("rc-test", high + 1)


# (kind, low, high, TOML value, checked value or the refusal's words)
KIND_CASES = [
    ("int", 1, 5, 3, 3), ("int", 1, 5, 6, "x.k = 6 is not in 1..5"),
    ("int", 1, 5, True, "x.k must be an integer, not True"),
    ("int", 1, 5, 2.0, "x.k must be an integer, not 2.0"),
    ("float", 0.0, 1.0, 0.25, 0.25), ("float", 0.0, 1.0, 1, 1),
    ("float", 0.0, 1.0, 1.5, "x.k = 1.5 is not in 0.0..1.0"),
    ("float", 0.0, 1.0, "0.5", "x.k must be a number, not '0.5'"),
    ("bool", None, None, False, False), ("bool", None, None, 0, "x.k must be true or false"),
    ("str", None, None, "a", "a"), ("str", None, None, 1, "x.k must be a string, not 1"),
    ("strings", None, None, "a", ("a",)), ("strings", None, None, ["a", "b"], ("a", "b")),
    ("strings", None, None, ["a", 2], "x.k must hold strings, not 2"),
    ("table", None, None, {"a": 1}, {"a": 1}), ("table", None, None, [1], "x.k must be a table"),
]


@pytest.mark.parametrize("kind,low,high,value,expected", KIND_CASES)
def test_settings_kinds_check_toml_values(kind, low, high, value, expected):
    """What a helper adding a key (a [limits] rate, a [metrics] listen, a
    per-hop table) gets from declaring its kind and range."""
    s = settings.Setting("x", "k", kind, "a test key", low, high)
    if isinstance(expected, str) and expected.startswith("x.k"):  # a refusal
        with pytest.raises(UsageError) as info:
            s.from_toml(value, "f.toml:3", lambda k: f"f.toml:{4 + k}")
        assert str(info.value).startswith("f.toml:") and expected in str(info.value)
    else:
        assert s.from_toml(value, "f.toml:3") == expected


def test_settings_unknown_kind_is_a_programming_error():
    with pytest.raises(AssertionError):
        settings.Setting("x", "k", "colour", "a test key")


# --- the walk, with dicts: no file, no story, no locator ---------------------

def at(table=None, index=None, key=None, element=None) -> str:
    """A locator for trees without text: the path of what is named, as
    "f.toml:table.index.key.element" (a file's locator gives its line)."""
    return "f.toml:" + ".".join(str(p) for p in (table, index, key, element) if p is not None)


# (tree, (table, what it must hold) or the refusal's whole message)
WALK = [
    ({}, ("daemon", settings.Daemon())),
    ({}, ("dns", settings.DnsSettings())),
    ({}, ("limits", settings.Limits(rate=20000, source_rate=1000))),
    ({}, ("route", ())),
    ({"daemon": {"queues": 2, "mtu": 1400}}, ("daemon", settings.Daemon(queues=2, mtu=1400))),
    ({"daemon": {"queues": 0}}, "f.toml:daemon.queues: daemon.queues = 0 is not in 1..256"),
    ({"daemon": {"queues": "2"}}, "f.toml:daemon.queues: daemon.queues must be an integer, "
                                  "not '2'"),
    ({"daemon": {"interface": "a/b"}}, "f.toml:daemon.interface: bad interface name 'a/b': "
                                       "1 to 15 bytes, no '/' or white space"),
    ({"daemon": {"colour": "red"}}, "f.toml:daemon.colour: unknown key 'colour' in [daemon]: "
                                    "expected one of assign, interface, mtu, proxy_uplinks, queues, "
                                    "route_metric, route_protocol, route_table, txqueuelen"),
    ({"deamon": {}}, "f.toml:deamon: unknown table or key 'deamon': expected one of chain, "
                     "daemon, dns, dnssec, limits, metrics, registry, route, secondary, tsig"),
    ({"daemon": 3}, "f.toml:daemon: daemon must be a table [daemon]"),
    ({"route": {"prefix": "192.0.2.0/24"}}, "f.toml:route: route must be an array of tables "
                                            "[[route]]"),
    ({"route": [{"table": 5}]}, "f.toml:route.0: [[route]] needs a prefix"),
    ({"route": [{"prefix": "192.0.2.0/24", "table": 5}]},
     ("route", (settings.Route(ipaddress.ip_network("192.0.2.0/24"), 5, None,
                               "f.toml:route.0"),))),
    ({"route": [{"prefix": "192.0.2.0/24"}, {"prefix": "192.0.2.1/24"}]},
     "f.toml:route.1.prefix: bad route prefix '192.0.2.1/24': 192.0.2.1/24 has host bits set"),
    ({"chain": [{"story": "s.txt"}]},
     'f.toml:chain.0: [[chain]] needs an address, e.g. "172.20.0.1/27"'),
    ({"chain": [{"address": "192.0.2.1/24", "suffix": "a_b.net"}]},
     "f.toml:chain.0.suffix: suffix 'a_b.net' is not a host name (labels of letters, "
     "digits and inner '-', at most 63 each)"),
    ({"chain": [{"address": "192.0.2.1/24", "hops": ["a", 3]}]},
     "f.toml:chain.0.hops.1: chain.hops must hold strings, not 3"),
    ({"chain": [{"address": "192.0.2.1/24", "hop": 3}]},
     "f.toml:chain.0.hop: chain.hop must be a table, not 3"),
    ({"chain": [{"address": "192.0.2.1/24", "loss": 5}]},
     'f.toml:chain.0.loss: loss 5: write it as text with its unit, the same as in a story '
     'line: loss = "5%"'),
    ({"chain": [{"address": "192.0.2.1/24", "hops": "a", "jitter": "2ms", "suffix": "x.net."}]},
     ("chain", (settings.ChainTable(ipaddress.ip_interface("192.0.2.1/24"), hops=("a",),
                                    suffix="x.net",
                                    props=hopprops.Props(jitter_us=2000),
                                    where="f.toml:chain.0"),))),
    ({"dns": {"listen": ["127.0.0.1:5353", "x"]}},
     "f.toml:dns.listen.1: bad listen address 'x': write ADDR:PORT or [ADDR6]:PORT"),
    ({"dns": {"listen": "[::1]", "ns": ["ns1.example.net."], "soa_rname": "h@example.net",
              "rate_limit": 5}},
     ("dns", settings.DnsSettings(listen=(("::1", 53),), ns=("ns1.example.net",),
                                  soa_rname="h.example.net", rate_limit=5))),
    ({"dns": {"ns": ["bad name"]}}, "f.toml:dns.ns.0: ns 'bad name' is not a host name"),
    ({"dns": {"soa_rname": "first.last@example.net"}},
     "f.toml:dns.soa_rname: soa_rname 'first.last@example.net': a mailbox with a dot before "
     "'@' cannot be written as a plain name"),
    ({"dns": {"ttl": 2**31}}, "f.toml:dns.ttl: dns.ttl = 2147483648 is not in 0..2147483647"),
    ({"limits": {"rate": "off", "source_rate": 0, "seed": 3}},
     ("limits", settings.Limits(rate=None, source_rate=None, seed=3))),
    ({"limits": {"rate": " 50 / s "}}, ("limits", settings.Limits(rate=50))),
    ({"limits": {"rate": "5 per s"}},
     "f.toml:limits.rate: limits.rate '5 per s': write a rate, e.g. \"20000/s\", or \"off\""),
    ({"limits": {"source_rate": "20000000/s"}},
     "f.toml:limits.source_rate: limits.source_rate '20000000/s' is not in 0..10000000/s"),
    ({"metrics": {"listen": "127.0.0.1:9850"}},
     ("metrics", settings.Metrics(listen=("127.0.0.1", 9850)))),
    ({"metrics": {"listen": "::1"}},
     "f.toml:metrics.listen: bad metrics listen address '::1': write ADDR:PORT or "
     "[ADDR6]:PORT"),
]


@pytest.mark.parametrize("tree,expected", WALK, ids=[str(t)[:60] for t, _ in WALK])
def test_settings_walk_checks_and_fills_each_table(tree, expected):
    if isinstance(expected, str):
        with pytest.raises(ConfigError) as info:
            settings.walk(tree, at)
        assert str(info.value) == expected
    else:
        name, value = expected
        assert settings.walk(tree, at)[0][name] == value


def test_settings_walk_says_where_each_table_value_was_given():
    _, origins = settings.walk({"daemon": {"mtu": 1400}, "dns": {"ttl": 60}}, at)
    assert origins == {"daemon.mtu": "f.toml:daemon.mtu: mtu 1400",
                       "dns.ttl": "f.toml:dns.ttl: ttl 60"}


def test_settings_walk_fills_every_declared_key_and_nothing_else():
    """Each declared setting of a [table] lands in its own field: a value
    off its default in every one, read back by the setting's name."""
    for t in settings.TABLES:
        if t.array:
            continue
        # An int with a parse takes only some numbers in its range (dnssec
        # algorithm: 13 or 15), its highest among them.
        given = {s.key: s.high if s.parse else s.default + 1 for s in t.settings
                 if s.kind == "int" and s.default is not None}
        filled = settings.walk({t.name: given}, at)[0][t.name]
        assert {k: getattr(filled, k) for k in given} == given, t.name


# --- the build, with dicts and stories beside ---------------------------------

def stories(texts: dict[str, str]):
    """A story reader over texts in memory, as config.Stories reads files."""
    def read(file: str, suffix: str | None):
        return file, story.parse_text(texts[file], file, suffix)
    return read


BUILD = [
    ({"chain": [{"address": "192.0.2.1/24", "story": "s.txt", "suffix": "x.net"}]},
     {"s.txt": "one\ntwo\n"}, None),
    ({"chain": [{"address": "192.0.2.1/24", "story": "s.txt", "hops": ["a"]}]}, {},
     "f.toml:chain.0.hops: a chain takes story = FILE or hops = [...], not both"),
    ({"chain": [{"address": "192.0.2.1/24", "hops": []}]}, {}, "f.toml:chain.0.hops: hops is "
                                                               "empty"),
    ({"chain": [{"address": "192.0.2.1/30", "hops": ["a", "b", "c"]}]}, {},
     "f.toml:chain.0: 3 hops do not fit after 192.0.2.1/30: the prefix has room for 1"),
    ({"chain": [{"address": "192.0.2.1/24", "hops": ["a"], "hop": {"2": {"mtu": 1400}}}]}, {},
     "f.toml:chain.0.hop: [chain.hop.2]: the chain has hops 1..1"),
    ({"chain": [{"address": "192.0.2.1/24"}, {"address": "192.0.2.129/25"}]}, {},
     "f.toml: chains overlap: 192.0.2.1/24 (f.toml:chain.0) and 192.0.2.129/25 "
     "(f.toml:chain.1)"),
    ({"daemon": {"mtu": 1000}, "chain": [{"address": "2001:db8::1/64"}]}, {},
     "f.toml:daemon.mtu: mtu 1000: IPv6 chains need an MTU of at least 1280"),
    ({"chain": [{"address": "192.0.2.1/24", "suffix": "a" * 63 + "." + "b" * 63 + "." +
                 "c" * 63 + "." + "d" * 60}]}, {},
     "f.toml:chain.0: the NS name 'ns.aaaaaaaaaa"),
]


@pytest.mark.parametrize("tree,texts,error", BUILD, ids=[str(t)[:60] for t, _, _ in BUILD])
def test_settings_build_reads_stories_beside_and_checks_across_tables(tree, texts, error):
    if error is None:
        built = config.build(tree, at, "f.toml", stories(texts))
        assert [h.name for h in built.chains[0].hops] == ["one.x.net", "two.x.net"]
        return
    with pytest.raises(UsageError) as info:
        config.build(tree, at, "f.toml", stories(texts))
    assert str(info.value).startswith(error), info.value


SECRETS = {"a.key": bytes(range(32)), "b.key": bytes(range(32, 64))}
KEYED = {"dns": {"transfer": ["192.0.2.0/24"], "transfer_keys": ["A."]},
         "tsig": [{"name": "a", "secret_file": "a.key"},
                  {"name": "b", "algorithm": "HMAC-SHA512", "secret_file": "b.key"}],
         "secondary": [{"address": "192.0.2.53", "key": "b"}, {"address": "[2001:db8::1]:5300"}],
         "chain": [{"address": "192.0.2.1/24", "hops": ["x"], "name": "Story.Example.NET."}]}


def keyed(**change) -> dict:
    return {**KEYED, **change}


@pytest.mark.parametrize("tree,error", [
    (keyed(), None),
    (keyed(dns={"transfer_keys": ["c"]}),
     "f.toml:dns.transfer_keys.0: TSIG key 'c' is not declared in a [[tsig]]"),
    (keyed(secondary=[{"address": "192.0.2.53", "key": "c"}]),
     "f.toml:secondary.0.key: TSIG key 'c' is not declared in a [[tsig]]"),
    (keyed(tsig=[{"name": "a", "secret_file": "a.key"}, {"name": "A", "secret_file": "b.key"}]),
     "f.toml:tsig.1.name: key 'a' is declared twice (first at f.toml:tsig.0)"),
    (keyed(tsig=[{"name": "a"}]), "f.toml:tsig.0: [[tsig]] needs a name and a secret_file"),
    (keyed(tsig=[{"name": "a", "secret_file": "a.key", "algorithm": "md5"}]),
     "f.toml:tsig.0.algorithm: unknown TSIG algorithm 'md5'"),
    (keyed(secondary=[{"key": "a"}]), "f.toml:secondary.0: [[secondary]] needs an address"),
    (keyed(chain=[{"address": "192.0.2.1/32", "name": "x.example"}]),
     "f.toml:chain.0.name: the chain has no hop after its host to name"),
    (keyed(chain=[{"address": "192.0.2.1/24", "hops": ["x"], "name": "2.0.192.in-addr.arpa"}]),
     "f.toml:chain.0.name: name '2.0.192.in-addr.arpa' is a reverse name"),
])
def test_settings_transfer_keys_read_beside_the_walk(tree, error):
    """[[tsig]] secrets come from the reader build() is given (no file);
    the keys transfers and secondaries name must be declared ones."""
    def read_secret(file: str) -> bytes:
        return SECRETS[file]
    if error is not None:
        with pytest.raises(ConfigError) as info:
            config.build(tree, at, "f.toml", stories({}), read_secret=read_secret)
        assert str(info.value).startswith(error), info.value
        return
    built = config.build(tree, at, "f.toml", stories({}), read_secret=read_secret)
    assert [(k.name, k.algorithm, k.secret, k.where) for k in built.keys] == [
        ("a", "hmac-sha256", SECRETS["a.key"], "f.toml:tsig.0"),
        ("b", "hmac-sha512", SECRETS["b.key"], "f.toml:tsig.1")]
    assert [(s.address, s.port, s.key) for s in built.secondaries] == [
        ("192.0.2.53", 53, "b"), ("2001:db8::1", 5300, None)]
    assert built.dns.transfer_keys == ("a",) and built.chains[0].name == "story.example.net"
    assert built.chains[0].destination is not None


# --- a setting declared once is a setting everywhere --------------------------

@settings.section("daemon", "the daemon, grown by one setting")
class Grown(settings.Daemon):
    backlog: int | None = settings.declare("int", "a setting only this test declares", None,
                                           1, 9, flag="--backlog", metavar="N", restart=True)


@pytest.fixture
def grown(monkeypatch):
    """settings.py as if [daemon] had one more declaration, and no other edit."""
    tables = tuple(Grown.TABLE if t.name == "daemon" else t for t in settings.TABLES)
    monkeypatch.setattr(settings, "TABLES", tables)
    monkeypatch.setattr(settings, "SETTINGS", tuple(s for t in tables for s in t.settings))


def test_settings_one_declaration_makes_key_flag_help_merge_and_restart(grown):
    from routechain import daemon
    backlog = settings.setting("daemon", "backlog")
    # the file
    assert settings.walk({"daemon": {"backlog": 3}}, at)[0]["daemon"].backlog == 3
    with pytest.raises(ConfigError, match=r"daemon.backlog = 10 is not in 1\.\.9"):
        settings.walk({"daemon": {"backlog": 10}}, at)
    # the command line and its help
    shown = " ".join(cli.run_parser().format_help().split())
    assert "--backlog N a setting only this test declares (config: daemon.backlog)" in shown
    args = cli.run_parser().parse_args(["--backlog", "4", "198.18.0.1/24"])
    from_cli = cli.command_line_config(args)
    assert from_cli.daemon.backlog == 4 and from_cli.origins["daemon.backlog"] == "--backlog 4"
    # the command line over the file, and the file where the command line is silent
    file = config.Config(daemon=Grown(backlog=3, mtu=1400))
    assert config.merge(from_cli, file).daemon == Grown(backlog=4, mtu=1400)
    assert config.merge(config.Config(daemon=Grown()), file).daemon.backlog == 3
    # a reload keeps it, and says so
    assert [s for s, _, _ in settings.restart_changes(from_cli, file)] == [backlog]
    assert daemon.Started.of(from_cli).kept(file) == [
        "daemon.backlog changes only at a restart: keeping 4, not 3"]


def test_settings_restart_only_are_the_declared_ones():
    assert {s.name for s in settings.SETTINGS if s.restart} == {
        "daemon.interface", "daemon.queues", "daemon.route_protocol", "dns.fast_path",
        "dns.listen", "limits.delay_pool", "limits.seed", "metrics.listen"}


RESTART = [
    # (running, reloaded to, what the reload keeps and says)
    (config.Config(), config.Config(), []),
    (config.Config(daemon=settings.Daemon(mtu=1400)), config.Config(), []),  # mtu reloads
    (config.Config(daemon=settings.Daemon(queues=2)), config.Config(daemon=settings.Daemon(
        queues=4)), ["daemon.queues changes only at a restart: keeping 2, not 4"]),
    (config.Config(dns=settings.DnsSettings(listen=(("::1", 53),))), config.Config(),
     ["dns.listen changes only at a restart: keeping [::1]:53, not none"]),
    (config.Config(limits=settings.Limits(seed=1, delay_pool=5)),
     config.Config(limits=settings.Limits(seed=2, delay_pool=5)),
     ["limits.seed changes only at a restart: keeping 1, not 2"]),
    (config.Config(), config.Config(metrics=settings.Metrics(listen=("127.0.0.1", 9850))),
     ["metrics.listen changes only at a restart: keeping the default, not 127.0.0.1:9850"]),
]


@pytest.mark.parametrize("running,wanted,kept", RESTART)
def test_settings_reload_keeps_restart_only_values(running, wanted, kept):
    from routechain import daemon
    assert daemon.Started.of(running).kept(wanted) == kept
