"""TSIG (RFC 8945) for zone transfers and NOTIFY: reading a key's secret,
checking a signed request, signing a response stream. The only module that
imports dns.tsig: dnspython does the MAC arithmetic and the wire of the
TSIG record, and compares MACs in constant time (hmac.compare_digest); the
time window (the request's fudge, RFC 8945 5.2.3) is checked here too.

A key's secret is read from a file the config names: the file must not be
readable by others nor writable but by its owner (a TSIG secret is a
password; its group, a name server's, may read it: files.secret_mode_refusal
says why), and the secret is never logged or shown in a repr.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig

from . import files
from .errors import ConfigError

FUDGE = 300  # seconds of clock skew allowed (RFC 8945 10: 300 recommended)

# The algorithms a key may name (RFC 8945 6: hmac-sha256 is REQUIRED).
ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
}
MIN_SECRET = 16  # octets: RFC 8945 6 asks for at least half the hash's length


@dataclass(frozen=True)
class Key:
    """A TSIG key as the config gives it. `secret` stays out of repr."""

    name: str
    algorithm: str = "hmac-sha256"
    secret: bytes = field(default=b"", repr=False)
    where: str = field(default="", compare=False)

    def dns_key(self) -> dns.tsig.Key:
        return dns.tsig.Key(dns.name.from_text(self.name), self.secret,
                            ALGORITHMS[self.algorithm])


def read_secret(path: Path, shown: str) -> bytes:
    """The secret in a key file: base64 alone on a line, or the `secret`
    of a BIND/Knot key clause (what tsig-keygen and keymgr print). Refused
    when anyone but its owner and group may read it, or anyone but its
    owner write it (files.check_secret_mode)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ConfigError(f"{shown}: cannot read TSIG key file: {e.strerror}") from None
    if stat.S_ISREG(mode):  # anything else: read_bytes says what it is
        files.check_secret_mode(mode, shown, "TSIG key file", group_may_read=True)
    text = files.read_bytes(path, shown, "TSIG key file", limit=64 * 1024).decode(
        "ascii", "replace")
    m = re.search(r"secret\s*:?\s*\"?([A-Za-z0-9+/=]+)\"?", text)
    encoded = m.group(1) if m else text.strip()
    try:
        secret = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{shown}: TSIG key file holds no base64 secret") from None
    if len(secret) < MIN_SECRET:
        raise ConfigError(f"{shown}: TSIG secret is {len(secret)} octets, at least "
                          f"{MIN_SECRET} are needed")
    return secret


# Why a signed request is not accepted: refusal reason and TSIG error.
BADKEY, BADSIG, BADTIME = "badkey", "badsig", "badtime"
_ERRORS = {BADKEY: dns.rcode.BADKEY, BADSIG: dns.rcode.BADSIG, BADTIME: dns.rcode.BADTIME}


@dataclass
class Checked:
    """A request read with its TSIG checked: the message, the key that
    signed it (None when unsigned), and the reason it was refused (None
    when it is good or unsigned)."""

    message: dns.message.Message
    key: dns.tsig.Key | None = None
    refused: str | None = None


def check(wire: bytes, keys: dict[dns.name.Name, dns.tsig.Key]) -> Checked:
    """Parse a request and check its TSIG against `keys`; raises
    dns.exception.DNSException when the message cannot be parsed at all."""
    message = dns.message.from_wire(wire, keyring=False, ignore_trailing=False)
    if not message.had_tsig:
        return Checked(message)
    key = keys.get(message.keyname)
    if key is None or key.algorithm != message.keyalgorithm:
        return Checked(message, refused=BADKEY)
    try:
        # Checks the MAC (in constant time) and then the time window.
        signed = dns.message.from_wire(wire, keyring={key.name: key}, ignore_trailing=False)
    except dns.tsig.BadTime:
        return Checked(message, key, refused=BADTIME)
    except (dns.tsig.BadSignature, dns.tsig.BadKey, dns.tsig.BadAlgorithm,
            dns.exception.FormError):
        return Checked(message, refused=BADSIG)
    return Checked(signed, key)


def error_response(request: Checked, rcode: int) -> bytes:
    """The answer to a refused request: `rcode` with the question; a TSIG
    error (RFC 8945 5.2) goes out as NOTAUTH with the TSIG record holding
    the error, unsigned for BADKEY and BADSIG, signed for BADTIME (with our
    time in Other Data, 5.2.3)."""
    query = request.message
    response = dns.message.make_response(query)
    if request.refused is None:
        response.set_rcode(rcode)
        return response.to_wire()  # signed by dnspython when the request was (make_response)
    response.set_rcode(dns.rcode.NOTAUTH)
    wire = response.to_wire()
    error = _ERRORS[request.refused]
    if request.refused == BADTIME:
        now = int(time.time())
        return Stream(request.key, query.mac, query.id).sign(
            wire, error=error, other=struct.pack("!HI", now >> 32, now & 0xFFFFFFFF))
    rdata = dns.rdtypes.ANY.TSIG.TSIG(
        dns.rdataclass.ANY, dns.rdatatype.TSIG, query.keyalgorithm, int(time.time()), FUDGE,
        b"", query.id, error, b"")
    return _append(wire, query.keyname, rdata)


class Stream:
    """Signs the messages of one response, in order: the first with the
    request's MAC, each later one with the MAC before it (RFC 8945 5.3.1)."""

    def __init__(self, key: dns.tsig.Key, request_mac: bytes, original_id: int) -> None:
        self._key = key
        self._mac = request_mac
        self._ctx = None
        self._id = original_id

    def sign(self, wire: bytes, error: int = 0, other: bytes = b"") -> bytes:
        """wire (a whole message without TSIG) with its TSIG appended."""
        now = int(time.time())
        template = dns.rdtypes.ANY.TSIG.TSIG(
            dns.rdataclass.ANY, dns.rdatatype.TSIG, self._key.algorithm, now, FUDGE, b"",
            self._id, error, other)
        rdata, self._ctx = dns.tsig.sign(wire, self._key, template, now,
                                         self._mac if self._ctx is None else None,
                                         self._ctx, multi=True)
        return _append(wire, self._key.name, rdata)


def _append(wire: bytes, owner: dns.name.Name, rdata) -> bytes:
    """wire with the TSIG record added last and ARCOUNT raised."""
    rd = rdata.to_wire()
    record = owner.to_wire() + struct.pack("!HHIH", dns.rdatatype.TSIG, dns.rdataclass.ANY,
                                           0, len(rd)) + rd
    arcount = int.from_bytes(wire[10:12], "big") + 1
    return wire[:10] + arcount.to_bytes(2, "big") + wire[12:] + record


def sign_request(message: dns.message.Message, key: dns.tsig.Key) -> None:
    """Have dnspython sign `message` with `key` when it is rendered (NOTIFY)."""
    message.use_tsig(key, fudge=FUDGE)
