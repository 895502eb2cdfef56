"""What is not ours stays untouched, and what is ours is kept.

The network is tests/netns.py's; the router namespace also holds things
that are not route-chain's, made with iproute2 before the daemon starts:

    ns "router"
      lo   198.51.100.0/24 (a route), 198.51.100.1 (an address)
      r0   default via the client, IPv4 and IPv6 (routes)
      TUN "route-chain": the daemon's chains and routes

Each test records `ip` output for the foreign things before the daemon
runs and compares it after refusals, reloads and the exit; repairs are
proven by a real traceroute from the client after the loss.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from netns import CHAIN4, CHAIN6, CLIENT4, CLIENT6, Daemon, TestNet, wait_until

pytestmark = pytest.mark.netns

FOREIGN_ROUTE = "198.51.100.0/24"
FOREIGN_ADDRESS = "198.51.100.1"
TABLE = "100"


def foreign(net: TestNet) -> str:
    """The router's routes and addresses that are not on the TUN, less the
    kernel's own IPv6 link-local ones, which come and finish DAD on their
    own schedule."""
    out = []
    for cmd in (["ip", "-4", "route", "show", "table", "all"],
                ["ip", "-6", "route", "show", "table", "all"],
                ["ip", "-o", "addr", "show"]):
        out += [line for line in net.run(net.router, *cmd).stdout.splitlines()
                if "route-chain" not in line and "fe80:" not in line]
    return "\n".join(sorted(out))


def tun_addresses(net: TestNet) -> str:
    return net.run(net.router, "ip", "-o", "addr", "show", "dev", "route-chain",
                   check=False).stdout


def setup_foreign(net: TestNet) -> None:
    net.run(net.router, "ip", "route", "add", FOREIGN_ROUTE, "dev", "lo")
    net.run(net.router, "ip", "addr", "add", f"{FOREIGN_ADDRESS}/32", "dev", "lo")
    net.run(net.router, "ip", "route", "add", "default", "via", CLIENT4)
    net.run(net.router, "ip", "-6", "route", "add", "default", "via", CLIENT6)


def hops(net: TestNet, dst: str, six: bool = False, max_hops: int = 30,
         names: bool = False) -> list[str]:
    """The hop addresses (or '*') of a traceroute -n from the client; with
    names, each hop's name as the client's resolver gives it (or its
    address when there is none)."""
    trace = net.run(net.client, "traceroute", "-6" if six else "-4", *([] if names else ["-n"]),
                    "-q", "1", "-w", "1", "-m", str(max_hops), dst, timeout=120).stdout
    return re.findall(r"^\s*\d+\s+(\S+)", trace, re.MULTILINE)


@pytest.mark.parametrize("args, says", [
    (["--route", FOREIGN_ROUTE], f"a route to {FOREIGN_ROUTE} metric 0 already exists (dev lo"),
    (["--route", "0.0.0.0/0"], "a route to 0.0.0.0/0 metric 0 already exists (via 192.0.2.2 dev r0"),
    (["--route", "::/0"], "a route to ::/0 metric 1024 already exists (via 2001:db8:ff::2 dev r0"),
    (["198.51.100.1/24"], "address 198.51.100.1 is already on interface 'lo'"),
    (["192.0.2.1/30"], "address 192.0.2.1 is already on interface 'r0'"),
])
def test_start_refuses_what_is_not_ours_and_leaves_it(args, says):
    """A route that exists or an address on another interface: exit 1 with
    one line naming it and what holds it; nothing foreign changed and
    nothing of ours left behind."""
    with TestNet.create("dr") as net:
        setup_foreign(net)
        before = foreign(net)
        with Daemon(net, CHAIN4, *args) as daemon:
            assert daemon.proc.wait(20) == 1, daemon.output()
            lines = daemon.output().strip().splitlines()
            assert len(lines) == 1 and says in lines[0], daemon.output()
        assert foreign(net) == before
        assert tun_addresses(net) == ""


def test_exit_removes_only_what_was_added():
    """Routes beside foreign ones (another metric, another table) and a
    chain in a prefix the host also routes elsewhere: at exit exactly ours
    are gone, the foreign ones are as they were."""
    with TestNet.create("dx") as net:
        setup_foreign(net)
        before = foreign(net)
        with Daemon(net, CHAIN4, CHAIN6, "--route", "0.0.0.0/0", "--route", "::/0",
                    "--route-metric", "500") as daemon:
            daemon.wait_for("READY=1")
            routes = net.run(net.router, "ip", "route", "show", "default").stdout
            assert "dev route-chain" in routes and "via 192.0.2.2 dev r0" in routes, routes
            assert hops(net, "198.18.0.4") == ["192.0.2.1", "198.18.0.2", "198.18.0.3",
                                               "198.18.0.4"]
            assert daemon.stop() == 0, daemon.output()
        assert foreign(net) == before


def test_reload_skips_what_is_not_ours_and_keeps_serving(tmp_path):
    """A reload asking for a foreign route and an address held elsewhere
    applies the rest, warns about both, and touches neither."""
    config = tmp_path / "rc.toml"
    config.write_text(f'[[chain]]\naddress = "{CHAIN4}"\n')
    with TestNet.create("ds") as net:
        setup_foreign(net)
        before = foreign(net)
        with Daemon(net, "--config", str(config)) as daemon:
            daemon.wait_for("READY=1")
            config.write_text(
                f'[[chain]]\naddress = "{CHAIN4}"\n\n'
                '[[chain]]\naddress = "198.51.100.1/24"\n\n'
                '[[chain]]\naddress = "198.19.0.1/24"\n\n'
                f'[[route]]\nprefix = "{FOREIGN_ROUTE}"\n\n'
                '[[route]]\nprefix = "198.19.128.0/17"\ntable = 100\n')
            daemon.reload()
            out = daemon.output()
            assert "already on interface 'lo'; route-chain never takes over an address it " \
                   "did not add: chain 198.51.100.1/24 left out" in out, out
            assert f"a route to {FOREIGN_ROUTE} metric 0 already exists (dev lo" in out, out
            assert "reloaded: 2 chains, 1 routes" in out, out
            assert foreign(net) == before
            assert "198.19.0.1/24" in tun_addresses(net)
            assert "198.19.128.0/17 dev route-chain" in net.run(
                net.router, "ip", "route", "show", "table", TABLE).stdout
            assert hops(net, "198.19.0.3") == ["192.0.2.1", "198.19.0.2", "198.19.0.3"]
            assert daemon.stop() == 0, daemon.output()
        assert foreign(net) == before
        assert net.run(net.router, "ip", "route", "show", "table", TABLE).stdout == ""


def repairs_logged(daemon: Daemon) -> int:
    return int(re.search(r"repairs: (\d+)", daemon.log_counters()).group(1))


def test_deleted_address_comes_back():
    """`ip addr del` of a chain's address: it is put back, logged once,
    counted, and a traceroute through the chain works again. The chain's
    prefix route is the daemon's own, and went too: the kernel flushes a
    device's IPv4 routes with its last IPv4 address, and says nothing of
    it; the repair finds it missing in the dump and puts it back as well."""
    with TestNet.create("dd") as net, Daemon(net, CHAIN4, CHAIN6) as daemon:
        daemon.wait_for("READY=1")
        net.run(net.router, "ip", "addr", "del", CHAIN4, "dev", "route-chain")
        wait_until(lambda: CHAIN4 in tun_addresses(net), what="address back")
        assert hops(net, "198.18.0.4") == ["192.0.2.1", "198.18.0.2", "198.18.0.3",
                                           "198.18.0.4"]
        assert daemon.output().count(f"put back address {CHAIN4}, route 198.18.0.0/24 "
                                     "metric 0\n") == 1, daemon.output()
        assert repairs_logged(daemon) == 2, daemon.output()


def test_link_flap_brings_back_ipv6_and_table_routes():
    """Link down and up drops the TUN's IPv6 address and its table-100
    routes in the kernel: all come back, and traceroute works again."""
    with TestNet.create("df") as net, Daemon(net, CHAIN4, CHAIN6, "--route", "198.19.0.0/16",
                                             "--route", "2001:db8:1::/48",
                                             "--route-table", TABLE) as daemon:
        daemon.wait_for("READY=1")
        net.run(net.router, "ip", "link", "set", "route-chain", "down")
        net.run(net.router, "ip", "link", "set", "route-chain", "up")

        def restored() -> bool:
            table = net.run(net.router, "ip", "route", "show", "table", "all").stdout + \
                net.run(net.router, "ip", "-6", "route", "show", "table", TABLE).stdout
            return CHAIN6 in tun_addresses(net) and "198.19.0.0/16 dev route-chain" in table \
                and "2001:db8:1::/48 dev route-chain" in table

        wait_until(restored, what="IPv6 address and table-100 routes back")
        assert hops(net, "2001:db8::4", six=True) == ["2001:db8:ff::1", "2001:db8::2",
                                                      "2001:db8::3", "2001:db8::4"]
        assert repairs_logged(daemon) >= 3, daemon.output()
        assert "put back" in daemon.output()


def threads(daemon: Daemon, net: TestNet) -> int:
    pid = net.run(net.router, "ip", "netns", "pids", net.router).stdout.split()[0]
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def test_repairs_survive_a_flood_reloads_deletions_and_flaps(tmp_path):
    """Everything at once for about ten seconds: a paced ping flood through
    the chain, reloads (good and broken configs), address deletions and
    link flaps. At the end the daemon still serves both families, every
    address and route is back, and it runs as many threads as before."""
    config = tmp_path / "rc.toml"
    good = (f'[[chain]]\naddress = "{CHAIN4}"\n\n[[chain]]\naddress = "{CHAIN6}"\n\n'
            '[[chain]]\naddress = "198.19.0.1/24"\n\n'
            '[[route]]\nprefix = "198.19.128.0/17"\ntable = 100\n')
    config.write_text(good)
    with TestNet.create("dc") as net, Daemon(net, "--config", str(config)) as daemon:
        daemon.wait_for("READY=1")
        before = threads(daemon, net)
        flood = net.popen(net.client, "ping", "-4", "-q", "-i", "0.002", "-c", "5000", "-W", "1",
                          "198.18.0.6", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for step in range(16):
            action = step % 4
            if action == 0:
                config.write_text(good if step % 8 == 0 else good.replace("198.19.0.1", "198.19.0.9"))
                daemon.reload()
            elif action == 1:
                net.run(net.router, "ip", "addr", "del", CHAIN4, "dev", "route-chain", check=False)
            elif action == 2:
                net.run(net.router, "ip", "link", "set", "route-chain", "down")
                net.run(net.router, "ip", "link", "set", "route-chain", "up")
            else:
                config.write_text('[[chain]]\naddress = "300.1.1.1/24"\n')
                assert "reload failed" in daemon.reload()["STATUS"]
            time.sleep(0.5)
        flood.communicate(timeout=60)
        config.write_text(good)
        daemon.reload()

        def whole() -> bool:
            addrs = tun_addresses(net)
            table = net.run(net.router, "ip", "route", "show", "table", TABLE).stdout
            return all(a in addrs for a in (CHAIN4, CHAIN6, "198.19.0.1/24")) \
                and "198.19.128.0/17 dev route-chain" in table

        wait_until(whole, timeout=20, what="every address and route back: " + tun_addresses(net)
                   + net.run(net.router, "ip", "route", "show", "table", TABLE).stdout
                   + daemon.output())
        assert daemon.proc.poll() is None, daemon.output()
        assert hops(net, "198.18.0.4") == ["192.0.2.1", "198.18.0.2", "198.18.0.3",
                                           "198.18.0.4"]
        assert hops(net, "2001:db8::4", six=True) == ["2001:db8:ff::1", "2001:db8::2",
                                                      "2001:db8::3", "2001:db8::4"]
        assert repairs_logged(daemon) >= 4, daemon.output()
        assert threads(daemon, net) == before
        assert "Traceback" not in daemon.output(), daemon.output()


RELOAD_WITHOUT_MONITOR = """
import json, subprocess, sys
from routechain import config
from routechain.desired import Keeper
from routechain.netlink import Link
from routechain.tun import Tun
conf = config.merge(config.Config(), config.load(sys.argv[1]))
with Tun("route-chain", 1), Link("route-chain") as link:
    link.set_up()
    keeper = Keeper(link)
    keeper.adopt(conf, strict=True)
    for cmd in (["ip", "addr", "del", sys.argv[2], "dev", "route-chain"],
                ["ip", "route", "del", "198.19.128.0/17", "table", "100"]):
        subprocess.run(cmd, check=True)
    applied = keeper.adopt(conf, strict=False)
    shown = subprocess.run(["ip", "-o", "addr", "show", "dev", "route-chain"], text=True,
                           capture_output=True).stdout
    shown += subprocess.run(["ip", "route", "show", "table", "100"], text=True,
                            capture_output=True).stdout
    print(json.dumps([keeper.repairs, list(applied.warnings), shown]))
"""


def test_reload_compares_with_the_kernel_not_with_memory(tmp_path):
    """With no monitor running, an adopt of the same configuration (what a
    SIGHUP does) finds the deleted address and route in the kernel's dump,
    puts both back and counts two repairs."""
    import json
    import sys
    config = tmp_path / "rc.toml"
    config.write_text(f'[[chain]]\naddress = "{CHAIN4}"\n\n[[chain]]\naddress = "{CHAIN6}"\n\n'
                      '[[route]]\nprefix = "198.19.128.0/17"\ntable = 100\n')
    with TestNet.create("dm") as net:
        out = net.run(net.router, sys.executable, "-c", RELOAD_WITHOUT_MONITOR, str(config),
                      CHAIN6, cwd="/").stdout
        repairs, warnings, shown = json.loads(out)
        assert repairs == 2, (warnings, shown)
        assert CHAIN6 in shown and CHAIN4 in shown and "198.19.128.0/17 dev route-chain" in shown
        assert any("put back address 2001:db8::1/64, route 198.19.128.0/17" in w
                   for w in warnings), warnings


def test_an_address_moved_to_another_interface_is_not_taken_back():
    """An operator puts a chain's address on lo, then deletes ours: the
    repair leaves lo's alone, says so once, and puts back what else goes."""
    with TestNet.create("dv") as net, Daemon(net, CHAIN4, CHAIN6) as daemon:
        daemon.wait_for("READY=1")
        net.run(net.router, "ip", "addr", "add", CHAIN4, "dev", "lo")
        net.run(net.router, "ip", "addr", "del", CHAIN4, "dev", "route-chain")
        wait_until(lambda: "already on interface 'lo'" in daemon.output(), what="the warning")
        net.run(net.router, "ip", "addr", "del", CHAIN6, "dev", "route-chain")
        wait_until(lambda: CHAIN6 in tun_addresses(net), what="the IPv6 address back")
        assert CHAIN4 not in tun_addresses(net)
        assert CHAIN4 in net.run(net.router, "ip", "-o", "addr", "show", "dev", "lo").stdout
        assert daemon.output().count("already on interface 'lo'") == 1, daemon.output()


def test_chain_routes_take_the_configured_protocol_table_and_metric(tmp_path):
    """[daemon] route_*: each chain's prefix route is the daemon's, in its
    table with its metric and protocol, and the kernel adds none of its
    own; a reload cannot change the protocol (the routes keep theirs, and
    a warning says so) but moves the routes to a new table."""
    config = tmp_path / "rc.toml"
    daemon_table = '[daemon]\nroute_protocol = {}\nroute_table = {}\nroute_metric = 50\n\n'
    chains = f'[[chain]]\naddress = "{CHAIN4}"\n\n[[chain]]\naddress = "{CHAIN6}"\n'
    config.write_text(daemon_table.format(200, TABLE) + chains)

    def routes(table: str) -> list[str]:
        shown = [line.strip() for family in ("-4", "-6") for line in net.run(
            net.router, "ip", family, "route", "show", "table", table).stdout.splitlines()]
        return [line for line in shown if "route-chain" in line and "fe80::" not in line]

    with TestNet.create("dp") as net, Daemon(net, "--config", str(config)) as daemon:
        daemon.wait_for("READY=1")
        assert routes(TABLE) == ["198.18.0.0/24 dev route-chain proto 200 metric 50",
                                 "2001:db8::/64 dev route-chain proto 200 metric 50 pref medium"]
        assert routes("main") == []
        config.write_text(daemon_table.format(201, 101) + chains)
        assert "reload failed" not in daemon.reload()["STATUS"], daemon.output()
        assert ("reload: daemon.route_protocol changes only at a restart: keeping 200, "
                "not 201") in daemon.output()
        assert routes(TABLE) == []
        assert routes("101") == ["198.18.0.0/24 dev route-chain proto 200 metric 50",
                                 "2001:db8::/64 dev route-chain proto 200 metric 50 pref medium"]
        assert daemon.stop() == 0, daemon.output()


def test_moving_the_only_ipv4_host_keeps_the_routes(tmp_path):
    """A reload that moves the TUN's only IPv4 address inside its prefix
    deletes the old one first (a clash), and the kernel silently flushes
    the link's IPv4 routes with its last IPv4 address: the chain's route
    and the extra route are there again after, not counted as repairs,
    and the moved chain answers."""
    config = tmp_path / "rc.toml"
    extra = '[[route]]\nprefix = "198.19.128.0/17"\ntable = 100\n'
    config.write_text(f'[[chain]]\naddress = "{CHAIN4}"\n\n{extra}')
    with TestNet.create("dm4") as net, Daemon(net, "--config", str(config)) as daemon:
        daemon.wait_for("READY=1")
        config.write_text(f'[[chain]]\naddress = "198.18.0.9/24"\n\n{extra}')
        assert "reload failed" not in daemon.reload()["STATUS"], daemon.output()
        assert "198.18.0.9/24" in tun_addresses(net) and CHAIN4 not in tun_addresses(net)
        assert "198.18.0.0/24 dev route-chain proto 151" in net.run(
            net.router, "ip", "route", "show").stdout
        assert "198.19.128.0/17 dev route-chain proto 151" in net.run(
            net.router, "ip", "route", "show", "table", TABLE).stdout
        assert hops(net, "198.18.0.11") == ["192.0.2.1", "198.18.0.10", "198.18.0.11"]
        assert "repaired" not in daemon.output(), daemon.output()
        assert repairs_logged(daemon) == 0, daemon.output()


def global_addresses(net: TestNet) -> list[str]:
    """The TUN's addresses as iproute2 lists them, less the kernel's own
    IPv6 link-local one."""
    return re.findall(r"inet6? (\S+)", "\n".join(
        line for line in tun_addresses(net).splitlines() if "fe80:" not in line))


def test_assign_route_takes_the_prefix_routes_alone_and_switches_at_reload(tmp_path):
    """[daemon] assign = "route": no address on the TUN (iproute2 says so),
    each chain's prefix route with our protocol, and a traceroute from the
    client through the chain as with addresses; the host address itself
    is answered as what lies below hop 1 (Destination Unreachable from
    hop 1). A reload to "address" adds the addresses, and back to "route"
    removes them, the routes staying throughout."""
    config = tmp_path / "rc.toml"
    body = f'[[chain]]\naddress = "{CHAIN4}"\n\n[[chain]]\naddress = "{CHAIN6}"\n'
    config.write_text('[daemon]\nassign = "route"\n\n' + body)
    with TestNet.create("da") as net:
        setup_foreign(net)
        before = foreign(net)
        with Daemon(net, "--config", str(config)) as daemon:
            daemon.wait_for("READY=1")
            assert global_addresses(net) == []
            routes = net.run(net.router, "ip", "route", "show", "dev", "route-chain").stdout
            assert "198.18.0.0/24 proto 151" in routes, routes
            routes6 = net.run(net.router, "ip", "-6", "route", "show", "dev",
                              "route-chain").stdout
            assert "2001:db8::/64 proto 151" in routes6, routes6
            assert hops(net, "198.18.0.4") == ["192.0.2.1", "198.18.0.2", "198.18.0.3",
                                               "198.18.0.4"]
            assert hops(net, "2001:db8::3", six=True) == ["2001:db8:ff::1", "2001:db8::2",
                                                          "2001:db8::3"]
            ping = net.run(net.client, "ping", "-c", "1", "-W", "2", "198.18.0.1",
                           check=False).stdout
            assert "From 198.18.0.2" in ping and "Unreachable" in ping, ping
            config.write_text(body)  # assign back to its default, "address"
            daemon.reload()
            assert global_addresses(net) == ["198.18.0.1/24", "2001:db8::1/64"]
            config.write_text('[daemon]\nassign = "route"\n\n' + body)
            daemon.reload()
            assert global_addresses(net) == []
            assert "198.18.0.0/24 proto 151" in net.run(
                net.router, "ip", "route", "show", "dev", "route-chain").stdout
            assert hops(net, "198.18.0.3") == ["192.0.2.1", "198.18.0.2", "198.18.0.3"]
            assert daemon.stop() == 0, daemon.output()
        assert foreign(net) == before
