"""An nftables ruleset (`nft -j list ruleset`) evaluated for one packet:
does it pass the base chains of its hook, is it dropped (by which rule or
policy), or does a rule that may drop it match on something this evaluator
does not understand? Pure: JSON and a Packet in, a verdict out. Used by
`route-chain doctor` (doctor.py).

Understood: matches on interface names (with `*` wildcards), the layer 4
protocol, IPv4/IPv6 addresses and prefixes, ports and port ranges, ICMP and
ICMPv6 types, conntrack state; verdicts accept, drop, reject, jump, goto,
return; chain policies. Anything else in a rule (a rate limit, a quota, a
named set, a mark, iptables-nft's `xt` match) makes its match unknown: a
drop there is "maybe", never "dropped".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

UNKNOWN = None  # a match this evaluator does not understand


@dataclass(frozen=True)
class Packet:
    """What a rule can match on; `what` names it in a finding."""

    what: str
    family: int
    hook: str
    iif: str | None
    oif: str | None
    proto: str               # "udp", "tcp", "icmp", "icmpv6"
    daddr: str
    saddr: str | None = None
    dport: int | None = None
    icmp_type: str | None = None
    ct_state: str = "new"


_PROTO_NAMES = {"icmp": {"icmp", 1}, "icmpv6": {"icmpv6", "ipv6-icmp", 58},
                "udp": {"udp", 17}, "tcp": {"tcp", 6}}
_ICMP_CODES = {"echo-reply": {0, 129}, "destination-unreachable": {3, 1},
               "time-exceeded": {11, 3}, "echo-request": {8, 128}}


def _values(right) -> list | None:
    """The values a match's right side stands for (None: not understood)."""
    if isinstance(right, (str, int)):
        return [right]
    if isinstance(right, list):
        return right
    if isinstance(right, dict) and "set" in right:
        items = right["set"]
        return items if isinstance(items, list) else [items]
    if isinstance(right, dict) and ("prefix" in right or "range" in right):
        return [right]
    return None


def _one(value, actual) -> bool | None:
    """Whether a single right-side value covers the packet's value."""
    if isinstance(value, dict) and "prefix" in value:
        try:
            net = ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}",
                                       strict=False)
            return ipaddress.ip_address(actual) in net
        except (ValueError, KeyError, TypeError):
            return None
    if isinstance(value, dict) and "range" in value:
        lo, hi = value["range"]
        if isinstance(lo, int) and isinstance(actual, int):
            return lo <= actual <= hi
        return None
    if isinstance(value, dict):
        return None
    if isinstance(value, str) and isinstance(actual, str) and value.endswith("*"):
        return actual.startswith(value[:-1])
    if isinstance(actual, set):
        return value in actual
    if isinstance(value, str) and isinstance(actual, str):
        try:  # addresses compare as addresses: "2001:db8::1" is "2001:0db8::1"
            return ipaddress.ip_address(value) == ipaddress.ip_address(actual)
        except ValueError:
            pass
    return value == actual


def _field(left, pkt: Packet):
    """The packet's value for a match's left side: a value, a set of
    names the value may be written as, or UNKNOWN."""
    if not isinstance(left, dict):
        return UNKNOWN
    if "meta" in left:
        key = left["meta"].get("key")
        if key in ("iifname", "oifname"):
            name = pkt.iif if key == "iifname" else pkt.oif
            return name if name is not None else UNKNOWN
        if key == "l4proto":
            return _PROTO_NAMES[pkt.proto]
        if key == "nfproto":
            return {"ipv4"} if pkt.family == 4 else {"ipv6"}
        return UNKNOWN
    if "payload" in left:
        proto, name = left["payload"].get("protocol"), left["payload"].get("field")
        if proto in ("ip", "ip6"):
            if (proto == "ip") != (pkt.family == 4):
                return "other-family"
            if name in ("protocol", "nexthdr"):
                return _PROTO_NAMES[pkt.proto]
            if name == "daddr":
                return pkt.daddr or UNKNOWN
            if name == "saddr":
                return pkt.saddr or UNKNOWN
            return UNKNOWN
        if proto in ("udp", "tcp", "th", "icmp", "icmpv6"):
            if proto in ("udp", "tcp", "icmp", "icmpv6") and proto != pkt.proto:
                return "other-protocol"
            if name == "dport":
                return pkt.dport if pkt.dport is not None else UNKNOWN
            if name == "type" and pkt.icmp_type:
                return {pkt.icmp_type} | _ICMP_CODES.get(pkt.icmp_type, set())
        return UNKNOWN
    if "ct" in left and left["ct"].get("key") == "state":
        return {pkt.ct_state}
    return UNKNOWN


def _match(expr: dict, pkt: Packet) -> bool | None:
    m = expr["match"]
    actual = _field(m.get("left"), pkt)
    if actual in ("other-family", "other-protocol"):
        return False  # the kernel's implicit dependency fails: no match
    values = _values(m.get("right"))
    if actual is UNKNOWN or values is None:
        return None
    op = m.get("op", "==")
    results = [_one(v, actual) for v in values]
    if None in results:
        return None
    hit = any(results)
    if op in ("==", "in"):
        return hit
    if op == "!=":
        return not hit
    return None


VERDICTS = ("accept", "drop", "reject", "jump", "goto", "return", "continue", "queue")


def _rule_verdict(rule: dict, pkt: Packet) -> tuple[bool | None, str | None, str | None]:
    """(matches, verdict, jump target) of one rule for pkt."""
    matched: bool | None = True
    verdict = target = None
    for expr in rule.get("expr", []):
        if not isinstance(expr, dict):
            continue
        if "match" in expr:
            result = _match(expr, pkt)
            if result is False:
                return False, None, None
            if result is None:
                matched = None
        elif "xt" in expr:
            matched = None
        elif any(k in expr for k in VERDICTS):
            verdict = next(k for k in VERDICTS if k in expr)
            if verdict in ("jump", "goto"):
                target = (expr[verdict] or {}).get("target")
        elif any(k in expr for k in ("limit", "quota", "lookup", "meter", "set")):
            matched = None
    return matched, verdict, target


def evaluate(ruleset: list, pkt: Packet) -> tuple[str, str]:
    """("accepted" | "dropped" | "maybe", which rule or policy) for pkt
    through every base chain of its hook in every table of its family."""
    chains, rules = {}, {}
    for item in ruleset:
        if "chain" in item:
            c = item["chain"]
            chains[(c["family"], c["table"], c["name"])] = c
        elif "rule" in item:
            r = item["rule"]
            rules.setdefault((r["family"], r["table"], r["chain"]), []).append(r)
    families = ("ip", "inet") if pkt.family == 4 else ("ip6", "inet")
    base = sorted((c for c in chains.values() if c["family"] in families and
                   c.get("hook") == pkt.hook and c.get("type", "filter") == "filter"),
                  key=lambda c: c.get("prio", 0))
    maybe = None

    def name(key, rule=None) -> str:
        family, table, chain = key
        where = f"{family} {table} {chain}"
        return f"rule {where} handle {rule.get('handle')}" if rule else f"policy of {where}"

    def walk(key, depth=0) -> tuple[str, str] | None:
        nonlocal maybe
        for rule in rules.get(key, []):
            matched, verdict, target = _rule_verdict(rule, pkt)
            if matched is False or verdict is None:
                continue
            if matched is None:
                if verdict in ("drop", "reject") and maybe is None:
                    maybe = name(key, rule)
                if verdict == "accept":
                    return ("maybe", name(key, rule)) if maybe else ("accepted", name(key, rule))
                continue
            if verdict in ("drop", "reject"):
                return "dropped", name(key, rule)
            if verdict in ("accept", "queue"):
                return "accepted", name(key, rule)
            if verdict == "return":
                return None
            if verdict in ("jump", "goto") and target and depth < 16:
                result = walk((key[0], key[1], target), depth + 1)
                if result is not None or verdict == "goto":
                    return result
        return None

    for chain in base:
        key = (chain["family"], chain["table"], chain["name"])
        result = walk(key)
        if result and result[0] == "dropped":
            return result
        if result is None and chain.get("policy") == "drop":
            return ("maybe", maybe) if maybe else ("dropped", name(key))
    return ("maybe", maybe) if maybe else ("accepted", "")
