"""A throwaway Debian 12 booted under a real systemd, for tests/test_boot.py.

    host                                 container: systemd-nspawn -b --private-network
    +-------------------------------+    +-----------------------------------------------+
    | CACHE/debian12-KEY (debootstrap|    | systemd (PID 1), journald, dbus                |
    |  --variant=minbase + systemd,  |cp  | /root/route-chain: this checkout               |
    |  systemd-sysv, dbus, dig)      |--->| /opt/route-chain, the units: scripts/install    |
    | /dev/net/tun ------------------+--->| /dev/net/tun (bound: the host's device node)   |
    +-------------------------------+    +-----------------------------------------------+

The base is built once with debootstrap from the Debian mirror the host's
apt uses and kept in CACHE (/var/cache/route-chain-test, outside the
checkout), keyed by what it holds; a missing or half-built base is built
again. Each test run copies it, installs the project into the copy with the
project's own `scripts/install` (run by systemd-nspawn without booting, on
the host's network: apt and pip need the registries, with the host's CA
bundle and pip configuration; their downloads are cached in CACHE too), and
then boots the copy with its own, private network. The copy is removed at
the end.

On these machines, systemd-nspawn needs --drop-capability=CAP_SYS_RESOURCE
(the host lacks it), SYSTEMD_NSPAWN_API_VFS_WRITABLE=1 (the container's
systemd writes /proc/sys and /sys), and --register=no --keep-unit (there is
no host systemd to register with); the container is entered with
`nsenter -t <its PID 1> -a`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("ROUTE_CHAIN_TEST_CACHE", "/var/cache/route-chain-test"))
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# systemd as PID 1 and what the test itself drives (dig); everything the
# project needs comes from scripts/install. Not procps: a minimal Debian has
# no /bin/kill, and the units must not need it.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "bind9-dnsutils")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_ROOT = "/etc/route-chain-test/host-ca.crt"
PIP_CONFIGS = (Path("/etc/pip.conf"), Path("/root/.config/pip/pip.conf"))
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NSPAWN = ("systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
          "--drop-capability=CAP_SYS_RESOURCE")
NSPAWN_ENV = {"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "1"}


def missing_tools() -> str | None:
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install debootstrap systemd-container util-linux)"
    return None


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The first mirror the host's apt uses for SUITE's main component, from
    sources.list (one-line format) and sources.list.d (both formats)."""
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
                if ("deb" in fields.get("Types", "").split()
                        and SUITE in fields.get("Suites", "").split()
                        and "main" in fields.get("Components", "").split()):
                    return fields["URIs"].split()[0]
        elif path.name == "sources.list" or path.suffix == ".list":
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
                if len(words) >= 4 and words[0] == "deb" and words[2] == SUITE \
                        and "main" in words[3:]:
                    return words[1]
    return DEFAULT_MIRROR


def base_root() -> Path:
    """The cached debootstrap base, built first if missing. A lock keeps two
    test runs from building it at once; a build is renamed into place only
    once complete, so a half-built base is never used."""
    key = hashlib.sha256(" ".join((SUITE, "minbase", *BASE_PACKAGES)).encode()).hexdigest()
    base = CACHE / f"debian12-{key[:12]}"
    if (base / ".complete").exists():
        return base
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (base / ".complete").exists():
            return base
        shutil.rmtree(base, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE))
        try:
            subprocess.run(["debootstrap", "--variant=minbase",
                            "--include=" + ",".join(BASE_PACKAGES), SUITE, str(work / "root"),
                            debian_mirror()],
                           check=True, capture_output=True, text=True, timeout=1800)
            (work / "root" / ".complete").touch()
            (work / "root").rename(base)
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"debootstrap failed:\n{e.stdout[-3000:]}{e.stderr[-3000:]}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return base


@contextlib.contextmanager
def exclusive():
    """One boot test at a time on a machine: each changes the mode of the
    host's /dev/net/tun and restores it, and two interleaved would restore
    each other's change."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "boot.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def copy_checkout(checkout: Path, dest: Path) -> None:
    """The checkout's sources without its virtual environment, builds and caches."""
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                    "*.so", ".pytest_cache")
    shutil.copytree(checkout, dest, ignore=ignore, symlinks=True)


@dataclass
class Machine:
    """A booted container; `run` executes a command inside it."""

    root: Path
    nspawn: subprocess.Popen
    pid1: int
    console: Path
    venv: str = "/opt/route-chain"   # where the installed environment lives

    @classmethod
    def boot(cls, checkout: Path, name: str = "rc-boot", deb: Path | None = None,
             how: str = "script") -> "Machine":
        """Copy the base, install the project into it, then boot it. `how`:
        "script" (scripts/install) or "package" (the Debian package `deb`),
        each followed by enabling route-chain.service; or "depends" (only
        what the package `deb` depends on, for a test that installs it on the
        booted machine)."""
        base = base_root()
        work = Path(tempfile.mkdtemp(prefix="route-chain-boot-", dir="/var/tmp"))
        root = work / "root"
        try:
            subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], check=True,
                           timeout=600)
            (root / ".complete").unlink()
            if how == "script":
                install(root, checkout)
            else:
                install_package(root, deb, enable=how == "package")
            console = work / "console.log"
            with open(console, "w") as out:
                proc = subprocess.Popen(
                    [*NSPAWN, "--boot", f"--directory={root}", f"--machine={name}",
                     "--private-network", "--bind=/dev/net/tun", "--console=pipe"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env=dict(os.environ, **NSPAWN_ENV), start_new_session=True)
            machine = cls(root, proc, _find_pid1(proc), console,
                          "/opt/route-chain" if how == "script" else "/usr/lib/route-chain")
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        try:
            machine.wait_booted()
        except BaseException:
            machine.close()
            raise
        return machine

    def wait_booted(self, timeout: float = 120) -> None:
        """Until systemd says the boot is over; its bus comes up a moment
        after PID 1 does, and systemctl cannot wait for that itself (it
        prints nothing, or "offline", until then)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.run("systemctl", "is-system-running", "--wait", check=False,
                              timeout=timeout)
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                return
            # "offline": systemctl reached no systemd yet (a loaded machine).
            if state not in ("", "offline") or time.monotonic() > deadline \
                    or self.nspawn.poll() is not None:
                raise RuntimeError(f"container booted into {state!r}: {result.stderr}"
                                   f"{self.console.read_text()[-2000:]}")
            time.sleep(0.2)

    def run(self, *args: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
        """`args` in every namespace of the container, with a clean environment."""
        cmd = ["nsenter", "-t", str(self.pid1), "-a",
               "env", "-i", f"PATH={PATH}", "LANG=C.UTF-8", "SYSTEMD_COLORS=0",
               "SYSTEMD_PAGER=", "SYSTEMD_LOG_COLOR=0", *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    def write(self, path: str, text: str) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def close(self) -> None:
        """Power off (SIGKILL if it hangs) and remove the copy."""
        if self.nspawn.poll() is None:
            self.run("systemctl", "poweroff", "--no-block", check=False, timeout=30)
            try:
                self.nspawn.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.nspawn.pid, signal.SIGKILL)
                self.nspawn.wait()
        shutil.rmtree(self.root.parent, ignore_errors=True)


def install(root: Path, checkout: Path) -> None:
    """scripts/install, exactly as the README says, run in the root by
    systemd-nspawn (not booted, the host's network); then the shipped unit
    enabled, as a user would before a reboot."""
    copy_checkout(checkout, root / "root" / "route-chain")
    (root / CA_IN_ROOT.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(HOST_CA, root / CA_IN_ROOT.lstrip("/"))
    for conf in PIP_CONFIGS:
        if conf.is_file():
            (root / str(conf).lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(conf, root / str(conf).lstrip("/"))
    caches = []
    for name, inside in (("apt-archives", "/var/cache/apt/archives"),
                         ("pip", "/root/.cache/pip")):
        (CACHE / name / "partial").mkdir(parents=True, exist_ok=True)
        caches.append(f"--bind={CACHE / name}:{inside}")
    env = [f"--setenv={k}={v}" for k, v in (("PIP_CERT", CA_IN_ROOT),
                                             ("SSL_CERT_FILE", CA_IN_ROOT),
                                             ("REQUESTS_CA_BUNDLE", CA_IN_ROOT),
                                             ("PIP_DISABLE_PIP_VERSION_CHECK", "1"))]
    script = "/root/route-chain/scripts/install && systemctl enable route-chain.service"
    result = subprocess.run([*NSPAWN, f"--directory={root}", *caches, *env,
                             "/bin/sh", "-c", script],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=dict(os.environ, **NSPAWN_ENV), timeout=1200)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/install failed in the container ({result.returncode}):\n"
                           f"{result.stdout[-3000:]}{result.stderr[-3000:]}")


DEB_IN_ROOT = "/root/debs"


def install_package(root: Path, deb: Path, enable: bool) -> None:
    """The package as a Debian user installs it (`apt-get install ./X.deb`,
    its dependencies from the mirror), then the unit enabled; or, without
    `enable`, only its dependencies (`apt-get satisfy`), the .deb left in
    DEB_IN_ROOT. Run by systemd-nspawn without booting, on the host's network."""
    (root / DEB_IN_ROOT.lstrip("/")).mkdir(parents=True, exist_ok=True)
    shutil.copy(deb, root / DEB_IN_ROOT.lstrip("/") / deb.name)
    inside = f"{DEB_IN_ROOT}/{deb.name}"
    if enable:
        # iproute2 and traceroute are the boot test's tools (scripts/install
        # brings them along; the package needs neither).
        script = (f"apt-get update -qq && apt-get install -y -qq --no-install-recommends "
                  f"iproute2 traceroute && apt-get install -y -qq --no-install-recommends "
                  f"{inside} && systemctl enable route-chain.service")
    else:
        script = (f"apt-get update -qq && apt-get satisfy -y -qq --no-install-recommends "
                  f"\"$(dpkg-deb -f {inside} Depends)\"")
    _nspawn_setup(root, script, "installing the package")


def _nspawn_setup(root: Path, script: str, what: str) -> None:
    (CACHE / "apt-archives" / "partial").mkdir(parents=True, exist_ok=True)
    result = subprocess.run([*NSPAWN, f"--directory={root}",
                             f"--bind={CACHE / 'apt-archives'}:/var/cache/apt/archives",
                             "--setenv=DEBIAN_FRONTEND=noninteractive", "/bin/sh", "-c", script],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=dict(os.environ, **NSPAWN_ENV), timeout=1200)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed in the container ({result.returncode}):\n"
                           f"{result.stdout[-3000:]}{result.stderr[-3000:]}")


PACKAGE_TOOLS = ("dpkg-buildpackage", "dh_virtualenv", "lintian")


def build_package(checkout: Path, work: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """`dpkg-buildpackage -us -uc -b` in a copy of the checkout (README's
    command), then lintian on the result: the .deb and lintian's run."""
    missing = [tool for tool in PACKAGE_TOOLS if shutil.which(tool) is None]
    if missing:
        raise FileNotFoundError(f"needs {', '.join(missing)} "
                                "(apt-get install debhelper dh-virtualenv lintian)")
    source = work / "route-chain"
    copy_checkout(checkout, source)
    result = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=source,
                            capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"dpkg-buildpackage failed ({result.returncode}):\n"
                           f"{result.stdout[-4000:]}{result.stderr[-4000:]}")
    debs = sorted(work.glob("route-chain_*.deb"))
    changes = sorted(work.glob("route-chain_*.changes"))
    assert len(debs) == 1 and len(changes) == 1, list(work.iterdir())
    lint = subprocess.run(["lintian", "--fail-on", "error,warning", str(changes[0])],
                          capture_output=True, text=True, timeout=1200)
    return debs[0], lint


def _find_pid1(nspawn: subprocess.Popen, timeout: float = 30) -> int:
    """The container's init, seen from the host: a descendant of nspawn
    whose pid in its own namespace is 1."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if nspawn.poll() is not None:
            raise RuntimeError(f"systemd-nspawn exited {nspawn.returncode}")
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                              if ":\t" in line)
            except OSError:
                continue
            nspid = fields.get("NSpid", "").split()
            if len(nspid) > 1 and nspid[-1] == "1" and _descends(int(nspid[0]), nspawn.pid):
                return int(nspid[0])
        time.sleep(0.1)
    raise RuntimeError("the container's PID 1 did not appear")


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False
