"""The built-in authoritative DNS server: the records of zone.py, over UDP and
TCP, on one thread of its own with a selector loop, off the packet path.

What it answers (RFC 1034 4.3.2 for an authoritative-only server):

- a name in one of its zones (the longest origin that holds it): the RRset
  asked for with AA set; a CNAME is followed inside the same zone, as Knot
  and NSD do; an existing name without that type is NODATA and a missing
  name NXDOMAIN, both with the zone's SOA in the authority section, its TTL
  the smaller of the SOA's TTL and MINIMUM (RFC 2308 3); a name with
  nothing of its own but names below it exists (RFC 8020);
- a name outside its zones: REFUSED, without AA, with the extended error
  Not Authoritative (RFC 8914) when the query had EDNS;
- RD and CD copied, RA never set: it does not recurse;
- EDNS (RFC 6891): an OPT in the answer only when the query had one; the
  answer fits the requester's UDP payload size, at most PAYLOAD_MAX
  (the DNS Flag Day 2020 value); version > 0 is BADVERS;
- over UDP an answer too large goes out with TC set and empty sections, so
  the client asks again over TCP;
- TCP (RFC 7766): 2-byte length framing, several queries per connection,
  answered in order; idle connections close after TCP_IDLE seconds, at most
  TCP_MAX_CONNECTIONS at once;
- a message too short for a header, or a response, is dropped; a query that
  cannot be parsed gets FORMERR, other opcodes NOTIMP, zone transfers
  REFUSED. Every drop and error is counted, never raised.

The sockets are bound once in `start()`, so a later privilege drop does not
matter; `reload()` swaps the zones in one reference assignment, so a query is
answered from either the old zones or the new ones, and none is lost.
"""

from __future__ import annotations

import errno
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterable

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from .errors import SetupError
from .zone import Zone

PAYLOAD_MAX = 1232
PAYLOAD_MIN = 512  # RFC 6891 6.2.5: a smaller advertised size counts as 512.
TCP_IDLE = 10.0
TCP_MAX_CONNECTIONS = 64
CNAME_CHAIN_MAX = 8
_HEADER = 12
_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)

COUNTER_NAMES = (
    "udp_queries", "tcp_queries", "tcp_connections", "tcp_refused_connections",
    "noerror", "nodata", "nxdomain", "refused", "formerr", "notimp", "badvers",
    "truncated", "dropped_malformed", "dropped_responses", "internal_errors",
)


class Index:
    """The zones arranged for lookups: per zone, each owner's RRsets by type,
    and every name that exists (owners and the empty non-terminals above
    them)."""

    def __init__(self, zones: Iterable[Zone]) -> None:
        self.zones: dict[dns.name.Name, tuple[Zone, dict, set]] = {}
        for zone in zones:
            nodes: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
            names: set[dns.name.Name] = set()
            for rrset in zone.rrsets:
                nodes.setdefault(rrset.name, {})[rrset.rdtype] = rrset
                name = rrset.name
                while name != zone.origin and name not in names:
                    names.add(name)
                    name = name.parent()
            names.add(zone.origin)
            self.zones[zone.origin] = (zone, nodes, names)

    def zone_for(self, qname: dns.name.Name):
        name = qname
        while True:
            if name in self.zones:
                return self.zones[name]
            if name == dns.name.root:
                return None
            name = name.parent()


class Server:
    """Serve `zones` on `listen` [(address, port), ...] over UDP and TCP.

    start() binds every socket and starts the thread (SetupError naming the
    address if a bind fails); reload(zones) swaps the zones atomically;
    stop() closes everything and returns within a second or so. `counters`
    is a snapshot dict of COUNTER_NAMES; `addresses` the bound (host, port)
    pairs (useful with port 0).
    """

    def __init__(self, zones: Iterable[Zone], listen: Iterable[tuple[str, int]]) -> None:
        self._index = Index(zones)
        self._listen = tuple(listen)
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._selector: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._conns: dict[socket.socket, _Conn] = {}
        self.addresses: list[tuple[str, int]] = []

    # life cycle

    def start(self) -> None:
        try:
            for host, port in self._listen:
                udp = self._bind(socket.SOCK_DGRAM, host, port)
                port = udp.getsockname()[1]
                tcp = self._bind(socket.SOCK_STREAM, host, port)
                tcp.listen(64)
                self.addresses.append((host, port))
        except BaseException:
            self._close_all()
            raise
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        for sock in self._sockets:
            sock.setblocking(False)
            kind = "udp" if sock.type == socket.SOCK_DGRAM else "listen"
            self._selector.register(sock, selectors.EVENT_READ, kind)
        self._thread = threading.Thread(target=self._loop, name="route-chain-dns", daemon=True)
        self._thread.start()

    def reload(self, zones: Iterable[Zone]) -> None:
        """Serve `zones` from now on; the sockets stay as they are."""
        self._index = Index(zones)

    def alive(self) -> bool:
        """True while the serving thread runs (for the watchdog)."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stopping.set()
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._close_all()

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def _bind(self, kind: int, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
        sock = socket.socket(family, kind)
        self._sockets.append(sock)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        try:
            try:
                sock.bind((host, port))
            except OSError as e:
                # A new IPv6 address is tentative until DAD ends: bind anyway.
                if e.errno != errno.EADDRNOTAVAIL or family != socket.AF_INET6:
                    raise
                sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
                sock.bind((host, port))
        except OSError as e:
            raise SetupError(f"DNS: cannot listen on {shown} ({proto}): {e.strerror}") from None
        return sock

    def _close_all(self) -> None:
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()
        for sock in self._sockets + [s for s in (self._wake_r, self._wake_w) if s]:
            try:
                sock.close()
            except OSError:
                pass
        self._sockets = []
        if self._selector is not None:
            self._selector.close()
            self._selector = None

    # the loop

    def _loop(self) -> None:
        sel = self._selector
        while not self._stopping.is_set():
            for key, events in sel.select(timeout=1.0):
                if key.data == "wake":
                    return
                try:
                    if key.data == "udp":
                        self._on_udp(key.fileobj)
                    elif key.data == "listen":
                        self._on_accept(key.fileobj)
                    else:
                        self._on_tcp(key.data, events)
                except OSError:
                    pass  # a peer that went away; the loop goes on
                except Exception:  # a bug must not take DNS down: count it
                    self._counters["internal_errors"] += 1
            self._expire_idle()

    def _on_udp(self, sock: socket.socket) -> None:
        for _ in range(64):  # bounded: let TCP and stop() have a turn
            try:
                wire, peer = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            self._counters["udp_queries"] += 1
            reply = self.answer(wire, udp=True)
            if reply is not None:
                try:
                    sock.sendto(reply, peer)
                except OSError:
                    pass

    def _on_accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if len(self._conns) >= TCP_MAX_CONNECTIONS:
            self._counters["tcp_refused_connections"] += 1
            sock.close()
            return
        self._counters["tcp_connections"] += 1
        sock.setblocking(False)
        conn = _Conn(sock, self._selector)
        self._conns[sock] = conn
        self._selector.register(sock, selectors.EVENT_READ, conn)

    def _on_tcp(self, conn: "_Conn", events: int) -> None:
        if events & selectors.EVENT_WRITE:
            conn.flush()
        if events & selectors.EVENT_READ:
            try:
                data = conn.sock.recv(65537)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self._drop(conn)
                return
            if data:
                conn.inbuf += data
                conn.last = time.monotonic()
                while len(conn.inbuf) >= 2:
                    size = struct.unpack("!H", conn.inbuf[:2])[0]
                    if len(conn.inbuf) < 2 + size:
                        break
                    wire, conn.inbuf = conn.inbuf[2:2 + size], conn.inbuf[2 + size:]
                    self._counters["tcp_queries"] += 1
                    reply = self.answer(wire, udp=False)
                    if reply is not None:
                        conn.send(struct.pack("!H", len(reply)) + reply)
        if conn.closed:
            self._conns.pop(conn.sock, None)

    def _drop(self, conn: "_Conn") -> None:
        self._conns.pop(conn.sock, None)
        conn.close()

    def _expire_idle(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._conns.values() if now - c.last > TCP_IDLE]:
            self._drop(conn)

    # answering

    def answer(self, wire: bytes, udp: bool = True) -> bytes | None:
        """The reply to one query message, or None to send nothing."""
        if len(wire) < _HEADER:
            self._counters["dropped_malformed"] += 1
            return None
        flags = struct.unpack("!H", wire[2:4])[0]
        if flags & dns.flags.QR:
            self._counters["dropped_responses"] += 1
            return None
        try:
            query = dns.message.from_wire(wire, ignore_trailing=False)
        except dns.message.BadEDNS:
            self._counters["formerr"] += 1
            return _header_only(wire, dns.rcode.FORMERR)
        except dns.exception.DNSException:
            self._counters["formerr"] += 1
            return _header_only(wire, dns.rcode.FORMERR)
        if query.opcode() != dns.opcode.QUERY:
            self._counters["notimp"] += 1
            return self._render(_response(query, dns.rcode.NOTIMP), query, udp)
        if len(query.question) != 1:
            self._counters["formerr"] += 1
            return _header_only(wire, dns.rcode.FORMERR)
        if query.edns > 0:
            self._counters["badvers"] += 1
            response = _response(query, dns.rcode.BADVERS)
            return self._render(response, query, udp)
        response = self._resolve(query)
        return self._render(response, query, udp)

    def _resolve(self, query: dns.message.Message) -> dns.message.Message:
        q = query.question[0]
        found = self._index.zone_for(q.name) if q.rdclass == dns.rdataclass.IN else None
        if found is None or q.rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            self._counters["refused"] += 1
            response = _response(query, dns.rcode.REFUSED)
            if query.edns >= 0:  # RFC 8914 4.21, as Knot says it too
                response.use_edns(0, response.ednsflags, PAYLOAD_MAX, options=[
                    dns.edns.EDEOption(dns.edns.EDECode.NOT_AUTHORITATIVE)])
            return response
        zone, nodes, names = found
        response = _response(query, dns.rcode.NOERROR)
        response.flags |= dns.flags.AA
        name = q.name
        for _ in range(CNAME_CHAIN_MAX):
            node = nodes.get(name)
            if node is None:
                if name in names:
                    break  # an empty non-terminal: NODATA
                response.set_rcode(dns.rcode.NXDOMAIN)
                self._counters["nxdomain"] += 1
                response.authority.append(_negative_soa(zone))
                return response
            if q.rdtype == dns.rdatatype.ANY:
                response.answer.extend(_named(r, name) for r in node.values())
                self._counters["noerror"] += 1
                return response
            if q.rdtype in node:
                response.answer.append(_named(node[q.rdtype], name))
                self._counters["noerror"] += 1
                return response
            cname = node.get(dns.rdatatype.CNAME)
            if cname is None:
                break
            response.answer.append(_named(cname, name))
            name = cname[0].target
            if not name.is_subdomain(zone.origin):
                self._counters["noerror"] += 1
                return response  # out of zone: the resolver follows it
        self._counters["nodata"] += 1
        response.authority.append(_negative_soa(zone))
        return response

    def _render(self, response: dns.message.Message, query: dns.message.Message,
                udp: bool) -> bytes:
        limit = 65535
        if udp:
            limit = (max(PAYLOAD_MIN, min(query.payload, PAYLOAD_MAX)) if query.edns >= 0
                     else PAYLOAD_MIN)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            self._counters["truncated"] += 1
            response.answer.clear()
            response.authority.clear()
            response.additional.clear()
            response.flags |= dns.flags.TC
            return response.to_wire(max_size=limit)


class _Conn:
    """One TCP client: what it sent that is not a whole message yet, and what
    is still to be written to it."""

    def __init__(self, sock: socket.socket, selector: selectors.BaseSelector) -> None:
        self.sock = sock
        self.selector = selector
        self.inbuf = b""
        self.outbuf = b""
        self.last = time.monotonic()
        self.closed = False

    def send(self, data: bytes) -> None:
        self.outbuf += data
        self.flush()

    def flush(self) -> None:
        try:
            while self.outbuf:
                sent = self.sock.send(self.outbuf)
                self.outbuf = self.outbuf[sent:]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.close()
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbuf else 0)
        self.selector.modify(self.sock, want, self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.selector.unregister(self.sock)
        except (KeyError, ValueError, RuntimeError):
            pass
        self.sock.close()


def _response(query: dns.message.Message, rcode: int) -> dns.message.Message:
    """An answer frame for query: QR, RD and CD copied, RA clear, EDNS echoed
    with our payload size and the DO bit copied (RFC 3225)."""
    response = dns.message.make_response(query, our_payload=PAYLOAD_MAX)
    response.flags &= ~dns.flags.RA
    response.flags |= query.flags & dns.flags.CD
    if query.edns >= 0:
        response.use_edns(0, query.ednsflags & dns.flags.DO, PAYLOAD_MAX)
    response.set_rcode(rcode)
    return response


def _header_only(wire: bytes, rcode: int) -> bytes:
    """A bare header answering a query that could not be parsed: its ID,
    opcode and RD kept, no sections (RFC 1035 4.1.1 FORMERR)."""
    qid, flags = struct.unpack("!HH", wire[:4])
    flags = dns.flags.QR | (flags & (0x7800 | dns.flags.RD)) | (rcode & 0xF)
    return struct.pack("!HHHHHH", qid, flags, 0, 0, 0, 0)


def _named(rrset: dns.rrset.RRset, name: dns.name.Name) -> dns.rrset.RRset:
    """rrset under the owner name as the chain reached it (the query's case)."""
    if rrset.name == name and rrset.name.to_text() == name.to_text():
        return rrset
    out = dns.rrset.RRset(name, rrset.rdclass, rrset.rdtype)
    out.update(rrset)
    out.ttl = rrset.ttl
    return out


def _negative_soa(zone: Zone) -> dns.rrset.RRset:
    soa = zone.soa
    ttl = min(soa.ttl, soa[0].minimum)
    out = dns.rrset.RRset(soa.name, soa.rdclass, soa.rdtype)
    out.update(soa)
    out.ttl = ttl
    return out
