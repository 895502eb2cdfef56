"""`route-chain doctor`: each check as a pure function over hand-built facts,
then each check broken for real in a namespace, seen, fixed, seen to pass.

    ns "client"                            ns "router"  (tests/netns.py)
    +----------------------+   veth   +-------------------------------------------+
    | c0  192.0.2.2/24      |----------| r0  192.0.2.1/24       TUN "route-chain"  |
    |     2001:db8:ff::2/64 |          |     2001:db8:ff::1/64   198.18.0.1/24      |
    |                       |          | default via the client  2001:db8::1/64     |
    +----------------------+          | route-chain --config, DNS on both hosts    |
                                      | `route-chain doctor` run here (ip netns exec)|
                                      +-------------------------------------------+

The router's default routes go out r0, which makes r0 the uplink doctor
derives; every namespace test starts from a router on which doctor passes
(exit 0), breaks one thing, expects that check's line and exit 1, puts it
back and expects exit 0 again.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest

from routechain import doctor
from routechain.chain import Chain
from routechain.config import Config
from routechain import settings
from routechain.doctor import Facts
from routechain.ruleset import Packet, evaluate
from routechain.netlink import Lookup

from netns import CHAIN4, CHAIN6, TestNet, Daemon

V4 = Chain(ipaddress.ip_interface("198.51.100.1/29"), where="test")
V6 = Chain(ipaddress.ip_interface("2001:db8:5::1/124"), where="test")
CONFIG = Config(chains=(V4, V6), daemon=settings.Daemon(interface="rc-test"))
ON = {"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1",
      "net/ipv4/conf/eth0/forwarding": "1", "net/ipv6/conf/eth0/accept_ra": "1",
      "net/ipv4/conf/all/rp_filter": "0", "net/ipv4/conf/eth0/rp_filter": "0",
      "net/ipv4/icmp_ratelimit": "1000", "net/ipv4/icmp_ratemask": "6168",
      "net/ipv4/icmp_msgs_per_sec": "1000", "net/ipv6/icmp/ratelimit": "1000"}
DEFAULTS = ((4, "eth0", 3), (6, "eth0", 4))


def facts(**kw) -> Facts:
    base = dict(config=CONFIG, tun="rc-test", links=frozenset({"lo", "eth0", "rc-test"}),
                uplinks=("eth0",), sysctl=dict(ON), defaults=DEFAULTS)
    sysctl = kw.pop("sysctl", {})
    base["sysctl"] = {**ON, **sysctl}
    base.update(kw)
    return Facts(**base)


def lines(found) -> list[str]:
    return [f.line() for f in found]


# --- pure checks ----------------------------------------------------------------

# (sysctl changes, defaults, check, the one expected line's start or None)
SYSCTL_CASES = [
    ({}, DEFAULTS, doctor.check_forwarding, None),
    ({"net/ipv4/ip_forward": "0"}, DEFAULTS, doctor.check_forwarding,
     "FAIL forwarding: net.ipv4.ip_forward is 0"),
    ({"net/ipv4/conf/eth0/forwarding": "0"}, DEFAULTS, doctor.check_forwarding,
     "FAIL forwarding: net.ipv4.conf.eth0.forwarding is 0: IPv4 probes arriving on eth0"),
    ({"net/ipv6/conf/all/forwarding": "0"}, DEFAULTS, doctor.check_forwarding,
     "FAIL forwarding: net.ipv6.conf.all.forwarding is 0"),
    ({}, DEFAULTS, doctor.check_accept_ra, None),
    ({}, ((6, "eth0", doctor.RTPROT_RA),), doctor.check_accept_ra,
     "FAIL accept_ra: net.ipv6.conf.eth0.accept_ra is 1 with forwarding on"),
    ({"net/ipv6/conf/eth0/accept_ra": "2"}, ((6, "eth0", doctor.RTPROT_RA),),
     doctor.check_accept_ra, None),
    ({"net/ipv6/conf/all/forwarding": "0"}, ((6, "eth0", doctor.RTPROT_RA),),
     doctor.check_accept_ra, None),
    ({"net/ipv4/conf/eth0/rp_filter": "1"}, DEFAULTS, doctor.check_rp_filter, None),
    ({"net/ipv4/conf/all/rp_filter": "1"}, ((4, "eth1", 3),), doctor.check_rp_filter,
     "FAIL rp_filter: strict rp_filter on eth0, while the IPv4 default route leaves by eth1"),
    ({"net/ipv4/conf/eth0/rp_filter": "2", "net/ipv4/conf/all/rp_filter": "0"},
     ((4, "eth1", 3),), doctor.check_rp_filter, None),
    ({"net/ipv4/icmp_ratelimit": "5000"}, DEFAULTS, doctor.check_icmp_ratelimit,
     "FAIL icmp-ratelimit: net.ipv4.icmp_ratelimit is 5000 ms"),
    ({"net/ipv4/icmp_ratelimit": "5000", "net/ipv4/icmp_ratemask": "0"}, DEFAULTS,
     doctor.check_icmp_ratelimit, None),
    ({"net/ipv4/icmp_msgs_per_sec": "10"}, DEFAULTS, doctor.check_icmp_ratelimit,
     "FAIL icmp-ratelimit: net.ipv4.icmp_msgs_per_sec is 10"),
    ({"net/ipv6/icmp/ratelimit": "3000"}, DEFAULTS, doctor.check_icmp_ratelimit,
     "FAIL icmp-ratelimit: net.ipv6.icmp.ratelimit is 3000 ms"),
]


@pytest.mark.parametrize("sysctl,defaults,check,expected", SYSCTL_CASES)
def test_doctor_sysctl_checks(sysctl, defaults, check, expected):
    found = lines(check(facts(sysctl=sysctl, defaults=defaults)))
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith(expected), found
        assert " Fix: sysctl -w " in found[0]


def test_doctor_without_an_uplink_says_what_it_did_not_check():
    found = doctor.check_rp_filter(facts(uplinks=(), defaults=(),
                                         sysctl={"net/ipv4/conf/all/rp_filter": "1"}))
    assert [(f.level, f.fix) for f in found] == [
        ("note", "name the interfaces probes arrive on: --uplink IFACE (repeatable)")]


def test_doctor_routes_names_the_shadowing_route():
    ok = [Lookup(str(V4.hop_address(k)), "198.51.100.0/29", device="rc-test")
          for k in range(1, V4.length + 1)]
    assert V4.length == 5 and doctor.check_routes(facts(lookups=tuple(ok))) == []
    shadow = ok[:3] + [Lookup(str(V4.hop_address(k)), "198.51.100.4/30", "blackhole")
                       for k in (4, 5)]
    found = lines(doctor.check_routes(facts(lookups=tuple(shadow))))
    assert found == ["FAIL routes: 198.51.100.5, 198.51.100.6 route to "
                     "198.51.100.4/30 blackhole, not into rc-test: that route shadows the "
                     "chain. Fix: ip route del blackhole 198.51.100.4/30 (or give it a higher metric "
                     "than the TUN's; `ip route get ADDR` shows it)"]
    gone = lines(doctor.check_routes(facts(links=frozenset({"lo", "eth0"}))))
    assert len(gone) == 1 and gone[0].startswith("FAIL routes: interface 'rc-test' does not")


def test_doctor_proxy_ndp_for_an_onlink_prefix():
    onlink = (("eth0", ipaddress.ip_interface("2001:db8:5::10/64")),
              ("lo", ipaddress.ip_interface("::1/128")))
    hops = [str(V6.hop_address(k)) for k in range(1, V6.length + 1)]
    found = lines(doctor.check_proxy(facts(addresses=onlink)))
    assert len(found) == 2, found
    assert found[0].startswith("FAIL proxy-ndp: 2001:db8:5::1/124 is on-link on eth0 "
                               "(2001:db8:5::10/64) but net.ipv6.conf.eth0.proxy_ndp is 0")
    assert found[1].startswith(f"FAIL proxy-ndp: 2001:db8:5::1/124 is on-link on eth0 "
                               f"(2001:db8:5::10/64) and {len(hops)} of its {len(hops)} hop "
                               f"addresses have no proxy NDP entry there ({hops[0]}, ")
    proxied = frozenset(("eth0", a) for a in hops)
    assert doctor.check_proxy(facts(addresses=onlink, proxies=proxied,
                                    sysctl={"net/ipv6/conf/eth0/proxy_ndp": "1"})) == []
    partly = lines(doctor.check_proxy(facts(addresses=onlink, proxies=proxied - {("eth0", hops[2])},
                                            sysctl={"net/ipv6/conf/all/proxy_ndp": "1"})))
    assert len(partly) == 1 and f"1 of its {len(hops)} hop addresses" in partly[0]
    assert f"({hops[2]})" in partly[0]
    ndppd = doctor.check_proxy(facts(addresses=onlink, ndppd=True,
                                     sysctl={"net/ipv6/conf/all/proxy_ndp": "1"}))
    assert [f.level for f in ndppd] == ["note"]


def test_doctor_proxy_arp_for_an_onlink_ipv4_block():
    onlink = (("eth0", ipaddress.ip_interface("198.51.100.200/24")),)
    found = lines(doctor.check_proxy(facts(addresses=onlink)))
    assert len(found) == 1 and "no proxy ARP entry there" in found[0], found
    assert doctor.check_proxy(facts(addresses=onlink,
                                    sysctl={"net/ipv4/conf/eth0/proxy_arp": "1"})) == []
    # A chain's block on another interface as a /32 is not on-link there.
    assert doctor.check_proxy(facts(addresses=(("eth0", ipaddress.ip_interface(
        "198.51.100.200/32")),))) == []


def rule(chain: str, handle: int, *expr, family: str = "inet", table: str = "t") -> dict:
    return {"rule": {"family": family, "table": table, "chain": chain, "handle": handle,
                     "expr": list(expr)}}


def base(chain: str, hook: str = "forward", policy: str = "accept", family: str = "inet",
         table: str = "t") -> dict:
    return {"chain": {"family": family, "table": table, "name": chain, "type": "filter",
                      "hook": hook, "prio": 0, "policy": policy}}


def match(left: dict, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


ICMP_TYPE = {"payload": {"protocol": "icmp", "field": "type"}}
L4 = {"meta": {"key": "l4proto"}}
OIF = {"meta": {"key": "oifname"}}
IIF = {"meta": {"key": "iifname"}}
CT = {"ct": {"key": "state"}}
TE4 = Packet("te", 4, "forward", "rc-test", "eth0", "icmp", "", "198.51.100.2", None,
             "time-exceeded", "related")
UDP4 = Packet("udp", 4, "forward", "eth0", "rc-test", "udp", "198.51.100.7", None, 33434)
TE6 = Packet("te6", 6, "forward", "rc-test", "eth0", "icmpv6", "", "2001:db8:5::2", None,
             "time-exceeded", "related")

# (ruleset, packet, (outcome, where))
FIREWALL_CASES = [
    ([base("f")], TE4, ("accepted", "")),
    ([base("f"), rule("f", 4, match(ICMP_TYPE, "time-exceeded"), {"drop": None})], TE4,
     ("dropped", "rule inet t f handle 4")),
    ([base("f"), rule("f", 4, match(ICMP_TYPE, "time-exceeded"), {"drop": None})], TE6,
     ("accepted", "")),
    ([base("f"), rule("f", 4, match(ICMP_TYPE, {"set": ["echo-request", "echo-reply"]}),
                      {"drop": None})], TE4, ("accepted", "")),
    ([base("f"), rule("f", 4, match(L4, "icmp"), {"reject": None})], TE4,
     ("dropped", "rule inet t f handle 4")),
    ([base("f", policy="drop")], UDP4, ("dropped", "policy of inet t f")),
    ([base("f", policy="drop"), rule("f", 2, match(OIF, "rc-test"), {"accept": None})], UDP4,
     ("accepted", "")),
    ([base("f", policy="drop"), rule("f", 2, match(OIF, "rc-test"), {"accept": None})], TE4,
     ("dropped", "policy of inet t f")),
    ([base("f", policy="drop"), rule("f", 2, match(CT, ["established", "related"], "in"),
                                     {"accept": None})], TE4, ("accepted", "")),
    ([base("f", policy="drop"), rule("f", 2, match(CT, ["established", "related"], "in"),
                                     {"accept": None})], UDP4, ("dropped", "policy of inet t f")),
    ([base("f"), rule("f", 3, match(IIF, "eth*"), match(L4, "udp"), {"drop": None})], UDP4,
     ("dropped", "rule inet t f handle 3")),
    ([base("f"), rule("f", 3, match(IIF, "eth0", "!="), {"drop": None})], UDP4, ("accepted", "")),
    ([base("f"), rule("f", 5, match(L4, "udp"), {"jump": {"target": "sub"}}),
      {"chain": {"family": "inet", "table": "t", "name": "sub"}},
      rule("sub", 6, match({"payload": {"protocol": "udp", "field": "dport"}},
                           {"range": [33434, 33534]}), {"drop": None})], UDP4,
     ("dropped", "rule inet t sub handle 6")),
    ([base("f"), rule("f", 7, match(L4, "icmp"), {"limit": {"rate": 10, "per": "second"}},
                      {"drop": None})], TE4, ("maybe", "rule inet t f handle 7")),
    ([base("f", family="ip6"), rule("f", 8, {"drop": None}, family="ip6")], TE4,
     ("accepted", "")),
    ([base("f", hook="input"), rule("f", 8, {"drop": None})], TE4, ("accepted", "")),
    ([base("f"), rule("f", 9, match({"payload": {"protocol": "ip", "field": "daddr"}},
                                    {"prefix": {"addr": "198.51.100.0", "len": 29}}),
                      {"drop": None})], UDP4, ("dropped", "rule inet t f handle 9")),
]


@pytest.mark.parametrize("ruleset,packet,expected", FIREWALL_CASES)
def test_doctor_firewall_evaluates_rules(ruleset, packet, expected):
    assert evaluate(ruleset, packet) == expected


def test_doctor_firewall_findings_and_notes():
    drop = [base("f"), rule("f", 4, match(L4, "icmp"), {"drop": None})]
    found = doctor.check_firewall(facts(ruleset=drop))
    assert [f.level for f in found] == ["fail"]
    assert found[0].problem == (
        "the rule inet t f handle 4 drops the icmp probe to 198.51.100.6 in on eth0, icmp "
        "time-exceeded from 198.51.100.2 out on eth0, icmp destination-unreachable from "
        "198.51.100.2 out on eth0, icmp echo-reply from 198.51.100.2 out on eth0")
    maybe = [base("f"), rule("f", 4, match(L4, "icmp"), {"xt": {"type": "match"}},
                             {"drop": None})]
    assert [f.level for f in doctor.check_firewall(facts(ruleset=maybe))] == ["note"]
    assert [f.level for f in doctor.check_firewall(facts(legacy_tables=("filter",)))] == ["note"]


def test_doctor_dns_and_report_exit_status():
    quiet = facts(dns=(("198.51.100.1:53", None),))
    assert doctor.check_dns(quiet) == []
    loud = facts(dns=(("198.51.100.1:53", None), ("[2001:db8:5::1]:53", "no answer within 2 s")))
    found = lines(doctor.check_dns(loud))
    assert found == ["FAIL dns: the built-in DNS server does not answer on [2001:db8:5::1]:53: "
                     "no answer within 2 s. Fix: systemctl status route-chain; a firewall input "
                     "rule for port 53; the address must be one of this host's"]
    text, status = doctor.report([("a", []), ("b", doctor.check_dns(loud))])
    assert (text.splitlines()[0], status) == ("ok   a", 1)
    text, status = doctor.report([("a", []), ("b", [doctor.Finding("b", "x", level="note")])])
    assert status == 0 and text == "ok   a\nok   b\nNOTE b: x.\n"


# --- in a namespace: break it, see it, fix it ----------------------------------

STORY = ["one", "two", "three", "four", "five"]


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    """The test network with a daemon serving both chains and DNS on their
    hosts, and default routes out r0."""
    work = tmp_path_factory.mktemp("doctor")
    config = work / "route-chain.toml"
    hops = ", ".join(f'"{h}"' for h in STORY)
    config.write_text(
        f'[[chain]]\naddress = "{CHAIN4}"\nhops = [{hops}]\nsuffix = "doctor.example"\n\n'
        f'[[chain]]\naddress = "{CHAIN6}"\nhops = [{hops}]\nsuffix = "doctor.example"\n\n'
        '[dns]\nlisten = ["198.18.0.1:53", "[2001:db8::1]:53"]\n')
    with TestNet.create("doc") as net:
        net.run(net.router, "ip", "route", "add", "default", "via", "192.0.2.2")
        net.run(net.router, "ip", "-6", "route", "add", "default", "via", "2001:db8:ff::2")
        with Daemon(net, "--config", str(config)) as daemon:
            daemon.wait_for("READY=1")
            yield net, config


def run_doctor(router, *args: str) -> tuple[int, str]:
    net, config = router
    result = net.run(net.router, sys.executable, "-m", "routechain", "doctor", "--config",
                     str(config), *args, check=False)
    assert not result.stderr, result.stderr
    return result.returncode, result.stdout


def failing(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("FAIL")]


def break_and_fix(router, check: str, breaks: list[list[str]], fixes: list[list[str]],
                  expect: str, *args: str) -> str:
    """Doctor passes; after `breaks`, exactly `check` fails with a line
    containing `expect` (exit 1); after `fixes`, it passes again."""
    net, _ = router
    status, out = run_doctor(router, *args)
    assert (status, failing(out)) == (0, []), out
    assert f"ok   {check}" in out.splitlines()
    try:
        for cmd in breaks:
            net.run(net.router, *cmd)
        status, out = run_doctor(router, *args)
        bad = failing(out)
        assert status == 1, out
        assert bad and all(line.startswith(f"FAIL {check}: ") for line in bad), out
        assert any(expect in line for line in bad), out
    finally:
        for cmd in fixes:
            net.run(net.router, *cmd, check=False)
    status, again = run_doctor(router, *args)
    assert (status, failing(again)) == (0, []), again
    return out


def sysctl(key: str, value) -> list[str]:
    return ["sysctl", "-qw", f"{key}={value}"]


@pytest.mark.netns
def test_doctor_netns_forwarding(router):
    out = break_and_fix(router, "forwarding",
                        [sysctl("net.ipv4.ip_forward", 0)], [sysctl("net.ipv4.ip_forward", 1)],
                        "net.ipv4.ip_forward is 0")
    assert "sysctl -w net.ipv4.ip_forward=1" in out
    # ip_forward=1 sets every interface's forwarding: restore both.
    break_and_fix(router, "forwarding", [sysctl("net.ipv6.conf.all.forwarding", 0)],
                  [sysctl("net.ipv6.conf.all.forwarding", 1)],
                  "net.ipv6.conf.all.forwarding is 0")


@pytest.mark.netns
def test_doctor_netns_accept_ra(router):
    """A default route learnt from RAs (proto ra) on an uplink whose
    accept_ra is 1 while forwarding is on."""
    ra_route = ["ip", "-6", "route", "replace", "default", "via", "2001:db8:ff::2", "dev", "r0",
                "proto", "ra"]
    static = ["ip", "-6", "route", "replace", "default", "via", "2001:db8:ff::2", "dev", "r0",
              "proto", "static"]
    net, _ = router
    net.run(net.router, *sysctl("net.ipv6.conf.r0.accept_ra", 1))
    try:
        break_and_fix(router, "accept_ra", [ra_route],
                      [sysctl("net.ipv6.conf.r0.accept_ra", 2)],
                      "net.ipv6.conf.r0.accept_ra is 1 with forwarding on")
    finally:
        net.run(net.router, *static)


@pytest.mark.netns
def test_doctor_netns_rp_filter(router):
    """Probes arrive on r0 while the IPv4 default route leaves by another
    interface: strict rp_filter on r0 drops those whose source is not
    routed back through r0."""
    net, _ = router
    net.run(net.router, "ip", "link", "add", "up2", "type", "veth", "peer", "name", "up2p")
    net.run(net.router, "ip", "link", "set", "up2", "up")
    net.run(net.router, "ip", "route", "replace", "default", "dev", "up2")
    try:
        break_and_fix(router, "rp_filter", [sysctl("net.ipv4.conf.r0.rp_filter", 1)],
                      [sysctl("net.ipv4.conf.r0.rp_filter", 2)],
                      "strict rp_filter on r0, while the IPv4 default route leaves by up2",
                      "--uplink", "r0")
    finally:
        net.run(net.router, "ip", "route", "replace", "default", "via", "192.0.2.2")
        net.run(net.router, "ip", "link", "del", "up2")
        net.run(net.router, *sysctl("net.ipv4.conf.r0.rp_filter", 0))


@pytest.mark.netns
def test_doctor_netns_shadowing_route(router):
    """A blackhole for part of the IPv4 chain and a more specific IPv6 route
    out r0: traceroute loses those hops, and doctor names both routes."""
    net, _ = router
    out = break_and_fix(
        router, "routes",
        [["ip", "route", "add", "blackhole", "198.18.0.4/30"],
         ["ip", "-6", "route", "add", "2001:db8::4/126", "via", "2001:db8:ff::2"]],
        [["ip", "route", "del", "blackhole", "198.18.0.4/30"],
         ["ip", "-6", "route", "del", "2001:db8::4/126"]],
        "198.18.0.4, 198.18.0.5, 198.18.0.6 route to 198.18.0.4/30 blackhole")
    assert any("2001:db8::4, 2001:db8::5, 2001:db8::6 route to 2001:db8::4/126 unicast via "
               "2001:db8:ff::2 dev r0" in line for line in failing(out)), out
    # What the blackhole really does: the router drops the probes before
    # their TTL counts, so a traceroute into it shows nothing at all.
    net.run(net.router, "ip", "route", "add", "blackhole", "198.18.0.4/30")
    try:
        trace = net.run(net.client, "traceroute", "-n", "-q", "1", "-w", "1", "-m", "6",
                        "198.18.0.6").stdout
    finally:
        net.run(net.router, "ip", "route", "del", "blackhole", "198.18.0.4/30")
    assert trace.count("  *") == 6, trace
    trace = net.run(net.client, "traceroute", "-n", "-q", "1", "-w", "1", "-m", "6",
                    "198.18.0.6").stdout
    assert " 6  198.18.0.6 " in trace, trace


@pytest.mark.netns
def test_doctor_netns_proxy_ndp(router):
    """r0 gets an address in a /48 that holds the IPv6 chain: the chain is
    on-link there, and needs proxy_ndp and an entry per hop on r0."""
    hops = [str(ipaddress.ip_address("2001:db8::1") + k) for k in range(1, len(STORY) + 1)]
    net, _ = router
    out = break_and_fix(
        router, "proxy-ndp",
        [["ip", "-6", "addr", "add", "2001:db8::100:10/48", "dev", "r0", "nodad"]],
        [sysctl("net.ipv6.conf.r0.proxy_ndp", 1)]
        + [["ip", "-6", "neigh", "add", "proxy", h, "dev", "r0"] for h in hops],
        f"and {len(hops)} of its {len(hops)} hop addresses have no proxy NDP entry there")
    assert any("net.ipv6.conf.r0.proxy_ndp is 0" in line for line in failing(out)), out
    # Fixed by the entries: seen by the kernel as doctor saw them.
    shown = net.run(net.router, "ip", "-6", "neigh", "show", "proxy").stdout
    assert sorted(line.split()[0] for line in shown.splitlines()) == sorted(hops)
    for h in hops:
        net.run(net.router, "ip", "-6", "neigh", "del", "proxy", h, "dev", "r0")
    net.run(net.router, "ip", "-6", "addr", "del", "2001:db8::100:10/48", "dev", "r0")
    net.run(net.router, *sysctl("net.ipv6.conf.r0.proxy_ndp", 0))


@pytest.mark.netns
def test_doctor_netns_proxy_arp(router):
    """The IPv4 chain inside a /16 on r0: on-link there, answered only with
    proxy_arp (or an entry per hop)."""
    break_and_fix(router, "proxy-ndp",
                  [["ip", "addr", "add", "198.18.200.1/16", "dev", "r0"]],
                  [sysctl("net.ipv4.conf.r0.proxy_arp", 1)],
                  f"and {len(STORY)} of its {len(STORY)} hop addresses have no proxy ARP entry "
                  "there (198.18.0.2, 198.18.0.3, 198.18.0.4, 198.18.0.5 and 1 more)")
    net, _ = router
    net.run(net.router, "ip", "addr", "del", "198.18.200.1/16", "dev", "r0")
    net.run(net.router, *sysctl("net.ipv4.conf.r0.proxy_arp", 0))


NFT_DROP_TE = """
table inet rcdoctor {
    chain rcfwd {
        type filter hook forward priority 0; policy accept;
        icmp type time-exceeded drop
    }
}
"""
NFT_POLICY_DROP = """
table inet rcdoctor {
    chain rcfwd {
        type filter hook forward priority 0; policy drop;
        oifname "route-chain" accept
        iifname "route-chain" accept
    }
}
"""
NFT_LIMITED = """
table inet rcdoctor {
    chain rcfwd {
        type filter hook forward priority 0; policy accept;
        meta l4proto icmp limit rate over 10/second drop
    }
}
"""


def nft(router, text: str) -> None:
    net, _ = router
    net.run(net.router, "nft", "-f", "-", input=text)


@pytest.mark.netns
def test_doctor_netns_firewall(router):
    """A forward rule that drops our Time Exceeded: traceroute from the
    client loses the story's hops, and doctor names the rule."""
    net, _ = router
    delete = ["nft", "delete", "table", "inet", "rcdoctor"]
    status, _ = run_doctor(router)
    assert status == 0
    nft(router, NFT_DROP_TE)
    try:
        status, out = run_doctor(router)
        trace = net.run(net.client, "traceroute", "-n", "-q", "1", "-w", "1", "-m", "4",
                        "198.18.0.6").stdout
    finally:
        net.run(net.router, *delete)
    assert status == 1, out
    bad = failing(out)
    assert len(bad) == 1 and bad[0].startswith(
        "FAIL firewall: the rule inet rcdoctor rcfwd handle "), out
    assert "drops the icmp time-exceeded from 198.18.0.2 out on r0" in bad[0], out
    assert " 2  *" in trace, trace  # what the rule really does
    assert run_doctor(router)[0] == 0
    # A drop policy with the TUN accepted both ways is fine.
    nft(router, NFT_POLICY_DROP)
    try:
        status, out = run_doctor(router)
    finally:
        net.run(net.router, *delete)
    assert (status, failing(out)) == (0, []), out
    # A rule doctor cannot decide is a note, not a failure.
    nft(router, NFT_LIMITED)
    try:
        status, out = run_doctor(router)
    finally:
        net.run(net.router, *delete)
    assert status == 0, out
    assert any(line.startswith("NOTE firewall: the rule inet rcdoctor rcfwd handle ")
               and "may drop" in line for line in out.splitlines()), out


@pytest.mark.netns
def test_doctor_netns_dns_listener(router):
    """An input rule that drops DNS to the IPv6 listener: the real query
    gets no answer."""
    rules = ["add table inet rcdoctor",
             "add chain inet rcdoctor rcin { type filter hook input priority 0 ; }",
             "add rule inet rcdoctor rcin ip6 daddr 2001:db8::1 udp dport 53 drop"]
    out = break_and_fix(router, "dns", [["nft", r] for r in rules],
                        [["nft", "delete", "table", "inet", "rcdoctor"]],
                        "does not answer on [2001:db8::1]:53: no answer within 2 s")
    assert not any("198.18.0.1:53" in line for line in failing(out)), out


@pytest.mark.netns
def test_doctor_netns_icmp_ratelimit(router):
    net, _ = router
    try:
        break_and_fix(router, "icmp-ratelimit",
                      [sysctl("net.ipv4.icmp_ratelimit", 5000),
                       sysctl("net.ipv6.icmp.ratelimit", 5000)],
                      [sysctl("net.ipv4.icmp_ratelimit", 1000),
                       sysctl("net.ipv6.icmp.ratelimit", 1000)],
                      "net.ipv4.icmp_ratelimit is 5000 ms")
    finally:
        net.run(net.router, *sysctl("net.ipv4.icmp_ratelimit", 0))
        net.run(net.router, *sysctl("net.ipv6.icmp.ratelimit", 0))


@pytest.mark.netns
def test_doctor_netns_daemon_not_running(router, tmp_path):
    """A config whose TUN does not exist: the service is not running."""
    net, config = router
    other = tmp_path / "other.toml"
    other.write_text('[daemon]\ninterface = "rc-absent"\n\n[[chain]]\naddress = "198.18.5.1/29"\n')
    result = net.run(net.router, sys.executable, "-m", "routechain", "doctor", "--config",
                     str(other), check=False)
    assert result.returncode == 1
    assert "FAIL routes: interface 'rc-absent' does not exist" in result.stdout
    result = net.run(net.router, sys.executable, "-m", "routechain", "doctor", "--config",
                     str(config), "--uplink", "eth9", check=False)
    assert (result.returncode, result.stderr) == (
        2, "route-chain: --uplink eth9: no such interface\n")


def test_doctor_bad_input_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "routechain", "doctor", "--config",
                             str(tmp_path / "missing.toml")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "missing.toml" in result.stderr
    result = subprocess.run([sys.executable, "-m", "routechain", "doctor", "--uplink", "a b"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--uplink a b: bad interface name" in result.stderr
