"""Daemon options as the kernel sees them: interface name, queue count, MTU,
txqueuelen, addresses (IPv6 without DAD) and extra routes with table and
metric; all of it gone after SIGTERM."""

from __future__ import annotations

import os
import re

import pytest

from netns import CHAIN4, CHAIN6, Daemon, TestNet

pytestmark = pytest.mark.netns


def test_options_configure_the_link_and_routes():
    with TestNet.create("op") as net:
        with Daemon(net, "--interface", "rc-opts", "--queues", "3", "--mtu", "1400",
                    "--txqueuelen", "64", "--route", "2001:db8:1::/48", "--route", "198.19.0.0/16",
                    "--route-table", "100", "--route-metric", "7", CHAIN4, CHAIN6) as daemon:
            daemon.wait_for("READY=1")
            link = net.run(net.router, "ip", "-o", "link", "show", "rc-opts").stdout
            assert "mtu 1400" in link and ",UP," in link and "qlen 64" in link, link
            queues = net.run(net.router, "ls", "/sys/class/net/rc-opts/queues").stdout.split()
            assert sorted(q for q in queues if q.startswith("rx-")) == ["rx-0", "rx-1", "rx-2"]
            addrs = net.run(net.router, "ip", "-o", "addr", "show", "dev", "rc-opts").stdout
            assert "inet 198.18.0.1/24" in addrs, addrs
            assert re.search(r"inet6 2001:db8::1/64 scope global nodad", addrs), addrs
            for family, prefix in (("-6", "2001:db8:1::/48"), ("-4", "198.19.0.0/16")):
                routes = net.run(net.router, "ip", family, "-o", "route", "show", "table",
                                 "100").stdout
                assert re.search(rf"^{re.escape(prefix)} dev rc-opts .*metric 7", routes,
                                 re.MULTILINE), routes
            out = net.run(net.client, "traceroute", "-n", "-q", "1", "-w", "1",
                          "198.18.0.3").stdout
            assert re.findall(r"^\s*\d+\s+(\S+)", out, re.MULTILINE)[-1] == "198.18.0.3", out
            assert daemon.stop() == 0, daemon.output()
        assert net.run(net.router, "ip", "link", "show", "rc-opts", check=False).returncode != 0
        for family in ("-4", "-6"):
            left = net.run(net.router, "ip", family, "route", "show", "table", "100").stdout
            assert left.strip() == "", left


def test_queues_default_to_the_cpus_we_may_run_on():
    with TestNet.create("oq") as net:
        with Daemon(net, CHAIN4) as daemon:
            daemon.wait_for("READY=1")
            queues = net.run(net.router, "ls", "/sys/class/net/route-chain/queues").stdout.split()
            assert len([q for q in queues if q.startswith("rx-")]) == len(os.sched_getaffinity(0))


def test_options_mtu_and_txqueuelen_follow_a_reload(tmp_path):
    """Set live by SIGHUP; a config that stops saying leaves them as they are."""
    conf = tmp_path / "rc.toml"
    chain = f'[[chain]]\naddress = "{CHAIN4}"\n'
    conf.write_text(f"[daemon]\nmtu = 1400\ntxqueuelen = 64\n\n{chain}")
    with TestNet.create("ot") as net, Daemon(net, "--config", str(conf)) as daemon:
        daemon.wait_for("READY=1")

        def link() -> str:
            return net.run(net.router, "ip", "-o", "link", "show", "route-chain").stdout

        assert "mtu 1400" in link() and "qlen 64" in link(), link()
        for text, mtu, qlen in (("[daemon]\nmtu = 1300\ntxqueuelen = 200\n\n", 1300, 200),
                                ("", 1300, 200)):
            conf.write_text(text + chain)
            daemon.reload()
            assert f"mtu {mtu}" in link() and f"qlen {qlen}" in link(), (text, link())



def test_delays_shorten_the_queue_unless_told(tmp_path):
    """A chain that delays replies gets a 64-probe queue (a probe behind a
    full 500 waits milliseconds before its delay even starts); the queue
    goes back to the kernel's 500 when no chain delays any more, and a
    length the config gives wins over both."""
    conf = tmp_path / "rc.toml"
    chain = f'[[chain]]\naddress = "{CHAIN4}"\n'
    conf.write_text(chain + 'delay = "10ms"\n')
    with TestNet.create("oq") as net, Daemon(net, "--config", str(conf)) as daemon:
        daemon.wait_for("READY=1")

        def qlen() -> str:
            out = net.run(net.router, "ip", "-o", "link", "show", "route-chain").stdout
            return re.search(r"qlen (\d+)", out).group(1)

        assert qlen() == "64"
        for text, want in ((chain, "500"), (chain + 'jitter = "1ms"\n', "64"),
                           ("[daemon]\ntxqueuelen = 300\n\n" + chain + 'delay = "5ms"\n', "300"),
                           (chain, "300")):
            conf.write_text(text)
            daemon.reload()
            assert qlen() == want, (text, qlen())
