"""Orchestration: the desired state, the reconcile loop driven by netlink events, scheduled
checks, and MQTT reporting; background work in tracked tasks; ordered shutdown.

Lifecycle: :meth:`Agent.start` loads the persisted last-applied state (and the config's local
desired state when it is newer), converges, then starts the tasks; :meth:`Agent.stop` stops
watching and checking, makes a last state report, gives the MQTT queue a moment to drain and
closes the netlink socket. What could not be delivered stays in the on-disk queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from edge_agent import __version__, confirm, survivable
from edge_agent.checks import Checker, TargetResult
from edge_agent.config import AgentConfig
from edge_agent.localgw import LocalGateway
from edge_agent.model import DesiredState
from edge_agent.mqtt import DiskQueue, MqttLink, Topics
from edge_agent.netlink import (
    NetlinkAdapter,
    NetlinkAdapterError,
    NetlinkApplyError,
    UnsupportedLinkKindError,
)
from edge_agent.reconcile import Action, Observed, Owned, describe, plan, prune_ownership, track_ownership
from edge_agent.signing import ControlRefusedError, Refusal, Verified, load_public_keys, verify
from edge_agent.store import Accepted, ControlSeqStore, StateStore
from gateway.datafile import DataFileError, validate_data

log = logging.getLogger(__name__)

EMPTY = DesiredState(version=0)


class DesiredRefusedError(Exception):
    """A desired state refused whole before anything was changed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class ApplyFailedError(Exception):
    """The kernel refused part of a desired state; the last good one was restored."""


class Agent:
    def __init__(self, config: AgentConfig, adapter: NetlinkAdapter | None = None) -> None:
        self.config = config
        self.proto = config.reconcile.rtproto
        self.adapter = adapter or NetlinkAdapter(config.netns, self.proto, config.netns_create)
        self.store = StateStore(config.state_dir)
        self.checker = Checker(config.checks, config.netns)
        self.topics = Topics(config.site)
        self.applied: DesiredState | None = None
        self.owned = Owned()
        self.observed: Observed | None = None
        self.unresolved: tuple[str, ...] = ()
        self.reachability: list[TargetResult] = []
        self.reachability_at: float | None = None
        self.boot = secrets.token_hex(4)
        self.last_heal_ms: float | None = None
        self.heals = 0
        self._event_seq = 0
        self._lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._dirty_since: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._control_keys = load_public_keys(config.control.public_keys)
        self._seq_store = ControlSeqStore(config.state_dir)
        self._accepted: dict[str, Accepted] = {}
        self._commands: asyncio.Queue[Any] = asyncio.Queue(config.control.queue_max)
        self.pending: confirm.Pending | None = None
        self.version_floor = 0
        self._broker_marker: int | None = None
        self._confirm_wake = asyncio.Event()
        self.survival = survivable.Survival()
        self.survival_since: float | None = None
        self.local_gateway: LocalGateway | None = None
        if config.survivable is not None:
            self.local_gateway = LocalGateway(
                config.survivable.gateway_config, config.state_dir, config.netns
            )
        self.mqtt: MqttLink | None = None
        if config.mqtt is not None:
            self.mqtt = MqttLink(
                config.mqtt,
                site=config.site,
                queue=DiskQueue(config.state_dir / "queue", config.mqtt.queue_max),
                on_message=self._on_message,
                will_payload=self._offline_payload(),
                on_connect=self._on_connect,
            )

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._accepted = self._seq_store.load()
        saved = self.store.load()
        if saved is not None:
            self.applied, self.owned = saved.desired, saved.owned
            self.pending, self.version_floor = saved.pending, saved.version_floor
            log.info("reapplying saved desired state version %d", saved.desired.version)
        async with self._lock:
            try:
                await self._heal()
            except NetlinkAdapterError as exc:  # the reconcile loop retries with back-off
                log.error("saved desired state not fully reapplied: %s", exc)
                self.event("heal_failed", reason="start", error=str(exc))
        local = self.config.desired
        if local is not None and (self.applied is None or local.version > self.applied.version):
            try:
                await self.set_desired(local, "config")
            except (DesiredRefusedError, ApplyFailedError) as exc:
                log.error("local desired state version %d not applied: %s", local.version, exc)
        self._spawn(self._watch_netlink(), "netlink-events")
        self._spawn(self._reconcile_loop(), "reconcile")
        if self.config.checks.targets:
            self._spawn(self._checks_loop(), "checks")
        if self.local_gateway is not None:
            assert self.config.survivable is not None
            stale = await self.local_gateway.reap_stale(self.config.survivable.stop_grace_s)
            if stale is not None:
                self.event("survivable_stale_stopped", pid=stale)
            self._spawn(self._survivable_loop(), "survivable")
        if self.config.confirm.timeout_s > 0 or self.pending is not None:
            self._spawn(self._confirm_loop(), "confirm")
        if self.mqtt is not None:
            self._spawn(self._command_loop(), "commands")
            self._spawn(self.mqtt.run(), "mqtt")

    async def stop(self, drain_s: float = 2.0) -> None:
        mqtt_tasks = {t for t in self._tasks if t.get_name() == "mqtt"}
        for task in self._tasks - mqtt_tasks:  # stop accepting: no more events, heals, checks
            task.cancel()
        await asyncio.gather(*(self._tasks - mqtt_tasks), return_exceptions=True)
        if self.mqtt is not None:
            # A clean stop sends DISCONNECT, so the broker keeps the will: say offline ourselves.
            final = {**self.state(), "online": False}
            self.mqtt.publish(self.topics.state, json.dumps(final).encode(), retain=True, coalesce=True)
            if self.mqtt.connected.is_set():  # otherwise it stays queued on disk for next time
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.mqtt.idle.wait(), drain_s)
        if self.local_gateway is not None and self.local_gateway.pid is not None:
            assert self.config.survivable is not None
            await self.local_gateway.stop(self.config.survivable.stop_grace_s)
        for task in mqtt_tasks:
            task.cancel()
        await asyncio.gather(*mqtt_tasks, return_exceptions=True)
        self._tasks.clear()
        self.adapter.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    # --- desired state -----------------------------------------------------------------

    async def set_desired(self, desired: DesiredState, source: str) -> str:
        """Apply a new desired state whole or not at all. Returns "applied" or "unchanged"."""
        async with self._lock:
            current = self.applied
            if current is not None and desired == current:
                return "unchanged"
            floor = max(self.version_floor, current.version if current else 0)
            if (current is not None or self.version_floor) and desired.version <= floor:
                # A version rolled back by commit confirmed counts too: it is not taken again.
                self._refuse(
                    source,
                    desired.version,
                    [f"version {desired.version} is not newer than version {floor} (applied or rolled back)"],
                )
            missing = await self.adapter.unsupported_kinds(set(desired.kinds))
            if missing:
                self._refuse(source, desired.version, [str(UnsupportedLinkKindError(missing))])
            try:
                actions = await self._converge(desired)
            except NetlinkAdapterError as exc:
                await self._rollback(current or EMPTY, desired.version, exc, source)
                raise ApplyFailedError(f"version {desired.version}: {exc}; rolled back") from exc
            self._arm_confirmation(current, desired, source)
            self.applied = desired
            self.version_floor = max(self.version_floor, desired.version)
            self._save()
            marker = self.event(
                "desired_applied",
                version=desired.version,
                source=source,
                actions=[describe(a) for a in actions],
                unresolved=list(self.unresolved),
                confirm_deadline=self.pending.deadline if self.pending else None,
            )
            if self.pending is not None:
                self._broker_marker = marker  # its PUBACK proves the management path after the change
                self._confirm_wake.set()
            self.report()
            return "applied"

    def _refuse(self, source: str, version: int | None, problems: list[str]) -> None:
        self.event("desired_refused", source=source, version=version, problems=problems)
        raise DesiredRefusedError(problems)

    async def _rollback(self, good: DesiredState, version: int, cause: Exception, source: str) -> None:
        log.error(
            "desired state version %d failed (%s); rolling back to version %d", version, cause, good.version
        )
        try:
            await self._converge(good)
        except NetlinkAdapterError as exc:
            log.critical("rollback to version %d failed: %s", good.version, exc)
            self.event("rollback_failed", version=good.version, error=str(exc))
        self._save()
        self.event(
            "desired_failed",
            source=source,
            version=version,
            error=str(cause),
            rolled_back_to=self.applied.version if self.applied else None,
        )
        self.report()

    async def _converge(self, desired: DesiredState) -> list[Action]:
        """Observe, plan, apply until nothing is left to do (bounded); raises NetlinkAdapterError."""
        done: list[Action] = []
        retried = False
        for _ in range(self.config.reconcile.max_passes):
            observed = await self.adapter.observe()
            self.owned = prune_ownership(self.owned, observed)
            result = plan(observed, desired, self.owned, self.proto)
            self.observed, self.unresolved = observed, result.unresolved
            if result.empty:
                return done
            try:
                for action in result.actions:
                    await self.adapter.apply(action)
                    self.owned = track_ownership(self.owned, action)
                    done.append(action)
            except NetlinkApplyError as exc:
                # The observation is three dumps, not a snapshot: a change racing between them
                # can make one action fail. Plan once more on a fresh observation; a second
                # failure is real.
                if retried:
                    raise
                retried = True
                log.info("retrying on a fresh observation after: %s", exc)
        # Something keeps undoing our changes (another manager fighting over the same link?).
        problem = f"not converged after {self.config.reconcile.max_passes} passes"
        log.warning("%s", problem)
        self.observed = await self.adapter.observe()
        self.unresolved = (*self.unresolved, problem)
        return done

    async def _heal(self) -> list[Action]:
        """Re-converge toward the applied state (caller holds the lock)."""
        if self.applied is None:
            self.observed = await self.adapter.observe()
            return []
        actions = await self._converge(self.applied)
        if actions:
            self._save()
        return actions

    async def reconcile_now(self, reason: str) -> dict[str, Any]:
        async with self._lock:
            since, self._dirty_since = self._dirty_since, None
            self._dirty.clear()
            try:
                actions = await self._heal()
            except NetlinkAdapterError as exc:
                log.warning("heal (%s) failed: %s", reason, exc)
                self.event("heal_failed", reason=reason, error=str(exc))
                self.report()
                raise
            if actions:
                self.heals += 1
                if since is not None:
                    self.last_heal_ms = (asyncio.get_running_loop().time() - since) * 1000
                log.info("healed (%s): %s", reason, "; ".join(describe(a) for a in actions))
                latency = (
                    round(self.last_heal_ms, 1)
                    if since is not None and self.last_heal_ms is not None
                    else None
                )
                self.event(
                    "healed", reason=reason, actions=[describe(a) for a in actions], latency_ms=latency
                )
                self.report()
            return {"actions": [describe(a) for a in actions], "unresolved": list(self.unresolved)}

    async def _watch_netlink(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                async for _event in self.adapter.events():
                    if not self._dirty.is_set():
                        self._dirty_since = loop.time()
                        self._dirty.set()
            except OSError as exc:
                log.error("netlink notifications lost (%s); periodic reconciliation continues", exc)
            # Re-subscribe, and re-check in case something changed while we were not listening.
            await asyncio.sleep(1.0)
            self._dirty.set()

    async def _reconcile_loop(self) -> None:
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.config.reconcile.period_s)
            reason = "netlink event" if self._dirty.is_set() else "periodic"
            # Let a burst of notifications (ours included) settle into one pass.
            await asyncio.sleep(self.config.reconcile.debounce_s)
            try:
                await self.reconcile_now(reason)
                failures = 0
                if reason == "periodic":
                    self.report()  # a heartbeat: operations see the state is fresh
            except NetlinkAdapterError:
                failures += 1
                await asyncio.sleep(min(self.config.reconcile.period_s, 0.1 * 2**failures))

    def _save(self) -> None:
        self.store.save(self.applied or EMPTY, self.owned, self.pending, self.version_floor)

    # --- commit confirmed (edge_agent/confirm.py) -----------------------------------------

    def _arm_confirmation(self, current: DesiredState | None, desired: DesiredState, source: str) -> None:
        """A change from operations goes on trial; the box's own config and the first state do not
        (there is nothing confirmed to go back to). Caller holds the lock."""
        timeout = self.config.confirm.timeout_s
        if timeout <= 0 or current is None or not source.startswith("mqtt:"):
            return
        now = time.time()
        _phase, action = confirm.step(self.pending, confirm.Event.APPLIED, now)
        previous = self.pending.previous if action is confirm.Action.REARM and self.pending else current
        self.pending = confirm.Pending(previous, desired.version, now, now + timeout)
        log.info(
            "version %d on trial: rolled back to %d unless confirmed within %.0fs",
            desired.version,
            previous.version,
            timeout,
        )

    async def confirm_now(self, proof: confirm.Proof, observed_at: float) -> confirm.Action:
        """Feed a proof (or, with ``observed_at`` past the deadline, just time) to the machine."""
        async with self._lock:
            if self.pending is None:
                return confirm.Action.NONE
            return await self._decide(confirm.Event.PROOF, observed_at, proof)

    async def _decide(self, event: confirm.Event, at: float, proof: confirm.Proof | None) -> confirm.Action:
        assert self.pending is not None
        pending = self.pending
        _phase, action = confirm.step(pending, event, at)
        if action is confirm.Action.CONFIRM:
            self.pending = None
            self._save()
            self.event("commit_confirmed", version=pending.version, by=proof.value if proof else None)
            self.report()
        elif action is confirm.Action.ROLLBACK:
            await self._rollback_unconfirmed(pending)
        return action

    async def _rollback_unconfirmed(self, pending: confirm.Pending) -> None:
        """Back to the last confirmed state; the report waits in the on-disk queue until the box
        reaches the broker again. Caller holds the lock."""
        previous = pending.previous
        log.error(
            "version %d not confirmed in time: rolling back to version %d", pending.version, previous.version
        )
        error = None
        try:
            actions = [describe(a) for a in await self._converge(previous)]
        except NetlinkAdapterError as exc:  # the reconcile loop keeps healing toward `previous`
            log.critical("rollback to version %d incomplete: %s", previous.version, exc)
            actions, error = [], str(exc)
        self.applied, self.pending = previous, None
        self.version_floor = max(self.version_floor, pending.version)
        self._save()
        self.event(
            "commit_rolled_back",
            version=pending.version,
            rolled_back_to=previous.version,
            reason=f"not confirmed within {pending.deadline - pending.applied_at:.0f}s",
            applied_at=pending.applied_at,
            rolled_back_at=time.time(),
            actions=actions,
            error=error,
        )
        self.report()

    async def _find_proof(self) -> confirm.Proof | None:
        by = self.config.confirm.by
        marker = self._broker_marker
        # With `netns:` the MQTT session does not ride the managed network, so it proves nothing.
        broker = "broker" in by and self.config.netns is None and self.mqtt is not None
        if broker and self.mqtt is not None and marker is not None and self.mqtt.acked_seq >= marker:
            return confirm.Proof.BROKER
        if "core_check" in by:
            core = tuple(t for t in self.config.checks.targets if t.role == "core")
            if core:
                results = await self.checker.run(core)
                if all(r.ok for r in results):
                    return confirm.Proof.CORE_CHECK
        return None

    async def _confirm_loop(self) -> None:
        while True:
            pending = self.pending
            if pending is None:
                await self._confirm_wake.wait()
                self._confirm_wake.clear()
                continue
            started = time.time()
            proof = await self._find_proof()
            async with self._lock:
                if self.pending is not pending:  # confirmed by command or re-armed meanwhile
                    continue
                # A proof counts at the moment it was looked for: a check started before the
                # deadline and answered after it still saves the change.
                event = confirm.Event.PROOF if proof else confirm.Event.TICK
                action = await self._decide(event, started if proof else time.time(), proof)
            if action is not confirm.Action.NONE:
                continue
            remaining = pending.deadline - time.time()
            wait = max(0.0, min(self.config.confirm.check_interval_s, remaining))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._confirm_wake.wait(), wait)
            self._confirm_wake.clear()

    # --- survivable site (edge_agent/survivable.py) --------------------------------------

    async def _survivable_loop(self) -> None:
        assert self.config.survivable is not None and self.local_gateway is not None
        settings = self.config.survivable
        core = tuple(t for t in self.config.checks.targets if t.role == "core")
        exited: asyncio.Task[int] | None = None
        while True:
            results = await self.checker.run(core)
            event = survivable.Input.CORE_UP if all(r.ok for r in results) else survivable.Input.CORE_DOWN
            await self._survival_step(event)
            proc = self.local_gateway.proc
            if proc is not None and proc.returncode is None and exited is None:
                exited = asyncio.ensure_future(proc.wait())
            elif exited is None and self.survival.phase is survivable.Phase.SURVIVING:
                await self._survival_step(survivable.Input.CHILD_EXITED)  # it did not start: again
                continue
            waiters: set[asyncio.Future[Any]] = {
                asyncio.ensure_future(asyncio.sleep(settings.check_interval_s))
            }
            if exited is not None:
                waiters.add(exited)
            done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for other in pending - {exited}:
                other.cancel()
            if exited is not None and exited in done:
                code, exited = exited.result(), None
                self.local_gateway.exited()
                self.event("survivable_gateway_exited", code=code, phase=self.survival.phase.value)
                await self._survival_step(survivable.Input.CHILD_EXITED)

    async def _survival_step(self, event: survivable.Input) -> None:
        assert self.config.survivable is not None and self.local_gateway is not None
        settings = self.config.survivable
        before = self.survival.phase
        self.survival, action = survivable.step(
            self.survival, event, enter_after=settings.enter_after, leave_after=settings.leave_after
        )
        if action in (survivable.Action.START, survivable.Action.RESTART):
            try:
                await self.local_gateway.start()
            except OSError as exc:  # retried by the loop at the next check
                log.error("local gateway did not start: %s", exc)
                self.event("survivable_failed", error=str(exc))
        elif action is survivable.Action.STOP:
            self._spawn(self._drain_after_replay(), "survivable-drain")
        if self.survival.phase is not before:
            self.survival_since = time.time()
            log.warning("survivable site: %s -> %s", before.value, self.survival.phase.value)
            self.event(
                "survivable",
                phase=self.survival.phase.value,
                previous=before.value,
                pid=self.local_gateway.pid,
            )
            self.report()

    async def _drain_after_replay(self) -> None:
        """The core is back: give the local gateway time to replay its charging spool to the
        core (its failover sink does so once Redis answers), then SIGTERM it. Events still
        spooled after ``replay_wait_s`` are not lost: the next start replays them first."""
        assert self.config.survivable is not None and self.local_gateway is not None
        settings = self.config.survivable
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.replay_wait_s
        spool = settings.charging_spool
        # Another process's files: nothing to await but time.
        while spool is not None and spool_holds_events(spool) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        if spool is not None and spool_holds_events(spool):
            self.event("survivable_spool_pending", spool=str(spool))
        self.local_gateway.drain()

    # --- checks ------------------------------------------------------------------------

    async def run_checks(self) -> list[TargetResult]:
        before = {r.name: r.ok for r in self.reachability}
        results = await self.checker.run()
        self.reachability, self.reachability_at = results, time.time()
        for r in results:
            if before.get(r.name) != r.ok:
                self.event("reachability", target=r.name, role=r.role, ok=r.ok)
        self.report()
        return results

    async def _checks_loop(self) -> None:
        while True:
            await self.run_checks()
            await asyncio.sleep(self.config.checks.interval_s)

    # --- reporting -----------------------------------------------------------------------

    def event(self, kind: str, **fields: Any) -> int | None:
        """Report an event; returns its outgoing queue sequence (None without MQTT)."""
        self._event_seq += 1
        log.info("event %s %s", kind, fields)
        if self.mqtt is None:
            return None
        doc = {
            "site": self.config.site,
            "boot": self.boot,
            "seq": self._event_seq,
            "ts": time.time(),
            "type": kind,
            **fields,
        }
        return self.mqtt.publish(self.topics.events, json.dumps(doc).encode())

    def state(self) -> dict[str, Any]:
        obs = self.observed or Observed()
        owned_links = self.owned.links
        return {
            "site": self.config.site,
            "online": True,
            "agent_version": __version__,
            "boot": self.boot,
            "ts": time.time(),
            "desired_version": self.applied.version if self.applied else None,
            "pending_confirm": (
                {"version": self.pending.version, "deadline": self.pending.deadline} if self.pending else None
            ),
            "survivable": (
                {
                    "active": self.survival.phase is not survivable.Phase.CORE,
                    "phase": self.survival.phase.value,
                    "since": self.survival_since,
                }
                if self.local_gateway is not None
                else None
            ),
            "converged": not self.unresolved,
            "unresolved": list(self.unresolved),
            "links": [
                {
                    "name": link.name,
                    "kind": link.kind,
                    "up": link.up,
                    "mtu": link.mtu,
                    "master": link.master,
                    "managed": link.name in owned_links,
                }
                for link in sorted(obs.links.values(), key=lambda x: x.name)
            ],
            "addresses": [
                {"ifname": a.ifname, "address": str(a.address), "managed": a in self.owned.addresses}
                for a in sorted(obs.addresses)
            ],
            "routes": [
                {
                    "dst": str(r.dst),
                    "gateway": str(r.gateway) if r.gateway else None,
                    "dev": r.dev,
                    "metric": r.metric,
                    "table": r.table,
                    "proto": r.proto,
                    "managed": r.proto == self.proto,
                }
                for r in sorted(obs.routes, key=lambda r: (r.table, str(r.dst), r.metric))
            ],
            "reachability": {"at": self.reachability_at, "targets": [r.summary() for r in self.reachability]},
            "heals": self.heals,
            "last_heal_ms": round(self.last_heal_ms, 1) if self.last_heal_ms is not None else None,
            "queue_dropped": self.mqtt.queue.dropped if self.mqtt else 0,
        }

    def report(self) -> None:
        if self.mqtt is not None:
            payload = json.dumps(self.state()).encode()
            self.mqtt.publish(self.topics.state, payload, retain=True, coalesce=True)

    def _offline_payload(self) -> bytes:
        return json.dumps({"site": self.config.site, "online": False, "agent_version": __version__}).encode()

    async def _on_connect(self) -> None:
        self.report()  # replaces the last will's offline marker

    # --- MQTT input ----------------------------------------------------------------------

    async def _on_message(self, topic: str, payload: bytes) -> None:
        if not payload:  # a cleared retained message
            return
        channel = "desired" if topic == self.topics.desired else "cmd" if topic == self.topics.cmd else None
        if channel is None:
            return
        verified = self._verify(channel, payload)
        if verified is None:
            return
        if channel == "desired":
            await self._desired_message(verified.body)
        else:
            self._enqueue_command(verified.body)

    def _verify(self, channel: str, payload: bytes) -> Verified | None:
        """The signed message, if it is new and ours; otherwise reported and ``None``."""
        accepted = self._accepted.get(channel)
        digest = hashlib.sha256(payload).hexdigest()
        try:
            verified = verify(
                payload,
                self._control_keys,
                site=self.config.site,
                channel=channel,
                now=time.time(),
                last_seq=accepted.seq if accepted else 0,
                max_skew_s=self.config.control.max_skew_s,
            )
            if accepted is not None and verified.seq == accepted.seq:
                if digest == accepted.digest and channel == "desired":
                    return None  # the retained desired state again, after a reconnect: done already
                raise ControlRefusedError(
                    Refusal.REPLAYED, f"sequence {verified.seq} was already accepted", verified.seq
                )
        except ControlRefusedError as exc:
            log.warning("control message on %s refused: %s", channel, exc)
            self.event(
                "control_refused", channel=channel, reason=exc.reason.value, detail=exc.detail, seq=exc.seq
            )
            return None
        # Consumed before acting: a message refused later for its content is still not replayable.
        self._accepted[channel] = Accepted(verified.seq, digest)
        self._seq_store.save(self._accepted)
        return verified

    async def _desired_message(self, body: Any) -> None:
        source = f"mqtt:{self.topics.desired}"
        try:
            desired = validate_data(DesiredState, body, source)
        except DataFileError as exc:
            problems = [str(p) for p in exc.problems]
            self.event("desired_refused", source=source, version=None, problems=problems)
            return
        with contextlib.suppress(DesiredRefusedError, ApplyFailedError):  # already reported as events
            await self.set_desired(desired, source)

    def _enqueue_command(self, body: Any) -> None:
        """Commands run one at a time, in order; a full queue refuses rather than piling up."""
        try:
            self._commands.put_nowait(body)
        except asyncio.QueueFull:
            request_id = str(body["id"]) if isinstance(body, dict) and "id" in body else None
            self.event("command_refused", id=request_id, reason="queue full")
            self._reply({"id": request_id, "ok": False, "error": "busy: command queue full"})

    async def _command_loop(self) -> None:
        while True:
            body = await self._commands.get()
            try:
                await self._command(body)
            finally:
                self._commands.task_done()

    async def _command(self, doc: Any) -> None:
        request_id: str | None = None
        try:
            if not isinstance(doc, dict):
                raise ValueError("a command is a JSON object")
            request_id = str(doc["id"]) if "id" in doc else None
            command = doc.get("command")
            if command == "reconcile":
                result: Any = await self.reconcile_now("command")
            elif command == "check":
                result = [r.summary() for r in await self.run_checks()]
            elif command == "confirm":
                if "command" not in self.config.confirm.by:
                    raise ValueError("confirmation by command is not enabled (confirm.by)")
                version = self.pending.version if self.pending else None
                action = await self.confirm_now(confirm.Proof.COMMAND, time.time())
                result = {"version": version, "outcome": action.value}
            elif command == "report":
                result = self.state()
                self.report()
            else:
                raise ValueError(f"unknown command {command!r} (reconcile, check, report, confirm)")
            reply = {"id": request_id, "ok": True, "result": result}
        except (ValueError, NetlinkAdapterError) as exc:
            reply = {"id": request_id, "ok": False, "error": str(exc)}
        self._reply(reply)

    def _reply(self, reply: dict[str, Any]) -> None:
        if self.mqtt is not None:
            self.mqtt.publish(self.topics.cmd_reply, json.dumps(reply).encode())


def spool_holds_events(directory: Path) -> bool:
    """True while any segment of a charging spool has data (gateway.charging.spool layout)."""
    try:
        return any(path.stat().st_size > 0 for path in directory.glob("*.jsonl"))
    except OSError:
        return False
