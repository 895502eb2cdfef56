"""`route-chain doctor`: what makes a deployment fail, each finding one line
with its fix.

The checks are pure functions of `Facts` (facts in, findings out), testable
without root; `gather()` is the thin layer that reads the host: sysctls from
/proc/sys, links, addresses, routes and proxy neighbour entries through
netlink.py, the nftables ruleset from `nft -j list ruleset`, and one real
DNS query to each listen address.

What it can see and what it cannot:
- routes are asked of the kernel (`ip route get`) for every hop address, up
  to MAX_LOOKUPS, so policy routing and more specific routes are seen as the
  kernel applies them to packets this host sends, not per incoming interface;
- the nftables ruleset is evaluated (ruleset.py) for a few representative
  packets: a UDP, ICMP and TCP probe in from each uplink, the ICMP replies
  out of the TUN; a rule with a match it does not understand is reported as
  one that *may* drop, never as one that does; iptables-legacy rules are
  not read, only named when present;
- proxy NDP by ndppd needs no kernel entry: when an ndppd process runs, a
  missing entry is a note, not a failure;
- the DNS query goes from this host to each listen address: it proves the
  server answers there, not that the world can reach it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .chain import Chain
from .config import Config
from .settings import DEFAULT_INTERFACE
from .errors import UsageError
from .ruleset import Packet, evaluate

DEFAULT_CONFIG = Path("/etc/route-chain/route-chain.toml")
MAX_LOOKUPS = 4096          # route lookups per run: all hops of a few hundred chains
MAX_LISTED = 4              # addresses named in one line before "..."
DNS_TIMEOUT = 2.0
RTPROT_RA = 9               # a route the kernel learnt from a router advertisement
ICMP_TIME_EXCEEDED_BIT = 1 << 11   # in net.ipv4.icmp_ratemask
# The kernel's per-destination bucket holds 6 tokens (XRLIM_BURST_FACTOR): a
# traceroute's 3 probes per hop always pass; mtr's one per second passes while
# the interval is at most a second.
MAX_RATELIMIT_MS = 1000
MIN_MSGS_PER_SEC = 100      # all ICMP the host sends; the kernel's default is 1000


@dataclass(frozen=True)
class Finding:
    """One line: `check`, what is wrong and how to fix it. A "note" says
    what doctor could not decide; only "fail" makes the exit status 1."""

    check: str
    problem: str
    fix: str = ""
    level: str = "fail"

    def line(self) -> str:
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{self.level.upper():4} {self.check}: {self.problem}.{fix}"


@dataclass(frozen=True)
class Facts:
    """What gather() read; every check looks only here."""

    config: Config
    tun: str                                   # the TUN interface's name
    links: frozenset[str] = frozenset()        # interface names
    uplinks: tuple[str, ...] = ()
    uplinks_given: bool = False
    sysctl: dict[str, str] = field(default_factory=dict)   # "net/ipv4/ip_forward" -> "1"
    defaults: tuple[tuple[int, str | None, int], ...] = ()  # (version, device, proto)
    addresses: tuple[tuple[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface], ...] = ()
    lookups: tuple = ()                        # netlink.Lookup per hop address
    lookups_skipped: int = 0
    proxies: frozenset[tuple[str, str]] = frozenset()      # (interface, address)
    ndppd: bool = False
    ruleset: list | None = None                # `nft -j list ruleset`["nftables"]
    ruleset_error: str | None = None
    legacy_tables: tuple[str, ...] = ()
    dns: tuple[tuple[str, str | None], ...] = ()  # (listen address, None or what failed)


def sysctl_keys(interfaces: list[str]) -> list[str]:
    """Every /proc/sys key the checks read, for these interfaces."""
    keys = ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding",
            "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/all/proxy_arp",
            "net/ipv6/conf/all/proxy_ndp", "net/ipv4/icmp_ratelimit", "net/ipv4/icmp_ratemask",
            "net/ipv4/icmp_msgs_per_sec", "net/ipv6/icmp/ratelimit"]
    for name in interfaces:
        keys += [f"net/ipv4/conf/{name}/forwarding", f"net/ipv4/conf/{name}/rp_filter",
                 f"net/ipv4/conf/{name}/proxy_arp", f"net/ipv6/conf/{name}/forwarding",
                 f"net/ipv6/conf/{name}/accept_ra", f"net/ipv6/conf/{name}/proxy_ndp"]
    return keys


def _int(facts: Facts, key: str) -> int | None:
    try:
        return int(facts.sysctl[key].split()[0])
    except (KeyError, ValueError, IndexError):
        return None


def _families(config: Config) -> set[int]:
    return {c.family for c in config.chains}


def _set(key: str, value: int) -> str:
    return (f"sysctl -w {key.replace('/', '.')}={value}, and the same line in "
            "/etc/sysctl.d/60-route-chain.conf")


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


# --- the checks: Facts in, findings out ---------------------------------------

def check_forwarding(facts: Facts) -> list[Finding]:
    """Probes to hop addresses are forwarded into the TUN: IPv4 needs
    ip_forward and forwarding on the interface they arrive on (the kernel
    checks the input device); IPv6 needs conf/all/forwarding."""
    found = []
    families = _families(facts.config)
    if 4 in families:
        if _int(facts, "net/ipv4/ip_forward") != 1:
            found.append(Finding("forwarding", "net.ipv4.ip_forward is 0: IPv4 probes are "
                                 "not forwarded into the TUN",
                                 _set("net/ipv4/ip_forward", 1)))
        else:
            for up in facts.uplinks:
                key = f"net/ipv4/conf/{up}/forwarding"
                if _int(facts, key) == 0:
                    found.append(Finding("forwarding", f"{key.replace('/', '.')} is 0: IPv4 "
                                         f"probes arriving on {up} are not forwarded",
                                         _set(key, 1)))
    if 6 in families and _int(facts, "net/ipv6/conf/all/forwarding") != 1:
        found.append(Finding("forwarding", "net.ipv6.conf.all.forwarding is 0: IPv6 probes "
                             "are not forwarded into the TUN",
                             _set("net/ipv6/conf/all/forwarding", 1)))
    return found


def check_accept_ra(facts: Facts) -> list[Finding]:
    """With forwarding on, the kernel ignores router advertisements unless
    accept_ra is 2: an uplink whose IPv6 default route comes from RAs loses
    it when the route expires (or has lost it already)."""
    if 6 not in _families(facts.config) or _int(facts, "net/ipv6/conf/all/forwarding") != 1:
        return []
    found = []
    for up in facts.uplinks:
        key = f"net/ipv6/conf/{up}/accept_ra"
        if _int(facts, key) != 1:
            continue  # 0: no RAs wanted; 2: taken despite forwarding
        v6 = [proto for version, dev, proto in facts.defaults if version == 6 and dev == up]
        if not v6 and facts.uplinks_given:
            problem = (f"{key.replace('/', '.')} is 1 with forwarding on, and {up} has no "
                       "IPv6 default route: the kernel ignores the router advertisements "
                       "that would give it one")
        elif RTPROT_RA in v6:
            problem = (f"{key.replace('/', '.')} is 1 with forwarding on: the kernel no longer "
                       f"takes router advertisements on {up}, and the IPv6 default route they "
                       "gave expires")
        else:
            continue
        found.append(Finding("accept_ra", problem, _set(key, 2)))
    return found


def check_rp_filter(facts: Facts) -> list[Finding]:
    """Strict reverse-path filtering (1; the higher of `all` and the
    interface counts) drops a probe when the route back to its source
    leaves by another interface. With the IPv4 default route on another
    interface, that is every probe from a source without a route of its
    own via this uplink."""
    if 4 not in _families(facts.config):
        return []
    if not facts.uplinks:
        return [Finding("rp_filter", "no uplink: no default route and no --uplink, so "
                        "rp_filter, per-uplink forwarding and accept_ra were not checked",
                        "name the interfaces probes arrive on: --uplink IFACE (repeatable)",
                        "note")]
    found = []
    default_devs = {dev for version, dev, _ in facts.defaults if version == 4}
    for up in facts.uplinks:
        values = [_int(facts, f"net/ipv4/conf/{k}/rp_filter") for k in ("all", up)]
        if max((v or 0) for v in values) != 1:
            continue
        key = f"net/ipv4/conf/{up}/rp_filter"
        fix = (f"{_set('net/ipv4/conf/all/rp_filter', 2)}; and "
               f"sysctl -w {key.replace('/', '.')}=2 (loose)")
        if default_devs and up not in default_devs:
            found.append(Finding("rp_filter", f"strict rp_filter on {up}, while the IPv4 "
                                 f"default route leaves by {_listed(sorted(default_devs))}: "
                                 f"probes arriving on {up} from sources routed back "
                                 "another way are dropped", fix))
        elif len(facts.uplinks) > 1 or len(default_devs) > 1:
            found.append(Finding("rp_filter", f"strict rp_filter on {up} with several uplinks: "
                                 "a probe whose source is routed back through another uplink "
                                 "is dropped", fix))
    return found


def check_routes(facts: Facts) -> list[Finding]:
    """Every hop address must route into the TUN; another route that
    matches (more specific, a blackhole, another table by policy) shadows
    the chain."""
    if facts.tun not in facts.links:
        return [Finding("routes", f"interface {facts.tun!r} does not exist: route-chain is not "
                        "running with this config",
                        "systemctl start route-chain (journalctl -u route-chain says why it "
                        "stopped)")]
    found = []
    bad: dict[tuple, list[str]] = {}
    for lookup in facts.lookups:
        if lookup.error is None and lookup.kind == "unicast" and lookup.device == facts.tun:
            continue
        if lookup.error is not None:
            where = f"no route ({lookup.error})"
        else:
            where = f"{lookup.prefix} {lookup.kind}" + \
                (f" via {lookup.gateway}" if lookup.gateway else "") + \
                (f" dev {lookup.device}" if lookup.device else "")
        bad.setdefault((where, lookup.prefix, lookup.kind), []).append(lookup.address)
    for (where, prefix, kind), addresses in bad.items():
        if prefix and kind != "local" and not prefix.endswith("/0"):
            fix = f"ip route del {'' if kind == 'unicast' else kind + ' '}{prefix}"
        else:
            fix = f"route the chain's prefix into {facts.tun}"
        found.append(Finding("routes", f"{_listed(addresses)} route to {where}, not into "
                             f"{facts.tun}: that route shadows the chain", fix + " (or give it "
                             "a higher metric than the TUN's; `ip route get ADDR` shows it)"))
    if facts.lookups_skipped:
        found.append(Finding("routes", f"{facts.lookups_skipped} hop addresses were not looked "
                             f"up (at most {MAX_LOOKUPS} per run)", level="note"))
    return found


def _onlink(facts: Facts, chain: Chain) -> list[tuple[str, object]]:
    """Interfaces other than the TUN (and lo) holding an address whose
    prefix contains the chain: the chain's hops are on-link there."""
    return [(name, iface) for name, iface in facts.addresses
            if name not in (facts.tun, "lo") and iface.version == chain.family
            and iface.network.prefixlen < iface.max_prefixlen
            and chain.network.subnet_of(iface.network)]


def check_proxy(facts: Facts) -> list[Finding]:
    """A chain inside a prefix that is on-link on another interface (a VPS's
    on-link /64) gets traffic only for addresses someone answers neighbour
    discovery (ARP) for: each hop needs a proxy entry there, and the kernel
    answers from them only with proxy_ndp (and forwarding) on that
    interface. For IPv4, proxy_arp answers for every routed address."""
    found = []
    for chain in facts.config.chains:
        hops = [str(chain.hop_address(k)) for k in range(1, chain.length + 1)]
        for name, iface in _onlink(facts, chain):
            missing = [a for a in hops if (name, a) not in facts.proxies]
            if chain.family == 6:
                on = [_int(facts, f"net/ipv6/conf/{k}/proxy_ndp") for k in ("all", name)]
                if not any(on):
                    found.append(Finding("proxy-ndp", f"{chain.interface} is on-link on {name} "
                                         f"({iface}) but net.ipv6.conf.{name}.proxy_ndp is 0: "
                                         "the kernel answers no neighbour solicitation for its "
                                         "hops", _set(f"net/ipv6/conf/{name}/proxy_ndp", 1)))
                what, cmd = "proxy NDP entry", "ip -6 neigh add proxy"
            else:
                if any(_int(facts, f"net/ipv4/conf/{k}/proxy_arp") for k in ("all", name)):
                    continue
                what, cmd = "proxy ARP entry", "ip neigh add proxy"
            if missing:
                level = "note" if facts.ndppd else "fail"
                also = "; ndppd runs and answers without kernel entries: check that its rule " \
                       "covers them" if facts.ndppd else ""
                found.append(Finding(
                    "proxy-ndp", f"{chain.interface} is on-link on {name} ({iface}) and "
                    f"{len(missing)} of its {len(hops)} hop addresses have no {what} there "
                    f"({_listed(missing)}): the upstream router's neighbour solicitations for "
                    f"them go unanswered{also}",
                    f"add {name!r} to [daemon] proxy_uplinks and the daemon keeps an entry "
                    f"for every hop (by hand: {cmd} {missing[0]} dev {name}, one per hop)",
                    level))
    return found


def check_icmp_ratelimit(facts: Facts) -> list[Finding]:
    """The router's own hop (the TTL that expires here, before the TUN) is
    the kernel's ICMP, limited per destination by icmp_ratelimit (for the
    types in icmp_ratemask) and for the whole host by icmp_msgs_per_sec;
    too tight, and traceroute and mtr show `*` or loss at that hop."""
    found = []
    families = _families(facts.config)
    if 4 in families:
        limit = _int(facts, "net/ipv4/icmp_ratelimit")
        mask = _int(facts, "net/ipv4/icmp_ratemask")
        if limit and limit > MAX_RATELIMIT_MS and (mask is None or mask & ICMP_TIME_EXCEEDED_BIT):
            found.append(Finding("icmp-ratelimit", f"net.ipv4.icmp_ratelimit is {limit} ms: "
                                 "this router's own Time Exceeded (the hop before the story) "
                                 "goes out once per that to each source, so mtr shows loss there",
                                 _set("net/ipv4/icmp_ratelimit", MAX_RATELIMIT_MS)))
        per_sec = _int(facts, "net/ipv4/icmp_msgs_per_sec")
        if per_sec is not None and per_sec < MIN_MSGS_PER_SEC:
            found.append(Finding("icmp-ratelimit", f"net.ipv4.icmp_msgs_per_sec is {per_sec}: "
                                 "the host sends at most that many ICMP errors a second in all, "
                                 "and a few traceroutes at once lose this router's hop",
                                 _set("net/ipv4/icmp_msgs_per_sec", 1000)))
    if 6 in families:
        limit = _int(facts, "net/ipv6/icmp/ratelimit")
        if limit and limit > MAX_RATELIMIT_MS:
            found.append(Finding("icmp-ratelimit", f"net.ipv6.icmp.ratelimit is {limit} ms: "
                                 "this router's own Time Exceeded goes out once per that to "
                                 "each source, so mtr shows loss there",
                                 _set("net/ipv6/icmp/ratelimit", MAX_RATELIMIT_MS)))
    return found


def check_dns(facts: Facts) -> list[Finding]:
    return [Finding("dns", f"the built-in DNS server does not answer on {listen}: {why}",
                    "systemctl status route-chain; a firewall input rule for port 53; "
                    "the address must be one of this host's")
            for listen, why in facts.dns if why is not None]


# --- the nftables ruleset, evaluated for representative packets (ruleset.py) --

def packets(facts: Facts) -> list[Packet]:
    """A UDP, ICMP and TCP probe in from each uplink to each family's first
    chain's destination, and the replies the TUN sends back out."""
    out = []
    uplinks = facts.uplinks or (None,)
    for family in sorted(_families(facts.config)):
        chain = next(c for c in facts.config.chains if c.family == family)
        hop = str(chain.hop_address(1)) if chain.length else str(chain.host)
        dest = str(chain.destination or chain.host)
        icmp = "icmp" if family == 4 else "icmpv6"
        for up in uplinks:
            for proto, dport, itype in (("udp", 33434, None), (icmp, None, "echo-request"),
                                        ("tcp", 80, None)):
                out.append(Packet(f"{proto} probe to {dest}" + (f" in on {up}" if up else ""),
                                  family, "forward", up, facts.tun, proto, dest, None, dport, itype))
            for itype, state in (("time-exceeded", "related"),
                                 ("destination-unreachable", "related"),
                                 ("echo-reply", "established")):
                out.append(Packet(f"{icmp} {itype} from {hop}" + (f" out on {up}" if up else ""),
                                  family, "forward", facts.tun, up, icmp, "", hop, None, itype,
                                  state))
    return out


def check_firewall(facts: Facts) -> list[Finding]:
    found = []
    if facts.ruleset_error:
        found.append(Finding("firewall", f"cannot read the nftables ruleset: "
                             f"{facts.ruleset_error}", "run doctor as root", "note"))
    if facts.legacy_tables:
        found.append(Finding("firewall", f"iptables-legacy tables are loaded "
                             f"({', '.join(facts.legacy_tables)}); doctor reads only nftables",
                             "check them by hand: iptables-legacy -L FORWARD -v, "
                             "ip6tables-legacy -L FORWARD -v", "note"))
    if not facts.ruleset:
        return found
    by_rule: dict[tuple[str, str], list[str]] = {}
    for pkt in packets(facts):
        outcome, where = evaluate(facts.ruleset, pkt)
        if outcome != "accepted":
            by_rule.setdefault((outcome, where), []).append(pkt.what)
    for (outcome, where), whats in by_rule.items():
        if outcome == "dropped":
            found.append(Finding("firewall", f"the {where} drops the {_listed(whats)}",
                                 f"accept them before it: iifname \"{facts.tun}\" accept; "
                                 f"oifname \"{facts.tun}\" accept (nft list ruleset -a shows "
                                 "the handle)"))
        else:
            found.append(Finding("firewall", f"the {where} may drop the {_listed(whats)} "
                                 "(it matches on something doctor does not evaluate)",
                                 "check it by hand: nft list ruleset -a", "note"))
    return found


CHECKS = (("forwarding", check_forwarding), ("accept_ra", check_accept_ra),
          ("rp_filter", check_rp_filter), ("routes", check_routes),
          ("proxy-ndp", check_proxy), ("firewall", check_firewall), ("dns", check_dns),
          ("icmp-ratelimit", check_icmp_ratelimit))


def diagnose(facts: Facts) -> list[tuple[str, list[Finding]]]:
    """Each check's name with its findings (none: it passed)."""
    return [(name, check(facts)) for name, check in CHECKS]


def report(results: list[tuple[str, list[Finding]]]) -> tuple[str, int]:
    """The lines to print and the exit status: 1 when anything failed."""
    lines, failed = [], False
    for name, findings in results:
        if not any(f.level == "fail" for f in findings):
            lines.append(f"ok   {name}")
        for f in findings:
            lines.append(f.line())
            failed |= f.level == "fail"
    return "\n".join(lines) + "\n", int(failed)


# --- gathering: the only part that reads the host ------------------------------

def gather(config: Config, uplinks: tuple[str, ...] = (), proc: Path = Path("/proc")) -> Facts:
    from . import netlink
    tun = config.daemon.interface or DEFAULT_INTERFACE
    with netlink.Reader() as reader:
        links = frozenset(reader.links().values())
        defaults = tuple(reader.default_routes())
        addresses = tuple(reader.addresses())
        given = bool(uplinks)
        for name in uplinks:
            if name not in links:
                raise UsageError(f"--uplink {name}: no such interface")
        if not uplinks:
            uplinks = tuple(sorted({dev for _, dev, _ in defaults if dev and dev != tun}))
        lookups, skipped = [], 0
        if tun in links:
            for chain in config.chains:
                for k in range(1, chain.length + 1):
                    if len(lookups) >= MAX_LOOKUPS:
                        skipped += 1
                        continue
                    lookups.append(reader.lookup(chain.hop_address(k)))
        proxies = frozenset(reader.proxy_entries())
    onlink = {name for name, _ in addresses if name not in (tun, "lo")}
    sysctl = {}
    for key in sysctl_keys(sorted(set(uplinks) | onlink)):
        try:
            sysctl[key] = (proc / "sys" / key).read_text().strip()
        except OSError:
            pass
    ruleset, error = _nft_ruleset()
    return Facts(config=config, tun=tun, links=links, uplinks=uplinks, uplinks_given=given,
                 sysctl=sysctl, defaults=defaults, addresses=addresses, lookups=tuple(lookups),
                 lookups_skipped=skipped, proxies=proxies, ndppd=_running(proc, "ndppd"),
                 ruleset=ruleset, ruleset_error=error, legacy_tables=_legacy_tables(proc),
                 dns=tuple(_ask_dns(config)))


def _nft_ruleset() -> tuple[list | None, str | None]:
    nft = shutil.which("nft")
    if nft is None:
        return None, None
    try:
        out = subprocess.run([nft, "-j", "list", "ruleset"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    if out.returncode != 0:
        return None, " ".join(out.stderr.split()) or f"nft exited {out.returncode}"
    try:
        return json.loads(out.stdout or "{}").get("nftables", []), None
    except ValueError as e:
        return None, f"nft -j printed no JSON: {e}"


def _legacy_tables(proc: Path) -> tuple[str, ...]:
    """Tables of the legacy iptables (x_tables) in this network namespace."""
    names = []
    for name in ("ip_tables_names", "ip6_tables_names"):
        try:
            names += (proc / "net" / name).read_text().split()
        except OSError:
            pass
    return tuple(sorted(set(names)))


def _running(proc: Path, command: str) -> bool:
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == command:
                return True
        except OSError:
            continue
    return False


def _ask_dns(config: Config) -> list[tuple[str, str | None]]:
    """One PTR query for the first hop of a chain to each listen address."""
    if not config.dns.listen or not config.chains:
        return []
    from . import dnsanswer
    chain = config.chains[0]
    target = chain.hop_address(1) if chain.length else chain.host
    results = []
    for host, port in config.dns.listen:
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        query, qid = dnsanswer.doctor_query(target)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.settimeout(DNS_TIMEOUT)
                sock.connect((host, port))
                why = "no answer within 2 s"
                for _ in range(2):
                    sock.send(query)
                    try:
                        why = dnsanswer.doctor_reply(sock.recv(65535), qid)
                        break
                    except socket.timeout:
                        continue
                    except ConnectionRefusedError:
                        why = "connection refused (nothing listens on that port)"
                        break
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else str(e)
        results.append((listen, why))
    return results
