"""What real routers put in their replies (issue #9), table-driven over the
reply core and parsed by scapy: RFC 4884 extension structures carrying RFC
4950 label stacks and RFC 5837 interface information, path MTU (RFC 1191,
RFC 8201), ECMP branches, `end` unreachables and per-hop reply TTLs.

Chains (documentation prefixes only):

    EXT4  198.51.100.129/25   hops +1 .. +6, +6 the destination
    EXT6  2001:db8:5::1/64    the same hops
          1  mpls=16001 iface=ge-0/0/1
          2  mpls=24001:5,16 iface=<63 octets> ifindex=7 ifaddr=192.0.2.77 ifmtu=9000
          3  mtu=1400 (v6: 1280) iface=narrow ifmtu=1400
             + alternative: mpls=24002 iface=xe-1/0/0, address +7 (the next free)
          4  reply_ttl=255
          5  nothing: sends what a chain without properties sends
    END4  198.18.5.1/24       3 hops, end = "!N", hop 3 iface=edge0 ifmtu=1500
    END6  2001:db8:6::1/64    3 hops, end = "!X"
"""

from __future__ import annotations

import ipaddress
import shutil
import struct
import subprocess

import pytest
from scapy.contrib.mpls import MPLS, ICMPExtension_MPLS
from scapy.layers.inet import ICMP, IP, UDP, ICMPExtension_Header
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.utils import PcapWriter, checksum

from routechain import chaintable
from routechain.chain import Chain, Hop, parse_prefix
from routechain.hopprops import Label, Props

LONG_NAME = "é" * 31 + "x"                       # 63 octets of UTF-8
HOPS = (
    Hop(props=Props(mpls=(Label(16001),), iface="ge-0/0/1")),
    Hop(props=Props(mpls=(Label(24001, 5), Label(16)), iface=LONG_NAME, ifindex=7,
                    ifaddr=ipaddress.ip_address("192.0.2.77"), ifmtu=9000)),
    Hop(props=Props(mtu=1400, iface="narrow", ifmtu=1400),
        alternatives=(Hop(name="north", props=Props(mpls=(Label(24002),), iface="xe-1/0/0")),)),
    Hop(props=Props(reply_ttl=255)),
    Hop(),
    Hop(),
)
HOPS6 = tuple(Hop(props=Props(mtu=1280, iface="narrow", ifmtu=1400),
                  alternatives=h.alternatives) if k == 3 else h for k, h in enumerate(HOPS, 1))
EXT4 = Chain(parse_prefix("198.51.100.129/25"), HOPS)
EXT6 = Chain(parse_prefix("2001:db8:5::1/64"), HOPS6)
END_HOPS = (Hop(), Hop(), Hop(props=Props(iface="edge0", ifmtu=1500)))
END4 = Chain(parse_prefix("198.18.5.1/24"), END_HOPS, defaults=Props(end="!N"))
END6 = Chain(parse_prefix("2001:db8:6::1/64"), END_HOPS, defaults=Props(end="!X"))
CHAINS = [EXT4, EXT6, END4, END6]
TABLE = chaintable.Table(CHAINS)
SLACK = 2000                     # the serving loop's buffer has 64 KiB behind the probe

SRC4, SRC6 = "192.0.2.2", "2001:db8:ff::2"
K = chaintable.Kind


def probe(chain: Chain, k: int, ttl: int, size: int = 20, sport: int = 40000,
          df: bool = True, dst: str | None = None) -> bytes:
    """A UDP probe of `size` payload octets to hop k (or dst)."""
    dst = dst or str(chain.host + k)
    upper = UDP(sport=sport, dport=33434) / bytes(size)
    if chain.family == 4:
        return bytes(IP(src=SRC4, dst=dst, ttl=ttl, flags="DF" if df else 0, id=7) / upper)
    return bytes(IPv6(src=SRC6, dst=dst, hlim=ttl) / upper)


def answer(packet: bytes) -> bytes:
    got = chaintable.reply(packet, TABLE, slack=SLACK)
    assert isinstance(got, bytes), got
    return got


def icmp_of(reply: bytes) -> bytes:
    return reply[20:] if reply[0] >> 4 == 4 else reply[40:]


def split(reply: bytes) -> tuple[bytes, bytes]:
    """(original datagram field, extension structure) by the RFC 4884
    length octet: byte 5 in 32-bit words (v4), byte 4 in 64-bit words (v6)."""
    icmp = icmp_of(reply)
    words = icmp[5] * 4 if reply[0] >> 4 == 4 else icmp[4] * 8
    return icmp[8:8 + words], icmp[8 + words:]


def parse_names(interface_object: bytes) -> tuple[dict, int]:
    """RFC 5837 4.1: the sub-objects of an interface object, by its C-Type
    bits, in the order the RFC fixes: ifIndex, IP address, name, MTU. The
    name's length octet counts itself and the padding (4.3). Returns the
    fields found and how many octets they took (must be all of them)."""
    ctype, body, at, out = interface_object[3], interface_object[4:], 0, {}
    out["role"] = ctype >> 6
    if ctype & 0x08:
        out["ifindex"] = struct.unpack("!I", body[at:at + 4])[0]
        at += 4
    if ctype & 0x04:
        afi = struct.unpack("!H", body[at:at + 2])[0]
        size = 4 if afi == 1 else 16
        out["ifaddr"] = ipaddress.ip_address(body[at + 4:at + 4 + size])
        at += 4 + size
    if ctype & 0x02:
        length = body[at]
        assert length % 4 == 0 and 1 < length <= 64
        out["iface"] = body[at + 1:at + length].rstrip(b"\0").decode()
        at += length
    if ctype & 0x01:
        out["ifmtu"] = struct.unpack("!I", body[at:at + 4])[0]
        at += 4
    return out, at


def check_extension(reply: bytes, sent: bytes, props: Props, label_ttl: int) -> None:
    """Everything RFC 4884 asks of an error that carries an extension, read
    by scapy where it can and by the RFC's own layout otherwise."""
    v4 = reply[0] >> 4 == 4
    unit, limit = (4, 576) if v4 else (8, 1280)
    field, ext = split(reply)
    assert len(field) >= 128 and len(field) % unit == 0     # RFC 4884 4
    quoted = sent[:len(field)]
    assert field[:len(quoted)] == quoted and field[len(quoted):] == bytes(len(field) - len(quoted))
    assert len(reply) <= limit                        # RFC 1812 4.3.2.3, RFC 4443 2.4(c)
    header = ICMPExtension_Header(ext)
    assert header.version == 2 and checksum(ext) == 0       # RFC 4884 7
    objects = ext[4:]
    if props.mpls:
        mpls = ICMPExtension_MPLS(objects)
        assert (mpls.classnum, mpls.classtype) == (1, 1)    # RFC 4950 7
        assert mpls.len == 4 + 4 * len(props.mpls)
        got = []
        entry = mpls.stack[0]
        while isinstance(entry, MPLS):       # scapy nests each entry in the one above
            got.append((entry.label, entry.cos, entry.s, entry.ttl))
            entry = entry.payload
        want = [(e.label, e.tc, int(n == len(props.mpls) - 1), label_ttl)
                for n, e in enumerate(props.mpls)]
        assert got == want
        objects = objects[mpls.len:]
    if props.iface or props.ifindex is not None or props.ifmtu is not None:
        # scapy 2.5 reads the name's length octet as excluding itself (and
        # then fails on the MTU), so the object is read by the RFC's layout.
        length, class_num = struct.unpack("!HB", objects[:3])
        assert class_num == 2 and length == len(objects)
        fields, used = parse_names(objects)
        assert used == len(objects) - 4
        want = {"role": 0} | {k: getattr(props, k) for k in ("ifindex", "ifaddr", "iface", "ifmtu")
                              if getattr(props, k) is not None}
        assert fields == want
    else:
        assert objects == b""


def source(reply: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(reply[12:16] if reply[0] >> 4 == 4 else reply[8:24])


def ttl_of(reply: bytes) -> int:
    return reply[8] if reply[0] >> 4 == 4 else reply[7]


def flow_on_branch(chain: Chain, k: int, branch: int, ttl: int, **kw) -> bytes:
    """A probe whose flow meets hop k's router `branch`: found by trying
    source ports, as a Paris traceroute user would."""
    want = chain.branch_address(k, branch)
    for sport in range(40000, 40200):
        packet = probe(chain, 6, ttl, sport=sport, **kw)
        if source(answer(probe(chain, 6, k, sport=sport))) == want:
            return packet
    raise AssertionError(f"no flow of 200 meets branch {branch} of hop {k}")


@pytest.mark.parametrize("chain", [EXT4, EXT6], ids=["v4", "v6"])
@pytest.mark.parametrize("k", [1, 2])
def test_time_exceeded_carries_labels_and_interface(chain, k):
    sent = probe(chain, 6, k)
    got = answer(sent)
    assert got.kind == K.TIME_EXCEEDED and source(got) == chain.hop_address(k)
    check_extension(got, sent, chain.hop(k).props, label_ttl=1)


@pytest.mark.parametrize("chain", [EXT4, EXT6], ids=["v4", "v6"])
def test_label_ttl_counts_down_with_the_hop(chain):
    """Uniform model: the label TTL is the TTL the probe arrived with at the
    hop, so a probe to hop 2 itself with TTL 9 shows 8 at hop 2's Port
    Unreachable."""
    sent = probe(chain, 2, 9)
    got = answer(sent)
    assert got.kind == K.PORT_UNREACH
    check_extension(got, sent, chain.hop(2).props, label_ttl=8)


@pytest.mark.parametrize("chain", [EXT4, EXT6], ids=["v4", "v6"])
def test_hop_without_properties_sends_what_it_sends_today(chain):
    """Hop 5 has none: byte for byte the reply of a chain without any."""
    plain = chaintable.Table([Chain(chain.interface, tuple(Hop() for _ in HOPS))])
    for sent in (probe(chain, 6, 5), probe(chain, 5, 9), probe(chain, 40, 64)):
        assert answer(sent) == chaintable.reply(sent, plain, slack=SLACK)


@pytest.mark.parametrize("chain", [EXT4, EXT6], ids=["v4", "v6"])
def test_extension_within_limit_at_every_quote_length(chain):
    """Every probe size from the smallest to past the limit: the original
    datagram field is whole units, >= 128 octets, the quote shrinks so the
    reply stays within 576 / 1280, the extension is intact at its end."""
    limit = 576 if chain.family == 4 else 1280
    for size in range(0, limit + 40):
        sent = probe(chain, 6, 2, size=size)
        got = answer(sent)
        check_extension(got, sent, chain.hop(2).props, label_ttl=1)
        field, _ = split(got)
        unit = 4 if chain.family == 4 else 8
        room = limit - (28 if chain.family == 4 else 48) - len(split(got)[1])
        assert len(field) == max(128, min(-(-len(sent) // unit) * unit, room // unit * unit))


@pytest.mark.parametrize("chain", [EXT4, EXT6], ids=["v4", "v6"])
def test_extension_needs_room_behind_the_probe(chain):
    """The padding and the structure go behind the probe in the buffer."""
    sent = probe(chain, 6, 1)
    assert chaintable.reply(sent, TABLE, slack=0) == chaintable.Drop.NO_ROOM
    need = 128 + len(split(answer(sent))[1]) - len(sent)
    assert chaintable.reply(sent, TABLE, slack=need - 1) == chaintable.Drop.NO_ROOM
    assert isinstance(chaintable.reply(sent, TABLE, slack=need), bytes)


def test_fragmentation_needed_from_the_narrow_hop_v4():
    """RFC 1191 4: a DF probe larger than hop 3's MTU gets 3/4 from hop 3
    (or its alternative, which has no MTU and lets it pass), Next-Hop MTU
    in bytes 6..7, hop 3's interface extension, the length in byte 5."""
    big = flow_on_branch(EXT4, 3, 0, 64, size=1500 - 28)
    got = answer(big)
    assert got.kind == K.TOO_BIG and source(got) == EXT4.hop_address(3)
    icmp = icmp_of(got)
    assert (icmp[0], icmp[1], struct.unpack("!H", icmp[6:8])[0]) == (3, 4, 1400)
    check_extension(got, big, EXT4.hop(3).props, label_ttl=62)
    assert IP(got)[ICMP].nexthopmtu == 1400


def test_mtu_passes_what_fits_and_what_may_be_fragmented_v4():
    exact = flow_on_branch(EXT4, 3, 0, 64, size=1400 - 28)
    assert answer(exact).kind == K.PORT_UNREACH
    no_df = flow_on_branch(EXT4, 3, 0, 64, size=1500 - 28, df=False)
    assert answer(no_df).kind == K.PORT_UNREACH       # fragmented, reassembled
    other = flow_on_branch(EXT4, 3, 1, 64, size=1500 - 28)
    assert answer(other).kind == K.PORT_UNREACH       # the alternative has no MTU
    # A probe whose TTL runs out at or before the narrow hop never meets it.
    assert answer(flow_on_branch(EXT4, 3, 0, 3, size=1500 - 28)).kind == K.TIME_EXCEEDED


def test_packet_too_big_from_the_narrow_hop_v6():
    """RFC 4443 3.2, RFC 8201: type 2, the MTU in bytes 4..7, no RFC 4884
    length field and so no extension; the quote as usual."""
    big = flow_on_branch(EXT6, 3, 0, 64, size=1281 - 48)
    got = answer(big)
    assert got.kind == K.TOO_BIG and source(got) == EXT6.hop_address(3)
    icmp = icmp_of(got)
    assert (icmp[0], icmp[1], struct.unpack("!I", icmp[4:8])[0]) == (2, 0, 1280)
    assert icmp[8:] == big[:1280 - 48]
    fits = flow_on_branch(EXT6, 3, 0, 64, size=1280 - 48)
    assert answer(fits).kind == K.PORT_UNREACH


@pytest.mark.parametrize("chain, code", [(END4, 0), (END6, 1)], ids=["v4-!N", "v6-!X"])
def test_chain_end_is_an_unreachable_from_the_last_hop(chain, code):
    for sent in (probe(chain, 3, 3), probe(chain, 3, 64), probe(chain, 30, 64)):
        got = answer(sent)
        icmp = icmp_of(got)
        assert got.kind == K.ENDING and source(got) == chain.hop_address(3)
        assert (icmp[0], icmp[1]) == ((3 if chain.family == 4 else 1), code)
        check_extension(got, sent, chain.hop(3).props, label_ttl=ttl_of(sent) - 2)
    # Before the end the path is as usual; probes at its hops get host answers.
    assert answer(probe(chain, 3, 2)).kind == K.TIME_EXCEEDED
    assert answer(probe(chain, 2, 9)).kind == K.PORT_UNREACH


@pytest.mark.parametrize("end, v4, v6", [("!N", 0, 0), ("!H", 1, 3), ("!X", 13, 1)])
def test_every_ending_code(end, v4, v6):
    for prefix, code in (("198.18.7.1/24", v4), ("2001:db8:7::1/64", v6)):
        chain = Chain(parse_prefix(prefix), (Hop(), Hop()), defaults=Props(end=end))
        got = chaintable.reply(probe(chain, 2, 9), chaintable.Table([chain]))
        assert icmp_of(got)[1] == code and got.kind == K.ENDING


@pytest.mark.parametrize("chain", [EXT4, EXT6], ids=["v4", "v6"])
def test_reply_ttl_of_one_hop(chain):
    """Hop 4 sends with 255 and its replies take their own way back, not
    across the 3 hops in front; the others keep the chain's model."""
    assert ttl_of(answer(probe(chain, 6, 4))) == 255
    assert ttl_of(answer(probe(chain, 6, 5))) == 64 - 4


@pytest.mark.parametrize("chain", [EXT4, EXT6], ids=["v4", "v6"])
def test_branches_per_flow(chain):
    """Classic traceroute varies the port per probe and meets both routers
    of hop 3; one flow always meets the same one."""
    seen = {}
    for sport in range(40000, 40064):
        first = source(answer(probe(chain, 6, 3, sport=sport)))
        assert all(source(answer(probe(chain, 6, 3, sport=sport))) == first for _ in range(3))
        seen[first] = seen.get(first, 0) + 1
    assert set(seen) == {chain.hop_address(3), chain.branch_address(3, 1)}
    assert min(seen.values()) > 8, seen


def test_branch_hash_covers_the_ipv6_flow_label():
    """IPv6 routers hash the flow label too (RFC 6437 3): same ports, new
    labels, both routers."""
    seen = set()
    for label in range(64):
        packet = bytes(IPv6(src=SRC6, dst=str(EXT6.host + 6), hlim=3, fl=label)
                       / UDP(sport=40000, dport=33434))
        seen.add(source(answer(packet)))
    assert seen == {EXT6.hop_address(3), EXT6.branch_address(3, 1)}


@pytest.mark.parametrize("chain", [EXT4, EXT6], ids=["v4", "v6"])
def test_alternative_carries_its_own_properties(chain):
    packet = flow_on_branch(chain, 3, 1, 3)
    got = answer(packet)
    assert source(got) == chain.branch_address(3, 1)
    check_extension(got, packet, chain.branch(3, 1).props, label_ttl=1)


@pytest.mark.parametrize("chain", [EXT4, EXT6], ids=["v4", "v6"])
def test_probe_to_an_alternative_address(chain):
    """It is a router of hop 3: Time Exceeded from the hops before it, then
    it answers as a host from its own address."""
    alt = str(chain.branch_address(3, 1))
    assert alt == str(chain.host + 7)
    assert source(answer(probe(chain, 0, 2, dst=alt))) == chain.hop_address(2)
    got = answer(probe(chain, 0, 3, dst=alt))
    assert got.kind == K.PORT_UNREACH and source(got) == chain.branch_address(3, 1)
    echo = (IP(src=SRC4, dst=alt, ttl=64) / ICMP(type=8) if chain.family == 4
            else IPv6(src=SRC6, dst=alt, hlim=64) / ICMPv6EchoRequest())
    got = answer(bytes(echo))
    assert got.kind == K.ECHO_REPLY and source(got) == chain.branch_address(3, 1)
    # Past the alternatives the prefix is as before: the last hop knows.
    assert answer(probe(chain, 8, 64)).kind == K.HOST_UNREACH


def test_chain_without_properties_keeps_no_router_table():
    table = chaintable.Table([Chain(parse_prefix("198.18.9.1/24"), (Hop(), Hop(silent=True)))])
    assert table.ptr.chains[0].hops == chaintable.ffi.NULL
    assert TABLE.ptr.chains[0].hops != chaintable.ffi.NULL


def tshark() -> str:
    found = shutil.which("tshark")
    if found is None:
        pytest.fail("tshark is not installed (apt: tshark)", pytrace=False)
    return found


def test_tshark_dissects_every_extension(tmp_path):
    """An independent dissector over every kind of reply that carries an
    extension: no malformed or bad-checksum mark; labels, ifIndex, address,
    MTU and interface name as configured. Wireshark 4.0 has two limits the
    probes here stay within: it looks for the extension only at octet 128
    of the field when the quoted datagram says it is no longer than that
    (traceroute's probes are 60 octets; the long-probe cases are checked
    by the RFC's layout above), and it reads RFC 5837's name length octet
    as excluding itself, so it shows a name only when the MTU sub-object
    follows it: every named hop here has ifmtu, and traceroute -e, which
    reads the octet as RFC 5837 4.3 does, shows the others."""
    pcap = tmp_path / "ext.pcap"
    writer = PcapWriter(str(pcap), linktype=101)          # raw IP
    sent = [probe(EXT4, 6, 2), probe(EXT6, 6, 2), probe(EXT4, 6, 1), probe(EXT6, 6, 1),
            flow_on_branch(EXT4, 3, 1, 3), probe(END4, 3, 9),
            probe(END6, 3, 9), probe(EXT4, 2, 9), probe(EXT6, 2, 9),
            flow_on_branch(EXT4, 3, 0, 3)]
    for packet in sent:
        writer.write(answer(packet))
    writer.close()
    fields = ["icmp.ext.checksum.status", "icmp.mpls.label", "icmp.mpls.exp", "icmp.mpls.ttl",
              "icmp.int_info.index", "icmp.int_info.ipv4", "icmp.int_info.name",
              "icmp.int_info.mtu", "_ws.malformed", "_ws.expert.severity"]
    done = subprocess.run([tshark(), "-r", str(pcap), "-T", "fields", "-E", "separator=|",
                           "-E", "occurrence=a", "-E", "aggregator=,"]
                          + [a for f in fields for a in ("-e", f)],
                          capture_output=True, text=True, timeout=120, check=True)
    rows = [dict(zip(fields, line.split("|"))) for line in done.stdout.splitlines()]
    assert len(rows) == len(sent)
    for row in rows:
        assert row["icmp.ext.checksum.status"] == "1", row        # Good
        # Notes (the quoted probe's TTL of 1) are fine; warnings and errors not.
        severities = set(row["_ws.expert.severity"].split(",")) - {""}
        assert row["_ws.malformed"] == "" and severities <= {"4194304"}, row
    hop2 = rows[0], rows[1], rows[7], rows[8]
    for row in hop2:
        assert row["icmp.mpls.label"] == "24001,16" and row["icmp.mpls.exp"] == "5,0"
        assert (row["icmp.int_info.index"], row["icmp.int_info.ipv4"]) == ("7", "192.0.2.77")
        assert row["icmp.int_info.mtu"] == "9000"
        # 62 octets of 'é' shown as ASCII replacements, then the 'x'.
        assert row["icmp.int_info.name"] == "\ufffd" * 62 + "x"
    assert rows[0]["icmp.mpls.ttl"] == "1,1" and rows[7]["icmp.mpls.ttl"] == "8,8"
    assert rows[2]["icmp.mpls.label"] == "16001"
    assert rows[4]["icmp.mpls.label"] == "24002"                   # the alternative
    assert rows[9]["icmp.int_info.name"] == "narrow" and rows[9]["icmp.int_info.mtu"] == "1400"
    assert rows[5]["icmp.int_info.name"] == "edge0" and rows[6]["icmp.int_info.name"] == "edge0"


def test_config_cross_checks_that_need_the_chain():
    """One `file:line:` error each: a branch outside the prefix or on a
    hop's address, branches on the destination, an IPv6 MTU under 1280,
    more alternatives at one hop than the table holds."""
    from routechain.errors import UsageError
    from routechain.story import parse_text

    cases = [
        ("198.51.100.1/28", "a\n+ b | address=198.51.100.99\nc\n",
         "s:2: address 198.51.100.99 is outside"),
        ("198.51.100.1/28", "a\n+ b | address=198.51.100.3\nc\n",
         "s:2: address 198.51.100.3 is already"),
        ("198.51.100.1/28", "a\nb\n+ c\n", "s:3: the destination"),
        ("2001:db8::1/64", "a | mtu=1279\nb\n", "s:1: mtu 1279: IPv6"),
        # the 256th '+' line is line 257
        ("198.18.0.1/15", "a\n" + "+ x\n" * 256 + "b\n", "s:257: more than 255"),
    ]
    for prefix, text, error in cases:
        with pytest.raises(UsageError) as raised:
            Chain(parse_prefix(prefix), parse_text(text, "s").hops, where="s")
        assert str(raised.value).startswith(error), raised.value


@pytest.mark.parametrize("chain", [EXT4, EXT6], ids=["v4", "v6"])
def test_where_names_the_router_that_answered(chain):
    """rc_where.router is the router's place in chaintable.routers_of, the order
    the timing table uses: an alternative's replies take its own timing."""
    from routechain.chaintable import ffi, lib, routers_of

    index = {router: n for n, router in enumerate(routers_of(chain))}
    for branch in (0, 1):
        packet = flow_on_branch(chain, 3, branch, 3)
        buf = bytearray(chaintable.HEADROOM + len(packet) + SLACK)
        buf[chaintable.HEADROOM:chaintable.HEADROOM + len(packet)] = packet
        off, where = ffi.new("size_t *"), ffi.new("struct rc_where *")
        n = lib.rc_reply(ffi.from_buffer("uint8_t[]", buf), chaintable.HEADROOM, len(packet),
                         len(buf), TABLE.ptr, off, where)
        assert n > 0 and TABLE.chains[where.chain] == chain
        assert where.router == index[(3, branch)]
        assert source(bytes(buf[off[0]:off[0] + n])) == chain.branch_address(3, branch)
