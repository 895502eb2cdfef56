"""A story told to real clients: traceroute and mtr with names on, their
resolver pointed at the daemon's built-in DNS server, print the story line
by line, `* * *` for a silent hop; SIGHUP re-reads the story and the next
traceroute tells the new one.

The network is tests/netns.py's; the client's resolver is set the iproute2
way (/etc/netns/CLIENT/resolv.conf, bind-mounted by `ip netns exec`).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from netns import CHAIN4, CHAIN6, GATEWAY4, GATEWAY6, Daemon, TestNet

pytestmark = pytest.mark.netns

STORY = """\
Once upon a time
a packet crossed the sea
*
and came home
"""
NEW_STORY = """\
Later that day
the packet rested
and slept
"""
STORY_NAME = "story.example.net"  # the chains' forward name (routechain.names)
NAMES = ["Once.upon.a.time", "a.packet.crossed.the.sea", None, "and.came.home"]
NEW_NAMES = ["Later.that.day", "the.packet.rested", "and.slept"]
# Chapters of the story (LABEL: the line it starts at): a trace to
# LABEL.story.example.net shows the story from that line on, right behind
# the gateway, and ends at the chapter's own address with the last line.
CHAPTERS = {"crossing": 2, "home": 3}


@pytest.fixture(scope="module")
def story_net(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("story")
    (tmp / "story.txt").write_text(STORY)
    config = tmp / "rc.toml"
    host4 = ipaddress.ip_interface(CHAIN4).ip
    host6 = ipaddress.ip_interface(CHAIN6).ip
    chapters = ", ".join(f"{label} = {k}" for label, k in CHAPTERS.items())
    config.write_text(f'[[chain]]\naddress = "{CHAIN4}"\nstory = "story.txt"\n'
                      f'name = "{STORY_NAME}"\nchapters = {{ {chapters} }}\n\n'
                      f'[[chain]]\naddress = "{CHAIN6}"\nstory = "story.txt"\n'
                      f'name = "{STORY_NAME}"\nchapters = {{ {chapters} }}\n\n'
                      f'[dns]\nlisten = ["{host4}:53", "[{host6}]:53"]\n')
    with TestNet.create("st") as net:
        resolv = Path("/etc/netns", net.client)
        resolv.mkdir(parents=True)
        (resolv / "resolv.conf").write_text(f"nameserver {host4}\noptions timeout:2 attempts:2\n")
        try:
            with Daemon(net, "--config", str(config), "--queues", "1") as daemon:
                daemon.wait_for("READY=1")
                yield net, daemon, tmp
        finally:
            (resolv / "resolv.conf").unlink()
            resolv.rmdir()


def hop_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if re.match(r"^\s*\d+\s", line)]


def check_story(out: str, family: int, names: list[str | None], first: int = 1,
                last=None) -> None:
    """The trace shows the gateway, then the story from line `first` on,
    line k from host + k, the last line from `last` (default: host + k)."""
    host = ipaddress.ip_interface(CHAIN4 if family == 4 else CHAIN6).ip
    lines = hop_lines(out)
    assert len(lines) == len(names) - first + 2, out
    gateway = GATEWAY4 if family == 4 else GATEWAY6
    assert lines[0].split()[1:3] == [gateway, f"({gateway})"], out
    for k, line in enumerate(lines[1:], start=first):
        name = names[k - 1]
        address = last if last is not None and k == len(names) else host + k
        if name is None:
            assert line.split()[1:] == ["*", "*", "*"], out
        else:
            assert line.split()[1:3] == [name, f"({address})"], out


@pytest.mark.parametrize("family", [4, 6])
def test_traceroute_with_names_prints_the_story(story_net, family):
    net, _, _ = story_net
    dest = ipaddress.ip_interface(CHAIN4 if family == 4 else CHAIN6).ip + len(NAMES)
    out = net.run(net.client, "traceroute", f"-{family}", "-w", "1", "-m", "8", str(dest),
                  timeout=120).stdout
    check_story(out, family, NAMES)


def test_mtr_report_shows_the_names(story_net):
    net, _, _ = story_net
    dest = ipaddress.ip_interface(CHAIN4).ip + len(NAMES)
    out = net.run(net.client, "mtr", "--report", "--report-wide", "-c", "2", str(dest),
                  timeout=120).stdout
    shown = re.findall(r"^\s*\d+\.\|--\s+(\S+)", out, re.MULTILINE)
    assert shown == [GATEWAY4, NAMES[0], NAMES[1], "???", NAMES[3]], out


@pytest.mark.parametrize("family", [4, 6])
def test_traceroute_by_the_story_name(story_net, family):
    """`traceroute story.example.net`: the name resolves (A or AAAA) through
    the built-in server to the chain's destination, and the story follows."""
    net, _, _ = story_net
    out = net.run(net.client, "traceroute", f"-{family}", "-w", "1", "-m", "8", STORY_NAME,
                  timeout=120).stdout
    dest = ipaddress.ip_interface(CHAIN4 if family == 4 else CHAIN6).ip + len(NAMES)
    assert out.splitlines()[0].startswith(f"traceroute to {STORY_NAME} ({dest})"), out
    check_story(out, family, NAMES)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("label", list(CHAPTERS))
def test_traceroute_by_a_chapter_name(story_net, family, label):
    """`traceroute LABEL.story.example.net`: the chapter's name resolves to
    an address past the chain, and the trace shows the story from the
    chapter's line on, behind the gateway, to the last line, answered from
    the chapter's address with the last line's name."""
    net, _, _ = story_net
    name = f"{label}.{STORY_NAME}"
    out = net.run(net.client, "traceroute", f"-{family}", "-w", "1", "-m", "8", name,
                  timeout=120).stdout
    host = ipaddress.ip_interface(CHAIN4 if family == 4 else CHAIN6).ip
    chapter = host + len(NAMES) + 1 + list(CHAPTERS).index(label)   # the first free addresses
    assert out.splitlines()[0].startswith(f"traceroute to {name} ({chapter})"), out
    check_story(out, family, NAMES, first=CHAPTERS[label], last=chapter)


def test_sighup_rereads_the_story(story_net):
    net, daemon, tmp = story_net
    (tmp / "story.txt").write_text(NEW_STORY)
    daemon.reload()
    dest = ipaddress.ip_interface(CHAIN4).ip + len(NEW_NAMES)
    out = net.run(net.client, "traceroute", "-4", "-w", "1", "-m", "8", str(dest),
                  timeout=120).stdout
    check_story(out, 4, NEW_NAMES)
