"""routechain.service against a real AF_UNIX datagram socket standing in for
the service manager's $NOTIFY_SOCKET: the datagrams checked are the ones
systemd would read."""

from __future__ import annotations

import logging
import os
import socket
import time

import pytest
from systemd import journal

from routechain import service


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A bound datagram socket, named in $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def receive(sock: socket.socket) -> list[str]:
    """One datagram, as its lines."""
    return sock.recv(4096).decode().split("\n")


def nothing_waiting(sock: socket.socket) -> bool:
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(timeout)
    return False


# (call, expected datagram lines)
MESSAGES = [
    (lambda n: n.ready(), ["READY=1"]),
    (lambda n: n.ready("3 chains, 2 queues"), ["READY=1", "STATUS=3 chains, 2 queues"]),
    (lambda n: n.status("rx 10 tx 9"), ["STATUS=rx 10 tx 9"]),
    (lambda n: n.status("two\nlines"), ["STATUS=two lines"]),
    (lambda n: n.stopping(), ["STOPPING=1"]),
    (lambda n: n.watchdog(), ["WATCHDOG=1"]),
]


@pytest.mark.parametrize("call,expected", MESSAGES)
def test_notifier_sends_exact_datagram(notify_socket, call, expected):
    call(service.Notifier())
    assert receive(notify_socket) == expected
    assert nothing_waiting(notify_socket)


def test_notifier_reloading_carries_monotonic_usec(notify_socket):
    """RELOADING=1 and MONOTONIC_USEC= arrive in one datagram, the time on
    CLOCK_MONOTONIC between the moments before and after the call."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    service.Notifier().reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = receive(notify_socket)
    assert lines[0] == "RELOADING=1"
    assert len(lines) == 2 and lines[1].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[1].removeprefix("MONOTONIC_USEC=")) <= after


def test_notifier_abstract_socket(monkeypatch):
    """systemd may hand out an abstract socket: `@name`."""
    name = f"route-chain-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        service.Notifier().ready()
        assert receive(sock) == ["READY=1"]


def test_notifier_silent_without_notify_socket(tmp_path, monkeypatch):
    """No $NOTIFY_SOCKET: nothing is sent, even to a socket that exists."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        notifier = service.Notifier()
        assert not notifier.enabled
        notifier.ready("x")
        notifier.reloading()
        notifier.status("x")
        notifier.watchdog()
        notifier.stopping()
        assert notifier.watchdog_interval() is None
        assert nothing_waiting(sock)


def test_notifier_failure_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    """An unreachable socket (gone, or not ours after --user) must not stop
    the daemon: the first failure is a warning, later ones debug."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    notifier = service.Notifier()
    with caplog.at_level(logging.DEBUG, logger="route-chain"):
        notifier.ready()
        notifier.watchdog()
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels[0][0] == logging.WARNING and "READY=1" in levels[0][1]
    assert str(tmp_path / "gone") in levels[0][1]
    assert levels[1][0] == logging.DEBUG and "WATCHDOG=1" in levels[1][1]


PID = 4242
# (WATCHDOG_USEC, WATCHDOG_PID, expected interval in seconds)
WATCHDOG_ENV = [
    ("30000000", None, 15.0),
    ("30000000", str(PID), 15.0),
    ("30000000", str(PID + 1), None),
    ("1000", None, 0.0005),
    (None, None, None),
    ("0", None, None),
    ("", None, None),
    ("30s", None, None),
    ("-5", None, None),
    ("30000000", "", 15.0),
    ("30000000", "me", None),
]


@pytest.mark.parametrize("usec,pid,expected", WATCHDOG_ENV)
def test_watchdog_interval_rule(usec, pid, expected):
    env = {}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if pid is not None:
        env["WATCHDOG_PID"] = pid
    assert service.watchdog_interval(env, PID) == expected


def test_notifier_watchdog_interval_reads_environment(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert service.Notifier().watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert service.Notifier().watchdog_interval() is None


@pytest.fixture
def stderr_file(tmp_path):
    """A real file standing for stderr, so it has a device and an inode
    (pytest's capture owns sys.stderr itself)."""
    f = open(tmp_path / "stderr", "w+")
    yield f
    f.close()


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield root
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def journal_stream_of(f) -> str:
    st = os.fstat(f.fileno())
    return f"{st.st_dev}:{st.st_ino}"


def test_setup_logging_uses_journal_when_stderr_is_journal_stream(
        stderr_file, monkeypatch, restore_root_logger):
    monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of(stderr_file))
    service.setup_logging(stream=stderr_file)
    (handler,) = restore_root_logger.handlers
    assert isinstance(handler, journal.JournalHandler)
    assert restore_root_logger.level == logging.INFO


def test_setup_logging_journal_fields(stderr_file, monkeypatch, restore_root_logger):
    """The record reaches the journal with our identifier, its priority and
    the structured fields given as extra=."""
    monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of(stderr_file))
    service.setup_logging(verbose=True, stream=stderr_file)
    (handler,) = restore_root_logger.handlers
    sent = []
    handler.send = lambda MESSAGE, **fields: sent.append((MESSAGE, fields))
    logging.getLogger("routechain.test").warning(
        "chain %s reloaded", "2001:db8::/64", extra={"CHAIN": "2001:db8::/64"})
    ((message, fields),) = sent
    assert message == "chain 2001:db8::/64 reloaded"
    assert fields["SYSLOG_IDENTIFIER"] == "route-chain"
    assert fields["PRIORITY"] == "4"
    assert fields["CHAIN"] == "2001:db8::/64"
    assert restore_root_logger.level == logging.DEBUG


@pytest.mark.parametrize("journal_stream", [None, "", "1:2", "x:y", "12345"])
def test_setup_logging_uses_stderr_otherwise(
        stderr_file, monkeypatch, restore_root_logger, journal_stream):
    """No $JOURNAL_STREAM, or one naming another file (inherited by a child
    whose stderr was redirected): plain terse lines on stderr."""
    if journal_stream is None:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    else:
        monkeypatch.setenv("JOURNAL_STREAM", journal_stream)
    service.setup_logging(stream=stderr_file)
    (handler,) = restore_root_logger.handlers
    assert not isinstance(handler, journal.JournalHandler)
    log = logging.getLogger("routechain.test")
    log.info("serving 3 chains")
    log.warning("story.txt:4: label cut")
    log.debug("not shown without verbose")
    stderr_file.seek(0)
    assert stderr_file.read().splitlines() == [
        "route-chain: serving 3 chains",
        "route-chain: warning: story.txt:4: label cut",
    ]


def test_setup_logging_twice_keeps_one_handler(stderr_file, restore_root_logger):
    service.setup_logging(stream=stderr_file)
    service.setup_logging(verbose=True, stream=stderr_file)
    assert len(restore_root_logger.handlers) == 1
