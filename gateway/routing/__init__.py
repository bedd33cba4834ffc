"""Dialplans: numbering plan, short numbers, permissions, caller-ID rules, routes (pure, compiled).

Start-up, reload and decisions::

    holder = DialplanHolder.load(config.dialplans, known_trunks=trunk_names)  # DataFileError: do not start
    result = holder.reload()          # operations API; result.errors if refused
    plan = holder.prepare(names)      # SIGHUP (gateway.node, in a thread): validate with the trunks,
    holder.swap(plan, names)          # then swap once every reloaded file is valid
    plan = holder.plan                # once per call, then use that plan to the end of the call
    outcome = plan.decide(CallRequest(Origin.MEMBER, "62880001", "60002", now, group="acme"))
    if isinstance(outcome, Refusal):  # answer outcome.status (404, 403, 484, 603), reason for logs
        ...
    else:                             # outcome.targets in failover order, numbers, outcome.charging
        ...

See ``plan`` for the steps of a decision and ``decision`` for the types.
"""

from gateway.routing.compiler import compile_plan, load_dialplan
from gateway.routing.decision import (
    CallClass,
    CallRequest,
    Charging,
    Decision,
    Direction,
    Origin,
    Refusal,
    Target,
    TargetKind,
    Trace,
)
from gateway.routing.plan import CompiledPlan, Party, PartyKind
from gateway.routing.reload import DialplanHolder, ReloadResult

__all__ = [
    "CallClass",
    "CallRequest",
    "Charging",
    "CompiledPlan",
    "Decision",
    "DialplanHolder",
    "Direction",
    "Origin",
    "Party",
    "PartyKind",
    "Refusal",
    "ReloadResult",
    "Target",
    "TargetKind",
    "Trace",
    "compile_plan",
    "load_dialplan",
]
