"""Living under systemd: the journal and the sd_notify protocol.

The only module that imports `systemd` (systemd-python). Everything here
also works, as a no-op or a plain stderr logger, when route-chain is run by
hand or under another supervisor.

The daemon's side of the protocol (Type=notify, see systemd.service(5) and
sd_notify(3)):

- `ready()` once the TUN, its addresses, the routes and the DNS listeners
  are up, never before: systemd starts what is ordered after us then.
- `status()` every few seconds with live counters.
- on SIGHUP: `reloading()`, re-read and apply, then `ready()` again, also
  when the new config was refused (the old one goes on serving).
- `watchdog()` every `watchdog_interval()` seconds, only while every worker
  is alive: a stuck worker must let systemd restart us.
- `stopping()` as soon as shutdown begins.

Reload is a handshake, not a bare signal (`ExecReload=route-chain reload
$MAINPID`, see `request_reload`): systemd 252 (Debian 12) has no
Type=notify-reload and ends the reload job when ExecReload exits, so the
reloading process waits for the daemon's answer and `systemctl reload`
returns once the new configuration is live, or fails when it was refused.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import sys
import time

from systemd import daemon, journal

from .errors import RouteChainError, SetupError

SYSLOG_IDENTIFIER = "route-chain"

log = logging.getLogger("route-chain")


def started_by_systemd_journal(stream=None) -> bool:
    """True when `stream` (stderr by default) is the journal stream systemd
    connected us to: $JOURNAL_STREAM holds its `device:inode`.

    Comparing the inode, not just the variable's presence, keeps a child
    that inherited the variable but had stderr redirected logging to
    stderr (systemd.exec(5), $JOURNAL_STREAM).
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    stream = sys.stderr if stream is None else stream
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class _TerseFormatter(logging.Formatter):
    """`route-chain: message`, with the level named only when it matters."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{SYSLOG_IDENTIFIER}: {record.levelname.lower()}: {text}"
        return f"{SYSLOG_IDENTIFIER}: {text}"


def setup_logging(verbose: bool = False, stream=None) -> None:
    """Send the root logger to the journal when systemd started us, else to
    `stream` (stderr by default). Replaces handlers set before, so calling
    it twice is harmless.

    In the journal, each record carries PRIORITY, CODE_* and the fields
    given as `extra=` (upper-case names, e.g. `extra={"CHAIN": "..."}`), so
    `journalctl -u route-chain CHAIN=...` finds them.
    """
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    handler: logging.Handler
    stream = sys.stderr if stream is None else stream
    if started_by_systemd_journal(stream):
        handler = journal.JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(_TerseFormatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock MONOTONIC_USEC= is read on."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """sd_notify(3) messages to the service manager; every method is a
    no-op when $NOTIFY_SOCKET was not set at construction.

    Safe to call from any thread: each message is one datagram.
    """

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._failed = False

    def _send(self, *fields: str) -> bool:
        """A failed send is logged, never raised: the manager's timeouts
        (start, watchdog) are the consequence, and serving goes on."""
        if not self.enabled:
            return False
        try:
            return daemon.notify("\n".join(fields))
        except OSError as e:
            level = logging.DEBUG if self._failed else logging.WARNING
            self._failed = True
            log.log(level, "sd_notify to %s failed: %s: %s",
                    os.environ.get("NOTIFY_SOCKET"), fields[0], e.strerror or e)
            return False

    @staticmethod
    def _status_field(text: str) -> str:
        # One datagram line per field: a newline would start a bogus field.
        return "STATUS=" + " ".join(text.split("\n"))

    def ready(self, status: str = "") -> None:
        fields = ["READY=1"]
        if status:
            fields.append(self._status_field(status))
        self._send(*fields)

    def reloading(self) -> None:
        """RELOADING=1 and the moment the reload began, in one datagram:
        systemd (253+, Type=notify-reload) matches it to the READY=1 after."""
        self._send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def status(self, text: str) -> None:
        self._send(self._status_field(text))

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC, as
        sd_watchdog_enabled(3) advises; None when there is no watchdog or
        it is meant for another process ($WATCHDOG_PID is not ours)."""
        if not self.enabled:
            return None
        return watchdog_interval(os.environ, os.getpid())


def watchdog_interval(env, pid: int) -> float | None:
    """The rule of `Notifier.watchdog_interval`, over an explicit
    environment and pid."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner:
        if not owner.isdigit() or int(owner) != pid:
            return None
    return int(usec) / 2 / 1_000_000


# The reload handshake. The requester sends SIGHUP with sigqueue(3), so the
# daemon sees si_code SI_QUEUE and the requester's pid; a plain `kill -HUP`
# (SI_USER) still reloads and gets no answer. The daemon answers once the
# reload is over: SIGUSR1 when the new configuration is live, SIGUSR2 when
# it was refused and the old one goes on serving. One request at a time: a
# SIGHUP sent while another is pending merges with it (standard signals do
# not queue), and its sender waits out its timeout; systemd runs one reload
# job per unit at a time.
SI_QUEUE = -1  # <asm-generic/siginfo.h>
RELOAD_APPLIED, RELOAD_REFUSED = signal.SIGUSR1, signal.SIGUSR2


class ReloadRefused(RouteChainError):
    """The daemon kept its previous configuration (it logged why)."""


class _Sigval(ctypes.Union):
    _fields_ = [("sival_int", ctypes.c_int), ("sival_ptr", ctypes.c_void_p)]


def _sigqueue(pid: int, signo: int) -> None:
    # Python has no sigqueue; a plain foreign call, no callback (MDWE-safe).
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.sigqueue(ctypes.c_int(pid), ctypes.c_int(signo), _Sigval(0)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def request_reload(pid: int, timeout: float) -> None:
    """Make the daemon `pid` reload and return once it has: raises
    ReloadRefused when it kept the old configuration, SetupError when it
    cannot be signalled, exits, or does not answer within `timeout` s."""
    answers = {RELOAD_APPLIED, RELOAD_REFUSED}
    # Blocked before asking, so that an answer cannot arrive unawaited.
    signal.pthread_sigmask(signal.SIG_BLOCK, answers)
    try:
        # A pidfd tells when the process exits (a zombie too) and names it
        # for good, whatever pid is reused later.
        pidfd = os.pidfd_open(pid)
    except OSError as e:
        raise SetupError(f"cannot signal route-chain process {pid}: "
                         f"{e.strerror.lower()}") from None
    try:
        _sigqueue(pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SetupError(f"route-chain process {pid} did not finish reloading "
                                 f"within {timeout:g}s")
            info = signal.sigtimedwait(answers, min(left, 0.25))
            if info is not None and info.si_pid == pid:
                if info.si_signo == RELOAD_REFUSED:
                    raise ReloadRefused(f"process {pid} refused the new configuration and "
                                        f"serves the previous one: its log says why")
                return
            if select.select([pidfd], [], [], 0)[0]:
                raise SetupError(f"route-chain process {pid} exited while reloading")
    except OSError as e:
        raise SetupError(f"cannot signal route-chain process {pid}: "
                         f"{e.strerror.lower()}") from None
    finally:
        os.close(pidfd)


def answer_reload(info, applied: bool) -> None:
    """The daemon's half: answer a SIGHUP sent by `request_reload` from our
    own user or root; any other SIGHUP gets no answer."""
    if info is None or info.si_code != SI_QUEUE or info.si_uid not in (0, os.getuid()):
        return
    try:
        os.kill(info.si_pid, RELOAD_APPLIED if applied else RELOAD_REFUSED)
    except OSError as e:
        log.warning("reload: cannot answer process %d: %s", info.si_pid, e.strerror)
