"""A stand-in for the service manager: start route-chain with a
$NOTIFY_SOCKET of our own and follow what it says there, as systemd would.
The one way the tests, `route-chain demo` and bench/startup start a daemon
and wait for it.

The socket is read all the time, by a thread, as systemd reads it: a daemon
whose STATUS= lines nobody reads would block in sd_notify once the socket's
queue is full, which is the supervisor's fault, not the daemon's. Each
datagram is kept with the moment it arrived, in µs on CLOCK_MONOTONIC (the
clock of MONOTONIC_USEC=). The socket and its directory are open to every
user, as systemd's are, so that a daemon that dropped to another user
(--user) still reaches it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .errors import SetupError

# Inherited from a service manager of our own, these would mislead the child.
_NOT_PASSED_ON = ("JOURNAL_STREAM", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS",
                  "LISTEN_PID", "LISTEN_FDNAMES")
_POLL = 0.1  # seconds between looks at the socket and at the child


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Datagram(dict):
    """One sd_notify datagram, `READY=1\\nSTATUS=...` as {"READY": "1",
    "STATUS": "..."}, with `arrived` (µs on CLOCK_MONOTONIC)."""

    def __init__(self, data: bytes, arrived: int) -> None:
        super().__init__(line.partition("=")[::2]
                         for line in data.decode(errors="replace").split("\n") if line)
        self.arrived = arrived

    def holds(self, field: str) -> bool:
        """`NAME=VALUE` with that value, or a bare `NAME` with any."""
        name, has_value, value = field.partition("=")
        return name in self and (not has_value or self[name] == value)


class Supervisor:
    """`argv` running under a notify socket of ours; its output (stdout and
    stderr) goes to a log file, read by output(). `env` adds to (or
    replaces) our environment; the other keyword arguments go to Popen.
    stop() and close() (and leaving a `with` block) end it with SIGTERM."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike | None = None,
                 preexec_fn: Callable[[], None] | None = None,
                 start_new_session: bool = False) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="rc-supervised-")
        os.chmod(self._dir.name, 0o755)
        self.notify_path = os.path.join(self._dir.name, "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.bind(self.notify_path)
        os.chmod(self.notify_path, 0o666)
        self._sock.settimeout(_POLL)
        self.received: list[Datagram] = []  # every datagram, in order
        self._taken: set[int] = set()  # indices wait_for has returned
        self._hooks: list[tuple[str, Callable[[], None]]] = []
        self._hook_errors: list[BaseException] = []
        self._arrived = threading.Condition()
        self._reading = True
        self._reader = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._reader.start()
        self.log = Path(self._dir.name, "log")
        environment = {k: v for k, v in os.environ.items() if k not in _NOT_PASSED_ON}
        environment.update(env or {}, NOTIFY_SOCKET=self.notify_path)
        try:
            with open(self.log, "w") as out:
                self.started = monotonic_usec()
                self.proc = subprocess.Popen(
                    list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env=environment, cwd=cwd, preexec_fn=preexec_fn,
                    start_new_session=start_new_session)
        except BaseException:
            self._close_socket()
            raise

    def _read(self) -> None:
        while self._reading:
            try:
                data = self._sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            datagram = Datagram(data, monotonic_usec())
            with self._arrived:
                due = [hook for hook in self._hooks if datagram.holds(hook[0])]
                for hook in due:
                    self._hooks.remove(hook)
            for _, run in due:  # before wait_for can see the datagram
                try:
                    run()
                except BaseException as e:  # noqa: BLE001 - raised again by wait_for
                    self._hook_errors.append(e)
            with self._arrived:
                self.received.append(datagram)
                self._arrived.notify_all()

    def wait_for(self, field: str, timeout: float = 20,
                 on_arrival: Callable[[], None] | None = None) -> Datagram:
        """The first datagram holding `field` (`READY=1`, or a bare name
        such as `STATUS`) that no earlier wait_for returned. `on_arrival()`
        runs the moment it lands, before anything else is read, unless it
        is already here. SetupError if the child exits first or `timeout`
        seconds pass."""
        deadline = time.monotonic() + timeout
        exited = False
        hook = (field, on_arrival)
        with self._arrived:
            if on_arrival is not None and self._untaken(field) is None:
                self._hooks.append(hook)
            try:
                while True:
                    if self._hook_errors:
                        raise self._hook_errors.pop(0)
                    found = self._untaken(field)
                    if found is not None:
                        self._taken.add(found)
                        return self.received[found]
                    if exited:  # and what it sent before exiting has been read
                        raise SetupError(f"route-chain exited {self.proc.returncode} "
                                         f"before {field}:\n{self.output()}")
                    if time.monotonic() >= deadline:
                        raise SetupError(f"no {field} within {timeout:g} s:\n"
                                         f"{self.output()}")
                    exited = self.proc.poll() is not None
                    self._arrived.wait(_POLL * 3 if exited else _POLL)
            finally:
                if hook in self._hooks:  # never ran: it must not run for a later wait
                    self._hooks.remove(hook)

    def reload(self, timeout: float = 20) -> Datagram:
        """SIGHUP, as `systemctl reload` sends it, and the READY=1 that
        ends the reload after its RELOADING=1 (its STATUS= says "reload
        failed, ..." when the new configuration was refused)."""
        self.signal(signal.SIGHUP)
        self.wait_for("RELOADING=1", timeout)
        return self.wait_for("READY=1", timeout)

    def _untaken(self, field: str) -> int | None:
        return next((i for i, datagram in enumerate(self.received)
                     if i not in self._taken and datagram.holds(field)), None)

    def next_status(self, containing: str = "", timeout: float = 15) -> str:
        """The STATUS= value of the next datagram to arrive whose STATUS
        holds `containing` (route-chain sends one every 5 s)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            seen = len(self.received)
            while time.monotonic() < deadline:
                for datagram in self.received[seen:]:
                    if containing in datagram.get("STATUS", "\0"):
                        return datagram["STATUS"]
                seen = len(self.received)
                self._arrived.wait(_POLL)
        raise SetupError(f"no STATUS= with {containing!r} within "
                         f"{timeout:g} s:\n{self.output()}")

    def collect(self, seconds: float) -> list[Datagram]:
        """Every datagram arriving in the next `seconds`."""
        mark = len(self.received)
        time.sleep(seconds)
        with self._arrived:
            return self.received[mark:]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_line(self, text: str, since: int = 0, timeout: float = 10) -> str:
        """The output from offset `since` on, once a whole line of it holds
        `text`. SetupError if `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.output()[since:]
            if any(text in line for line in out.splitlines(keepends=True)
                   if line.endswith("\n")):
                return out
            if time.monotonic() >= deadline:
                raise SetupError(f"no line with {text!r} within {timeout:g} s:\n{out}")
            time.sleep(_POLL)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, and the exit status (SIGKILL only if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        self._close_socket()

    def _close_socket(self) -> None:
        self._reading = False
        self._reader.join()
        self._sock.close()
        self._dir.cleanup()

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
