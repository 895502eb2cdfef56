"""The settings schema (routechain.settings): the command line and the TOML
file take the same values for every setting they share, because both
check through one declaration. Each value below goes through argparse
(cli.run_parser) and through config.load, and both must agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from routechain import cli, config, settings
from routechain.errors import UsageError

SHARED = [s for s in settings.SETTINGS if s.flag]

# Text values for the string settings: some good, some bad.
TEXTS = {
    ("daemon", "interface"): ["rc0", "a/b", "x" * 15, "x" * 16, "", "a b", ".."],
    ("route", "prefix"): ["2001:db8::/48", "198.19.0.0/16", "198.19.0.1/16", "banana",
                          "0.0.0.0/0", "::/0", "10.0.0.0/8"],
}


def values(s: settings.Setting) -> list:
    if s.kind == "int":
        return [s.low - 1, s.low, s.low + 1, s.high - 1, s.high, s.high + 1]
    return TEXTS[(s.table, s.key)]


def toml_literal(value) -> str:
    return str(value) if isinstance(value, int) else f'"{value}"'


def from_file(tmp_path: Path, s: settings.Setting, value) -> object:
    head = {"daemon": "[daemon]\n", "route": '[[route]]\nprefix = "2001:db8::/48"\n',
            "chain": '[[chain]]\naddress = "198.18.0.1/24"\n'}[s.table]
    if s.table == "route" and s.key == "prefix":
        head = "[[route]]\n"
    path = tmp_path / "rc.toml"
    path.write_text(f"{head}{s.key} = {toml_literal(value)}\n")
    loaded = config.load(path)
    return {"daemon": lambda: getattr(loaded.daemon, s.key),
            "route": lambda: getattr(loaded.routes[0], s.key),
            "chain": lambda: getattr(loaded.chains[0], s.key)}[s.table]()


def from_command_line(s: settings.Setting, value) -> object:
    args = cli.run_parser().parse_args([s.flag, str(value), "198.18.0.1/24"])
    got = getattr(args, s.flag.lstrip("-").replace("-", "_"))
    return got[0] if isinstance(got, list) else got


CASES = [(s, v) for s in SHARED for v in values(s)]


@pytest.mark.parametrize("setting,value", CASES,
                         ids=[f"{s.flag}={v}" for s, v in CASES])
def test_settings_command_line_and_file_agree(tmp_path, setting, value):
    results = []
    for source in (lambda: from_file(tmp_path, setting, value),
                   lambda: from_command_line(setting, value)):
        try:
            results.append(("ok", source()))
        except UsageError as e:
            results.append(("refused", str(e).split(": ", 1)[1] if ": " in str(e) else str(e)))
    (file_verdict, file_value), (cli_verdict, cli_value) = results
    assert file_verdict == cli_verdict, results
    if file_verdict == "ok":
        assert file_value == cli_value
    else:
        # Same reason, whatever the `where` in front of it.
        assert file_value.split(": ")[-1] == cli_value.split(": ")[-1], results


def test_settings_every_int_range_is_checked_at_both_ends():
    for s in settings.SETTINGS:
        if s.kind == "int":
            assert s.low is not None and s.high is not None and s.low < s.high, s


def test_settings_loader_knows_exactly_the_declared_keys(tmp_path):
    for table in settings.TABLES:
        path = tmp_path / "rc.toml"
        path.write_text(f"[{'[' if table.array else ''}{table.name}"
                        f"{']' if table.array else ''}]\nnot_a_key = 1\n")
        with pytest.raises(UsageError) as info:
            config.load(path)
        listed = str(info.value).split("expected one of ", 1)[1]
        assert listed == ", ".join(sorted(set(settings.keys(table.name)) | table.more)), info.value


def test_settings_help_says_what_each_option_means():
    text = cli.run_parser().format_help()
    for s in SHARED:
        assert s.flag in text and s.name in text, s


def test_settings_queues_is_the_tun_limit():
    """The TUN takes the most queues the setting allows, and refuses one more."""
    from routechain import tun
    high = settings.setting("daemon", "queues").high
    with pytest.raises(UsageError, match=f"bad queue count {high + 1}: 1..{high}$"):
        tun.Tun("rc-test", high + 1)


# (kind, low, high, TOML value, checked value or the refusal's words)
KIND_CASES = [
    ("int", 1, 5, 3, 3), ("int", 1, 5, 6, "x.k = 6 is not in 1..5"),
    ("int", 1, 5, True, "x.k must be an integer, not True"),
    ("int", 1, 5, 2.0, "x.k must be an integer, not 2.0"),
    ("float", 0.0, 1.0, 0.25, 0.25), ("float", 0.0, 1.0, 1, 1),
    ("float", 0.0, 1.0, 1.5, "x.k = 1.5 is not in 0.0..1.0"),
    ("float", 0.0, 1.0, "0.5", "x.k must be a number, not '0.5'"),
    ("bool", None, None, False, False), ("bool", None, None, 0, "x.k must be true or false"),
    ("str", None, None, "a", "a"), ("str", None, None, 1, "x.k must be a string, not 1"),
    ("strings", None, None, "a", ("a",)), ("strings", None, None, ["a", "b"], ("a", "b")),
    ("strings", None, None, ["a", 2], "x.k must hold strings, not 2"),
    ("table", None, None, {"a": 1}, {"a": 1}), ("table", None, None, [1], "x.k must be a table"),
]


@pytest.mark.parametrize("kind,low,high,value,expected", KIND_CASES)
def test_settings_kinds_check_toml_values(kind, low, high, value, expected):
    """What a helper adding a key (a [limits] rate, a [metrics] listen, a
    per-hop table) gets from declaring its kind and range."""
    s = settings.Setting("x", "k", kind, "a test key", low, high)
    if isinstance(expected, str) and expected.startswith("x.k"):  # a refusal
        with pytest.raises(UsageError) as info:
            s.from_toml(value, "f.toml:3", lambda k: f"f.toml:{4 + k}")
        assert str(info.value).startswith("f.toml:") and expected in str(info.value)
    else:
        assert s.from_toml(value, "f.toml:3") == expected


def test_settings_unknown_kind_is_a_programming_error():
    with pytest.raises(AssertionError):
        settings.Setting("x", "k", "colour", "a test key")
