"""Forward names for stories (routechain.names): a chain's `name` is a zone
of its own whose apex answers A/AAAA with the chain's destination; its
files pass the zone checkers, and the config refuses what cannot work."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import dns.rdatatype
import pytest

from conftest import cannot_run
from routechain import config, names
from routechain.errors import ConfigError

CONFIG = """\
[[chain]]
address = "198.51.100.1/24"
hops = ["Once upon a time", "The end"]
name = "Story.Example.net."
chapters = { End = 2 }

[[chain]]
address = "2001:db8:5::1/64"
hops = ["Once upon a time", "*", "The end"]
name = "story.example.net"
chapters = { end = 3, "middle-part" = 2 }

[[chain]]
address = "192.0.2.1/24"
hops = ["Another"]
name = "other.example.net"

[dns]
ns = ["ns1.example.net"]
"""


def load(tmp_path: Path, text: str = CONFIG) -> config.Config:
    path = tmp_path / "c.toml"
    path.write_text(textwrap.dedent(text))
    return config.load(path)


def test_names_zone_holds_the_destinations(tmp_path):
    zones = names.build(load(tmp_path), now=1000)
    assert [z.origin.to_text() for z in zones] == ["other.example.net.", "story.example.net."]
    story = {dns.rdatatype.to_text(r.rdtype): sorted(rd.to_text() for rd in r)
             for r in zones[1].rrsets if r.name == zones[1].origin}
    assert story["A"] == ["198.51.100.3"] and story["AAAA"] == ["2001:db8:5::4"]
    assert story["NS"] == ["ns1.example.net."] and story["SOA"][0].split()[2] == "1000"


def test_names_chapters_answer_with_their_addresses(tmp_path):
    """LABEL.NAME answers A/AAAA with the chapter's address, the first free
    one after the chain's: both families where both chains have it."""
    zones = names.build(load(tmp_path), now=1000)
    found = {(r.name.to_text(), dns.rdatatype.to_text(r.rdtype)): sorted(rd.to_text() for rd in r)
             for r in zones[1].rrsets}
    assert found[("end.story.example.net.", "A")] == ["198.51.100.4"]
    assert found[("end.story.example.net.", "AAAA")] == ["2001:db8:5::5"]
    assert found[("middle-part.story.example.net.", "AAAA")] == ["2001:db8:5::6"]
    assert ("middle-part.story.example.net.", "A") not in found
    assert len(found) == 2 + 2 + 3


def test_names_none_without_a_name():
    assert names.build(config.Config()) == []


@pytest.mark.parametrize("checker", ["kzonecheck", "named-checkzone", "nsd-checkzone"])
def test_names_files_pass_checker(tmp_path, checker):
    if shutil.which(checker) is None:
        cannot_run(f"{checker} is not installed")
    for path in names.export(load(tmp_path), tmp_path / "out"):
        origin = path.name[:-len(".zone")]
        args = {"kzonecheck": ["kzonecheck", "-o", origin, str(path)],
                "named-checkzone": ["named-checkzone", origin, str(path)],
                "nsd-checkzone": ["nsd-checkzone", origin, str(path)]}[checker]
        done = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('name = "other.example.net"', 'chapters = { a = 2 }'),
     "c.toml:16: chapters need the chain's name"),
    (lambda t: t.replace('{ End = 2 }', '{ "a.b" = 2 }'),
     "c.toml:5: chapter 'a.b' is not one DNS label"),
    (lambda t: t.replace('{ End = 2 }', '{ "-x" = 2 }'),
     "c.toml:5: chapter '-x' is not one DNS label"),
    (lambda t: t.replace('{ End = 2 }', '{ End = 3 }'),
     "c.toml:5: chapter 'end' starts at hop 3: the chain has hops 1..2"),
    (lambda t: t.replace('{ End = 2 }', '{ End = 1 }'),
     "c.toml:5: chapter 'end' starts at hop 1"),
    (lambda t: t.replace('{ End = 2 }', '{ End = "2" }'),
     "c.toml:5: chapter 'End' = '2': write the hop it starts at, an integer"),
    (lambda t: t.replace('{ End = 2 }', '{ End = 2, end = 2 }'),
     "c.toml:5: chapter 'end' is given twice"),
    (lambda t: t.replace('"other.example.net"', '"end.story.example.net"'),
     "c.toml:5: chapter end.story.example.net is also the name of the chain at "),
    (lambda t: t.replace('"198.51.100.1/24"', '"198.51.100.4/29"'),
     "c.toml:1: 1 chapter does not fit in 198.51.100.0/29: it has room for 0 after the "
     "chain's last address 198.51.100.6"),
    (lambda t: t.replace('"other.example.net"', '"3.2.0.192.in-addr.arpa"'),
     "c.toml:16: name '3.2.0.192.in-addr.arpa' is a reverse name"),
    (lambda t: t.replace('"other.example.net"', '"bad name"'),
     "c.toml:16: name 'bad name' is not a host name"),
])
def test_names_config_refusals(tmp_path, edit, message):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, edit(CONFIG))
    assert "/" + message in str(info.value)  # file:line: value
