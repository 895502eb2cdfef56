"""NOTIFY (RFC 1996) to the secondaries: when a zone's serial moves (a
reload that changed it, and at start), each configured secondary is told,
with a NOTIFY signed by its TSIG key when it has one, and told again with
a growing wait until it answers (TRIES times, then the failure is counted
and logged). A newer change of the same zone replaces a NOTIFY still
being retried. Runs as tasks on the DNS server's asyncio loop; counts
`notify:sent`, `notify:retried`, `notify:acked` and `notify:failed`.

The NOTIFY goes out from the server's own listening address of the same
family when that is a specific address (secondaries accept a NOTIFY only
from their primary's address), else from the kernel's choice.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from . import tsig

if TYPE_CHECKING:  # zone imports config, which imports Secondary from here
    from .zone import Zone

log = logging.getLogger("route-chain")

TRIES = 6
IN_FLIGHT = 64     # NOTIFYs awaiting an answer at once (10,000 zones, not 10,000 sockets)
FIRST_WAIT = 1.0   # seconds for the first answer; doubled at each try (1+2+...+32 s)
COUNTERS = ("notify:sent", "notify:retried", "notify:acked", "notify:failed")


@dataclass(frozen=True)
class Secondary:
    """A server to NOTIFY: its address and port, and its TSIG key's name."""

    address: str
    port: int = 53
    key: str | None = None

    @property
    def shown(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address \
            else f"{self.address}:{self.port}"


def message(zone: Zone, key=None) -> dns.message.Message:
    """A NOTIFY for zone: opcode NOTIFY, AA, the question (origin, SOA) and
    the SOA in the answer section (RFC 1996 3.7), signed with key if any."""
    query = dns.message.make_query(zone.origin, dns.rdatatype.SOA)
    query.flags = dns.flags.AA  # RD clear; the opcode lives in the flags too: set it after
    query.set_opcode(dns.opcode.NOTIFY)
    query.answer.append(zone.soa)
    if key is not None:
        tsig.sign_request(query, key)
    return query


class Sender:
    """The NOTIFY tasks of one server: `send(zones, secondaries, keys,
    sources)` from the server's loop."""

    def __init__(self, counts: dict[str, int]) -> None:
        self._counts = counts
        self._tasks: dict[tuple, asyncio.Task] = {}
        self._slots: asyncio.Semaphore | None = None  # made on the loop, at the first send

    def send(self, zones: list[Zone], secondaries: tuple[Secondary, ...], keys: dict,
             sources: tuple[str, ...]) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(IN_FLIGHT)
        for zone in zones:
            for secondary in secondaries:
                key = keys.get(dns.name.from_text(secondary.key)) if secondary.key else None
                which = (zone.origin, secondary)
                old = self._tasks.get(which)
                if old is not None:
                    old.cancel()
                task = asyncio.get_running_loop().create_task(
                    self._notify(zone, secondary, key, _source(secondary.address, sources)))
                self._tasks[which] = task
                task.add_done_callback(lambda t, w=which: self._done(w, t))

    def _done(self, which, task: asyncio.Task) -> None:
        if self._tasks.get(which) is task:
            del self._tasks[which]

    async def _notify(self, zone: Zone, secondary: Secondary, key, source: str | None) -> None:
        async with self._slots:
            await self._exchange(zone, secondary, key, source)

    async def _exchange(self, zone: Zone, secondary: Secondary, key,
                        source: str | None) -> None:
        counts = self._counts
        family = socket.AF_INET6 if ":" in secondary.address else socket.AF_INET
        query = message(zone, key)
        wire = query.to_wire()
        loop = asyncio.get_running_loop()
        wait = FIRST_WAIT
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as e:  # out of descriptors: counted, and the next reload tries again
            counts["notify:failed"] += 1
            log.warning("NOTIFY %s to %s: %s", zone.origin, secondary.shown, e.strerror)
            return
        with sock:
            sock.setblocking(False)
            try:
                if source:
                    sock.bind((source, 0))
                sock.connect((secondary.address, secondary.port))
            except OSError as e:
                counts["notify:failed"] += 1
                log.warning("NOTIFY %s to %s: %s", zone.origin, secondary.shown, e.strerror)
                return
            for attempt in range(TRIES):
                counts["notify:retried" if attempt else "notify:sent"] += 1
                deadline = loop.time() + wait
                try:
                    await loop.sock_sendall(sock, wire)
                    async with asyncio.timeout_at(deadline):
                        while True:
                            reply = await loop.sock_recv(sock, 65535)
                            if _acknowledges(reply, query, key):
                                counts["notify:acked"] += 1
                                return
                except TimeoutError:
                    pass  # no answer yet: ask again, waiting twice as long
                except OSError:
                    # Refused by ICMP (not listening yet): wait out this try.
                    await asyncio.sleep(max(0.0, deadline - loop.time()))
                wait *= 2
        counts["notify:failed"] += 1
        log.warning("NOTIFY %s serial %d to %s: no answer after %d tries", zone.origin,
                    zone.soa[0].serial, secondary.shown, TRIES)


def _acknowledges(reply: bytes, query: dns.message.Message, key) -> bool:
    """True for the secondary's answer to query: same ID, a NOTIFY
    response with NOERROR, signed by key when we signed."""
    try:
        response = dns.message.from_wire(reply, keyring={key.name: key} if key else None,
                                         request_mac=query.mac if key else b"")
    except dns.exception.DNSException:
        return False
    return (response.id == query.id and response.flags & dns.flags.QR
            and response.opcode() == dns.opcode.NOTIFY
            and response.rcode() == dns.rcode.NOERROR
            and (key is None or response.had_tsig))


def _source(address: str, sources: tuple[str, ...]) -> str | None:
    """Our listening address of the secondary's family, when specific."""
    version = ipaddress.ip_address(address).version
    for source in sources:
        ip = ipaddress.ip_address(source)
        if ip.version == version and not ip.is_unspecified:
            return source
    return None
