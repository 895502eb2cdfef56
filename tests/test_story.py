"""Story lines to hop names (routechain.story), table-driven."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from routechain import story
from routechain.chain import MAX_HOPS
from routechain.errors import ConfigError

# (line, expected name or None for "no name", a word the warning must hold or None
# for "no warning")
NAMES = [
    # kept as written: already a host name
    ("gateway.example.net", "gateway.example.net", None),
    ("Once", "Once", None),
    ("r1-fra", "r1-fra", None),
    ("  padded.host  ", "padded.host", None),
    # words become labels, punctuation is dropped, case is kept
    ("Once upon a time,", "Once.upon.a.time", "becomes 'Once.upon.a.time'"),
    ("The end.", "The.end", "becomes"),
    ("don't panic!", "dont.panic", "becomes"),
    ("Hello,   world", "Hello.world", "becomes"),
    ("tab\tseparated", "tab.separated", "becomes"),
    ("(quoted) \"words\"", "quoted.words", "becomes"),
    # mapped characters
    ("Q&A", "QandA", "becomes"),
    ("me@home", "meathome", "becomes"),
    ("snake_case", "snake-case", "becomes"),
    ("either/or", "either-or", "becomes"),
    ("time—and again", "time-and.again", "becomes"),
    ("well--known", "well--known", None),  # RFC 1123 allows inner runs
    ("well-- known!", "well.known", "becomes"),
    # labels never start or end with a hyphen
    ("-leading", "leading", "becomes"),
    ("trailing-", "trailing", "becomes"),
    ("- dash -", "dash", "becomes"),
    # dots inside a word separate labels; empty labels vanish
    ("e.g. this", "e.g.this", "becomes"),
    ("wait...what", "wait.what", "becomes"),
    ("v1.2.3", "v1.2.3", None),
    # non-ASCII words become IDNA A-labels
    ("café au lait", "xn--caf-dma.au.lait", "xn--caf-dma"),
    ("naïve", "xn--nave-6pa", "IDNA"),
    ("Straße", "strasse", "IDNA"),
    ("München", "xn--mnchen-3ya", "IDNA"),
    ("日本語", "xn--wgv71a119e", "IDNA"),
    ("dragon 🐉", "dragon", "becomes"),
    ("it’s", "its", "becomes"),
    # over-long words are split, not cut
    ("a" * 70, "a" * 63 + ".aaaaaaa", "split"),
    ("b" * 63, "b" * 63, None),
    ("ü" * 70, None, "split"),
    # nothing left
    ("!!!", None, "answers without a name"),
    ("🐉", None, "answers without a name"),
]


@pytest.mark.parametrize("line,expected,warning", NAMES)
def test_story_line_names(line, expected, warning):
    result = story.parse_lines([("story.txt:7", line)])
    hop, = result.hops
    if expected is not None:
        assert hop.name == expected
    if line.strip("ü") == "":
        assert hop.name.count(".") >= 1  # split into several A-labels
    if hop.name is not None:
        assert story.host_name_ok(hop.name)
    assert hop.where == "story.txt:7" and not hop.silent
    # A line left without a name is a problem (a warning); any other
    # change a rewrite, which the logs only summarise.
    said = result.warnings if hop.name is None else result.rewrites
    assert (result.warnings + result.rewrites) == said
    if warning is None:
        assert said == ()
    else:
        assert len(said) == 1
        assert said[0].startswith(f"story.txt:7: {line.strip()!r}")
        assert warning in said[0]


@pytest.mark.parametrize("line,expected,_", [n for n in NAMES if n[1]])
def test_story_names_pass_glibc_rules(line, expected, _):
    """Every name fits res_hnok, old and new: labels of [A-Za-z0-9-], letter or
    digit at both ends, at most 63 octets, name at most 253."""
    assert re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
                        r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*", expected)
    assert all(len(label) <= 63 for label in expected.split("."))


HOST_NAMES = [
    ("example.net", True), ("a", True), ("1984", True), ("x" * 63, True),
    ("x" * 64, False), ("-a", False), ("a-", False), ("a..b", False), ("a_b", False),
    ("a.b.", False), ("", False), ("café", False), (".".join(["x" * 63] * 4), False),
    (".".join(["x" * 63] * 3 + ["x" * 61]), True),
]


@pytest.mark.parametrize("name,ok", HOST_NAMES)
def test_story_host_name_ok(name, ok):
    assert story.host_name_ok(name) is ok


def test_story_silent_hop_has_no_name():
    result = story.parse_text("one\n*\nthree\n", "s.txt")
    assert [h.silent for h in result.hops] == [False, True, False]
    assert result.hops[1].name is None and result.hops[1].where == "s.txt:2"
    assert result.warnings == ()


def test_story_star_inside_a_line_is_not_silent():
    hop, = story.parse_text("* star *\n", "s.txt").hops
    assert hop.name == "star" and not hop.silent


def test_story_empty_lines_and_comments_cost_no_hop():
    text = "\n# a comment\none\n\n   \n\t# indented comment\ntwo\n"
    result = story.parse_text(text, "s.txt")
    assert [(h.name, h.where) for h in result.hops] == [("one", "s.txt:3"), ("two", "s.txt:7")]


def test_story_crlf_and_bom():
    result = story.parse_text("\ufeffone\r\ntwo\r\n", "s.txt")
    assert [h.name for h in result.hops] == ["one", "two"]
    assert result.warnings == ()


def test_story_suffix_is_appended_and_not_warned():
    result = story.parse_text("Once upon\nr1\n", "s.txt", suffix="story.example.net")
    assert [h.name for h in result.hops] == ["Once.upon.story.example.net",
                                             "r1.story.example.net"]
    assert result.rewrites == ("s.txt:1: 'Once upon' becomes 'Once.upon'",)


def test_story_bad_suffix_is_an_error():
    with pytest.raises(ConfigError, match="suffix 'bad_suffix'"):
        story.parse_lines([("s:1", "x")], suffix="bad_suffix")


def test_story_name_too_long_is_an_error_naming_the_line():
    line = " ".join(["word"] * 60)  # 60 labels of 4: 299 characters
    with pytest.raises(ConfigError, match=r"^s\.txt:2: name is 299 characters"):
        story.parse_text(f"ok\n{line}\n", "s.txt")


def test_story_suffix_counts_toward_the_length():
    line = "x" * 63 + " " + "y" * 63 + " " + "z" * 63 + " " + "w" * 50  # 242
    assert story.parse_text(line, "s").hops[0].name.count(".") == 3
    with pytest.raises(ConfigError, match="name is 256 characters"):
        story.parse_text(line, "s", suffix="example.net.x")


def test_story_255_hops_fit():
    text = "\n".join(f"hop{k}" for k in range(MAX_HOPS))
    assert len(story.parse_text(text, "s.txt").hops) == MAX_HOPS


def test_story_256_hops_are_an_error_at_the_256th():
    text = "# title\n" + "\n".join(f"hop{k}" for k in range(MAX_HOPS + 1))
    with pytest.raises(ConfigError, match=r"^s\.txt:257: more than 255 hops"):
        story.parse_text(text, "s.txt")


def test_story_empty_story_is_an_error():
    with pytest.raises(ConfigError, match=r"^s\.txt: no hops"):
        story.parse_text("\n# only a comment\n\n", "s.txt")


def test_story_silent_destination_is_warned():
    result = story.parse_text("one\n*\n", "s.txt")
    assert result.warnings == ("s.txt:2: the last hop is the destination and it is silent: "
                               "traceroute never sees the destination answer",)


def test_story_read_names_the_file(tmp_path: Path):
    (tmp_path / "s.txt").write_bytes(b"fine\n\xff broken\n")
    with pytest.raises(ConfigError, match=r"^shown\.txt:2: not UTF-8 \(byte 0xff\)"):
        story.read(tmp_path / "s.txt", "shown.txt")
    with pytest.raises(ConfigError, match="missing.txt: cannot read story"):
        story.read(tmp_path / "missing.txt", "missing.txt")
