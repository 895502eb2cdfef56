"""The built-in demo story and its configuration: data only. The demo runner
(namespaces, daemon, traceroute) lives elsewhere and calls demo_config().

The demo uses documentation prefixes (RFC 5737 TEST-NET-2, RFC 3849), with
the built-in DNS server listening on each chain's host address.
"""

from __future__ import annotations

from . import story
from .chain import Chain, parse_prefix
from .config import Config, DnsSettings

DEMO_V4 = "198.51.100.1/24"
DEMO_V6 = "2001:db8:5::1/64"

# One line per hop; `*` is a hop that keeps silent. "Café" shows IDNA.
DEMO_STORY = """\
# The packet who wanted to see the world
Once upon a time
a little packet left home
with a TTL of sixty-four
and one wish: to see the world
It crossed a bridge of copper
*
it stopped at the Café of Lost Frames
where old routers told tales
and finally it came to rest
at the end of the road
"""


def demo_config() -> Config:
    """Two chains telling DEMO_STORY, IPv4 and IPv6, served by the built-in
    DNS on both host addresses (port 53). The story's line-to-name warnings
    are left out: every line of a story in words changes, by design."""
    told = story.parse_text(DEMO_STORY, "demo story")
    chains = tuple(Chain(parse_prefix(p), told.hops, where="demo") for p in (DEMO_V4, DEMO_V6))
    listen = tuple((str(c.host), 53) for c in chains)
    return Config(chains=chains, dns=DnsSettings(listen=listen), warnings=())
