"""route-chain: answer traceroute probes through a prefix with a story."""

__version__ = "0.1.0"
