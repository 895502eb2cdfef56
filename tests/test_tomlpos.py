"""The TOML position scanner and shape check (routechain.tomlpos): where
each table, key and element is, what the text's nesting is, and that both
take time linear in the text, whatever the text."""

from __future__ import annotations

import time
import tomllib

import pytest

from routechain import tomlpos

DOC = '''\
# a comment with [brackets] and key = "value"
title = "x"
dns.listen = ["a", "b"]

[daemon]
queues = 2   # trailing comment
"quoted key" = 1

[[chain]]
address = "192.0.2.1/24"
hops = [
  "one",      # [not a table]
  """two
three = 3""",
  'four',
]

[[chain]]
address = "198.51.100.1/24"
reply_ttl = 5

[chain.extra]
deep = { a = [1, 2], b = "]" }

[[route]]
prefix = "2001:db8::/48"
'''

# (table, index, key, element) -> line, read off DOC by hand.
LINES = [
    ((None, None, "title", None), 2),
    ((None, None, "dns", None), 3),
    (("dns", None, "listen", None), 3),
    (("daemon", None, None, None), 5),
    (("daemon", None, "queues", None), 6),
    (("daemon", None, "quoted key", None), 7),
    (("chain", 0, None, None), 9),
    (("chain", 0, "address", None), 10),
    (("chain", 0, "hops", None), 11),
    (("chain", 0, "hops", 0), 12),
    (("chain", 0, "hops", 1), 13),
    (("chain", 0, "hops", 2), 15),
    (("chain", 0, "hops", 7), 11),        # no such element: the key
    (("chain", 1, None, None), 18),
    (("chain", 1, "reply_ttl", None), 20),
    (("chain", 1, "extra", None), 22),    # a sub-table of the last [[chain]]
    (("chain", 1, "nothing", None), 18),  # no such key: the table header
    (("route", 0, "prefix", None), 26),
    (("nowhere", None, None, None), 1),   # nothing at all: line 1
]


@pytest.mark.parametrize("query,line", LINES, ids=[str(q) for q, _ in LINES])
def test_tomlpos_line_of(query, line):
    tomllib.loads(DOC)  # the scanner is only asked about valid TOML
    assert tomlpos.Locator(DOC).line(*query) == line


# (text, depth, depth line, key parts, key line)
SHAPES = [
    ("", 0, 1, 0, 1),
    ("a = 1\n", 0, 1, 0, 1),
    ("a = 1.5\n", 0, 1, 2, 1),
    ("[[chain]]\n", 2, 1, 0, 1),
    ("\n\na.b.c = 1\n", 0, 1, 3, 3),
    ('x = "[[[[...."\n', 0, 1, 0, 1),                 # inside a string: nothing
    ("x = '''\n[[[[\n'''\ny = [[1]]\n", 2, 4, 0, 1),   # multi-line literal string
    ('x = """\\"""[[["""\n', 0, 1, 0, 1),            # escaped quote inside
    ("# [[[[ a.b.c.d\nk = 1\n", 0, 1, 0, 1),          # a comment: nothing
    ('"a.b".c = 1\n', 0, 1, 2, 1),                     # a quoted part is one part
    ("x = [{a = [1]}]\n", 3, 1, 0, 1),
    ("[a.b.c.d]\n", 1, 1, 4, 1),
]


@pytest.mark.parametrize("text,depth,dline,parts,pline", SHAPES)
def test_tomlpos_shape(text, depth, dline, parts, pline):
    assert tomlpos.shape(text) == tomlpos.Shape(depth, dline, parts, pline)


@pytest.mark.parametrize("text,line,reason", [
    ("\nx = " + "[" * 17 + "]" * 17 + "\n", 2, "nested 17 levels deep"),
    ("x = " + "[" * 16 + "]" * 16 + "\n", None, None),
    ("\n\n" + ".".join("a" * 17) + " = 1\n", 3, "a dotted key of 17 parts"),
    ("[" + ".".join("a" * 16) + "]\n", None, None),
])
def test_tomlpos_shape_problem_names_the_line(text, line, reason):
    problem = tomlpos.shape(text).problem()
    if line is None:
        assert problem is None
    else:
        assert problem[0] == line and problem[1].startswith(reason)


def _seconds(fn, text: str) -> float:
    start = time.process_time()
    fn(text)
    return time.process_time() - start


@pytest.mark.parametrize("unit", [
    '[[chain]]\naddress = "192.0.2.1/24"\nhops = ["a b", \'c\', """d"""]  # x\n',
    "[" * 50 + "]" * 50 + "\n",
    "a" + ".a" * 200 + " = 1\n",
    '"' * 7 + "\n# " + "#" * 50 + "\n",
    "x = { " + "k = 'v', " * 30 + "}\n",
])
def test_tomlpos_time_is_linear(unit):
    """Eight times the text costs at most about eight times the time (a
    quadratic scanner would take 64 times): measured in process CPU time,
    on texts of 1/8 MiB and 1 MiB, with room for a loaded machine."""
    small, large = unit * (2**17 // len(unit)), unit * (2**20 // len(unit))
    for fn in (tomlpos.shape, tomlpos.Locator):
        if fn is tomlpos.Locator:
            try:
                tomllib.loads(unit * 2)
            except (tomllib.TOMLDecodeError, RecursionError):
                continue  # the Locator only ever sees what tomllib took
        a, b = _seconds(fn, small), _seconds(fn, large)
        assert b < max(16 * a, 0.05), (fn, a, b)
        assert b < 2.0, (fn, b)


def test_string_end_of_a_one_line_string_matches_a_char_by_char_reading():
    """_string_end's regular expressions against the obvious loop: up to
    the closing quote or the line's end, a backslash in a basic string
    taking the next character along (random texts, fixed seed)."""
    import random
    from routechain.tomlpos import _string_end

    def reference(text: str, i: int) -> int:
        quote, j = text[i], i + 1
        while j < len(text) and text[j] not in (quote, "\n"):
            j += 2 if quote == '"' and text[j] == "\\" else 1
        return min(j + 1, len(text)) if j < len(text) and text[j] == quote else j

    rng = random.Random(7)
    checked = 0
    for _ in range(20000):
        text = "".join(rng.choice("ab\"'\\\n") for _ in range(rng.randint(1, 12)))
        for i, c in enumerate(text):
            if c in "\"'" and not text.startswith(c * 3, i):
                assert _string_end(text, i) == reference(text, i), (text, i)
                checked += 1
    assert checked > 10000
