"""Shared test policy: tests that need the machine (root, /dev/net/tun,
namespaces) are marked, and skip loudly only where they cannot run. Under
CI=true they never skip: a missing capability is a failure there.

    @pytest.mark.netns   root, network namespaces (`ip netns`) and TUN
    @pytest.mark.root    root only
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def cannot_run(why: str) -> None:
    """Skip with `why`, or fail with it when CI=true."""
    if in_ci():
        pytest.fail(f"cannot run under CI=true: {why}", pytrace=False)
    pytest.skip(f"SKIPPED, cannot run here: {why}")


def missing_for(marker: str) -> str | None:
    """Why a test with `marker` cannot run on this machine, or None."""
    if os.geteuid() != 0:
        return "needs root"
    if marker == "netns":
        if not os.path.exists("/dev/net/tun"):
            return "needs /dev/net/tun"
        if shutil.which("ip") is None:
            return "needs ip(8) from iproute2"
    return None


@pytest.fixture
def open_dir():
    """A directory anyone may enter and read (0755), for the files of a
    daemon that drops to another user (--user, the unit's dynamic user).
    pytest's tmp_path sits below a directory only root may enter."""
    with tempfile.TemporaryDirectory(prefix="rc-open-") as tmp:
        os.chmod(tmp, 0o755)
        yield Path(tmp)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "root: needs root (never skipped when CI=true)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in ("netns", "root"):
        if item.get_closest_marker(marker) is not None:
            why = missing_for(marker)
            if why:
                cannot_run(why)


@pytest.fixture(scope="session")
def debian_package(tmp_path_factory):
    """The Debian package built once per run from this checkout, and
    lintian's run on it: (path of the .deb, lintian's CompletedProcess).
    Building needs PyPI (the private environment's dependencies)."""
    from pathlib import Path

    import bootroot
    try:
        return bootroot.build_package(Path(__file__).resolve().parent.parent,
                                      tmp_path_factory.mktemp("deb"))
    except FileNotFoundError as e:
        cannot_run(str(e))
