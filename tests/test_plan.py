"""routechain.plan, by tables: what reconciling decides, without a kernel.

Each case is the desired state (chains, each with its prefix route, and
extra routes), what the kernel holds (a
State as netlink.Link.state() dumps it) and what is ours, and the one
plan that must come out: its actions in order, its refusals, the chains
kept. A second table settles what the kernel answers to an add.
"""

from __future__ import annotations

import errno
import ipaddress

import pytest

from routechain.chain import Chain
from routechain.config import Route
from routechain.plan import (AddAddress, AddRoute, DeleteAddress, DeleteRoute, Desired, Forget,
                             Owned, Postponement, Refusal, RouteKey, SetUp, State, address_key,
                             plan, settle)

A4 = "198.18.0.1/24"
A4_MOVED = "198.18.0.1/25"      # the same address, another prefix length
A4_OTHER = "198.18.0.9/24"      # same prefix as A4: an IPv4 clash
A4_B = "198.19.0.1/24"
A6 = "2001:db8::1/64"
A6_WIDE = "2001:db8::1/48"      # the same IPv6 address, another prefix length
R4 = ("198.19.128.0/17", 100, None)
R6 = ("2001:db8:1::/48", None, None)


def iface(text: str):
    return ipaddress.ip_interface(text)


def chain(text: str) -> Chain:
    return Chain(iface(text), where=f"rc.toml:{text}")


def route(spec: tuple) -> Route:
    prefix, table, metric = spec
    return Route(ipaddress.ip_network(prefix), table, metric, where=f"rc.toml:{prefix}")


def key(spec: tuple) -> RouteKey:
    return RouteKey.of(route(spec))


def state(addresses=(), elsewhere=None, routes=(), up=True, proxies=frozenset(),
          foreign=frozenset(), unready=frozenset()) -> State:
    return State(frozenset(address_key(iface(a)) for a in addresses),
                 {iface(a).ip.packed: name for a, name in (elsewhere or {}).items()},
                 frozenset(key(r) for r in routes), up, proxies, foreign, unready)


def owned(addresses=(), routes=(), proxies=frozenset()) -> Owned:
    return Owned(frozenset(iface(a) for a in addresses), frozenset(key(r) for r in routes),
                 proxies)


def shown(action) -> str:
    """An action as one short word and its object, for readable tables."""
    name = type(action).__name__
    if isinstance(action, AddAddress):
        return f"{name} {action.interface}" + (" (put back)" if action.put_back else "")
    if isinstance(action, AddRoute):
        return f"{name} {action.key}" + (" (put back)" if action.put_back else "")
    if isinstance(action, (DeleteAddress, Forget)):
        return f"{name} {action.interface}"
    if isinstance(action, DeleteRoute):
        return f"{name} {action.key}"
    return name


def net(address: str) -> tuple:
    """The prefix route of the chain at `address`, in main with the kernel's metric."""
    return (str(iface(address).network), None, None)


C4, C6, C4B = net(A4), net(A6), net(A4_B)
K4, K6, K4B = (f"{net(a)[0]} metric {1024 if ':' in a else 0}" for a in (A4, A6, A4_B))
KR4, KR6 = "198.19.128.0/17 table 100 metric 0", "2001:db8:1::/48 metric 1024"

# (case, chains, routes, state, owned) -> (actions, refused, chains kept)
CASES = [
    ("nothing to do",
     [A4, A6], [R4], state([A4, A6], routes=[C4, C6, R4]), owned([A4, A6], [C4, C6, R4]),
     [], [], [A4, A6]),
    ("first start: everything added, chains' routes first, nothing is a put-back",
     [A4, A6], [R4, R6], state(), owned(),
     [f"AddAddress {A4}", f"AddAddress {A6}", f"AddRoute {K4}", f"AddRoute {K6}",
      f"AddRoute {KR4}", f"AddRoute {KR6}"], [], [A4, A6]),
    ("an address of ours deleted: put back",
     [A4, A6], [], state([A4], routes=[C4, C6]), owned([A4, A6], [C4, C6]),
     [f"AddAddress {A6} (put back)"], [], [A4, A6]),
    ("a route of ours deleted: put back",
     [A4], [R4], state([A4], routes=[C4]), owned([A4], [C4, R4]),
     [f"AddRoute {KR4} (put back)"], [], [A4]),
    ("a chain's prefix route deleted: put back",
     [A4], [], state([A4]), owned([A4], [C4]),
     [f"AddRoute {K4} (put back)"], [], [A4]),
    ("the address moved away: on another interface and not on ours, refused with its route",
     [A4, A6], [], state([A6], elsewhere={A4: "lo"}, routes=[C4, C6]), owned([A4, A6], [C4, C6]),
     [f"DeleteRoute {K4}", f"Forget {A4}"], ["chain 198.18.0.1/24"], [A6]),
    ("the address also on another interface, and on ours: still ours",
     [A4], [], state([A4], elsewhere={A4: "lo"}, routes=[C4]), owned([A4], [C4]),
     [], [], [A4]),
    ("the address held elsewhere, never ours: refused, nothing forgotten",
     [A4], [], state(elsewhere={A4: "eth0"}), owned(),
     [], ["chain 198.18.0.1/24"], []),
    ("the link down: brought up first, the rest planned from a fresh dump",
     [A4, A6], [R4], state([A4], up=False), owned([A4, A6], [C4, C6, R4]),
     ["SetUp"], [], [A4, A6]),
    ("a chain removed: its route goes, then its address, after what is added",
     [A4_B], [], state([A4, A6], routes=[C4, C6]), owned([A4, A6], [C4, C6]),
     [f"AddAddress {A4_B}", f"AddRoute {K4B}", f"DeleteRoute {K4}", f"DeleteRoute {K6}",
      f"DeleteAddress {A4}", f"DeleteAddress {A6}"], [], [A4_B]),
    ("a chain and a route removed: routes go before addresses",
     [A4], [], state([A4, A6], routes=[C4, C6, R4]), owned([A4, A6], [C4, C6, R4]),
     [f"DeleteRoute {KR4}", f"DeleteRoute {K6}", f"DeleteAddress {A6}"], [], [A4]),
    ("an IPv4 address clashing with one of ours in the same prefix: ours goes first "
     "(and, the last IPv4 one, takes the route along)",
     [A4_OTHER], [], state([A4], routes=[C4]), owned([A4], [C4]),
     [f"DeleteAddress {A4}", f"AddAddress {A4_OTHER}", f"AddRoute {K4}"], [], [A4_OTHER]),
    ("the only IPv4 address moved in its prefix: the kernel flushes the IPv4 routes with "
     "it, so they are added again, not as repairs",
     [A4_OTHER, A6], [R4], state([A4, A6], routes=[C4, C6, R4]), owned([A4, A6], [C4, C6, R4]),
     [f"DeleteAddress {A4}", f"AddAddress {A4_OTHER}", f"AddRoute {K4}", f"AddRoute {KR4}"],
     [], [A4_OTHER, A6]),
    ("an IPv4 address moved in its prefix beside another IPv4 one: the routes stay",
     [A4_OTHER, A4_B], [], state([A4, A4_B], routes=[C4, C4B]), owned([A4, A4_B], [C4, C4B]),
     [f"DeleteAddress {A4}", f"AddAddress {A4_OTHER}"], [], [A4_OTHER, A4_B]),
    ("an IPv4 address in another prefix: no clash, the old one goes last",
     [A4_B], [], state([A4], routes=[C4]), owned([A4], [C4]),
     [f"AddAddress {A4_B}", f"AddRoute {K4B}", f"DeleteRoute {K4}", f"DeleteAddress {A4}"],
     [], [A4_B]),
    ("one IPv4 address with a new prefix length: IPv4 holds both, the old one goes last",
     [A4_MOVED], [], state([A4], routes=[C4]), owned([A4], [C4]),
     [f"AddAddress {A4_MOVED}", "AddRoute 198.18.0.0/25 metric 0", f"DeleteRoute {K4}",
      f"DeleteAddress {A4}"], [], [A4_MOVED]),
    ("one IPv6 address with a new prefix length: the old one goes first",
     [A6_WIDE], [], state([A6], routes=[C6]), owned([A6], [C6]),
     [f"DeleteAddress {A6}", f"AddAddress {A6_WIDE}", "AddRoute 2001:db8::/48 metric 1024",
      f"DeleteRoute {K6}"], [], [A6_WIDE]),
    ("a clashing address that is not ours is left alone",
     [A4_OTHER], [], state([A4], routes=[C4]), owned(routes=[C4]),
     [f"AddAddress {A4_OTHER}"], [], [A4_OTHER]),
    ("ours, gone and no longer wanted: forgotten, not deleted",
     [A4], [], state([A4], routes=[C4]), owned([A4, A6], [C4]),
     [f"Forget {A6}"], [], [A4]),
    ("a route of ours no longer wanted and gone: deleted all the same (gone is no failure)",
     [A4], [], state([A4], routes=[C4]), owned([A4], [C4, R4]),
     [f"DeleteRoute {KR4}"], [], [A4]),
    ("the route held by someone else: present in the dump only if ours, so it is tried "
     "(and settled below)",
     [A4], [R6], state([A4], routes=[C4]), owned([A4], [C4]),
     [f"AddRoute {KR6}"], [], [A4]),
    ("an extra route that is a chain's own: one route",
     [A6], [("2001:db8::/64", None, 1024)], state([A6]), owned(),
     [f"AddRoute {K6}"], [], [A6]),
    ("the last IPv4 chain leaves: the kernel flushes the IPv4 routes with its address, "
     "so the extra IPv4 route that stays is added again after",
     [A6], [R4], state([A4, A6], routes=[net(A4), net(A6), R4]),
     owned([A4, A6], [net(A4), net(A6), R4]),
     ["DeleteRoute 198.18.0.0/24 metric 0", f"DeleteAddress {A4}",
      "AddRoute 198.19.128.0/17 table 100 metric 0"], [], [A6]),
    ("the kernel's IPv6 metric: a route given none is the one stored with 1024",
     [], [("2001:db8:1::/48", None, 0)], state(routes=[R6]), owned(routes=[R6]),
     [], [], []),
]


@pytest.mark.parametrize("case, chains, routes, st, ours, actions, refused, kept", CASES,
                         ids=[c[0] for c in CASES])
def test_plan(case, chains, routes, st, ours, actions, refused, kept):
    got = plan(Desired(tuple(chain(c) for c in chains), tuple(route(r) for r in routes)),
               st, ours)
    assert [shown(a) for a in got.actions] == actions
    assert [r.what for r in got.refusals] == refused
    assert [str(c.interface) for c in got.chains] == kept


def test_plan_refusal_names_the_address_and_its_holder():
    got = plan(Desired((chain(A4),), ()), state(elsewhere={A4: "lo"}), owned())
    assert [r.message for r in got.refusals] == [
        f"chain {A4} (rc.toml:{A4}): address 198.18.0.1 is already on interface 'lo'; "
        "route-chain never takes over an address it did not add"]


def test_plan_routes_are_one_per_key():
    """Two routes the kernel cannot tell apart are one (the first one's place)."""
    got = plan(Desired((), (route(R6), route(("2001:db8:1::/48", None, 1024)))),
               state(), owned())
    assert [shown(a) for a in got.actions] == ["AddRoute 2001:db8:1::/48 metric 1024"]
    assert [r.where for r in got.routes] == ["rc.toml:2001:db8:1::/48"]


@pytest.mark.parametrize("table, metric, want", [
    (None, None, ["AddRoute 198.18.0.0/24 metric 0", "AddRoute 2001:db8::/64 metric 1024"]),
    (114, 50, ["AddRoute 198.18.0.0/24 table 114 metric 50",
               "AddRoute 2001:db8::/64 table 114 metric 50"]),
])
def test_plan_chain_routes_take_the_configured_table_and_metric(table, metric, want):
    got = plan(Desired((chain(A4), chain(A6)), (), table, metric), state([A4, A6]), owned())
    assert [shown(a) for a in got.actions] == want
    assert {a.route.where for a in got.actions} == {f"rc.toml:{A4}", f"rc.toml:{A6}"}


K4 = "198.18.0.0/24 metric 0"
K6_ = "2001:db8::/64 metric 1024"


@pytest.mark.parametrize("case, st, ours, actions, kept", [
    ("nothing there: the routes alone, no address",
     state(), owned(), [f"AddRoute {K4}", f"AddRoute {K6_}"], [A4, A6]),
    ("switched from address: the routes stay, our addresses go after them",
     state([A4, A6], routes=[net(A4), net(A6)]), owned([A4, A6], [net(A4), net(A6)]),
     # The kernel flushes the IPv4 routes with the link's last IPv4 address.
     [f"DeleteAddress {A4}", f"DeleteAddress {A6}", f"AddRoute {K4}"], [A4, A6]),
    ("the host address on another interface is no one's concern: no refusal",
     state(elsewhere={A4: "lo"}), owned(), [f"AddRoute {K4}", f"AddRoute {K6_}"], [A4, A6]),
    ("an address of the chain that is not ours is left alone",
     state([A4], routes=[net(A4), net(A6)]), owned(routes=[net(A4), net(A6)]), [], [A4, A6]),
], ids=lambda v: v if isinstance(v, str) else "")
def test_plan_assign_route_takes_prefix_routes_alone(case, st, ours, actions, kept):
    """[daemon] assign = "route": a chain is its prefix route, and no address."""
    got = plan(Desired((chain(A4), chain(A6)), (), addresses=False), st, ours)
    assert [shown(a) for a in got.actions] == actions
    assert got.refusals == ()
    assert [str(c.interface) for c in got.chains] == kept


def test_plan_is_the_same_every_time():
    """Sets in, a list out: the order does not depend on hashing."""
    many = [f"198.18.{i}.1/24" for i in range(40)]
    args = (Desired((), ()), state(many, routes=[net(a) for a in many]),
            owned(many, [net(a) for a in many]))
    first = plan(*args)
    assert all(plan(*args) == first for _ in range(5))
    assert [shown(a) for a in first.actions] == \
        [f"DeleteRoute {net(a)[0]} metric 0" for a in many] + \
        [f"DeleteAddress {a}" for a in many]


ADD4 = AddAddress(iface(A4), "rc.toml:3", False)
ADDR6 = AddRoute(key(R6), route(R6), False)


@pytest.mark.parametrize("action, code, want", [
    # Added meanwhile, by someone: it is there, nothing to say.
    (ADD4, errno.EEXIST, None),
    (ADD4, errno.ENETDOWN, Postponement(
        f"chain {A4} (rc.toml:3): cannot add address {A4} to 'rc0': Network is down")),
    (ADD4, errno.EPERM, Postponement(
        f"chain {A4} (rc.toml:3): cannot add address {A4} to 'rc0': operation not permitted "
        "(CAP_NET_ADMIN is needed)")),
    # The route held by someone else: refused, left out, never replaced.
    (ADDR6, errno.EEXIST, Refusal(
        "route 2001:db8:1::/48",
        "route 2001:db8:1::/48 (rc.toml:2001:db8:1::/48): a route to 2001:db8:1::/48 metric "
        "1024 already exists (dev lo proto static); route-chain never replaces a route it did "
        "not add", route=key(R6))),
    (ADDR6, errno.ENETDOWN, Postponement(
        "route 2001:db8:1::/48 (rc.toml:2001:db8:1::/48): cannot add it through 'rc0': "
        "Network is down")),
])
def test_settle(action, code, want):
    assert settle(action, code, "rc0", "dev lo proto static") == want


# --- proxy entries (NTF_PROXY) on the uplinks

from routechain.chain import Chapter, Hop  # noqa: E402
from routechain.hopprops import Props  # noqa: E402
from routechain.plan import (AddProxy, DeleteProxy, ForgetProxy, Proxy,  # noqa: E402
                             proxies_intact)

P6 = "2001:db8:88::1:1/112"     # a piece of an on-link /64
P4 = "198.51.100.129/28"


def storied(text: str, hops: int = 2) -> Chain:
    return Chain(iface(text), hops=tuple(Hop(f"h{k}") for k in range(hops)),
                 where=f"rc.toml:{text}")


def proxy(address: str, uplink: str = "e0") -> Proxy:
    return Proxy(uplink, ipaddress.ip_address(address))


def proxies(*addresses: str, uplink: str = "e0") -> frozenset[Proxy]:
    return frozenset(proxy(a, uplink) for a in addresses)


def pshown(action) -> str:
    if isinstance(action, AddProxy):
        return f"AddProxy {action.proxy}" + (" (put back)" if action.put_back else "")
    if isinstance(action, (DeleteProxy, ForgetProxy)):
        return f"{type(action).__name__} {action.proxy}"
    return shown(action)


HOPS6 = ["2001:db8:88::1:1", "2001:db8:88::1:2", "2001:db8:88::1:3"]   # host and two hops
SETTLED6 = dict(addresses=[P6], routes=[net(P6)])

# (case, chains, uplinks, state, owned) -> (actions, notices)
PROXY_CASES = [
    ("none wanted, none ours: nothing",
     [P6], (), state(**SETTLED6), owned([P6], [net(P6)]), [], 0),
    ("first start: the host and every hop, after the address and the route",
     [P6], ("e0",), state(), owned(),
     [f"AddAddress {P6}", "AddRoute 2001:db8:88::1:0/112 metric 1024"]
     + [f"AddProxy {a} on e0" for a in HOPS6], 0),
    ("all there and ours: nothing",
     [P6], ("e0",), state(**SETTLED6, proxies=proxies(*HOPS6)),
     owned([P6], [net(P6)], proxies(*HOPS6)), [], 0),
    ("one of ours deleted: put back",
     [P6], ("e0",), state(**SETTLED6, proxies=proxies(*HOPS6[:2])),
     owned([P6], [net(P6)], proxies(*HOPS6)), [f"AddProxy {HOPS6[2]} on e0 (put back)"], 0),
    ("someone else's entry for a hop: left alone, said, never added over",
     [P6], ("e0",), state(**SETTLED6, foreign=proxies(HOPS6[1])), owned([P6], [net(P6)]),
     [f"AddProxy {HOPS6[0]} on e0", f"AddProxy {HOPS6[2]} on e0"], 1),
    ("ours replaced by someone else's: ours no more",
     [P6], ("e0",), state(**SETTLED6, proxies=proxies(HOPS6[0], HOPS6[2]),
                          foreign=proxies(HOPS6[1])),
     owned([P6], [net(P6)], proxies(*HOPS6)), [f"ForgetProxy {HOPS6[1]} on e0"], 1),
    ("an uplink dropped from the config: its entries deleted, gone ones forgotten",
     [P6], (), state(**SETTLED6, proxies=proxies(*HOPS6[:2])),
     owned([P6], [net(P6)], proxies(*HOPS6)),
     [f"DeleteProxy {a} on e0" for a in HOPS6[:2]] + [f"ForgetProxy {HOPS6[2]} on e0"], 0),
    ("a chain removed: entries, then route, then address",
     [], ("e0",), state(**SETTLED6, proxies=proxies(*HOPS6)),
     owned([P6], [net(P6)], proxies(*HOPS6)),
     [f"DeleteProxy {a} on e0" for a in HOPS6]
     + ["DeleteRoute 2001:db8:88::1:0/112 metric 1024", f"DeleteAddress {P6}"], 0),
    ("a chain refused (its address elsewhere): no entries for it",
     [P6], ("e0",), state(elsewhere={P6: "lo"}), owned(), [], 0),
    ("IPv4: proxy ARP entries the same way, on each uplink",
     [P4], ("e0", "e1"), state([P4], routes=[net(P4)]), owned([P4], [net(P4)]),
     [f"AddProxy 198.51.100.{a} on {u}" for u in ("e0", "e1") for a in (129, 130, 131)], 0),
]


@pytest.mark.parametrize("case, chains, uplinks, st, ours, actions, notices", PROXY_CASES,
                         ids=[c[0] for c in PROXY_CASES])
def test_plan_proxies(case, chains, uplinks, st, ours, actions, notices):
    desired = Desired(tuple(storied(c) for c in chains), (), uplinks=uplinks)
    got = plan(desired, st, ours)
    assert [pshown(a) for a in got.actions] == actions
    assert len(got.notices) == notices
    proxied = [a for a in got.actions if isinstance(a, (AddProxy, DeleteProxy, ForgetProxy))]
    applied = Desired(got.chains, (), uplinks=uplinks)   # as the keeper keeps it
    assert proxies_intact(applied, st, ours) == (not proxied)


def test_plan_proxy_notice_names_the_entry_and_the_chain():
    got = plan(Desired((storied(P6),), (), uplinks=("e0",)),
               state(**SETTLED6, foreign=proxies(HOPS6[1])), owned())
    assert got.notices == (f"chain {P6} (rc.toml:{P6}): a proxy entry for {HOPS6[1]} on e0 is "
                           "not route-chain's: left as it is",)


def test_plan_proxies_cover_the_alternatives():
    """A '+' router of a hop answers from its own address: answered for too."""
    alt = Hop("b", alternatives=(Hop("b2", props=Props(address=ipaddress.ip_address(
        "2001:db8:88::1:99"))),))
    chain = Chain(iface(P6), hops=(Hop("a"), alt, Hop("c")), where="rc.toml:9")
    wanted = Desired((chain,), (), uplinks=("e0",)).proxies()
    assert sorted(str(p.address) for p in wanted) == sorted(
        HOPS6 + ["2001:db8:88::1:4", "2001:db8:88::1:99"])


def test_plan_proxies_cover_the_chapters():
    """A chapter's destination answers from the chapter's address: answered
    for too, after the alternative's."""
    alt = Hop("b", alternatives=(Hop("b2"),))
    chain = Chain(iface(P6), hops=(Hop("a"), alt, Hop("c")), where="rc.toml:9",
                  name="story.example.net", chapters=(Chapter("x", 2), Chapter("y", 3)))
    wanted = Desired((chain,), (), uplinks=("e0",)).proxies()
    assert sorted(str(p.address) for p in wanted) == sorted(
        HOPS6 + ["2001:db8:88::1:4", "2001:db8:88::1:5",      # hop 3, the '+' router
                 "2001:db8:88::1:6", "2001:db8:88::1:7"])     # the chapters


def test_settle_proxy_on_a_missing_uplink_is_tried_again():
    add = AddProxy(proxy(HOPS6[0]), f"chain {P6} (rc.toml:3)", False)
    assert settle(add, errno.ENODEV, "rc0") == Postponement(
        f"chain {P6} (rc.toml:3): cannot add a proxy entry for {HOPS6[0]} on 'e0': "
        "No such device")


@pytest.mark.parametrize("chains, unready, notices", [
    ([P6], [("e0", 6, "net.ipv6.conf.e0.proxy_ndp")],
     ["net.ipv6.conf.e0.proxy_ndp is 0: the kernel ignores the proxy entries on e0 until it "
      "is 1"]),
    # Only for a family that has entries there.
    ([P6], [("e0", 4, "net.ipv4.conf.e0.forwarding")], []),
    ([P4], [("e0", 4, "net.ipv4.conf.e0.forwarding"), ("e0", 6, "net.ipv6.conf.e0.proxy_ndp")],
     ["net.ipv4.conf.e0.forwarding is 0: the kernel ignores the proxy entries on e0 until it "
      "is 1"]),
    ([], [("e0", 6, "net.ipv6.conf.e0.proxy_ndp")], []),
])
def test_plan_says_which_sysctl_keeps_the_entries_unanswered(chains, unready, notices):
    got = plan(Desired(tuple(storied(c) for c in chains), (), uplinks=("e0",)),
               state(unready=frozenset(unready)), owned())
    assert list(got.notices) == notices
