"""The service where users run it: a fresh Debian 12 with systemd as PID 1,
route-chain installed by its own scripts/install exactly as the README says
or from its Debian package (`apt-get install ./route-chain_*.deb`; every
test runs against both), route-chain.service enabled, the machine booted. Everything below goes
through the real systemctl, journalctl and systemd-analyze of that systemd
(252), and real clients (traceroute, dig) from a namespace inside the
container, so that every probe crosses a router hop as in tests/netns.py:

    container (tests/bootroot.py), its own private network
    +--------------------------------------------------------------------+
    |  netns "client"                the container's network (router)     |
    |  +---------------------+  veth  +---------------------------------+ |
    |  | c0 192.0.2.2/24     |--------| r0 192.0.2.1/24                 | |
    |  |    2001:db8:ff::2/64|        |    2001:db8:ff::1/64            | |
    |  | resolver:           |        | forwarding on                   | |
    |  |   198.51.100.1      |        | TUN route-chain:                | |
    |  +---------------------+        |   198.51.100.1/27 2001:db8::1/64| |
    |                                 | route-chain.service             | |
    |                                 +---------------------------------+ |
    +--------------------------------------------------------------------+

The config is the installed example (/etc/route-chain/route-chain.toml:
both chains tell systemd/story.txt, DNS on their hosts). The tests share one
booted container and run in file order; each leaves the service as it
found it (active, example config) except the last, which stops it.

The host's /dev/net/tun is 0600 on these machines (no udev): it is made
0666 for the test, as udev makes it on a real host, and restored after.

About a minute with the caches warm (most of it scripts/install); the first
run on a machine also builds the debootstrap base.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path

import pytest

import bootroot
from conftest import cannot_run

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parent.parent
UNIT = "route-chain.service"
HOST4, HOST6 = "198.51.100.1", "2001:db8::1"
DEST4, DEST6 = "198.51.100.9", "2001:db8::9"
GATEWAY4, GATEWAY6 = "192.0.2.1", "2001:db8:ff::1"
MAX_EXPOSURE = 2.0

# Shell, inside the container: no sysctl(8) there (procps), so /proc/sys.
CLIENT_NET = f"""
set -e
w() {{ echo "$2" > "/proc/sys/$1"; }}
w net/ipv6/conf/all/accept_dad 0; w net/ipv6/conf/default/accept_dad 0
ip netns add client
ip netns exec client sh -c 'echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad;
                            echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad'
ip netns exec client ip link set lo up
ip link add r0 type veth peer name c0 netns client
ip addr add {GATEWAY4}/24 dev r0
ip addr add {GATEWAY6}/64 dev r0 nodad
ip link set r0 up
ip -n client addr add 192.0.2.2/24 dev c0
ip -n client addr add 2001:db8:ff::2/64 dev c0 nodad
ip -n client link set c0 up
ip -n client route add default via {GATEWAY4}
ip -n client -6 route add default via {GATEWAY6}
w net/ipv4/ip_forward 1; w net/ipv6/conf/all/forwarding 1
w net/ipv4/icmp_ratelimit 0; w net/ipv6/icmp/ratelimit 0
mkdir -p /etc/netns/client
printf 'nameserver {HOST4}\\noptions timeout:2 attempts:2\\n' > /etc/netns/client/resolv.conf
"""


@pytest.fixture(scope="module", params=["script", "package"])
def machine(request):
    """The container, installed by scripts/install or from the Debian
    package (apt-get install ./route-chain_*.deb), route-chain.service
    enabled either way."""
    why = bootroot.missing_tools()
    if why:
        cannot_run(why)
    deb = request.getfixturevalue("debian_package")[0] if request.param == "package" else None
    with bootroot.exclusive():
        tun = os.stat("/dev/net/tun")
        os.chmod("/dev/net/tun", 0o666)
        started = time.monotonic()
        try:
            m = bootroot.Machine.boot(ROOT, deb=deb, how=request.param)
            try:
                m.run("sh", "-c", CLIENT_NET)
                # Resolve the neighbours before the first burst of probes (no
                # ping(8) there: one probe to each gateway).
                for gateway in (GATEWAY4, GATEWAY6):
                    m.run("ip", "netns", "exec", "client", "traceroute", "-n", "-q", "1",
                          "-w", "5", "-m", "1", gateway)
                print(f"\nboot test: container installed and booted in "
                      f"{time.monotonic() - started:.0f}s")
                yield m
            finally:
                m.close()
        finally:
            os.chmod("/dev/net/tun", stat.S_IMODE(tun.st_mode))


def show(m: bootroot.Machine, unit: str = UNIT) -> dict[str, str]:
    out = m.run("systemctl", "show", unit, "-p",
                "ActiveState,SubState,NRestarts,MainPID,Result,UnitFileState,"
                "ExecMainStatus").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def client(m: bootroot.Machine, *args: str, check: bool = True,
           timeout: float = 90) -> str:
    return m.run("ip", "netns", "exec", "client", *args, check=check, timeout=timeout).stdout


def hops(text: str) -> dict[int, tuple[str, str] | None]:
    """hop -> (name, address), None for a silent hop, from traceroute's or
    `route-chain preview`'s lines (`" 3  NAME (ADDR) ..."`, `" 6  *"`; with
    `traceroute -n`, `" 3  ADDR ..."` and the name is the address)."""
    found: dict[int, tuple[str, str] | None] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(\d+)\s+(?:(\S+) \(([0-9a-f:.]+)\)|(\*)|([0-9a-f:.]+)\s)", line)
        if m:
            hop, name, addr, silent, bare = m.groups()
            found[int(hop)] = None if silent else (bare, bare) if bare else (name, addr)
    return found


def preview(m: bootroot.Machine, dest: str) -> dict[int, tuple[str, str] | None]:
    """What route-chain itself says traceroute will show for `dest`'s chain."""
    out = m.run("route-chain", "preview", "--config", "/etc/route-chain/route-chain.toml").stdout
    for block in out.split("\n\n"):
        if f"traceroute to {dest} " in block:
            return hops(block)
    raise AssertionError(f"no chain for {dest} in preview:\n{out}")


def ptr(m: bootroot.Machine, server: str, address: str) -> str:
    """The name `dig -x` ends at (past an RFC 2317 CNAME for a /27)."""
    out = client(m, "dig", "+short", "+time=2", "+tries=2", f"@{server}", "-x", address)
    return out.strip().splitlines()[-1] if out.strip() else ""


def journal(m: bootroot.Machine, unit: str = UNIT, since: str | None = None) -> list[dict]:
    args = ["journalctl", "-u", unit, "-o", "json", "--no-pager"]
    if since:
        args += ["--after-cursor", since]
    return [json.loads(line) for line in m.run(*args).stdout.splitlines() if line]


def cursor(m: bootroot.Machine) -> str:
    out = m.run("journalctl", "-n", "0", "--show-cursor", "--no-pager").stdout
    return out.strip().rsplit("cursor: ", 1)[1]


def wait_until(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_boot_enabled_unit_is_active_with_no_restart(machine):
    """On a minimal Debian, without procps: no /bin/kill to reload with."""
    state = show(machine)
    assert int(state.pop("MainPID")) > 1
    assert state == {"ActiveState": "active", "SubState": "running", "NRestarts": "0",
                     "UnitFileState": "enabled", "Result": "success", "ExecMainStatus": "0"}
    assert machine.run("test", "-e", "/bin/kill", check=False).returncode == 1


def test_boot_the_old_kill_reload_fails_here(machine):
    """The defect this machine reproduces: `ExecReload=/bin/kill -HUP
    $MAINPID` (the units before the handshake) never reaches the daemon."""
    dropin = "/etc/systemd/system/route-chain.service.d/old-reload.conf"
    machine.write(dropin, "[Service]\nExecReload=\nExecReload=/bin/kill -HUP $MAINPID\n")
    machine.run("systemctl", "daemon-reload")
    mark = cursor(machine)
    try:
        assert machine.run("systemctl", "reload", UNIT, check=False).returncode != 0
        log = machine.run("journalctl", "-u", UNIT, "--after-cursor", mark, "--no-pager",
                          "-o", "cat").stdout
        assert "status=203/EXEC" in log, log
        assert "reloaded: " not in log, log
    finally:
        (machine.root / dropin.lstrip("/")).unlink()
        machine.run("systemctl", "daemon-reload")
    assert show(machine)["ActiveState"] == "active"


def test_boot_start_returns_once_the_tun_is_up(machine):
    """Type=notify: `systemctl start` returns at READY=1, and by then the
    TUN is up with both chains, their routes and the DNS listeners."""
    machine.run("systemctl", "stop", UNIT)
    assert "route-chain" not in machine.run("ip", "-o", "link").stdout
    machine.run("systemctl", "start", UNIT)
    # One shell, right after start returned: nothing may still be coming.
    out = machine.run("sh", "-c", "ip -o link show dev route-chain; ip -o addr; "
                      "ip -o route; ip -o -6 route; ss -Hlnu").stdout
    assert "state UP" in out or ",UP," in out, out
    assert f"{HOST4}/27" in out and f"{HOST6}/64" in out, out
    assert "198.51.100.0/27 dev route-chain" in out and "2001:db8::/64 dev route-chain" in out
    assert f"{HOST4}:53" in out and f"[{HOST6}]:53" in out, out
    assert show(machine)["ActiveState"] == "active"


@pytest.mark.parametrize("family,dest", [(4, DEST4), (6, DEST6)], ids=["v4", "v6"])
def test_boot_traceroute_tells_the_story_with_its_silent_hop(machine, family, dest):
    out = client(machine, "traceroute", f"-{family}", "-q", "1", "-w", "2", dest)
    seen = hops(out)
    gateway = GATEWAY4 if family == 4 else GATEWAY6
    assert seen[1] == (gateway, gateway), out
    want = preview(machine, dest)
    assert None in want.values()  # the story's "*" line
    assert {k: v for k, v in seen.items() if k > 1} == {k: v for k, v in want.items()
                                                       if k > 1}, out


@pytest.mark.parametrize("server,address", [(HOST4, "198.51.100.3"), (HOST6, "2001:db8::4")],
                         ids=["v4", "v6"])
def test_boot_ptr_from_the_builtin_server(machine, server, address):
    dest = DEST4 if server == HOST4 else DEST6
    want = [name for name, addr in filter(None, preview(machine, dest).values())
            if addr == address]
    assert ptr(machine, server, address) == want[0] + "."


def test_boot_reload_serves_the_edited_story(machine):
    story = machine.root / "etc/route-chain/story.txt"
    original = story.read_text()
    pid = show(machine)["MainPID"]
    try:
        story.write_text("A new tale\n" + original)
        result = machine.run("systemctl", "reload", UNIT, check=False)
        assert result.returncode == 0, result.stderr
        # Checked at once: `systemctl reload` returned after the reload.
        assert ptr(machine, HOST4, "198.51.100.2") == "A.new.tale.story.example.net."
        assert show(machine)["MainPID"] == pid
    finally:
        story.write_text(original)
        machine.run("systemctl", "reload", UNIT)
    assert ptr(machine, HOST4, "198.51.100.2") == "Once.upon.a.time.story.example.net."


def test_boot_reload_with_a_broken_config_keeps_serving(machine):
    config = machine.root / "etc/route-chain/route-chain.toml"
    original = config.read_text()
    mark = cursor(machine)
    try:
        config.write_text(original.replace('address = "198.51.100.1/27"',
                                           'address = "198.51.100.300/27"'))
        result = machine.run("systemctl", "reload", UNIT, check=False)
        # The refusal reaches the admin, and the unit stays up on the old config.
        assert result.returncode != 0
        state = show(machine)
        assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
        assert ptr(machine, HOST4, "198.51.100.2") == "Once.upon.a.time.story.example.net."
        errors = [e["MESSAGE"] for e in journal(machine, since=mark) if e.get("PRIORITY") == "3"]
        assert any("reload failed" in e and "route-chain.toml:" in e and "198.51.100.300" in e
                   for e in errors), errors
    finally:
        config.write_text(original)
    machine.run("systemctl", "reload", UNIT)


def test_boot_journal_carries_the_structured_fields(machine):
    entries = journal(machine)
    serving = [e for e in entries if e.get("MESSAGE", "").startswith("serving on route-chain")]
    assert serving, [e.get("MESSAGE") for e in entries]
    entry = serving[-1]
    assert entry["SYSLOG_IDENTIFIER"] == "route-chain"
    assert entry["PRIORITY"] == "6"
    assert entry["_SYSTEMD_UNIT"] == UNIT
    assert entry["LOGGER"] == "route-chain"
    assert entry["CODE_FILE"].endswith("/routechain/daemon.py")
    assert entry["CODE_FUNC"] and int(entry["CODE_LINE"]) > 0
    assert entry["THREAD_NAME"] == "MainThread"
    # From the dynamic user, not root.
    assert int(entry["_UID"]) != 0


def test_boot_live_units_rate_at_most_2(machine):
    machine.write("/etc/route-chain/sec.toml",
                  '[daemon]\ninterface = "rc-sec"\n\n[[chain]]\naddress = "198.18.9.1/29"\n')
    machine.run("systemctl", "start", "route-chain@sec")
    try:
        for unit in (UNIT, "route-chain@sec.service"):
            out = machine.run("systemd-analyze", "security", "--no-pager", unit).stdout
            m = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", out)
            assert m and float(m.group(1)) <= MAX_EXPOSURE, out
            print(f"\nlive {unit}: exposure {m.group(1)}", end="")
    finally:
        machine.run("systemctl", "stop", "route-chain@sec")


INSTANCES = {"north": "198.18.1.1/28", "south": "198.18.2.1/28"}


def test_boot_template_runs_two_instances_side_by_side(machine):
    for name, prefix in INSTANCES.items():
        machine.write(f"/etc/route-chain/{name}.toml",
                      f'[daemon]\ninterface = "rc-{name}"\n\n[[chain]]\naddress = "{prefix}"\n'
                      f'hops = ["{name}-one", "{name}-two", "{name}-three"]\n')
    units = [f"route-chain@{name}.service" for name in INSTANCES]
    machine.run("systemctl", "start", *units)
    try:
        for unit in units:
            assert show(machine, unit)["ActiveState"] == "active"
        for name, prefix in INSTANCES.items():
            base = prefix.rsplit(".", 1)[0]
            out = client(machine, "traceroute", "-n", "-q", "1", "-w", "2", f"{base}.4")
            assert [v[1] for k, v in sorted(hops(out).items())] == [
                GATEWAY4, f"{base}.2", f"{base}.3", f"{base}.4"], out
        assert show(machine)["ActiveState"] == "active"  # the plain unit, untouched
    finally:
        machine.run("systemctl", "stop", *units)
    links = machine.run("ip", "-o", "link").stdout
    assert "rc-north" not in links and "rc-south" not in links, links


def test_boot_tun_0600_is_explained_and_the_opt_in_rule_fixes_it(machine):
    """A host without udev: /dev/net/tun 0600. The journal names the device's
    mode and owner and our uid, not the capability; the shipped tmpfiles.d
    rule (scripts/install-service --tun-0666) makes the unit start."""
    unit = "route-chain@vps.service"
    machine.write("/etc/route-chain/vps.toml",
                  '[daemon]\ninterface = "rc-vps"\n\n[[chain]]\naddress = "198.18.3.1/29"\n')
    machine.run("chmod", "0600", "/dev/net/tun")  # the host's node, restored by the fixture
    mark = cursor(machine)
    try:
        assert machine.run("systemctl", "start", unit, check=False).returncode != 0
        messages = [e["MESSAGE"] for e in journal(machine, unit, since=mark)
                    if e.get("SYSLOG_IDENTIFIER") == "route-chain"]
        assert any(re.search(
            r"cannot create TUN 'rc-vps': cannot open /dev/net/tun \(mode 0600, owner 0:0\) "
            r"as uid [1-9]\d*: permission denied: make it mode 0666 as udev does .*", e)
            for e in messages), messages
        if machine.venv == "/opt/route-chain":
            out = machine.run("/root/route-chain/scripts/install-service", "--tun-0666").stdout
        else:  # the package ships the rule as an example (docs/deploy.md)
            out = machine.run("sh", "-c", TUN_RULE_FROM_PACKAGE).stdout
        assert "666 /dev/net/tun" in out, out
        machine.run("systemctl", "restart", unit)
        assert show(machine, unit)["ActiveState"] == "active"
    finally:
        machine.run("systemctl", "stop", unit, check=False)
        machine.run("chmod", "0666", "/dev/net/tun")


TUN_RULE_FROM_PACKAGE = """
set -e
install -m 0644 /usr/share/doc/route-chain/examples/route-chain-tun.conf /etc/tmpfiles.d/
systemd-tmpfiles --create /etc/tmpfiles.d/route-chain-tun.conf
stat -c '%a %n' /dev/net/tun
"""


SCRAPE = """
import json, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen("http://127.0.0.1:9850/metrics", timeout=10).read().decode()
print(json.dumps([[s.name, s.labels, s.value]
                  for f in text_string_to_metric_families(text) for s in f.samples]))
"""


def scrape(m: bootroot.Machine) -> dict[tuple[str, tuple], float]:
    """The endpoint, fetched and parsed inside the container by the
    prometheus_client installed with route-chain (/opt/route-chain by
    scripts/install, /usr/lib/route-chain by the package)."""
    out = m.run(f"{m.venv}/bin/python3", "-c", SCRAPE).stdout
    return {(name, tuple(sorted(labels.items()))): value
            for name, labels, value in json.loads(out)}


def summed(found: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls))


def test_boot_metrics_count_what_traceroute_saw(machine):
    """[metrics] in the installed config; one traceroute, one probe at a
    time: the replies the client saw are the replies the daemon counts."""
    config = machine.root / "etc/route-chain/route-chain.toml"
    original = config.read_text()
    try:
        config.write_text(original + '\n[metrics]\nlisten = "127.0.0.1:9850"\n')
        machine.run("systemctl", "restart", UNIT)
        before = scrape(machine)
        out = client(machine, "traceroute", "-n", "-N", "1", "-q", "1", "-w", "2", DEST4)
        after = scrape(machine)
    finally:
        config.write_text(original)
        machine.run("systemctl", "restart", UNIT)
    seen = hops(out)
    answered = [k for k, v in seen.items() if v and v[1].startswith("198.51.100.")]
    silent = [k for k, v in seen.items() if v is None]

    def grew(name: str, **labels: str) -> float:
        return summed(after, name, **labels) - summed(before, name, **labels)

    assert grew("routechain_replies_total", kind="time_exceeded") == len(answered) - 1, out
    assert grew("routechain_replies_total", kind="port_unreach") == 1, out
    assert grew("routechain_drops_total", reason="silent") == len(silent) == 1, out
    assert after[("routechain_chains", (("family", "4"),))] == 1
    assert after[("routechain_hops", (("family", "6"),))] == len(
        [k for k in preview(machine, DEST6) if k > 1])


def test_boot_watchdog_restarts_a_hung_daemon(machine):
    dropin = "/etc/systemd/system/route-chain.service.d/watchdog.conf"
    # SIGABRT waits while the process is stopped: SIGKILL follows at once.
    machine.write(dropin, "[Service]\nWatchdogSec=2s\nTimeoutAbortSec=1s\n")
    machine.run("systemctl", "daemon-reload")
    try:
        machine.run("systemctl", "restart", UNIT)
        before = show(machine)
        machine.run("systemctl", "kill", "--kill-whom=main", "--signal=SIGSTOP", UNIT)

        def restarted() -> dict | None:
            now = show(machine)
            again = int(now["NRestarts"]) > int(before["NRestarts"])
            return now if again and now["ActiveState"] == "active" else None

        after = wait_until(restarted, "a restart after the watchdog timeout")
        assert after["MainPID"] != before["MainPID"]
        log = machine.run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout
        assert "Watchdog timeout" in log, log[-2000:]
        assert ptr(machine, HOST4, "198.51.100.2") == "Once.upon.a.time.story.example.net."
    finally:
        (machine.root / dropin.lstrip("/")).unlink()
        machine.run("systemctl", "daemon-reload")
        machine.run("systemctl", "restart", UNIT)


def test_boot_doctor_passes_then_names_what_broke(machine):
    """`route-chain doctor` as installed, on the example config, while the
    service runs: nothing wrong; with IPv4 forwarding off, that line and exit 1."""
    ok = machine.run("route-chain", "doctor", check=False)
    assert ok.returncode == 0 and "FAIL" not in ok.stdout, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[0] == "ok   forwarding"
    machine.run("sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward")
    try:
        bad = machine.run("route-chain", "doctor", check=False)
    finally:
        machine.run("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert [line for line in bad.stdout.splitlines() if line.startswith("FAIL")] == [
        "FAIL forwarding: net.ipv4.ip_forward is 0: IPv4 probes are not forwarded into the "
        "TUN. Fix: sysctl -w net.ipv4.ip_forward=1, and the same line in "
        "/etc/sysctl.d/60-route-chain.conf"], bad.stdout


def test_boot_stop_leaves_no_tun_address_or_route(machine):
    machine.run("systemctl", "stop", UNIT)
    state = show(machine)
    assert (state["ActiveState"], state["Result"], state["ExecMainStatus"]) == (
        "inactive", "success", "0"), state
    out = machine.run("sh", "-c", "ip -o link; ip -o addr; ip -o route; ip -o -6 route").stdout
    for gone in ("route-chain", HOST4, HOST6, "198.51.100.0/27", "2001:db8::/64"):
        assert gone not in out, out
