"""Reload on SIGHUP applies what changed without a gap: chains that did not
change keep answering every probe while chains come and go, and each added
or removed chain's address and route follow on the TUN.

The network is tests/netns.py's; the daemon reads a config file that the
test rewrites between SIGHUPs.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from netns import CHAIN4, Daemon, TestNet

pytestmark = pytest.mark.netns

EXTRA = "198.19.0.1/24"
ROUTE = "198.19.128.0/17"


def write_config(path, extra: bool) -> None:
    text = f'[[chain]]\naddress = "{CHAIN4}"\n'
    if extra:
        text += f'\n[[chain]]\naddress = "{EXTRA}"\nhops = ["one", "two", "three"]\n'
        text += f'\n[[route]]\nprefix = "{ROUTE}"\n'
    path.write_text(text)


def test_reload_loses_no_probe_and_applies_addresses(tmp_path):
    config = tmp_path / "rc.toml"
    write_config(config, extra=False)
    with TestNet.create("rl") as net, Daemon(net, "--config", str(config)) as daemon:
        daemon.wait_for("READY=1")
        # 600 pings 5 ms apart (3 s) while the config flips six times.
        ping = net.popen(net.client, "ping", "-4", "-c", "600", "-i", "0.005", "-W", "1",
                         "198.18.0.6", stdout=-1, stderr=-1, text=True)
        for flip in range(6):
            time.sleep(0.4)
            write_config(config, extra=flip % 2 == 0)
            daemon.reload()
            addrs = net.run(net.router, "ip", "-o", "addr", "show", "dev", "route-chain").stdout
            routes = net.run(net.router, "ip", "-o", "route").stdout
            if flip % 2 == 0:
                assert "198.19.0.1/24" in addrs and ROUTE in routes, (addrs, routes)
                trace = net.run(net.client, "traceroute", "-n", "-q", "1", "-w", "1",
                                "198.19.0.4").stdout
                assert re.findall(r"^\s*\d+\s+(\S+)", trace, re.MULTILINE) == [
                    "192.0.2.1", "198.19.0.2", "198.19.0.3", "198.19.0.4"], trace
            else:
                assert "198.19.0.1" not in addrs and ROUTE not in routes, (addrs, routes)
        out, _ = ping.communicate(timeout=30)
        assert " 600 received, 0% packet loss" in out, out
        assert "reloaded: " in daemon.output()


def test_reload_with_broken_config_keeps_serving(tmp_path):
    config = tmp_path / "rc.toml"
    write_config(config, extra=True)
    with TestNet.create("rb") as net, Daemon(net, "--config", str(config)) as daemon:
        daemon.wait_for("READY=1")
        config.write_text('[[chain]]\naddress = "300.1.1.1/24"\n')
        ready = daemon.reload()
        assert "reload failed" in ready["STATUS"], ready
        assert "rc.toml:2" in daemon.output() and "300.1.1.1" in daemon.output()
        out = net.run(net.client, "ping", "-c", "1", "-W", "2", "198.19.0.4").stdout
        assert "1 received" in out, out


def _deep(tmp_path) -> str:
    return "x = " + "[" * 3000 + "]" * 3000 + "\n"


def _fifo_story(tmp_path) -> str:
    os.mkfifo(tmp_path / "fifo.txt")
    return f'[[chain]]\naddress = "{EXTRA}"\nstory = "fifo.txt"\n'


def _device_story(tmp_path) -> str:
    return f'[[chain]]\naddress = "{EXTRA}"\nstory = "/dev/zero"\n'


def _long_suffix(tmp_path) -> str:
    suffix = ".".join(["a" * 63] * 3 + ["b" * 59])   # 251: ns.<suffix> is 254
    return (f'[[chain]]\naddress = "{EXTRA}"\nhops = ["x"]\nsuffix = "{suffix}"\n'
            f'\n[dns]\nlisten = ["127.0.0.1:5353"]\n')


def _multicast(tmp_path) -> str:
    return '[[chain]]\naddress = "224.0.0.1/24"\n'


# (what the file holds, what the refusal says): each of these killed the
# daemon, hung it, or was applied though it could never work (#8).
HOSTILE = [(_deep, "nested 3000 levels deep"), (_fifo_story, "a FIFO"),
           (_device_story, "a character device"), (_long_suffix, "the NS name"),
           (_multicast, "cannot be a chain")]


def test_reload_refuses_hostile_configs_and_serves_on(tmp_path):
    """Each hostile config is refused with one line ("reload failed, still
    serving the previous configuration: ...") in the log and STATUS=, the
    previous chains and zones keep answering, SIGTERM still works, and a
    good config afterwards reloads."""
    config = tmp_path / "rc.toml"
    good = (f'[[chain]]\naddress = "{CHAIN4}"\nhops = ["a", "b", "c", "d", "e"]\n'
            f'suffix = "example.net"\n\n[dns]\nlisten = ["127.0.0.1:5353"]\n')
    config.write_text(good)
    with TestNet.create("rh") as net, Daemon(net, "--config", str(config)) as daemon:
        daemon.wait_for("READY=1")
        for make, message in HOSTILE:
            config.write_text(make(tmp_path))
            ready = daemon.reload(timeout=10)
            status = ready["STATUS"]
            assert status.startswith("reload failed, still serving the previous "
                                     "configuration: "), (make.__name__, status)
            assert message in status, (make.__name__, status)
            assert "\n" not in status
            out = net.run(net.client, "ping", "-c", "1", "-W", "2", "198.18.0.6").stdout
            assert "1 received" in out, (make.__name__, out)
            ptr = net.run(net.router, "dig", "+short", "-p", "5353", "@127.0.0.1",
                          "-x", "198.18.0.3").stdout
            assert ptr.strip() == "b.example.net.", (make.__name__, ptr)
        log = daemon.output()
        assert log.count("reload failed, still serving the previous configuration") == \
            len(HOSTILE), log
        assert "Traceback" not in log, log
        config.write_text(good)
        assert "reload failed" not in daemon.reload()["STATUS"]
        assert daemon.stop() == 0, daemon.output()


def test_reload_logs_one_line_per_story_file(tmp_path):
    """#13: three chains share a story with two rewritten lines: start and
    reload each log one line for the file, never a line per rewrite or per
    chain; a line that lost its name is still warned about, once."""
    (tmp_path / "story.txt").write_text("Once upon\na time\n!!!\nend\n")
    config = tmp_path / "rc.toml"
    config.write_text("".join(f'[[chain]]\naddress = "198.{18 + i}.0.1/24"\nstory = "story.txt"\n\n'
                              for i in range(3)))
    with TestNet.create("rq") as net, Daemon(net, "--config", str(config)) as daemon:
        daemon.wait_for("READY=1")
        daemon.reload()
        log = daemon.output()
        assert log.count("story.txt: 2 story lines rewritten into host names; "
                         f"`route-chain preview --config {config}` shows each") == 2, log
        assert log.count("'!!!' has nothing a host name can hold") == 2, log
        assert "becomes" not in log, log


def test_reload_keeps_restart_only_settings_and_says_so(tmp_path):
    """A reload applies a new MTU but keeps the queue count and the DNS
    listener it started with (settings declared restart=True), and says so
    at every reload, since the daemon still runs what it started with."""
    config = tmp_path / "rc.toml"
    config.write_text(f'[daemon]\nqueues = 1\n\n[[chain]]\naddress = "{CHAIN4}"\n')
    with TestNet.create("rk") as net, Daemon(net, "--config", str(config)) as daemon:
        daemon.wait_for("READY=1")
        config.write_text(f'[daemon]\nqueues = 2\nmtu = 1400\n\n[[chain]]\n'
                          f'address = "{CHAIN4}"\n\n[dns]\nlisten = ["127.0.0.1:5353"]\n')
        for _ in range(2):
            assert "reload failed" not in daemon.reload()["STATUS"]
        log = daemon.output()
        assert log.count("reload: daemon.queues changes only at a restart: "
                         "keeping 1, not 2") == 2, log
        assert log.count("reload: dns.listen changes only at a restart: "
                         "keeping none, not 127.0.0.1:5353") == 2, log
        assert "reload: daemon.mtu" not in log, log
        link = net.run(net.router, "ip", "-o", "link", "show", "dev", "route-chain").stdout
        assert " mtu 1400 " in link, link
        assert daemon.stop() == 0, daemon.output()
