"""How the router in front of a load-balanced hop picks among its routers
(issue 20, part 3): per flow (the default), per packet, per destination;
over the reply core, parsed by scapy; the table check's [BALANCE]; and, in
a namespace, what scamper's Paris traceroute and MDA (tracelb) and classic
traceroute see of it.

Chains (documentation prefixes only), the same story in every mode:

    hop 1  a
    hop 2  b, or its '+' alternative c (the next free address: host + 6)
    hop 3  d
    hop 4  e
    hop 5  the destination

    PACKET4 198.18.0.1/24    balance = "packet"   (tests/netns.py's CHAIN4)
    PACKET6 2001:db8::1/64   balance = "packet"   (CHAIN6)
    DEST4   198.18.2.1/24    balance = "destination"
    DEST6   2001:db8:7::1/64 balance = "destination"
    FLOW4   198.18.3.1/24    the default, per flow

Branches of unequal length (per flow), UNEQ4 198.18.5.1/24 and UNEQ6
2001:db8:8::1/64:

    hop 1  a
    hop 2  b               or c (host + 6), then c2 (host + 7): one hop longer
    hop 3  d               (both branches rejoin here)
    hop 4  e
    hop 5  the destination
"""

from __future__ import annotations

import ipaddress
import re

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6

from routechain import chaintable
from routechain.chain import Chain, Hop, parse_prefix
from routechain.errors import ConfigError
from routechain.hopprops import Props
from test_reply_ext import source

SRC4, SRC6 = "192.0.2.2", "2001:db8:ff::2"
HOPS = (Hop(name="a"), Hop(name="b", alternatives=(Hop(name="c"),)), Hop(name="d"),
        Hop(name="e"), Hop(name="home"))


def chain(prefix: str, balance: str | None) -> Chain:
    return Chain(parse_prefix(prefix), HOPS, defaults=Props(balance=balance))


PACKET4, PACKET6 = chain("198.18.0.1/24", "packet"), chain("2001:db8::1/64", "packet")
DEST4, DEST6 = chain("198.18.2.1/24", "destination"), chain("2001:db8:7::1/64", "destination")
FLOW4 = chain("198.18.3.1/24", None)
UNEQ_HOPS = (Hop(name="a"), Hop(name="b", alternatives=(
    Hop(name="c", further=(Hop(name="c2"),)),)), Hop(name="d"), Hop(name="e"), Hop(name="home"))
UNEQ4 = Chain(parse_prefix("198.18.5.1/24"), UNEQ_HOPS)
UNEQ6 = Chain(parse_prefix("2001:db8:8::1/64"), UNEQ_HOPS)
TABLE = chaintable.Table([PACKET4, PACKET6, DEST4, DEST6, FLOW4, UNEQ4, UNEQ6])


def routers(c: Chain) -> set:
    return {c.hop_address(2), c.branch_address(2, 1)}


def at_hop2(c: Chain, ttl: int = 2, dst: str | None = None, sport: int = 40000,
            ident: int = 1, payload: bytes = b"", label: int = 0):
    """Who answers a UDP probe with this TTL (hop 2 by default)."""
    dst = dst or str(c.destination)
    upper = UDP(sport=sport, dport=33434) / payload
    if c.family == 4:
        packet = IP(src=SRC4, dst=dst, ttl=ttl, id=ident) / upper
    else:
        packet = IPv6(src=SRC6, dst=dst, hlim=ttl, fl=label) / upper
    got = chaintable.reply(bytes(packet), TABLE, slack=2000)
    assert isinstance(got, bytes), got
    return source(got)


def test_balance_flow_is_the_default():
    """Without `balance`, the IPv4 Identification and the UDP checksum
    (what a Paris trace varies) do not move a flow."""
    assert FLOW4.balance(2) == "flow"
    seen = {at_hop2(FLOW4, ident=i, payload=bytes([i])) for i in range(32)}
    assert len(seen) == 1


@pytest.mark.parametrize("c", [PACKET4, PACKET6], ids=["v4", "v6"])
def test_balance_packet_sprays_one_flow(c):
    """Ports, addresses (and flow label) fixed: the probes of one flow
    meet both routers, about half each; a probe sent again byte for byte
    meets the same one (no state)."""
    seen = {}
    for i in range(64):
        router = at_hop2(c, ident=i, payload=i.to_bytes(2, "big"))
        assert at_hop2(c, ident=i, payload=i.to_bytes(2, "big")) == router
        seen[router] = seen.get(router, 0) + 1
    assert set(seen) == routers(c)
    assert min(seen.values()) > 12, seen


def test_balance_packet_hashes_the_ipv4_identification_alone():
    """Same bytes but for the IPv4 ID (checksum patched by scapy): both routers."""
    assert {at_hop2(PACKET4, ident=i) for i in range(32)} == routers(PACKET4)


@pytest.mark.parametrize("c", [DEST4, DEST6], ids=["v4", "v6"])
def test_balance_destination_constant_per_destination(c):
    """Ports, IPv4 ID, payload and flow label vary: one destination, one router."""
    seen = {at_hop2(c, sport=40000 + i, ident=i, payload=bytes([i]), label=i * 977)
            for i in range(64)}
    assert len(seen) == 1 and seen <= routers(c)


@pytest.mark.parametrize("c", [DEST4, DEST6], ids=["v4", "v6"])
def test_balance_destination_varies_across_destinations(c):
    """Addresses past the chain travel the whole path (Time Exceeded on the
    way): across destinations both routers of hop 2 answer."""
    seen = {}
    for n in range(10, 74):
        router = at_hop2(c, dst=str(c.host + n))
        seen.setdefault(router, set()).add(n)
    assert set(seen) == routers(c)
    assert min(len(v) for v in seen.values()) > 12, seen


def test_balance_flow_label_counts_for_flow_and_packet_not_destination():
    """RFC 6437: the IPv6 flow label is part of the flow and of the packet
    hash; a per-destination balancer ignores it."""
    assert {at_hop2(PACKET6, label=n) for n in range(32)} == routers(PACKET6)
    assert len({at_hop2(DEST6, label=n) for n in range(32)}) == 1


def test_balance_on_one_hop_overrides_the_chain():
    hops = (Hop(), Hop(props=Props(balance="destination"), alternatives=(Hop(),)),
            Hop(alternatives=(Hop(),)), Hop())
    c = Chain(parse_prefix("198.18.4.1/24"), hops, defaults=Props(balance="packet"))
    assert (c.balance(2), c.balance(3)) == ("destination", "packet")
    table = chaintable.Table([c])
    assert [table.ptr.chains[0].hops[k].balance for k in (2, 3)] == [
        chaintable.BALANCE["destination"], chaintable.BALANCE["packet"]]


@pytest.mark.parametrize("where, value", [(2, 3), (6, 1)], ids=["unknown", "on_alternative"])
def test_balance_table_check_refuses(where, value):
    """rc_table_check [BALANCE]: an unknown mode, or a mode on an alternative
    (hops[6] is hop 2's alternative)."""
    table = chaintable.Table([PACKET4])
    table.ptr.chains[0].hops[where].balance = value
    with pytest.raises(ConfigError, match=r"hop 2.*\(balance\): balance not an enum"):
        table.check()


def reply_to(c: Chain, ttl: int, sport: int):
    upper = UDP(sport=sport, dport=33434)
    ip = (IP(src=SRC4, dst=str(c.destination), ttl=ttl) if c.family == 4
          else IPv6(src=SRC6, dst=str(c.destination), hlim=ttl))
    got = chaintable.reply(bytes(ip / upper), TABLE, slack=2000)
    assert isinstance(got, bytes), got
    return got


def flow_on(c: Chain, router) -> int:
    """A source port whose flow meets `router` at hop 2."""
    return next(s for s in range(40000, 40200) if source(reply_to(c, 2, s)) == router)


@pytest.mark.parametrize("c", [UNEQ4, UNEQ6], ids=["v4", "v6"])
def test_unequal_branches_long_one_is_a_hop_longer(c):
    """On the '+' branch the probe meets c, then c2, then rejoins at d one
    TTL later than the short branch, and reaches the destination with one
    more TTL; the reference holds the bytes (test_reply_random)."""
    short, long = flow_on(c, c.hop_address(2)), flow_on(c, c.branch_address(2, 1))
    assert [source(reply_to(c, t, short)) for t in range(1, 5)] == [
        c.hop_address(1), c.hop_address(2), c.hop_address(3), c.hop_address(4)]
    assert [source(reply_to(c, t, long)) for t in range(1, 6)] == [
        c.hop_address(1), c.branch_address(2, 1), c.branch_address(2, 2),
        c.hop_address(3), c.hop_address(4)]
    assert c.branch_address(2, 2) == c.host + 7 and c.branch(2, 2).name == "c2"
    kinds = chaintable.Kind
    assert reply_to(c, 5, short).kind == kinds.PORT_UNREACH
    assert reply_to(c, 5, long).kind == kinds.TIME_EXCEEDED
    assert reply_to(c, 6, long).kind == kinds.PORT_UNREACH
    assert reply_to(c, 3, long).router == len(chaintable.routers_of(c)) - 1


def test_unequal_branches_story_and_preview(tmp_path):
    """'++' continues the '+' branch above; preview shows it as written."""
    from routechain import config, preview
    (tmp_path / "story.txt").write_text("a\nb\n+ c\n++ c2 | iface=ge-1/0/0\nd\n")
    (tmp_path / "c.toml").write_text('[[chain]]\naddress = "198.18.5.1/24"\n'
                                     'story = "story.txt"\n')
    c = config.load(tmp_path / "c.toml").chains[0]
    assert [h.name for h in c.routers_at(2)] == ["b", "c", "c2"]
    assert c.branch(2, 2).props.iface == "ge-1/0/0"
    assert "[balanced per packet]" in preview.render_chain(PACKET4)
    assert "[balanced per" not in preview.render_chain(FLOW4)
    lines = preview.render_chain(c).splitlines()
    assert [ln.split()[:2] for ln in lines if ln.lstrip().startswith("+")] == [
        ["+", "c"], ["++", "c2"]], lines


@pytest.mark.parametrize("text, message", [
    ("a\n++ b\nc\n", "story.txt:2: a '++' line is the next router on the '+' branch"),
    ("a\n+ b\n++ c | mtu=1400\nd\n", "story.txt:3: mtu on a '++' router"),
])
def test_unequal_branches_errors(tmp_path, text, message):
    from routechain import config
    (tmp_path / "story.txt").write_text(text)
    (tmp_path / "c.toml").write_text('[[chain]]\naddress = "198.18.5.1/24"\n'
                                     'story = "story.txt"\n')
    with pytest.raises(ConfigError) as e:
        config.load(tmp_path / "c.toml")
    assert message in str(e.value)


# --- real clients, in a namespace -------------------------------------------

@pytest.fixture(scope="module")
def net(tmp_path_factory):
    from netns import Daemon, TestNet
    tmp = tmp_path_factory.mktemp("balance")
    story = "a\nb\n+ c\nd\ne\nhome\n"
    (tmp / "story.txt").write_text(story)
    config = "".join(f'[[chain]]\naddress = "{c.interface}"\nstory = "story.txt"\n'
                     f'balance = "{mode}"\n\n'
                     for c, mode in ((PACKET4, "packet"), (PACKET6, "packet"),
                                     (DEST4, "destination"), (DEST6, "destination")))
    (tmp / "long.txt").write_text("a\nb\n+ c\n++ c2\nd\ne\nhome\n")
    config += "".join(f'[[chain]]\naddress = "{c.interface}"\nstory = "long.txt"\n\n'
                      for c in (UNEQ4, UNEQ6))
    (tmp / "rc.toml").write_text(config)
    with TestNet.create("lb") as net:
        with Daemon(net, "--config", str(tmp / "rc.toml"), "--queues", "1") as daemon:
            daemon.wait_for("READY=1")
            yield net


def client(net, *command: str) -> str:
    return net.run(net.client, *command, timeout=120).stdout


def hop_lines(out: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\s*(\d+)\s+(.*)$", out, re.M)}


def tracelb_links(out: str) -> set[tuple[str, str]]:
    """Links of scamper's tracelb text: `a -> b` lines, and diamonds written
    `a -> (b, c) -> d`."""
    links = set()
    for line in out.splitlines():
        if " -> " not in line or line.startswith("tracelb"):
            continue
        steps = [set(re.findall(r"[0-9a-f.:]+[0-9a-f]", part)) for part in line.split(" -> ")]
        links |= {(x, y) for here, there in zip(steps, steps[1:]) for x in here for y in there}
    return links


def scamper(net, command: str, dest: str) -> str:
    return client(net, "scamper", "-c", command, "-i", dest)


# Through the gateway (tests/netns.py) traceroute hop n is host + (n - 1):
# the balanced hop 2 is traceroute's hop 3.

@pytest.mark.netns
@pytest.mark.parametrize("c", [PACKET4, PACKET6], ids=["v4", "v6"])
def test_balance_packet_tracelb_finds_the_diamond(net, c):
    """MDA (99 % confidence) finds host+1 -> {host+2, host+6} -> host+3."""
    a, b, alt, d = (str(c.host + n) for n in (1, 2, 6, 3))
    for _ in range(3):
        out = scamper(net, "tracelb -c 99", str(c.destination))
        links = tracelb_links(out)
        if {(a, b), (a, alt), (b, d), (alt, d)} <= links:
            break
    assert {(a, b), (a, alt), (b, d), (alt, d)} <= links, out


@pytest.mark.netns
@pytest.mark.parametrize("method", ["udp-paris", "icmp-paris"])
@pytest.mark.parametrize("c", [PACKET4, PACKET6], ids=["v4", "v6"])
def test_balance_packet_paris_traceroute_sees_the_hop_change(net, c, method):
    """A Paris trace holds its flow fixed (ports, or the ICMP checksum) and
    sends every attempt (-Q): at the per-packet hop its probes meet both
    routers, while the hops without alternatives stay one address each."""
    option = "-s" if method == "udp-paris" else "-d"
    seen = set()
    for _ in range(6):
        lines = hop_lines(scamper(net, f"trace -P {method} {option} 40000 -q 4 -Q -w 1",
                                  str(c.destination)))
        seen |= set(lines[3].split()) & {str(a) for a in routers(c)}
        for n in (2, 4, 5):
            assert set(lines[n].split()) & {str(c.host + k) for k in range(7)} == {
                str(c.host + n - 1)}, lines
        if len(seen) == 2:
            break
    assert seen == {str(a) for a in routers(c)}


@pytest.mark.netns
@pytest.mark.parametrize("c", [DEST4, DEST6], ids=["v4", "v6"])
def test_balance_destination_traceroute(net, c):
    """Classic traceroute varies its ports per probe: to one destination
    hop 2 is one router; across destinations past the chain, both."""
    family = f"-{c.family}"
    mine = {str(a) for a in routers(c)}
    lines = hop_lines(client(net, "traceroute", family, "-n", "-q", "4", "-w", "2",
                             str(c.destination)))
    assert len(set(lines[3].split()) & mine) == 1, lines
    seen = set()
    for n in range(10, 30):
        lines = hop_lines(client(net, "traceroute", family, "-n", "-q", "2", "-w", "1",
                                 "-m", "3", str(c.host + n)))
        hop = set(lines[3].split()) & mine
        assert len(hop) == 1, lines
        seen |= hop
        if seen == mine:
            break
    assert seen == mine


@pytest.mark.netns
@pytest.mark.parametrize("c", [UNEQ4, UNEQ6], ids=["v4", "v6"])
def test_unequal_branches_tracelb_finds_both(net, c):
    """MDA: host+1 -> host+2 -> host+3 and host+1 -> host+6 -> host+7 ->
    host+3: the branches rejoin, one a hop longer."""
    a, b, alt, alt2, d = (str(c.host + n) for n in (1, 2, 6, 7, 3))
    want = {(a, b), (b, d), (a, alt), (alt, alt2), (alt2, d)}
    for _ in range(3):
        out = scamper(net, "tracelb -c 99", str(c.destination))
        links = tracelb_links(out)
        if want <= links:
            break
    assert want <= links, out
