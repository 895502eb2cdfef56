"""`route-chain reload PID`, the units' ExecReload: it returns only once the
daemon has reloaded, exit 0 when the new configuration is live and 1 when it
was refused, without /bin/kill (procps is not on a minimal Debian).

The network is tests/netns.py's; the daemon reads a config file that the
test rewrites before each reload.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from netns import CHAIN4, Daemon, TestNet

pytestmark = pytest.mark.netns

EXTRA = "198.19.0.1/24"


def reload(pid: int, timeout: int = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "routechain", "reload", str(pid),
                           "--timeout", str(timeout)],
                          capture_output=True, text=True, timeout=timeout + 30)


def addresses(net: TestNet) -> str:
    return net.run(net.router, "ip", "-o", "addr", "show", "dev", "route-chain").stdout


# (config written before the reload, exit status, EXTRA on the TUN afterwards,
#  what stderr says)
CASES = [
    (f'[[chain]]\naddress = "{CHAIN4}"\n\n[[chain]]\naddress = "{EXTRA}"\n', 0, True, ""),
    ('[[chain]]\naddress = "300.1.1.1/24"\n', 1, False,
     "refused the new configuration and serves the previous one"),
]


@pytest.mark.parametrize("text,status,extra,says", CASES, ids=["applied", "refused"])
def test_reload_command_returns_once_reloaded(tmp_path, text, status, extra, says):
    config = tmp_path / "rc.toml"
    config.write_text(f'[[chain]]\naddress = "{CHAIN4}"\n')
    with TestNet.create("rc") as net, Daemon(net, "--config", str(config)) as daemon:
        daemon.wait_for("READY=1")
        config.write_text(text)
        result = reload(daemon.proc.pid)
        # Checked at once: the answer comes after the addresses are applied.
        assert ("198.19.0.1/24" in addresses(net)) == extra
        assert result.returncode == status, result.stderr
        assert says in result.stderr
        assert daemon.proc.poll() is None
        # The daemon's own protocol is unchanged: RELOADING=1, then READY=1.
        daemon.wait_for("RELOADING=1")
        daemon.wait_for("READY=1")
        out = net.run(net.client, "ping", "-c", "1", "-W", "2", "198.18.0.6").stdout
        assert "1 received" in out, out


def test_reload_command_reports_a_process_that_is_not_route_chain():
    """A process that dies of SIGHUP (here `sleep`) is named, exit 1."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        result = reload(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.returncode == 1
    assert result.stderr.strip() == (f"route-chain: route-chain process {sleeper.pid} "
                                     f"exited while reloading")


def test_reload_command_reports_a_missing_process():
    sleeper = subprocess.Popen(["true"])
    sleeper.wait()  # a pid that existed and is gone
    result = reload(sleeper.pid)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"route-chain: cannot signal route-chain process "
                                     f"{sleeper.pid}: no such process")


def test_reload_command_times_out_on_a_process_that_does_not_answer():
    """A live process that ignores SIGHUP never answers: bounded by --timeout."""
    sleeper = subprocess.Popen([sys.executable, "-c",
                                "import signal, time; signal.signal(signal.SIGHUP, "
                                "signal.SIG_IGN); print(flush=True); time.sleep(60)"],
                               stdout=subprocess.PIPE)
    sleeper.stdout.readline()  # SIGHUP is ignored from here on
    try:
        result = reload(sleeper.pid, timeout=1)
    finally:
        sleeper.kill()
        sleeper.wait()
        sleeper.stdout.close()
    assert result.returncode == 1
    assert "did not finish reloading within 1s" in result.stderr
