"""Dropping root by hand: `route-chain --user NAME`.

Under systemd the unit does this (DynamicUser=, AmbientCapabilities=); run
by hand as root, the daemon sets everything up, binds its DNS and metrics
listeners, and then calls `drop_to`, keeping only what it needs from then
on: CAP_NET_ADMIN, to change addresses and routes at reload and repair and
to remove them at exit. `listen` needs a restart, so nothing is bound after
the drop and CAP_NET_BIND_SERVICE is not kept.

capabilities(7) is the contract followed here:
- with PR_SET_KEEPCAPS, setuid() away from 0 keeps the permitted set (and
  clears the effective one), so the kept capabilities survive the switch;
- capset() then makes permitted = effective = exactly the kept set, and the
  inheritable and ambient sets empty, so nothing passes on through execve;
- the bounding set loses everything else while we still hold CAP_SETPCAP.

Capability sets belong to a thread, not a process: capset() changes only
the caller. So `drop_to` refuses to run once a second thread exists; the
daemon calls it after setup and before starting its workers.

ctypes over libc: capget/capset and prctl have no Python binding.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import pwd
from typing import Iterable, Iterator, Sequence

from .errors import SetupError

# linux/capability.h, in bit order.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
    "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
    "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

# linux/prctl.h
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong, ctypes.c_ulong]
_libc.prctl.restype = ctypes.c_int
_libc.capget.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
_libc.capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]


def capability_mask(names: Iterable[str]) -> int:
    """Bits of `names` (`CAP_NET_ADMIN` or `net_admin`)."""
    mask = 0
    for name in names:
        full = name.strip().upper()
        if not full.startswith("CAP_"):
            full = "CAP_" + full
        try:
            mask |= 1 << CAPABILITIES.index(full)
        except ValueError:
            raise SetupError(f"unknown capability {name!r}") from None
    return mask


def capability_names(mask: int) -> list[str]:
    return [name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1]


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    result = _libc.prctl(option, arg2, arg3, 0, 0)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")
    return result


def _last_cap() -> int:
    """The highest capability this kernel knows (cap_last_cap), or ours."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return len(CAPABILITIES) - 1


def get_caps() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of the calling thread."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capget: {os.strerror(err)}")
    join = lambda field: getattr(data[0], field) | getattr(data[1], field) << 32  # noqa: E731
    return join("effective"), join("permitted"), join("inheritable")


def _set_caps(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = effective >> shift & 0xFFFFFFFF
        data[i].permitted = permitted >> shift & 0xFFFFFFFF
        data[i].inheritable = inheritable >> shift & 0xFFFFFFFF
    if _libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _alone(user: str, why: str) -> None:
    """SetupError saying `why` unless this is the process's only thread."""
    threads = _thread_count()
    if threads != 1:
        raise SetupError(f"--user {user}: {threads} threads are running; {why}")


def _account(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise SetupError(f"--user {user}: no such user") from None


@contextlib.contextmanager
def reading_as(user: str | None) -> Iterator[None]:
    """Open files with the permissions `user` will have: the daemon reads
    its config and stories as the user it runs as, at start as on reload,
    so a file only root may read is refused at start rather than served
    until the first reload (#8).

    Run as root before the drop, this takes the user's effective uid, gid
    and groups for the duration and gives root back after (setresuid(2)
    keeps the real and saved uid 0, so the return is allowed; the
    effective capabilities, cleared on leaving euid 0, come back from the
    permitted set on the return). Only before any thread starts: the
    switch is process-wide, and the workers must never see it. Once
    dropped, or without --user, or not root, it changes nothing.
    """
    if user is None or os.geteuid() != 0:
        yield
        return
    entry = _account(user)
    if entry.pw_uid == 0:
        yield
        return
    _alone(user, "the identity files are read with is process-wide, take it before "
                 "starting any")
    groups, gid = os.getgroups(), os.getegid()
    try:
        os.setgroups(os.getgrouplist(entry.pw_name, entry.pw_gid))
        os.setresgid(-1, entry.pw_gid, -1)
        os.setresuid(-1, entry.pw_uid, -1)
    except OSError as e:
        _restore(groups, gid)
        raise SetupError(f"--user {user}: cannot take the user's identity to read "
                         f"files: {e.strerror}") from None
    try:
        yield
    finally:
        _restore(groups, gid)


def _restore(groups: list[int], gid: int) -> None:
    os.setresuid(-1, 0, -1)
    os.setresgid(-1, gid, -1)
    os.setgroups(groups)


def drop_to(user: str, keep: Sequence[str]) -> None:
    """Become `user` (its uid, gid and groups), holding exactly the
    capabilities named in `keep` as permitted and effective, and no others
    in any set, bounding set included. Runs as root, before any thread
    starts; raises SetupError naming the user when anything refuses.
    """
    kept = capability_mask(keep)
    entry = _account(user)
    if os.geteuid() != 0:
        raise SetupError(f"--user {user}: dropping privileges needs root, "
                         f"running as uid {os.geteuid()}")
    if entry.pw_uid == 0:
        raise SetupError(f"--user {user}: is root (uid 0), nothing would be dropped")
    _alone(user, "capabilities are per thread, drop before starting any")
    uid, gid = entry.pw_uid, entry.pw_gid
    step = "bounding set"
    try:
        for bit in range(_last_cap() + 1):
            if not kept >> bit & 1 and _prctl(PR_CAPBSET_READ, bit) == 1:
                _prctl(PR_CAPBSET_DROP, bit)
        step = "PR_SET_KEEPCAPS"
        _prctl(PR_SET_KEEPCAPS, 1)
        step = "initgroups"
        os.initgroups(entry.pw_name, gid)
        step = f"setresgid({gid})"
        os.setresgid(gid, gid, gid)
        step = f"setresuid({uid})"
        os.setresuid(uid, uid, uid)
        step = "capset"
        _set_caps(kept, kept, 0)
        step = "ambient set"
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        step = "PR_SET_KEEPCAPS"
        _prctl(PR_SET_KEEPCAPS, 0)
        # route-chain never executes anything: nothing it starts may gain
        # privileges through set-user-ID files or file capabilities.
        step = "PR_SET_NO_NEW_PRIVS"
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
    except OSError as e:
        raise SetupError(f"--user {user}: {step} failed: {e.strerror}") from None
    if os.getresuid() != (uid,) * 3 or os.getresgid() != (gid,) * 3:
        raise SetupError(f"--user {user}: uid/gid did not change")
    effective, permitted, inheritable = get_caps()
    if (effective, permitted, inheritable) != (kept, kept, 0):
        raise SetupError(
            f"--user {user}: kept capabilities are "
            f"{capability_names(permitted) or 'none'}, expected "
            f"{capability_names(kept) or 'none'}")
