"""scripts/install-service into a DESTDIR: what it installs, that it never
replaces a config the user has, and what --uninstall and --purge leave."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install-service"

UNITS = ("route-chain.service", "route-chain@.service")
CONFIG = ("route-chain.toml", "story.txt")


def install_service(dest: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DESTDIR=str(dest))
    result = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def test_install_service_puts_units_and_config_in_place(tmp_path):
    install_service(tmp_path)
    for unit in UNITS:
        path = tmp_path / "etc/systemd/system" / unit
        assert path.read_bytes() == (ROOT / "systemd" / unit).read_bytes()
        assert path.stat().st_mode & 0o777 == 0o644
    for name in CONFIG:
        path = tmp_path / "etc/route-chain" / name
        assert path.read_bytes() == (ROOT / "systemd" / name).read_bytes()
        # Read by the unit's dynamic user.
        assert path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "etc/route-chain").stat().st_mode & 0o777 == 0o755


def test_install_service_never_replaces_a_config(tmp_path):
    conf = tmp_path / "etc/route-chain/route-chain.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text("# mine\n")
    result = install_service(tmp_path)
    assert conf.read_text() == "# mine\n"
    assert f"kept existing {conf}" in result.stdout
    install_service(tmp_path)
    assert conf.read_text() == "# mine\n"


def test_install_service_uninstall_keeps_config_unless_purged(tmp_path):
    install_service(tmp_path)
    (tmp_path / "etc/route-chain/dn42.toml").write_text("# an instance\n")
    install_service(tmp_path, "--uninstall")
    assert not any((tmp_path / "etc/systemd/system" / u).exists() for u in UNITS)
    assert (tmp_path / "etc/route-chain/dn42.toml").exists()
    assert (tmp_path / "etc/route-chain/route-chain.toml").exists()
    install_service(tmp_path, "--uninstall", "--purge")
    assert not (tmp_path / "etc/route-chain").exists()


def test_install_service_rejects_unknown_arguments(tmp_path):
    for args in (["--frobnicate"], ["--purge"]):
        result = subprocess.run(["bash", str(SCRIPT), *args],
                                env=dict(os.environ, DESTDIR=str(tmp_path)),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and result.stderr.startswith("usage:"), args


def test_install_service_tun_0666_is_opt_in(tmp_path):
    """The tmpfiles.d rule for hosts without udev is installed only when
    asked for, and --uninstall removes it."""
    rule = tmp_path / "etc/tmpfiles.d/route-chain-tun.conf"
    install_service(tmp_path)
    assert not rule.exists()
    install_service(tmp_path, "--tun-0666")
    assert rule.read_bytes() == (ROOT / "systemd" / "route-chain-tun.conf").read_bytes()
    assert rule.stat().st_mode & 0o777 == 0o644
    install_service(tmp_path, "--uninstall")
    assert not rule.exists()
