"""What `traceroute` will show for each chain, without root or network: the
lines a traceroute from a host one router in front of the daemon prints
(line 1 is that router; hop host+k answers line k+1), and warnings about
what would spoil the story.

Widths come from the clients' sources: traceroute stops after 30 hops by
default (`-m` changes it; so does mtr's `-m`); mtr's host column is 25
characters in `mtr --report` (a 33-column field that starts after
` NN.|-- `; `--report-wide` widens it) and, in an 80-column terminal with
the default fields `LS NABWV` (43 columns), 32 characters.

A chain with timing (docs/stories.md, "Timing") gets each hop's expected
round trip beside it: the mean of its delay with jitter (a delay drawn
below 0 is sent at once, which lifts the mean when jitter exceeds the
delay), on top of the path's own fraction of a millisecond; and its loss
and rate limit when it has them.
"""

from __future__ import annotations

import encodings.idna

from .chain import Chain, Timing
from .hopprops import IP_TTL_MAX
from .config import Config

TRACEROUTE_MAX_HOPS = 30
MTR_REPORT_WIDTH = 25
MTR_CURSES_WIDTH = 32
_PLAIN_SHOWN = 3  # a chain without a story: its first hops and its last


def render(config: Config) -> str:
    """The preview of every chain, ready to print."""
    if not config.chains:
        return "no chains\n"
    return "\n".join(render_chain(chain) for chain in config.chains)


def render_chain(chain: Chain) -> str:
    lines = [f"{chain.interface} ({chain.where}): "
             + (f"{chain.length} hops, destination {chain.destination}" if chain.length
                else "no room for a hop after the host: it answers nothing")]
    if not chain.length:
        return lines[0] + "\n"
    maxttl = chain.length + 1
    lines.append(f"traceroute to {chain.destination} ({chain.destination}), "
                 f"{max(TRACEROUTE_MAX_HOPS, maxttl)} hops max")
    lines.append(f"{_hopno(1, maxttl)}  (the router in front of the daemon)")
    ks = list(range(1, chain.length + 1))
    if not chain.hops and len(ks) > 2 * _PLAIN_SHOWN:
        ks = ks[:_PLAIN_SHOWN] + [0] + ks[-_PLAIN_SHOWN:]
    for k in ks:
        if k == 0:
            lines.append("   ...")
            continue
        no = _hopno(k + 1, maxttl)
        n_alts = len(chain.hop(k).alternatives)
        for branch in range(len(chain.routers_at(k))):
            mark = "" if branch == 0 else "+" if branch <= n_alts else "++"   # as in the story
            lead = no if branch == 0 else " " * (len(no) - len(mark)) + mark
            lines.append(lead + _router_line(chain, k, branch))
    for chapter in chain.chapters:
        # Behind the router in front, line k is the trace's second hop.
        lines.append(f"chapter {chapter.label}.{chain.name} "
                     f"({chain.chapter_address(chapter)}): starts at line {chapter.start}, "
                     f"the destination {chain.length - chapter.start + 2} hops away")
    lines.extend(f"warning: {w}" for w in warnings(chain))
    return "\n".join(lines) + "\n"


def _router_line(chain: Chain, k: int, branch: int) -> str:
    """Hop k's router `branch` as traceroute -e prints it, with its timing
    and what else it does: the MTU that drops larger probes, its own reply
    TTL, the chain's ending at the last hop."""
    hop, addr = chain.branch(k, branch), chain.branch_address(k, branch)
    timing = timing_note(chain.timing(k, branch)) if chain.has_timing else ""
    if hop.silent:
        text = "  * * *"
    elif hop.name:
        shown = _unicode(hop.name)
        extra = f"   [{shown} in a UTF-8 terminal]" if shown != hop.name else ""
        text = f"  {hop.name} ({addr}){timing}{extra}"
    else:
        text = f"  {addr} ({addr}){timing}"
    return text + "".join(f"  {part}" for part in _properties(chain, k, branch))


def _properties(chain: Chain, k: int, branch: int) -> list[str]:
    p = chain.branch(k, branch).props
    parts = []
    objects = []
    if p.mpls:
        objects.append("MPLS:" + "/".join(f"L={e.label},E={e.tc}" for e in p.mpls))
    interface = [str(v) for v in (p.ifindex, p.ifaddr) if v is not None]
    interface += [f'"{p.iface}"'] if p.iface is not None else []
    interface += [f"mtu={p.ifmtu}"] if p.ifmtu is not None else []
    if interface:
        objects.append("INC:" + ",".join(interface))
    if objects:
        parts.append("<" + ";".join(objects) + ">")
    if p.mtu is not None:
        parts.append(f"[next-hop MTU {p.mtu}: larger probes get "
                     + ("Fragmentation Needed]" if chain.family == 4 else "Packet Too Big]"))
    if p.reply_ttl is not None:
        parts.append(f"[replies leave with TTL {p.reply_ttl}]")
    rewrites = []
    if p.nat is not None:
        addr, port = p.nat
        shown = f"[{addr}]" if addr.version == 6 and port is not None else str(addr)
        rewrites.append(f"NAT to {shown}" + (f":{port}" if port is not None else ""))
    rewrites += [f"{name} {value}" for name, value in (("DSCP", p.dscp), ("ECN", p.ecn))
                 if value is not None]
    if p.df is not None:
        rewrites.append(f"DF {p.df}")
    if rewrites:
        parts.append(f"[rewrites what it forwards: {', '.join(rewrites)}]")
    if branch == 0 and chain.hop(k).alternatives and chain.balance(k) != "flow":
        parts.append(f"[balanced per {chain.balance(k)}]")
    if k == chain.length and chain.end != "host":
        parts.append(chain.end)
    elif k == chain.length and branch == 0:
        parts.extend(_destination_notes(chain))
    return parts


def _destination_notes(chain: Chain) -> list[str]:
    """What the destination answers to TCP and UDP, where not the defaults
    (RST-ACK, Port Unreachable)."""
    d = chain.defaults
    tcp = d.tcp or "closed"
    notes = []
    if tcp == "open":
        notes.append("[TCP: every port open]")
    elif d.tcp_open or tcp != "closed":
        others = {"closed": "RST-ACK", "rst": "a bare RST", "silent": "silent",
                  "prohibited": "prohibited"}[tcp]
        opened = f"{','.join(map(str, d.tcp_open))} open, " if d.tcp_open else ""
        notes.append(f"[TCP: {opened}{'others ' if opened else ''}{others}]")
    if d.udp and d.udp != "unreachable":
        notes.append(f"[UDP: {d.udp}]")
    return notes


def expected_delay_ms(timing: Timing) -> float:
    """The mean delay a hop adds: delay + U(-jitter, +jitter), never below 0."""
    d, j = timing.delay_us, timing.jitter_us
    if j <= d:
        return d / 1000
    # E[max(0, d + U)] with U uniform on [-j, j]: the part above 0 only.
    return (d + j) ** 2 / (4 * j) / 1000


def timing_note(timing: Timing) -> str:
    """`  rtt 12.0 ms ±2, loss 10%, rate 2/s burst 2` for a hop's line."""
    rtt = f"rtt {expected_delay_ms(timing):.1f} ms"
    if timing.jitter_us:
        rtt += f" ±{timing.jitter_us / 1000:g}"
    parts = [rtt]
    if timing.loss:
        parts.append(f"loss {timing.loss * 100:g}%")
    if timing.rate:
        parts.append(f"rate {timing.rate}/s burst {timing.burst}")
    return "  " + ", ".join(parts)


def warnings(chain: Chain) -> list[str]:
    """What would keep a traceroute or mtr from telling the story in full."""
    out = []
    maxttl = chain.length + 1
    if maxttl > IP_TTL_MAX:
        out.append(f"the destination is {maxttl} hops away and a TTL holds at most {IP_TTL_MAX}: "
                   "no traceroute from behind a router reaches it; trace from the daemon's "
                   "own host or shorten the story")
    elif maxttl > TRACEROUTE_MAX_HOPS:
        out.append(f"the destination is {maxttl} hops away and traceroute stops at "
                   f"{TRACEROUTE_MAX_HOPS}: use `traceroute -m {maxttl}` (mtr: `mtr -m {maxttl}`)")
    for chapter in chain.chapters:
        away = chain.length - chapter.start + 2
        if TRACEROUTE_MAX_HOPS < away <= IP_TTL_MAX:
            out.append(f"chapter {chapter.label} ({chapter.where}): the destination is {away} "
                       f"hops away and traceroute stops at {TRACEROUTE_MAX_HOPS}: start it "
                       f"at line {chain.length - TRACEROUTE_MAX_HOPS + 2} or later to fit")
    wide = [(k, h.name) for k, h in enumerate(chain.hops, 1)
            if h.name and len(_unicode(h.name)) > MTR_REPORT_WIDTH]
    if wide:
        hops = _ranges([k + 1 for k, _ in wide])
        widest = max(len(_unicode(n)) for _, n in wide)
        where = (f"mtr --report's {MTR_REPORT_WIDTH}-character host column"
                 + (f" and the {MTR_CURSES_WIDTH} of mtr in an 80-column terminal"
                    if widest > MTR_CURSES_WIDTH else ""))
        out.append(f"{len(wide)} names (lines {hops}; up to {widest} characters) are wider "
                   f"than {where}: mtr cuts them; use `mtr --report-wide` or a wider terminal")
    if not chain.hops:
        out.append("no story: the hops answer without names")
    return out


def _ranges(numbers: list[int]) -> str:
    """`2-5, 7` for [2, 3, 4, 5, 7]."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _hopno(n: int, maxttl: int) -> str:
    return f"{n:>{3 if maxttl >= 100 else 2}}"


def _unicode(name: str) -> str:
    """The name as traceroute shows it with NI_IDN in a UTF-8 locale."""
    labels = []
    for label in name.split("."):
        if label.lower().startswith("xn--"):
            try:
                label = encodings.idna.ToUnicode(label)
            except UnicodeError:
                pass
        labels.append(label)
    return ".".join(labels)
