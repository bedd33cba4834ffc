"""Versioned dialplans for the operations API: validate a draft, explain, replace, roll back.

A dialplan is a *set* of YAML files (one ``kind: carrier`` file and one file per group); the
API names each file by its stem (``acme``, ``carrier``). Every change replaces one file of the
set and is checked with the very loader the gateway starts with
(:func:`gateway.routing.compiler.load_dialplan`), so "valid in the API" and "valid at start-up"
cannot disagree.

Where the files live (the decision this module documents)
---------------------------------------------------------
* The directories of ``dialplans:`` in ``config/gateway.yaml`` are the **seed**: what a fresh
  gateway serves.
* Each applied set is a **version**: ``state_dir/dialplans/versions/NNNNNN/`` holds its files and
  ``meta.json`` (number, content digest, compiled-plan digest, who, when, comment, source).
  The first change also records the seed as version 1, so a roll back to the seed is possible.
* ``state_dir/dialplans/current`` names the active version (written atomically). At start-up
  the active version is served when there is one: a restart serves the latest applied plan,
  not the seed. Delete ``state_dir/dialplans/`` to go back to the seed files.
* With Redis configured each version is also stored in the hash ``gw:dialplan:versions``
  (field = number, value = JSON with the files) and the active number in ``gw:dialplan:current``.

Replacing (and rolling back, which re-applies a stored version through the same path) writes
the new set to a staging directory, compiles it completely, and only when it compiles renames
the directory into ``versions/`` and swaps the :class:`~gateway.routing.reload.DialplanHolder`
(one reference assignment). A call takes ``holder.plan`` once when it is routed, so calls in
progress keep the plan they started with and new calls get the new one. A bad draft changes
nothing and comes back with every problem (file, line, field).

Worker processes (``node.workers``) share ``state_dir``: worker 0 runs the API and applies
versions; every other worker runs a :class:`ActiveVersionFollower`, which notices the new
``current`` within a second and swaps its own holder the same way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import zoneinfo
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.datafile import DataFileError, Problem, parse_yaml, write_text_atomically
from gateway.polling import Poller
from gateway.routing.compiler import dialplan_files, load_dialplan
from gateway.routing.decision import CallRequest, Origin, Trace, outcome_to_dict
from gateway.routing.plan import CompiledPlan, PartyKind
from gateway.routing.reload import DialplanHolder

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REDIS_VERSIONS = "gw:dialplan:versions"
REDIS_CURRENT = "gw:dialplan:current"
MAX_TEXT = 2 << 20  # 2 MiB per file: a dialplan is a few KiB; more is a mistake or an attack
DEFAULT_TZ = "Asia/Shanghai"


class DialplanNotFoundError(LookupError):
    """No dialplan file (or version) of that name / number."""


class DraftInvalidError(ValueError):
    """The draft does not compile; ``problems`` says where and why."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s)")


class DialplanConflictError(RuntimeError):
    """The change cannot be made in the current state (e.g. two seed files with one name)."""


@dataclass(frozen=True, slots=True)
class Version:
    number: int
    digest: str  # SHA-256 of the file set (names and texts)
    plan_digest: str  # CompiledPlan.digest(): equal routing, equal digest
    applied_at: str
    applied_by: str
    comment: str
    source: str  # seed | replace | rollback
    files: tuple[str, ...]
    rolled_back_to: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = list(self.files)
        return data


@dataclass(frozen=True, slots=True)
class Validation:
    ok: bool
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    plan: CompiledPlan | None = None


def set_digest(files: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode("utf-8") + b"\0")
    return h.hexdigest()


def problems_json(problems: Collection[Problem]) -> list[dict[str, Any]]:
    return [{"file": p.source, "line": p.line, "field": p.field, "message": p.message} for p in problems]


def _file_kind(text: str, name: str) -> tuple[str | None, str | None]:
    """(kind, group id) of a dialplan text, (None, None) when it does not parse."""
    try:
        data, _ = parse_yaml(text, name)
    except DataFileError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    kind, ident = data.get("kind"), data.get("id")
    return (str(kind) if kind is not None else None), (str(ident) if ident is not None else None)


def infer_origin(plan: CompiledPlan, calling: str, group: str | None, trunk: str | None) -> Origin:
    """The origin ``gateway dialplan explain`` assumes: pbx with a trunk, member for a line of
    the group, carrier otherwise."""
    if trunk:
        return Origin.PBX
    if group:
        party = plan.owner(calling, group)
        if party is not None and party.group == group and party.kind is PartyKind.LINE:
            return Origin.MEMBER
    return Origin.CARRIER


def explain(
    plan: CompiledPlan,
    *,
    calling: str,
    called: str,
    at: dt.datetime | None = None,
    group: str | None = None,
    origin: Origin | None = None,
    trunk: str | None = None,
) -> dict[str, Any]:
    """Decide one call against ``plan`` and return the request, every step and the decision.

    ``at`` without a time zone is read in the group's zone (Asia/Shanghai without a group)."""
    g = plan.group(group) if group else None
    tz = g.tz if g is not None else zoneinfo.ZoneInfo(DEFAULT_TZ)
    when = dt.datetime.now(tz) if at is None else (at.replace(tzinfo=tz) if at.tzinfo is None else at)
    chosen = origin or infer_origin(plan, calling, group, trunk)
    trace = Trace()
    outcome = plan.decide(CallRequest(chosen, calling, called, when, group=group, trunk=trunk), trace)
    return {
        "request": {
            "origin": chosen.value, "calling": calling, "called": called, "at": when.isoformat(),
            "group": group, "trunk": trunk,
        },
        "trace": [{"step": step, "detail": detail} for step, detail in trace.steps],
        "decision": outcome_to_dict(outcome),
    }


def _write_set(directory: Path, files: Mapping[str, str]) -> None:
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / f"{name}.yaml").write_text(text, encoding="utf-8")


def _compile_staged(
    staging_root: Path, files: Mapping[str, str], known_trunks: Collection[str] | None, keep: bool
) -> tuple[Path, Validation]:
    """Write ``files`` to a fresh staging directory and compile them (runs in a thread).

    Problems name the bare file (``acme.yaml``), not the staging path. The directory is
    removed unless ``keep`` and the set compiled."""
    directory = staging_root / f"stage-{secrets.token_hex(6)}"
    _write_set(directory, files)
    prefix = str(directory) + os.sep

    def local(problems: tuple[Problem, ...]) -> tuple[Problem, ...]:
        return tuple(
            Problem(p.source.removeprefix(prefix), p.line, p.field, p.message) for p in problems
        )

    try:
        plan = load_dialplan([directory], known_trunks)
    except DataFileError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        return directory, Validation(False, local(exc.problems), ())
    if not keep:
        shutil.rmtree(directory, ignore_errors=True)
    return directory, Validation(True, (), local(plan.warnings), plan)


def load_holder(seed: list[Path], state_dir: Path, known_trunks: Collection[str] | None) -> DialplanHolder:
    """The start-up holder: the active version when there is one (see the module docstring), else
    the seed. An active version that no longer loads (trunk renamed, file damaged) is logged and
    the seed serves; a bad seed raises DataFileError (the gateway must not start)."""
    paths = DialplanVersions.active_paths(state_dir, seed)
    if paths != seed:
        try:
            holder = DialplanHolder.load(paths, known_trunks)
        except DataFileError as exc:
            for problem in exc.problems:
                log.error("dialplan: active version does not load: %s", problem)
            log.error("dialplan: serving the seed files %s instead", ", ".join(map(str, seed)))
        else:
            log.info("dialplan: serving applied version from %s (seed files not read)", paths[0])
            return holder
    return DialplanHolder.load(seed, known_trunks)


class DialplanVersions:
    """The dialplan files behind a :class:`DialplanHolder`, with versions; see the module docstring."""

    def __init__(
        self,
        holder: DialplanHolder,
        state_dir: Path,
        *,
        keep: int = 50,
        redis: aioredis.Redis | None = None,
    ) -> None:
        self.holder = holder
        self.root = state_dir / "dialplans"
        self.keep = keep
        self._redis = redis
        self._lock = asyncio.Lock()

    # -- start-up ------------------------------------------------------------------------------
    @staticmethod
    def active_paths(state_dir: Path, seed: list[Path]) -> list[Path]:
        """What to load at start-up: the active version's directory, else the seed."""
        root = state_dir / "dialplans"
        try:
            number = int((root / "current").read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return seed
        directory = root / "versions" / f"{number:06d}"
        return [directory] if directory.is_dir() else seed

    def adopt_active(self) -> None:
        """Make the holder serve the active version when it was loaded from the seed (the
        holder was built before this object); a version that no longer compiles is logged and
        the seed keeps serving."""
        seed = list(self.holder.paths)
        wanted = self.active_paths(self.root.parent, [Path(p) for p in seed])
        if [Path(p) for p in seed] == wanted:
            return
        self.holder.paths = tuple(wanted)
        result = self.holder.reload()
        if not result.ok:
            log.error("dialplan: the active version in %s does not load; serving the seed", wanted[0])
            self.holder.paths = tuple(seed)
            self.holder.reload()

    # -- reading -------------------------------------------------------------------------------
    def files(self) -> dict[str, str]:
        """The served set: file stem → text (read from the holder's paths)."""
        found, _ = dialplan_files(self.holder.paths)
        out: dict[str, str] = {}
        for path in found:
            if path.stem in out:
                raise DialplanConflictError(
                    f"two dialplan files are named {path.stem!r} (in different directories); "
                    "rename one so each can be addressed"
                )
            out[path.stem] = path.read_text(encoding="utf-8")
        return out

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        for name, text in sorted(self.files().items()):
            kind, ident = _file_kind(text, name)
            rows.append({
                "name": name, "kind": kind, "group": ident if kind == "group" else None,
                "bytes": len(text.encode("utf-8")), "digest": hashlib.sha256(text.encode()).hexdigest(),
            })
        return rows

    def get(self, name: str) -> str:
        try:
            return self.files()[name]
        except KeyError:
            raise DialplanNotFoundError(f"no dialplan named {name!r}") from None

    def current(self) -> Version | None:
        try:
            number = int((self.root / "current").read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None
        return self._meta(number)

    def history(self) -> list[Version]:
        directory = self.root / "versions"
        if not directory.is_dir():
            return []
        numbers = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
        return [v for n in reversed(numbers) if (v := self._meta(n)) is not None]

    def version_files(self, number: int) -> dict[str, str]:
        directory = self.root / "versions" / f"{number:06d}"
        if not (directory / "meta.json").is_file():
            raise DialplanNotFoundError(f"no dialplan version {number}")
        return {p.stem: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.yaml"))}

    def _meta(self, number: int) -> Version | None:
        try:
            data = json.loads((self.root / "versions" / f"{number:06d}" / "meta.json").read_text("utf-8"))
            data["files"] = tuple(data["files"])
            return Version(**data)
        except (OSError, ValueError, TypeError, KeyError):
            return None

    # -- drafts --------------------------------------------------------------------------------
    def draft_set(self, name: str, text: str) -> dict[str, str]:
        if not NAME_PATTERN.match(name):
            raise ValueError("name: letters, digits, '.', '_' or '-', at most 64, not starting with a symbol")
        if len(text.encode("utf-8")) > MAX_TEXT:
            raise ValueError(f"text: larger than {MAX_TEXT} bytes")
        files = self.files()
        files[name] = text
        return files

    async def validate(self, name: str, text: str) -> Validation:
        files = self.draft_set(name, text)
        _, result = await asyncio.to_thread(
            _compile_staged, self._staging(), files, self.holder.known_trunks, False
        )
        return result

    def _staging(self) -> Path:
        path = self.root / "staging"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- changes -------------------------------------------------------------------------------
    async def replace(self, name: str, text: str, *, who: str, comment: str = "") -> Version:
        """Validate the set with ``name`` replaced by ``text`` and swap it in; DraftInvalidError
        (nothing changed) when it does not compile."""
        async with self._lock:
            files = self.draft_set(name, text)
            return await self._apply(files, who=who, comment=comment, source="replace")

    async def rollback(self, number: int, *, who: str, comment: str = "") -> Version:
        """Re-apply stored version ``number`` (as a new version) through the same validation."""
        async with self._lock:
            files = self.version_files(number)
            return await self._apply(files, who=who, comment=comment or f"roll back to version {number}",
                                     source="rollback", rolled_back_to=number)

    async def _apply(
        self, files: dict[str, str], *, who: str, comment: str, source: str, rolled_back_to: int | None = None
    ) -> Version:
        staged, result = await asyncio.to_thread(
            _compile_staged, self._staging(), files, self.holder.known_trunks, True
        )
        if not result.ok or result.plan is None:
            raise DraftInvalidError(result.errors)
        try:
            if not self.history():
                # The first change keeps the seed as version 1, so it can be rolled back to.
                seed_files = self.files()
                seed = await asyncio.to_thread(self._store, seed_files, self.holder.plan, who="seed",
                                               comment="seed files", source="seed", staged=None)
                await self._to_redis(seed, seed_files, current=False)
            version = await asyncio.to_thread(self._store, files, result.plan, who=who, comment=comment,
                                              source=source, staged=staged, rolled_back_to=rolled_back_to)
        finally:
            shutil.rmtree(staged, ignore_errors=True)  # gone unless renamed into versions/
        previous_paths = self.holder.paths
        self.holder.paths = (self.root / "versions" / f"{version.number:06d}",)
        swapped = self.holder.reload()  # one reference assignment: the swap is atomic
        if not swapped.ok:  # cannot happen for a set that just compiled, but never serve nothing
            self.holder.paths = previous_paths
            raise DraftInvalidError(swapped.errors)
        self._write_current(version.number)
        await self._to_redis(version, files, current=True)
        self._prune(version.number)
        log.info("dialplan version %d applied by %s (%s, digest %s)", version.number, who, source,
                 version.plan_digest[:12])
        return version

    def _store(
        self,
        files: Mapping[str, str],
        plan: CompiledPlan,
        *,
        who: str,
        comment: str,
        source: str,
        staged: Path | None,
        rolled_back_to: int | None = None,
    ) -> Version:
        """Write a version directory (the staged one renamed, or the files) with its meta.json."""
        versions = self.root / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        existing = [int(p.name) for p in versions.iterdir() if p.name.isdigit()]
        number = max(existing, default=0) + 1
        version = Version(
            number=number, digest=set_digest(files), plan_digest=plan.digest(),
            applied_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), applied_by=who,
            comment=comment, source=source, files=tuple(sorted(files)), rolled_back_to=rolled_back_to,
        )
        target = versions / f"{number:06d}"
        if staged is not None:
            staged.rename(target)
        else:
            _write_set(target, files)
        (target / "meta.json").write_text(json.dumps(version.to_dict(), indent=2), encoding="utf-8")
        return version

    def _write_current(self, number: int) -> None:
        write_text_atomically(self.root / "current", f"{number}\n")

    def _prune(self, active: int) -> None:
        versions = self.root / "versions"
        numbers = sorted(int(p.name) for p in versions.iterdir() if p.name.isdigit())
        for number in numbers[: max(0, len(numbers) - self.keep)]:
            if number != active:
                shutil.rmtree(versions / f"{number:06d}", ignore_errors=True)

    async def _to_redis(self, version: Version, files: Mapping[str, str], *, current: bool) -> None:
        if self._redis is None:
            return
        try:
            await self._redis.hset(
                REDIS_VERSIONS, str(version.number), json.dumps({**version.to_dict(), "texts": dict(files)})
            )
            if current:
                await self._redis.set(REDIS_CURRENT, str(version.number))
        except (RedisError, OSError) as exc:
            log.warning("dialplan: cannot store version %d in Redis (%s); it is on disk", version.number, exc)


class ActiveVersionFollower(Poller):
    """Serve the version another process (the worker running the API) made active.

    Polls ``state_dir/dialplans/current`` (a few bytes, once a second): the version directory is
    complete before ``current`` names it, so what it names can be loaded at once. A version that
    does not load here is logged and the plan in service stays."""

    def __init__(
        self, holder: DialplanHolder, state_dir: Path, seed: list[Path], *, interval: float = 1.0
    ) -> None:
        super().__init__(interval=interval, name="dialplan-version")
        self.holder = holder
        self.state_dir = state_dir
        self._seed = seed

    def check(self) -> bool:
        """Adopt the active version if it changed; whether the holder now serves another one."""
        wanted = tuple(DialplanVersions.active_paths(self.state_dir, self._seed))
        serving = self.holder.paths
        if tuple(Path(p) for p in serving) == wanted:
            return False
        self.holder.paths = wanted
        result = self.holder.reload()
        if not result.ok:
            log.error("dialplan: version in %s does not load here; keeping %s", wanted[0], serving[0])
            self.holder.paths = serving
            return False
        log.info("dialplan: now serving %s", wanted[0])
        return True
