"""Config files for the tests: one way to write one (with the story file
its chains may name beside it) and to get the one line config.load
refuses it with. Any test of a setting's bad value goes through
`refusal`, so that the file:line a user reads is checked the same way
everywhere."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from routechain import config
from routechain.errors import ConfigError

NAME = "route-chain.toml"


def write(directory: Path, text: str, story: str = "one\ntwo,\n") -> Path:
    """`text` (dedented) as directory/route-chain.toml, story.txt beside
    it; the path relative to the working directory, as a user gives it
    (messages name the file that way)."""
    (directory / "story.txt").write_text(story)
    path = directory / NAME
    path.write_text(textwrap.dedent(text))
    return Path(os.path.relpath(path))


def refusal(directory: Path, text: str, story: str = "one\ntwo,\n") -> str:
    """The message of the ConfigError config.load raises for a config file
    of `text` (the test fails if the file loads), the file named as from
    its own directory: `route-chain.toml:3: ...`."""
    path = write(directory, text, story)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    return message.replace(f"{path}:", f"{NAME}:")
