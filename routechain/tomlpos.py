"""Where things are in a TOML text, which tomllib does not say: the line of
each table, key and array element, for `file:line` messages, and the shape
limits checked before tomllib sees the text.

Both are single passes over the text (linear in its length), written to
terminate on any input, TOML or not: tomllib reports what is wrong with a
text that is not TOML, these only must never hang or recurse.

Why shape limits: tomllib recurses once per nested array or inline table
(so a few thousand `[` raise RecursionError), and keeps every prefix of a
dotted key (so `a.a.a...` with 100,000 parts takes time and memory that
grow with the square of its length). route-chain's own schema nests three
levels deep, so MAX_DEPTH and MAX_KEY_PARTS leave room and refuse the
pathological, naming the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DEPTH = 16       # arrays and inline tables, one inside another
MAX_KEY_PARTS = 16   # parts of one dotted key or table header


@dataclass(frozen=True)
class Shape:
    """The deepest nesting and the longest dotted key of a text, with the
    line where each first reached its maximum."""

    depth: int = 0
    depth_line: int = 1
    key_parts: int = 0
    key_line: int = 1

    def problem(self) -> tuple[int, str] | None:
        """(line, reason) when the text goes past a limit, else None."""
        if self.depth > MAX_DEPTH:
            return self.depth_line, (f"nested {self.depth} levels deep: route-chain reads "
                                     f"at most {MAX_DEPTH} levels of arrays and tables")
        if self.key_parts > MAX_KEY_PARTS:
            return self.key_line, (f"a dotted key of {self.key_parts} parts: route-chain "
                                   f"reads at most {MAX_KEY_PARTS}")
        return None


def shape(text: str) -> Shape:
    """Measure nesting and dotted keys outside strings and comments.

    Counts every `[` and `{` (so `[[chain]]` is depth 2: an over-estimate
    that costs nothing), and the dots in a run of text between separators
    (`=`, `,`, brackets, braces, line ends): a key `a."b".c` is 3 parts; a
    float value `1.5` counts as 2, which is below any limit.
    """
    depth = parts = 0
    depth_line = parts_line = 1
    level = dots = 0
    line, i = 1, 0
    while True:
        m = _SPECIAL.search(text, i)
        if m is None:
            break
        i = m.start()
        c = text[i]
        if c == "\n":
            line += 1
            dots = 0
        elif c == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif c in "\"'":
            end = _string_end(text, i)
            line += text.count("\n", i, end)
            i = end
            continue
        elif c in "[{":
            level += 1
            dots = 0
            if level > depth:
                depth, depth_line = level, line
        elif c in "]}":
            level = max(0, level - 1)
            dots = 0
        elif c in "=,":
            dots = 0
        else:  # "."
            dots += 1
            if dots + 1 > parts:
                parts, parts_line = dots + 1, line
        i += 1
    return Shape(depth, depth_line, parts, parts_line)


_BASIC_ML_END = re.compile(r'(?:[^"\\]|\\.|"(?!""))*"""', re.S)
_SPECIAL = re.compile(r"[\n#\"'\[\]{}=,.]")


def _string_end(text: str, i: int) -> int:
    """The index just past the string starting at text[i] (a quote), or
    the end of the line (single-line) or text (multi-line) if unterminated."""
    quote = text[i]
    if text.startswith(quote * 3, i):
        if quote == '"':  # a backslash escapes the next character, a quote too
            m = _BASIC_ML_END.match(text, i + 3)
            end = m.end() - 3 if m else -1
        else:
            end = text.find(quote * 3, i + 3)
        if end < 0:
            return len(text)
        end += 3
        while end < len(text) and text[end] == quote:  # """a"""" is legal
            end += 1
        return end
    # Up to the closing quote or the line's end; in a basic string a
    # backslash takes the next character along, whatever it is.
    j = (_BASIC_LINE if quote == '"' else _LITERAL_LINE).match(text, i + 1).end()
    if j < len(text) and text[j] == "\\":  # only the text's last character stops it
        j += 2
    return min(j + 1, len(text)) if j < len(text) and text[j] == quote else j


_BASIC_LINE = re.compile(r'(?:[^"\\\n]|\\[\s\S])*')
_LITERAL_LINE = re.compile(r"[^'\n]*")


class Locator:
    """Lines of tables, keys and array elements in a TOML text.

    A small scanner that understands just enough TOML to never mistake the
    inside of a string or an array for a key: comments, the four string
    forms, brackets and braces, table headers and dotted keys. Lookups take
    the top-level table name (None for the root), the index of an array of
    tables, a key and an element index, and fall back to the nearest thing
    found: the key, the table header, line 1.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.headers: dict[tuple[str | None, int | None], int] = {}
        self.keys: dict[tuple[str | None, int | None, str], int] = {}
        self.elements: dict[tuple[str | None, int | None, str], list[int]] = {}
        self.pos = 0
        self.lineno = 1
        self.counts: dict[str, int] = {}
        self.scan()

    def line(self, table: str | None, index: int | None = None, key: str | None = None,
             element: int | None = None) -> int:
        if key is not None:
            if element is not None:
                lines = self.elements.get((table, index, key), [])
                if element < len(lines):
                    return lines[element]
            if (table, index, key) in self.keys:
                return self.keys[(table, index, key)]
        if (table, index) in self.headers:
            return self.headers[(table, index)]
        return self.keys.get((None, None, table), 1) if table is not None else 1

    # scanning

    def peek(self, k: int = 0) -> str:
        i = self.pos + k
        return self.text[i] if i < len(self.text) else ""

    def advance(self, n: int = 1) -> None:
        self.lineno += self.text.count("\n", self.pos, self.pos + n)
        self.pos += n

    def skip_blank(self, newlines: bool) -> None:
        while self.pos < len(self.text):
            c = self.peek()
            if c in " \t\r" or (newlines and c == "\n"):
                self.advance()
            elif c == "#":
                end = self.text.find("\n", self.pos)
                self.advance((end if end >= 0 else len(self.text)) - self.pos)
            else:
                return

    def scan(self) -> None:
        table: tuple[str | None, int | None] = (None, None)
        while True:
            self.skip_blank(newlines=True)
            if self.pos >= len(self.text):
                return
            start = self.lineno
            if self.peek() == "[":
                array = self.peek(1) == "["
                self.advance(2 if array else 1)
                path = self.key_path("]")
                self.advance(2 if array else 1)
                top = path[0] if path else None
                index = None
                if array and len(path) == 1:
                    index = self.counts.get(top, 0)
                    self.counts[top] = index + 1
                elif len(path) > 1:
                    index = self.counts.get(top, 0) - 1 if top in self.counts else None
                table = (top, index)
                self.headers.setdefault(table, start)
                if len(path) > 1:
                    self.keys.setdefault((top, index, path[1]), start)
                elif top is not None:
                    self.keys.setdefault((None, None, top), start)
            else:
                path = self.key_path("=")
                self.advance()  # '='
                if path:
                    if table[0] is None:
                        self.keys.setdefault((None, None, path[0]), start)
                        if len(path) > 1:
                            self.keys.setdefault((path[0], None, path[1]), start)
                        owner = (path[0], None)
                        sub = path[1] if len(path) > 1 else None
                    else:
                        self.keys.setdefault((table[0], table[1], path[0]), start)
                        owner, sub = table, path[0]
                    self.value(owner, sub)
            self.skip_to_line_end()

    def skip_to_line_end(self) -> None:
        self.skip_blank(newlines=False)
        end = self.text.find("\n", self.pos)
        self.advance((end if end >= 0 else len(self.text)) - self.pos)

    def key_path(self, stop: str) -> list[str]:
        parts: list[str] = []
        current: list[str] = []
        special = _KEY_STOPS[stop]
        while self.pos < len(self.text) and self.peek() not in (stop, "\n"):
            c = self.peek()
            if c in "\"'":
                current.append(self.string_value())
            elif c == ".":
                parts.append("".join(current).strip())
                current = []
                self.advance()
            else:
                end = self.jump(special)
                current.append(self.text[self.pos:end])
                self.advance(end - self.pos)
        parts.append("".join(current).strip())
        return [p for p in parts if p]

    def jump(self, special: re.Pattern) -> int:
        """The index of the next character in `special` (or the end), at
        least one past the current one, so every step makes progress."""
        m = special.search(self.text, self.pos + 1)
        return m.start() if m else len(self.text)

    def string_value(self) -> str:
        """Skip a string, giving its raw text between the quotes (a key's
        name; escapes are rare in keys and need no decoding to be found)."""
        start, end = self.pos, _string_end(self.text, self.pos)
        quotes = 3 if self.text.startswith(self.text[start] * 3, start) else 1
        self.advance(end - start)
        return self.text[start + quotes:max(start + quotes, end - quotes)]

    def value(self, owner: tuple[str | None, int | None], key: str | None) -> None:
        """Skip one value, recording the line of each element of a top-level
        array under (owner, key)."""
        self.skip_blank(newlines=False)
        if self.peek() != "[":
            self.skip_simple()
            return
        lines = self.elements.setdefault((owner[0], owner[1], key or ""), [])
        self.advance()
        expect_element = True
        while self.pos < len(self.text):
            self.skip_blank(newlines=True)
            c = self.peek()
            if c == "]":
                self.advance()
                return
            if c == ",":
                expect_element = True
                self.advance()
                continue
            if expect_element:
                lines.append(self.lineno)
                expect_element = False
            if c in "[{":
                self.nested()
            elif c in "\"'":
                self.string_value()
            else:
                self.skip_simple()

    def nested(self) -> None:
        depth = 0
        while self.pos < len(self.text):
            c = self.peek()
            if c in "\"'":
                self.string_value()
                continue
            if c == "#":
                self.skip_blank(newlines=False)
                continue
            if c in "[{":
                depth += 1
            elif c in "]}":
                depth -= 1
                if depth == 0:
                    self.advance()
                    return
            self.advance(self.jump(_NESTED_STOPS) - self.pos)

    def skip_simple(self) -> None:
        """A scalar, an inline table, or a string, up to a separator."""
        while self.pos < len(self.text):
            c = self.peek()
            if c in "\"'":
                self.string_value()
            elif c == "{":
                self.nested()
            elif c in ",]\n#":
                return
            else:
                self.advance(self.jump(_SIMPLE_STOPS) - self.pos)


_KEY_STOPS = {stop: re.compile(f"[\"'.\n{re.escape(stop)}]") for stop in "]="}
_NESTED_STOPS = re.compile(r"[\"'#\[\]{}]")
_SIMPLE_STOPS = re.compile(r"[\"'{,\]\n#]")
