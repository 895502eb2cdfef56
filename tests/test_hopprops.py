"""Per-hop properties (routechain.hopprops, Chain.timing and friends):
the one syntax of docs/stories.md, read from story lines and TOML alike,
table-driven."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from routechain import config, hopprops, story
from routechain.errors import ConfigError
from routechain.hopprops import Delay, Label

# (property words, the Props fields they set)
GOOD = [
    ("delay=2ms", {"delay": Delay(2000, False)}),
    ("delay=+70ms", {"delay": Delay(70000, True)}),
    ("delay=0.5ms slow=40ms", {"delay": Delay(500, False), "slow_us": 40000}),
    ("jitter=250us", {"jitter_us": 250}),
    ("jitter=1s", {"jitter_us": 1_000_000}),
    ("loss=10%", {"loss": 0.10}),
    ("loss=0.5%", {"loss": 0.005}),
    ("loss=100%", {"loss": 1.0}),
    ("rate=2/s burst=3", {"rate": 2, "burst": 3}),
    ("mpls=24001", {"mpls": (Label(24001, 0),)}),
    ("mpls=16:3,1048575:7", {"mpls": (Label(16, 3), Label(1048575, 7))}),
    ("iface=xe-0/0/0 ifindex=12", {"iface": "xe-0/0/0", "ifindex": 12}),
    ('iface="Ocean Gate 1"', {"iface": "Ocean Gate 1"}),
    ('iface="say \\"hi\\""', {"iface": 'say "hi"'}),
    ("ifaddr=2001:db8::9 ifmtu=9000", {"ifaddr": ipaddress.ip_address("2001:db8::9"),
                                       "ifmtu": 9000}),
    ("mtu=1400 reply_ttl=255", {"mtu": 1400, "reply_ttl": 255}),
    ("   mtu=68   ", {"mtu": 68}),
    ("", {}),
]

# (property words, a fragment the one-line error must hold)
BAD = [
    ("delay=70 ms", "'ms' is not key=value"),
    ("delay=70", "delay '70': write a number and a unit"),
    ("delay=70min", "delay '70min'"),
    ("delay=11s", "more than 10s"),
    ("delay=-5ms", "delay '-5ms'"),
    ("loss=120%", "loss '120%': more than 100%"),
    ("loss=5", "write a percentage"),
    ("rate=0/s", "rate '0/s'"),
    ("rate=10", "write replies per second"),
    ("burst=0", "burst '0': not in 1.."),
    ("mpls=2000000", "label 2000000 is not in 0..1048575"),
    ("mpls=16:8", "traffic class 8 is not in 0..7"),
    ("mpls=1,2,3,4,5,6,7,8,9", "9 labels: at most 8"),
    ("mpls=a", "write LABEL or LABEL:TC"),
    ("iface=" + "x" * 64, "64 octets of UTF-8: 1..63"),
    ("iface=" + "é" * 32, "64 octets of UTF-8"),
    ("ifaddr=gateway", "not an IP address"),
    ("mtu=67", "mtu '67': not in 68..65535"),
    ("reply_ttl=256", "not in 1..255"),
    ("colour=blue", "unknown property 'colour'"),
    ("mtu=1400 mtu=1500", "mtu is set twice"),
    ("step=1ms", "step belongs on a [[chain]], not on a hop"),
    ("end=!N", "end belongs on a [[chain]], not on a hop"),
    ("tcp_open=80", "tcp_open belongs on a [[chain]], not on a hop"),
    ("address=198.51.100.9", "address belongs on a '+' alternative, not on a hop"),
    ('iface="unclosed', "is not key=value"),
    ("=5ms", "is not key=value"),
]


@pytest.mark.parametrize("words, expected", GOOD)
def test_hopprops_words_parse(words: str, expected: dict) -> None:
    props = hopprops.parse_words(words, "story.txt:3")
    for name, value in expected.items():
        assert getattr(props, name) == value
    set_fields = {f for f in vars(props) if getattr(props, f) is not None}
    assert set_fields == set(expected)


@pytest.mark.parametrize("words, fragment", BAD)
def test_hopprops_words_refused_with_place(words: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        hopprops.parse_words(words, "story.txt:3")
    message = str(e.value)
    assert message.startswith("story.txt:3: ")
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize("line, alternative, text, words", [
    ("Once upon a time", False, "Once upon a time", None),
    ("Once upon a time | delay=2ms", False, "Once upon a time", " delay=2ms"),
    ("+ the northern cable | address=198.51.100.40", True, "the northern cable",
     " address=198.51.100.40"),
    ("+", True, "", None),
    ("+1 for love", False, "+1 for love", None),
    ("| mtu=1400", False, "", " mtu=1400"),
    ("* | delay=+5ms", False, "*", " delay=+5ms"),
    ("a | b | c", False, "a", " b | c"),
])
def test_hopprops_split_line(line, alternative, text, words) -> None:
    assert hopprops.split_line(line) == (alternative, text, words)


STORY = """\
Once upon a time              | delay=2ms
a little packet left home
and crossed the ocean         | delay=+70ms mpls=24001 iface=xe-0/0/0
+ or the northern cable       | slow=5ms mpls=24002
+ or the southern cable       | address=198.51.100.30
the café of Lost Frames       | loss=10% jitter=1ms
* | delay=50ms
| mtu=1400
and finally it came to rest   | slow=3ms
"""


def chain_of(tmp_path: Path, story_text: str, chain_keys: str = "", extra: str = ""):
    (tmp_path / "story.txt").write_text(story_text)
    (tmp_path / "c.toml").write_text(textwrap.dedent("""\
        [[chain]]
        address = "198.51.100.1/27"
        story = "story.txt"
        """) + chain_keys + extra)
    return config.load(tmp_path / "c.toml").chains[0]


def test_hopprops_story_builds_hops_and_alternatives(tmp_path: Path) -> None:
    chain = chain_of(tmp_path, STORY)
    assert chain.length == 7
    third = chain.hop(3)
    assert [a.name for a in third.alternatives] == ["or.the.northern.cable",
                                                    "or.the.southern.cable"]
    # explicit address kept; the other takes the first free one after the destination
    assert chain.branch_address(3, 2) == ipaddress.ip_address("198.51.100.30")
    assert chain.branch_address(3, 1) == chain.destination + 1
    assert chain.hop(6).name is None and not chain.hop(6).silent
    assert chain.hop(6).props.mtu == 1400
    assert chain.hop(5).silent
    assert chain.has_timing and chain.has_extensions


def test_hopprops_path_delay_accumulates(tmp_path: Path) -> None:
    """Chain delay at hop 1, step per hop, '+' from a hop on, an absolute
    value resets the path, slow only at its own hop and branch."""
    chain = chain_of(tmp_path, STORY, 'delay = "1ms"\nstep = "0.5ms"\n')
    delays = [chain.timing(k).delay_us for k in range(1, chain.length + 1)]
    path = [2000]                            # hop 1 sets 2ms over the chain's 1ms
    path.append(path[-1] + 500)              # 2: a step
    path.append(path[-1] + 500 + 70000)      # 3: a step and the ocean
    path.append(path[-1] + 500)              # 4
    path.append(50000)                       # 5: set to 50ms
    path.append(path[-1] + 500)              # 6
    path.append(path[-1] + 500)              # 7
    assert delays == path[:6] + [path[6] + 3000]
    assert chain.timing(3, 1).delay_us == path[2] + 5000
    assert chain.timing(3, 2).delay_us == path[2]


def test_hopprops_hop_overrides_chain_defaults(tmp_path: Path) -> None:
    chain = chain_of(tmp_path, STORY, 'jitter = "0.2ms"\nloss = "1%"\nrate = "100/s"\n')
    assert chain.timing(1).jitter_us == 200 and chain.timing(1).loss == 0.01
    assert chain.timing(4).jitter_us == 1000 and chain.timing(4).loss == 0.10
    assert chain.timing(1).rate == 100 and chain.timing(1).burst == 100


def test_hopprops_chain_hop_tables(tmp_path: Path) -> None:
    chain = chain_of(tmp_path, STORY, 'end = "!X"\nreply_ttl = 60\n',
                     '[chain.hop.2]\nmpls = "100:1"\nreply_ttl = 255\n')
    assert chain.hop(2).props.mpls == (Label(100, 1),)
    assert chain.hop(2).props.reply_ttl == 255 and chain.hop(1).props.reply_ttl is None
    assert chain.reply_ttl == 60
    assert chain.end == "!X"


@pytest.mark.parametrize("story_text, chain_keys, extra, fragment", [
    (STORY, "", "[chain.hop.8]\nmtu = 1400\n", "[chain.hop.8]: the chain has hops 1..7"),
    (STORY, "", "[chain.hop.6]\nmtu = 1300\n", "mtu is set twice for this hop"),
    (STORY, "", "[chain.hop.1]\nstep = \"1ms\"\n", "step belongs on a [[chain]]"),
    (STORY, 'loss = 5\n', "", 'loss 5: write it as text with its unit'),
    (STORY, 'delay = "+1ms"\n', "", "a chain's delay is where the path starts"),
    (STORY, 'end = "!Q"\n', "", "end '!Q': write one of host, !N, !H, !X"),
    (STORY, 'mpls = "16"\n', "", "unknown key 'mpls' in [chain]"),
    (STORY, 'tcp = "opened"\n', "", "tcp 'opened': write one of closed, rst, silent, "
                                     "prohibited, open"),
    (STORY, 'udp = "rst"\n', "", "udp 'rst': write one of unreachable, silent, prohibited"),
    (STORY, 'tcp_open = "80,http"\n', "", "'http' is not a port 1..65535"),
    (STORY, 'tcp_open = [0]\n', "", "'0' is not a port 1..65535"),
    (STORY, 'tcp_open = "22,80,22"\n', "", "port 22 is written twice"),
    (STORY, f'tcp_open = {list(range(1, 18))}\n', "", "17 ports: at most 16"),
    (STORY, 'tcp_open = ["80"]\n', "", "tcp_open ['80']: write it as text"),
    ("+ first\n", "", "", "story.txt:1: a '+' line is another router at the hop above"),
    ("a\nb\n+ c\n", "", "", "story.txt:3: the destination (the last hop) cannot have '+'"),
    ("a\n+ b | address=10.0.0.1\nc\n", "", "", "story.txt:2: address 10.0.0.1 is outside"),
    ("a\n+ b | address=198.51.100.3\nc\n", "", "",
     "story.txt:2: address 198.51.100.3 is already the host, a hop"),
    ("a | rate=5\n", "", "", "story.txt:1: rate '5'"),
    ("a | balance=packet\nb\n", "", "", "story.txt:1: balance=packet on a hop with no '+'"),
    ("a | balance=round\n+ b\nc\n", "", "",
     "balance 'round': write one of flow, packet, destination"),
    ("a\n+ b | balance=packet\nc\n", "", "", "balance belongs on"),
    (STORY, 'balance = "hash"\n', "", "balance 'hash': write one of flow, packet"),
])
def test_hopprops_config_errors(tmp_path: Path, story_text, chain_keys, extra,
                                fragment) -> None:
    with pytest.raises(ConfigError) as e:
        chain_of(tmp_path, story_text, chain_keys, extra)
    assert fragment in str(e.value)
    assert str(e.value).split(":")[0].endswith((".toml", ".txt"))


def test_hopprops_ipv6_mtu_floor(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        '[[chain]]\naddress = "2001:db8::1/64"\nhops = ["a | mtu=1279", "b"]\n')
    with pytest.raises(ConfigError, match=r"c.toml:3: mtu 1279: IPv6 links carry at least"):
        config.load(tmp_path / "c.toml")


def test_hopprops_plain_story_unchanged() -> None:
    """A story without properties parses exactly as before: no props, no
    alternatives, no timing, no extensions."""
    parsed = story.parse_text("Once upon a time\n*\nthe end\n", "s.txt")
    assert all(h.props.is_empty() and not h.alternatives for h in parsed.hops)


def test_hopprops_keys_one_table() -> None:
    """Every Props field has exactly one key, and each key names a place."""
    fields = [k.field for k in hopprops.KEYS.values()]
    assert sorted(fields) == sorted(f for f in vars(hopprops.Props()))
    assert all(k.where for k in hopprops.KEYS.values())


def test_hopprops_alternatives_bounded_per_chain(tmp_path: Path) -> None:
    """255 '+' lines in all, spread over hops, is the most a chain takes:
    the reply core scans them for a probe addressed past the chain."""
    def story_with(first: int, second: int) -> str:
        return "a\n" + "+ x\n" * first + "b\n" + "+ y\n" * second + "c\n"
    (tmp_path / "c.toml").write_text(
        '[[chain]]\naddress = "198.18.0.1/15"\nstory = "story.txt"\n')
    (tmp_path / "story.txt").write_text(story_with(200, 55))
    chain = config.load(tmp_path / "c.toml").chains[0]
    assert sum(len(h.alternatives) for h in chain.hops) == 255
    (tmp_path / "story.txt").write_text(story_with(200, 56))
    with pytest.raises(ConfigError, match=r"story.txt:258: more than 255 '\+' alternatives "
                                          r"in one chain"):
        config.load(tmp_path / "c.toml")


def test_hopprops_every_field_has_one_key():
    """Props and KEYS describe the same fields, so no property is read by
    one and missed by the other (Chain.has_extensions reads KEYS)."""
    from dataclasses import fields
    assert sorted(k.field for k in hopprops.KEYS.values()) == sorted(
        f.name for f in fields(hopprops.Props))


@pytest.mark.parametrize("key", sorted(hopprops.KEYS))
def test_hopprops_each_key_changes_what_it_declares(key):
    """One hop with only `key` set (its example value): a chain has
    extensions exactly when the key changes replies, and timing only when
    it is a timing key (burst alone limits nothing, and so times nothing).
    IPv4, so that every example fits (df, an IPv4 nat); balance needs a
    '+' alternative to balance, which is itself an extension."""
    from routechain.chain import Chain, Hop, parse_prefix
    k = hopprops.KEYS[key]
    forked = (Hop("c"),) if key == "balance" else ()
    if hopprops.HOP in k.where:
        props = hopprops.build([(key, k.example, "t")], hopprops.HOP)
        chain = Chain(parse_prefix("198.51.100.1/24"),
                      (Hop("a", props=props, alternatives=forked), Hop("b")))
    elif hopprops.CHAIN in k.where:
        props = hopprops.build([(key, k.example, "t")], hopprops.CHAIN)
        chain = Chain(parse_prefix("198.51.100.1/24"), (Hop("a"), Hop("b")), defaults=props)
    else:  # an alternative's own address: the alternative is the extension
        props = hopprops.build([(key, "198.51.100.40", "t")], hopprops.BRANCH)
        chain = Chain(parse_prefix("198.51.100.1/24"),
                      (Hop("a", alternatives=(Hop("c", props=props),)), Hop("b")))
    assert chain.has_extensions == (k.changes == hopprops.REPLY
                                    or key in ("end", "address", "balance")), key
    assert chain.has_timing == (k.changes == hopprops.TIMING and key != "burst"), key


@pytest.mark.parametrize("chain_keys, tcp, ports, udp", [
    ("", None, None, None),
    ('tcp_open = [80, 443]\n', None, (80, 443), None),
    ('tcp_open = "443,80"\n', None, (443, 80), None),
    ('tcp_open = 8080\ntcp = "silent"\nudp = "prohibited"\n', "silent", (8080,), "prohibited"),
    ('tcp = "open"\n', "open", None, None),
])
def test_hopprops_destination_answers(tmp_path: Path, chain_keys, tcp, ports, udp) -> None:
    """tcp, tcp_open (text, an integer or a TOML list) and udp, on a chain."""
    props = chain_of(tmp_path, STORY, chain_keys).defaults
    assert (props.tcp, props.tcp_open, props.udp) == (tcp, ports, udp)
