"""Addresses, routes and link state over netlink: the only module that
imports pyroute2. Nothing here shells out to `ip`.

Three ways in, each for what it does best:

- `Link` changes the link (up, MTU) through pyroute2's IPRoute, and sends
  address and route changes in bulk: many requests per send() on a plain
  NETLINK_ROUTE socket, the acks collected afterwards and matched by
  sequence number (10,000 addresses take one round trip per WINDOW, not
  one each). Address and route requests, and the dumps of addresses and
  routes, are written and read here with struct (the kernel's ABI; the
  tests hold them to pyroute2's encoding and decoding): pyroute2's generic
  codec was most of the time of a start or reload with 10,000 chains.
  pyroute2 encodes and decodes everything else.
- `Link.state()` dumps what the kernel holds: the addresses of every
  interface and our own routes, for a reconciliation against the kernel
  rather than against memory.
- `Monitor` listens to the kernel's address, route and link notifications
  on its own thread and reports what can mean a loss on our link.

Addresses and routes are always created exclusively (NLM_F_EXCL): what
exists and is not ours is reported, never replaced.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import struct
import threading
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterable, Iterator

from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink import (NETLINK_GET_STRICT_CHK, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
                              NLM_F_EXCL, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, SOL_NETLINK)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (RTM_DELADDR, RTM_DELLINK, RTM_DELNEIGH, RTM_DELROUTE,
                                   RTM_GETADDR, RTM_GETLINK, RTM_GETNEIGH, RTM_GETROUTE,
                                   RTM_NEWADDR, RTM_NEWLINK, RTM_NEWNEIGH, RTM_NEWROUTE,
                                   RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR,
                                   RTMGRP_IPV6_ROUTE, RTMGRP_LINK)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import NTF_PROXY, ndmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from .chain import Interface
from .errors import SetupError
from .settings import ROUTE_PROTOCOL
from .plan import RT_TABLE_MAIN, Proxy, RouteKey, State, reason

IFA_F_NODAD = 0x02
IFA_F_NOPREFIXROUTE = 0x200  # linux/if_addr.h: past ifa_flags' 8 bits, so in IFA_FLAGS
IFF_UP = 0x01
NUD_PERMANENT = 0x80
RTN_UNICAST = 1
RT_TABLE_COMPAT = 252      # rtm_table when the table id needs RTA_TABLE
WINDOW = 256               # requests per send(): their acks fit the receive buffer
RCVBUF = 4 << 20
TIMEOUT = 10.0             # seconds the kernel may take to answer a window


class Link:
    """One interface, by name, and what we configure on it; our routes
    carry `protocol` (rtm_protocol), which tells them from everyone else's."""

    def __init__(self, name: str, protocol: int = ROUTE_PROTOCOL) -> None:
        self.name = name
        self.protocol = protocol
        # Subscribed to nothing: notifications are the Monitor's to read.
        self._ipr = IPRoute(groups=0)
        self._bulk: _Bulk | None = None
        try:
            found = self._ipr.link_lookup(ifname=name)
            self._bulk = _Bulk()
        except NetlinkError as e:
            self.close()
            raise SetupError(f"cannot look up interface {name!r}: {reason(e.code)}") from None
        except OSError as e:
            self.close()
            raise SetupError(f"cannot open a netlink socket: {os.strerror(e.errno)}") from None
        if not found:
            self.close()
            raise SetupError(f"interface {name!r} does not exist")
        self.index = found[0]

    def close(self) -> None:
        self._ipr.close()
        if self._bulk is not None:
            self._bulk.close()

    def set_up(self, mtu: int | None = None, txqueuelen: int | None = None) -> None:
        kwargs: dict = {"state": "up"}
        said = []
        if mtu is not None:
            kwargs["mtu"] = mtu
            said.append(f"MTU {mtu}")
        if txqueuelen is not None:
            kwargs["txqlen"] = txqueuelen
            said.append(f"txqueuelen {txqueuelen}")
        self._call(f"bring up {self.name!r}" + (f" with {', '.join(said)}" if said else ""),
                   "set", index=self.index, fn=self._ipr.link, **kwargs)

    def set_mtu(self, mtu: int) -> None:
        self._call(f"set MTU {mtu} on {self.name!r}", "set", index=self.index,
                   fn=self._ipr.link, mtu=mtu)

    def set_txqueuelen(self, packets: int) -> None:
        self._call(f"set txqueuelen {packets} on {self.name!r}", "set", index=self.index,
                   fn=self._ipr.link, txqlen=packets)

    # --- what the kernel holds

    def state(self, tables: Iterable[int] = (), uplinks: Iterable[str] = ()) -> State:
        """One dump of every address (ours and others'), one of our routes
        per table, the link's flags, and the proxy entries on `uplinks`."""
        names = {}
        up = False
        try:
            for msg in self._ipr.get_links():
                names[msg["index"]] = msg.get_attr("IFLA_IFNAME")
                if msg["index"] == self.index:
                    up = bool(msg["flags"] & IFF_UP)
        except NetlinkError as e:
            raise SetupError(f"cannot list interfaces: {reason(e.code)}") from None
        mine, elsewhere = set(), {}
        for msg in self._bulk.dump_raw(_addr_dump(), IFADDRMSG, IFADDRMSG_FIELDS):
            packed = _local_address(msg)
            if packed is None:
                continue
            if msg["index"] == self.index:
                mine.add((packed, msg["prefixlen"]))
            else:
                elsewhere.setdefault(packed, names.get(msg["index"], f"#{msg['index']}"))
        routes = set()
        for table in set(tables):
            for msg in self._bulk.dump_raw(_route_dump(table, self.index, self.protocol),
                                           RTMSG, RTMSG_FIELDS):
                fields = _route_fields(msg)
                if fields is not None and fields[1] == self.index \
                        and msg["proto"] == self.protocol and fields[0].table == table:
                    routes.add(fields[0])
        ours, foreign = self._proxies(uplinks, names)
        return State(frozenset(mine), elsewhere, frozenset(routes), up, ours, foreign,
                     unready(uplinks))

    def proxies(self, uplinks: Iterable[str]) -> State:
        """The proxy entries on `uplinks` alone (a State with nothing else
        in it): one dump, for a frequent check."""
        try:
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in self._ipr.get_links()}
        except NetlinkError as e:
            raise SetupError(f"cannot list interfaces: {reason(e.code)}") from None
        ours, foreign = self._proxies(uplinks, names)
        return State(frozenset(), {}, frozenset(), True, ours, foreign)

    def _proxies(self, uplinks: Iterable[str], names: dict[int, str]
                 ) -> tuple[frozenset[Proxy], frozenset[Proxy]]:
        """(ours, others') proxy entries on the uplinks: ours carry our protocol."""
        wanted = set(uplinks)
        if not wanted:
            return frozenset(), frozenset()
        ours, foreign = set(), set()
        for msg in self._bulk.dump(_proxy_dump()):
            name = names.get(msg["ifindex"])
            dst = msg.get_attr("NDA_DST")
            if name not in wanted or dst is None:
                continue
            proxy = Proxy(name, ipaddress.ip_address(dst))
            (ours if msg.get_attr("NDA_PROTOCOL") == self.protocol else foreign).add(proxy)
        return frozenset(ours), frozenset(foreign)

    def route_holder(self, key: RouteKey) -> str:
        """How `ip route` would describe the route that holds key, for a
        refusal: 'dev lo proto kernel', or 'a route' when it cannot be found."""
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in self._ipr.get_links()}
        for msg in self._bulk.dump(_route_dump(key.table, None)):
            if _route_key(msg) == key:
                oif = _route_oif(msg)
                gateway = msg.get_attr("RTA_GATEWAY")
                where = f"via {gateway} " if gateway else ""
                where += f"dev {names.get(oif, oif)}" if oif else "(no device)"
                proto = {2: "kernel", 3: "boot", 4: "static"}.get(msg["proto"], msg["proto"])
                return f"{where} proto {proto}"
        return "a route"

    # --- changes, in bulk; each returns {item: errno} for what failed

    def add_addresses(self, interfaces: Iterable[Interface]) -> dict[Interface, int]:
        """The chains' host addresses, without the kernel's prefix route
        (the prefix route is ours: Keeper adds it with our protocol); IPv6
        without DAD, as nobody else is on the link."""
        return self._create(_addr_bytes, RTM_NEWADDR, interfaces)

    def del_addresses(self, interfaces: Iterable[Interface]) -> dict[Interface, int]:
        return self._delete(_addr_bytes, RTM_DELADDR, interfaces)

    def add_routes(self, keys: Iterable[RouteKey]) -> dict[RouteKey, int]:
        return self._create(partial(_route_bytes, proto=self.protocol), RTM_NEWROUTE, keys)

    def del_routes(self, keys: Iterable[RouteKey]) -> dict[RouteKey, int]:
        """Only routes through this link that we made (our protocol) match."""
        return self._delete(partial(_route_bytes, proto=self.protocol), RTM_DELROUTE, keys)

    def add_proxies(self, proxies: Iterable[Proxy]) -> dict[Proxy, int]:
        """Proxy entries with our protocol. The kernel replaces an existing
        entry in place, exclusive or not: plan.py adds none that exists."""
        return self._on_uplinks(RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
                                | NLM_F_EXCL, list(proxies))

    def del_proxies(self, proxies: Iterable[Proxy]) -> dict[Proxy, int]:
        """What is already gone (the entry, or its uplink) is not a failure."""
        failed = self._on_uplinks(RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, list(proxies))
        return {p: e for p, e in failed.items() if e not in _GONE}

    def _on_uplinks(self, kind: int, flags: int, proxies: list[Proxy]) -> dict[Proxy, int]:
        """Each entry sent to its uplink's index; an uplink that does not
        exist fails its entries with ENODEV."""
        index: dict[str, int | None] = {}
        for name in {p.uplink for p in proxies}:
            found = self._ipr.link_lookup(ifname=name)
            index[name] = found[0] if found else None
        sent = [p for p in proxies if index[p.uplink] is not None]
        failed = {p: errno.ENODEV for p in proxies if index[p.uplink] is None}
        codes = self._bulk.request([_proxy_msg(kind, flags, index[p.uplink], p, self.protocol)
                                    for p in sent])
        failed.update({p: code for p, code in zip(sent, codes) if code})
        return failed

    def _create(self, build: Callable, kind: int, items: Iterable) -> dict:
        """Exclusive: what exists already fails (EEXIST), never replaced."""
        return self._send(build, kind, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                          list(items))

    def _delete(self, build: Callable, kind: int, items: Iterable) -> dict:
        """What is already gone is not a failure."""
        failed = self._send(build, kind, NLM_F_REQUEST | NLM_F_ACK, list(items))
        return {item: e for item, e in failed.items() if e not in _GONE}

    def _send(self, build: Callable, kind: int, flags: int, items: list) -> dict:
        codes = self._bulk.request([build(kind, flags, self.index, item) for item in items])
        return {item: code for item, code in zip(items, codes) if code}

    def _call(self, what: str, command: str, fn, **kwargs) -> None:
        try:
            fn(command, **kwargs)
        except NetlinkError as e:
            raise SetupError(f"cannot {what}: {reason(e.code)}") from None

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def unready(uplinks: Iterable[str]) -> frozenset[tuple[str, int, str]]:
    """(uplink, version, sysctl) for each setting of an uplink that makes
    the kernel ignore its proxy entries: IPv6 answers a solicitation for
    one only with forwarding and proxy_ndp (the uplink's or `all`) on
    (ndisc_recv_ns), IPv4 an ARP request only with forwarding on
    (arp_process). Read from /proc/sys (read-only under systemd's
    ProtectKernelTunables=); one that cannot be read is not reported."""
    def off(*path: str) -> bool:
        try:
            with open(os.path.join("/proc/sys/net", *path)) as f:
                return f.read().strip() == "0"
        except OSError:
            return False

    found = set()
    for name in uplinks:
        if off("ipv6", "conf", name, "forwarding"):
            found.add((name, 6, f"net.ipv6.conf.{name}.forwarding"))
        if off("ipv6", "conf", name, "proxy_ndp") and off("ipv6", "conf", "all", "proxy_ndp"):
            found.add((name, 6, f"net.ipv6.conf.{name}.proxy_ndp"))
        if off("ipv4", "conf", name, "forwarding"):
            found.add((name, 4, f"net.ipv4.conf.{name}.forwarding"))
    return frozenset(found)


_GONE = {errno.ENODEV, errno.EADDRNOTAVAIL, errno.ESRCH, errno.ENOENT}


# --- messages ---------------------------------------------------------------

def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _addr_msg(kind: int, flags: int, index: int, interface: Interface) -> ifaddrmsg:
    """A chain's address request as pyroute2 builds it: the reference that
    test_netlink holds _addr_bytes (what is sent) to, byte for byte."""
    msg = ifaddrmsg()
    msg["header"]["type"] = kind
    msg["header"]["flags"] = flags
    msg["family"] = _family(interface.version)
    msg["prefixlen"] = interface.network.prefixlen
    flags = IFA_F_NOPREFIXROUTE | (IFA_F_NODAD if interface.version == 6 else 0)
    msg["flags"] = flags & 0xff
    msg["scope"] = 0
    msg["index"] = index
    # The kernel takes IFA_LOCAL for IFA_ADDRESS too when it comes alone,
    # and IFA_FLAGS over ifa_flags.
    msg["attrs"] = [("IFA_LOCAL", str(interface.ip)), ("IFA_FLAGS", flags)]
    return msg


# What pyroute2 would encode for _addr_msg and _route_msg, written with
# struct: its generic encoder spent some 0.3 ms a message, most of a start
# with 10,000 chains (an address and a route each). The layouts are the
# kernel's ABI (linux/netlink.h, if_addr.h, rtnetlink.h); the sequence
# number is set by _Bulk.request; test_netlink holds the bytes equal to
# pyroute2's.
NLMSGHDR = struct.Struct("=IHHII")     # nlmsg_len, type, flags, seq, pid
IFADDRMSG = struct.Struct("=BBBBI")    # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")    # family, dst_len, src_len, tos, table, protocol,
#                                        scope, type, flags
IFA_FLAGS = 8


def _attr(kind: int, value: bytes) -> bytes:
    """One struct nlattr, padded to 4 octets (NLA_ALIGN)."""
    size = NLA_HEADER.size + len(value)
    return NLA_HEADER.pack(size, kind) + value + bytes(-size & 3)


def _message(kind: int, flags: int, body: bytes) -> bytearray:
    return bytearray(NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags, 0, 0) + body)


def _addr_bytes(kind: int, flags: int, index: int, interface: Interface) -> bytearray:
    """_addr_msg, encoded."""
    version = interface.version
    ifa_flags = IFA_F_NOPREFIXROUTE | (IFA_F_NODAD if version == 6 else 0)
    return _message(kind, flags, IFADDRMSG.pack(_family(version), interface.network.prefixlen,
                                                ifa_flags & 0xff, 0, index)
                    + _attr(IFA_LOCAL, interface.ip.packed)
                    + _attr(IFA_FLAGS, U32.pack(ifa_flags)))


def _route_bytes(kind: int, flags: int, index: int, key: RouteKey, proto: int) -> bytearray:
    """_route_msg, encoded."""
    prefix = key.prefix
    return _message(kind, flags, RTMSG.pack(_family(prefix.version), prefix.prefixlen, 0, 0,
                                            key.table if key.table < 256 else RT_TABLE_COMPAT,
                                            proto, 0, RTN_UNICAST, 0)
                    + _attr(RTA_DST, prefix.network_address.packed)
                    + _attr(RTA_OIF, U32.pack(index)) + _attr(RTA_TABLE, U32.pack(key.table))
                    + _attr(RTA_PRIORITY, U32.pack(key.metric)))


def _addr_dump() -> ifaddrmsg:
    msg = ifaddrmsg()
    msg["header"]["type"] = RTM_GETADDR
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["family"] = socket.AF_UNSPEC
    return msg


def _route_msg(kind: int, flags: int, index: int, key: RouteKey, proto: int) -> rtmsg:
    """A route request as pyroute2 builds it: the reference for _route_bytes."""
    msg = rtmsg()
    msg["header"]["type"] = kind
    msg["header"]["flags"] = flags
    msg["family"] = _family(key.prefix.version)
    msg["dst_len"] = key.prefix.prefixlen
    msg["table"] = key.table if key.table < 256 else RT_TABLE_COMPAT
    msg["proto"] = proto
    msg["scope"] = 0
    msg["type"] = RTN_UNICAST
    msg["attrs"] = [("RTA_DST", str(key.prefix.network_address)), ("RTA_OIF", index),
                    ("RTA_TABLE", key.table), ("RTA_PRIORITY", key.metric)]
    return msg


def _proxy_msg(kind: int, flags: int, index: int, proxy: Proxy, proto: int) -> ndmsg:
    msg = ndmsg()
    msg["header"]["type"] = kind
    msg["header"]["flags"] = flags
    msg["family"] = _family(proxy.address.version)
    msg["ifindex"] = index
    msg["state"] = NUD_PERMANENT
    msg["flags"] = NTF_PROXY
    msg["attrs"] = [("NDA_DST", str(proxy.address)), ("NDA_PROTOCOL", proto)]
    return msg


def _proxy_dump() -> ndmsg:
    """Every proxy entry (NTF_PROXY asks for the proxy table alone), both families."""
    msg = ndmsg()
    msg["header"]["type"] = RTM_GETNEIGH
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["family"] = socket.AF_UNSPEC
    msg["flags"] = NTF_PROXY
    return msg


def _route_dump(table: int, oif: int | None, proto: int = 0) -> rtmsg:
    """A dump the kernel filters by table (and device, and protocol) under
    strict checking: not the kernel's own route for each of 10,000 chain
    addresses when we look for ours in the main table."""
    msg = rtmsg()
    msg["header"]["type"] = RTM_GETROUTE
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["family"] = socket.AF_UNSPEC
    msg["proto"] = proto
    msg["table"] = table if table < 256 else RT_TABLE_COMPAT
    msg["attrs"] = [("RTA_TABLE", table)] + ([("RTA_OIF", oif)] if oif else [])
    return msg


IFA_ADDRESS, IFA_LOCAL = 1, 2   # linux/if_addr.h
RTA_DST, RTA_OIF, RTA_PRIORITY, RTA_TABLE = 1, 4, 6, 15   # linux/rtnetlink.h
NLA_HEADER = struct.Struct("=HH")  # struct nlattr: nla_len, nla_type
U32 = struct.Struct("=I")
IFADDRMSG_END = 16 + 8          # struct nlmsghdr, struct ifaddrmsg
RTMSG_END = 16 + 12             # struct nlmsghdr, struct rtmsg


I32 = struct.Struct("=i")        # struct nlmsgerr's error
IFADDRMSG_FIELDS = ("family", "prefixlen", "flags", "scope", "index")
RTMSG_FIELDS = ("family", "dst_len", "src_len", "tos", "table", "proto", "scope", "type",
                "flags")


class _Raw:
    """One message of a dump as _Bulk.dump_raw gives it: the buffer, where
    the message starts, and its fixed fields by pyroute2's names (what
    _local_address and _route_fields read)."""

    __slots__ = ("data", "offset", "_fields")

    def __init__(self, data: bytes, offset: int, fields: dict) -> None:
        self.data, self.offset, self._fields = data, offset, fields

    def __getitem__(self, name: str):
        return self._fields[name]


def _split(data: bytes, layout: struct.Struct, names: tuple[str, ...]
           ) -> Iterator[tuple[int, int, _Raw]]:
    """(sequence number, type, message) of each netlink message in a
    buffer, its fixed part after the header read as `layout` (`names`)
    when it is long enough for it: linux/netlink.h, NLMSG_ALIGN."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, _, seq, _ = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            return
        fields: dict = {"header": {"length": length, "type": kind}}
        if length >= NLMSGHDR.size + layout.size:
            fields.update(zip(names, layout.unpack_from(data, offset + NLMSGHDR.size)))
        yield seq, kind, _Raw(data, offset, fields)
        offset += (length + 3) & ~3


def _attributes(msg, start: int, kinds: set[int]) -> dict[int, bytes]:
    """The raw values of the attributes `kinds` of a message (_Raw):
    they follow its fixed part (`start` octets), each a struct nlattr
    header and a value, padded to 4 bytes (linux/netlink.h, NLA_ALIGN)."""
    data, offset = msg.data, msg.offset + start
    end = msg.offset + msg["header"]["length"]
    found = {}
    while offset + NLA_HEADER.size <= end:
        length, kind = NLA_HEADER.unpack_from(data, offset)
        if length < NLA_HEADER.size or offset + length > end:
            break
        if kind in kinds:
            found[kind] = bytes(data[offset + NLA_HEADER.size:offset + length])
        offset += (length + 3) & ~3
    return found


def _local_address(msg) -> bytes | None:
    """The packed IFA_LOCAL (else IFA_ADDRESS) of an address message (_Raw)."""
    found = _attributes(msg, IFADDRMSG_END, {IFA_ADDRESS, IFA_LOCAL})
    return found.get(IFA_LOCAL, found.get(IFA_ADDRESS))


def _route_fields(msg) -> tuple[RouteKey, int | None] | None:
    """The RouteKey and RTA_OIF of a route message (_Raw), as _route_key
    and _route_oif read them from a fully decoded one."""
    family = msg["family"]
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    found = _attributes(msg, RTMSG_END, {RTA_DST, RTA_OIF, RTA_PRIORITY, RTA_TABLE})
    network = ipaddress.IPv4Network if family == socket.AF_INET else ipaddress.IPv6Network
    dst = int.from_bytes(found.get(RTA_DST, b""), "big")
    table = U32.unpack(found[RTA_TABLE])[0] if RTA_TABLE in found else msg["table"]
    metric = U32.unpack(found[RTA_PRIORITY])[0] if RTA_PRIORITY in found else 0
    oif = U32.unpack(found[RTA_OIF])[0] if RTA_OIF in found else None
    return RouteKey(network((dst, msg["dst_len"])), table or msg["table"], metric), oif


def _interface(msg) -> Interface | None:
    address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    if address is None:
        return None
    return ipaddress.ip_interface(f"{address}/{msg['prefixlen']}")


def _route_key(msg) -> RouteKey | None:
    if msg["family"] not in (socket.AF_INET, socket.AF_INET6):
        return None
    dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if msg["family"] == socket.AF_INET else "::")
    table = msg.get_attr("RTA_TABLE") or msg["table"]
    return RouteKey(ipaddress.ip_network(f"{dst}/{msg['dst_len']}"), table,
                    msg.get_attr("RTA_PRIORITY") or 0)


def _route_oif(msg) -> int | None:
    return msg.get_attr("RTA_OIF")


class _Bulk:
    """A NETLINK_ROUTE socket for requests in bulk and dumps: not subscribed
    to any notification, so only answers to our own requests arrive."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)
        try:
            _grow_receive_buffer(self._sock)
            try:
                # Dumps filtered by the kernel (by table, device, protocol);
                # without it (Linux < 4.20) they come whole and are filtered here.
                self._sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            except OSError:
                pass
            self._sock.bind((0, 0))
            self._sock.settimeout(TIMEOUT)
        except OSError:
            self._sock.close()
            raise
        self._marshal = MarshalRtnl()
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def request(self, msgs: list) -> list[int]:
        """Send msgs (pyroute2 messages, or a bytearray encoded here)
        WINDOW at a time, each window in one send(); the errno
        the kernel answered each with (0: done). Only a window's last
        request asks for an ack: the kernel answers the others only when
        they fail, and handles a send's requests in order, so once the last
        one is answered every error before it has arrived."""
        codes: list[int] = []
        for start in range(0, len(msgs), WINDOW):
            window = msgs[start:start + WINDOW]
            first = self._seq + 1
            data = bytearray()
            for i, msg in enumerate(window):
                self._seq += 1
                last = i == len(window) - 1
                if isinstance(msg, bytearray):  # _addr_bytes, _route_bytes
                    length, kind, flags, _, pid = NLMSGHDR.unpack_from(msg)
                    NLMSGHDR.pack_into(msg, 0, length, kind,
                                       flags if last else flags & ~NLM_F_ACK, self._seq, pid)
                    data += msg
                    continue
                msg["header"]["sequence_number"] = self._seq
                if not last:
                    msg["header"]["flags"] &= ~NLM_F_ACK
                msg.encode()
                data += msg.data
            errors: dict[int, int] = {}
            self._send(data)
            while self._seq not in errors:
                for msg in self._receive():
                    seq = msg["header"]["sequence_number"]
                    if msg["header"]["type"] == NLMSG_ERROR and first <= seq <= self._seq:
                        errors[seq] = abs(msg["error"])
            codes.extend(errors.get(first + i, 0) for i in range(len(window)))
        return codes

    def dump(self, msg, marshal: MarshalRtnl | None = None) -> Iterator:
        """Every message of a dump, decoded by marshal (default: in full);
        SetupError if the kernel refuses it."""
        self._seq += 1
        seq = msg["header"]["sequence_number"] = self._seq
        msg.encode()
        self._send(msg.data)
        while True:
            for answer in self._receive(marshal or self._marshal):
                if answer["header"]["sequence_number"] != seq:
                    continue
                kind = answer["header"]["type"]
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    if answer["error"]:
                        raise SetupError(f"netlink dump refused: {reason(abs(answer['error']))}")
                    return
                yield answer

    def dump_raw(self, msg, layout: struct.Struct, names: tuple[str, ...]) -> Iterator["_Raw"]:
        """Every message of a dump, undecoded past its fixed part (`layout`,
        its fields called `names`): a dump of 10,000 addresses or routes
        decoded by pyroute2, even as far as the fixed fields, cost a reload
        a quarter of a second. SetupError if the kernel refuses it."""
        self._seq += 1
        seq = msg["header"]["sequence_number"] = self._seq
        msg.encode()
        self._send(msg.data)
        while True:
            for answer_seq, kind, msg in _split(self._receive_bytes(), layout, names):
                if answer_seq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = I32.unpack_from(msg.data, msg.offset + NLMSGHDR.size)[0]
                    if code:
                        raise SetupError(f"netlink dump refused: {reason(abs(code))}")
                    return
                yield msg

    def _receive_bytes(self) -> bytes:
        try:
            return self._sock.recv(RCVBUF)
        except socket.timeout:
            raise SetupError(f"netlink: no answer from the kernel within {TIMEOUT:.0f} s") \
                from None
        except OSError as e:
            raise SetupError(f"netlink: {os.strerror(e.errno)}") from None

    def _send(self, data: bytes) -> None:
        try:
            self._sock.send(data)
        except OSError as e:
            raise SetupError(f"netlink: {os.strerror(e.errno)}") from None

    def _receive(self, marshal: MarshalRtnl | None = None) -> list:
        try:
            data = self._sock.recv(RCVBUF)
        except socket.timeout:
            raise SetupError(f"netlink: no answer from the kernel within {TIMEOUT:.0f} s") \
                from None
        except OSError as e:
            raise SetupError(f"netlink: {os.strerror(e.errno)}") from None
        return list((marshal or self._marshal).parse(data))


def _grow_receive_buffer(sock: socket.socket) -> None:
    """SO_RCVBUFFORCE passes net.core.rmem_max with CAP_NET_ADMIN; without
    it the plain option takes what the limit allows."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)


# --- watching ---------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """Something the kernel reported on our link that can mean a loss:
    kind is "address" (item: the Interface removed), "route" (item: the
    RouteKey removed), "down" (the link lost IFF_UP), "gone" (the link was
    deleted), "overrun" (notifications were lost: anything may be), and,
    made by the keeper itself, "retry" (what could not be added before is
    due to be tried again) or "proxies" (time to look at the proxy
    entries, whose changes the kernel does not report)."""

    kind: str
    item: Interface | RouteKey | None = None


_WATCHED = {RTM_DELADDR, RTM_DELROUTE, RTM_NEWLINK, RTM_DELLINK}
_GROUPS = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE
           | RTMGRP_IPV6_ROUTE)


class _WatchedOnly(MarshalRtnl):
    """Decodes only the notifications that can mean a loss; the many
    RTM_NEWADDR and RTM_NEWROUTE that our own changes cause are skipped
    without decoding."""

    def get_parser(self, key, flags, sequence_number):
        if key not in _WATCHED:
            return lambda data, offset, length: None
        return super().get_parser(key, flags, sequence_number)


class Monitor:
    """The kernel's address, route and link notifications, read on a
    thread of its own; `report(event)` is called there for each Event on
    the link with index `index` (it must be quick and thread-safe)."""

    def __init__(self, index: int, report: Callable[[Event], None],
                 protocol: int = ROUTE_PROTOCOL) -> None:
        self._index = index
        self._protocol = protocol
        self._report = report
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)
        try:
            _grow_receive_buffer(self._sock)
            self._sock.bind((0, _GROUPS))
        except OSError as e:
            self._sock.close()
            raise SetupError(f"cannot watch netlink: {os.strerror(e.errno)}") from None
        self._sock.setblocking(False)
        self._marshal = _WatchedOnly()
        self._stop = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.failure: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="netlink-monitor")
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        os.eventfd_write(self._stop, 1)
        self._thread.join()
        os.close(self._stop)
        self._sock.close()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        poller.register(self._stop, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._stop in ready:
                return
            while True:
                try:
                    data = self._sock.recv(RCVBUF)
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno == errno.ENOBUFS:  # the kernel dropped notifications
                        self._report(Event("overrun"))
                        continue
                    self.failure = os.strerror(e.errno)
                    return
                try:
                    events = [self._event(msg) for msg in self._marshal.parse(data)]
                except Exception:  # undecodable: whatever it said may be lost
                    events = [Event("overrun")]
                for event in events:
                    if event is not None:
                        self._report(event)

    def _event(self, msg) -> Event | None:
        kind = msg["header"]["type"]
        if kind == RTM_DELADDR and msg["index"] == self._index:
            iface = _interface(msg)
            return Event("address", iface) if iface is not None else None
        if kind == RTM_DELROUTE and _route_oif(msg) == self._index \
                and msg["proto"] == self._protocol:
            key = _route_key(msg)
            return Event("route", key) if key is not None else None
        if kind == RTM_NEWLINK and msg["index"] == self._index and not msg["flags"] & IFF_UP:
            return Event("down")
        if kind == RTM_DELLINK and msg["index"] == self._index:
            return Event("gone")
        return None


# --- Throwaway namespaces, for the demo. -----------------------------------

class Namespaces:
    """Named network namespaces joined by veth pairs; close() removes them
    (and with them every link, address and route inside)."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def create(self, name: str) -> str:
        try:
            netns.create(name)
        except OSError as e:
            raise SetupError(f"cannot create network namespace {name!r}: "
                             f"{os.strerror(e.errno or 0)}") from None
        self.made.append(name)
        with NetNS(name) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        return name

    def veth(self, a: str, a_name: str, b: str, b_name: str) -> None:
        with NetNS(a) as ns:
            ns.link("add", ifname=a_name, kind="veth", peer={"ifname": b_name, "net_ns_fd": b})

    def configure(self, ns_name: str, ifname: str, addresses: list[Interface],
                  gateways: list[str] = ()) -> None:
        with NetNS(ns_name) as ns:
            index = ns.link_lookup(ifname=ifname)[0]
            for iface in addresses:
                ns.addr("add", index=index, address=str(iface.ip),
                        prefixlen=iface.network.prefixlen,
                        flags=IFA_F_NODAD if iface.version == 6 else 0)
            ns.link("set", index=index, state="up")
            for gateway in gateways:
                default = "::/0" if ":" in gateway else "0.0.0.0/0"
                ns.route("add", dst=default, gateway=gateway)

    def mac(self, ns_name: str, ifname: str) -> str:
        with NetNS(ns_name) as ns:
            return ns.get_links(ns.link_lookup(ifname=ifname)[0])[0].get_attr("IFLA_ADDRESS")

    def neighbour(self, ns_name: str, ifname: str, address: str, mac: str) -> None:
        """A permanent neighbour entry: the first packet need not wait for
        address resolution."""
        with NetNS(ns_name) as ns:
            ns.neigh("replace", dst=address, lladdr=mac, state=NUD_PERMANENT,
                     ifindex=ns.link_lookup(ifname=ifname)[0])

    def sysctl(self, ns_name: str, key: str, value: str) -> None:
        """Write /proc/sys/KEY as seen from inside the namespace."""
        netns.pushns(ns_name)
        try:
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)
        finally:
            netns.popns()

    def close(self) -> None:
        while self.made:
            try:
                netns.remove(self.made.pop())
            except OSError:
                pass

    def __enter__(self) -> "Namespaces":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def enter_namespace(name: str) -> None:
    """Move the calling process into a namespace (for a child's preexec_fn)."""
    netns.setns(name)


# --- Reading the host, for `route-chain doctor` ------------------------------

RTM_F_FIB_MATCH = 0x2000   # answer a route lookup with the route that matched
RT_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
            6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw"}


@dataclass(frozen=True)
class Lookup:
    """Where the kernel sends a packet for `address` (`ip route get`):
    the route that matched (prefix, type, device, gateway, protocol), or
    `error` when there is none."""

    address: str
    prefix: str | None = None
    kind: str = "unicast"
    device: str | None = None
    gateway: str | None = None
    proto: int = 0
    error: str | None = None


class Reader:
    """Read-only questions about the host's links, addresses, routes and
    proxy neighbour entries; needs no privilege."""

    def __init__(self) -> None:
        try:
            self._bulk = _Bulk()
        except OSError as e:
            raise SetupError(f"cannot open a netlink socket: {os.strerror(e.errno)}") from None
        self._names: dict[int, str] | None = None

    def close(self) -> None:
        self._bulk.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def links(self) -> dict[int, str]:
        """ifindex -> name."""
        if self._names is None:
            msg = ifinfmsg()
            msg["header"]["type"] = RTM_GETLINK
            msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
            self._names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in self._bulk.dump(msg)}
        return self._names

    def addresses(self) -> list[tuple[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]]:
        """(interface name, address/prefix length) of every address."""
        names = self.links()
        found = []
        for msg in self._bulk.dump(_addr_dump()):
            iface = _interface(msg)
            if iface is not None:
                found.append((names.get(msg["index"], f"#{msg['index']}"), iface))
        return found

    def default_routes(self) -> list[tuple[int, str | None, int]]:
        """(IP version, device, protocol) of each default route in the main table."""
        names = self.links()
        found = []
        for msg in self._bulk.dump(_route_dump(RT_TABLE_MAIN, None)):
            key = _route_key(msg)
            if key is None or key.prefix.prefixlen or key.table != RT_TABLE_MAIN \
                    or msg["type"] != RTN_UNICAST:
                continue
            oifs = [_route_oif(msg)] + [hop["oif"] for hop in msg.get_attr("RTA_MULTIPATH") or ()]
            for oif in filter(None, oifs):
                found.append((key.prefix.version, names.get(oif), msg["proto"]))
        return found

    def lookup(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Lookup:
        """The route the kernel picks for a packet to `address` from this host."""
        msg = rtmsg()
        msg["header"]["type"] = RTM_GETROUTE
        msg["header"]["flags"] = NLM_F_REQUEST
        msg["family"] = _family(address.version)
        msg["dst_len"] = address.max_prefixlen
        msg["flags"] = RTM_F_FIB_MATCH
        msg["attrs"] = [("RTA_DST", str(address))]
        try:
            answer = self._ask(msg)
        except _Refused as e:
            # A blackhole, unreachable or prohibit route is answered with
            # its errno (even with RTM_F_FIB_MATCH): find it in a dump.
            kind = _REFUSAL_TYPES.get(e.code)
            prefix = self._covering(address, kind) if kind else None
            if prefix is None:
                return Lookup(str(address), error=reason(e.code))
            return Lookup(str(address), prefix, kind)
        dst = answer.get_attr("RTA_DST") or ("0.0.0.0" if address.version == 4 else "::")
        oif = _route_oif(answer)
        return Lookup(str(address), f"{dst}/{answer['dst_len']}",
                      RT_TYPES.get(answer["type"], str(answer["type"])),
                      self.links().get(oif) if oif else None,
                      answer.get_attr("RTA_GATEWAY"), answer["proto"])

    def _covering(self, address, kind: str) -> str | None:
        """The longest route of type `kind`, in any table, holding address."""
        best = None
        for msg in self._bulk.dump(_route_dump(0, None)):
            key = _route_key(msg)
            if key is None or RT_TYPES.get(msg["type"]) != kind \
                    or key.prefix.version != address.version or address not in key.prefix:
                continue
            if best is None or key.prefix.prefixlen > best.prefixlen:
                best = key.prefix
        return str(best) if best is not None else None

    def proxy_entries(self) -> set[tuple[str, str]]:
        """(interface name, address) of every proxy neighbour entry
        (`ip neigh show proxy`: NTF_PROXY), IPv4 and IPv6."""
        names = self.links()
        msg = ndmsg()
        msg["header"]["type"] = RTM_GETNEIGH
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        msg["family"] = socket.AF_UNSPEC
        msg["flags"] = NTF_PROXY
        found = set()
        for answer in self._bulk.dump(msg):
            dst = answer.get_attr("NDA_DST")
            if dst is not None and answer["flags"] & NTF_PROXY:
                found.add((names.get(answer["ifindex"], f"#{answer['ifindex']}"),
                           str(ipaddress.ip_address(dst))))
        return found

    def _ask(self, msg):
        """One request, one answer (not a dump)."""
        bulk = self._bulk
        bulk._seq += 1
        seq = msg["header"]["sequence_number"] = bulk._seq
        msg.encode()
        bulk._send(msg.data)
        while True:
            for answer in bulk._receive():
                if answer["header"]["sequence_number"] != seq:
                    continue
                if answer["header"]["type"] == NLMSG_ERROR:
                    raise _Refused(abs(answer["error"] or 0) or errno.EINVAL)
                return answer


_REFUSAL_TYPES = {errno.EINVAL: "blackhole", errno.EHOSTUNREACH: "unreachable",
                  errno.EACCES: "prohibit"}


class _Refused(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code
