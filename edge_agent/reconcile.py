"""Pure reconciliation core: observed state + desired state → an ordered list of actions.

No I/O here. The netlink adapter observes the kernel into :class:`Observed` and applies the
:class:`Action` objects; :func:`apply_actions` applies them to an :class:`Observed` the way the
kernel would (including the side effects the plan relies on), and the planner itself uses it to
simulate each step, so the plan is always feasible in order.

Ownership, so the agent never removes what it did not create:

* routes are the agent's when they carry its route protocol number (``proto``, default 190);
* links and addresses are the agent's when it created them; :class:`Owned` records them and is
  persisted beside the applied desired state.

Order: stale routes and stale links first, then creations layer by layer (links, link settings,
addresses), then stale addresses, then routes: an address needs its link and a route needs an up
link and an on-link gateway. Stale addresses are removed only after new ones are added (make
before break), because the kernel flushes every route of a link that loses its last IPv4
address, foreign routes included.

What cannot be done (a physical port that is absent, a gateway with no connected subnet, a
foreign link squatting a name) is not planned but reported in :attr:`Plan.unresolved`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from edge_agent.model import DesiredState, LinkIdentity, LinkKind, LinkSpec, RouteSpec

DEFAULT_PROTO = 190
UNKNOWN_MTU = -1


@dataclass(frozen=True, slots=True)
class ObservedLink:
    name: str
    kind: str | None
    up: bool
    mtu: int
    master: str | None = None
    identity: LinkIdentity = ()


@dataclass(frozen=True, slots=True, order=True)
class ObservedAddress:
    ifname: str
    address: IPv4Interface


@dataclass(frozen=True, slots=True)
class ObservedRoute:
    dst: IPv4Network
    gateway: IPv4Address | None
    dev: str | None
    metric: int
    table: int
    proto: int

    @property
    def key(self) -> tuple[int, IPv4Network, int]:
        return (self.table, self.dst, self.metric)


@dataclass(frozen=True, slots=True)
class Observed:
    """A snapshot of the kernel's links, IPv4 addresses and IPv4 unicast routes (all tables but
    ``local``). Connected routes the kernel adds for an address are not part of the model."""

    links: dict[str, ObservedLink] = field(default_factory=dict)
    addresses: frozenset[ObservedAddress] = frozenset()
    routes: frozenset[ObservedRoute] = frozenset()


@dataclass(frozen=True, slots=True)
class Owned:
    """Links and addresses the agent created (and so may delete)."""

    links: frozenset[str] = frozenset()
    addresses: frozenset[ObservedAddress] = frozenset()


# --- actions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateLink:
    spec: LinkSpec


@dataclass(frozen=True, slots=True)
class DeleteLink:
    name: str


@dataclass(frozen=True, slots=True)
class SetLink:
    """Change only the attributes that are not None."""

    name: str
    up: bool | None = None
    mtu: int | None = None
    master: str | None = None


@dataclass(frozen=True, slots=True)
class AddAddress:
    address: ObservedAddress


@dataclass(frozen=True, slots=True)
class DelAddress:
    address: ObservedAddress


@dataclass(frozen=True, slots=True)
class ReplaceRoute:
    route: RouteSpec


@dataclass(frozen=True, slots=True)
class DelRoute:
    route: ObservedRoute


Action = CreateLink | DeleteLink | SetLink | AddAddress | DelAddress | ReplaceRoute | DelRoute


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    unresolved: tuple[str, ...]
    owned: Owned

    @property
    def empty(self) -> bool:
        return not self.actions


def describe(action: Action) -> str:
    """One line for logs and events."""
    match action:
        case CreateLink(spec):
            return f"create link {spec.name} ({spec.kind})"
        case DeleteLink(name):
            return f"delete link {name}"
        case SetLink(name, up, mtu, master):
            parts = [f"{k}={v}" for k, v in (("up", up), ("mtu", mtu), ("master", master)) if v is not None]
            return f"set link {name} {' '.join(parts)}"
        case AddAddress(addr):
            return f"add address {addr.address} on {addr.ifname}"
        case DelAddress(addr):
            return f"delete address {addr.address} from {addr.ifname}"
        case ReplaceRoute(route):
            text = _route_text(route.dst, route.gateway, route.dev, route.table, route.metric)
            return f"replace route {text}"
        case DelRoute(oroute):
            text = _route_text(oroute.dst, oroute.gateway, oroute.dev, oroute.table, oroute.metric)
            return f"delete route {text}"


def _route_text(
    dst: IPv4Network, gateway: IPv4Address | None, dev: str | None, table: int, metric: int
) -> str:
    via = f" via {gateway}" if gateway else ""
    on = f" dev {dev}" if dev else ""
    return f"{dst}{via}{on} table {table} metric {metric}"


# --- the kernel model ----------------------------------------------------------------------


def _drop_routes_on(routes: Iterable[ObservedRoute], dev: str) -> frozenset[ObservedRoute]:
    return frozenset(r for r in routes if r.dev != dev)


def resolve_dev(state: Observed, gateway: IPv4Address, dev: str | None) -> str | None:
    """The up link whose connected subnet holds ``gateway`` (restricted to ``dev`` if given)."""
    for addr in sorted(state.addresses):
        link = state.links.get(addr.ifname)
        if link is None or not link.up or (dev is not None and addr.ifname != dev):
            continue
        if gateway in addr.address.network and gateway != addr.address.ip:
            return addr.ifname
    return None


def apply_action(state: Observed, action: Action, proto: int = DEFAULT_PROTO) -> Observed:
    """What the kernel does for ``action``, including side effects the planner relies on:
    a deleted link takes its addresses, routes and veth peer with it; a link set down loses its
    IPv4 routes; a link that loses its last address loses its routes (fib_disable_ip)."""
    links = dict(state.links)
    addresses = state.addresses
    routes = state.routes
    match action:
        case CreateLink(spec):
            links[spec.name] = ObservedLink(
                spec.name, spec.kind.value if spec.kind else None, False, UNKNOWN_MTU, None, spec.identity
            )
            if spec.kind is LinkKind.VETH and spec.peer is not None:
                links[spec.peer] = ObservedLink(
                    spec.peer, LinkKind.VETH.value, False, UNKNOWN_MTU, None, (("peer", spec.name),)
                )
        case DeleteLink(name):
            gone = {name}
            link = links.get(name)
            if link is not None and link.kind == LinkKind.VETH.value:
                gone |= {v for k, v in link.identity if k == "peer"}
            for n in gone:
                links.pop(n, None)
                routes = _drop_routes_on(routes, n)
            for n, other in list(links.items()):
                if other.master in gone:
                    links[n] = replace(other, master=None)
            addresses = frozenset(a for a in addresses if a.ifname not in gone)
        case SetLink(name, up, mtu, master):
            link = links[name]
            link = replace(
                link,
                up=link.up if up is None else up,
                mtu=link.mtu if mtu is None else mtu,
                master=link.master if master is None else master,
            )
            links[name] = link
            if not link.up:
                routes = _drop_routes_on(routes, name)
        case AddAddress(addr):
            addresses = addresses | {addr}
        case DelAddress(addr):
            addresses = addresses - {addr}
            if not any(a.ifname == addr.ifname for a in addresses):
                routes = _drop_routes_on(routes, addr.ifname)
        case ReplaceRoute(route):
            dev = route.dev
            if route.gateway is not None:
                dev = resolve_dev(Observed(links, addresses, routes), route.gateway, route.dev)
            new = ObservedRoute(route.dst, route.gateway, dev, route.metric, route.table, proto)
            routes = frozenset(r for r in routes if r.key != new.key) | {new}
        case DelRoute(oroute):
            routes = routes - {oroute}
    return Observed(links, addresses, routes)


def apply_actions(state: Observed, actions: Iterable[Action], proto: int = DEFAULT_PROTO) -> Observed:
    for action in actions:
        state = apply_action(state, action, proto)
    return state


def track_ownership(owned: Owned, action: Action) -> Owned:
    """Ownership after ``action`` succeeded."""
    match action:
        case CreateLink(spec):
            names = {spec.name} | ({spec.peer} if spec.kind is LinkKind.VETH and spec.peer else set())
            return replace(owned, links=owned.links | names)
        case DeleteLink(name):
            return Owned(owned.links - {name}, frozenset(a for a in owned.addresses if a.ifname != name))
        case AddAddress(addr):
            return replace(owned, addresses=owned.addresses | {addr})
        case DelAddress(addr):
            return replace(owned, addresses=owned.addresses - {addr})
        case _:
            return owned


# --- the planner ---------------------------------------------------------------------------


def _route_matches(observed: ObservedRoute, spec: RouteSpec, proto: int) -> bool:
    return (
        observed.proto == proto
        and observed.key == spec.key
        and observed.gateway == spec.gateway
        and (spec.dev is None or observed.dev == spec.dev)
    )


def _peers_of(desired: DesiredState) -> set[str]:
    return {link.peer for link in desired.links if link.kind is LinkKind.VETH and link.peer}


class _Builder:
    """Accumulates actions while simulating them, so each step is planned on the state it meets."""

    def __init__(self, state: Observed, owned: Owned, proto: int) -> None:
        self.state = state
        self.owned = owned
        self.proto = proto
        self.actions: list[Action] = []
        self.unresolved: list[str] = []

    def do(self, action: Action) -> None:
        self.actions.append(action)
        self.state = apply_action(self.state, action, self.proto)
        self.owned = track_ownership(self.owned, action)


def prune_ownership(owned: Owned, observed: Observed) -> Owned:
    """Forget ownership of what has vanished: a name reused later by someone else is not ours."""
    return Owned(
        frozenset(n for n in owned.links if n in observed.links),
        frozenset(a for a in owned.addresses if a in observed.addresses),
    )


def plan(
    observed: Observed, desired: DesiredState, owned: Owned = Owned(), proto: int = DEFAULT_PROTO
) -> Plan:
    """The ordered actions that take ``observed`` to ``desired`` touching only what is ours."""
    b = _Builder(observed, prune_ownership(owned, observed), proto)
    wanted_links = {link.name: link for link in desired.links}
    wanted_addrs = {ObservedAddress(a.ifname, a.address) for a in desired.addresses}
    wanted_keys = {r.key for r in desired.routes}
    keep_links = set(wanted_links) | _peers_of(desired)

    # 1. deletions: our routes no longer wanted, then our links no longer wanted.
    for route in sorted(b.state.routes, key=_route_sort_key):
        if route.proto == proto and route.key not in wanted_keys:
            b.do(DelRoute(route))
    for name in sorted(b.owned.links):
        if name not in keep_links and name in b.state.links:
            b.do(DeleteLink(name))
    # A link of ours whose creation parameters drifted is recreated; a foreign one is reported
    # and left entirely alone (no settings, addresses or routes on it).
    squatted: set[str] = set()
    for spec in desired.links:
        current = b.state.links.get(spec.name)
        if spec.kind is None or current is None:
            continue
        if current.kind != spec.kind.value or current.identity != spec.identity:
            if spec.name in b.owned.links:
                b.do(DeleteLink(spec.name))
            else:
                squatted.add(spec.name)
                b.unresolved.append(f"link {spec.name}: exists with other parameters, not created by us")

    # 2. creations, layer by layer.
    for spec in desired.links:
        if spec.name in b.state.links:
            continue
        if spec.kind is None:
            b.unresolved.append(f"link {spec.name}: not present (an existing port is expected)")
        elif spec.peer is not None and spec.peer in b.state.links:
            b.unresolved.append(f"link {spec.name}: veth peer name {spec.peer} is taken")
        elif spec.parent is not None and spec.parent not in b.state.links:
            b.unresolved.append(f"link {spec.name}: parent {spec.parent} is not present")
        else:
            b.do(CreateLink(spec))
    for spec in desired.links:
        current = b.state.links.get(spec.name)
        if current is None or (spec.kind is not None and current.identity != spec.identity):
            continue
        up = spec.state == "up"
        master = spec.master if spec.master is not None and current.master != spec.master else None
        if master is not None and master not in b.state.links:
            b.unresolved.append(f"link {spec.name}: master {master} is not present")
            master = None
        change = SetLink(
            spec.name,
            up=up if current.up != up else None,
            mtu=spec.mtu if spec.mtu is not None and current.mtu != spec.mtu else None,
            master=master,
        )
        if (change.up, change.mtu, change.master) != (None, None, None):
            b.do(change)
    for addr in sorted(wanted_addrs):
        if addr in b.state.addresses or addr.ifname in squatted:
            continue
        if addr.ifname in b.state.links:
            b.do(AddAddress(addr))
        else:
            b.unresolved.append(f"address {addr.address} on {addr.ifname}: link not present")
    # Stale addresses go only after the new ones are in (make before break): a link that loses
    # its last IPv4 address loses all its routes, foreign ones included.
    for addr in sorted(b.owned.addresses):
        if addr not in wanted_addrs and addr in b.state.addresses:
            b.do(DelAddress(addr))
    for want in desired.routes:
        if any(_route_matches(r, want, proto) for r in b.state.routes):
            continue
        problem = _route_problem(b.state, want, proto)
        if problem is None and want.dev in squatted:
            problem = f"dev {want.dev} is not the link declared"
        if problem is None:
            b.do(ReplaceRoute(want))
        else:
            b.unresolved.append(f"route {want.dst} table {want.table}: {problem}")
    return Plan(tuple(b.actions), tuple(b.unresolved), b.owned)


def _route_problem(state: Observed, spec: RouteSpec, proto: int) -> str | None:
    foreign = [r for r in state.routes if r.key == spec.key and r.proto != proto]
    if foreign:
        # Replacing it would delete a route we did not create; a different metric avoids this.
        return f"metric {spec.metric} is taken by a route the agent did not create (proto {foreign[0].proto})"
    if spec.dev is not None:
        link = state.links.get(spec.dev)
        if link is None:
            return f"dev {spec.dev} not present"
        if not link.up:
            return f"dev {spec.dev} is down"
    if spec.gateway is not None and resolve_dev(state, spec.gateway, spec.dev) is None:
        return f"gateway {spec.gateway} is not on a connected subnet of an up link"
    return None


def _route_sort_key(route: ObservedRoute) -> tuple[int, int, int, int]:
    return (route.table, int(route.dst.network_address), route.dst.prefixlen, route.metric)


def satisfied(observed: Observed, desired: DesiredState, proto: int = DEFAULT_PROTO) -> list[str]:
    """What of ``desired`` is not (yet) true in ``observed``: empty when converged."""
    missing: list[str] = []
    for spec in desired.links:
        link = observed.links.get(spec.name)
        if link is None:
            missing.append(f"link {spec.name} absent")
            continue
        if link.up != (spec.state == "up"):
            missing.append(f"link {spec.name} not {spec.state}")
        if spec.mtu is not None and link.mtu != spec.mtu:
            missing.append(f"link {spec.name} mtu {link.mtu} != {spec.mtu}")
        if spec.master is not None and link.master != spec.master:
            missing.append(f"link {spec.name} not in {spec.master}")
    for addr in desired.addresses:
        if ObservedAddress(addr.ifname, addr.address) not in observed.addresses:
            missing.append(f"address {addr.address} absent from {addr.ifname}")
    for route in desired.routes:
        if not any(_route_matches(r, route, proto) for r in observed.routes):
            missing.append(f"route {route.dst} table {route.table} metric {route.metric} absent")
    return missing
