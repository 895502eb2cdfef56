"""The config file loader (routechain.config): every error names file:line
and the bad value."""

from __future__ import annotations

import ipaddress
import os
import time
import tomllib
from pathlib import Path

import pytest

from configfile import refusal, write
from routechain import config, files, settings
from routechain.chain import Chain, parse_prefix
from routechain.errors import ConfigError, UsageError

GOOD = """\
# a full config
[daemon]
interface = "rc0"
queues = 2
mtu = 1500

[[route]]
prefix = "2001:db8::/48"
table = 100
metric = 1024

[[chain]]
address = "192.0.2.1/27"
story = "story.txt"
suffix = "story.example.net"
reply_ttl = 60

[[chain]]
address = "2001:db8:5::1/64"
hops = [
  "Once upon a time,",   # a comment with "quotes" and [brackets]
  '*',
  \"\"\"the end\"\"\",
]

[dns]
listen = ["127.0.0.1:5353", "[::1]:5353", "192.0.2.1"]
ns = ["ns1.example.net", "ns2.example.net."]
soa_rname = "hostmaster@example.net"
ttl = 600
serial = 42
"""


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_config_loads_every_section(in_tmp):
    c = config.load(write(in_tmp, GOOD))
    assert (c.daemon.interface, c.daemon.queues, c.daemon.mtu) == ("rc0", 2, 1500)
    route, = c.routes
    assert route == config.Route(ipaddress.ip_network("2001:db8::/48"), 100, 1024,
                                 "route-chain.toml:7")
    v4, v6 = c.chains
    assert str(v4.interface) == "192.0.2.1/27" and v4.reply_ttl == 60
    assert v4.where == "route-chain.toml:12" and v4.suffix == "story.example.net"
    assert [h.name for h in v4.hops] == ["one.story.example.net", "two.story.example.net"]
    assert [h.where for h in v4.hops] == ["story.txt:1", "story.txt:2"]
    assert [(h.name, h.silent, h.where) for h in v6.hops] == [
        ("Once.upon.a.time", False, "route-chain.toml:21"),
        (None, True, "route-chain.toml:22"),
        ("the.end", False, "route-chain.toml:23")]
    assert c.dns.listen == (("127.0.0.1", 5353), ("::1", 5353), ("192.0.2.1", 53))
    assert c.dns.ns == ("ns1.example.net", "ns2.example.net")
    assert c.dns.soa_rname == "hostmaster.example.net"
    assert (c.dns.ttl, c.dns.serial, c.dns.refresh) == (600, 42, 3600)
    assert c.rewrites == (
        "story.txt:2: 'two,' becomes 'two'",
        "route-chain.toml:21: 'Once upon a time,' becomes 'Once.upon.a.time'",
        "route-chain.toml:23: 'the end' becomes 'the.end'")
    assert c.warnings == ()
    assert c.log_lines == (
        "story.txt: 1 story lines rewritten into host names; "
        "`route-chain preview --config route-chain.toml` shows each",
        "route-chain.toml: 2 story lines rewritten into host names; "
        "`route-chain preview --config route-chain.toml` shows each")
    assert c.path == Path("route-chain.toml")


def test_config_story_path_is_relative_to_the_file(tmp_path, monkeypatch):
    sub = tmp_path / "etc"
    sub.mkdir()
    write(sub, '[[chain]]\naddress = "192.0.2.1/24"\nstory = "story.txt"\n', "a b\n")
    monkeypatch.chdir(tmp_path)
    c = config.load(Path("etc/route-chain.toml"))
    assert c.chains[0].hops[0].where == "etc/story.txt:1"
    assert c.rewrites == ("etc/story.txt:1: 'a b' becomes 'a.b'",)


def test_config_empty_file_is_an_empty_config(in_tmp):
    c = config.load(write(in_tmp, "# nothing\n"))
    assert c.chains == () and c.dns == config.DnsSettings() and c.daemon.interface is None


def test_config_dns_without_listen_is_no_server(in_tmp):
    c = config.load(write(in_tmp, "[dns]\nttl = 60\n"))
    assert c.dns.listen == () and c.dns.ttl == 60


# (config text, expected message after "route-chain.toml:")
ERRORS = [
    ("[daemon]\nqueues = \"2\"\n", "2: daemon.queues must be an integer, not '2'"),
    ("[daemon]\nqueues = 0\n", "2: daemon.queues = 0 is not in 1..256"),
    ("[daemon]\nqueues = 1024\n", "2: daemon.queues = 1024 is not in 1..256"),
    ("[daemon]\nqueues = true\n", "2: daemon.queues must be an integer, not True"),
    ("[daemon]\nmtu = 40\n", "2: daemon.mtu = 40 is not in 68..65535"),
    ("[daemon]\ninterface = \"a/b\"\n", "2: bad interface name 'a/b'"),
    ("[daemon]\ninterface = \"much-too-long-name\"\n", "2: bad interface name"),
    ("[daemon]\ncolour = \"red\"\n", "2: unknown key 'colour' in [daemon]"),
    ("\n\n[deamon]\nqueues = 2\n", "3: unknown table or key 'deamon'"),
    ("title = \"x\"\n", "1: unknown table or key 'title'"),
    ("daemon = 3\n", "1: daemon must be a table"),
    ("[[route]]\nprefix = \"2001:db8::1/48\"\n", "2: bad route prefix '2001:db8::1/48'"),
    ("[[route]]\ntable = 5\n", "1: [[route]] needs a prefix"),
    ("[[route]]\nprefix = \"192.0.2.0/24\"\ntable = 0\n", "3: route.table = 0 is not in"),
    ("[[route]]\nprefix = \"192.0.2.0/24\"\n\n[[route]]\nprefix = \"bogus\"\n",
     "5: bad route prefix 'bogus'"),
    ("[[chain]]\nstory = \"story.txt\"\n", "1: [[chain]] needs an address"),
    ("[[chain]]\naddress = \"192.0.2.300/24\"\n", "2: bad address '192.0.2.300'"),
    ("[[chain]]\naddress = \"192.0.2.1/33\"\n", "2: bad prefix length '33'"),
    ("[[chain]]\naddress = \"192.0.2.1/24\"\nreply_ttl = 0\n",
     "3: chain.reply_ttl = 0 is not in 1..255"),
    ("[[chain]]\naddress = \"192.0.2.1/24\"\nsuffix = \"a_b.net\"\n",
     "3: suffix 'a_b.net' is not a host name"),
    ("[[chain]]\naddress = \"192.0.2.1/24\"\nstory = \"story.txt\"\nhops = [\"a\"]\n",
     "4: a chain takes story = FILE or hops = [...], not both"),
    ("[[chain]]\naddress = \"192.0.2.1/24\"\nhops = [\"a\", 3]\n",
     "3: chain.hops must hold strings, not 3"),
    ("[[chain]]\naddress = \"192.0.2.1/24\"\nhops = [\n  \"a\",\n  3,\n]\n",
     "5: chain.hops must hold strings, not 3"),
    ("[[chain]]\naddress = \"192.0.2.1/24\"\nhops = []\n", "3: hops is empty"),
    ("[[chain]]\naddress = \"192.0.2.1/24\"\nstory = \"nope.txt\"\n",
     "nope.txt: cannot read story"),
    ("[[chain]]\naddress = \"192.0.2.1/30\"\nhops = [\"a\", \"b\", \"c\"]\n",
     "1: 3 hops do not fit after 192.0.2.1/30: the prefix has room for 1"),
    ("[[chain]]\naddress = \"192.0.2.1/24\"\nweight = 3\n", "3: unknown key 'weight' in [chain]"),
    ("[[chain]]\naddress = \"192.0.2.1/24\"\n\n[[chain]]\naddress = \"192.0.2.129/25\"\n",
     "chains overlap: 192.0.2.1/24 (route-chain.toml:1) and 192.0.2.129/25 "
     "(route-chain.toml:4)"),
    ("[daemon]\nmtu = 1000\n[[chain]]\naddress = \"2001:db8::1/64\"\n",
     "2: mtu 1000: IPv6 chains need an MTU of at least 1280"),
    ("[dns]\nlisten = [\"127.0.0.1:53\",\n  \"localhost:53\"]\n",
     "3: bad listen address 'localhost:53'"),
    ("[dns]\nlisten = [\"127.0.0.1:99999\"]\n", "2: bad port in listen address"),
    ("[dns]\nlisten = [\"[::1]:0\"]\n", "2: bad port in listen address"),
    ("[dns]\nns = [\"ns1.example.net\", \"bad name\"]\n", "2: ns 'bad name' is not a host name"),
    ("[dns]\nttl = -1\n", "2: dns.ttl = -1 is not in"),
    ("[dns]\nserial = 4294967296\n", "2: dns.serial = 4294967296 is not in 0..4294967295"),
    ("[dns]\nsoa_rname = \"first.last@example.net\"\n", "2: soa_rname 'first.last@example.net'"),
    ("[dns]\nrecursion = true\n", "2: unknown key 'recursion' in [dns]"),
    ("dns.listen = [\"x\"]\n", "1: bad listen address 'x'"),
    ("[daemon]\nqueues = 2\nqueues = 3\n", "3: Cannot overwrite a value (column 11)"),
    ("[[chain]]\naddress = \"192.0.2.1/24\n", "2: Illegal character"),
    ("[dns]\nlisten = [\n", "3: "),
    ("[limits]\nrate = \"5 per s\"\n", "2: limits.rate '5 per s': write a rate"),
    ("[limits]\nrate = 500\n", "2: limits.rate 500: write a rate"),
    ("[limits]\n\nsource_rate = \"20000000/s\"\n", "3: limits.source_rate '20000000/s' is not in"),
    ("[limits]\nburst = 0\n", "2: limits.burst = 0 is not in 1..10000000"),
    ("[limits]\ndelay_pool = 2000000\n", "2: limits.delay_pool = 2000000 is not in"),
    ("[limits]\nsource = 5\n", "2: unknown key 'source' in [limits]"),
]


# ([limits] text, the Limits it gives): off only when written.
LIMITS = [
    ("", config.Limits(rate=20000, source_rate=1000)),
    ("[limits]\n", config.Limits(rate=20000, source_rate=1000)),
    ("[limits]\nrate = \"off\"\nsource_rate = 0\n", config.Limits(rate=None, source_rate=None)),
    ("[limits]\nrate = \"0/s\"\n", config.Limits(rate=None)),
    ("[limits]\nrate = \"50 / s\"\nburst = 5\nsource_burst = 7\ndelay_pool = 9\nseed = 3\n",
     config.Limits(rate=50, burst=5, source_burst=7, delay_pool=9, seed=3)),
]


@pytest.mark.parametrize("text,expected", LIMITS)
def test_config_limits(in_tmp, text, expected):
    assert config.load(write(in_tmp, text)).limits == expected


@pytest.mark.parametrize("text,expected", [
    ('[[chain]]\naddress = "192.0.2.1/27"\n', None),
    ('[[chain]]\naddress = "192.0.2.1/27"\nloss = "10%"\nrate = "5/s"\n', None),
    ('[[chain]]\naddress = "192.0.2.1/27"\ndelay = "10ms"\n', config.DELAY_TXQUEUELEN),
    ('[[chain]]\naddress = "192.0.2.1/27"\nhops = ["a", "b | delay=+3ms"]\n',
     config.DELAY_TXQUEUELEN),
    ('[[chain]]\naddress = "192.0.2.1/27"\nstep = "1ms"\n', config.DELAY_TXQUEUELEN),
    ('[daemon]\ntxqueuelen = 900\n[[chain]]\naddress = "192.0.2.1/27"\njitter = "1ms"\n', 900),
    ('[daemon]\ntxqueuelen = 900\n', 900),
])
def test_config_txqueuelen_is_short_where_replies_wait(in_tmp, text, expected):
    """A delay anywhere (not loss or a rate) shortens the queue, unless the
    config gives a length itself."""
    assert config.load(write(in_tmp, text)).txqueuelen == expected


def test_config_limits_defaults_resolve():
    """Bursts default to a second's worth, the pool to a second at the rate."""
    assert (config.Limits().global_burst, config.Limits().per_source_burst,
            config.Limits().pool) == (20000, 1000, 20000)
    off = config.Limits(rate=None, source_rate=None)
    assert (off.global_burst, off.per_source_burst, off.pool) == (None, None, 20000)


@pytest.mark.parametrize("text,message", ERRORS)
def test_config_error_names_file_line_and_value(in_tmp, text, message):
    path = write(in_tmp, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith("route-chain.toml:") or message.startswith("nope.txt")
    assert message in str(info.value)


def test_config_story_error_names_the_story_line(in_tmp):
    path = write(in_tmp, '[[chain]]\naddress = "192.0.2.1/24"\nstory = "story.txt"\n',
                 story="ok\n" + " ".join(["word"] * 60) + "\n")
    with pytest.raises(ConfigError, match=r"^story\.txt:2: name is 299 characters"):
        config.load(path)


def test_config_missing_file(in_tmp):
    with pytest.raises(ConfigError, match=r"^absent\.toml: cannot read config"):
        config.load(Path("absent.toml"))


def test_config_keys_inside_multiline_strings_are_not_keys(in_tmp):
    """A line inside a multi-line string that looks like a key must not move
    the line an error is reported at."""
    text = ('[[chain]]\naddress = "192.0.2.1/24"\nhops = ["""\nreply_ttl = 5\n""", "b"]\n'
            'reply_ttl = 900\n')
    with pytest.raises(ConfigError, match=r"^route-chain\.toml:6: chain\.reply_ttl = 900"):
        config.load(write(in_tmp, text))


def test_config_second_array_table_gets_its_own_lines(in_tmp):
    text = ('[[chain]]\naddress = "192.0.2.1/24"\nreply_ttl = 5\n\n'
            '[[chain]]\naddress = "198.51.100.1/24"\nreply_ttl = 300\n')
    with pytest.raises(ConfigError, match=r"^route-chain\.toml:7: chain\.reply_ttl = 300"):
        config.load(write(in_tmp, text))


def cli_config(*prefixes: str, **kw) -> config.Config:
    chains = tuple(Chain(parse_prefix(p), where="command line") for p in prefixes)
    return config.Config(chains=chains, **kw)


def test_config_merge_cli_first_and_overrides(in_tmp):
    file = config.load(write(in_tmp, GOOD))
    merged = config.merge(cli_config("198.51.100.1/24",
                                     daemon=config.Daemon(interface="cli0", mtu=9000)), file)
    assert [str(c.interface) for c in merged.chains] == [
        "198.51.100.1/24", "192.0.2.1/27", "2001:db8:5::1/64"]
    assert (merged.daemon.interface, merged.daemon.queues, merged.daemon.mtu) == ("cli0", 2, 9000)
    assert merged.dns == file.dns and merged.warnings == file.warnings
    assert merged.routes == file.routes


def test_config_merge_names_where_the_ipv6_mtu_was_given(in_tmp):
    """The MTU from the file, the IPv6 chain from the command line: the
    refusal names the file's line, not a --mtu nobody gave."""
    file = config.load(write(in_tmp, "[daemon]\nmtu = 1000\n"))
    with pytest.raises(UsageError) as info:
        config.merge(cli_config("2001:db8::1/64"), file)
    assert str(info.value) == ("route-chain.toml:2: mtu 1000: IPv6 chains need an MTU of at "
                               "least 1280")


def test_config_merge_refuses_overlap(in_tmp):
    file = config.load(write(in_tmp, GOOD))
    with pytest.raises(UsageError, match=r"chains overlap: 192\.0\.2\.0/24 \(command line\) "
                                         r"and 192\.0\.2\.1/27 \(route-chain\.toml:12\)"):
        config.merge(cli_config("192.0.2.0/24"), file)


@pytest.mark.parametrize("text,expected", [
    ("192.0.2.1:53", ("192.0.2.1", 53)), ("[2001:db8::1]:5353", ("2001:db8::1", 5353)),
    ("2001:db8::1", ("2001:db8::1", 53)), ("[::1]", ("::1", 53)),
    ("198.51.100.7", ("198.51.100.7", 53)),
])
def test_config_parse_listen(text, expected):
    assert settings.parse_listen(text, "x") == expected


def test_config_environment_untouched(in_tmp):
    """Loading reads files only: no listening, no environment changes."""
    before = dict(os.environ)
    config.load(write(in_tmp, GOOD))
    assert dict(os.environ) == before


# --- #8: what a hostile or unlucky file meets --------------------------------

CHAIN_ERRORS = [
    ("0.0.0.0/0", "a /0"), ("10.1.2.3/0", "a /0"), ("224.0.0.1/24", "a multicast"),
    ("127.0.0.2/8", "loopback"), ("fe80::1%eth0/64", "link-local"),
    ("2001:db8::1%eth0/64", "a scoped address"), ("::/64", "the unspecified"),
    ("0.0.0.0/24", "the unspecified"), ("ff02::1/64", "a multicast"),
    ("169.254.1.1/16", "link-local"), ("192.0.2.255/24", "the broadcast address"),
]


@pytest.mark.parametrize("address,why", CHAIN_ERRORS)
def test_config_refuses_chains_that_can_never_answer(in_tmp, address, why):
    path = write(in_tmp, f'\n[[chain]]\naddress = "{address}"\n')
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith(f"route-chain.toml:3: {address} cannot be a chain: {why}")


def test_config_queues_in_file_is_what_the_tun_allows(in_tmp):
    from routechain import tun
    assert config.load(write(in_tmp, f"[daemon]\nqueues = {tun.MAX_QUEUES}\n")).daemon.queues == 256


class _Alarm(Exception):
    pass


@pytest.fixture
def within_5s():
    """Fail, rather than hang the suite, if a read blocks."""
    import signal

    def ring(*_):
        raise _Alarm("blocked for 5 s")
    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _special(kind: str, where: Path) -> Path:
    import socket
    if kind == "fifo":
        os.mkfifo(where)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(where))
        s.listen()
        _special.keep = s
    elif kind == "directory":
        where.mkdir()
    else:
        return Path(kind)  # a device path
    return where


SPECIAL = [("fifo", "a FIFO"), ("socket", "cannot read"), ("directory", "a directory"),
           ("/dev/zero", "a character device"), ("/dev/urandom", "a character device"),
           ("/dev/null", "a character device")]


@pytest.mark.parametrize("kind,message", SPECIAL)
def test_config_story_must_be_a_regular_file(in_tmp, within_5s, kind, message):
    """A FIFO would block the reader until a writer comes (a reload would
    hang the main thread); a device never ends."""
    story = _special(kind, in_tmp / "special")
    path = write(in_tmp, f'[[chain]]\naddress = "192.0.2.1/24"\nstory = "{story}"\n')
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert f"{story.name}: cannot read story" in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize("kind,message", SPECIAL)
def test_config_file_must_be_a_regular_file(in_tmp, within_5s, kind, message):
    path = _special(kind, in_tmp / "special.toml")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith(f"{path}: cannot read config")
    assert message in str(info.value)


@pytest.mark.parametrize("what", ["config", "story"])
def test_config_files_are_read_up_to_1_mib(in_tmp, what):
    from routechain.files import MAX_FILE_BYTES
    assert MAX_FILE_BYTES == 1 << 20
    body = '[[chain]]\naddress = "192.0.2.1/24"\nstory = "story.txt"\n'
    story = "one\n"
    for size, ok in ((MAX_FILE_BYTES, True), (MAX_FILE_BYTES + 1, False)):
        if what == "config":
            text = body + "#" * (size - len(body) - 1) + "\n"
        else:
            text = body
            line = "#" * 999 + "\n"
            rest = size - 4
            story = "one\n" + line * (rest // 1000) + "#" * (rest % 1000 - 1) + "\n"
        path = write(in_tmp, text, story)
        assert (Path(path).stat().st_size if what == "config"
                else (in_tmp / "story.txt").stat().st_size) == size
        if ok:
            assert len(config.load(path).chains[0].hops) == 1
        else:
            with pytest.raises(ConfigError, match=f"{what} file is larger than 1 MiB"):
                config.load(path)


@pytest.mark.parametrize("text,line,message", [
    ("\nx = " + "[" * 3000 + "]" * 3000 + "\n", 2, "nested 3000 levels deep"),
    ("x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n", 1, "nested 3000 levels deep"),
    ("[dns]\n" + "a" + ".a" * 100_000 + " = 1\n", 2, "a dotted key of 100001 parts"),
    ("[" + "a." * 100 + "b]\n", 1, "a dotted key of 101 parts"),
])
def test_config_shape_is_bounded_before_tomllib(in_tmp, text, line, message):
    """tomllib recurses per nesting level (RecursionError) and is quadratic
    in the parts of a dotted key (100,000 parts: minutes and gigabytes):
    both are refused first, at once, with the line."""
    path = write(in_tmp, text)
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert time.monotonic() - start < 1.0
    assert str(info.value).startswith(f"route-chain.toml:{line}: {message}")


def test_config_story_line_length_is_capped(in_tmp):
    from routechain.story import MAX_LINE
    story = "ok\n" + "é" * (MAX_LINE + 1) + "\n"
    path = write(in_tmp, '[[chain]]\naddress = "192.0.2.1/24"\nstory = "story.txt"\n', story)
    with pytest.raises(ConfigError, match=rf"^story\.txt:2: line is {MAX_LINE + 1} characters"):
        config.load(path)


@pytest.mark.parametrize("count", [300, 1000])
def test_config_long_non_ascii_word_is_linear(in_tmp, count):
    """A word of CJK letters is split into A-labels in linear time (it was
    cubic: 300 letters took 6 s, 1,000 more than two minutes)."""
    word = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(count))
    path = write(in_tmp, '[[chain]]\naddress = "192.0.2.1/24"\nstory = "story.txt"\n',
                 word + "\n")
    start = time.process_time()
    with pytest.raises(ConfigError, match=r"story\.txt:1: name is (more than )?\d+ characters"):
        config.load(path)
    assert time.process_time() - start < 1.0


def test_config_split_of_long_non_ascii_word_fits_labels():
    from routechain import story
    word = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(40))
    hop, = story.parse_lines([("s:1", word)]).hops
    labels = hop.name.split(".")
    assert len(labels) > 1 and story.host_name_ok(hop.name)
    assert "".join(lbl.encode().decode("idna") for lbl in labels) == word


def test_config_thousands_of_chains_load_in_linear_time(in_tmp):
    """The loader's own work (scanner, tomllib, stories) per 1,000 chains
    stays well under a second (the overlap check is measured on its own)."""

    def text(n: int) -> str:
        return "".join(f'[[chain]]\naddress = "2001:db8:{i:x}::1/64"\n'
                       f'hops = ["hop one", "two"]\nsuffix = "example.net"\n\n' for i in range(n))
    times = []
    for n in (500, 2000):
        path = write(in_tmp, text(n))
        start = time.process_time()
        text_read = Path(path).read_text()
        tree = tomllib.loads(text_read)
        at, stories = config.locate("x", text_read), config.Stories(Path(path), "x")
        chains = [config.chain_of(t, i, at, "x", stories.read)[0]
                  for i, t in enumerate(settings.walk(tree, at)[0]["chain"])]
        times.append(time.process_time() - start)
        assert len(chains) == n
    # 2,000 chains in under 2 s, and four times the chains at most about
    # four times the time (a quadratic step would take sixteen).
    assert times[1] < 2.0 and times[1] < max(8 * times[0], 0.2), times


def _name(length: int) -> str:
    """A host name of `length` characters (labels of 63)."""
    labels, left = [], length
    while left > 64:
        labels.append("a" * 63)
        left -= 64
    return ".".join(labels + ["b" * left])


@pytest.mark.parametrize("suffix,dns,message", [
    (251, "", "the NS name 'ns.aaa"),                         # ns.<suffix>: 254
    (251, '[dns]\nns = ["ns.example.net"]\n', None),
    (250, "", "the SOA rname 'hostmaster.aaa"),               # hostmaster.<suffix>: 261
    (250, '[dns]\nsoa_rname = "h@example.net"\n', None),
    (10, f'[dns]\nns = ["ns.{_name(250)}"]\n', "the SOA rname 'hostmaster."),
    (10, f'[dns]\nns = ["ns.{_name(250)}"]\nsoa_mname = "ns.example.net"\n', None),
])
def test_config_derived_zone_names_fit_dns(in_tmp, suffix, dns, message):
    """The default NS (`ns.<suffix>`) and SOA contact
    (`hostmaster.<mname's parent>`) are checked at load (they made
    dnspython raise in `zone` and at start, after `preview` took them), so
    that preview, zone, start and reload agree; what loads, zone.build takes."""
    from routechain import zone
    text = (f'[[chain]]\naddress = "192.0.2.1/24"\nhops = ["x"]\nsuffix = "{_name(suffix)}"\n'
            f'\n{dns}')
    path = write(in_tmp, text)
    if message is None:
        assert zone.build(config.load(path))
        return
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert message in str(info.value) and "DNS holds at most 253" in str(info.value)
    assert str(info.value).startswith("route-chain.toml:")


def test_config_stories_shared_by_chains_are_summarised_once(in_tmp):
    """#13: one log line per story file, whatever the number of chains
    sharing it; each rewrite still listed once for preview; real problems
    one by one."""
    text = "".join(f'[[chain]]\naddress = "198.18.{i}.1/24"\nstory = "story.txt"\n\n'
                   for i in range(4))
    c = config.load(write(in_tmp, text, "Once upon\na time\n!!!\nend\n"))
    assert c.log_lines == (
        "story.txt: 2 story lines rewritten into host names; "
        "`route-chain preview --config route-chain.toml` shows each",
        "story.txt:3: '!!!' has nothing a host name can hold: the hop answers without a name")
    assert c.rewrites == ("story.txt:1: 'Once upon' becomes 'Once.upon'",
                          "story.txt:2: 'a time' becomes 'a.time'")


def test_config_shared_story_of_1_mib_loads_fast_for_1000_chains(in_tmp):
    """1,000 chains sharing a 1 MiB story file: the file is read and
    converted once per load, not once per chain."""
    story = "".join(f"hop number {k}\n" for k in range(200)) + ("#" * 99 + "\n") * 10_000
    story = story[:(1 << 20) - 1] + "\n"
    text = "".join(f'[[chain]]\naddress = "2001:db8:{i:x}::1/64"\nstory = "story.txt"\n\n'
                   for i in range(1000))
    path = write(in_tmp, text, story)
    tree = tomllib.loads(Path(path).read_text())
    start = time.process_time()
    at, stories = config.locate("x", Path(path).read_text()), config.Stories(Path(path), "x")
    chains = [config.chain_of(t, i, at, "x", stories.read)[0]
              for i, t in enumerate(settings.walk(tree, at)[0]["chain"])]
    assert time.process_time() - start < 1.0
    assert len(chains) == 1000 and len(chains[-1].hops) == 200


TRANSFERS = """\
[dns]
listen = ["192.0.2.1:53"]
transfer = ["192.0.2.0/24", "2001:db8::/32"]
transfer_keys = ["xfr"]
zone_name_form = "/"

[[tsig]]
name = "XFR."
secret_file = "xfr.key"

[[tsig]]
name = "ns2"
algorithm = "hmac-sha512"
secret_file = "ns2.key"

[[secondary]]
address = "192.0.2.53"
key = "ns2"

[[secondary]]
address = "[2001:db8::53]:5300"
"""


def keys(tmp_path: Path, mode: int = 0o600) -> None:
    for name, secret in (("xfr.key", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
                         ("ns2.key", 'key "ns2" { algorithm hmac-sha512; '
                                     'secret "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="; };')):
        (tmp_path / name).write_text(secret + "\n")
        os.chmod(tmp_path / name, mode)


def test_config_transfers_tsig_and_secondaries(in_tmp):
    keys(in_tmp)
    c = config.load(write(in_tmp, TRANSFERS))
    d = c.dns
    assert d.transfer == (ipaddress.ip_network("192.0.2.0/24"),
                          ipaddress.ip_network("2001:db8::/32"))
    assert d.transfer_keys == ("xfr",) and d.zone_name_form == "/"
    assert [(k.name, k.algorithm, k.secret) for k in c.keys] == [
        ("xfr", "hmac-sha256", bytes(range(32))), ("ns2", "hmac-sha512", bytes(range(32, 64)))]
    assert [(s.address, s.port, s.key) for s in c.secondaries] == [
        ("192.0.2.53", 53, "ns2"), ("2001:db8::53", 5300, None)]
    assert "ICEi" not in repr(c) and "AAEC" not in repr(c)


def test_config_transfers_are_off_without_keys():
    c = config.Config()
    assert (c.dns.transfer, c.keys, c.secondaries, c.dns.zone_name_form) == ((), (), (), "-")


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('transfer_keys = ["xfr"]', 'transfer_keys = ["nope"]'),
     "route-chain.toml:4: TSIG key 'nope' is not declared in a [[tsig]]"),
    (lambda t: t.replace('key = "ns2"', 'key = "other"'),
     "route-chain.toml:18: TSIG key 'other' is not declared in a [[tsig]]"),
    (lambda t: t.replace('zone_name_form = "/"', 'zone_name_form = "."'),
     "route-chain.toml:5: zone_name_form '.': write \"-\", \"/\" or \"_\""),
    (lambda t: t.replace('"192.0.2.0/24"', '"192.0.2.0/33"'),
     "route-chain.toml:3: bad prefix '192.0.2.0/33'"),
    (lambda t: t.replace('algorithm = "hmac-sha512"', 'algorithm = "hmac-md4"'),
     "route-chain.toml:13: unknown TSIG algorithm 'hmac-md4'"),
    (lambda t: t.replace('name = "ns2"', 'name = "xfr"'),
     "route-chain.toml:12: key 'xfr' is declared twice"),
    (lambda t: t.replace('secret_file = "ns2.key"', 'secret_file = "none.key"'),
     "none.key: cannot read TSIG key file"),
])
def test_config_transfer_errors_name_file_line_and_value(in_tmp, edit, message):
    keys(in_tmp)
    assert message in refusal(in_tmp, edit(TRANSFERS))


@pytest.mark.parametrize("mode, group_may_read, reason", [
    (0o100600, False, None),
    (0o100400, False, None),
    (0o100640, False, "readable or writable by group (mode 0640); chmod 600 it"),
    (0o100604, False, "readable or writable by others (mode 0604); chmod 600 it"),
    (0o100666, False, "readable or writable by group and others (mode 0666); chmod 600 it"),
    (0o100640, True, None),
    (0o100600, True, None),
    (0o100660, True, "readable or writable by group (mode 0660); chmod g-wx,o-rwx it"),
    (0o100644, True, "readable or writable by others (mode 0644); chmod g-wx,o-rwx it"),
    (0o100602, True, "readable or writable by others (mode 0602); chmod g-wx,o-rwx it"),
    (0o040700, True, "not a regular file"),
    (0o010600, False, "not a regular file"),
])
def test_files_secret_mode_rule(mode, group_may_read, reason):
    """The one rule for secret files: the owner alone, and the group may
    read a TSIG secret (group_may_read) but never a DNSSEC key."""
    assert files.secret_mode_refusal(mode, group_may_read) == reason


def test_config_tsig_key_file_readable_by_others_is_refused(in_tmp):
    keys(in_tmp, 0o604)
    with pytest.raises(ConfigError, match=r"xfr.key: refusing TSIG key file: readable or "
                                          r"writable by others \(mode 0604\)"):
        config.load(write(in_tmp, TRANSFERS))

@pytest.mark.parametrize("text, expected", [
    ("", (settings.ROUTE_PROTOCOL, None, None)),
    ("[daemon]\nroute_protocol = 200\nroute_table = 100\nroute_metric = 50\n",
     (200, 100, 50)),
    ("[daemon]\nroute_metric = 0\n", (settings.ROUTE_PROTOCOL, None, 0)),
])
def test_config_routing(in_tmp, text, expected):
    """[daemon] route_*: what the daemon's routes carry; absent keys keep
    the protocol's default and the kernel's table and metric (None)."""
    d = config.load(write(in_tmp, text)).daemon
    assert (d.route_protocol, d.route_table, d.route_metric) == expected


@pytest.mark.parametrize("text, message", [
    ("[daemon]\nroute_protocol = 4\n", "route-chain.toml:2: daemon.route_protocol = 4 is "
     "not in 5..255"),
    ("[daemon]\nroute_protocol = 256\n", "daemon.route_protocol = 256 is not in 5..255"),
    ("[daemon]\nroute_table = 0\n", "daemon.route_table = 0 is not in 1..4294967295"),
    ('[daemon]\nroute_metric = "low"\n', "daemon.route_metric must be an integer, not 'low'"),
    ('[daemon]\nproxy_uplinks = ["e0", "a/b"]\n', "route-chain.toml:2: bad interface name "
     "'a/b'"),
])
def test_config_routing_refuses(in_tmp, text, message):
    """Protocols 0..4 mean something to the kernel (RTPROT_STATIC and
    below): never ours."""
    assert message in refusal(in_tmp, text)


def test_config_merge_keeps_the_files_routing(in_tmp):
    file = config.load(write(in_tmp, "[daemon]\nroute_protocol = 200\n"))
    assert config.merge(config.Config(), file).daemon.route_protocol == 200


# --- a reload keeps what did not change (config.Memo) ---------------------------

MEMO = """\
[[chain]]
address = "192.0.2.1/27"
story = "a.txt"

[[chain]]
address = "2001:db8::1/64"
story = "b.txt"

[[chain]]
address = "198.51.100.1/28"
hops = ["inline.one", "inline.two"]
"""


def memo_files(tmp_path: Path) -> Path:
    (tmp_path / "a.txt").write_text("a-one\na-two\n")
    (tmp_path / "b.txt").write_text("b-one\nb-two\n")
    path = tmp_path / "rc.toml"
    path.write_text(MEMO)
    return path


def test_memo_keeps_the_chains_that_did_not_change(tmp_path):
    """One chain's address changed: the others are the same objects, the
    changed one is built anew, and the result equals a load from scratch."""
    path = memo_files(tmp_path)
    memo = config.Memo()
    first = config.load(path, memo)
    path.write_text(MEMO.replace("2001:db8::1/64", "2001:db8::2/64"))
    second = config.load(path, memo)
    assert second.chains[0] is first.chains[0]
    assert second.chains[1] is not first.chains[1]
    assert str(second.chains[1].interface) == "2001:db8::2/64"
    assert second.chains[1].hops is first.chains[1].hops  # b.txt's Story kept
    assert second.chains[2] is not first.chains[2]        # inline hops: built again
    assert second == config.load(path)


def test_memo_sees_a_story_edited_within_the_same_second(tmp_path):
    """Same size, same mtime (set back): the bytes differ, so the story is
    read again, and every chain telling it tells the new one."""
    path = memo_files(tmp_path)
    memo = config.Memo()
    first = config.load(path, memo)
    story = tmp_path / "a.txt"
    stat = story.stat()
    story.write_text("a-ONE\na-two\n")
    os.utime(story, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = config.load(path, memo)
    assert [h.name for h in second.chains[0].hops] == ["a-ONE", "a-two"]
    assert [h.name for h in first.chains[0].hops] == ["a-one", "a-two"]
    assert second.chains[1] is first.chains[1]


def test_memo_moved_chain_gets_its_new_line(tmp_path):
    """A chain unchanged but moved down a line is checked again: its
    `where` names the line it is on now."""
    path = memo_files(tmp_path)
    memo = config.Memo()
    first = config.load(path, memo)
    path.write_text("\n" + MEMO)
    second = config.load(path, memo)
    assert first.chains[0].where.endswith(":1") and second.chains[0].where.endswith(":2")
    assert second == config.load(path)


def test_memo_survives_a_refused_load(tmp_path):
    """A load that fails keeps nothing of its own: the next one still
    keeps what the last good load made."""
    path = memo_files(tmp_path)
    memo = config.Memo()
    first = config.load(path, memo)
    path.write_text(MEMO.replace('story = "b.txt"', 'story = "missing.txt"'))
    with pytest.raises(ConfigError, match="missing.txt"):
        config.load(path, memo)
    path.write_text(MEMO)
    again = config.load(path, memo)
    assert again.chains[:2] == first.chains[:2]
    assert again.chains[0] is first.chains[0] and again.chains[1] is first.chains[1]


def test_memo_reads_an_unchanged_file_without_locating_its_lines_again(tmp_path, monkeypatch):
    """The same text: no second shape check or line scan, and the same
    Config; one byte more and both run again."""
    from routechain import tomlpos
    path = memo_files(tmp_path)
    memo = config.Memo()
    scans = []
    real = tomlpos.Locator
    monkeypatch.setattr(tomlpos, "Locator", lambda text: scans.append(text) or real(text))
    first = config.load(path, memo)
    assert config.load(path, memo) == first and len(scans) == 1
    path.write_text(MEMO + "\n")
    assert config.load(path, memo) == first and len(scans) == 2
