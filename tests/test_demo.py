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
    told = r.stdout.split("\n$ ")[0]           # the story; the path follows
    lines = [line for line in told.splitlines() if re.match(r"^\s*\d+\s", line)]
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


@pytest.mark.parametrize("family", [4, 6])
def test_demo_path_shows_a_delay_and_a_label_stack(family):
    """After the story, `traceroute -e` of the short path: the hop across
    the ocean (or its fork) carries a two-label stack, and it and every hop
    after it answer at least 40 ms late, the hops before it well under."""
    args = ["demo"] + (["-6"] if family == 6 else [])
    r = subprocess.run([sys.executable, "-m", "routechain", *args], capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    story, path = r.stdout.split("\n$ ")
    assert path.startswith(f"traceroute -{family} -e "), r.stdout
    chain = demo.demo_path(family)
    lines = {int(m.group(1)): m.group(2)
             for m in re.finditer(r"^\s*(\d+)\s+(.*)$", path, re.M)}
    assert len(lines) == chain.length + 1, path
    ms = {n: float(re.search(r"([\d.]+) ms", line).group(1)) for n, line in lines.items()}
    # traceroute hop n is story line n - 1; line 3 crosses the ocean.
    assert re.search(r"<MPLS:L=2400[12],E=0,S=0,T=1/L=16001,E=0,S=1,T=1>", lines[4]), lines[4]
    assert "<MPLS:L=16001,E=0,S=1,T=1" in lines[3], lines[3]
    assert all(ms[n] >= 40 for n in (4, 5, 6)), ms
    assert all(ms[n] < 30 for n in (1, 2, 3)), ms
    assert demo_namespaces() == set()
