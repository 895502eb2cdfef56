"""daemon.Running.reload's guard, step by step: whatever fails, of whatever
type, at whichever step, the steps already applied are undone in reverse,
the failure is one line in the log and STATUS=, and the counters say so.

The system side is replaced by recorders (the kernel's view is proved in
test_reload.py with a real daemon); the tables are real C tables.
"""

from __future__ import annotations

import ipaddress
import logging

import dns.exception
import pytest

from routechain import chaintable, daemon, workers
from routechain.chain import Chain
from routechain.config import Config, Daemon
from routechain.errors import ConfigError, SetupError

OLD = Config(chains=(Chain(ipaddress.ip_interface("198.18.0.1/24")),), daemon=Daemon(mtu=1400))
NEW = Config(chains=(Chain(ipaddress.ip_interface("198.19.0.1/24")),), daemon=Daemon(mtu=1500))


class Recorder:
    """Records each call as (name, argument); raises `fail` on `fail_at`."""

    def __init__(self, calls: list, fail_at: str | None, fail: BaseException | None) -> None:
        self.calls, self.fail_at, self.fail = calls, fail_at, fail

    def step(self, name: str, arg) -> None:
        self.calls.append((name, arg))
        if name == self.fail_at and arg is NEW:
            raise self.fail


class Parts:
    def __init__(self, calls, fail_at, fail):
        rec = Recorder(calls, fail_at, fail)
        tables = {}

        class Link:
            def set_mtu(self, mtu):
                rec.step("mtu", NEW if mtu == NEW.daemon.mtu else OLD)

        class Keeper:
            repairs = 0

            def adopt(self, config, strict):
                rec.step("addresses", NEW if config.chains == NEW.chains else OLD)
                return config

        class Live:
            table = chaintable.Table(OLD.chains)

            def publish(self, table):
                which = NEW if table.chains == NEW.chains else OLD
                tables[id(table)] = table
                self.table = table
                rec.step("publish", which)

        class Dns:
            def reload(self, config):
                rec.step("dns", config)

            def summary(self):
                return ""

        class Workers:
            def totals(self):
                return workers.Stats.total([])

        class Notifier:
            def reloading(self):
                calls.append(("RELOADING", None))

            def ready(self, status=""):
                calls.append(("READY", status))

        self.link, self.keeper, self.live = Link(), Keeper(), Live()
        self.dns, self.workers, self.notifier = Dns(), Workers(), Notifier()


def running(calls, fail_at=None, fail=None, load=lambda: NEW) -> daemon.Running:
    p = Parts(calls, fail_at, fail)
    return daemon.Running(load, OLD, daemon.Started.of(OLD), p.link, p.keeper, p.live,
                          p.workers, p.dns, p.notifier)


def test_reload_guard_applies_a_good_config_in_order():
    calls: list = []
    r = running(calls)
    r.reload()
    assert calls[:-1] == [("RELOADING", None), ("addresses", NEW), ("publish", NEW),
                          ("dns", NEW), ("mtu", NEW)]
    assert r.config is NEW and (r.reloads_ok, r.reloads_failed, r.last_reload_ok) == (1, 0, True)


def _boom(exc):
    def load():
        raise exc
    return load


FAILURES = [
    ConfigError("rc.toml:3: bad"), RecursionError("maximum recursion depth exceeded"),
    MemoryError(), dns.exception.SyntaxError("A DNS name is > 255 octets long."),
    OSError(5, "Input/output error"), SetupError("netlink says no"), KeyError("x"),
]
STEPS = ["load", "addresses", "publish", "dns", "mtu"]
UNDONE = {  # what a failure at each step must put back, in this order
    "load": [], "addresses": [("addresses", OLD)],
    "publish": [("publish", OLD), ("addresses", OLD)],
    "dns": [("dns", OLD), ("publish", OLD), ("addresses", OLD)],
    "mtu": [("dns", OLD), ("publish", OLD), ("addresses", OLD)],
}


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("exc", FAILURES, ids=lambda e: type(e).__name__)
def test_reload_guard_refuses_any_failure_and_puts_back_the_old(step, exc, caplog):
    calls: list = []
    if step == "load":
        r = running(calls, load=_boom(exc))
    else:
        r = running(calls, fail_at=step, fail=exc)
    with caplog.at_level(logging.ERROR, logger="route-chain"):
        r.reload()
    applied = [c for c in calls if c[1] is NEW]
    undone = calls[1 + len(applied):-1]
    assert undone == UNDONE[step], calls
    assert r.config is OLD
    assert (r.reloads_ok, r.reloads_failed, r.last_reload_ok) == (0, 1, False)
    name, status = calls[-1]
    assert name == "READY" and status.startswith(
        "reload failed, still serving the previous configuration: ") and "\n" not in status
    assert type(exc).__name__ in status or str(exc) in status
    errors = [rec.getMessage() for rec in caplog.records]
    assert errors == [status], errors


def test_reload_guard_counts_and_recovers():
    calls: list = []
    outcomes = iter([NEW, MemoryError(), OLD])

    def load():
        item = next(outcomes)
        if isinstance(item, BaseException):
            raise item
        return item
    r = running(calls, load=load)
    r.reload()
    r.reload()
    assert (r.reloads_ok, r.reloads_failed, r.last_reload_ok) == (1, 1, False)
    r.reload()
    assert (r.reloads_ok, r.reloads_failed, r.last_reload_ok) == (2, 1, True)
