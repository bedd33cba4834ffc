"""The pure diff core: table-driven cases and Hypothesis properties (applying the plan to the
observed state yields the desired state, touches nothing foreign, and a second plan is empty)."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.model import DesiredState
from edge_agent.reconcile import (
    AddAddress,
    CreateLink,
    DelAddress,
    DeleteLink,
    DelRoute,
    Observed,
    ObservedAddress,
    ObservedLink,
    ObservedRoute,
    Owned,
    ReplaceRoute,
    SetLink,
    apply_actions,
    describe,
    plan,
    satisfied,
)

P = 190


def link(
    name: str,
    *,
    up: bool = True,
    mtu: int = 1500,
    kind: str | None = None,
    master: str | None = None,
    identity: tuple[tuple[str, str], ...] = (),
) -> ObservedLink:
    return ObservedLink(name, kind, up, mtu, master, identity)


def addr(ifname: str, text: str) -> ObservedAddress:
    return ObservedAddress(ifname, IPv4Interface(text))


def route(
    dst: str,
    gateway: str | None = None,
    dev: str | None = None,
    *,
    metric: int = 0,
    table: int = 254,
    proto: int = P,
) -> ObservedRoute:
    return ObservedRoute(
        IPv4Network(dst), IPv4Address(gateway) if gateway else None, dev, metric, table, proto
    )


def state(
    links: Sequence[ObservedLink],
    addresses: Sequence[ObservedAddress] = (),
    routes: Sequence[ObservedRoute] = (),
) -> Observed:
    return Observed({lk.name: lk for lk in links}, frozenset(addresses), frozenset(routes))


def desired(**doc: Any) -> DesiredState:
    return DesiredState.model_validate({"version": 1, **doc})


WAN = {"name": "wan0"}
BASE = state([link("lo"), link("wan0", up=False)])

CASES: list[tuple[str, Observed, DesiredState, Owned, list[str], list[str]]] = [
    (
        "interconnect address, link up, route to the core via the peer",
        BASE,
        desired(
            links=[WAN],
            addresses=[{"ifname": "wan0", "address": "10.166.0.2/30"}],
            routes=[{"dst": "198.51.100.13/32", "gateway": "10.166.0.1"}],
        ),
        Owned(),
        [
            "set link wan0 up=True",
            "add address 10.166.0.2/30 on wan0",
            "replace route 198.51.100.13/32 via 10.166.0.1 table 254 metric 0",
        ],
        [],
    ),
    (
        "already converged: nothing to do",
        state(
            [link("wan0")], [addr("wan0", "10.166.0.2/30")], [route("198.51.100.13/32", "10.166.0.1", "wan0")]
        ),
        desired(
            links=[WAN],
            addresses=[{"ifname": "wan0", "address": "10.166.0.2/30"}],
            routes=[{"dst": "198.51.100.13/32", "gateway": "10.166.0.1"}],
        ),
        Owned(),
        [],
        [],
    ),
    (
        "a foreign route with the same destination is left; ours is added beside it at its own metric",
        state(
            [link("wan0")],
            [addr("wan0", "10.166.0.2/30")],
            [route("10.9.0.0/24", "10.166.0.1", "wan0", proto=4)],
        ),
        desired(
            links=[WAN],
            addresses=[{"ifname": "wan0", "address": "10.166.0.2/30"}],
            routes=[{"dst": "10.9.0.0/24", "gateway": "10.166.0.1", "metric": 50}],
        ),
        Owned(),
        ["replace route 10.9.0.0/24 via 10.166.0.1 table 254 metric 50"],
        [],
    ),
    (
        "our stale route, link and address go (the link takes its own addresses); foreign address stays",
        state(
            [link("wan0"), link("br0", kind="bridge")],
            [addr("wan0", "10.166.0.2/30"), addr("wan0", "10.99.0.1/24"), addr("br0", "192.168.1.1/24")],
            [route("10.8.0.0/24", "10.166.0.1", "wan0")],
        ),
        desired(links=[WAN]),
        Owned(frozenset({"br0"}), frozenset({addr("wan0", "10.166.0.2/30"), addr("br0", "192.168.1.1/24")})),
        [
            "delete route 10.8.0.0/24 via 10.166.0.1 dev wan0 table 254 metric 0",
            "delete link br0",
            "delete address 10.166.0.2/30 from wan0",
        ],
        [],
    ),
    (
        "a veth and its peer are created once; the peer is configured as a port of a bridge",
        state([link("lo")]),
        desired(
            links=[
                {"name": "v0", "kind": "veth", "peer": "v1", "mtu": 1400},
                {"name": "v1", "master": "br0"},
                {"name": "br0", "kind": "bridge"},
            ]
        ),
        Owned(),
        [
            "create link v0 (veth)",
            "create link br0 (bridge)",
            "set link v0 up=True mtu=1400",
            "set link v1 up=True master=br0",
            "set link br0 up=True",
        ],
        [],
    ),
    (
        "a link of ours whose parameters drifted is recreated",
        state([link("vx0", kind="vxlan", identity=(("port", "4789"), ("vni", "5")))]),
        desired(links=[{"name": "vx0", "kind": "vxlan", "vni": 6}]),
        Owned(frozenset({"vx0"})),
        ["delete link vx0", "create link vx0 (vxlan)", "set link vx0 up=True"],
        [],
    ),
    (
        "a foreign link squatting the name is reported and left alone",
        state([link("vx0", kind="bridge", up=False)]),
        desired(
            links=[{"name": "vx0", "kind": "vxlan", "vni": 6}],
            addresses=[{"ifname": "vx0", "address": "10.7.0.1/24"}],
            routes=[{"dst": "10.8.0.0/16", "dev": "vx0"}],
        ),
        Owned(),
        [],
        [
            "link vx0: exists with other parameters, not created by us",
            "route 10.8.0.0/16 table 254: dev vx0 is down",
        ],
    ),
    (
        "a foreign route holding the same table/destination/metric is not taken over",
        state(
            [link("wan0")],
            [addr("wan0", "10.166.0.2/30")],
            [route("0.0.0.0/0", "10.166.0.1", "wan0", proto=3)],
        ),
        desired(links=[WAN], routes=[{"dst": "default", "gateway": "10.166.0.1"}]),
        Owned(),
        [],
        ["route 0.0.0.0/0 table 254: metric 0 is taken by a route the agent did not create (proto 3)"],
    ),
    (
        "what cannot be done is reported: absent port, off-link gateway, down dev",
        state([link("lan0", up=False)]),
        desired(
            links=[WAN, {"name": "lan0", "state": "down"}],
            addresses=[{"ifname": "wan0", "address": "10.166.0.2/30"}],
            routes=[{"dst": "10.1.0.0/16", "gateway": "10.5.5.5"}, {"dst": "10.2.0.0/16", "dev": "lan0"}],
        ),
        Owned(),
        [],
        [
            "link wan0: not present (an existing port is expected)",
            "address 10.166.0.2/30 on wan0: link not present",
            "route 10.1.0.0/16 table 254: gateway 10.5.5.5 is not on a connected subnet of an up link",
            "route 10.2.0.0/16 table 254: dev lan0 is down",
        ],
    ),
]


@pytest.mark.parametrize(
    ("observed", "want", "owned", "actions", "unresolved"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_plan_table(
    observed: Observed, want: DesiredState, owned: Owned, actions: list[str], unresolved: list[str]
) -> None:
    result = plan(observed, want, owned, P)
    assert [describe(a) for a in result.actions] == actions
    assert list(result.unresolved) == unresolved
    after = apply_actions(observed, result.actions, P)
    assert plan(after, want, result.owned, P).actions == ()


def test_link_down_takes_its_routes_and_plan_restores_them() -> None:
    up = state([link("wan0")], [addr("wan0", "10.166.0.2/30")], [route("10.9.0.0/24", "10.166.0.1", "wan0")])
    want = desired(
        links=[WAN],
        addresses=[{"ifname": "wan0", "address": "10.166.0.2/30"}],
        routes=[{"dst": "10.9.0.0/24", "gateway": "10.166.0.1"}],
    )
    down = apply_actions(up, [SetLink("wan0", up=False)])
    assert down.routes == frozenset()
    assert [type(a) for a in plan(down, want, Owned(), P).actions] == [SetLink, ReplaceRoute]


def test_ownership_is_tracked_and_forgotten() -> None:
    want = desired(
        links=[{"name": "br0", "kind": "bridge"}], addresses=[{"ifname": "br0", "address": "10.0.0.1/24"}]
    )
    result = plan(state([]), want, Owned(), P)
    assert result.owned == Owned(frozenset({"br0"}), frozenset({addr("br0", "10.0.0.1/24")}))
    # br0 vanished (seen absent), then someone else made their own: it is not ours any more.
    forgotten = plan(state([]), desired(), result.owned, P).owned
    assert forgotten == Owned()
    assert plan(state([link("br0", kind="bridge")]), desired(), forgotten, P).actions == ()


# --- properties ------------------------------------------------------------------------------

NAMES = ["a", "b", "c", "d"]
SUBNETS = [IPv4Network(f"10.0.{i}.0/24") for i in range(4)]


@st.composite
def observed_states(draw: st.DrawFn) -> tuple[Observed, Owned]:
    links = {}
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True)):
        kind = draw(st.sampled_from([None, "bridge"]))
        links[name] = link(name, up=draw(st.booleans()), mtu=draw(st.sampled_from([1400, 1500])), kind=kind)
    addresses = set()
    for name in links:
        for net in draw(st.lists(st.sampled_from(SUBNETS), unique=True, max_size=2)):
            addresses.add(
                ObservedAddress(name, IPv4Interface(f"{net.network_address + draw(st.integers(1, 3))}/24"))
            )
    routes = set()
    for dst in draw(st.lists(st.sampled_from(["192.0.2.0/24", "198.51.100.0/24", "0.0.0.0/0"]), unique=True)):
        dev = draw(st.sampled_from(sorted(links))) if links else None
        if dev is None or not links[dev].up:
            continue
        routes.add(
            route(dst, None, dev, metric=draw(st.sampled_from([0, 10])), proto=draw(st.sampled_from([P, 4])))
        )
    owned_links = frozenset(n for n in links if draw(st.booleans()))
    owned_addrs = frozenset(a for a in addresses if draw(st.booleans()))
    return Observed(links, frozenset(addresses), frozenset(routes)), Owned(owned_links, owned_addrs)


@st.composite
def desired_states(draw: st.DrawFn) -> DesiredState:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True))
    links: list[dict[str, Any]] = []
    for name in names:
        spec: dict[str, Any] = {
            "name": name,
            "kind": draw(st.sampled_from([None, "bridge"])),
            "state": draw(st.sampled_from(["up", "down"])),
        }
        if draw(st.booleans()):
            spec["mtu"] = draw(st.sampled_from([1400, 1500, 9000]))
        links.append(spec)
    bridges = [s["name"] for s in links if s["kind"] == "bridge"]
    for spec in links:
        if bridges and spec["kind"] is None and draw(st.booleans()):
            spec["master"] = draw(st.sampled_from(bridges))
    addresses = []
    for name in names:
        for net in draw(st.lists(st.sampled_from(SUBNETS), unique=True, max_size=2)):
            addresses.append(
                {"ifname": name, "address": f"{net.network_address + draw(st.integers(1, 3))}/24"}
            )
    routes = []
    for dst in draw(st.lists(st.sampled_from(["192.0.2.0/24", "198.51.100.0/24", "0.0.0.0/0"]), unique=True)):
        r: dict[str, Any] = {"dst": dst, "metric": draw(st.sampled_from([0, 10]))}
        with_dev: bool = draw(st.booleans())
        if names and with_dev:
            r["dev"] = draw(st.sampled_from(names))
        if draw(st.booleans()) or "dev" not in r:
            r["gateway"] = f"{draw(st.sampled_from(SUBNETS)).network_address + 9}"
        routes.append(r)
    seen: set[tuple[str, str | None]] = set()
    unique_addrs = []
    for a in addresses:  # one address per (link, ip) — the validator refuses duplicates
        if (a["ifname"], a["address"]) not in seen:
            seen.add((a["ifname"], a["address"]))
            unique_addrs.append(a)
    return DesiredState.model_validate(
        {"version": 1, "links": links, "addresses": unique_addrs, "routes": routes}
    )


@settings(max_examples=400, deadline=None)
@given(observed_states(), desired_states())
def test_plan_converges_in_one_pass_and_spares_foreign_state(
    start: tuple[Observed, Owned], want: DesiredState
) -> None:
    observed, owned = start
    result = plan(observed, want, owned, P)
    after = apply_actions(observed, result.actions, P)
    # A second plan on the result is empty: the first one did everything that can be done.
    assert plan(after, want, result.owned, P).actions == ()
    # Everything desired holds, except what was reported as impossible.
    missing = satisfied(after, want, P)
    if not result.unresolved:
        assert missing == []
    # Nothing foreign is deleted: links we do not own stay, and so do foreign addresses on them
    # (a link of ours that is deleted or recreated takes whatever is on it).
    for name in observed.links:
        if name not in owned.links:
            assert name in after.links
    for a in observed.addresses:
        if a not in owned.addresses and a.ifname not in owned.links:
            assert a in after.addresses
    # Foreign routes survive while their link is up and keeps an address (the kernel flushes the
    # routes of a link that goes down or loses its last address).
    with_addr = {a.ifname for a in after.addresses}
    for r in observed.routes:
        if r.proto != P and r.dev in with_addr and after.links[r.dev].up and r.dev not in owned.links:
            assert r in after.routes
    # Ordering: stale routes and links go first, creations go links → addresses → routes, and
    # stale addresses go after the new ones are in.
    rank = {
        DelRoute: 0,
        DeleteLink: 1,
        CreateLink: 2,
        SetLink: 3,
        AddAddress: 4,
        DelAddress: 5,
        ReplaceRoute: 6,
    }
    ranks = [rank[type(a)] for a in result.actions]
    assert ranks == sorted(ranks)
