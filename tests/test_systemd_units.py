"""The shipped units, checked by systemd's own tools: `systemd-analyze
verify` must be clean and `systemd-analyze security --offline=true` must
rate each unit at an exposure of 2.0 or lower. The template is checked as
an instance, route-chain@demo.service.

verify refuses a unit whose ExecStart or ExecReload binary is missing, and
the tests do not install /usr/local/bin/route-chain: as root they verify
the unit byte for byte in a mount namespace where a stub stands at that
path; without root, a copy whose ExecStart and ExecReload name a stub
elsewhere, every other line unchanged. tests/test_boot.py checks the live
units under a booted systemd.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from routechain import config

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
BINARY = "/usr/local/bin/route-chain"

# (shipped file, name to check it under, config it reads)
UNITS = [
    ("route-chain.service", "route-chain.service", "/etc/route-chain/route-chain.toml"),
    ("route-chain@.service", "route-chain@demo.service", "/etc/route-chain/%i.toml"),
]
UNIT_IDS = [u[1] for u in UNITS]
MAX_EXPOSURE = 2.0


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        why = "systemd-analyze is missing (apt-get install systemd)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"cannot run under CI=true: {why}", pytrace=False)
        pytest.skip(f"SKIPPED, cannot run here: {why}")
    return tool


def analyze(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="", LC_ALL="C.UTF-8")
    return subprocess.run([systemd_analyze(), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def unit_copy(tmp_path: Path, shipped: str, name: str) -> Path:
    """The unit under `name`, its ExecStart and ExecReload binary replaced
    by a stub."""
    stub = tmp_path / "bin" / "route-chain"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = (SYSTEMD / shipped).read_text()
    for key in ("ExecStart", "ExecReload"):
        assert text.count(f"{key}={BINARY} ") == 1
        text = text.replace(f"{key}={BINARY} ", f"{key}={stub} ")
    path = tmp_path / name
    path.write_text(text)
    return path


def settings(text: str) -> dict[str, list[str]]:
    """KEY -> every value it is given, in [Service], [Unit] and [Install]."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.parametrize("shipped,name,conf", UNITS, ids=UNIT_IDS)
def test_unit_verify_is_clean(tmp_path, shipped, name, conf):
    result = analyze("verify", "--man=no", str(unit_copy(tmp_path, shipped, name)))
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", output


@pytest.mark.root
@pytest.mark.parametrize("shipped,name,conf", UNITS, ids=UNIT_IDS)
def test_unit_verify_exactly_as_shipped(tmp_path, shipped, name, conf):
    """The unit byte for byte, with the binary it names present: in a
    private mount namespace, a tmpfs on /usr/local/bin holds a stub, so the
    machine's own /usr/local/bin is neither needed nor touched."""
    path = tmp_path / name
    shutil.copy(SYSTEMD / shipped, path)
    bindir = os.path.dirname(BINARY)
    script = (f"mount -t tmpfs -o mode=0755 tmpfs {bindir} && "
              f"printf '#!/bin/sh\\nexit 0\\n' > {BINARY} && chmod 0755 {BINARY} && "
              f"exec \"$0\" verify --man=no \"$1\"")
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
         systemd_analyze(), str(path)],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, SYSTEMD_COLORS="0", LC_ALL="C.UTF-8"))
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", output


@pytest.mark.parametrize("shipped,name,conf", UNITS, ids=UNIT_IDS)
def test_unit_security_exposure_at_most_2(tmp_path, shipped, name, conf):
    path = unit_copy(tmp_path, shipped, name)
    result = analyze("security", "--offline=true", "--no-pager", str(path))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert m, result.stdout + result.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, result.stdout


# (setting, the values the unit must give it)
REQUIRED = [
    ("Type", ["notify"]),
    ("NotifyAccess", ["main"]),
    # The handshake, not /bin/kill (procps, absent from a minimal Debian).
    ("ExecReload", [f"{BINARY} reload $MAINPID"]),
    ("WatchdogSec", ["30s"]),
    # A hung daemon's routes (and BGP announcement) last until it is gone.
    ("TimeoutAbortSec", ["10s"]),
    ("Restart", ["on-failure"]),
    ("DynamicUser", ["yes"]),
    ("AmbientCapabilities", ["CAP_NET_ADMIN CAP_NET_BIND_SERVICE"]),
    ("CapabilityBoundingSet", ["CAP_NET_ADMIN CAP_NET_BIND_SERVICE"]),
    ("DevicePolicy", ["closed"]),
    ("DeviceAllow", ["/dev/net/tun rw"]),
    ("PrivateUsers", ["no"]),
    ("RestrictAddressFamilies", ["AF_UNIX AF_NETLINK AF_INET AF_INET6"]),
    ("MemoryDenyWriteExecute", ["yes"]),
    ("NoNewPrivileges", ["yes"]),
    ("ProtectSystem", ["strict"]),
]


@pytest.mark.parametrize("shipped,name,conf", UNITS, ids=UNIT_IDS)
@pytest.mark.parametrize("key,values", REQUIRED, ids=[r[0] for r in REQUIRED])
def test_unit_sets(shipped, name, conf, key, values):
    assert settings((SYSTEMD / shipped).read_text()).get(key) == values


@pytest.mark.parametrize("shipped,name,conf", UNITS, ids=UNIT_IDS)
def test_unit_runs_the_installed_binary_on_its_config(shipped, name, conf):
    assert settings((SYSTEMD / shipped).read_text())["ExecStart"] == [
        f"{BINARY} --config {conf}"]


def test_template_differs_only_in_instance_lines():
    """The template is the plain unit with the instance name put in: a
    hardening line added to one and not the other fails here."""
    plain = settings((SYSTEMD / "route-chain.service").read_text())
    template = settings((SYSTEMD / "route-chain@.service").read_text())
    differ = {k for k in plain.keys() | template.keys() if plain.get(k) != template.get(k)}
    assert differ == {"Description", "ExecStart"}


def test_example_config_loads():
    """The config installed to /etc/route-chain serves one IPv6 and one
    IPv4 chain with the story, DNS on their host addresses."""
    conf = config.load(SYSTEMD / "route-chain.toml")
    assert conf.daemon.interface == "route-chain"
    assert [str(c.interface) for c in conf.chains] == ["2001:db8::1/64", "198.51.100.1/27"]
    lines = (SYSTEMD / "story.txt").read_text().splitlines()
    for chain in conf.chains:
        assert chain.length == len(lines)
        assert [h.silent for h in chain.hops] == [line == "*" for line in lines]
    assert conf.dns is not None
    assert set(conf.dns.listen) == {(str(c.host), 53) for c in conf.chains}


MDWE_PROBE = textwrap.dedent("""
    import ctypes, mmap, os, sys
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(77)
    os.execv(sys.executable, [sys.executable, "-c", sys.argv[1]])
""")
MDWE_WORK = textwrap.dedent("""
    import mmap, pkgutil, importlib, routechain
    names = sorted(m.name for m in pkgutil.iter_modules(routechain.__path__)
                   if m.name not in ("_build", "__main__"))
    for name in names:
        importlib.import_module("routechain." + name)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        print("imported", " ".join(names))
    else:
        raise SystemExit("MDWE is not in force: a W+X mapping was allowed")
""")


def test_modules_import_without_writable_executable_memory(tmp_path):
    """MemoryDenyWriteExecute=yes must not break us: every routechain module
    (cffi core, pyroute2, pytun, dnspython, systemd-python, ctypes in
    privilege) imports under the kernel's equivalent, PR_SET_MDWE, which
    survives execve, so a fresh interpreter starts under it. Run outside
    the checkout, so that the installed package is the one imported."""
    result = subprocess.run([sys.executable, "-c", MDWE_PROBE, MDWE_WORK],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    if result.returncode == 77:
        why = "kernel lacks PR_SET_MDWE (Linux 6.3+)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"cannot run under CI=true: {why}", pytrace=False)
        pytest.skip(f"SKIPPED, cannot run here: {why}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("imported ")
    for name in ("service", "privilege", "daemon"):
        assert name in result.stdout.split()
