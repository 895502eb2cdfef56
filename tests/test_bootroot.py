"""The boot test's choice of Debian mirror: the one the host's apt uses for
bookworm's main component, in either sources format, else deb.debian.org."""

from __future__ import annotations

import pytest

import bootroot

# (file under /etc/apt, its text, the mirror debootstrap is given)
CASES = [
    ("sources.list",
     "# deb http://old.example/debian bookworm main\n"
     "deb-src http://src.example/debian bookworm main\n"
     "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n",
     "http://mirror.example/debian"),
    ("sources.list.d/debian.sources",
     "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
     "Components: main\n\n"
     "Types: deb deb-src\nURIs: http://deb822.example/debian http://second.example/debian\n"
     "Suites: bookworm bookworm-updates\nComponents: main\n",
     "http://deb822.example/debian"),
    ("sources.list.d/other.list",
     "deb http://trixie.example/debian trixie main\n"
     "deb http://contrib.example/debian bookworm contrib\n",
     bootroot.DEFAULT_MIRROR),
]


@pytest.mark.parametrize("name,text,mirror", CASES, ids=["one-line", "deb822", "none"])
def test_debian_mirror_is_the_hosts(tmp_path, name, text, mirror):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / name).write_text(text)
    assert bootroot.debian_mirror(tmp_path) == mirror
