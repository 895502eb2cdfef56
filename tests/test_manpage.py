"""route-chain(8) (docs/route-chain.8, written by hand) stays true: every
subcommand and every option that `route-chain [CMD] --help` lists is in it,
and man renders it without a warning."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from routechain import __version__
from routechain.cli import COMMANDS

PAGE = Path(__file__).resolve().parent.parent / "docs" / "route-chain.8"


def page_text() -> str:
    """The page's source with roff's escaped hyphens made plain."""
    return PAGE.read_text().replace("\\-", "-")


def help_options(*command: str) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "routechain", *command, "--help"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    found = set()
    for line in out.splitlines():
        if line.startswith("  -"):
            found |= set(re.findall(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)", line.split("  ")[1]))
    return found


@pytest.mark.parametrize("command", [(), *((c,) for c in COMMANDS)],
                         ids=["serve", *COMMANDS])
def test_manpage_lists_every_option(command):
    text = page_text()
    options = help_options(*command)
    assert options, command
    assert sorted(o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])",
                                                      text)) == []


def test_manpage_has_every_subcommand():
    text = page_text()
    commands = re.findall(r"^\.TP\n\.B (\w+)\b", text.split(".SH COMMANDS")[1].split(".SH ")[0],
                          re.MULTILINE)
    assert sorted(commands) == sorted(COMMANDS)


@pytest.mark.skipif(shutil.which("man") is None, reason="needs man (man-db)")
def test_manpage_renders_without_warnings():
    result = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", str(PAGE)],
                            capture_output=True, text=True, timeout=60,
                            env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "route-chain doctor [--config FILE] [--uplink NAME ...]" in result.stdout


def test_manpage_and_debian_changelog_carry_the_version():
    root = PAGE.parent.parent
    assert re.search(rf'^\.TH ROUTE-CHAIN 8 "[^"]+" "route-chain {re.escape(__version__)}"',
                     PAGE.read_text(), re.MULTILINE)
    first = (root / "debian" / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"route-chain ({__version__}) "), first
