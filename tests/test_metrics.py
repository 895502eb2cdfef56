"""Prometheus metrics: `[metrics] listen` serves what the workers, the DNS
server and the daemon counted, read at scrape time, parsed here with
prometheus_client's own text parser.

The network is tests/netns.py's; the endpoint listens on the router
namespace's loopback and is scraped from inside that namespace.
"""

from __future__ import annotations

import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netns import CHAIN4, CHAIN6, Daemon, TestNet
from routechain import config, metrics
from routechain.chaintable import Kind
from routechain.workers import Pace, Stats

LISTEN = "127.0.0.1:9850"
HOST4 = CHAIN4.split("/")[0]


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(found: dict, name: str, **labels: str) -> float:
    """The sum over every sample `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in found.items()
               if n == name and set(labels.items()) <= set(ls))


def render(snap: metrics.Snapshot) -> dict:
    from prometheus_client import generate_latest
    return samples(generate_latest(metrics.registry(lambda: snap)).decode())


# (the DNS server's counters, (sample, labels, value) the scrape must show)
DNS_CASES = [
    ({"queries": 9, "tcp_queries": 2, "rcode:NOERROR": 6, "rcode:SERVFAIL": 1,
      "drop:ratelimited": 2, "truncated": 1, "internal_errors": 1},
     [("routechain_dns_queries_total", (), 9),  # TCP's are in it, not added again
      ("routechain_dns_events_total", (("event", "tcp_queries"),), 2),
      ("routechain_dns_responses_total", (("rcode", "NOERROR"),), 6),
      ("routechain_dns_responses_total", (("rcode", "SERVFAIL"),), 1),
      ("routechain_dns_drops_total", (("reason", "ratelimited"),), 2),
      ("routechain_dns_events_total", (("event", "truncated"),), 1),
      ("routechain_dns_internal_errors_total", (), 1)]),
    ({"xfr:axfr": 3, "xfr:ixfr": 2, "xfr_refused:badsig": 1, "xfr_refused:udp": 4,
      "notify:sent": 5, "notify:failed": 1, "tsig:signed": 7},
     [("routechain_dns_transfers_total", (("kind", "axfr"),), 3),
      ("routechain_dns_transfers_total", (("kind", "ixfr"),), 2),
      ("routechain_dns_transfers_refused_total", (("reason", "badsig"),), 1),
      ("routechain_dns_transfers_refused_total", (("reason", "udp"),), 4),
      ("routechain_dns_notify_total", (("event", "sent"),), 5),
      ("routechain_dns_notify_total", (("event", "failed"),), 1),
      ("routechain_dns_events_total", (("event", "tsig:signed"),), 7)]),
]


@pytest.mark.parametrize("counters,want", DNS_CASES)
def test_metrics_dns_counters_by_rcode_and_reason(counters, want):
    found = render(metrics.Snapshot(dns=counters))
    for name, labels, value in want:
        assert found[(name, labels)] == value, name


def test_metrics_show_every_dns_counter_once():
    """Every name the server counts under (routechain.dns.COUNTERS) is one
    sample: none lost, none summed into another."""
    from routechain import dns as dns_server
    counters = {name: 10 + i for i, name in enumerate(dns_server.COUNTERS)}
    found = render(metrics.Snapshot(dns=counters))
    shown = sorted(v for k, v in found.items() if k[0].startswith("routechain_dns_"))
    assert shown == sorted(counters.values())


def test_metrics_leave_out_what_is_not_counted():
    """A counter the daemon does not keep is absent, never a made-up 0."""
    found = render(metrics.Snapshot())
    names = {n for n, _ in found}
    for absent in ("routechain_reloads_total", "routechain_last_reload_success",
                   "routechain_address_repairs_total", "routechain_dns_queries_total"):
        assert absent not in names
    found = render(metrics.Snapshot(reloads_ok=3, reloads_failed=1, last_reload_ok=False,
                                    repairs=2))
    assert found[("routechain_reloads_total", (("result", "ok"),))] == 3
    assert found[("routechain_reloads_total", (("result", "failed"),))] == 1
    assert found[("routechain_last_reload_success", ())] == 0
    assert found[("routechain_address_repairs_total", ())] == 2


def test_metrics_per_queue_counters():
    replies = [0] * len(Kind)
    replies[Kind.ECHO_REPLY] = 4
    paced = [0] * len(Pace)
    paced[Pace.SOURCE_LIMITED] = 3
    snap = metrics.Snapshot(queues=(Stats(received=6, sent=4, replies=tuple(replies),
                                          write_errors=1, paced=tuple(paced),
                                          late=(3, 0, 0, 0, 0, 1, 0, 0, 2), late_ns=25_000_000,
                                          chapters=2),
                                    Stats(received=2)))
    found = render(snap)
    assert found[("routechain_received_packets_total", (("queue", "0"),))] == 6
    assert found[("routechain_received_packets_total", (("queue", "1"),))] == 2
    assert found[("routechain_replies_total", (("kind", "echo_reply"), ("queue", "0")))] == 4
    assert found[("routechain_write_errors_total", (("queue", "0"),))] == 1
    assert found[("routechain_chapter_replies_total", (("queue", "0"),))] == 2
    assert found[("routechain_chapter_replies_total", (("queue", "1"),))] == 0
    assert total(found, "routechain_replies_total") == 4
    assert found[("routechain_paced_total",
                  (("outcome", "source_limited"), ("queue", "0")))] == 3
    assert total(found, "routechain_paced_total") == 3
    # The lateness histogram: cumulative buckets, in seconds.
    late = {dict(ls)["le"]: v for (n, ls), v in found.items()
            if n == "routechain_delay_lateness_seconds_bucket" and ("queue", "0") in ls}
    assert (late["5e-05"], late["0.001"], late["0.0025"], late["0.01"], late["+Inf"]) \
        == (3, 3, 4, 4, 6)
    assert found[("routechain_delay_lateness_seconds_count", (("queue", "0"),))] == 6
    assert found[("routechain_delay_lateness_seconds_sum", (("queue", "0"),))] == 0.025


# (text of [metrics] listen, the endpoint, or the error's words)
LISTEN_CASES = [
    ('"127.0.0.1:9850"', ("127.0.0.1", 9850)),
    ('"[::1]:9850"', ("::1", 9850)),
    ('"127.0.0.1"', "rc.toml:5: bad metrics listen address '127.0.0.1': write ADDR:PORT"),
    ('"::1"', "rc.toml:5: bad metrics listen address '::1'"),
    ('"127.0.0.1:99999"', "rc.toml:5: bad port in listen address"),
    ("9850", "rc.toml:5: metrics.listen must be a string"),
]


@pytest.mark.parametrize("text,want", LISTEN_CASES, ids=[c[0] for c in LISTEN_CASES])
def test_metrics_listen_in_config(tmp_path, text, want):
    path = tmp_path / "rc.toml"
    path.write_text(f'[[chain]]\naddress = "{CHAIN4}"\n\n[metrics]\nlisten = {text}\n')
    if isinstance(want, tuple):
        assert config.load(path).metrics.listen == want
    else:
        with pytest.raises(config.ConfigError, match=want.replace("[", r"\[")
                           .replace("(", r"\(")):
            config.load(path)


SCRAPE = ("import urllib.request; print(urllib.request.urlopen("
          f"'http://{LISTEN}/metrics', timeout=10).read().decode())")


@pytest.mark.netns
def test_metrics_scrape_shows_what_the_daemon_counted(tmp_path):
    conf = tmp_path / "rc.toml"
    conf.write_text(f'[[chain]]\naddress = "{CHAIN4}"\n'
                    'hops = ["a", "b", "*", "d", "e | delay=3ms"]\n\n'
                    f'[dns]\nlisten = ["{HOST4}:5353"]\n\n'
                    f'[metrics]\nlisten = "{LISTEN}"\n')
    pings, queries = 7, 3
    with TestNet.create("mx") as net, Daemon(net, "--config", str(conf), "--queues", "2") as d:
        d.wait_for("READY=1")
        assert f"metrics: serving on http://{LISTEN}/metrics" in d.output()
        before = samples(net.run(net.router, sys.executable, "-c", SCRAPE).stdout)
        out = net.run(net.client, "ping", "-c", str(pings), "-i", "0.05", "-W", "2",
                      "198.18.0.6").stdout
        assert f"{pings} received" in out, out
        for _ in range(queries):
            answer = net.run(net.client, "dig", "+short", "-p", "5353", f"@{HOST4}",
                             "-x", "198.18.0.2").stdout
            assert answer.strip() == "a.", answer
        found = samples(net.run(net.router, sys.executable, "-c", SCRAPE).stdout)

        def grew(name: str, **labels: str) -> float:
            return total(found, name, **labels) - total(before, name, **labels)

        assert grew("routechain_replies_total", kind="echo_reply") == pings
        # Every Echo Reply waited its 3 ms, and each went into the histogram.
        assert grew("routechain_paced_total", outcome="delayed") == pings
        assert grew("routechain_delay_lateness_seconds_count") == pings
        assert grew("routechain_received_packets_total") >= pings
        assert {ls for n, ls in found if n == "routechain_received_packets_total"} == {
            (("queue", "0"),), (("queue", "1"),)}
        assert grew("routechain_dns_queries_total") == queries, [k for k in found if "dns" in k[0]]
        assert grew("routechain_dns_responses_total", rcode="NOERROR") == queries
        assert found[("routechain_chains", (("family", "4"),))] == 1
        assert found[("routechain_hops", (("family", "4"),))] == 5
        assert found[("routechain_build_info", (("version", metrics.__version__),))] == 1
        assert total(found, "process_resident_memory_bytes") > 0

        # A reload: the chains are read live; reload counters where the
        # daemon keeps them.
        conf.write_text(conf.read_text().replace('"e | delay=3ms"]', '"e | delay=3ms", "f"]'))
        d.reload()
        after = samples(net.run(net.router, sys.executable, "-c", SCRAPE).stdout)
        assert after[("routechain_hops", (("family", "4"),))] == 6
        assert after[("routechain_reloads_total", (("result", "ok"),))] == 1
        assert after[("routechain_last_reload_success", ())] == 1
        assert after[("routechain_address_repairs_total", ())] == 0


@pytest.mark.netns
def test_metrics_count_replies_to_chapters(tmp_path):
    """Replies to a chapter's address are counted where the core decides
    it is one (rc_where.chapter), and among their kinds; replies to the
    story's own addresses are not chapter replies."""
    conf = tmp_path / "rc.toml"
    conf.write_text(f'[[chain]]\naddress = "{CHAIN4}"\nhops = ["a", "b", "c"]\n'
                    'name = "story.example.net"\nchapters = { two = 2 }\n\n'
                    f'[metrics]\nlisten = "{LISTEN}"\n')
    pings = 5
    with TestNet.create("mc") as net, Daemon(net, "--config", str(conf)) as d:
        d.wait_for("READY=1")
        before = samples(net.run(net.router, sys.executable, "-c", SCRAPE).stdout)
        for target in ("198.18.0.5", "198.18.0.4"):      # the chapter, the destination
            out = net.run(net.client, "ping", "-c", str(pings), "-i", "0.05", "-W", "2",
                          target).stdout
            assert f"{pings} received" in out and f"from {target}" in out, out
        found = samples(net.run(net.router, sys.executable, "-c", SCRAPE).stdout)
        assert (total(found, "routechain_chapter_replies_total")
                - total(before, "routechain_chapter_replies_total")) == pings
        assert (total(found, "routechain_replies_total", kind="echo_reply")
                - total(before, "routechain_replies_total", kind="echo_reply")) == 2 * pings


@pytest.mark.netns
def test_metrics_count_h_and_n_endings_as_endings(tmp_path):
    """A chain's `end` ("!H", "!N") is counted as an ending where the core
    decides it, not re-read from the reply's code (where !H looks like the
    Host Unreachable of an address beyond a chain)."""
    conf = tmp_path / "rc.toml"
    conf.write_text(f'[[chain]]\naddress = "{CHAIN4}"\nend = "!H"\nhops = ["a", "b", "c"]\n\n'
                    f'[[chain]]\naddress = "{CHAIN6}"\nend = "!N"\nhops = ["a", "b", "c"]\n\n'
                    f'[metrics]\nlisten = "{LISTEN}"\n')
    pings = 4
    with TestNet.create("me") as net, Daemon(net, "--config", str(conf)) as d:
        d.wait_for("READY=1")
        before = samples(net.run(net.router, sys.executable, "-c", SCRAPE).stdout)
        for target, flag in (("198.18.0.4", "Destination Host Unreachable"),
                             ("2001:db8::4", "No route")):
            out = net.run(net.client, "ping", "-c", str(pings), "-i", "0.05", "-W", "1",
                          target, check=False).stdout
            assert out.count(flag) == pings, out
        found = samples(net.run(net.router, sys.executable, "-c", SCRAPE).stdout)

        def grew(kind: str) -> float:
            return (total(found, "routechain_replies_total", kind=kind)
                    - total(before, "routechain_replies_total", kind=kind))

        assert grew("ending") == 2 * pings
        assert grew("host_unreach") == 0 and grew("echo_reply") == 0


@pytest.mark.netns
def test_metrics_port_taken_exits_1_leaving_nothing(tmp_path):
    conf = tmp_path / "rc.toml"
    conf.write_text(f'[[chain]]\naddress = "{CHAIN4}"\n\n[metrics]\nlisten = "{LISTEN}"\n')
    with TestNet.create("mt") as net:
        blocker = net.popen(net.router, sys.executable, "-c",
                            "import socket, time; s = socket.socket(); "
                            "s.bind(('127.0.0.1', 9850)); s.listen(); print(flush=True); "
                            "time.sleep(60)", stdout=-1)
        try:
            blocker.stdout.readline()
            r = net.run(net.router, sys.executable, "-m", "routechain", "--config", str(conf),
                        check=False)
        finally:
            blocker.kill()
            blocker.wait()
            blocker.stdout.close()
        links = net.run(net.router, "ip", "-o", "link").stdout
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().endswith(
        "route-chain: metrics: cannot listen on 127.0.0.1:9850: address already in use"), r.stderr
    assert "route-chain" not in links
