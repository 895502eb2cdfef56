"""What preview.render says traceroute will show, and its warnings."""

from __future__ import annotations

import pytest

from routechain import config, demo, preview, zone
from routechain.chain import Chain, Chapter, Hop, parse_prefix
from routechain.config import Config
from routechain.hopprops import Props
from routechain.story import parse_text


def chain(prefix: str, names) -> Chain:
    hops = tuple(Hop(silent=True) if n == "*" else Hop(name=n) for n in names)
    return Chain(parse_prefix(prefix), hops, where="test")


def test_preview_lines_as_traceroute_through_one_router():
    text = preview.render(Config(chains=(chain("198.51.100.1/24",
                                               ["Once.upon", "*", None, "xn--caf-dma"]),)))
    assert text.splitlines() == [
        "198.51.100.1/24 (test): 4 hops, destination 198.51.100.5",
        "traceroute to 198.51.100.5 (198.51.100.5), 30 hops max",
        " 1  (the router in front of the daemon)",
        " 2  Once.upon (198.51.100.2)",
        " 3  * * *",
        " 4  198.51.100.4 (198.51.100.4)",
        " 5  xn--caf-dma (198.51.100.5)   [café in a UTF-8 terminal]",
    ]


def test_preview_warns_past_30_hops_with_the_m_to_use():
    text = preview.render_chain(chain("2001:db8::1/64", [f"h{k}" for k in range(35)]))
    assert "warning: the destination is 36 hops away and traceroute stops at 30: " \
           "use `traceroute -m 36`" in text
    assert "36 hops max" in text


def test_preview_warns_when_no_ttl_reaches_the_destination():
    text = preview.render_chain(chain("2001:db8::1/64", [f"h{k}" for k in range(255)]))
    assert "a TTL holds at most 255" in text


def test_preview_warns_names_wider_than_mtr():
    text = preview.render_chain(chain("192.0.2.1/24", ["a" * 25, "b" * 26, "short", "c" * 33]))
    warning, = [l for l in text.splitlines() if "mtr" in l]
    assert "2 names (lines 3, 5; up to 33 characters)" in warning
    assert "25-character host column" in warning and "80-column terminal" in warning


def test_preview_plain_chain_is_summarised():
    text = preview.render_chain(Chain(parse_prefix("192.0.2.1/24")))
    assert "   ..." in text and "254  192.0.2.254 (192.0.2.254)" in text
    assert "no story" in text


def test_preview_timing_rtt_loss_and_rate(tmp_path):
    """Each hop's mean delay (steps, '+' from a hop on, a slow hop, jitter
    clamped at 0), its loss and its limit; hops without timing say rtt 0."""
    path = tmp_path / "rc.toml"
    path.write_text('[[chain]]\naddress = "192.0.2.1/24"\ndelay = "1ms"\nstep = "0.5ms"\n'
                    'hops = ["a", "b | delay=+10ms jitter=2ms", "c | slow=3ms loss=10%",'
                    ' "* | jitter=4ms", "e | delay=1ms jitter=3ms rate=2/s"]\n')
    text = preview.render(config.load(path))
    assert text.splitlines()[3:] == [
        " 2  a (192.0.2.2)  rtt 1.0 ms",
        " 3  b (192.0.2.3)  rtt 11.5 ms ±2",
        " 4  c (192.0.2.4)  rtt 15.0 ms, loss 10%",
        " 5  * * *",
        " 6  e (192.0.2.6)  rtt 1.3 ms ±3, rate 2/s burst 2",
    ]


def test_preview_without_timing_shows_no_rtt():
    assert "rtt" not in preview.render_chain(chain("192.0.2.1/24", ["a", "b"]))


def test_preview_no_chains():
    assert preview.render(Config()) == "no chains\n"


def test_demo_config_tells_a_story_on_documentation_prefixes():
    c = demo.demo_config()
    assert [str(ch.interface) for ch in c.chains] == ["198.51.100.1/24", "2001:db8:5::1/64"]
    assert c.dns.listen == (("198.51.100.1", 53), ("2001:db8:5::1", 53))
    hops = c.chains[0].hops
    assert 8 <= len(hops) <= 12 and hops[0].name == "Once.upon.a.time"
    assert any(h.silent for h in hops) and any("xn--" in (h.name or "") for h in hops)
    assert len(zone.build(c)) == 2
    assert "warning: the destination" not in preview.render(c)


def test_preview_shows_labels_interfaces_mtu_branches_and_ending():
    """Per hop what traceroute -e will print, the MTU drop, a hop's own
    reply TTL, each '+' alternative at its own address, the ending flag."""
    story = parse_text("core | mpls=24001:5,16 iface=xe-0/0/0 ifindex=7 ifmtu=9000\n"
                        "narrow | mtu=1400 iface=narrow0\n"
                        "west | reply_ttl=255\n"
                        "+ east | mpls=24002 ifaddr=192.0.2.9\n"
                        "end\n", "story.txt")
    text = preview.render_chain(Chain(parse_prefix("198.51.100.1/24"), story.hops,
                                      where="test", defaults=Props(end="!X")))
    assert text.splitlines()[3:] == [
        ' 2  core (198.51.100.2)  <MPLS:L=24001,E=5/L=16,E=0;INC:7,"xe-0/0/0",mtu=9000>',
        ' 3  narrow (198.51.100.3)  <INC:"narrow0">  '
        "[next-hop MTU 1400: larger probes get Fragmentation Needed]",
        " 4  west (198.51.100.4)  [replies leave with TTL 255]",
        " +  east (198.51.100.6)  <MPLS:L=24002,E=0;INC:192.0.2.9>",
        " 5  end (198.51.100.5)  !X",
    ]


@pytest.mark.parametrize("props, shown", [
    (Props(), ""),
    (Props(tcp_open=(80, 443)), "  [TCP: 80,443 open, others RST-ACK]"),
    (Props(tcp_open=(22,), tcp="silent", udp="prohibited"),
     "  [TCP: 22 open, others silent]  [UDP: prohibited]"),
    (Props(tcp="rst"), "  [TCP: a bare RST]"),
    (Props(tcp="open", udp="silent"), "  [TCP: every port open]  [UDP: silent]"),
])
def test_preview_says_what_the_destination_answers(props, shown):
    c = Chain(parse_prefix("198.51.100.1/24"), (Hop(name="a"), Hop(name="www")), where="test",
              defaults=props)
    assert preview.render_chain(c).splitlines()[-1] == " 3  www (198.51.100.3)" + shown


def test_preview_shows_each_chapter_its_address_and_line():
    told = chain("198.51.100.1/24", ["a", "b", "c", "d"])
    told = Chain(told.interface, told.hops, where="test", name="story.example.net",
                 chapters=(Chapter("two", 2), Chapter("last", 4)))
    lines = preview.render_chain(told).splitlines()
    assert lines[-2:] == [
        "chapter two.story.example.net (198.51.100.6): starts at line 2, "
        "the destination 4 hops away",
        "chapter last.story.example.net (198.51.100.7): starts at line 4, "
        "the destination 2 hops away",
    ]


def test_preview_warns_of_a_chapter_past_30_hops():
    """A chapter is there to fit traceroute's 30 hops: one that does not
    is told which line would."""
    long = chain("2001:db8::1/64", [f"h{k}" for k in range(40)])
    long = Chain(long.interface, long.hops, where="test", name="s.example",
                 chapters=(Chapter("early", 5, "rc.toml:7"), Chapter("late", 12, "rc.toml:7")))
    found = [w for w in preview.warnings(long) if w.startswith("chapter")]
    assert found == ["chapter early (rc.toml:7): the destination is 37 hops away and "
                     "traceroute stops at 30: start it at line 12 or later to fit"]
