"""RFC 4884 ICMP extension structures: what a router appends to its Time
Exceeded and Destination Unreachable to say which MPLS labels the probe
carried (RFC 4950) and which interface it came in on (RFC 5837).

Pure: built once per router when the chain table is built, so the reply
core only copies the bytes, fills in the label TTLs (which depend on the
probe) and the checksum. Layout contract with csrc/reply.c: the MPLS object,
when present, is the first object, and every label TTL and the checksum are
left zero here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .hopprops import MAX_IFNAME, Props

VERSION = 2                      # RFC 4884 7
HEADER = struct.Struct("!BBH")   # version << 4, reserved, checksum
OBJECT = struct.Struct("!HBB")   # length (header included), class, C-Type
MPLS_CLASS, MPLS_INCOMING = 1, 1           # RFC 4950 7: the incoming label stack
INTERFACE_CLASS = 2                        # RFC 5837 4.1
ROLE_INCOMING = 0                          # RFC 5837 4.1: incoming IP interface
HAS_IFINDEX, HAS_IPADDR, HAS_NAME, HAS_MTU = 0x08, 0x04, 0x02, 0x01
AFI = {4: 1, 6: 2}                         # IANA address family numbers


@dataclass(frozen=True)
class Extension:
    """One router's extension structure, checksum and label TTLs zero."""

    data: bytes
    labels: int           # label stack entries, first object, whose TTL varies

    @property
    def sum(self) -> int:
        """RFC 1071 sum of data in 16-bit words, not folded."""
        padded = self.data + b"\0" * (len(self.data) % 2)
        return sum(struct.unpack(f"!{len(padded) // 2}H", padded))


def mpls_object(props: Props) -> bytes:
    """RFC 4950 7: the label stack as received, top first; S on the last
    (RFC 3032 2.1); TTL zero, filled in per probe."""
    stack = props.mpls or ()
    entries = b"".join(
        struct.pack("!I", label.label << 12 | label.tc << 9 | (n == len(stack) - 1) << 8)
        for n, label in enumerate(stack))
    return OBJECT.pack(OBJECT.size + len(entries), MPLS_CLASS, MPLS_INCOMING) + entries


def interface_object(props: Props) -> bytes:
    """RFC 5837 4.1: the incoming interface's ifIndex, IP address, name and
    MTU, each present only when set, in that order (4.1 fixes it)."""
    ctype, body = ROLE_INCOMING << 6, b""
    if props.ifindex is not None:
        ctype |= HAS_IFINDEX
        body += struct.pack("!I", props.ifindex)
    if props.ifaddr is not None:
        ctype |= HAS_IPADDR                               # RFC 5837 4.2
        body += struct.pack("!HH", AFI[props.ifaddr.version], 0) + props.ifaddr.packed
    if props.iface is not None:
        name = props.iface.encode("utf-8")[:MAX_IFNAME]
        size = (1 + len(name) + 3) // 4 * 4               # RFC 5837 4.3: whole words
        ctype |= HAS_NAME
        body += bytes([size]) + name.ljust(size - 1, b"\0")
    if props.ifmtu is not None:
        ctype |= HAS_MTU
        body += struct.pack("!I", props.ifmtu)
    return OBJECT.pack(OBJECT.size + len(body), INTERFACE_CLASS, ctype) + body


def has_interface(props: Props) -> bool:
    return any(v is not None for v in (props.iface, props.ifindex, props.ifaddr, props.ifmtu))


def build(props: Props) -> Extension | None:
    """The extension structure a router with these properties appends to
    its errors, or None when it carries nothing."""
    objects = b""
    if props.mpls:
        objects += mpls_object(props)
    if has_interface(props):
        objects += interface_object(props)
    if not objects:
        return None
    return Extension(HEADER.pack(VERSION << 4, 0, 0) + objects, len(props.mpls or ()))


