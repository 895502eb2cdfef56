"""The command line refuses bad input and a hostile environment with one
clear line and the right exit status (2 usage, 1 environment), leaving
nothing configured behind it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from netns import CHAIN4, TestNet
from routechain import cli
from routechain.errors import UsageError


def route_chain(*args: str, ns: TestNet | None = None, prefix: tuple[str, ...] = ()):
    """Run the command line in the test network's router namespace, or, with
    none, in a fresh empty one (unshare --net): should a refusal regress, the
    daemon it starts must never touch the host's own routes and addresses."""
    cmd = (*prefix, sys.executable, "-m", "routechain", *args)
    if ns is not None:
        return ns.run(ns.router, *cmd, check=False, timeout=30)
    return subprocess.run(("unshare", "--net", *cmd), capture_output=True, text=True,
                          timeout=30)


USAGE_ERRORS = [
    (["300.1.1.1/24"], "bad address '300.1.1.1'"),
    (["fd00::/129"], "bad prefix length '129'"),
    (["198.18.0.1/33"], "bad prefix length '33'"),
    (["198.18.0.1/24", "198.18.0.200/25"], "chains overlap: 198.18.0.1/24"),
    (["--queues", "0", "198.18.0.1/24"], "--queues 0: daemon.queues = 0 is not in 1..256"),
    (["--queues", "1024", "198.18.0.1/24"], "--queues 1024: daemon.queues = 1024 is not in"),
    (["--queues", "two", "198.18.0.1/24"], "--queues two: daemon.queues must be an integer"),
    (["--mtu", "20", "198.18.0.1/24"], "--mtu 20: daemon.mtu = 20 is not in 68..65535"),
    (["--mtu", "1000", "2001:db8::1/64"], "--mtu 1000: IPv6 chains need"),
    (["--route", "banana", "198.18.0.1/24"], "--route banana: bad route prefix 'banana'"),
    (["--interface", "a/b", "198.18.0.1/24"], "bad interface name 'a/b'"),
    (["--interface", "x" * 16, "198.18.0.1/24"], "bad interface name"),
    ([], "no chain"),
    (["--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("args,message", USAGE_ERRORS, ids=[" ".join(a) or "none"
                                                            for a, _ in USAGE_ERRORS])
def test_cli_usage_error_is_one_line_exit_2(args, message):
    r = route_chain(*args)
    assert r.returncode == 2, r
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("route-chain: "), r.stderr
    assert message in r.stderr, r.stderr


# Refusals checked in-process, never through a started daemon: on a
# regression these would put a /0 route or address on the host itself.
REFUSED = [
    (["--route", "198.19.0.1/16", "198.18.0.1/24"], "has host bits set"),
    (["0.0.0.0/0"], "0.0.0.0/0 cannot be a chain: a /0"),
    (["10.1.2.3/0"], "10.1.2.3/0 cannot be a chain: a /0"),
    (["224.0.0.1/24"], "224.0.0.1/24 cannot be a chain: a multicast"),
    (["127.0.0.2/8"], "127.0.0.2/8 cannot be a chain: loopback"),
    (["fe80::1%eth0/64"], "cannot be a chain: link-local"),
    (["169.254.0.1/16"], "cannot be a chain: link-local"),
    (["2001:db8::1%eth0/64"], "cannot be a chain: a scoped address"),
    (["::/64"], "::/64 cannot be a chain: the unspecified"),
    (["198.18.0.255/24"], "198.18.0.255/24 cannot be a chain: the broadcast address"),
]


@pytest.mark.parametrize("args,message", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_cli_refuses_what_can_never_work(args, message):
    with pytest.raises(UsageError) as info:
        cli.command_line_config(cli.run_parser().parse_args(args))
    assert message in str(info.value) and "\n" not in str(info.value)


BAD_CONFIGS = [
    ("deep", "x = " + "[" * 3000 + "]" * 3000 + "\n", "rc.toml:1: nested 3000 levels deep"),
    ("long-ns", f'[[chain]]\naddress = "{CHAIN4}"\nhops = ["x"]\n'
                f'suffix = "{".".join(["a" * 63] * 3 + ["b" * 59])}"\n'
                '[dns]\nlisten = ["127.0.0.1:5353"]\n', "the NS name 'ns.aaa"),
    ("fifo", f'[[chain]]\naddress = "{CHAIN4}"\nstory = "fifo"\n', "fifo: cannot read story: a FIFO"),
    ("device", f'[[chain]]\naddress = "{CHAIN4}"\nstory = "/dev/zero"\n',
     "/dev/zero: cannot read story: a character device"),
]


@pytest.mark.netns
@pytest.mark.parametrize("name,text,message", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_cli_bad_config_is_one_line_everywhere(tmp_path, name, text, message):
    """#8: each of these was a traceback (or a hang) at start or in `zone`,
    while `preview` took some: now start, preview and zone say the same
    one line and exit 2. Start runs in a namespace: nothing on the host."""
    os.mkfifo(tmp_path / "fifo")
    config = tmp_path / "rc.toml"
    config.write_text(text)
    with TestNet.create("bad") as net:
        for args in (["--config", str(config)], ["preview", "--config", str(config)],
                     ["zone", "--config", str(config), "-o", str(tmp_path / "zones")]):
            r = route_chain(*args, ns=net)
            assert r.returncode == 2, (args, r)
            assert r.stderr.count("\n") == 1 and r.stderr.startswith("route-chain: "), r.stderr
            assert message in r.stderr, (args, r.stderr)
        assert "route-chain" not in net.run(net.router, "ip", "-o", "link").stdout


def test_cli_version_and_help():
    r = route_chain("--version")
    assert r.returncode == 0 and r.stdout.startswith("route-chain "), r
    r = route_chain("--help")
    assert r.returncode == 0 and "ADDR/PLEN" in r.stdout and "--route" in r.stdout, r


@pytest.fixture
def net():
    with TestNet.create("cli") as net:
        yield net


def assert_nothing_configured(net: TestNet) -> None:
    addrs = net.run(net.router, "ip", "-o", "addr").stdout
    assert "198.18.0.1" not in addrs and "2001:db8::1/" not in addrs, addrs
    links = net.run(net.router, "ip", "-o", "link").stdout
    assert "route-chain" not in links, links


@pytest.mark.netns
def test_cli_interface_name_taken_exits_1(net):
    net.run(net.router, "ip", "link", "add", "route-chain", "type", "veth",
            "peer", "name", "rc-peer")
    r = route_chain("198.18.0.1/24", ns=net)
    assert r.returncode == 1, r
    assert r.stderr.strip() == ("route-chain: interface 'route-chain' already exists: "
                                "choose another with --interface"), r.stderr
    addrs = net.run(net.router, "ip", "-o", "addr", "show", "dev", "route-chain").stdout
    assert "198.18.0.1" not in addrs, addrs


@pytest.mark.netns
def test_cli_without_dev_net_tun_exits_1(net):
    """/dev/net hidden under an empty tmpfs in a private mount namespace."""
    script = ("mount -t tmpfs none /dev/net && exec " + sys.executable +
              " -m routechain 198.18.0.1/24")
    r = net.run(net.router, "unshare", "-m", "--propagation", "private", "sh", "-c", script,
                check=False)
    assert r.returncode == 1, r
    assert "/dev/net/tun is missing" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert_nothing_configured(net)


@pytest.mark.netns
def test_cli_failure_half_way_undoes_setup(net, tmp_path):
    """The DNS port is taken: that fails after the TUN, its addresses, routes
    and workers are up, and everything done before must be undone."""
    blocker = net.popen(net.router, sys.executable, "-c",
                        "import socket, time; s = socket.socket(socket.AF_INET, "
                        "socket.SOCK_DGRAM); s.bind(('127.0.0.1', 5353)); "
                        "print('bound', flush=True); time.sleep(60)",
                        stdout=subprocess.PIPE, text=True)
    try:
        assert blocker.stdout.readline().strip() == "bound"
        config = tmp_path / "rc.toml"
        config.write_text('[[chain]]\naddress = "198.18.0.1/24"\nhops = ["a", "b"]\n\n'
                          '[[route]]\nprefix = "198.19.0.0/16"\n\n'
                          '[dns]\nlisten = ["127.0.0.1:5353"]\n')
        r = route_chain("--config", str(config), "2001:db8::1/64", ns=net)
    finally:
        blocker.kill()
        blocker.wait()
    assert r.returncode == 1, r
    assert "127.0.0.1" in r.stderr and "5353" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert_nothing_configured(net)
    routes = net.run(net.router, "ip", "-o", "route").stdout
    assert "198.19.0.0" not in routes, routes


@pytest.mark.netns
def test_tun_removed_under_the_daemon_exits_1_within_seconds(net):
    """A worker whose queue fails ends the daemon with status 1 (so that
    systemd restarts it), naming the error; it never spins or hangs."""
    from netns import CHAIN4, Daemon
    with Daemon(net, CHAIN4, "--queues", "2") as daemon:
        daemon.wait_for("READY=1")
        net.run(net.router, "ip", "link", "del", "route-chain")
        assert daemon.proc.wait(5) == 1, daemon.output()
        assert "a worker stopped (queue" in daemon.output(), daemon.output()
