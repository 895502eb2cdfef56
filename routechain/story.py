"""Story lines to hop names: one line of a story is one hop, and its
reverse-DNS name is the line made into a host name traceroute will print.

The rules (docs/stories.md says the same for users):

- Line k of the story (counting only lines that are hops) is hop host+k;
  a story holds at most MAX_HOPS lines.
- A line that is just `*` is a silent hop: it never answers, so traceroute
  prints `* * *` there, and it has no name (no address of it is ever shown,
  so no PTR record is published for it).
- Empty lines (or only white space) are skipped: paragraph breaks cost no
  hop. A line whose first non-blank character is `#` is a comment.
- A line that already is a host name (below) is kept exactly as written.
- Otherwise words (split on white space) become labels joined by dots:
  `Once upon a time,` becomes `Once.upon.a.time`. Inside a word a dot also
  separates labels; `_` and `/` and dashes become `-`, `&` becomes `and`,
  `@` becomes `at`; any other character that cannot stand in a host name is
  dropped; runs of `-` shrink to one and a label neither starts nor ends
  with `-`. Case is kept as written (DNS preserves it).
- A word with non-ASCII letters becomes an IDNA A-label (`café` becomes
  `xn--caf-dma`) by IDNA 2003 ToASCII, the mapping UTS #46 transitional
  processing also applies: it folds case and maps `ß` to `ss`.
- A label longer than 63 octets is split into several labels, never cut.
- The suffix, if any, is appended to every name. A name longer than 253
  characters after all this is an error: shorten the line.
- After a `|`, a line carries the hop's properties (`key=value ...`,
  hopprops.py); a line starting with `+` is another router at the hop
  above it (ECMP), with its own name and properties.
- A line longer than MAX_LINE characters is an error before any of this
  (no name can come of it), and a story file is at most
  files.MAX_FILE_BYTES: the work per story is bounded.

A host name here is what every resolver shows, old glibc included: labels
of 1..63 letters, digits and `-`, starting and ending with a letter or
digit, at most 253 characters in all. Current glibc (`res_hnok` and
`binary_hnok`; checked on 2.36) also takes `_` anywhere and `-` at the edges except at the
very start of the name, and getnameinfo drops a PTR answer it refuses, so
traceroute would print the bare address; older glibc insisted on letters or
digits at both ends of every label. The stricter rule suits both.

Every change made to a line is reported, naming file and line: as a
rewrite (`preview` shows each; the daemon logs one line per file), or, when
the line lost its name or its hop, as a warning.
"""

from __future__ import annotations

import encodings.idna
import functools
import re
import stringprep
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from . import files, hopprops
from .chain import MAX_HOPS, Hop
from .errors import ConfigError
from .hopprops import NO_PROPS, Props

SILENT = "*"
COMMENT = "#"
MAX_LABEL = 63
MAX_NAME = 253
MAX_LINE = 1024  # characters; four times what the longest name could use

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z")
# ASCII characters that stand for something in a host name; all other ASCII
# punctuation is dropped. A dot splits labels and is handled apart.
_ASCII_MAP = {"_": "-", "/": "-", "&": "and", "@": "at"}


@dataclass(frozen=True)
class Story:
    """The hops of a story, in order; `rewrites` says how lines became
    names, `warnings` what would surprise (a hop without a name, a silent
    destination)."""

    hops: tuple[Hop, ...]
    warnings: tuple[str, ...] = ()
    rewrites: tuple[str, ...] = ()


def host_name_ok(name: str) -> bool:
    """True if every resolver shows `name` as written (see module doc)."""
    if not name or len(name) > MAX_NAME or not name.isascii():
        return False
    return all(len(label) <= MAX_LABEL and _LABEL.match(label)
               for label in name.split("."))


def suffix_problem(suffix: str | None) -> str | None:
    """Why `suffix` cannot end every hop name (None when it can)."""
    if suffix is None or host_name_ok(suffix):
        return None
    return (f"suffix {suffix!r} is not a host name "
            f"(labels of letters, digits and inner '-', at most {MAX_LABEL} each)")


def name_for(line: str, suffix: str | None = None) -> tuple[str | None, tuple[str, ...]]:
    """The host name for one story line (stripped, not `*`) and notes on
    what had to change beyond dropping and mapping characters; None when
    nothing of the line can stand in a host name. Raises ValueError when the
    name is longer than MAX_NAME."""
    labels, notes = _labels(line.strip())
    if not labels:
        return None, notes
    name = ".".join(labels)
    if suffix:
        name = f"{name}.{suffix}"
    if len(name) > MAX_NAME:
        raise ValueError(
            f"name is {len(name)} characters, DNS holds at most {MAX_NAME}: {short(name)!r}")
    return name, notes


@functools.lru_cache(maxsize=4096)
def _labels(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The labels of a stripped line, before any suffix, and the notes.
    Remembered: chains sharing a story (with different suffixes) and
    reloads of an unchanged story convert each line once."""
    if host_name_ok(text):
        return tuple(text.split(".")), ()
    labels: list[str] = []
    notes: list[str] = []
    for word in text.split():
        used = sum(len(label) + 1 for label in labels)
        labels.extend(_word_labels(word, notes, MAX_NAME - used))
    return tuple(labels), tuple(notes)


def parse_lines(lines: Iterable[tuple[str, str]], suffix: str | None = None) -> Story:
    """A story from (where, text) pairs, `where` being `file:line` for
    messages. Skips empty and comment lines; raises ConfigError on a name too
    long, a line longer than MAX_LINE or more than MAX_HOPS hops."""
    problem = suffix_problem(suffix)
    if problem:
        raise ConfigError(problem)
    hops: list[Hop] = []
    warnings: list[str] = []
    rewrites: list[str] = []
    for where, raw in lines:
        if len(raw) > MAX_LINE:
            raise ConfigError(f"{where}: line is {len(raw)} characters, a story line holds at "
                              f"most {MAX_LINE} (and a name {MAX_NAME})")
        text = raw.strip()
        if not text or text.startswith(COMMENT):
            continue
        alternative, text, words = hopprops.split_line(text)
        place = hopprops.BRANCH if alternative else hopprops.HOP
        props = hopprops.parse_words(words, where, place) if words is not None else NO_PROPS
        if alternative and not hops:
            raise ConfigError(f"{where}: a '+' line is another router at the hop above it, "
                              "and there is no hop above")
        if alternative == 2 and not hops[-1].alternatives:
            raise ConfigError(f"{where}: a '++' line is the next router on the '+' branch "
                              "above it, and there is no '+' line above")
        if not alternative and len(hops) == MAX_HOPS:
            raise ConfigError(f"{where}: more than {MAX_HOPS} hops: a chain holds at most {MAX_HOPS}")
        hop = _hop(where, text, props, suffix, warnings, rewrites)
        if alternative == 2:
            *others, branch = hops[-1].alternatives
            branch = replace(branch, further=branch.further + (hop,))
            hops[-1] = replace(hops[-1], alternatives=tuple(others) + (branch,))
        elif alternative:
            hops[-1] = replace(hops[-1], alternatives=hops[-1].alternatives + (hop,))
        else:
            hops.append(hop)
    if hops and hops[-1].silent:
        warnings.append(f"{hops[-1].where}: the last hop is the destination and it is silent: "
                        "traceroute never sees the destination answer")
    return Story(tuple(hops), tuple(warnings), tuple(rewrites))


def _hop(where: str, text: str, props: Props, suffix: str | None, warnings: list[str],
         rewrites: list[str]) -> Hop:
    """One router of a story: silent (`*`), nameless (properties alone), or
    named after its text, with a rewrite noted for every change to the text
    (a warning when no name is left)."""
    if text == SILENT:
        return Hop(name=None, silent=True, where=where, props=props)
    if not text:
        return Hop(name=None, where=where, props=props)
    try:
        name, notes = name_for(text, suffix)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    written = text if not suffix else f"{text}.{suffix}"
    if name is None:
        warnings.append(f"{where}: {text!r} has nothing a host name can hold: "
                        "the hop answers without a name")
    elif name != written:
        extra = f" ({'; '.join(notes)})" if notes else ""
        rewrites.append(f"{where}: {text!r} becomes {_name_only(name, suffix)!r}{extra}")
    return Hop(name=name, where=where, props=props)


def parse_text(text: str, source: str, suffix: str | None = None) -> Story:
    """A story from the text of a story file; `source` names it in messages."""
    if text.startswith("\ufeff"):
        text = text[1:]
    pairs = ((f"{source}:{n}", line) for n, line in enumerate(text.splitlines(), 1))
    story = parse_lines(pairs, suffix)
    if not story.hops:
        raise ConfigError(f"{source}: no hops: every line is empty or a comment")
    return story


def read(path: Path, source: str | None = None, suffix: str | None = None) -> Story:
    """Read a UTF-8 story file; `source` names it in messages (default: the
    path as given)."""
    source = source or str(path)
    return parse_bytes(files.read_bytes(path, source, "story"), source, suffix)


def parse_bytes(data: bytes, source: str, suffix: str | None = None) -> Story:
    """A story from the bytes of a story file (UTF-8)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{source}:{line}: not UTF-8 (byte {data[e.start]:#04x})") from None
    return parse_text(text, source, suffix)


def _word_labels(word: str, notes: list[str], room: int) -> list[str]:
    """The labels of one word; `room` is what the name has left, so that
    an IDNA split stops as soon as the name is too long anyway."""
    word = unicodedata.normalize("NFC", word)
    labels: list[str] = []
    for piece in word.split("."):
        piece = _clean(piece)
        if not piece:
            continue
        if piece.isascii():
            labels.extend(_split_ascii(piece, notes))
        else:
            used = sum(len(label) + 1 for label in labels)
            labels.extend(_idna_labels(piece, notes, room - used))
    return labels


def _clean(piece: str) -> str:
    """Keep letters and digits (any script), map or drop the rest, tidy `-`."""
    out = []
    for ch in piece:
        if ch.isascii():
            if ch.isalnum() or ch == "-":
                out.append(ch)
            else:
                out.append(_ASCII_MAP.get(ch, ""))
        else:
            cat = unicodedata.category(ch)
            if cat[0] in "LMN":
                out.append(ch)
            elif cat == "Pd":
                out.append("-")
    return re.sub(r"-{2,}", "-", "".join(out)).strip("-")


def _split_ascii(piece: str, notes: list[str]) -> list[str]:
    if len(piece) <= MAX_LABEL:
        return [piece]
    notes.append(f"{short(piece)!r} is {len(piece)} octets, split into labels of at most {MAX_LABEL}")
    chunks = [piece[i:i + MAX_LABEL] for i in range(0, len(piece), MAX_LABEL)]
    return [c.strip("-") for c in chunks if c.strip("-")]


def _ace(text: str) -> str | None:
    """IDNA 2003 ToASCII of one label, or None if it cannot be one."""
    try:
        label = encodings.idna.ToASCII(text).decode("ascii")
    except UnicodeError:
        return None
    return label if _LABEL.match(label) else None


def _idna_labels(piece: str, notes: list[str], room: int) -> list[str]:
    whole = _ace(piece) if len(piece) <= MAX_LABEL else None
    if whole is not None:
        notes.append(f"IDNA: {piece!r} is {whole!r}")
        return [whole]
    # Too long as one A-label (or refused): the longest prefixes that fit,
    # within each run of one writing direction (RFC 3454 6: a label with a
    # right-to-left letter holds no left-to-right one, so no label crosses
    # where they meet). The split stops once the name is too long anyway.
    labels: list[str] = []
    used = 0
    for run in _direction_runs(piece):
        rest = run
        while rest:
            if used > room:
                raise ValueError(f"name is more than {MAX_NAME} characters, DNS holds at most "
                                 f"{MAX_NAME}: {short(piece)!r} alone does not fit")
            found = _longest_label(rest)
            if found is None:
                notes.append(f"{rest[0]!r} cannot be written in IDNA, dropped")
                rest = rest[1:].lstrip("-")
                continue
            label, end = found
            labels.append(label)
            used += len(label) + 1
            rest = rest[end:].lstrip("-")
    if len(labels) > 1:
        notes.append(f"IDNA: {piece!r} is too long for one label, split into {'.'.join(labels)!r}")
    elif labels:
        notes.append(f"IDNA: {piece!r} is {labels[0]!r}")
    return labels


def _longest_label(text: str) -> tuple[str, int] | None:
    """(A-label, characters used) for the longest prefix of `text` that is
    one label, by binary search over its length: at most 6 ToASCII calls.
    An A-label holds at most MAX_LABEL octets and each character costs at
    least one (the few nameprep maps to nothing aside), so no prefix longer
    than MAX_LABEL is tried. A refused prefix stays refused when longer
    (its A-label only grows, its letters stay), but for one refused for
    ending in `-`, or a right-to-left one ending in a digit: there the
    search may settle on a shorter label, still a valid one. (Trying every
    prefix was cubic: minutes for 1,000 letters.)"""
    best, low, high = None, 0, min(len(text), MAX_LABEL)
    while low < high:
        mid = (low + high + 1) // 2
        label = _ace(text[:mid])
        if label is not None:
            best, low = (label, mid), mid
        else:
            high = mid - 1
    return best


def _direction_runs(piece: str) -> list[str]:
    """`piece` cut where a left-to-right letter meets a right-to-left one
    (stringprep tables D.1 and D.2, as nameprep judges them); characters
    of neither kind stay with the run they are in."""
    runs, start, direction = [], 0, None
    for i, ch in enumerate(piece):
        kind = "R" if stringprep.in_table_d1(ch) else "L" if stringprep.in_table_d2(ch) else None
        if kind and direction and kind != direction:
            runs.append(piece[start:i])
            start = i
        direction = kind or direction
    runs.append(piece[start:])
    return [r for r in runs if r]


def _name_only(name: str, suffix: str | None) -> str:
    return name[:-len(suffix) - 1] if suffix else name


def short(text: str, width: int = 40) -> str:
    """`text` cut to `width` characters with an ellipsis, for messages."""
    return text if len(text) <= width else text[:width - 1] + "…"
