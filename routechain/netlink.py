"""Addresses, routes and link state over netlink: the only module that
imports pyroute2. Nothing here shells out to `ip`."""

from __future__ import annotations

import errno
import os

from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

from .chain import Interface
from .config import Route
from .errors import SetupError

IFA_F_NODAD = 0x02
NUD_PERMANENT = 0x80


class Link:
    """One interface, by name, and what we configure on it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ipr = IPRoute()
        try:
            found = self._ipr.link_lookup(ifname=name)
        except NetlinkError as e:
            self.close()
            raise SetupError(f"cannot look up interface {name!r}: {_reason(e)}") from None
        if not found:
            self.close()
            raise SetupError(f"interface {name!r} does not exist")
        self.index = found[0]

    def close(self) -> None:
        self._ipr.close()

    def set_up(self, mtu: int | None) -> None:
        kwargs = {"state": "up"}
        if mtu is not None:
            kwargs["mtu"] = mtu
        self._call(f"bring up {self.name!r}" + (f" with MTU {mtu}" if mtu else ""),
                   "set", index=self.index, fn=self._ipr.link, **kwargs)

    def set_mtu(self, mtu: int) -> None:
        self._call(f"set MTU {mtu} on {self.name!r}", "set", index=self.index,
                   fn=self._ipr.link, mtu=mtu)

    def add_address(self, interface: Interface) -> None:
        """The chain's host address; IPv6 without DAD, as nobody else is on the link."""
        flags = IFA_F_NODAD if interface.version == 6 else 0
        self._call(f"add address {interface} to {self.name!r}", "add", fn=self._ipr.addr,
                   index=self.index, address=str(interface.ip),
                   prefixlen=interface.network.prefixlen, flags=flags)

    def del_address(self, interface: Interface) -> None:
        self._call(f"remove address {interface} from {self.name!r}", "del", fn=self._ipr.addr,
                   index=self.index, address=str(interface.ip),
                   prefixlen=interface.network.prefixlen, missing_ok=True)

    def add_route(self, route: Route) -> None:
        self._call(f"add route {route.prefix} dev {self.name!r} ({route.where})", "replace",
                   fn=self._ipr.route, **self._route_spec(route))

    def del_route(self, route: Route) -> None:
        self._call(f"remove route {route.prefix}", "del", fn=self._ipr.route,
                   missing_ok=True, **self._route_spec(route))

    def _route_spec(self, route: Route) -> dict:
        spec = {"dst": str(route.prefix), "oif": self.index}
        if route.table is not None:
            spec["table"] = route.table
        if route.metric is not None:
            spec["priority"] = route.metric
        return spec

    def _call(self, what: str, command: str, fn, missing_ok: bool = False, **kwargs) -> None:
        try:
            fn(command, **kwargs)
        except NetlinkError as e:
            gone = e.code in (errno.ENODEV, errno.EADDRNOTAVAIL, errno.ESRCH, errno.ENOENT)
            if missing_ok and gone:
                return
            raise SetupError(f"cannot {what}: {_reason(e)}") from None

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reason(e: NetlinkError) -> str:
    if e.code == errno.EPERM:
        return "operation not permitted (CAP_NET_ADMIN is needed)"
    return os.strerror(e.code) if e.code else str(e)


# --- Throwaway namespaces, for the demo. -----------------------------------

class Namespaces:
    """Named network namespaces joined by veth pairs; close() removes them
    (and with them every link, address and route inside)."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def create(self, name: str) -> str:
        try:
            netns.create(name)
        except OSError as e:
            raise SetupError(f"cannot create network namespace {name!r}: "
                             f"{os.strerror(e.errno or 0)}") from None
        self.made.append(name)
        with NetNS(name) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        return name

    def veth(self, a: str, a_name: str, b: str, b_name: str) -> None:
        with NetNS(a) as ns:
            ns.link("add", ifname=a_name, kind="veth", peer={"ifname": b_name, "net_ns_fd": b})

    def configure(self, ns_name: str, ifname: str, addresses: list[Interface],
                  gateways: list[str] = ()) -> None:
        with NetNS(ns_name) as ns:
            index = ns.link_lookup(ifname=ifname)[0]
            for iface in addresses:
                ns.addr("add", index=index, address=str(iface.ip),
                        prefixlen=iface.network.prefixlen,
                        flags=IFA_F_NODAD if iface.version == 6 else 0)
            ns.link("set", index=index, state="up")
            for gateway in gateways:
                default = "::/0" if ":" in gateway else "0.0.0.0/0"
                ns.route("add", dst=default, gateway=gateway)

    def mac(self, ns_name: str, ifname: str) -> str:
        with NetNS(ns_name) as ns:
            return ns.get_links(ns.link_lookup(ifname=ifname)[0])[0].get_attr("IFLA_ADDRESS")

    def neighbour(self, ns_name: str, ifname: str, address: str, mac: str) -> None:
        """A permanent neighbour entry: the first packet need not wait for
        address resolution."""
        with NetNS(ns_name) as ns:
            ns.neigh("replace", dst=address, lladdr=mac, state=NUD_PERMANENT,
                     ifindex=ns.link_lookup(ifname=ifname)[0])

    def sysctl(self, ns_name: str, key: str, value: str) -> None:
        """Write /proc/sys/KEY as seen from inside the namespace."""
        netns.pushns(ns_name)
        try:
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)
        finally:
            netns.popns()

    def close(self) -> None:
        while self.made:
            try:
                netns.remove(self.made.pop())
            except OSError:
                pass

    def __enter__(self) -> "Namespaces":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def enter_namespace(name: str) -> None:
    """Move the calling process into a namespace (for a child's preexec_fn)."""
    netns.setns(name)
