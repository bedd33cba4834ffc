"""OPTIONS qualify of trunk destinations and registered contacts, with hysteresis.

:class:`Reachability` is the pure state machine: ``failures_to_down`` consecutive failures take a
target down, ``successes_to_up`` consecutive successes bring it back (one lost datagram does not
flap a carrier out of routing). One transition table, as every state machine here.

:class:`Qualifier` sends an OPTIONS (RFC 3261 §11) to each target every ``interval`` seconds
through a :class:`~gateway.registrar.outbound.RequestSender` and feeds the outcome in: any final
response counts as alive (a 4xx / 5xx still proves a SIP stack answers, as Kamailio's dispatcher
``ds_ping_reply_codes`` default), only silence or a transport error counts as a failure.
:meth:`Qualifier.is_up` is what routing asks (a down carrier destination is skipped);
:meth:`Qualifier.snapshot` is for the operations API and metrics.

One process per node probes (the holder of the node's qualify lease, see
:mod:`gateway.cluster.lease`): N workers sending N copies of every OPTIONS would only load the
peers. It writes what it found to a :class:`HealthBoard` after each round; the node's other
workers :meth:`Qualifier.follow` the board, so every worker routes by the same view. The view is
per node, not per cluster: whether a carrier destination answers depends on the node's own
network path to it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.registrar.outbound import NoResponseError, RequestSender
from gateway.sip.address import Address
from gateway.sip.headers import Headers
from gateway.sip.message import Request

log = logging.getLogger(__name__)


class Health(enum.Enum):
    UNKNOWN = "unknown"  # not probed yet: routable (a fresh start must not black-hole traffic)
    UP = "up"
    DOWN = "down"


class Probe(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"


# (state, probe, threshold reached) -> next state. Below the threshold the state stays.
_TRANSITIONS: dict[tuple[Health, Probe, bool], Health] = {
    (Health.UNKNOWN, Probe.SUCCESS, False): Health.UP,
    (Health.UNKNOWN, Probe.SUCCESS, True): Health.UP,
    (Health.UNKNOWN, Probe.FAILURE, False): Health.UNKNOWN,
    (Health.UNKNOWN, Probe.FAILURE, True): Health.DOWN,
    (Health.UP, Probe.SUCCESS, False): Health.UP,
    (Health.UP, Probe.SUCCESS, True): Health.UP,
    (Health.UP, Probe.FAILURE, False): Health.UP,
    (Health.UP, Probe.FAILURE, True): Health.DOWN,
    (Health.DOWN, Probe.SUCCESS, False): Health.DOWN,
    (Health.DOWN, Probe.SUCCESS, True): Health.UP,
    (Health.DOWN, Probe.FAILURE, False): Health.DOWN,
    (Health.DOWN, Probe.FAILURE, True): Health.DOWN,
}


@dataclass
class Reachability:
    """Hysteresis over probe outcomes; see the module docstring."""

    failures_to_down: int = 3
    successes_to_up: int = 2
    state: Health = Health.UNKNOWN
    streak: int = 0  # consecutive probes with the same outcome as the last one
    last: Probe | None = None
    changed_at: float | None = None

    def record(self, probe: Probe, now: float) -> Health:
        self.streak = self.streak + 1 if probe is self.last else 1
        self.last = probe
        threshold = self.successes_to_up if probe is Probe.SUCCESS else self.failures_to_down
        new = _TRANSITIONS[self.state, probe, self.streak >= threshold]
        if new is not self.state:
            self.state = new
            self.changed_at = now
        return new

    @property
    def routable(self) -> bool:
        return self.state is not Health.DOWN


@dataclass
class Target:
    name: str  # e.g. "carrier/127.0.0.1:5070" or "62880001"
    address: Address
    reach: Reachability = field(default_factory=Reachability)


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode()


def _board_key(address: Address) -> str:
    return f"{address.transport}:{address.hostport()}"


class HealthBoard(Protocol):
    """Where the probing worker leaves the node's view for the others (field: ``transport:host:port``)."""

    async def publish(self, states: dict[str, Health], ttl: float) -> None: ...
    async def read(self) -> dict[str, Health]: ...


@dataclass
class RedisHealthBoard:
    """The view in one Redis hash, expiring when nobody has written it for ``ttl`` seconds (a
    board left by a dead prober is not followed for ever: the followers then keep what they had)."""

    client: aioredis.Redis
    key: str

    async def publish(self, states: dict[str, Health], ttl: float) -> None:
        if not states:
            return
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.key, mapping={name: state.value for name, state in states.items()})
            pipe.pexpire(self.key, max(1, round(ttl * 1000)))
            await pipe.execute()

    async def read(self) -> dict[str, Health]:
        raw = await self.client.hgetall(self.key)
        states: dict[str, Health] = {}
        for name, value in raw.items():
            try:
                states[_text(name)] = Health(_text(value))
            except ValueError:
                continue  # written by a newer release: not ours to interpret
        return states


class Qualifier:
    """Probes targets with OPTIONS every ``interval`` seconds; ``await run()`` until cancelled."""

    def __init__(
        self,
        sender: RequestSender,
        *,
        interval: float = 30.0,
        failures_to_down: int = 3,
        successes_to_up: int = 2,
    ) -> None:
        self._sender = sender
        self.interval = interval
        self._failures_to_down = failures_to_down
        self._successes_to_up = successes_to_up
        self.targets: dict[Address, Target] = {}
        self.board: HealthBoard | None = None

    def watch(self, targets: Iterable[tuple[str, Address]]) -> None:
        """Set the targets (kept state survives for addresses still watched)."""
        wanted = {address: name for name, address in targets}
        self.targets = {
            address: self.targets.get(address) or Target(name, address, Reachability(
                self._failures_to_down, self._successes_to_up))
            for address, name in wanted.items()
        }

    def is_up(self, address: Address) -> bool:
        """Routable: up, or not probed yet. Unwatched addresses are routable."""
        target = self.targets.get(address)
        return target is None or target.reach.routable

    def snapshot(self) -> list[dict[str, object]]:
        return [
            {"name": t.name, "address": f"{t.address.transport}:{t.address.hostport()}",
             "state": t.reach.state.value, "streak": t.reach.streak, "changed_at": t.reach.changed_at}
            for t in self.targets.values()
        ]

    async def run(self) -> None:
        while True:
            await asyncio.gather(*(self.probe(t) for t in list(self.targets.values())))
            await self._publish()
            await asyncio.sleep(self.interval)

    async def follow(self, probing: Callable[[], bool]) -> None:
        """Take the node's view from the board every half interval while another worker probes
        (``probing()`` false); until cancelled. An unreadable board keeps the last view."""
        while True:
            if not probing() and self.board is not None:
                try:
                    states = await self.board.read()
                except (RedisError, OSError) as exc:
                    log.warning("qualify: cannot read the node's view: %s", exc)
                else:
                    self.adopt(states)
            await asyncio.sleep(self.interval / 2)

    def adopt(self, states: dict[str, Health]) -> None:
        """Take the probing worker's verdicts (targets it has not judged keep theirs)."""
        for target in self.targets.values():
            state = states.get(_board_key(target.address))
            if state is not None and state is not target.reach.state:
                target.reach.state = state
                target.reach.streak = 0

    async def _publish(self) -> None:
        if self.board is None:
            return
        states = {_board_key(t.address): t.reach.state for t in self.targets.values()}
        try:
            await self.board.publish(states, ttl=3 * self.interval)
        except (RedisError, OSError) as exc:
            log.warning("qualify: cannot share the node's view: %s", exc)

    async def probe(self, target: Target) -> Health:
        now = asyncio.get_running_loop().time
        try:
            await self._sender.send_request(self._options(target.address), target.address)
            outcome = Probe.SUCCESS
        except (NoResponseError, OSError):
            outcome = Probe.FAILURE
        except ValueError as exc:  # e.g. no listener of the target's transport: never reachable
            log.error("qualify: cannot probe %s (%s): %s", target.name, target.address.hostport(), exc)
            outcome = Probe.FAILURE
        before = target.reach.state
        after = target.reach.record(outcome, now())
        if after is not before:
            log.warning("qualify: %s (%s) is %s", target.name, target.address.hostport(), after.value)
        return after

    def _options(self, destination: Address) -> Request:
        local = self._sender.local_address(destination.transport)
        uri = f"sip:{destination.hostport()}"
        headers = Headers()
        headers.add("Via", f"SIP/2.0/{local.transport.upper()} {local.hostport()};rport")
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:qualify@{local.hostport()}>;tag={uuid.uuid4().hex[:10]}")
        headers.add("To", f"<{uri}>")
        headers.add("Call-ID", f"{uuid.uuid4().hex}@gateway")
        headers.add("CSeq", "1 OPTIONS")
        headers.add("Accept", "application/sdp")
        return Request("OPTIONS", uri, headers)
