"""`route-chain demo` prints the built-in story through a real traceroute,
whose resolver asks the built-in DNS server, and leaves nothing behind."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from routechain import demo

pytestmark = pytest.mark.netns


def demo_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("rc-demo-")}


@pytest.mark.parametrize("family", [4, 6])
def test_demo_traceroute_prints_the_story(family):
    args = ["demo"] + (["-6"] if family == 6 else [])
    r = subprocess.run([sys.executable, "-m", "routechain", *args], capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    chain = demo.demo_config().chains[0 if family == 4 else 1]
    lines = [line for line in r.stdout.splitlines() if re.match(r"^\s*\d+\s", line)]
    # Hop 1 is the router; hop k+1 is line k of the story.
    assert len(lines) == chain.length + 1, r.stdout
    for k, line in enumerate(lines[1:], start=1):
        hop = chain.hop(k)
        if hop.silent:
            assert line.split()[1:] == ["*"], line
        else:
            shown = line.split()[1]
            assert shown.encode("idna").decode().lower() == hop.name.lower() or \
                shown.lower() == hop.name.lower(), (shown, hop.name)
            assert f"({chain.hop_address(k)})" in line, line
    assert demo_namespaces() == set()
