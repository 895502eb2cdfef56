"""Proxy NDP and ARP by the daemon, for a VPS whose prefixes are on-link.

The upstream router has the VPS's /64 (and a /24) on-link, and knows
nothing of the chains: it asks for every address by neighbour
solicitation (ARP for IPv4), and only an answered address gets traffic.

    ns "client" (H)         ns "router" (U, upstream)      ns V (the VPS)
    +--------------+ veth  +----------------------+ veth  +------------------------+
    | c0 192.0.2.2 |-------| r0 192.0.2.1         |-------| e0 198.51.100.10/24     |
    | 2001:db8:ff::2|      |    2001:db8:ff::1    |       |    2001:db8:88::10/64   |
    +--------------+       | u0 198.51.100.1/24   |       |    proxy_ndp=1          |
                           |    2001:db8:88::1/64 |       | TUN "route-chain"       |
                           |    (on-link, no      |       |   2001:db8:88::1:1/112  |
                           |    chain routes)     |       |   198.51.100.129/28     |
                           +----------------------+       +------------------------+

With `[daemon] proxy_uplinks = ["e0"]` route-chain keeps a proxy entry on
e0 for every address of both chains; `ip neigh show proxy` is the
independent check.
"""

from __future__ import annotations

import os
import signal

import pytest

from netns import Daemon, TestNet, sh, wait_until
from test_desired import hops

pytestmark = pytest.mark.netns

CHAIN6, CHAIN4 = "2001:db8:88::1:1/112", "198.51.100.129/28"
EXTRA6 = "2001:db8:88::2:1/112"
STORY = 'hops = ["one", "two", "three"]\n'
ADDRESSES6 = [f"2001:db8:88::1:{i}" for i in range(1, 5)]     # host and three hops
ADDRESSES4 = [f"198.51.100.{i}" for i in range(129, 133)]
EXTRA_ADDRESSES6 = [f"2001:db8:88::2:{i}" for i in range(1, 5)]
UPSTREAM4, UPSTREAM6, VPS4, VPS6 = "198.51.100.1", "2001:db8:88::1", "198.51.100.10", \
    "2001:db8:88::10"


def chains(*addresses: str) -> str:
    return "".join(f'[[chain]]\naddress = "{a}"\n{STORY}\n' for a in addresses)


def config_text(uplinks: bool, *addresses: str) -> str:
    daemon = '[daemon]\nproxy_uplinks = ["e0"]\n\n' if uplinks else ""
    return daemon + chains(*addresses)


@pytest.fixture
def onlink():
    """H, U and V as drawn above; V's chains unknown to U."""
    net = TestNet.create("px")
    vps = f"rc-px-v{os.getpid()}"
    try:
        net.add_router(vps)
        sh("ip", "-n", net.router, "link", "add", "u0", "type", "veth", "peer", "name", "e0",
           "netns", vps)
        net.run(vps, "sysctl", "-qw", "net.ipv6.conf.e0.proxy_ndp=1")
        for ns, dev, v4, v6 in ((net.router, "u0", UPSTREAM4, UPSTREAM6),
                                (vps, "e0", VPS4, VPS6)):
            sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        net.run(vps, "ip", "route", "add", "default", "via", UPSTREAM4)
        net.run(vps, "ip", "-6", "route", "add", "default", "via", UPSTREAM6)
        yield net, vps
    finally:
        net.close()


def proxied(net: TestNet, vps: str) -> list[str]:
    """`ip neigh show proxy` on V, both families, one 'ADDRESS dev proto' each."""
    out = net.run(vps, "ip", "-d", "neigh", "show", "proxy").stdout
    return sorted(" ".join(line.split()) for line in out.splitlines())


def ours(*addresses: str) -> list[str]:
    return sorted(f"{a} dev e0 proxy proto 151" for a in addresses)


def start(net: TestNet, vps: str, tmp_path, text: str) -> Daemon:
    (tmp_path / "rc.toml").write_text(text)
    daemon = Daemon(net, "--config", str(tmp_path / "rc.toml"), ns=vps)
    daemon.wait_for("READY=1")
    return daemon


def test_without_uplinks_the_upstream_gets_no_answer(onlink, tmp_path):
    """The chain's route and addresses are there, but U never learns where
    the destination is: past V's own hop, nothing."""
    net, vps = onlink
    with start(net, vps, tmp_path, config_text(False, CHAIN6, CHAIN4)) as daemon:
        assert proxied(net, vps) == []
        assert hops(net, "2001:db8:88::1:4", six=True, max_hops=4) == [
            "2001:db8:ff::1", "*", "*", "*"]
        assert daemon.stop() == 0, daemon.output()


def test_uplinks_answer_for_every_chain_address(onlink, tmp_path):
    """Exactly the hosts and hop addresses, ours (proto 151); U finds them
    and the client traces both stories; at exit ours are gone."""
    net, vps = onlink
    with start(net, vps, tmp_path, config_text(True, CHAIN6, CHAIN4)) as daemon:
        assert proxied(net, vps) == ours(*ADDRESSES6, *ADDRESSES4)
        assert hops(net, "2001:db8:88::1:4", six=True) == [
            "2001:db8:ff::1", VPS6, "2001:db8:88::1:2", "2001:db8:88::1:3", "2001:db8:88::1:4"]
        assert hops(net, "198.51.100.132") == ["192.0.2.1", VPS4, "198.51.100.130",
                                               "198.51.100.131", "198.51.100.132"]
        assert daemon.stop() == 0, daemon.output()
    assert proxied(net, vps) == []


def test_proxy_entries_follow_reloads_and_come_back(onlink, tmp_path):
    """A reload that adds a chain adds its entries, one that drops it
    removes them; `ip -6 neigh del proxy` of one is put back by the keeper
    (the kernel reports nothing: it looks), logged and counted."""
    net, vps = onlink
    with start(net, vps, tmp_path, config_text(True, CHAIN6)) as daemon:
        assert proxied(net, vps) == ours(*ADDRESSES6)
        (tmp_path / "rc.toml").write_text(config_text(True, CHAIN6, EXTRA6))
        daemon.reload()
        assert proxied(net, vps) == ours(*ADDRESSES6, *EXTRA_ADDRESSES6)
        assert hops(net, "2001:db8:88::2:3", six=True) == [
            "2001:db8:ff::1", VPS6, "2001:db8:88::2:2", "2001:db8:88::2:3"]
        (tmp_path / "rc.toml").write_text(config_text(True, CHAIN6))
        daemon.reload()
        assert proxied(net, vps) == ours(*ADDRESSES6)
        net.run(vps, "ip", "-6", "neigh", "del", "proxy", ADDRESSES6[2], "dev", "e0")
        wait_until(lambda: proxied(net, vps) == ours(*ADDRESSES6), timeout=10,
                   what="the deleted entry back")
        wait_until(lambda: f"put back proxy entry {ADDRESSES6[2]} on e0" in daemon.output(),
                   what="the repair logged")
        daemon.signal(signal.SIGUSR1)
        wait_until(lambda: "repairs: 1 " in daemon.output(), what="the repair counted")
        (tmp_path / "rc.toml").write_text(config_text(False, CHAIN6))
        daemon.reload()
        assert proxied(net, vps) == []
        assert daemon.stop() == 0, daemon.output()


def test_an_entry_that_is_not_ours_is_left_alone(onlink, tmp_path):
    """An operator's own entry for a hop (from the old by-hand advice) is
    neither taken over nor removed: said once at start, there at exit as
    it was; every other address gets ours."""
    net, vps = onlink
    net.run(vps, "ip", "-6", "neigh", "add", "proxy", ADDRESSES6[1], "dev", "e0")
    theirs = f"{ADDRESSES6[1]} dev e0 proxy"
    with start(net, vps, tmp_path, config_text(True, CHAIN6)) as daemon:
        assert proxied(net, vps) == sorted(ours(ADDRESSES6[0], *ADDRESSES6[2:]) + [theirs])
        assert daemon.output().count(f"a proxy entry for {ADDRESSES6[1]} on e0 is not "
                                     "route-chain's: left as it is") == 1, daemon.output()
        assert hops(net, "2001:db8:88::1:4", six=True)[-1] == "2001:db8:88::1:4"
        assert daemon.stop() == 0, daemon.output()
    assert proxied(net, vps) == [theirs]


def test_proxy_ndp_off_is_said_and_nothing_else_is_wrong(onlink, tmp_path):
    """With proxy_ndp off on the uplink the entries are in place but the
    kernel ignores them: the daemon says which sysctl, and once it is set
    the story traces with no restart."""
    net, vps = onlink
    net.run(vps, "sysctl", "-qw", "net.ipv6.conf.e0.proxy_ndp=0")
    with start(net, vps, tmp_path, config_text(True, CHAIN6)) as daemon:
        assert "net.ipv6.conf.e0.proxy_ndp is 0: the kernel ignores the proxy entries on e0 " \
               "until it is 1" in daemon.output(), daemon.output()
        assert proxied(net, vps) == ours(*ADDRESSES6)
        assert hops(net, "2001:db8:88::1:4", six=True, max_hops=4)[2:] == ["*", "*"]
        net.run(vps, "sysctl", "-qw", "net.ipv6.conf.e0.proxy_ndp=1")
        assert hops(net, "2001:db8:88::1:4", six=True)[-1] == "2001:db8:88::1:4"
        assert daemon.stop() == 0, daemon.output()
