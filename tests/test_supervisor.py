"""routechain.supervisor, against a real child process that speaks
sd_notify on the socket it is given: which datagram wait_for returns, when
on_arrival runs, what a child that exits early is told apart by, and the
reload handshake. No root needed."""

from __future__ import annotations

import sys
import time

import pytest

from routechain.errors import SetupError
from routechain.supervisor import Supervisor

# The child: sends each argument as one datagram (a "sleep S" argument
# waits instead), answers SIGHUP with RELOADING=1 then READY=1, and stays
# until SIGTERM.
CHILD = r"""
import os, signal, socket, sys, time
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def send(text):
    sock.sendto(text.encode(), os.environ["NOTIFY_SOCKET"])
def on_hup(*_):
    send("RELOADING=1\nMONOTONIC_USEC=1")
    send("READY=1\nSTATUS=reloaded")
signal.signal(signal.SIGHUP, on_hup)
for arg in sys.argv[1:]:
    if arg.startswith("sleep "):
        time.sleep(float(arg.split()[1]))
    elif arg.startswith("exit "):
        print("giving up", file=sys.stderr, flush=True)
        sys.exit(int(arg.split()[1]))
    else:
        send(arg.replace("|", "\n"))
while True:
    time.sleep(1)
"""


def child(*steps: str) -> Supervisor:
    return Supervisor([sys.executable, "-c", CHILD, *steps])


def test_wait_for_returns_each_datagram_once_in_order():
    with child("READY=1|STATUS=a", "STATUS=b", "READY=1|STATUS=c") as sup:
        assert sup.wait_for("READY=1")["STATUS"] == "a"
        assert sup.wait_for("READY=1")["STATUS"] == "c"
        # A bare name matches any value; the datagrams taken are skipped.
        assert sup.wait_for("STATUS") == {"STATUS": "b"}
        with pytest.raises(SetupError, match="no READY=1 within 0.5 s"):
            sup.wait_for("READY=1", timeout=0.5)


def test_datagrams_keep_their_arrival_on_the_monotonic_clock():
    with child("STATUS=first", "sleep 0.3", "STATUS=second") as sup:
        first, second = sup.wait_for("STATUS"), sup.wait_for("STATUS")
        assert sup.started <= first.arrived
        assert second.arrived - first.arrived >= 250_000
        assert sup.received == [first, second]


def test_exit_before_ready_says_the_status_and_the_output():
    with child("STATUS=starting", "exit 3") as sup:
        with pytest.raises(SetupError, match="exited 3 before READY=1") as raised:
            sup.wait_for("READY=1")
        assert "giving up" in str(raised.value)
        assert sup.stop() == 3


def test_on_arrival_runs_before_the_datagram_is_seen():
    events = []
    with child("sleep 0.3", "READY=1") as sup:
        sup.wait_for("READY=1", on_arrival=lambda: events.append(("hook", len(sup.received))))
        events.append(("returned", len(sup.received)))
    assert events == [("hook", 0), ("returned", 1)]


def test_on_arrival_of_a_wait_that_gave_up_never_runs_later():
    events = []
    with child("sleep 0.5", "READY=1") as sup:
        with pytest.raises(SetupError):
            sup.wait_for("READY=1", timeout=0.1, on_arrival=lambda: events.append("late"))
        sup.wait_for("READY=1")
    assert events == []


def test_reload_is_sighup_then_reloading_then_ready():
    with child("READY=1|STATUS=up") as sup:
        sup.wait_for("READY=1")
        assert sup.reload()["STATUS"] == "reloaded"
        assert [d.get("RELOADING") for d in sup.received] == [None, "1", None]


def test_wait_for_line_waits_for_a_whole_line():
    with child("sleep 0.2", "exit 0") as sup:
        assert "giving up\n" in sup.wait_for_line("giving up", timeout=5)
        deadline = time.monotonic() + 5
        while sup.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(SetupError, match="no line with 'never'"):
            sup.wait_for_line("never", timeout=0.2)
