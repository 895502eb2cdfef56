"""`route-chain registry`: the DN42 registry objects of each chain's block,
held to what the config says (ranges, nservers, AS, zone name form)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CONFIG = """\
[[chain]]
address = "172.22.130.241/28"
hops = ["a", "b"]
suffix = "story.dn42"

[[chain]]
address = "fd42:4242:1234::1/64"
hops = ["a", "b"]

[dns]
ns = ["ns1.story.dn42", "ns2.story.dn42"]
zone_name_form = "{form}"

[registry]
origin_as = 4242421234
mnt_by = "EXAMPLE-MNT"
"""


def registry(tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "routechain", "registry", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)


def objects(text: str) -> list[dict[str, list[str]]]:
    """RPSL objects: blank-line separated, `key: value`, comments aside."""
    out = []
    for block in text.strip().split("\n\n"):
        obj: dict[str, list[str]] = {}
        for line in block.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.partition(":")
            obj.setdefault(key, []).append(value.strip())
        out.append(obj)
    return out


@pytest.mark.parametrize("form", ["-", "/", "_"])
def test_registry_objects_per_chain(tmp_path, form):
    done = registry(tmp_path, CONFIG.format(form=form))
    assert done.returncode == 0, done.stderr
    inet, route, inet6, route6 = objects(done.stdout)
    assert inet["inetnum"] == ["172.22.130.240 - 172.22.130.255"]
    assert inet["cidr"] == ["172.22.130.240/28"]
    assert inet["nserver"] == ["ns1.story.dn42", "ns2.story.dn42"]
    assert inet["mnt-by"] == ["EXAMPLE-MNT"] and "ds-rdata" not in inet
    assert route == {"route": ["172.22.130.240/28"], "origin": ["AS4242421234"],
                     "max-length": ["28"], "mnt-by": ["EXAMPLE-MNT"], "source": ["DN42"]}
    assert inet6["inet6num"] == ["fd42:4242:1234:0000:0000:0000:0000:0000 - "
                                 "fd42:4242:1234:0000:ffff:ffff:ffff:ffff"]
    assert route6["route6"] == ["fd42:4242:1234::/64"] and route6["max-length"] == ["64"]
    assert f"reverse zone 240{form}28.130.22.172.in-addr.arpa." in done.stdout


def test_registry_without_origin_as_says_what_to_set(tmp_path):
    done = registry(tmp_path, CONFIG.format(form="-").split("[registry]")[0])
    assert done.returncode == 2
    assert done.stderr.strip().endswith("set [registry] origin_as (the AS that announces "
                                        "the chains) to print route objects")
    assert done.stderr.count("\n") == 1
