"""pyroute2 (async API) adapter: observe the kernel into :class:`~edge_agent.reconcile.Observed`,
apply actions, probe which link kinds the running kernel supports, and watch netlink events.

It works in the agent's own network namespace, or in a named one (``netns`` in the config) so a
box can keep its management plane (MQTT) apart from the customer data plane; pyroute2 opens the
netlink sockets inside that namespace.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from socket import AF_INET
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_LINK

from edge_agent.model import LinkKind, LinkSpec, link_identity
from edge_agent.reconcile import (
    Action,
    AddAddress,
    CreateLink,
    DelAddress,
    DeleteLink,
    DelRoute,
    Observed,
    ObservedAddress,
    ObservedLink,
    ObservedRoute,
    ReplaceRoute,
    SetLink,
    describe,
)

log = logging.getLogger(__name__)

IFF_UP = 0x1
RTN_UNICAST = 1
RT_TABLE_LOCAL = 255
RT_TABLE_MAIN = 254


class NetlinkAdapterError(Exception):
    """Netlink failed: an action was refused, or the kernel could not be observed."""


class NetlinkObserveError(NetlinkAdapterError):
    """A dump failed (for instance the managed namespace vanished)."""


class NetlinkApplyError(NetlinkAdapterError):
    """The kernel refused an action."""

    def __init__(self, action: Action, code: int, message: str) -> None:
        self.action = action
        self.code = code
        super().__init__(f"{describe(action)}: {message} (errno {code})")


class NetnsMissingError(Exception):
    """The configured network namespace does not exist (and creating it was not asked for)."""


class UnsupportedLinkKindError(Exception):
    """The running kernel cannot create links of this kind (no module)."""

    def __init__(self, kinds: list[str]) -> None:
        self.kinds = kinds
        super().__init__(f"this kernel does not support link kind(s): {', '.join(kinds)}")


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


class NetlinkAdapter:
    """One netlink socket for requests; :meth:`events` opens its own for notifications."""

    def __init__(self, netns: str | None = None, proto: int = 190, create_netns: bool = False) -> None:
        self.netns = netns
        self.proto = proto
        self.create_netns = create_netns
        self._ipr: AsyncIPRoute | None = None
        self._supported: dict[str, bool] = {}

    def _kwargs(self) -> dict[str, Any]:
        if self.netns is None:
            return {}
        if not self.create_netns and self.netns not in pyroute2_netns.listnetns():
            # pyroute2 would otherwise create it: managing an empty namespace by mistake helps nobody.
            raise NetnsMissingError(f"network namespace {self.netns!r} does not exist")
        return {"netns": self.netns, "flags": os.O_CREAT if self.create_netns else 0}

    async def _ip(self) -> AsyncIPRoute:
        if self._ipr is None:
            self._ipr = AsyncIPRoute(**self._kwargs())
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    # --- observe -----------------------------------------------------------------------

    async def observe(self) -> Observed:
        try:
            return await self._observe()
        except (NetlinkError, OSError) as exc:
            # A broken socket stays broken: open a fresh one next time.
            self.close()
            raise NetlinkObserveError(f"cannot observe the kernel: {exc}") from exc

    async def _observe(self) -> Observed:
        ipr = await self._ip()
        raw_links = [msg async for msg in await ipr.link("dump")]
        names: dict[int, str] = {msg["index"]: _attr(msg, "IFLA_IFNAME") for msg in raw_links}
        links: dict[str, ObservedLink] = {}
        for msg in raw_links:
            link = self._link_from(msg, names)
            links[link.name] = link
        addresses = set()
        async for msg in await ipr.addr("dump", family=AF_INET):
            ifname = names.get(msg["index"])
            if ifname is None:
                continue
            addresses.add(
                ObservedAddress(ifname, IPv4Interface(f"{_attr(msg, 'IFA_ADDRESS')}/{msg['prefixlen']}"))
            )
        routes = set()
        async for msg in await ipr.route("dump", family=AF_INET):
            table = _attr(msg, "RTA_TABLE") or msg["table"]
            if msg["type"] != RTN_UNICAST or table == RT_TABLE_LOCAL:
                continue
            gateway = _attr(msg, "RTA_GATEWAY")
            oif = _attr(msg, "RTA_OIF")
            routes.add(
                ObservedRoute(
                    dst=IPv4Network(f"{_attr(msg, 'RTA_DST') or '0.0.0.0'}/{msg['dst_len']}"),
                    gateway=IPv4Address(gateway) if gateway else None,
                    dev=names.get(oif) if oif is not None else None,
                    metric=_attr(msg, "RTA_PRIORITY") or 0,
                    table=table,
                    proto=msg["proto"],
                )
            )
        return Observed(links, frozenset(addresses), frozenset(routes))

    @staticmethod
    def _link_from(msg: Any, names: dict[int, str]) -> ObservedLink:
        name = _attr(msg, "IFLA_IFNAME")
        master_index = _attr(msg, "IFLA_MASTER")
        info = _attr(msg, "IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
        identity: tuple[tuple[str, str], ...] = ()
        if kind == LinkKind.VETH.value:
            # A peer in another namespace has an index that means nothing here.
            same_ns = _attr(msg, "IFLA_LINK_NETNSID") is None
            peer = names.get(_attr(msg, "IFLA_LINK")) if same_ns else None
            identity = link_identity(peer=peer)
        elif kind == LinkKind.VXLAN.value and data is not None:
            parent = data.get_attr("IFLA_VXLAN_LINK")
            identity = link_identity(
                vni=data.get_attr("IFLA_VXLAN_ID"),
                remote=data.get_attr("IFLA_VXLAN_GROUP"),
                local=data.get_attr("IFLA_VXLAN_LOCAL"),
                port=data.get_attr("IFLA_VXLAN_PORT"),
                parent=names.get(parent) if parent else None,
            )
        elif kind == LinkKind.VLAN.value and data is not None:
            identity = link_identity(
                vlan_id=data.get_attr("IFLA_VLAN_ID"), parent=names.get(_attr(msg, "IFLA_LINK"))
            )
        elif kind == LinkKind.GRE.value and data is not None:
            identity = link_identity(
                remote=data.get_attr("IFLA_GRE_REMOTE"), local=data.get_attr("IFLA_GRE_LOCAL")
            )
        return ObservedLink(
            name=name,
            kind=kind,
            up=bool(msg["flags"] & IFF_UP),
            mtu=_attr(msg, "IFLA_MTU"),
            master=names.get(master_index) if master_index else None,
            identity=identity,
        )

    # --- kinds ---------------------------------------------------------------------------

    async def unsupported_kinds(self, kinds: set[LinkKind]) -> list[str]:
        """Probe each kind once: ask the kernel to create a link with an impossible MTU. Without
        the kind's module the kernel answers EOPNOTSUPP before looking at anything else; with it,
        the MTU is refused (EINVAL) and nothing is created."""
        ipr = await self._ip()
        missing = []
        for kind in sorted(kinds):
            if kind.value not in self._supported:
                name = f"eaprobe{secrets.token_hex(3)}"
                extra: dict[str, Any] = {"peer": {"ifname": f"{name}p"}} if kind is LinkKind.VETH else {}
                try:
                    await ipr.link("add", ifname=name, kind=kind.value, mtu=1, **extra)
                except NetlinkError as exc:
                    self._supported[kind.value] = exc.code != errno.EOPNOTSUPP
                else:  # pragma: no cover - a kernel that accepts MTU 1; clean up our probe
                    self._supported[kind.value] = True
                    await ipr.link("del", ifname=name)
            if not self._supported[kind.value]:
                missing.append(kind.value)
        return missing

    # --- apply ---------------------------------------------------------------------------

    async def apply(self, action: Action) -> None:
        ipr = await self._ip()
        log.info("netlink: %s", describe(action))
        try:
            await self._apply(ipr, action)
        except NetlinkError as exc:
            raise NetlinkApplyError(action, exc.code, str(exc.args[1] if len(exc.args) > 1 else exc)) from exc

    async def _index(self, ipr: AsyncIPRoute, name: str) -> int:
        found = await ipr.link_lookup(ifname=name)
        if not found:
            raise NetlinkError(errno.ENODEV, f"no link named {name}")
        index: int = found[0]
        return index

    async def _apply(self, ipr: AsyncIPRoute, action: Action) -> None:
        match action:
            case CreateLink(spec):
                await ipr.link("add", **await self._create_args(ipr, spec))
            case DeleteLink(name):
                await ipr.link("del", index=await self._index(ipr, name))
            case SetLink(name, up, mtu, master):
                args: dict[str, Any] = {"index": await self._index(ipr, name)}
                if mtu is not None:
                    args["mtu"] = mtu
                if master is not None:
                    args["master"] = await self._index(ipr, master)
                if up is not None:
                    args["state"] = "up" if up else "down"
                await ipr.link("set", **args)
            case AddAddress(addr):
                await ipr.addr(
                    "add",
                    index=await self._index(ipr, addr.ifname),
                    address=str(addr.address.ip),
                    prefixlen=addr.address.network.prefixlen,
                )
            case DelAddress(addr):
                await ipr.addr(
                    "del",
                    index=await self._index(ipr, addr.ifname),
                    address=str(addr.address.ip),
                    prefixlen=addr.address.network.prefixlen,
                )
            case ReplaceRoute(route):
                args = {
                    "dst": str(route.dst),
                    "table": route.table,
                    "priority": route.metric,
                    "proto": self.proto,
                }
                if route.gateway is not None:
                    args["gateway"] = str(route.gateway)
                if route.dev is not None:
                    args["oif"] = await self._index(ipr, route.dev)
                await ipr.route("replace", **args)
            case DelRoute(oroute):
                args = {
                    "dst": str(oroute.dst),
                    "table": oroute.table,
                    "priority": oroute.metric,
                    "proto": oroute.proto,
                }
                if oroute.gateway is not None:
                    args["gateway"] = str(oroute.gateway)
                await ipr.route("del", **args)

    async def _create_args(self, ipr: AsyncIPRoute, spec: LinkSpec) -> dict[str, Any]:
        assert spec.kind is not None  # the planner only creates links with a kind
        args: dict[str, Any] = {"ifname": spec.name, "kind": spec.kind.value}
        match spec.kind:
            case LinkKind.VETH:
                args["peer"] = {"ifname": spec.peer}
            case LinkKind.VXLAN:
                args["vxlan_id"] = spec.vni
                args["vxlan_port"] = spec.port or 4789
                if spec.remote is not None:
                    args["vxlan_group"] = str(spec.remote)
                if spec.local is not None:
                    args["vxlan_local"] = str(spec.local)
                if spec.parent is not None:
                    args["vxlan_link"] = await self._index(ipr, spec.parent)
            case LinkKind.VLAN:
                args["vlan_id"] = spec.vlan_id
                args["link"] = await self._index(ipr, spec.parent or "")
            case LinkKind.GRE:
                args["gre_remote"] = str(spec.remote)
                if spec.local is not None:
                    args["gre_local"] = str(spec.local)
            case LinkKind.BRIDGE:
                pass
        return args

    # --- events --------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[str]:
        """Yield the event name (RTM_NEWLINK, RTM_DELADDR, ...) of every link, IPv4 address and
        IPv4 route notification, until cancelled."""
        ev = AsyncIPRoute(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE, **self._kwargs())
        try:
            await ev.bind()
            while True:
                got = False
                async for msg in ev.get():
                    got = True
                    yield str(msg.get("event"))
                if not got:  # the socket was closed under us
                    return
                await asyncio.sleep(0)
        finally:
            ev.close()
