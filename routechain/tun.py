"""The TUN interface: the only module that imports pytun.

One multiqueue TUN, one descriptor per queue, each non-blocking and
close-on-exec. The interface lives as long as its descriptors: closing the
last one removes it, with its addresses and routes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

import pytun

from .errors import SetupError, UsageError
from .settings import MAX_QUEUES

TUN_PATH = "/dev/net/tun"
DEFAULT_MTU = 1500  # a new TUN's MTU, as the kernel sets it
DEFAULT_TXQUEUELEN = 500  # a new TUN's queue length, as the kernel sets it

_FLAGS = pytun.IFF_TUN | pytun.IFF_NO_PI | pytun.IFF_MULTI_QUEUE


class Tun:
    """A multiqueue TUN that this process created (never one that existed)."""

    def __init__(self, name: str, queues: int) -> None:
        if not 1 <= queues <= MAX_QUEUES:
            raise UsageError(f"bad queue count {queues}: 1..{MAX_QUEUES}")
        self.name = name
        self._devices: list[pytun.TunTapDevice] = []
        try:
            # The first queue creates the interface and refuses one that exists.
            for i in range(queues):
                flags = _FLAGS | (pytun.IFF_TUN_EXCL if i == 0 else 0)
                self._devices.append(pytun.TunTapDevice(name=name, flags=flags, dev=TUN_PATH))
        except (pytun.Error, OSError) as e:
            self.close()
            raise _setup_error(name, e) from None
        for dev in self._devices:
            fd = dev.fileno()
            os.set_blocking(fd, False)
            fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)

    @property
    def fds(self) -> list[int]:
        return [dev.fileno() for dev in self._devices]

    def close(self) -> None:
        while self._devices:
            self._devices.pop().close()

    def __enter__(self) -> "Tun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _setup_error(name: str, e: Exception) -> SetupError:
    code = e.args[0] if e.args and isinstance(e.args[0], int) else getattr(e, "errno", None)
    text = e.args[1] if len(e.args) > 1 else str(e)
    if code == errno.EBUSY:
        return SetupError(f"interface {name!r} already exists: choose another with --interface")
    if code in (errno.EPERM, errno.EACCES):
        # pytun opens the device and asks TUNSETIFF in one call: which of
        # the two refused is told by opening the device again ourselves.
        denied = _open_denied()
        if denied is not None:
            return SetupError(f"cannot create TUN {name!r}: {denied}")
        return SetupError(f"cannot create TUN {name!r}: {os.strerror(code).lower()}: "
                          f"CAP_NET_ADMIN is needed (run as root, or give the "
                          f"capability)")
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return SetupError(f"cannot create TUN {name!r}: {TUN_PATH} is missing "
                          f"(load the tun module, or allow the device)")
    return SetupError(f"cannot create TUN {name!r}: {text}")


def _open_denied() -> str | None:
    """Why this process may not open the TUN device, or None if it may."""
    try:
        os.close(os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EACCES):
            return None
        st = os.stat(TUN_PATH)
        return open_denied_reason(e.errno, st.st_mode, st.st_uid, st.st_gid,
                                  os.geteuid(), os.getegid(), os.getgroups())
    return None


def open_denied_reason(code: int, mode: int, owner: int, group: int,
                       uid: int, gid: int, groups: list[int]) -> str:
    """The one line for a refused open(2) of the TUN device: what refused it
    (the file's mode or a device policy) and what to do.

    The mode decides first, as the kernel's permission check does (no
    CAP_DAC_OVERRIDE is held under the unit); when the mode allows read and
    write, the refusal came from a device policy (a cgroup's device list:
    the unit's DeviceAllow=, a container's configuration)."""
    if uid == owner:
        bits = (mode >> 6) & 0o7
    elif gid == group or group in groups:
        bits = (mode >> 3) & 0o7
    else:
        bits = mode & 0o7
    where = (f"{TUN_PATH} (mode {stat.S_IMODE(mode):04o}, owner {owner}:{group}) "
             f"as uid {uid}: {os.strerror(code).lower()}")
    if bits & 0o6 != 0o6:
        return (f"cannot open {where}: make it mode 0666 as udev does "
                f"(scripts/install-service --tun-0666; docs/deploy.md: OpenVZ and LXC)")
    return (f"cannot open {where}: a device policy forbids it (the unit's "
            f"DeviceAllow={TUN_PATH} rw, or the container's device list)")
