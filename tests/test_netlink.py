"""The pure parts of routechain.netlink: how routes are told apart, and
which notifications the monitor decodes. The kernel-facing parts are
proven in namespaces (test_desired.py, test_scale.py)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from routechain.config import Route
from routechain.plan import RouteKey
from routechain.netlink import (IFADDRMSG, IFADDRMSG_FIELDS, RTMSG, RTMSG_FIELDS, _addr_msg,
                                _local_address, _split, _WatchedOnly)
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_NEWADDR
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl


@pytest.mark.parametrize("prefix, table, metric, want", [
    ("0.0.0.0/0", None, None, ("0.0.0.0/0", 254, 0)),
    ("198.18.0.0/15", 100, 7, ("198.18.0.0/15", 100, 7)),
    ("::/0", None, None, ("::/0", 254, 1024)),
    # The kernel stores an IPv6 route given metric 0 with 1024.
    ("2001:db8::/48", None, 0, ("2001:db8::/48", 254, 1024)),
    ("2001:db8::/48", 1000, 5, ("2001:db8::/48", 1000, 5)),
])
def test_route_key_is_how_the_kernel_tells_routes_apart(prefix, table, metric, want):
    key = RouteKey.of(Route(ipaddress.ip_network(prefix), table, metric))
    assert (str(key.prefix), key.table, key.metric) == want


def test_monitor_decodes_only_what_can_mean_a_loss():
    """RTM_NEWADDR (10,000 of them when we add 10,000 addresses) is skipped
    undecoded; RTM_DELADDR is decoded with its address."""
    iface = ipaddress.ip_interface("198.18.0.1/24")
    data = b""
    for kind in (RTM_NEWADDR, RTM_DELADDR, RTM_NEWADDR):
        msg = _addr_msg(kind, 0, 7, iface)
        msg["header"]["sequence_number"] = kind
        msg.encode()
        data += msg.data
    got = list(_WatchedOnly().parse(data))
    assert [(m["header"]["type"], m["index"], m.get_attr("IFA_LOCAL")) for m in got] == [
        (RTM_DELADDR, 7, "198.18.0.1")]


@pytest.mark.parametrize("family, attrs, want", [
    (2, [("IFA_ADDRESS", "198.18.0.1"), ("IFA_LOCAL", "198.18.0.1"), ("IFA_LABEL", "rc"),
         ("IFA_FLAGS", 128)], "198.18.0.1"),
    # A peer address: IFA_ADDRESS is the peer, IFA_LOCAL ours.
    (2, [("IFA_ADDRESS", "198.18.0.9"), ("IFA_LOCAL", "198.18.0.1")], "198.18.0.1"),
    (10, [("IFA_ADDRESS", "2001:db8::1"), ("IFA_FLAGS", 0x80),
          ("IFA_CACHEINFO", {"ifa_preferred": 1, "ifa_valid": 1, "cstamp": 1, "tstamp": 1})],
     "2001:db8::1"),
    (10, [("IFA_FLAGS", 0x80)], None),
])
def test_local_address_agrees_with_pyroute2(family, attrs, want):
    """The address read from the fields-only decoding is what pyroute2's
    full decoding says, for each attribute layout the kernel sends."""
    msg = ifaddrmsg()
    msg["header"]["type"] = RTM_NEWADDR
    msg["family"], msg["prefixlen"], msg["index"] = family, 24, 3
    msg["attrs"] = attrs
    msg.encode()
    data = msg.data * 2  # two in a row: offsets past the first must hold
    fields = [m for _, _, m in _split(bytes(data), IFADDRMSG, IFADDRMSG_FIELDS)]
    full = list(MarshalRtnl().parse(data))
    for bare, whole in zip(fields, full, strict=True):
        assert (bare["prefixlen"], bare["index"]) == (whole["prefixlen"], whole["index"])
        got = _local_address(bare)
        assert (socket.inet_ntop(family, got) if got else None) == want
        assert want == (whole.get_attr("IFA_LOCAL") or whole.get_attr("IFA_ADDRESS"))


def test_keeper_event_queue_is_bounded():
    """A burst of notifications between two repair passes (a link flap with
    10,000 addresses, or someone fighting us) queues at most MAX_EVENTS,
    and an "overrun" stands for what was let go: the repair then compares
    everything with the kernel's dump."""
    from routechain import desired
    from routechain.netlink import Event

    keeper = desired.Keeper(link=None)
    for i in range(3 * desired.MAX_EVENTS):
        keeper._note(Event("address", ipaddress.ip_interface((0xc6120000 + i, 24))))
    assert keeper.pending()
    events = list(keeper._events)
    assert len(events) <= desired.MAX_EVENTS
    assert events[0].kind == "overrun"


@pytest.mark.parametrize("family, attrs, table", [
    (2, [("RTA_DST", "198.18.0.0"), ("RTA_OIF", 7), ("RTA_TABLE", 100), ("RTA_PRIORITY", 50)],
     252),
    # The kernel's own shape: the table in rtm_table alone, no metric, a gateway.
    (2, [("RTA_DST", "198.19.0.0"), ("RTA_GATEWAY", "192.0.2.2"), ("RTA_OIF", 3)], 254),
    # A default route: no RTA_DST at all.
    (2, [("RTA_OIF", 3), ("RTA_TABLE", 254)], 254),
    (10, [("RTA_DST", "2001:db8::"), ("RTA_OIF", 9), ("RTA_PRIORITY", 1024),
          ("RTA_TABLE", 4000000000)], 252),
    (10, [("RTA_TABLE", 254), ("RTA_PRIORITY", 256)], 254),
])
def test_route_fields_agree_with_pyroute2(family, attrs, table):
    """The key and device read from the fields-only decoding are what
    pyroute2's full decoding says, for each attribute layout."""
    from pyroute2.netlink.rtnl import RTM_NEWROUTE
    from pyroute2.netlink.rtnl.rtmsg import rtmsg
    from routechain.netlink import _route_fields, _route_key, _route_oif
    msg = rtmsg()
    msg["header"]["type"] = RTM_NEWROUTE
    msg["family"], msg["table"], msg["proto"] = family, table, 151
    msg["dst_len"] = 0 if not any(k == "RTA_DST" for k, _ in attrs) else (24 if family == 2
                                                                           else 64)
    msg["attrs"] = attrs
    msg.encode()
    data = msg.data * 2
    fields = [m for _, _, m in _split(bytes(data), RTMSG, RTMSG_FIELDS)]
    full = list(MarshalRtnl().parse(data))
    assert len(fields) == len(full) == 2
    for bare, whole in zip(fields, full):
        assert _route_fields(bare) == (_route_key(whole), _route_oif(whole))


@pytest.mark.parametrize("interface", ["198.18.0.1/24", "192.0.2.33/27", "2001:db8::1/64",
                                       "2001:db8:1:2::7/126", "198.51.100.9/32"])
@pytest.mark.parametrize("kind, flags", [(RTM_NEWADDR, 0x605), (RTM_DELADDR, 0x5)])
def test_addr_bytes_are_what_pyroute2_encodes(interface, kind, flags):
    """The bulk path's hand-written address messages, byte for byte pyroute2's."""
    from routechain.netlink import _addr_bytes
    msg = _addr_msg(kind, flags, 7, ipaddress.ip_interface(interface))
    msg.encode()
    assert bytes(_addr_bytes(kind, flags, 7, ipaddress.ip_interface(interface))) == \
        bytes(msg.data)


@pytest.mark.parametrize("prefix, table, metric", [
    ("198.18.0.0/24", None, None), ("192.0.2.32/27", 100, 7), ("2001:db8::/64", None, None),
    ("2001:db8:1::/48", 4000000000, 5), ("0.0.0.0/0", 255, 0)])
@pytest.mark.parametrize("kind", ["new", "del"])
def test_route_bytes_are_what_pyroute2_encodes(prefix, table, metric, kind):
    """The bulk path's hand-written route messages, byte for byte pyroute2's."""
    from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWROUTE
    from routechain.netlink import _route_bytes, _route_msg
    key = RouteKey.of(Route(ipaddress.ip_network(prefix), table, metric))
    rtm = RTM_NEWROUTE if kind == "new" else RTM_DELROUTE
    msg = _route_msg(rtm, 0x605, 12, key, proto=151)
    msg.encode()
    assert bytes(_route_bytes(rtm, 0x605, 12, key, proto=151)) == bytes(msg.data)
