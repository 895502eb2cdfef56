"""docs/catalogue.md cannot drift: every command on the page runs, in the
test network of tests/netns.py, against the shipped docs/catalogue.toml,
and every line the page says it shows is in its output.

    ns "client" c0 192.0.2.2 --- r0 192.0.2.1 ns "router", route-chain
                                              --config docs/catalogue.toml

Hop n of a client is host + (n - 1): one router (the gateway) in front.
The page's rules: in a shown line `…` is any text (times, mostly), `≥N ms`
a time of at least N ms, and runs of white space are equal.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGE, CONFIG = DOCS / "catalogue.md", DOCS / "catalogue.toml"
TRIES = 3                # MDA stops at 99 % confidence; a rate or loss draws anew


def entries(text: str) -> list[tuple[str, str, list[str]]]:
    """(section title, command, shown lines) for each ```console block of
    the page, with the ```text block that follows it."""
    out, title, command, block = [], "", None, None
    for line in text.splitlines():
        if block is not None:                 # inside a fenced block
            if line == "```":
                if command is not None and kind == "text":
                    out.append((title, command, block))
                    command = None
                elif kind == "console":
                    command = block[0].removeprefix("$ ")
                block = None
            else:
                block.append(line)
        elif line.startswith("## "):
            title = line[3:]
        elif line in ("```console", "```text"):
            kind, block = line[3:], []
    return out


def pattern(shown: str) -> tuple[re.Pattern, list[float]]:
    """A shown line as a regex over one output line, and the least values
    of its `≥N ms` times, in order."""
    least, parts = [], []
    for piece in re.split(r"(…|≥[\d.]+ ms|\s+)", shown.strip()):
        if piece == "…":
            parts.append(".*?")
        elif piece.startswith("≥"):
            least.append(float(piece[1:-3]))
            parts.append(r"([\d.]+) ms")
        elif piece and piece.isspace():
            parts.append(r"\s+")
        elif piece:
            parts.append(re.escape(piece))
    return re.compile(r"^\s*" + "".join(parts) + r"\s*$"), least


def shows(output: str, shown: str) -> bool:
    regex, least = pattern(shown)
    for line in output.splitlines():
        m = regex.match(line)
        if m and all(float(v) >= n for v, n in zip(m.groups(), least)):
            return True
    return False


ENTRIES = entries(PAGE.read_text())


def test_catalogue_page_covers_every_chain_of_the_config():
    """Each chain of the shipped config has at least one command on the
    page aimed inside its prefix, and the page's rules parse."""
    import ipaddress
    from routechain import config
    chains = config.load(CONFIG).chains
    targets = [ipaddress.ip_address(a) for _, command, _ in ENTRIES
               for a in re.findall(r"\b198\.18\.\d+\.\d+\b", command)]
    for chain in chains:
        assert any(t in chain.network for t in targets), chain.interface
    assert len(ENTRIES) >= len(chains)
    assert shows(" 4  198.18.10.4  99.1 ms", "4  198.18.10.4  ≥99 ms")
    assert not shows(" 4  198.18.10.4  98.1 ms", "4  198.18.10.4  ≥99 ms")
    assert shows(" 2  10.0.0.1  0.1 ms  *", "2  10.0.0.1  …  *")


@pytest.fixture(scope="module")
def net():
    from netns import Daemon, TestNet
    with TestNet.create("cat") as net:
        with Daemon(net, "--config", str(CONFIG)) as daemon:
            daemon.wait_for("READY=1")
            yield net


@pytest.mark.netns
@pytest.mark.parametrize("title, command, lines", ENTRIES,
                         ids=[f"{n}-{e[1].split()[0]}" for n, e in enumerate(ENTRIES)])
def test_catalogue_command_shows_what_the_page_says(net, tmp_path, title, command, lines):
    for _ in range(TRIES):
        # In a scratch directory: dublin-traceroute writes trace.json there.
        out = net.run(net.client, *shlex.split(command), check=False, timeout=120,
                      cwd=tmp_path).stdout
        missing = [line for line in lines if not shows(out, line)]
        if not missing:
            return
    raise AssertionError(f"{title}: `{command}` does not show {missing}:\n{out}")
