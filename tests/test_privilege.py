"""routechain.privilege: a forked child drops to `nobody` and reports what
the kernel says about it in /proc/self/status."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from routechain import privilege
from routechain.errors import SetupError

NET_ADMIN = 1 << 12
NET_BIND_SERVICE = 1 << 10


def in_child(work) -> dict:
    """Run `work()` in a forked child; return what it returned (a dict),
    or {"error": message} for a SetupError."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            try:
                result = work()
            except SetupError as e:
                result = {"error": str(e)}
            os.write(write_end, json.dumps(result).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    return json.loads(data)


def proc_status() -> dict:
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return fields


def drop_and_report(user, keep):
    def work():
        privilege.drop_to(user, keep)
        status = proc_status()
        try:
            os.setuid(0)
            regained = True
        except PermissionError:
            regained = False
        return {
            "uid": [int(x) for x in status["Uid"]],
            "gid": [int(x) for x in status["Gid"]],
            "groups": [int(x) for x in status["Groups"]],
            "caps": {k: int(status[k][0], 16) for k in
                     ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb")},
            "no_new_privs": status["NoNewPrivs"] == ["1"],
            "regained_root": regained,
        }
    return in_child(work)


# (capabilities kept, expected mask)
KEEP = [
    (["CAP_NET_ADMIN"], NET_ADMIN),
    (["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"], NET_ADMIN | NET_BIND_SERVICE),
    (["net_admin"], NET_ADMIN),
    ([], 0),
]


@pytest.mark.root
@pytest.mark.parametrize("keep,mask", KEEP)
def test_drop_to_keeps_exactly_the_named_capabilities(keep, mask):
    nobody = privilege.pwd.getpwnam("nobody")
    got = drop_and_report("nobody", keep)
    assert got["uid"] == [nobody.pw_uid] * 4
    assert got["gid"] == [nobody.pw_gid] * 4
    assert got["groups"] == [g for g in os.getgrouplist("nobody", nobody.pw_gid)]
    assert got["caps"] == {"CapEff": mask, "CapPrm": mask, "CapInh": 0,
                           "CapBnd": mask, "CapAmb": 0}
    assert got["no_new_privs"]
    assert not got["regained_root"]


CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN_NO_PI = 0x0001 | 0x1000


@pytest.mark.netns
@pytest.mark.parametrize("keep,allowed", [(["CAP_NET_ADMIN"], True), ([], False)])
def test_drop_to_kept_net_admin_still_works(keep, allowed):
    """What keeping CAP_NET_ADMIN is for: after the drop, configuring a
    network device still works, and without it is refused. The child first
    moves to a network namespace of its own, which dies with it; the TUN
    descriptor is opened before the drop, as the daemon's setup does."""
    def work():
        import fcntl
        import struct
        if privilege._libc.unshare(CLONE_NEWNET) != 0:
            return {"error": "unshare(CLONE_NEWNET) failed"}
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            privilege.drop_to("nobody", keep)
            ifr = struct.pack("16sH", b"rc-priv-test", IFF_TUN_NO_PI)
            try:
                fcntl.ioctl(fd, TUNSETIFF, ifr)
                return {"allowed": True}
            except PermissionError:
                return {"allowed": False}
        finally:
            os.close(fd)

    assert in_child(work) == {"allowed": allowed}


@pytest.mark.root
def test_drop_to_unknown_user_names_it():
    got = in_child(lambda: privilege.drop_to("no-such-user-rc", ["CAP_NET_ADMIN"]))
    assert "no-such-user-rc" in got["error"]


@pytest.mark.root
def test_drop_to_refuses_root():
    got = in_child(lambda: privilege.drop_to("root", ["CAP_NET_ADMIN"]))
    assert "root" in got["error"] and "uid 0" in got["error"]


@pytest.mark.root
def test_drop_to_refuses_without_root():
    """Once dropped, a second drop is refused, naming the user and uid."""
    def work():
        privilege.drop_to("nobody", [])
        privilege.drop_to("nobody", [])
        return {}
    got = in_child(work)
    assert got["error"].startswith("--user nobody: dropping privileges needs root")


@pytest.mark.root
def test_drop_to_refuses_once_threads_run():
    """capset() changes one thread: a second thread would keep root's sets."""
    def work():
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        try:
            privilege.drop_to("nobody", ["CAP_NET_ADMIN"])
            return {"uid": os.getuid()}
        finally:
            stop.set()
            thread.join()
    got = in_child(work)
    assert "2 threads are running" in got["error"]


def test_capability_mask_names_the_unknown():
    assert privilege.capability_mask(["CAP_NET_ADMIN", "net_bind_service"]) == (
        NET_ADMIN | NET_BIND_SERVICE)
    with pytest.raises(SetupError, match="CAP_NET_ADMINN"):
        privilege.capability_mask(["CAP_NET_ADMINN"])


def test_capability_names_round_trip():
    for bit, name in enumerate(privilege.CAPABILITIES):
        assert privilege.capability_names(1 << bit) == [name]
        assert privilege.capability_mask([name]) == 1 << bit


def dig_ptr(net, server: str, address: str, *options: str) -> str:
    """The PTR name `server`, port 53, gives for `address`, asked by dig
    from the client namespace."""
    r = net.run(net.client, "dig", f"@{server}", "-p", "53", "+time=2", "+tries=2",
                "+short", *options, "-x", address, check=False)
    assert r.returncode == 0, r
    return r.stdout.strip()


@pytest.mark.netns
def test_daemon_user_binds_port_53_then_keeps_only_net_admin(open_dir):
    """`route-chain --user nobody`, run by hand as root, with DNS on port 53
    and metrics on port 99: the listeners are bound before the drop, so
    once READY=1 every thread of the daemon is nobody holding CAP_NET_ADMIN
    alone (no CAP_NET_BIND_SERVICE), dig still gets answers on port 53
    over UDP and TCP, and metrics answer on port 99; a reload that changes
    `listen` binds nothing (it needs a restart); a SIGTERM still removes
    what it set up (which needs CAP_NET_ADMIN). The notify socket is one
    `nobody` may write to, as systemd's is."""
    from netns import CHAIN4, CHAIN6, Daemon, TestNet

    config = open_dir / "rc.toml"
    config.write_text(
        f'[[chain]]\naddress = "{CHAIN4}"\nhops = ["one", "two", "three"]\n\n'
        f'[[chain]]\naddress = "{CHAIN6}"\nhops = ["one", "two", "three"]\n\n'
        '[dns]\nlisten = ["198.18.0.1:53", "[2001:db8::1]:53"]\n\n'
        '[metrics]\nlisten = "192.0.2.1:99"\n')
    config.chmod(0o644)
    from routechain import config as config_file
    chains = config_file.load(config).chains
    nobody = privilege.pwd.getpwnam("nobody")
    with TestNet.create("usr") as net, Daemon(net, "--user", "nobody",
                                              "--config", str(config)) as daemon:
        daemon.wait_for("READY=1")
        for task in Path(f"/proc/{daemon.proc.pid}/task").iterdir():
            status = dict(line.split(":", 1)
                          for line in (task / "status").read_text().splitlines())
            assert status["Uid"].split() == [str(nobody.pw_uid)] * 4, task
            for key in ("CapEff", "CapPrm", "CapBnd"):
                assert int(status[key], 16) == NET_ADMIN, (task, key, status[key])
            for key in ("CapInh", "CapAmb"):
                assert int(status[key], 16) == 0, (task, key, status[key])
        for chain, server in zip(chains, ("198.18.0.1", "2001:db8::1")):
            name = chain.hop(2).name + "."
            address = str(chain.hop_address(2))
            assert dig_ptr(net, server, address) == name, daemon.output()
            assert dig_ptr(net, server, address, "+tcp") == name, daemon.output()
        scrape = net.run(net.router, sys.executable, "-c",
                         "import urllib.request; print(urllib.request.urlopen("
                         "'http://192.0.2.1:99/metrics', timeout=5).read().decode())")
        assert "routechain_build_info" in scrape.stdout
        # `listen` is restart-only: a reload that moves DNS to port 54
        # binds nothing (and needs no capability to), says so, and port 53
        # goes on answering.
        config.write_text(config.read_text().replace('"198.18.0.1:53"', '"198.18.0.1:54"'))
        assert "reload failed" not in daemon.reload()["STATUS"], daemon.output()
        assert "reload: dns.listen changes only at a restart" in daemon.output(), daemon.output()
        assert dig_ptr(net, "198.18.0.1", str(chains[0].hop_address(2))) == \
            chains[0].hop(2).name + "."
        listening = net.run(net.router, "ss", "-Hlnu", "sport = :54").stdout
        assert listening == "", listening
        assert daemon.stop() == 0, daemon.output()
        gone = net.run(net.router, "ip", "link", "show", "route-chain", check=False)
        assert gone.returncode != 0


@pytest.fixture
def root_only_file(open_dir):
    """A directory anyone may enter, holding a file only root may read."""
    path = open_dir / "story.txt"
    path.write_text("secret\n")
    os.chmod(path, 0o600)
    return path


@pytest.mark.root
def test_reading_as_opens_with_the_users_permissions(root_only_file):
    """Inside reading_as("nobody") a root-only file is refused; after it,
    root is whole again: uid 0, its groups and its effective capabilities."""
    def work():
        before = (os.getresuid(), os.getresgid(), sorted(os.getgroups()), privilege.get_caps())
        with privilege.reading_as("nobody"):
            ids = os.getresuid()
            try:
                root_only_file.read_text()
                refused = False
            except PermissionError:
                refused = True
        after = (os.getresuid(), os.getresgid(), sorted(os.getgroups()), privilege.get_caps())
        root_only_file.read_text()
        return {"ids": ids, "refused": refused, "same": before == after}
    got = in_child(work)
    nobody = privilege.pwd.getpwnam("nobody").pw_uid
    assert got == {"ids": [0, nobody, 0], "refused": True, "same": True}


@pytest.mark.root
def test_reading_as_is_nothing_without_a_user_or_once_dropped(root_only_file):
    def work():
        with privilege.reading_as(None):
            root_only_file.read_text()
        privilege.drop_to("nobody", ["CAP_NET_ADMIN"])
        with privilege.reading_as("nobody"):
            return {"euid": os.geteuid()}
    assert in_child(work) == {"euid": privilege.pwd.getpwnam("nobody").pw_uid}


@pytest.mark.netns
def test_daemon_user_refuses_a_story_the_user_cannot_read(root_only_file):
    """#8: with --user, a root-only (0600) story was read as root at start,
    served, and refused at the next reload. Start now reads it as the user:
    one line, exit 2, nothing set up."""
    from netns import CHAIN4, TestNet

    config = root_only_file.parent / "rc.toml"
    config.write_text(f'[[chain]]\naddress = "{CHAIN4}"\nstory = "story.txt"\n')
    with TestNet.create("usrd") as net:
        r = net.run(net.router, sys.executable, "-m", "routechain", "--user", "nobody",
                    "--config", str(config), check=False, timeout=30)
        assert r.returncode == 2, r
        assert r.stderr == (f"route-chain: {root_only_file}: cannot read story: "
                            "Permission denied\n"), r.stderr
        links = net.run(net.router, "ip", "-o", "link").stdout
        assert "route-chain" not in links, links
        # The same files without --user: root reads them (the control).
        os.chmod(root_only_file, 0o600)
        r = net.run(net.router, sys.executable, "-m", "routechain", "preview",
                    "--config", str(config), check=False, timeout=30)
        assert r.returncode == 0 and "secret" in r.stdout, r


@pytest.mark.netns
def test_daemon_user_reads_config_as_the_user_at_start_and_reload(open_dir):
    """With a config the user may read, --user starts (the start-up load
    runs as the user before any thread exists) and a SIGHUP reloads it
    (after the drop, as the user anyway): the same permissions both times."""
    from netns import CHAIN4, Daemon, TestNet

    with TestNet.create("usrr") as net:
        (open_dir / "story.txt").write_text("one\ntwo\n")
        config = open_dir / "rc.toml"
        config.write_text(f'[[chain]]\naddress = "{CHAIN4}"\nstory = "story.txt"\n')
        with Daemon(net, "--user", "nobody", "--config", str(config)) as daemon:
            daemon.wait_for("READY=1")
            assert "reload failed" not in daemon.reload()["STATUS"]
            os.chmod(open_dir / "story.txt", 0o600)
            assert "story.txt: cannot read story: Permission denied" in \
                daemon.reload()["STATUS"]
            assert daemon.stop() == 0, daemon.output()
            out = daemon.output()
            assert "reloaded: 1 chains" in out and "Traceback" not in out, out
