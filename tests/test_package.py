"""The Debian package (debian/, README "Debian package"): built with
`dpkg-buildpackage -us -uc -b`, clean under lintian, then installed,
installed again over itself, removed and purged with dpkg on a Debian 12
booted under systemd (tests/bootroot.py), systemctl behaving as with
scripts/install:

    host: dpkg-buildpackage, lintian      container (systemd-nspawn -b, private network)
    route-chain_*.deb  -----------------> /root/debs/route-chain_*.deb
                                          its dependencies from the mirror (before boot)
                                          dpkg -i / -i again / -r / -P under systemd

Only the `package` helper's tests (and CI) run this: it shares the Debian
root in /var/cache/route-chain-test with tests/test_boot.py.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import bootroot
from conftest import cannot_run

pytestmark = pytest.mark.netns

UNITS = ("route-chain.service", "route-chain@.service")
CONFFILES = ("/etc/route-chain/route-chain.toml", "/etc/route-chain/story.txt")
INSTANCE = '[daemon]\ninterface = "rc-pkg"\n\n[[chain]]\naddress = "198.18.7.1/29"\n'


def test_package_lintian_shows_no_error_or_warning(debian_package):
    _, lint = debian_package
    flagged = [line for line in lint.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert lint.returncode == 0 and flagged == [], lint.stdout + lint.stderr


@pytest.fixture(scope="module")
def machine(debian_package):
    why = bootroot.missing_tools()
    if why:
        cannot_run(why)
    deb, _ = debian_package
    with bootroot.exclusive():
        tun = os.stat("/dev/net/tun")
        os.chmod("/dev/net/tun", 0o666)
        try:
            m = bootroot.Machine.boot(Path("."), name="rc-pkg", deb=deb,
                                      how="depends")
            try:
                yield m, f"{bootroot.DEB_IN_ROOT}/{deb.name}"
            finally:
                m.close()
        finally:
            os.chmod("/dev/net/tun", stat.S_IMODE(tun.st_mode))


def state(m, unit: str) -> dict[str, str]:
    out = m.run("systemctl", "show", unit, "-p", "ActiveState,MainPID,UnitFileState,LoadState,"
                "FragmentPath,ExecStart").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def links(m) -> list[str]:
    """The container's interfaces (no iproute2 there: the package needs none)."""
    return m.run("ls", "/sys/class/net").stdout.split()


def test_package_install_reinstall_remove_purge(machine):
    m, deb = machine
    # Install: units where systemd looks, nothing enabled or started (the
    # example's prefixes are documentation prefixes), conffiles, the command.
    m.run("dpkg", "-i", deb)
    for unit in UNITS:
        assert m.run("test", "-f", f"/lib/systemd/system/{unit}", check=False).returncode == 0
    main = state(m, "route-chain.service")
    assert (main["LoadState"], main["UnitFileState"], main["ActiveState"]) == (
        "loaded", "disabled", "inactive"), main
    assert main["FragmentPath"] == "/lib/systemd/system/route-chain.service"
    assert "path=/usr/bin/route-chain " in main["ExecStart"], main["ExecStart"]
    conffiles = m.run("dpkg-query", "-W", "-f=${Conffiles}", "route-chain").stdout.split()
    assert sorted(f for f in conffiles if f.startswith("/")) == sorted(CONFFILES), conffiles
    assert m.run("route-chain", "--version").stdout.strip() == "route-chain 0.1.0"
    assert m.run("test", "-f", "/usr/share/man/man8/route-chain.8.gz",
                 check=False).returncode == 0
    compiled = m.run("find", "/usr/lib/route-chain", "-name", "*.pyc").stdout.split()
    assert any("/routechain/__pycache__/daemon." in path for path in compiled)

    # Enabled and running, with an instance beside it and an edited config.
    m.run("systemctl", "enable", "--now", "route-chain.service")
    m.write("/etc/route-chain/pkg.toml", INSTANCE)
    m.run("systemctl", "start", "route-chain@pkg.service")
    assert {"route-chain", "rc-pkg"} <= set(links(m)), links(m)
    config = m.root / "etc/route-chain/route-chain.toml"
    edited = config.read_text() + "# edited by the admin\n"
    config.write_text(edited)
    before = {u: state(m, u)["MainPID"] for u in ("route-chain.service", "route-chain@pkg.service")}
    assert all(int(pid) > 1 for pid in before.values()), before

    # Over itself: both restarted onto the new files, the edit kept.
    m.run("dpkg", "-i", deb)
    for unit, pid in before.items():
        now = state(m, unit)
        assert now["ActiveState"] == "active" and now["MainPID"] != pid, (unit, now)
    assert state(m, "route-chain.service")["UnitFileState"] == "enabled"
    assert config.read_text() == edited

    # Remove: stopped (their TUNs gone), program and units gone, config kept.
    m.run("dpkg", "-r", "route-chain")
    assert "route-chain" not in links(m) and "rc-pkg" not in links(m), links(m)
    for unit in ("route-chain.service", "route-chain@pkg.service"):
        assert state(m, unit)["ActiveState"] in ("inactive", "failed")
    for path in ("/usr/lib/route-chain", "/usr/bin/route-chain",
                 *(f"/lib/systemd/system/{u}" for u in UNITS)):
        assert m.run("test", "-e", path, check=False).returncode == 1, path
    assert config.read_text() == edited
    assert state(m, "route-chain.service")["LoadState"] in ("not-found", "masked")

    # Purge: the conffiles and systemd's memory of the enabled unit go; a
    # file the admin made stays, as dpkg leaves what it did not install.
    m.run("dpkg", "-P", "route-chain")
    for path in CONFFILES:
        assert m.run("test", "-e", path, check=False).returncode == 1, path
    assert m.run("test", "-e", "/etc/route-chain/pkg.toml", check=False).returncode == 0
    leftovers = m.run("sh", "-c", "find /etc/systemd/system "
                      "/var/lib/systemd/deb-systemd-helper-enabled "
                      "/var/lib/systemd/deb-systemd-helper-masked -name 'route-chain*' "
                      "2>/dev/null; true").stdout
    assert leftovers == "", leftovers
    assert m.run("dpkg-query", "-W", "route-chain", check=False).returncode == 1
