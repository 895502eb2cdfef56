"""Creating the TUN: a refusal says which of the two steps refused and what
to do. Opening /dev/net/tun is decided by the device file's mode (and a
device policy); creating the interface (TUNSETIFF) by CAP_NET_ADMIN.

The end-to-end cases run route-chain as uid 65534 in a private mount
namespace whose /dev/net is a tmpfs holding a TUN device node made for the
test (character device 10:200, the mode each case needs), so that the
host's own /dev/net/tun is neither needed in any mode nor touched.
"""

from __future__ import annotations

import errno
import stat
import sys
from pathlib import Path

import pytest

from netns import TestNet
from routechain import tun

ROOT = Path(__file__).resolve().parent.parent
TMPFILES = ROOT / "systemd" / "route-chain-tun.conf"
DEVICE = stat.S_IFCHR

MODE_HINT = "make it mode 0666 as udev does"
POLICY_HINT = "a device policy forbids it"

# (errno, mode, owner uid:gid, our uid, gid, groups, hint)
REASONS = [
    (errno.EACCES, 0o600, (0, 0), 65534, 65534, [], MODE_HINT),
    (errno.EACCES, 0o660, (0, 109), 65534, 65534, [], MODE_HINT),
    (errno.EACCES, 0o640, (0, 109), 65534, 65534, [109], MODE_HINT),
    (errno.EPERM, 0o660, (0, 109), 65534, 65534, [109], POLICY_HINT),
    (errno.EPERM, 0o666, (0, 0), 65534, 65534, [], POLICY_HINT),
    (errno.EPERM, 0o600, (61234, 0), 61234, 61234, [], POLICY_HINT),
]


@pytest.mark.parametrize("code,mode,owner,uid,gid,groups,hint", REASONS)
def test_open_denied_reason_names_mode_owner_uid_and_the_fix(code, mode, owner, uid, gid,
                                                             groups, hint):
    line = tun.open_denied_reason(code, DEVICE | mode, *owner, uid, gid, groups)
    assert line.startswith(f"cannot open /dev/net/tun (mode {mode:04o}, owner "
                           f"{owner[0]}:{owner[1]}) as uid {uid}: ")
    assert hint in line and "\n" not in line


NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
WITH_NET_ADMIN = ("--inh-caps=-all,+net_admin", "--ambient-caps=+net_admin",
                  "--bounding-set=-all,+net_admin")
WITHOUT_CAPS = ("--inh-caps=-all", "--bounding-set=-all")

# (device mode, apply the shipped tmpfiles.d rule first, capabilities,
#  exit status, what the one line says)
CASES = [
    (0o600, False, WITH_NET_ADMIN, 1,
     "cannot create TUN 'route-chain': cannot open /dev/net/tun (mode 0600, owner 0:0) "
     "as uid 65534: permission denied: " + MODE_HINT),
    (0o666, False, WITHOUT_CAPS, 1,
     "cannot create TUN 'route-chain': operation not permitted: CAP_NET_ADMIN is needed"),
    (0o600, True, WITH_NET_ADMIN, 0, "serving on route-chain"),
]


@pytest.mark.netns
@pytest.mark.parametrize("mode,tmpfiles,caps,status,says", CASES,
                         ids=["mode-0600", "no-capability", "tmpfiles-0666"])
def test_tun_refusal_tells_device_from_capability(mode, tmpfiles, caps, status, says):
    setup = (f"mount -t tmpfs -o mode=0755 none /dev/net && "
             f"mknod -m {mode:04o} /dev/net/tun c 10 200")
    if tmpfiles:
        # The shipped opt-in, applied by systemd-tmpfiles itself.
        setup += f" && systemd-tmpfiles --create {TMPFILES} && stat -c %a /dev/net/tun >&2"
    # Started, it serves until `timeout` stops it with SIGTERM (exit 0).
    run = " ".join(("timeout", "--preserve-status", "8", *NOBODY, *caps,
                    sys.executable, "-m", "routechain", "198.18.0.1/24"))
    with TestNet.create("tun") as net:
        r = net.run(net.router, "unshare", "-m", "--propagation", "private",
                    "sh", "-c", f"{setup} && exec {run}", check=False, timeout=60)
        links = net.run(net.router, "ip", "-o", "link").stdout
    assert r.returncode == status, r.stderr
    assert says in r.stderr, r.stderr
    if status:
        assert r.stderr.count("\n") == 1, r.stderr
        assert "route-chain" not in links, links
    if tmpfiles:
        assert r.stderr.startswith("666\n"), r.stderr
