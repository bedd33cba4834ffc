"""The ``call`` section of ``config/gateway.yaml``: timers, failover, limits and static routes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

LimitsBackendName = Literal["auto", "memory", "redis"]
"""The names ``call.limits_backend`` accepts (the factories: ``gateway.call.limits.LIMITERS``)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrunkCallPolicy(_Section):
    """Per-trunk overrides of the call timers and of the answer to a busy limit."""

    no_answer_timeout: float | None = Field(default=None, gt=0, le=3600)
    max_duration: float | None = Field(default=None, gt=0, le=86_400)
    # What a caller hears when this trunk's concurrency limit is reached: 503 + Retry-After
    # (a trunk out of capacity) or 486 (a busy member line).
    busy_status: Literal[486, 503] = 503


class StaticRoute(_Section):
    """Route every call entering on trunk ``source`` to trunk ``target`` (a carrier or a peer),
    keeping the dialled user part. For setups without a dialplan (tests, benchmarks, transit)."""

    source: str = Field(min_length=1)
    target: str = Field(min_length=1)


class GroupLimit(_Section):
    """Limits over every trunk of a group together."""

    max_calls: int = Field(ge=1, le=1_000_000)
    max_cps: float = Field(gt=0, le=100_000)
    # Toll-fraud guard: concurrent international calls of the group's trunks together.
    max_international_calls: int | None = Field(default=None, ge=0, le=1_000_000)


class FraudSettings(_Section):
    """Spend-velocity alarm (:mod:`gateway.call.fraud`): rated fen within ``window`` seconds per
    line and per group; none: not watched. ``bar_international``: a line's alarm also bars its
    international calls until an operator clears it."""

    window: float = Field(default=3600.0, ge=60, le=7 * 86_400)
    line_fen_per_hour: int | None = Field(default=None, ge=1)
    group_fen_per_hour: int | None = Field(default=None, ge=1)
    bar_international: bool = False


class CallSettings(_Section):
    """Call-control policy."""

    # RFC 3261 §13.3.1.1 "no answer": CANCEL the outbound leg, answer the caller 480.
    no_answer_timeout: float = Field(default=60.0, gt=0, le=3600)
    max_duration: float = Field(default=4 * 3600.0, gt=0, le=86_400)
    # RFC 4028: the interval we ask for and the smallest we accept (Min-SE, at least 90 s).
    session_expires: int = Field(default=1800, ge=90, le=86_400)
    min_se: int = Field(default=90, ge=90, le=86_400)
    # Failover: try the next destination on silence / 408 / 5xx / 6xx, except these codes,
    # which end the hunt and are relayed to the caller.
    hunt_stop: list[int] = Field(default_factory=lambda: [404, 484, 486, 600, 603, 604])
    # 3xx from a callee: "refuse" treats it as a failure of that destination (no topology
    # leaks from a Contact), "follow" tries its SIP Contacts (IP literal hosts only) next.
    redirect: Literal["refuse", "follow"] = "refuse"
    # Silence failover: no response at all (not even 100 Trying) from a destination within this
    # many seconds and another destination is left: try it (Timer B alone would take 64*T1).
    attempt_timeout: float = Field(default=4.0, gt=0, le=64)
    retry_after: int = Field(default=5, ge=1, le=3600)  # with 503 for a limit (RFC 3261 §20.33)
    # Limits back end: memory (one process) or redis (shared by workers; slots expire by TTL).
    limits_backend: LimitsBackendName | None = None  # None or auto: redis when redis.url is set
    slot_ttl: float = Field(default=120.0, ge=10, le=3600)  # a dead process's slots vanish after this
    # Shutdown: live calls get this long to end by themselves, then are released with BYE.
    drain_grace: float = Field(default=30.0, ge=0, le=3600)
    # Body types requests may carry across the B2BUA (byte for byte); any other gets 415
    # (RFC 3261 §8.2.3). SDP, SIP-I / SIP-T multipart with ISUP, DTMF in INFO (RFC 6086).
    bodies: list[str] = Field(
        default_factory=lambda: [
            "application/sdp",
            "multipart/mixed",
            "application/isup",
            "application/dtmf-relay",
            "application/dtmf",
            "audio/telephone-event",
        ]
    )
    trunks: dict[str, TrunkCallPolicy] = Field(default_factory=dict)
    groups: dict[str, GroupLimit] = Field(default_factory=dict)
    fraud: FraudSettings = FraudSettings()
    routes: list[StaticRoute] = Field(default_factory=list)
    # UNIX socket answering a JSON status snapshot (relative to state_dir); null: none.
    status_socket: Path | None = Path("call-status.sock")
    # For tests and demos: the time the dialplan's time conditions are evaluated at (as the
    # switchboard's ``fixed_time``); null: the wall clock.
    fixed_time: dt.datetime | None = None

    @model_validator(mode="after")
    def _check(self) -> CallSettings:
        if self.min_se > self.session_expires:
            raise ValueError("min_se must not exceed session_expires (RFC 4028 §4)")
        bad = [code for code in self.hunt_stop if not 300 <= code <= 699]
        if bad:
            raise ValueError(f"hunt_stop codes must be final failure statuses 300-699: {bad}")
        return self

    def no_answer_for(self, trunk: str | None) -> float:
        policy = self.trunks.get(trunk) if trunk is not None else None
        return policy.no_answer_timeout if policy and policy.no_answer_timeout else self.no_answer_timeout

    def max_duration_for(self, trunk: str | None) -> float:
        policy = self.trunks.get(trunk) if trunk is not None else None
        return policy.max_duration if policy and policy.max_duration else self.max_duration

    def busy_status_for(self, trunk: str | None) -> int:
        policy = self.trunks.get(trunk) if trunk is not None else None
        return policy.busy_status if policy else 503
