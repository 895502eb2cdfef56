"""NAT and header rewriting at a hop (issue 20, part 2): the quotes that
the hops after a rewriting router send carry the probe as that router
forwarded it, every checksum consistent; the router itself and the hops
in front of it quote the probe as sent. Over the reply core, parsed and
checked by scapy (an independent parser).

    NAT4  198.18.6.1/24     hop 2: nat=198.51.100.200:40000
                            hop 3: dscp=46 ecn=1 df=clear
    NAT6  2001:db8:9::1/64  hop 2: nat=[2001:db8:ffff::200]:40000, hop 3: dscp=46 ecn=1
          both: 5 hops, hop 5 the destination
"""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import IPv6, ICMPv6EchoRequest

from routechain import chaintable
from routechain.chain import Chain, Hop, parse_prefix
from routechain.errors import ConfigError, UsageError
from routechain.hopprops import Props, parse_words
from reference import reference_reply

SRC4, SRC6 = "192.0.2.2", "2001:db8:ff::2"
NAT4 = Chain(parse_prefix("198.18.6.1/24"), (
    Hop(name="a"), Hop(name="nat", props=parse_words("nat=198.51.100.200:40000", "t")),
    Hop(name="remark", props=parse_words("dscp=46 ecn=1 df=clear", "t")),
    Hop(name="d"), Hop(name="home")))
NAT6 = Chain(parse_prefix("2001:db8:9::1/64"), (
    Hop(name="a"), Hop(name="nat", props=parse_words("nat=[2001:db8:ffff::200]:40000", "t")),
    Hop(name="remark", props=parse_words("dscp=46 ecn=1", "t")),
    Hop(name="d"), Hop(name="home")))
TABLE = chaintable.Table([NAT4, NAT6])


def send(chain: Chain, ttl: int, upper) -> bytes:
    ip = (IP(src=SRC4, dst=str(chain.destination), ttl=ttl, flags="DF", tos=0)
          if chain.family == 4 else IPv6(src=SRC6, dst=str(chain.destination), hlim=ttl))
    probe = bytes(ip / upper)
    got = chaintable.reply(probe, TABLE, slack=2000)
    assert isinstance(got, bytes), got
    assert got == reference_reply(probe, [NAT4, NAT6], slack=2000)
    return got


def quote_of(reply: bytes):
    """The quoted probe, parsed afresh by scapy, and the reply's outer IP."""
    outer = IP(reply) if reply[0] >> 4 == 4 else IPv6(reply)
    inner = bytes(outer.payload.payload)
    return outer, (IP(inner) if reply[0] >> 4 == 4 else IPv6(inner))


def checksums_valid(quoted) -> bool:
    """Every checksum of the quoted probe equals scapy's recomputation."""
    fresh = quoted.copy()
    layers = [fresh] + [fresh.getlayer(i) for i in range(1, 3) if fresh.getlayer(i)]
    for layer in layers:
        for name in ("chksum", "cksum"):
            if name in layer.fields:
                del layer.fields[name]
    rebuilt = type(quoted)(bytes(fresh))
    return bytes(rebuilt) == bytes(quoted)


@pytest.mark.parametrize("chain", [NAT4, NAT6], ids=["v4", "v6"])
def test_nat_rewrites_quotes_from_the_next_hop_on(chain):
    nat = "198.51.100.200" if chain.family == 4 else "2001:db8:ffff::200"
    sender = SRC4 if chain.family == 4 else SRC6
    for ttl in range(1, 6):
        outer, quoted = quote_of(send(chain, ttl, UDP(sport=33000, dport=33434) / (b"x" * 12)))
        assert outer.dst == sender                     # the error still comes back
        assert outer.src == str(chain.hop_address(ttl))
        rewritten = ttl >= 3                           # after hop 2, the NAT
        assert quoted.src == (nat if rewritten else sender), ttl
        assert quoted[UDP].sport == (40000 if rewritten else 33000), ttl
        assert quoted[UDP].dport == 33434
        assert checksums_valid(quoted), (ttl, quoted.show(dump=True))
    broken = quoted.copy()
    broken[UDP].chksum ^= 1                            # the check can fail
    assert not checksums_valid(broken)


@pytest.mark.parametrize("chain", [NAT4, NAT6], ids=["v4", "v6"])
def test_remark_dscp_ecn_df_from_the_next_hop_on(chain):
    for ttl in range(1, 6):
        _, quoted = quote_of(send(chain, ttl, UDP(sport=33000, dport=33434)))
        ds = quoted.tos if chain.family == 4 else quoted.tc
        assert ds == ((46 << 2 | 1) if ttl >= 4 else 0), ttl
        if chain.family == 4:
            assert ("DF" in str(quoted.flags)) == (ttl < 4), ttl
        assert checksums_valid(quoted)


def test_nat_maps_the_echo_identifier_and_keeps_echo_replies_alone():
    """RFC 5508: the ICMP identifier is a NAT's port; the Echo Reply from
    the destination goes back through the NAT, untouched."""
    _, quoted = quote_of(send(NAT4, 4, ICMP(type=8, id=77, seq=1)))
    assert quoted.src == "198.51.100.200" and quoted[ICMP].id == 40000
    assert checksums_valid(quoted)
    reply = IP(send(NAT4, 64, ICMP(type=8, id=77, seq=1)))
    assert reply[ICMP].type == 0 and reply[ICMP].id == 77 and reply.dst == SRC4
    _, quoted = quote_of(send(NAT6, 4, ICMPv6EchoRequest(id=77, seq=1)))
    assert quoted.src == "2001:db8:ffff::200" and quoted[ICMPv6EchoRequest].id == 40000
    assert checksums_valid(quoted)


def test_nat_rewrites_tcp_quotes_too():
    _, quoted = quote_of(send(NAT4, 3, TCP(sport=33000, dport=80, flags="S", seq=9)))
    assert quoted.src == "198.51.100.200" and quoted[TCP].sport == 40000
    assert checksums_valid(quoted)


def test_port_unreachable_from_the_destination_quotes_the_rewritten_probe():
    got = send(NAT4, 64, UDP(sport=33000, dport=33434))
    outer, quoted = quote_of(got)
    assert outer[ICMP].type == 3 and outer[ICMP].code == 3 and outer.dst == SRC4
    assert quoted.src == "198.51.100.200" and quoted[UDP].sport == 40000


def test_rewrite_properties_checked():
    with pytest.raises(ConfigError, match="port 0 is not 1..65535"):
        parse_words("nat=198.51.100.9:0", "s.txt:1")
    with pytest.raises(ConfigError, match=r"dscp '64'"):
        parse_words("dscp=64", "s.txt:1")
    with pytest.raises(UsageError, match="an IPv6 address in an IPv4 chain"):
        Chain(parse_prefix("198.18.6.1/24"),
              (Hop(props=Props(nat=(ipaddress.ip_address("2001:db8::9"), None))), Hop()))
    with pytest.raises(UsageError, match="IPv6 has no DF bit"):
        Chain(parse_prefix("2001:db8:9::1/64"), (Hop(props=Props(df="set")), Hop()))


@pytest.mark.parametrize("bits", [64, 16 | 32], ids=["unknown", "both_df"])
def test_rewrite_table_check_refuses(bits):
    table = chaintable.Table([NAT4])
    table.ptr.chains[0].hops[2].rewrite = bits
    with pytest.raises(ConfigError, match=r"hop 2.*\(rewrite\)"):
        table.check()
    table = chaintable.Table([NAT4])
    table.ptr.chains[0].rewrites = 0
    with pytest.raises(ConfigError, match=r"\(rewrite\)"):
        table.check()


def test_preview_and_zone_name_the_rewriting_hop_and_the_longer_branch():
    from routechain import preview, zone
    from test_balance import UNEQ4
    shown = preview.render_chain(NAT4)
    assert "[rewrites what it forwards: NAT to 198.51.100.200:40000]" in shown
    assert "[rewrites what it forwards: DSCP 46, ECN 1, DF clear]" in shown
    assert "NAT to [2001:db8:ffff::200]:40000" in preview.render_chain(NAT6)
    records = {str(owner): str(target) for _, owner, _, target in zone._chain_records(UNEQ4)}
    assert any(t.startswith("c2.") or t == "c2" for t in records.values()), records
