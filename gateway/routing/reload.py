"""The running dialplan, swapped atomically on reload (SIGHUP: :mod:`gateway.node`; operations API).

A reload reads and compiles the new files completely before touching the running plan; a bad
file leaves the running plan in place and the result lists every problem (file, line, field).
Readers take ``holder.plan`` once per call and use that object to the end of the call, so a
call never sees half of one plan and half of another.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.datafile import DataFileError, Problem
from gateway.routing.compiler import load_dialplan
from gateway.routing.plan import CompiledPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()


class DialplanHolder:
    """Holds the current ``CompiledPlan``; ``reload()`` validates first, then swaps."""

    def __init__(
        self, plan: CompiledPlan, paths: Sequence[str | Path], known_trunks: Collection[str] | None = None
    ):
        self._plan = plan
        self.paths = tuple(paths)
        self.known_trunks = known_trunks

    @classmethod
    def load(cls, paths: Sequence[str | Path], known_trunks: Collection[str] | None = None) -> DialplanHolder:
        """Load at start-up; a bad dialplan raises ``DataFileError`` (the gateway must not start)."""
        return cls(load_dialplan(paths, known_trunks), paths, known_trunks)

    @property
    def plan(self) -> CompiledPlan:
        return self._plan

    def prepare(self, known_trunks: Collection[str] | None = None) -> CompiledPlan:
        """Read and compile the files again without serving them (a reload that must agree with
        other files first: SIGHUP); ``known_trunks`` replaces the trunk names checked against.
        Raises ``DataFileError``."""
        return load_dialplan(self.paths, self.known_trunks if known_trunks is None else known_trunks)

    def swap(self, plan: CompiledPlan, known_trunks: Collection[str] | None = None) -> None:
        """Serve ``plan`` (one reference assignment: the swap is atomic); ``known_trunks``: the
        trunk names it was checked against, for the next reload."""
        self._plan = plan
        if known_trunks is not None:
            self.known_trunks = known_trunks

    def reload(self) -> ReloadResult:
        try:
            plan = self.prepare()
        except DataFileError as exc:
            for problem in exc.problems:
                log.error("dialplan reload refused: %s", problem)
            return ReloadResult(False, errors=exc.problems)
        self.swap(plan)
        for problem in plan.warnings:
            log.warning("dialplan: %s", problem)
        log.info("dialplan reloaded from %s (digest %s)", ", ".join(plan.sources), plan.digest()[:12])
        return ReloadResult(True, warnings=plan.warnings)
