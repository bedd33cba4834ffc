"""Trunks: who may talk to the gateway, how they are recognised, and what they may do.

The trunk file (``config/trunks.yaml``, named by ``registrar.trunks`` in ``config/gateway.yaml``)
lists three kinds of trunk (field ``kind``):

``registering``
    IADs (each line registers its own number) and IP-PBXs (register a pilot number and take
    calls for a DID range). Credentials per line, or per device: a line without its own
    ``username`` authenticates as its number; without its own ``password`` it uses the trunk's.
    Credentials of a line may register only that line; device credentials (trunk ``username``)
    may register every line of the device (RFC 3261 §10.3 step 6 authorisation).
``peer``
    Static peers (IP-PBX, TDM-PBX + SIP gateway) recognised by source address: IP or network
    range, optional port, transport; several trunks behind one address are told apart by port,
    or by From user / host when configured.
``carrier``
    Upstream toward the IMS core / PSTN: destinations with priority and weight, each static or
    registering outbound with its own credentials.

A registering trunk's lines authenticate their INVITEs too (``invite_auth``: 407 Proxy-Authenticate,
RFC 3261 §22.3); a static peer may be pinned to a transport (``transport`` on the trunk or its
``match`` entry: a request over another transport does not match it).

Every trunk has an enterprise ``group``, ``allowed_numbers`` (what it may present as caller),
``max_calls``, ``max_cps``, ``transport`` and ``enabled``.

Loading compiles the file into a :class:`TrunkTable` once: lookup by username, by registered
number, and by source address (:meth:`TrunkTable.identify`). Overlapping identification of two
peers, duplicate usernames or numbers owned twice are errors naming the file, line and field.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.datafile import (
    DataFileError,
    FieldPath,
    PositionIndex,
    Problem,
    format_field,
    problems_from_validation,
    read_yaml,
    validate_data,
)
from gateway.sip.address import Address, Transport

Port = Annotated[int, Field(ge=1, le=65535)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NUMBER_CHARS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class NumberRange:
    """Numbers ``first``..``last`` of equal length (digits, optional leading ``+``)."""

    first: str
    last: str

    @classmethod
    def parse(cls, text: object) -> NumberRange:
        if isinstance(text, NumberRange):
            return text
        if not isinstance(text, str):
            raise ValueError("write numbers as quoted strings (a YAML number loses leading zeros)")
        first, sep, last = text.strip().partition("-")
        first, last = first.strip(), (last.strip() if sep else first.strip())
        for num in (first, last):
            digits = num[1:] if num.startswith("+") else num
            if not digits or len(digits) > 32 or not set(digits) <= _NUMBER_CHARS:
                raise ValueError(f"{num!r} is not a number (digits, optional leading '+')")
        if len(first) != len(last) or first.startswith("+") != last.startswith("+"):
            raise ValueError(f"range {text!r}: both ends must have the same length")
        if first > last:
            raise ValueError(f"range {text!r}: first number is greater than the last")
        return cls(first, last)

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, str) or len(number) != len(self.first):
            return False
        return self.first <= number <= self.last

    def __iter__(self) -> Iterator[str]:
        plus = "+" if self.first.startswith("+") else ""
        lo, hi = int(self.first.lstrip("+")), int(self.last.lstrip("+"))
        width = len(self.first) - len(plus)
        for n in range(lo, hi + 1):
            yield f"{plus}{n:0{width}d}"

    def __len__(self) -> int:
        return int(self.last.lstrip("+")) - int(self.first.lstrip("+")) + 1

    def overlaps(self, other: NumberRange) -> bool:
        return len(self.first) == len(other.first) and self.first <= other.last and other.first <= self.last

    def __str__(self) -> str:
        return self.first if self.first == self.last else f"{self.first}-{self.last}"


Numbers = Annotated[list[NumberRange], Field(default_factory=list)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


def _ranges(value: object) -> list[NumberRange]:
    """A range or a list of ranges, as written in the file."""
    return [NumberRange.parse(v) for v in (value if isinstance(value, list) else [value])]


class TrunkBase(_Model):
    """What every trunk has."""

    name: Name
    group: Name
    allowed_numbers: Numbers
    max_calls: int = Field(default=30, ge=1, le=100_000)
    max_cps: float = Field(default=5.0, gt=0, le=10_000)
    # Toll-fraud guard: concurrent international calls from this trunk (none: only max_calls).
    max_international_calls: int | None = Field(default=None, ge=0, le=100_000)
    transport: Transport = "udp"
    enabled: bool = True

    _check_allowed = field_validator("allowed_numbers", mode="before")(_ranges)


class Line(_Model):
    """Numbers a registering device registers, with optional own credentials."""

    numbers: list[NumberRange]
    username: str | None = Field(default=None, min_length=1, max_length=128)
    password: str | None = Field(default=None, min_length=1, max_length=256)

    _check_numbers = field_validator("numbers", mode="before")(_ranges)

    @model_validator(mode="after")
    def _username_for_one_number(self) -> Line:
        if self.username is not None and sum(len(r) for r in self.numbers) != 1:
            raise ValueError("a line 'username' applies to one number; use the trunk 'username' for a device")
        return self


class RegisteringTrunk(TrunkBase):
    """IAD or IP-PBX that registers (RFC 3261 §10)."""

    kind: Literal["registering"]
    lines: list[Line] = Field(min_length=1)
    username: str | None = Field(default=None, min_length=1, max_length=128)
    password: str | None = Field(default=None, min_length=1, max_length=256)
    # DIDs reached through the registration of a pilot line (IP-PBX); calls go to its contact.
    dids: Numbers
    pilot: str | None = None
    # Proxy authentication (407, RFC 3261 §22.3) of the INVITEs (REFER, MESSAGE, SUBSCRIBE) the
    # lines send: always; off_net: only calls that leave the group (to a carrier trunk); never:
    # a line is trusted by the address it registered from (only for a closed access network).
    invite_auth: Literal["always", "off_net", "never"] = "always"

    _check_dids = field_validator("dids", mode="before")(_ranges)

    @model_validator(mode="after")
    def _credentials_complete(self) -> RegisteringTrunk:
        if self.username is not None and self.password is None:
            raise ValueError("a trunk 'username' needs the trunk 'password'")
        if self.password is None and any(line.password is None for line in self.lines):
            raise ValueError("every line needs a password: give the trunk a 'password' or each line its own")
        if self.dids and self.pilot is None:
            raise ValueError("'dids' need a 'pilot' line number to deliver them to")
        if self.pilot is not None and not any(self.pilot in r for line in self.lines for r in line.numbers):
            raise ValueError(f"pilot {self.pilot!r} is not one of the trunk's lines")
        return self

    def numbers(self) -> Iterator[str]:
        for line in self.lines:
            for r in line.numbers:
                yield from r


class PeerMatch(_Model):
    """How a static peer is recognised: source IP or network, port (any if absent), From user/host."""

    host: str | None = None
    network: str | None = None
    port: Port | None = None
    transport: Transport | None = None  # default: the trunk's
    from_host: str | None = None
    from_users: Numbers
    # TLS only: a connection from this address must present a client certificate (checked
    # against sip.tls.ca_certificates) naming one of these (subjectAltName DNS / IP, or CN);
    # otherwise it is closed (RFC 3261 §26.3.2.2, gateway.security.guard.TlsPeerPolicy).
    tls_names: list[str] = Field(default_factory=list)

    _check_from_users = field_validator("from_users", mode="before")(_ranges)

    @model_validator(mode="after")
    def _one_address(self) -> PeerMatch:
        if (self.host is None) == (self.network is None):
            raise ValueError("give exactly one of 'host' (an IP address) or 'network' (a CIDR range)")
        try:
            if self.host is not None:
                ipaddress.ip_address(self.host)
            else:
                ipaddress.ip_network(self.network or "", strict=True)
        except ValueError as exc:
            raise ValueError(str(exc)) from exc
        return self

    def ip_network(self) -> IpNetwork:
        return ipaddress.ip_network(self.host if self.host is not None else self.network or "")


class PeerTrunk(TrunkBase):
    """A static peer trunk (IP-PBX, TDM-PBX + SIP gateway)."""

    kind: Literal["peer"]
    match: list[PeerMatch] = Field(min_length=1)
    dids: Numbers  # numbers the gateway delivers to this peer

    _check_dids = field_validator("dids", mode="before")(_ranges)

    @model_validator(mode="after")
    def _tls_names_on_tls(self) -> PeerTrunk:
        for match in self.match:
            if match.tls_names and (match.transport or self.transport) != "tls":
                raise ValueError("match.tls_names needs transport: tls (on the match or the trunk)")
        return self


class OutboundRegistration(_Model):
    """Client registration of the gateway at a carrier destination (RFC 3261 §10.2)."""

    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=256)
    aor: str | None = None  # default sip:<username>@<host>
    expires: int = Field(default=3600, ge=60, le=86_400)


class CarrierDestination(_Model):
    host: str
    port: Port = 5060
    transport: Transport | None = None
    priority: int = Field(default=10, ge=0, le=65_535)  # lower is tried first (as DNS SRV)
    weight: int = Field(default=100, ge=0, le=65_535)
    # "register" in the file; renamed here because BaseModel has no room for that name.
    registration: OutboundRegistration | None = Field(default=None, alias="register")

    @field_validator("host")
    @classmethod
    def _ip(cls, value: str) -> str:
        ipaddress.ip_address(value)
        return value


class CarrierTrunk(TrunkBase):
    """Upstream toward the IMS core / PSTN; ``group`` may be ``*`` (all groups)."""

    kind: Literal["carrier"]
    group: str = Field(default="*", pattern=r"^(\*|[A-Za-z0-9._-]{1,64})$")
    destinations: list[CarrierDestination] = Field(min_length=1)


    def address_of(self, destination: CarrierDestination) -> Address:
        return Address(destination.transport or self.transport, destination.host, destination.port)

    def ordered_destinations(
        self, is_up: Callable[[Address], bool], rng: random.Random
    ) -> list[CarrierDestination]:
        """The destinations to try, in order: by priority (lower first), weighted random within a
        priority (as DNS SRV, RFC 2782 §"Usage rules"), those ``is_up`` says are down left out."""
        usable = [d for d in self.destinations if is_up(self.address_of(d))]
        ordered: list[CarrierDestination] = []
        for priority in sorted({d.priority for d in usable}):
            group = [d for d in usable if d.priority == priority]
            while group:
                pick = rng.uniform(0, sum(d.weight for d in group))
                for i, d in enumerate(group):
                    pick -= d.weight
                    if pick <= 0 or i == len(group) - 1:
                        ordered.append(group.pop(i))
                        break
        return ordered


Trunk = Annotated[RegisteringTrunk | PeerTrunk | CarrierTrunk, Field(discriminator="kind")]


def may_present(trunk: RegisteringTrunk | PeerTrunk | CarrierTrunk, number: str) -> bool:
    """May ``trunk`` present ``number`` as the caller? Its ``allowed_numbers``; when none are
    configured, a customer trunk's own lines and DIDs, and any number from a carrier."""
    if trunk.allowed_numbers:
        return any(number in r for r in trunk.allowed_numbers)
    if isinstance(trunk, CarrierTrunk):
        return True
    own = [r for line in trunk.lines for r in line.numbers] if isinstance(trunk, RegisteringTrunk) else []
    return any(number in r for r in [*own, *trunk.dids])


class TrunksFile(_Model):
    """The whole trunk file."""

    trunks: list[Trunk] = Field(default_factory=list)


_KINDS: dict[str, type[RegisteringTrunk | PeerTrunk | CarrierTrunk]] = {
    "registering": RegisteringTrunk, "peer": PeerTrunk, "carrier": CarrierTrunk,
}


class _RawTrunksFile(_Model):
    """The file's outline; each trunk is then validated by the model its ``kind`` names, so
    problems are located at the trunk's own fields (no union tag in the path)."""

    trunks: list[dict[str, Any]] = Field(default_factory=list)


# --- compiled form ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credential:
    """One username the registrar can challenge, and the numbers it may register."""

    username: str
    password: str
    trunk: RegisteringTrunk
    numbers: frozenset[str]


@dataclass(frozen=True, slots=True)
class _PeerRule:
    trunk: PeerTrunk | CarrierTrunk
    network: IpNetwork
    port: int | None
    transport: Transport
    from_host: str | None
    from_users: tuple[NumberRange, ...]
    path: FieldPath

    def matches(self, ip: IpAddress, source: Address, from_user: str | None, from_host: str | None) -> bool:
        if source.transport != self.transport or (self.port is not None and self.port != source.port):
            return False
        if ip not in self.network:
            return False
        if self.from_host is not None and (from_host or "").lower() != self.from_host.lower():
            return False
        return not self.from_users or any(from_user in r for r in self.from_users)

    def may_overlap(self, other: _PeerRule) -> bool:
        """True if some message could match both rules (the ambiguity we refuse)."""
        if self.transport != other.transport or not self.network.overlaps(other.network):
            return False
        if self.port is not None and other.port is not None and self.port != other.port:
            return False
        if self.from_host is not None and other.from_host is not None and (
            self.from_host.lower() != other.from_host.lower()
        ):
            return False
        return not (
            self.from_users
            and other.from_users
            and not any(a.overlaps(b) for a in self.from_users for b in other.from_users)
        )


@dataclass
class TrunkTable:
    """The compiled trunk file: every lookup the registrar and routing need, built once."""

    trunks: dict[str, RegisteringTrunk | PeerTrunk | CarrierTrunk] = field(default_factory=dict)
    credentials: dict[str, Credential] = field(default_factory=dict)
    owners: dict[str, RegisteringTrunk] = field(default_factory=dict)  # registrable number -> trunk
    _exact: dict[tuple[Transport, IpAddress], list[_PeerRule]] = field(default_factory=dict)
    _networks: list[_PeerRule] = field(default_factory=list)

    def credential(self, username: str) -> Credential | None:
        cred = self.credentials.get(username)
        return cred if cred is not None and cred.trunk.enabled else None

    def owner_of(self, number: str) -> RegisteringTrunk | None:
        """The registering trunk whose line ``number`` is."""
        return self.owners.get(number)

    def did_pilot(self, number: str) -> str | None:
        """For a DID of a registering PBX, the pilot number whose binding takes its calls."""
        for trunk in self.trunks.values():
            if isinstance(trunk, RegisteringTrunk) and trunk.pilot and any(number in r for r in trunk.dids):
                return trunk.pilot
        return None

    def carriers(self) -> list[CarrierTrunk]:
        return [t for t in self.trunks.values() if isinstance(t, CarrierTrunk) and t.enabled]

    def identify(
        self, source: Address, from_user: str | None = None, from_host: str | None = None
    ) -> PeerTrunk | CarrierTrunk | None:
        """The static peer or carrier trunk a request from ``source`` (with this From) comes from."""
        try:
            ip = ipaddress.ip_address(source.host)
        except ValueError:
            return None
        for rule in self._exact.get((source.transport, ip), ()):
            if rule.matches(ip, source, from_user, from_host):
                return rule.trunk if rule.trunk.enabled else None
        for rule in self._networks:
            if rule.matches(ip, source, from_user, from_host):
                return rule.trunk if rule.trunk.enabled else None
        return None


class TrunkLookup(Protocol):
    """What readers of the trunks use: a :class:`TrunkTable`, or the
    :class:`~gateway.registrar.holder.TrunkHolder` that always answers from the current one."""

    @property
    def trunks(self) -> Mapping[str, RegisteringTrunk | PeerTrunk | CarrierTrunk]: ...

    def credential(self, username: str) -> Credential | None: ...

    def owner_of(self, number: str) -> RegisteringTrunk | None: ...

    def did_pilot(self, number: str) -> str | None: ...

    def carriers(self) -> list[CarrierTrunk]: ...

    def identify(
        self, source: Address, from_user: str | None = None, from_host: str | None = None
    ) -> PeerTrunk | CarrierTrunk | None: ...


def compile_trunks(spec: TrunksFile) -> tuple[TrunkTable, list[tuple[FieldPath, str]]]:
    """Build the lookup table; also return every semantic problem (path, message) found."""
    table = TrunkTable()
    problems: list[tuple[FieldPath, str]] = []
    rules: list[_PeerRule] = []
    number_paths: dict[str, FieldPath] = {}
    user_paths: dict[str, FieldPath] = {}
    for ti, trunk in enumerate(spec.trunks):
        tpath: FieldPath = ("trunks", ti)
        if trunk.name in table.trunks:
            problems.append(((*tpath, "name"), f"trunk name {trunk.name!r} is used twice"))
            continue
        table.trunks[trunk.name] = trunk
        if isinstance(trunk, RegisteringTrunk):
            _compile_registering(trunk, tpath, table, problems, seen=(number_paths, user_paths))
        elif isinstance(trunk, PeerTrunk):
            for mi, m in enumerate(trunk.match):
                rules.append(_PeerRule(trunk, m.ip_network(), m.port, m.transport or trunk.transport,
                                       m.from_host, tuple(m.from_users), (*tpath, "match", mi)))
        else:
            for di, d in enumerate(trunk.destinations):
                transport = d.transport or trunk.transport
                rules.append(_PeerRule(trunk, ipaddress.ip_network(d.host), d.port, transport,
                                       None, (), (*tpath, "destinations", di)))
    for i, a in enumerate(rules):
        for b in rules[i + 1:]:
            if a.trunk is not b.trunk and a.may_overlap(b):
                problems.append((b.path, (
                    f"ambiguous: a request could match both trunk {a.trunk.name!r} ({format_field(a.path)}) "
                    f"and trunk {b.trunk.name!r}; tell them apart by port, from_host or from_users"
                )))
    for rule in rules:
        if rule.network.num_addresses == 1:
            table._exact.setdefault((rule.transport, rule.network.network_address), []).append(rule)
        else:
            table._networks.append(rule)
    return table, problems


def _compile_registering(
    trunk: RegisteringTrunk,
    tpath: FieldPath,
    table: TrunkTable,
    problems: list[tuple[FieldPath, str]],
    *,
    seen: tuple[dict[str, FieldPath], dict[str, FieldPath]],
) -> None:
    number_paths, user_paths = seen

    def add_credential(username: str, password: str, numbers: Iterable[str], path: FieldPath) -> None:
        if username in user_paths:
            where = format_field(user_paths[username])
            problems.append((path, f"username {username!r} already used at {where}"))
            return
        user_paths[username] = path
        table.credentials[username] = Credential(username, password, trunk, frozenset(numbers))

    all_numbers = frozenset(trunk.numbers())
    if trunk.username is not None and trunk.password is not None:
        add_credential(trunk.username, trunk.password, all_numbers, (*tpath, "username"))
    for li, line in enumerate(trunk.lines):
        lpath: FieldPath = (*tpath, "lines", li)
        password = line.password or trunk.password or ""
        for r in line.numbers:
            for number in r:
                if number in number_paths:
                    where = format_field(number_paths[number])
                    problems.append(((*lpath, "numbers"), f"number {number} is already a line at {where}"))
                    continue
                number_paths[number] = (*lpath, "numbers")
                table.owners[number] = trunk
                # A line authenticates as its number unless the line or device has a username.
                if line.username is not None:
                    add_credential(line.username, password, [number], (*lpath, "username"))
                elif trunk.username is None or line.password is not None:
                    add_credential(number, password, [number], (*lpath, "numbers"))


def load_trunks(path: str | Path) -> TrunkTable:
    """Read, validate and compile the trunk file; every problem names file, line and field."""
    source = str(path)
    data, positions = read_yaml(path)
    raw = validate_data(_RawTrunksFile, data, source, positions)
    problems: list[Problem] = []
    trunks: list[RegisteringTrunk | PeerTrunk | CarrierTrunk] = []
    for i, item in enumerate(raw.trunks):
        model = _KINDS.get(str(item.get("kind")))
        if model is None:
            where: FieldPath = ("trunks", i, "kind")
            problems.append(Problem(source, positions.line_of(where), format_field(where),
                                    f"must be one of {', '.join(_KINDS)}"))
            continue
        try:
            trunks.append(model.model_validate(item))
        except ValidationError as exc:
            problems += problems_from_validation(exc, source, positions, ("trunks", i))
    if problems:
        raise DataFileError(problems)
    return build_table(TrunksFile(trunks=trunks), source, positions)


def build_table(
    spec: TrunksFile, source: str = "<trunks>", positions: PositionIndex | None = None
) -> TrunkTable:
    """Compile an already validated trunk file; semantic problems raise DataFileError."""
    table, problems = compile_trunks(spec)
    if problems:
        index = positions or PositionIndex()
        raise DataFileError([Problem(source, index.line_of(p), format_field(p), msg) for p, msg in problems])
    return table
