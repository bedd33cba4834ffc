"""Load dialplan files, check every rule that spans objects, and compile a ``CompiledPlan``.

``load_dialplan(paths)`` reads every ``*.yaml`` file of the given directories (and the files
given directly), validates them against the models, checks the cross-object rules and compiles.
All problems are collected and raised together in one ``DataFileError``, each with file, line
and field; warnings (e.g. a short number whose second digit is 0, [002] L705) do not stop the
load and are kept in ``CompiledPlan.warnings``.

Cross-object rules enforced here: exactly one carrier file; unique group ids, PBX ids and PBX
trunks; a number belongs to one party only ("一个号码只能归属一个集团"); lines, DIDs and
switchboard numbers inside the group's fixed numbers; short numbers of the group's one length
and leading digit, unique, and never a number the numbering plan already classifies (special,
emergency, local...); time conditions and trunks referenced by name exist.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.datafile import (
    DataFileError,
    FieldPath,
    PositionIndex,
    Problem,
    format_field,
    read_yaml,
    validate_data,
)
from gateway.routing import models
from gateway.routing.decision import Target, TargetKind
from gateway.routing.numbering import Number, NumberAnalyser
from gateway.routing.plan import (
    RANGE_NAMES,
    CompiledGroup,
    CompiledPbx,
    CompiledPlan,
    Party,
    PartyKind,
    Permissions,
    Schedule,
)
from gateway.routing.timecond import CompiledTimeCondition, HolidayCalendar

IN_MEMORY = "<memory>"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a model came from, to locate problems found after validation."""

    name: str
    positions: PositionIndex = field(default_factory=PositionIndex)

    def problem(self, path: FieldPath, message: str) -> Problem:
        return Problem(self.name, self.positions.line_of(path), format_field(path), message)


def dialplan_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """The YAML files named by ``paths`` (directories contribute their ``*.yaml``/``*.yml``)."""
    files: list[Path] = []
    problems: list[Problem] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                problems.append(Problem(str(path), None, "", "no .yaml files in this directory"))
        elif path.exists():
            found = [path]
        else:
            problems.append(Problem(str(path), None, "", "no such file or directory"))
            found = []
        for p in found:
            if p.resolve() not in seen:
                seen.add(p.resolve())
                files.append(p)
    return files, problems


def read_dialplan(
    paths: Iterable[str | Path],
) -> tuple[list[tuple[models.CarrierFile, Source]], list[tuple[models.GroupFile, Source]]]:
    """Read and validate the files; raise ``DataFileError`` with every problem of every file."""
    files, problems = dialplan_files(paths)
    carriers: list[tuple[models.CarrierFile, Source]] = []
    groups: list[tuple[models.GroupFile, Source]] = []
    for path in files:
        try:
            data, positions = read_yaml(path)
            source = Source(str(path), positions)
            kind = data.get("kind") if isinstance(data, dict) else None
            if kind == "carrier":
                carriers.append((validate_data(models.CarrierFile, data, source.name, positions), source))
            elif kind == "group":
                groups.append((validate_data(models.GroupFile, data, source.name, positions), source))
            elif isinstance(data, dict):
                problems.append(source.problem(("kind",), "kind must be 'carrier' or 'group'"))
            else:
                problems.append(source.problem((), "a dialplan file is a mapping with a 'kind' key"))
        except DataFileError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DataFileError(problems)
    return carriers, groups


def load_dialplan(paths: Iterable[str | Path], known_trunks: Collection[str] | None = None) -> CompiledPlan:
    """Read, check and compile the dialplan; ``DataFileError`` lists every problem found.

    ``known_trunks``: when given, every trunk a dialplan names must be one of them.
    """
    paths = list(paths)
    carriers, groups = read_dialplan(paths)
    if not carriers:
        where = ", ".join(str(p) for p in paths)
        raise DataFileError([Problem(where, None, "", "no carrier file (kind: carrier) found")])
    if len(carriers) > 1:
        first = carriers[0][1].name
        raise DataFileError(
            [
                s.problem(("kind",), f"a second carrier file; there is one already: {first}")
                for _, s in carriers[1:]
            ]
        )
    return compile_plan(carriers[0], groups, known_trunks=known_trunks)


def compile_plan(
    carrier: models.CarrierFile | tuple[models.CarrierFile, Source],
    groups: Sequence[models.GroupFile | tuple[models.GroupFile, Source]],
    known_trunks: Collection[str] | None = None,
) -> CompiledPlan:
    """Compile validated models (with their sources, if they came from files)."""
    carrier_pair = carrier if isinstance(carrier, tuple) else (carrier, Source(IN_MEMORY))
    group_pairs = [g if isinstance(g, tuple) else (g, Source(IN_MEMORY)) for g in groups]
    return _Compiler(carrier_pair, known_trunks).compile(group_pairs)


_DEFAULT_PERMISSIONS = Permissions(originating=3, terminating=3, barred=(), off_net_hours=None)
_RANGE_LEVEL = {name: i for i, name in enumerate(RANGE_NAMES)}


def _expand(first: str, count: int) -> list[str] | None:
    """``count`` consecutive numbers from ``first``, zero-padded; None if the length would change."""
    start = int(first)
    width = len(first)
    if len(str(start + count - 1)) > width:
        return None
    return [str(n).zfill(width) for n in range(start, start + count)]


class _Compiler:
    def __init__(
        self, carrier: tuple[models.CarrierFile, Source], known_trunks: Collection[str] | None
    ) -> None:
        self.carrier, self.carrier_source = carrier
        self.known_trunks = frozenset(known_trunks) if known_trunks is not None else None
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        self.analyser = NumberAnalyser(self.carrier.numbering)
        self.calendar = HolidayCalendar(self.carrier.calendar.years)
        self.by_e164: dict[str, Party] = {}
        self.claimed_at: dict[str, str] = {}
        self.pbx_by_trunk: dict[str, CompiledPbx] = {}
        self.pbx_trunk_at: dict[str, str] = {}

    # ------------------------------------------------------------------ problems

    def error(self, source: Source, path: FieldPath, message: str) -> None:
        self.errors.append(source.problem(path, message))

    def warn(self, source: Source, path: FieldPath, message: str) -> None:
        self.warnings.append(source.problem(path, message))

    @staticmethod
    def where(source: Source, path: FieldPath) -> str:
        line = source.positions.line_of(path)
        return f"{source.name}:{line}" if line is not None else source.name

    def check_trunk(self, source: Source, path: FieldPath, trunk: str) -> None:
        if self.known_trunks is not None and trunk not in self.known_trunks:
            self.error(
                source, path, f"unknown trunk {trunk!r} (known: {', '.join(sorted(self.known_trunks))})"
            )

    # ------------------------------------------------------------------ top level

    def compile(self, groups: list[tuple[models.GroupFile, Source]]) -> CompiledPlan:
        for path, message in self.analyser.check_overlaps():
            self.error(self.carrier_source, path, message)
        area = self.carrier.local_area
        if area is not None and self.analyser.area_rule(area) is None:
            self.error(
                self.carrier_source, ("local_area",), f"{area} is not an area code of the numbering plan"
            )
        for i, trunk in enumerate(self.carrier.carrier_trunks):
            self.check_trunk(self.carrier_source, ("carrier_trunks", i), trunk)
        compiled: dict[str, CompiledGroup] = {}
        defined_at: dict[str, str] = {}
        for group, source in groups:
            if group.id in compiled:
                self.error(source, ("id",), f"group {group.id!r} is also defined at {defined_at[group.id]}")
                continue
            defined_at[group.id] = self.where(source, ("id",))
            compiled[group.id] = _GroupCompiler(self, group, source).compile()
        if self.errors:
            raise DataFileError(self.errors)
        return CompiledPlan(
            analyser=self.analyser,
            calendar=self.calendar,
            groups=compiled,
            by_e164=self.by_e164,
            pbx_by_trunk=self.pbx_by_trunk,
            carrier_trunks=tuple(self.carrier.carrier_trunks),
            carrier_area=self.carrier.local_area,
            high_risk=tuple((r.prefix, r.name) for r in self.carrier.high_risk_prefixes),
            warnings=tuple(self.warnings),
            sources=(self.carrier_source.name, *(s.name for _, s in groups)),
        )


class _GroupCompiler:
    def __init__(self, owner: _Compiler, model: models.GroupFile, source: Source) -> None:
        self.c = owner
        self.m = model
        self.src = source
        self.an = owner.analyser
        self.area = model.area_code
        self.short_at: dict[str, str] = {}

    def error(self, path: FieldPath, message: str) -> None:
        self.c.error(self.src, path, message)

    # ------------------------------------------------------------------ helpers

    def condition(self, name: str | None, path: FieldPath) -> CompiledTimeCondition | None:
        if name is None:
            return None
        cond = self.conditions.get(name)
        if cond is None:
            known = ", ".join(sorted(self.conditions)) or "none defined"
            self.error(path, f"unknown time condition {name!r} (time_conditions: {known})")
        return cond

    def permissions(
        self, model: models.Permissions | None, base: Permissions, path: FieldPath
    ) -> Permissions:
        if model is None:
            return base
        return Permissions(
            originating=_RANGE_LEVEL[model.originating.value] if model.originating else base.originating,
            terminating=_RANGE_LEVEL[model.terminating.value] if model.terminating else base.terminating,
            barred=tuple(model.barred_prefixes) if model.barred_prefixes is not None else base.barred,
            off_net_hours=self.condition(model.off_net_hours, (*path, "off_net_hours"))
            if model.off_net_hours
            else base.off_net_hours,
            high_risk_allowed=tuple(model.high_risk_allowed)
            if model.high_risk_allowed is not None
            else base.high_risk_allowed,
        )

    def in_fixed(self, first: str, count: int, path: FieldPath, what: str) -> bool:
        lo, ln = int(first), len(first)
        hi = lo + count - 1
        if any(a <= lo and hi <= b and ln == length for a, b, length in self.fixed):
            return True
        last = str(hi).zfill(ln)
        span = first if count == 1 else f"{first}-{last}"
        self.error(path, f"{what} {span} is not inside the group's fixed_numbers")
        return False

    def claim(self, e164: str, party: Party, path: FieldPath) -> None:
        other = self.c.claimed_at.get(e164)
        if other is not None:
            self.error(path, f"number {e164} already belongs to {other}")
            return
        self.c.by_e164[e164] = party
        self.c.claimed_at[e164] = (
            f"group {self.m.id} {party.kind.value} {party.id} ({self.c.where(self.src, path)})"
        )

    def check_short(self, short: str, path: FieldPath) -> bool:
        rules = self.m.short_numbers
        if len(short) != rules.length:
            self.error(
                path,
                f"short number {short} has {len(short)} digits; the group's short numbers have "
                f"{rules.length} (short_numbers.length)",
            )
            return False
        if rules.leading_digit is not None and short[0] != rules.leading_digit:
            self.error(
                path,
                f"short number {short} does not begin with {rules.leading_digit} "
                "(short_numbers.leading_digit)",
            )
            return False
        analysed = self.an.classify(short, self.area)
        if isinstance(analysed, Number):
            self.error(
                path,
                f"short number {short} clashes with the numbering plan: it is a "
                f"{analysed.call_class.value} number ({analysed.rule})",
            )
            return False
        other = self.short_at.get(short)
        if other is not None:
            self.error(path, f"short number {short} is also used at {other}")
            return False
        self.short_at[short] = self.c.where(self.src, path)
        return True

    def shorts(self, first: str | None, count: int, path: FieldPath) -> list[str | None]:
        if first is None:
            return [None] * count
        expanded = _expand(first, count)
        if expanded is None:
            self.error(path, f"{count} short numbers from {first} would run past {len(first)} digits")
            return [None] * count
        if len(first) > 1 and first[1] == "0":
            self.c.warn(
                self.src, path, f"short number {first}: the second digit should not be 0 ([002] L705)"
            )
        return list(expanded)

    def add_short(self, short: str | None, party: Party, path: FieldPath) -> bool:
        if short is None:
            return True
        if not self.check_short(short, path):
            return False
        self.g.short[short] = party
        return True

    # ------------------------------------------------------------------ the group

    def compile(self) -> CompiledGroup:
        m, an = self.m, self.an
        self.errors_before = len(self.c.errors)
        area_rule = an.area_rule(self.area)
        if area_rule is None:
            self.error(("area_code",), f"{self.area} is not an area code of the numbering plan")
            lengths: frozenset[int] = frozenset()
        else:
            lengths = area_rule.lengths
        if m.short_numbers.length in lengths:
            self.error(
                ("short_numbers", "length"),
                f"short numbers of {m.short_numbers.length} digits would be "
                f"taken for local numbers of area {self.area}",
            )
        self.fixed: list[tuple[int, int, int]] = []
        for i, rng in enumerate(m.fixed_numbers):
            if lengths and len(rng.first) not in lengths:
                self.error(
                    ("fixed_numbers", i),
                    f"area {self.area} has {'/'.join(map(str, sorted(lengths)))}-digit "
                    f"numbers, not {len(rng.first)}",
                )
            lo, hi, ln = int(rng.first), int(rng.last), len(rng.first)
            for j, (a, b, length) in enumerate(self.fixed):
                if length == ln and lo <= b and a <= hi:
                    self.error(("fixed_numbers", i), f"overlaps fixed_numbers[{j}]")
            self.fixed.append((lo, hi, ln))
        self.conditions = {
            name: CompiledTimeCondition(name, cond, self.c.calendar)
            for name, cond in m.time_conditions.items()
        }
        base = self.permissions(m.permissions, _DEFAULT_PERMISSIONS, ("permissions",))
        trunks = (
            tuple(m.carrier_trunks) if m.carrier_trunks is not None else tuple(self.c.carrier.carrier_trunks)
        )
        for i, trunk in enumerate(m.carrier_trunks or ()):
            self.c.check_trunk(self.src, ("carrier_trunks", i), trunk)
        self.trunks = trunks
        main = m.switchboard.numbers[0] if m.switchboard else m.fixed_numbers[0].first
        self.main_e164 = an.local_e164(self.area, main)
        self.g = CompiledGroup(
            id=m.id,
            name=m.name,
            area=self.area,
            tz=zoneinfo.ZoneInfo(m.timezone),
            short_length=m.short_numbers.length,
            leading_digit=m.short_numbers.leading_digit,
            intra_caller_id=m.caller_id.intra_group,
            main_e164=self.main_e164,
            permissions=base,
            carrier_trunks=trunks,
            fixed_ranges=tuple(self.fixed),
            time_conditions=self.conditions,
        )
        self.base = base
        self.switchboard()
        self.lines()
        self.mobiles()
        for i, pbx in enumerate(m.pbxs):
            self.pbx(i, pbx)
        self.off_net_numbers()
        self.switchboard_members()
        return self.g

    def switchboard_members(self) -> None:
        """Every member a switchboard menu, hunt group or operator group names is a party of the group."""
        sb = self.m.switchboard
        if sb is None or self.errors_before != len(self.c.errors):
            return  # a member missing because of an earlier error would only repeat it
        named: list[tuple[FieldPath, str]] = []
        for name, menu in sb.menus.items():
            for key, choice in menu.options.items():
                if isinstance(choice, models.MenuGoto) and choice.member is not None:
                    named.append((("switchboard", "menus", name, "options", key, "member"), choice.member))
        groups: list[tuple[FieldPath, models.HuntGroup]] = [
            (("switchboard", "hunt_groups", name), g) for name, g in sb.hunt_groups.items()
        ]
        if sb.operator is not None:
            groups.append((("switchboard", "operator"), sb.operator))
        for path, group in groups:
            named += [((*path, "members", i), member) for i, member in enumerate(group.members)]
        for path, number in named:
            party = self.g.short.get(number)
            if party is None:
                analysed = self.an.classify(number, self.area)
                e164 = analysed.e164 if isinstance(analysed, Number) else None
                party = self.c.by_e164.get(e164) if e164 else None
            if party is None or party.group != self.m.id:
                self.error(path, f"{number} is neither a short number nor a member's number in {self.m.id}")
            elif not party.targets:
                self.error(path, f"{number} is the switchboard itself")

    def carrier_targets(self, e164: str, member: str | None) -> tuple[Target, ...]:
        return tuple(Target(TargetKind.CARRIER_TRUNK, e164, trunk=t, member=member) for t in self.trunks)

    def switchboard(self) -> None:
        sb = self.m.switchboard
        if sb is None:
            return
        rows = tuple(
            (self.condition(row.when, ("switchboard", "schedule", i, "when")), row.mode)
            for i, row in enumerate(sb.schedule)
        )
        self.g.schedule = Schedule(rows)
        self.g.switchboard_service = sb.service
        self.g.switchboard_config = sb
        self.g.switchboard_numbers = tuple(sb.numbers)
        for i, number in enumerate(sb.numbers):
            path: FieldPath = ("switchboard", "numbers", i)
            e164 = self.an.local_e164(self.area, number)
            party = Party(
                PartyKind.SWITCHBOARD,
                self.m.id,
                "switchboard",
                e164,
                number,
                sb.short if i == 0 else None,
                (),
                self.base,
                e164,
            )
            if self.in_fixed(number, 1, path, "switchboard number"):
                self.claim(e164, party, path)
            if i == 0:
                self.g.switchboard = party
                self.add_short(sb.short, party, ("switchboard", "short"))

    def lines(self) -> None:
        own = self.m.caller_id.off_net == "own_number"
        for i, block in enumerate(self.m.lines):
            path: FieldPath = ("lines", i)
            count = int(block.last) - int(block.first) + 1 if block.last else 1
            if block.trunk:
                self.c.check_trunk(self.src, (*path, "trunk"), block.trunk)
            if not self.in_fixed(block.first, count, (*path, "first"), "lines"):
                continue
            perms = self.permissions(block.permissions, self.base, (*path, "permissions"))
            numbers = _expand(block.first, count) or []
            shorts = self.shorts(block.short_first, count, (*path, "short_first"))
            for number, short in zip(numbers, shorts, strict=True):
                e164 = self.an.local_e164(self.area, number)
                party = Party(
                    PartyKind.LINE,
                    self.m.id,
                    number,
                    e164,
                    number,
                    short,
                    (Target(TargetKind.REGISTERED, number, trunk=block.trunk, member=number),),
                    perms,
                    e164 if own else self.main_e164,
                )
                self.claim(e164, party, path)
                self.g.lines[number] = party
                if not self.add_short(short, party, (*path, "short_first")):
                    break

    def mobiles(self) -> None:
        for i, mob in enumerate(self.m.mobiles):
            path: FieldPath = ("mobiles", i)
            if not self.an.is_mobile(mob.number):
                self.error((*path, "number"), f"{mob.number} is not a mobile number of the numbering plan")
                continue
            e164 = self.an.plus_cc + mob.number
            party = Party(
                PartyKind.MOBILE,
                self.m.id,
                mob.number,
                e164,
                mob.number,
                mob.short,
                self.carrier_targets(e164, mob.number),
                self.permissions(mob.permissions, self.base, (*path, "permissions")),
                e164,
                via_carrier=True,
            )
            self.claim(e164, party, (*path, "number"))
            self.add_short(mob.short, party, (*path, "short"))

    def pbx(self, index: int, pbx: models.Pbx) -> None:
        path: FieldPath = ("pbxs", index)
        if pbx.id in self.g.pbxs:
            self.error((*path, "id"), f"PBX {pbx.id!r} is defined twice in group {self.m.id}")
            return
        other = self.c.pbx_trunk_at.get(pbx.trunk)
        if other is not None:
            self.error((*path, "trunk"), f"trunk {pbx.trunk!r} is already the trunk of {other}")
            return
        if pbx.trunk in self.c.carrier.carrier_trunks or pbx.trunk in self.trunks:
            self.error((*path, "trunk"), f"trunk {pbx.trunk!r} is a carrier trunk")
            return
        self.c.check_trunk(self.src, (*path, "trunk"), pbx.trunk)
        perms = self.permissions(pbx.permissions, self.base, (*path, "permissions"))
        sb_e164 = None
        switchboard: Party | None = None
        if pbx.switchboard is not None and pbx.switchboard.number is not None:
            number = pbx.switchboard.number
            sb_e164 = self.an.local_e164(self.area, number)
            switchboard = Party(
                PartyKind.PBX_SWITCHBOARD,
                self.m.id,
                f"{pbx.id}/switchboard",
                sb_e164,
                number,
                pbx.switchboard.short,
                (Target(TargetKind.PBX_TRUNK, number, trunk=pbx.trunk, member=f"{pbx.id}/switchboard"),),
                perms,
                sb_e164,
                pbx=pbx.id,
            )
            sb_path: FieldPath = (*path, "switchboard", "number")
            if self.in_fixed(number, 1, sb_path, "PBX switchboard number"):
                self.claim(sb_e164, switchboard, sb_path)
            self.add_short(pbx.switchboard.short, switchboard, (*path, "switchboard", "short"))
        elif pbx.switchboard is not None and pbx.switchboard.short is not None:
            self.error(
                (*path, "switchboard", "short"), "a PBX switchboard short number needs switchboard.number"
            )
        fallback = sb_e164 or self.main_e164
        anonymous = Party(
            PartyKind.PBX_EXTENSION,
            self.m.id,
            f"{pbx.id}/unknown",
            None,
            None,
            None,
            (),
            perms,
            fallback,
            pbx=pbx.id,
        )
        extensions: dict[str, Party] = {}
        if pbx.sends_extensions and pbx.extensions is not None:
            count = int(pbx.extensions.last) - int(pbx.extensions.first) + 1
            exts = _expand(pbx.extensions.first, count) or []
            dids: list[str | None] = [None] * count
            if pbx.did_first is not None:
                expanded = _expand(pbx.did_first, count)
                if expanded is None:
                    self.error(
                        (*path, "did_first"), f"{count} DIDs from {pbx.did_first} would run past its length"
                    )
                elif self.in_fixed(pbx.did_first, count, (*path, "did_first"), "DIDs"):
                    dids = list(expanded)
            shorts = self.shorts(pbx.short_first, count, (*path, "short_first"))
            use_did = pbx.off_net_caller_id == "did"
            shorts_ok = True
            for ext, did, short in zip(exts, dids, shorts, strict=True):
                e164 = self.an.local_e164(self.area, did) if did else None
                member = f"{pbx.id}/{ext}"
                party = Party(
                    PartyKind.PBX_EXTENSION,
                    self.m.id,
                    member,
                    e164,
                    did,
                    short,
                    (Target(TargetKind.PBX_TRUNK, ext, trunk=pbx.trunk, member=member),),
                    perms,
                    (e164 if use_did and e164 else fallback),
                    pbx=pbx.id,
                )
                extensions[ext] = party
                if e164 is not None:
                    self.claim(e164, party, (*path, "did_first"))
                if shorts_ok:
                    shorts_ok = self.add_short(short, party, (*path, "short_first"))
        compiled = CompiledPbx(
            pbx.id, self.m.id, pbx.trunk, pbx.sends_extensions, extensions, switchboard, anonymous
        )
        self.g.pbxs[pbx.id] = compiled
        self.c.pbx_by_trunk[pbx.trunk] = compiled
        self.c.pbx_trunk_at[pbx.trunk] = f"PBX {pbx.id} of group {self.m.id} ({self.c.where(self.src, path)})"

    def off_net_numbers(self) -> None:
        for i, entry in enumerate(self.m.off_net_numbers):
            path: FieldPath = ("off_net_numbers", i)
            analysed = self.an.analyse(entry.number, self.area)
            if not isinstance(analysed, Number) or analysed.e164 is None:
                reason = (
                    analysed.reason
                    if not isinstance(analysed, Number)
                    else f"a {analysed.call_class.value} number"
                )
                self.error(
                    (*path, "number"), f"{entry.number} cannot be in the off-net number group: {reason}"
                )
                continue
            owner = self.c.by_e164.get(analysed.e164)
            if owner is not None and owner.group == self.m.id:
                self.error(
                    (*path, "number"),
                    f"{entry.number} is the group's own number ({owner.kind.value} {owner.id})",
                )
                continue
            if analysed.e164 in self.g.off_net:
                self.error((*path, "number"), f"{entry.number} is listed twice")
                continue
            party = Party(
                PartyKind.OFF_NET,
                self.m.id,
                analysed.e164,
                analysed.e164,
                self.an.dialable(analysed.e164, self.area),
                entry.short,
                self.carrier_targets(analysed.e164, None),
                self.base,
                analysed.e164,
                via_carrier=True,
            )
            self.g.off_net[analysed.e164] = party
            self.add_short(entry.short, party, (*path, "short"))


def problems_as_dicts(problems: Iterable[Problem]) -> list[dict[str, Any]]:
    """JSON-ready problems (for the CLI and the operations API)."""
    return [{"file": p.source, "line": p.line, "field": p.field, "message": p.message} for p in problems]
