"""`route-chain demo`: the built-in story, told through a real traceroute
in a throwaway pair of namespaces; then a short path that shows what a hop
can do (latency, an MPLS label stack, a load-balanced fork), through
`traceroute -e`.

    client ns                           router ns
    c0 192.0.2.2/24, 2001:db8:ff::2/64  r0 192.0.2.1/24, 2001:db8:ff::1/64
       resolv.conf -> the chain host       route-chain with its built-in DNS
                                           198.51.100.1/24, 2001:db8:5::1/64
                                           the path: 198.18.0.1/24, 2001:db8:6::1/64

The demo uses documentation prefixes (RFC 5737 TEST-NET-2, RFC 3849), with
the built-in DNS server listening on each chain's host address. The story
and its configuration are data (DEMO_STORY, demo_config); run_demo runs the
daemon as users run it, from a config file and the story file written here,
and a real `traceroute` in the client, whose resolver asks the built-in DNS
server, prints the story. Everything is removed at the end.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from . import story
from .chain import Chain, parse_prefix
from .config import Config, DnsSettings
from .errors import SetupError
from .netlink import Namespaces, enter_namespace
from .supervisor import Supervisor

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


DEMO_PATH_V4 = "198.18.0.1/24"
DEMO_PATH_V6 = "2001:db8:6::1/64"

# A short path with a view: what traceroute -e shows of hop properties.
DEMO_PATH = """\
# Latency, labels and a fork (docs/stories.md)
the edge of town              | iface=ge-0/0/1
into the provider core        | mpls=16001 iface=xe-1/0/0
across the ocean              | delay=+40ms mpls=24001,16001
+ or the northern cable       | mpls=24002,16001
to the landing station        | mpls=16001
and home at last
"""


def demo_config() -> Config:
    """Two chains telling DEMO_STORY, IPv4 and IPv6, served by the built-in
    DNS on both host addresses (port 53). The story's line-to-name warnings
    are left out: every line of a story in words changes, by design."""
    told = story.parse_text(DEMO_STORY, "demo story")
    chains = tuple(Chain(parse_prefix(p), told.hops, where="demo") for p in (DEMO_V4, DEMO_V6))
    listen = tuple((str(c.host), 53) for c in chains)
    return Config(chains=chains, dns=DnsSettings(listen=listen), warnings=())


CLIENT = ("c0", ["192.0.2.2/24", "2001:db8:ff::2/64"], ["192.0.2.1", "2001:db8:ff::1"])
ROUTER = ("r0", ["192.0.2.1/24", "2001:db8:ff::1/64"])
CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
READY_TIMEOUT = 20.0


def demo_path(family: int) -> Chain:
    """The chain telling DEMO_PATH in this family."""
    told = story.parse_text(DEMO_PATH, "demo path")
    return Chain(parse_prefix(DEMO_PATH_V4 if family == 4 else DEMO_PATH_V6), told.hops,
                 where="demo")


def write_demo_files(directory: Path) -> Path:
    """The demo's story, its path and config, as a user would write them."""
    (directory / "story.txt").write_text(DEMO_STORY)
    (directory / "path.txt").write_text(DEMO_PATH)
    chains = "".join(f'[[chain]]\naddress = "{prefix}"\nstory = "{told}"\n\n'
                     for prefix, told in ((DEMO_V4, "story.txt"), (DEMO_V6, "story.txt"),
                                          (DEMO_PATH_V4, "path.txt"),
                                          (DEMO_PATH_V6, "path.txt")))
    listen = [f"{ipaddress.ip_interface(DEMO_V4).ip}:53",
              f"[{ipaddress.ip_interface(DEMO_V6).ip}]:53"]
    config = directory / "demo.toml"
    config.write_text(f'[daemon]\nqueues = 1\n\n{chains}[dns]\nlisten = {json.dumps(listen)}\n')
    return config


def run_demo(family: int = 4) -> str:
    """Build the network, start the daemon, trace the story and the path,
    tear it all down; returns what traceroute printed, under the commands
    that printed it."""
    tag = os.getpid()
    client, router = f"rc-demo-client-{tag}", f"rc-demo-router-{tag}"
    chain = demo_config().chains[0 if family == 4 else 1]
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="route-chain-demo-")))
        os.chmod(tmp, 0o755)
        config = write_demo_files(tmp)
        (tmp / "resolv.conf").write_text(f"nameserver {chain.host}\noptions timeout:1 attempts:1\n")

        spaces = stack.enter_context(Namespaces())
        spaces.create(client)
        spaces.create(router)
        spaces.veth(client, CLIENT[0], router, ROUTER[0])
        spaces.configure(client, CLIENT[0], _interfaces(CLIENT[1]), CLIENT[2])
        spaces.configure(router, ROUTER[0], _interfaces(ROUTER[1]))
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            spaces.sysctl(router, key, "1")
        # Each end knows the other's link address from the start, so the
        # first probe does not wait a second for neighbour discovery.
        for ns, dev, peer, peer_dev, peer_addresses in (
                (client, CLIENT[0], router, ROUTER[0], ROUTER[1]),
                (router, ROUTER[0], client, CLIENT[0], CLIENT[1])):
            mac = spaces.mac(peer, peer_dev)
            for iface in _interfaces(peer_addresses):
                spaces.neighbour(ns, dev, str(iface.ip), mac)

        daemon = stack.enter_context(Supervisor(
            [sys.executable, "-m", "routechain", "--config", str(config)], cwd=tmp,
            preexec_fn=lambda: enter_namespace(router)))
        daemon.wait_for("READY=1", timeout=READY_TIMEOUT)
        out = []
        path = demo_path(family)
        # The story as names; the path with -e: its label stacks and
        # interfaces (RFC 4950, RFC 5837) and, past the ocean, the delay.
        for told, extra in ((chain, []), (path, ["-e"])):
            command = ["traceroute", f"-{family}", *extra, "-q", "1", "-w", "2",
                       "-m", str(told.length + 2), str(told.destination)]
            traced = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                    preexec_fn=lambda: _enter_client(client,
                                                                     tmp / "resolv.conf"))
            if traced.returncode != 0:
                raise SetupError(f"traceroute failed: {traced.stderr.strip()}")
            out.append(f"$ {' '.join(command)}\n{traced.stdout}")
        return "\n".join(out)


def _interfaces(texts: list[str]):
    return [ipaddress.ip_interface(t) for t in texts]


def _enter_client(namespace: str, resolv_conf: Path) -> None:
    """In the traceroute child: the client namespace, and a private mount
    namespace whose /etc/resolv.conf names the built-in DNS server."""
    enter_namespace(namespace)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
    if libc.mount(bytes(resolv_conf), b"/etc/resolv.conf", None, MS_BIND, None) != 0:
        raise OSError(ctypes.get_errno(), "bind mount of /etc/resolv.conf")
