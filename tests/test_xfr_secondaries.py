"""The built-in server as the hidden primary of three real secondaries --
knotd, BIND's named and NSD -- from configs this file writes, all inside
the router namespace of the test network, each on a loopback address of
its own, with its own working directory, and stopped by its pid.

    ns "router" (tests/netns.py)
    +-------------------------------------------------------------------+
    | route-chain --config  (TUN, chains)   DNS 127.0.0.1:53  primary     |
    |     |  NOTIFY (TSIG "xfr")      ^  AXFR/IXFR (TSIG "xfr")           |
    |     v                           |                                   |
    | knotd 127.0.0.2:53   named 127.0.0.3:53   nsd 127.0.0.4:53          |
    | kdig from 127.0.0.1 (allowed) and 127.0.0.9 (not allowed)          |
    +-------------------------------------------------------------------+

Proves: after start every secondary holds every zone record for record
(kdig AXFR from the primary and from the secondary, compared); after a
story edit and a reload, each serves the new serial within 5 s, pulled by
NOTIFY (and IXFR, which all three ask for); a wrong TSIG key and a
disallowed address are refused and counted.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netns import CHAIN4, CHAIN6, Daemon, TestNet, knot_head, wait_until
from test_dns_limits import counters as logged_counters

pytestmark = pytest.mark.netns

PRIMARY = "127.0.0.1"
SECONDARIES = {"knotd": "127.0.0.2", "named": "127.0.0.3", "nsd": "127.0.0.4"}
STRANGER = "127.0.0.9"
ZONES = ("0.18.198.in-addr.arpa", "0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa")
SECRET = base64.b64encode(bytes(range(7, 39))).decode()
WRONG = base64.b64encode(bytes(range(100, 132))).decode()

KNOT = """\
{head}key:
  - id: xfr
    algorithm: hmac-sha256
    secret: {secret}
remote:
  - id: primary
    address: {primary}@53
    key: xfr
    via: {addr}
acl:
  - id: from-primary
    address: {primary}
    key: xfr
    action: notify
  - id: read
    address: 127.0.0.0/8
    action: transfer
template:
  - id: default
    master: primary
    acl: [from-primary, read]
    storage: "{dir}/zones"
    zonefile-sync: -1
zone:
{zones}
"""

NAMED = """\
options {{
    directory "{dir}";
    pid-file "{dir}/named.pid";
    session-keyfile "{dir}/session.key";
    managed-keys-directory "{dir}";
    listen-on port 53 {{ {addr}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    notify no;
    dnssec-validation no;
    transfer-source {addr};
    query-source address {addr};
    allow-transfer {{ 127.0.0.0/8; }};
}};
controls {{ }};
key "xfr" {{ algorithm hmac-sha256; secret "{secret}"; }};
server {primary} {{ keys {{ xfr; }}; request-ixfr yes; }};
{zones}
"""
NAMED_ZONE = ('zone "{zone}" {{ type secondary; primaries {{ {primary} key xfr; }}; '
              'file "{zone}.db"; }};')

NSD = """\
server:
    ip-address: {addr}@53
    username: ""
    chroot: ""
    zonesdir: "{dir}"
    database: ""
    pidfile: "{dir}/nsd.pid"
    xfrdfile: "{dir}/xfrd.state"
    xfrdir: "{dir}"
    zonelistfile: "{dir}/zone.list"
    server-count: 1
    verbosity: 2
    logfile: "{dir}/nsd.log"
remote-control:
    control-enable: no
key:
    name: xfr
    algorithm: hmac-sha256
    secret: "{secret}"
pattern:
    name: secondary
    request-xfr: {primary}@53 xfr
    allow-notify: {primary} xfr
    outgoing-interface: {addr}
    provide-xfr: 127.0.0.0/8 NOKEY
{zones}
"""
NSD_ZONE = "zone:\n    name: {zone}\n    zonefile: {zone}.zone\n    include-pattern: secondary"


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        from conftest import cannot_run
        cannot_run(f"needs {tool} (scripts/test installs it)")


def start_secondary(net: TestNet, name: str, base: Path) -> subprocess.Popen:
    """One secondary, in its own working directory, from the config written here."""
    addr = SECONDARIES[name]
    work = base / name
    work.mkdir()
    os.chmod(work, 0o777)  # nsd and named may write as another user
    fill = dict(dir=work, addr=addr, primary=PRIMARY, secret=SECRET)
    if name == "knotd":
        conf = work / "knot.conf"
        head = knot_head(work, work / "db", f"{addr}@53", "info")
        conf.write_text(KNOT.format(**fill, head=head, zones="\n".join(f'  - domain: "{z}"'
                                                                       for z in ZONES)))
        args = ["knotd", "-c", str(conf)]
    elif name == "named":
        conf = work / "named.conf"
        conf.write_text(NAMED.format(**fill, zones="\n".join(
            NAMED_ZONE.format(zone=z, primary=PRIMARY) for z in ZONES)))
        args = ["named", "-g", "-n", "1", "-c", str(conf)]
    else:
        conf = work / "nsd.conf"
        conf.write_text(NSD.format(**fill, zones="\n".join(NSD_ZONE.format(zone=z)
                                                           for z in ZONES)))
        args = ["nsd", "-d", "-c", str(conf)]
    log = open(work / "log", "w")
    return net.popen(net.router, *args, stdout=log, stderr=subprocess.STDOUT, cwd=work)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kdig(net: TestNet, server: str, *args: str,
         source: str = PRIMARY) -> subprocess.CompletedProcess:
    return net.run(net.router, "kdig", "-b", source, f"@{server}", "+time=2", "+retry=0",
                   *args, check=False, timeout=30)


def serial(net: TestNet, server: str, zone: str) -> int | None:
    out = kdig(net, server, "+short", zone, "SOA").stdout.split()
    return int(out[2]) if len(out) >= 3 and out[2].isdigit() else None


def axfr(net: TestNet, server: str, zone: str, key: bool) -> set[tuple[str, ...]]:
    """The zone's records as (owner, ttl, class, type, rdata) in lower case,
    TSIG and the closing SOA aside."""
    done = kdig(net, server, *(["-y", f"hmac-sha256:xfr:{SECRET}"] if key else []),
                "AXFR", zone)
    said = done.stdout + done.stderr
    assert done.returncode == 0 and ";; ERROR" not in said, said
    records = set()
    for line in done.stdout.splitlines():
        if not line or line.startswith(";"):
            continue
        fields = line.split(None, 4)
        if len(fields) == 5 and fields[3] != "TSIG":
            records.add(tuple(f.lower() for f in fields))
    return records


def counters(daemon: Daemon) -> dict[str, int]:
    """The daemon's DNS counts (SIGUSR1), zero for those it does not log."""
    out = dict.fromkeys(("notify:acked", "xfr:axfr", "xfr:ixfr", "xfr:ixfr_full"), 0)
    return {**out, **logged_counters(daemon)}


UDP_AXFR = """
import base64, sys
import dns.message, dns.query, dns.rcode, dns.tsig
q = dns.message.make_query(sys.argv[2], "AXFR")
q.use_tsig(dns.tsig.Key("xfr", base64.b64decode(sys.argv[3]), dns.tsig.HMAC_SHA256))
r = dns.query.udp(q, sys.argv[1], timeout=3)
print(dns.rcode.to_text(r.rcode()))
"""


def write_config(path: Path, story: Path, key_file: Path) -> None:
    path.write_text(f"""\
[[chain]]
address = "{CHAIN4}"
story = "{story.name}"
suffix = "story.example.net"

[[chain]]
address = "{CHAIN6}"
story = "{story.name}"
suffix = "story.example.net"

[dns]
listen = ["{PRIMARY}:53"]
ns = ["ns1.example.net", "ns2.example.net"]
transfer = ["{PRIMARY}/32"]
transfer_keys = ["xfr"]

[[tsig]]
name = "xfr"
secret_file = "{key_file.name}"
""" + "".join(f'\n[[secondary]]\naddress = "{addr}"\nkey = "xfr"\n'
              for addr in SECONDARIES.values()))


@pytest.fixture
def primary(tmp_path):
    for tool in (*SECONDARIES, "kdig"):
        need(tool)
    story = tmp_path / "story.txt"
    story.write_text("Once upon a time\nthere was a packet\nit went far\nThe end\n")
    key = tmp_path / "xfr.key"
    key.write_text(f'key "xfr" {{ algorithm hmac-sha256; secret "{SECRET}"; }};\n')
    os.chmod(key, 0o600)
    config = tmp_path / "route-chain.toml"
    write_config(config, story, key)
    with TestNet.create("xf") as net:
        for addr in (*SECONDARIES.values(), STRANGER):
            net.run(net.router, "ip", "addr", "add", f"{addr}/8", "dev", "lo")
        with Daemon(net, "--config", str(config)) as daemon:
            daemon.wait_for("READY=1")
            yield net, daemon, story, tmp_path


def test_xfr_secondaries_follow_the_primary(primary):
    net, daemon, story, base = primary
    procs = {}
    try:
        for name in SECONDARIES:
            procs[name] = start_secondary(net, name, base)
        ours = {z: serial(net, PRIMARY, z) for z in ZONES}
        assert all(ours.values()), ours
        # After start: every zone, record for record, on every secondary.
        for name, addr in SECONDARIES.items():
            for z in ZONES:
                wait_until(lambda: serial(net, addr, z) == ours[z], 20,
                           lambda: f"{name} never served {z} serial {ours[z]}:\n"
                                   f"{(base / name / 'log').read_text()[-3000:]}", 0.1)
                assert axfr(net, addr, z, key=False) == axfr(net, PRIMARY, z, key=True), name
        before = counters(daemon)
        assert before["xfr:axfr"] + before["xfr:ixfr_full"] >= len(SECONDARIES) * len(ZONES)

        # A story edit and a reload: the new serial everywhere within 5 s.
        story.write_text("Once upon a time\nthere was a packet\nit went further\nThe end\n")
        daemon.signal(signal.SIGHUP)
        def moved() -> dict[str, int]:
            now = {z: serial(net, PRIMARY, z) for z in ZONES}
            return now if all(now[z] != ours[z] for z in ZONES) else {}
        changed = wait_until(moved, 10, "every zone's serial raised", 0.1)
        assert set(changed) == set(ZONES), "the reload did not raise every zone's serial"
        start = time.monotonic()
        for name, addr in SECONDARIES.items():
            for z, new in changed.items():
                wait_until(lambda: serial(net, addr, z) == new, 5 - (time.monotonic() - start),
                           lambda: f"{name} did not serve {z} serial {new} within 5 s of the "
                                   f"reload:\n{(base / name / 'log').read_text()[-3000:]}\n"
                                   f"{daemon.output()[-3000:]}")
        took = time.monotonic() - start
        for name, addr in SECONDARIES.items():
            for z in ZONES:
                theirs = axfr(net, addr, z, key=False)
                assert theirs == axfr(net, PRIMARY, z, key=True), name
                assert any("it.went.further" in r[4] for r in theirs)
        after = counters(daemon)
        # NOTIFY acknowledged by each secondary for each changed zone, and
        # each one pulled the change as an increment.
        assert after["notify:acked"] - before.setdefault("notify:acked", 0) >= \
            len(SECONDARIES) * len(ZONES)
        assert after["xfr:ixfr"] - before.setdefault("xfr:ixfr", 0) >= len(SECONDARIES) * len(ZONES)
        print(f"secondaries in step {took:.2f} s after the reload")
    finally:
        for proc in procs.values():
            stop(proc)


def test_xfr_wrong_key_and_stranger_are_refused_and_counted(primary):
    net, daemon, _, _ = primary
    before = counters(daemon)
    wrong = kdig(net, PRIMARY, "-y", f"hmac-sha256:xfr:{WRONG}", "AXFR", ZONES[0])
    assert "BADSIG" in wrong.stdout + wrong.stderr
    stranger = kdig(net, PRIMARY, "-y", f"hmac-sha256:xfr:{SECRET}", "AXFR", ZONES[0],
                    source=STRANGER)
    assert "REFUSED" in stranger.stdout + stranger.stderr
    unsigned = kdig(net, PRIMARY, "AXFR", ZONES[0])
    assert "REFUSED" in unsigned.stdout + unsigned.stderr
    # kdig and dig send an AXFR over TCP whatever they are told: dnspython
    # sends it over UDP, signed, from inside the namespace.
    udp = net.run(net.router, sys.executable, "-c", UDP_AXFR, PRIMARY, ZONES[0], SECRET,
                  check=False)
    assert udp.stdout.strip() == "REFUSED", udp.stdout + udp.stderr
    after = counters(daemon)
    for reason in ("badsig", "address", "unsigned", "udp"):
        key = f"xfr_refused:{reason}"
        assert after.get(key, 0) == before.get(key, 0) + 1, reason
