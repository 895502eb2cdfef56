"""The daemon's side of sd_notify, as systemd would see it: the real daemon
(`python -m routechain --config FILE`) runs in the router namespace of the
test network with its own $NOTIFY_SOCKET (routechain.supervisor's, an
AF_UNIX datagram socket), $WATCHDOG_USEC and $WATCHDOG_PID, and every
datagram it sends is recorded with the moment it arrived.

    ns "client"                            ns "router"
    +----------------------+   veth   +---------------------------------------+
    | c0  192.0.2.2/24      |----------| r0  192.0.2.1/24     TUN "route-chain" |
    |     2001:db8:ff::2/64 |          |     2001:db8:ff::1/64  198.18.0.1/24   |
    | ping, traceroute      |          | forwarding on          2001:db8::1/64  |
    +----------------------+          |   route 198.18.1.0/24 -> TUN            |
                                      +---------------------------------------+
                 NOTIFY_SOCKET (a path in a temporary directory) <-- route-chain

Checked, in the order systemd relies on them: READY=1 only once the TUN
holds its addresses and routes and the DNS server listens; STATUS= updates; WATCHDOG=1 pings while
the workers live, none when $WATCHDOG_PID names another process; on SIGHUP
RELOADING=1 with MONOTONIC_USEC= then READY=1, with the chain answering
throughout; a broken config on SIGHUP keeps serving and says why; SIGTERM
gives STOPPING=1, removes the TUN and exits 0. And, since no systemd can
start the unit here, the daemon once more under the unit's identity and
limits (AS_UNIT): an unprivileged user with the unit's two ambient
capabilities only, no-new-privileges, the unit's system call filter, no
writable executable memory, a /proc without /proc/sys.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import syscall_filter
from netns import CHAIN4, CHAIN6, TestNet
from routechain.supervisor import Supervisor, monotonic_usec

pytestmark = pytest.mark.netns

INTERFACE = "route-chain"
DEST4, DEST6 = "198.18.0.6", "2001:db8::6"
ROUTE = "198.18.1.0/24"
WATCHDOG_USEC = 2_000_000  # pings every second
HOPS = ["Once upon a time", "a probe went out", "*", "and came back", "The end"]

CONFIG = f"""
[daemon]
interface = "{INTERFACE}"
queues = 2

[[route]]
prefix = "{ROUTE}"

[[chain]]
address = "{CHAIN4}"
hops = {json.dumps(HOPS)}

[[chain]]
address = "{CHAIN6}"
hops = {json.dumps(HOPS)}
"""


# What route-chain.service gives the daemon, short of a systemd to start it
# (none runs here): a private mount namespace where /dev/net/tun is
# world-usable as on Debian and /proc shows only processes
# (ProtectProc=invisible, ProcSubset=pid); then an unprivileged uid holding
# only the unit's ambient capabilities, with the same bounding set,
# no-new-privileges (DynamicUser=, AmbientCapabilities=,
# CapabilityBoundingSet=, NoNewPrivileges=); then the unit's system call
# allow list (SystemCallFilter=, tests/syscall_filter.py); then no writable
# executable memory (MemoryDenyWriteExecute=, here the kernel's PR_SET_MDWE).
NOBODY = 65534
UNIT_CAPS = "net_admin,+net_bind_service"
AS_UNIT = (
    "mount -t tmpfs -o mode=0755 tmpfs /dev/net && mknod -m 0666 /dev/net/tun c 10 200 && "
    "mount -t proc -o hidepid=invisible,subset=pid proc /proc && "
    f"exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups "
    f"--inh-caps=-all,+{UNIT_CAPS} --ambient-caps=-all,+{UNIT_CAPS} "
    f"--bounding-set=-all,+{UNIT_CAPS} --no-new-privs ")
MDWE_EXEC = ("import ctypes, os, sys\n"
             "if ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0: sys.exit('PR_SET_MDWE failed')\n"
             "os.execv(sys.executable, [sys.executable] + sys.argv[1:])\n")


def notified(net: TestNet, config: Path, watchdog_pid: str = "$$",
             as_unit: bool = False) -> Supervisor:
    """route-chain in the router namespace under a stand-in service manager
    (routechain.supervisor), with $WATCHDOG_USEC and $WATCHDOG_PID as
    systemd sets them; under the unit's identity and limits if `as_unit`."""
    # `ip netns exec`, `unshare`, `setpriv` and `exec` keep one process:
    # $$ is the daemon's pid, as systemd sets WATCHDOG_PID to the main
    # process's.
    python = shlex.quote(sys.executable)
    command = f"WATCHDOG_PID={watchdog_pid}; export WATCHDOG_PID; "
    argv = ["sh", "-c"]
    if as_unit:
        allowed = ",".join(map(str, sorted(syscall_filter.unit_allow_list())))
        command += (AS_UNIT + f"{python} {shlex.quote(syscall_filter.__file__)} {allowed} "
                    f"{python} -c {shlex.quote(MDWE_EXEC)} ")
        argv = ["unshare", "--mount", "--propagation", "private"] + argv
    else:
        command += f"exec {python} "
    command += f"-m routechain --config {shlex.quote(str(config))}"
    return Supervisor(["ip", "netns", "exec", net.router, *argv, command],
                      env={"WATCHDOG_USEC": str(WATCHDOG_USEC)}, start_new_session=True)


@pytest.fixture
def net():
    with TestNet.create("sd") as net:
        yield net


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "route-chain.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def daemon(net, config):
    with notified(net, config) as daemon:
        yield daemon


def tun_state(net: TestNet) -> dict:
    """What the kernel holds on the TUN now: addresses, routes, link up."""
    link = net.run(net.router, "ip", "-j", "link", "show", "dev", INTERFACE, check=False)
    if link.returncode != 0:
        return {"exists": False, "addresses": set(), "routes": set(), "up": False}
    addrs = json.loads(net.run(net.router, "ip", "-j", "addr", "show", "dev", INTERFACE).stdout)
    routes = json.loads(net.run(net.router, "ip", "-j", "route", "show", "dev", INTERFACE).stdout)
    return {
        "exists": True,
        "addresses": {f"{a['local']}/{a['prefixlen']}" for a in addrs[0]["addr_info"]},
        "routes": {r["dst"] for r in routes},
        "up": "UP" in json.loads(link.stdout)[0]["flags"],
    }


def pinger(net: TestNet, dest: str, count: int) -> subprocess.Popen:
    """`count` echo requests to `dest`, 50 ms apart, from the client."""
    ping = ["ping", "-6"] if ":" in dest else ["ping"]
    return net.popen(net.client, *ping, "-n", "-q", "-c", str(count), "-i", "0.05",
                     "-W", "1", dest, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     text=True)


def received_all(proc: subprocess.Popen, count: int) -> str | None:
    """None when every reply came back, else ping's summary."""
    out, _ = proc.communicate(timeout=30)
    return None if f"{count} packets transmitted, {count} received" in out else out


def traceroute_path(net: TestNet, dest: str) -> list[str]:
    """The addresses traceroute prints, one probe per hop, at most 8 hops."""
    family = "-6" if ":" in dest else "-4"
    out = net.run(net.client, "traceroute", family, "-n", "-q", "1", "-w", "1", "-m", "8",
                  dest).stdout
    return [line.split()[1] for line in out.splitlines()[1:]]


def expected_path(dest: str) -> list[str]:
    gateway = "2001:db8:ff::1" if ":" in dest else "192.0.2.1"
    host = dest.rsplit(":" if ":" in dest else ".", 1)[0] + (":" if ":" in dest else ".")
    return [gateway] + [f"{host}{k}" if HOPS[k - 2] != "*" else "*" for k in range(2, 7)]


def test_ready_only_once_addresses_and_routes_exist(net, daemon):
    """At the moment READY=1 arrives the TUN is up with both chains' host
    addresses and the extra route; the first status rides along."""
    at_ready = {}
    ready = daemon.wait_for("READY=1", on_arrival=lambda: at_ready.update(tun_state(net)))
    assert at_ready["up"]
    assert {CHAIN4, CHAIN6} <= at_ready["addresses"]
    assert ROUTE in at_ready["routes"]
    assert ready.get("STATUS"), ready
    before = daemon.received[:daemon.received.index(ready)]
    assert not any("WATCHDOG" in f or "READY" in f for f in before), before


def listening_on_53(net: TestNet) -> set[str]:
    """`udp ADDR` / `tcp ADDR` for every socket listening on port 53."""
    out = net.run(net.router, "ss", "-Hlntu", "sport = :53").stdout
    return {f"{line.split()[0]} {line.split()[4].rsplit(':', 1)[0].strip('[]')}"
            for line in out.splitlines()}


def test_ready_only_once_dns_listens(net, tmp_path):
    """With the built-in DNS server on, READY=1 waits for its UDP and TCP
    listeners too."""
    config = tmp_path / "dns.toml"
    config.write_text(CONFIG + '\n[dns]\nlisten = ["198.18.0.1:53", "[2001:db8::1]:53"]\n')
    with notified(net, config) as daemon:
        at_ready: set[str] = set()
        daemon.wait_for("READY=1", on_arrival=lambda: at_ready.update(listening_on_53(net)))
        assert {"udp 198.18.0.1", "tcp 198.18.0.1",
                "udp 2001:db8::1", "tcp 2001:db8::1"} <= at_ready, at_ready


def test_status_updates_and_watchdog_pings(net, daemon):
    """WATCHDOG=1 comes every WATCHDOG_USEC/2 (here 1 s) while serving;
    STATUS= comes every few seconds with live counters."""
    daemon.wait_for("READY=1")
    mark = len(daemon.received)
    start = time.monotonic()
    for _ in range(3):
        daemon.wait_for("WATCHDOG=1", timeout=3)
    status = daemon.wait_for("STATUS", timeout=12)
    assert status["STATUS"]
    pings = [d.arrived for d in daemon.received[mark:] if d.get("WATCHDOG") == "1"]
    span = (pings[-1] - pings[0]) / 1e6
    # Half of WATCHDOG_USEC between pings: never slower than the deadline.
    assert span / (len(pings) - 1) <= WATCHDOG_USEC / 1e6 * 0.75
    assert time.monotonic() - start < 15


def test_no_watchdog_pings_for_another_pid(net, config):
    """$WATCHDOG_PID naming another process (here 1): the watchdog is not
    ours, so no WATCHDOG=1 is sent."""
    with notified(net, config, watchdog_pid="1") as daemon:
        daemon.wait_for("READY=1")
        later = daemon.collect(3)
        assert not any("WATCHDOG" in fields for fields in later), later
        assert daemon.proc.poll() is None


def test_sighup_reloads_while_answering(net, daemon, config):
    """SIGHUP: RELOADING=1 and MONOTONIC_USEC= (the moment it began, on
    CLOCK_MONOTONIC) in one datagram, then READY=1; an echo stream to the
    chain that did not change loses nothing, and the new chain answers."""
    daemon.wait_for("READY=1")
    assert traceroute_path(net, DEST4) == expected_path(DEST4)
    config.write_text(CONFIG + '\n[[chain]]\naddress = "198.18.2.1/24"\nhops = ["new", "end"]\n')
    count = 40
    echo = pinger(net, DEST4, count)
    time.sleep(0.5)
    before = monotonic_usec()
    daemon.proc.send_signal(signal.SIGHUP)
    reloading = daemon.wait_for("RELOADING=1", timeout=10)
    ready = daemon.wait_for("READY=1", timeout=10)
    after = monotonic_usec()
    assert set(reloading) == {"RELOADING", "MONOTONIC_USEC"}
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    assert "reload failed" not in ready.get("STATUS", "")
    assert received_all(echo, count) is None
    assert "198.18.2.1/24" in tun_state(net)["addresses"]
    assert traceroute_path(net, "198.18.2.3") == ["192.0.2.1", "198.18.2.2", "198.18.2.3"]
    assert traceroute_path(net, DEST6) == expected_path(DEST6)


def test_broken_config_on_sighup_keeps_serving(net, daemon, config):
    """A config that fails to load: READY=1 again (systemd must not wait),
    the old chains go on answering, and the log says what is wrong where."""
    daemon.wait_for("READY=1")
    config.write_text(CONFIG + '\n[[chain]]\naddress = "300.1.1.1/24"\n')
    count = 20
    echo = pinger(net, DEST6, count)
    time.sleep(0.3)
    ready = daemon.reload(timeout=10)
    assert "reload failed" in ready.get("STATUS", ""), ready
    assert received_all(echo, count) is None
    assert traceroute_path(net, DEST4) == expected_path(DEST4)
    log = daemon.wait_for_line("300.1.1.1", timeout=5)
    assert "reload failed" in log and f"{config}:" in log and "300.1.1.1" in log, log
    assert {CHAIN4, CHAIN6} <= tun_state(net)["addresses"]


def test_sigterm_sends_stopping_and_exits_zero(net, daemon):
    daemon.wait_for("READY=1")
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.wait_for("STOPPING=1", timeout=10)
    assert daemon.proc.wait(20) == 0, daemon.output()
    assert not tun_state(net)["exists"]


@pytest.fixture
def readable_config(open_dir):
    """The config in a directory the unprivileged daemon can read."""
    path = open_dir / "route-chain.toml"
    path.write_text(CONFIG + '\n[dns]\nlisten = ["198.18.0.1:53", "[2001:db8::1]:53"]\n')
    path.chmod(0o644)
    return path


def test_serves_as_the_unit_runs_it(net, readable_config):
    """The daemon under the unit's identity and limits (AS_UNIT above): an
    unprivileged user with CAP_NET_ADMIN and CAP_NET_BIND_SERVICE only, and
    the unit's system call filter, sets up the TUN and DNS on port 53,
    answers, reloads a new chain, and on SIGTERM removes everything and
    exits 0."""
    if shutil.which("systemd-analyze") is None:
        from conftest import cannot_run
        cannot_run("systemd-analyze is missing: it names the filter's system calls")
    probe = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", "import routechain.daemon"],
        capture_output=True, text=True, timeout=60, cwd="/")
    if probe.returncode != 0:
        from conftest import cannot_run
        cannot_run(f"uid {NOBODY} cannot run {sys.executable}: {probe.stderr.strip()}")
    daemon = notified(net, readable_config, as_unit=True)
    try:
        at_ready: set[str] = set()
        daemon.wait_for("READY=1", on_arrival=lambda: at_ready.update(listening_on_53(net)))
        assert {"udp 198.18.0.1", "tcp 2001:db8::1"} <= at_ready, at_ready
        status = dict(line.split(":", 1) for line in
                      Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines())
        assert status["Uid"].split() == [str(NOBODY)] * 4
        assert int(status["CapEff"], 16) == (1 << 12) | (1 << 10)
        assert int(status["CapBnd"], 16) == (1 << 12) | (1 << 10)
        assert status["NoNewPrivs"].strip() == "1"
        assert status["Seccomp"].strip() == "2"  # SECCOMP_MODE_FILTER
        assert traceroute_path(net, DEST6) == expected_path(DEST6)

        readable_config.write_text(readable_config.read_text().replace(
            "[dns]", '[[chain]]\naddress = "198.18.2.1/24"\nhops = ["new", "end"]\n\n[dns]'))
        ready = daemon.reload(timeout=10)
        assert "reload failed" not in ready.get("STATUS", ""), daemon.output()
        assert traceroute_path(net, "198.18.2.3") == ["192.0.2.1", "198.18.2.2", "198.18.2.3"]

        daemon.proc.send_signal(signal.SIGTERM)
        daemon.wait_for("STOPPING=1", timeout=10)
        assert daemon.proc.wait(20) == 0, daemon.output()
        assert not tun_state(net)["exists"]
        assert "not permitted" not in daemon.output(), daemon.output()
    finally:
        daemon.close()
