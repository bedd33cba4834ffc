"""The desired network state of the gateway box: links, addresses and static routes, versioned.

It comes from the ``desired`` section of the agent's YAML file or from ``edge/<site>/desired``
over MQTT, and is validated whole: one problem refuses the whole document (nothing is applied).

The shape follows the private-line router procedure of the seeds ([002] L533–664): an
interface address on the operator link (a /30 interconnect), a tunnel toward the core, static
routes (terminal pool → tunnel, core address → the interconnect peer), and the configuration
saved so it survives a reboot (the agent persists what it applied).

Optional link attributes (``mtu``, ``master``) mean "don't care" when absent: the agent only
changes what the document states. Only IPv4 is modelled, as in the seeds.
"""

from __future__ import annotations

from enum import StrEnum
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Linux IFNAMSIZ is 16 including the terminating NUL.
IfName = Annotated[str, Field(min_length=1, max_length=15, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]

# Route tables 0 (unspec) and 255 (local) are the kernel's; 253 default, 254 main are fine.
RouteTable = Annotated[int, Field(ge=1, le=2**31 - 1)]

VXLAN_DEFAULT_PORT = 4789  # IANA-assigned VXLAN port (RFC 7348 §5)

LinkIdentity = tuple[tuple[str, str], ...]


class LinkKind(StrEnum):
    """Link kinds the agent can create. Whether the running kernel has them is probed at apply."""

    VETH = "veth"
    BRIDGE = "bridge"
    VXLAN = "vxlan"
    VLAN = "vlan"
    GRE = "gre"


class Strict(BaseModel):
    """Base of every schema here: unknown keys are errors, values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_KIND_FIELDS: dict[LinkKind | None, frozenset[str]] = {
    None: frozenset(),
    LinkKind.VETH: frozenset({"peer"}),
    LinkKind.BRIDGE: frozenset(),
    LinkKind.VXLAN: frozenset({"vni", "remote", "local", "port", "parent"}),
    LinkKind.VLAN: frozenset({"vlan_id", "parent"}),
    LinkKind.GRE: frozenset({"remote", "local"}),
}
_KIND_REQUIRED: dict[LinkKind | None, frozenset[str]] = {
    None: frozenset(),
    LinkKind.VETH: frozenset({"peer"}),
    LinkKind.BRIDGE: frozenset(),
    LinkKind.VXLAN: frozenset({"vni"}),
    LinkKind.VLAN: frozenset({"vlan_id", "parent"}),
    LinkKind.GRE: frozenset({"remote"}),
}
_ALL_KIND_FIELDS = frozenset().union(*_KIND_FIELDS.values())


class LinkSpec(Strict):
    """One network interface. ``kind: null`` is an existing (physical) port the agent does not
    create; it only manages its state, MTU and bridge membership."""

    name: IfName
    kind: LinkKind | None = None
    state: Literal["up", "down"] = "up"
    mtu: int | None = Field(default=None, ge=68, le=65535)
    master: IfName | None = None
    peer: IfName | None = None
    vni: int | None = Field(default=None, ge=1, le=2**24 - 1)
    remote: IPv4Address | None = None
    local: IPv4Address | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    parent: IfName | None = None
    vlan_id: int | None = Field(default=None, ge=1, le=4094)

    @model_validator(mode="after")
    def _kind_fields(self) -> Self:
        allowed = _KIND_FIELDS[self.kind]
        kind = self.kind.value if self.kind else "an existing link (kind: null)"
        for name in sorted(_ALL_KIND_FIELDS - allowed):
            if getattr(self, name) is not None:
                raise ValueError(f"'{name}' does not apply to {kind}")
        for name in sorted(_KIND_REQUIRED[self.kind]):
            if getattr(self, name) is None:
                raise ValueError(f"'{name}' is required for {kind}")
        if self.master == self.name:
            raise ValueError("a link cannot be its own master")
        if self.peer == self.name:
            raise ValueError("a veth cannot be its own peer")
        return self

    @property
    def identity(self) -> LinkIdentity:
        """The creation-time parameters; a link whose identity drifted must be recreated."""
        return link_identity(
            peer=self.peer,
            vni=self.vni,
            remote=str(self.remote) if self.remote else None,
            local=str(self.local) if self.local else None,
            port=(self.port or VXLAN_DEFAULT_PORT) if self.kind is LinkKind.VXLAN else None,
            parent=self.parent,
            vlan_id=self.vlan_id,
        )


def link_identity(**params: str | int | None) -> LinkIdentity:
    """Canonical form of creation parameters (absent ones left out), comparable across sources."""
    return tuple(sorted((k, str(v)) for k, v in params.items() if v is not None))


class AddressSpec(Strict):
    """An IPv4 address with prefix on an interface, e.g. the /30 interconnect ``10.166.0.2/30``."""

    ifname: IfName
    address: IPv4Interface


class RouteSpec(Strict):
    """A static route. ``dst: default`` is 0.0.0.0/0. Gateways must be on-link (inside a subnet
    of an address on an up interface), as the seeds' routes toward the interconnect peer are."""

    dst: IPv4Network
    gateway: IPv4Address | None = None
    dev: IfName | None = None
    metric: int = Field(default=0, ge=0, le=2**32 - 1)
    table: RouteTable = 254

    @field_validator("dst", mode="before")
    @classmethod
    def _default_route(cls, value: object) -> object:
        return "0.0.0.0/0" if value == "default" else value

    @model_validator(mode="after")
    def _target(self) -> Self:
        if self.gateway is None and self.dev is None:
            raise ValueError("a route needs a gateway, a dev, or both")
        return self

    @property
    def key(self) -> tuple[int, IPv4Network, int]:
        """What identifies a route in the kernel (tos 0): table, destination and metric."""
        return (self.table, self.dst, self.metric)


class DesiredState(Strict):
    """The whole desired configuration. ``version`` only moves forward."""

    version: int = Field(ge=0)
    links: tuple[LinkSpec, ...] = ()
    addresses: tuple[AddressSpec, ...] = ()
    routes: tuple[RouteSpec, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> Self:
        names: set[str] = set()
        for link in self.links:
            if link.name in names:
                raise ValueError(f"link {link.name!r} is declared twice")
            names.add(link.name)
        by_name = {link.name: link for link in self.links}
        for link in self.links:
            if link.peer is not None and link.peer in by_name and by_name[link.peer].kind is not None:
                raise ValueError(f"veth peer {link.peer!r} of {link.name!r} is declared with its own kind")
            for ref, what in ((link.master, "master"), (link.parent, "parent")):
                if ref is not None and ref not in by_name:
                    raise ValueError(f"{what} {ref!r} of link {link.name!r} is not declared in links")
            if link.master is not None and by_name[link.master].kind not in (None, LinkKind.BRIDGE):
                raise ValueError(f"master {link.master!r} of link {link.name!r} is not a bridge")
        peers = [link.peer for link in self.links if link.peer is not None]
        if len(peers) != len(set(peers)):
            raise ValueError("two veths declare the same peer name")
        seen_addr: set[tuple[str, IPv4Interface]] = set()
        for addr in self.addresses:
            if addr.ifname not in by_name:
                raise ValueError(f"address {addr.address} is on {addr.ifname!r}, not declared in links")
            if (addr.ifname, addr.address) in seen_addr:
                raise ValueError(f"address {addr.address} on {addr.ifname!r} is declared twice")
            seen_addr.add((addr.ifname, addr.address))
        seen_routes: set[tuple[int, IPv4Network, int]] = set()
        for route in self.routes:
            if route.dev is not None and route.dev not in by_name:
                raise ValueError(f"route {route.dst} uses dev {route.dev!r}, which is not declared in links")
            if route.key in seen_routes:
                raise ValueError(
                    f"route {route.dst} (table {route.table}, metric {route.metric}) is declared twice"
                )
            seen_routes.add(route.key)
        return self

    @property
    def kinds(self) -> frozenset[LinkKind]:
        return frozenset(link.kind for link in self.links if link.kind is not None)
