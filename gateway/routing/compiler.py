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
from gateway.routing.decision import CallClass, Target, TargetKind
from gateway.routing.directory import Entry
from gateway.routing.geography import region_of
from gateway.routing.numbering import Number, NumberAnalyser
from gateway.routing.plan import (
    RANGE_NAMES,
    CompiledGroup,
    CompiledPbx,
    CompiledPlan,
    OtherNumber,
    Party,
    PartyKind,
    Permissions,
    Schedule,
    ServiceNumber,
    ServiceRow,
    VpmnProfile,
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
        self.services: dict[str, ServiceNumber] = {}
        self.service_at: dict[str, str] = {}
        self.other_numbers: dict[str, OtherNumber] = {}
        self.other_at: dict[str, str] = {}
        self.directory: list[Entry] = []

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
            services=self.services,
            other_numbers=self.other_numbers,
            directory=tuple(self.directory),
        )

    def special_scope(self, number: str) -> str | None:
        """The scope the numbering plan gives special number ``number`` (exact rules first, then
        the longest prefix); None when no special rule covers it."""
        best: tuple[int, str] | None = None
        for rule in self.carrier.numbering.special:
            if rule.number == number:
                return rule.scope
            covers = (
                rule.prefix is not None
                and number.startswith(rule.prefix)
                and len(number) in (rule.lengths or ())
            )
            if covers and rule.prefix is not None and (best is None or len(rule.prefix) > best[0]):
                best = (len(rule.prefix), rule.scope)
        return best[1] if best else None


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
        self.advise_second_digit(first, path)
        return list(expanded)

    def advise_second_digit(self, short: str, path: FieldPath) -> None:
        """The seed's numbering advice: a short number's second digit should not be 0 ([002] L705).

        A block of short numbers is advised once, at its first number."""
        if len(short) > 1 and short[1] == "0":
            self.c.warn(
                self.src, path, f"short number {short}: the second digit should not be 0 ([002] L705)"
            )

    def add_short(self, short: str | None, party: Party, path: FieldPath, *, single: bool = True) -> bool:
        """Give ``party`` a short number; ``single`` is False for the numbers of a block, which
        :meth:`shorts` has already advised on."""
        if short is None:
            return True
        if not self.check_short(short, path):
            return False
        if single:
            self.advise_second_digit(short, path)
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
        paid: list[tuple[int, int, int]] = []
        for i, rng in enumerate(m.group_paid_numbers):
            lo, hi, ln = int(rng.first), int(rng.last), len(rng.first)
            if not any(a <= lo and hi <= b and length == ln for a, b, length in self.fixed):
                self.error(("group_paid_numbers", i), f"{rng.first}-{rng.last} is not within fixed_numbers")
            paid.append((lo, hi, ln))
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
            group_paid_ranges=tuple(paid),
        )
        self.base = base
        self.switchboard()
        self.lines()
        self.mobiles()
        for i, pbx in enumerate(m.pbxs):
            self.pbx(i, pbx)
        self.off_net_numbers()
        self.g.region = region_of(self.main_e164)
        if self.errors_before == len(self.c.errors):  # they name members: errors would repeat
            self.service_numbers()
            self.other_carrier_numbers()
            self.virtual_fixed()
            self.one_number()
            self.directory()
            self.legacy_vpmn()
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
                if not self.add_short(short, party, (*path, "short_first"), single=False):
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
                    shorts_ok = self.add_short(short, party, (*path, "short_first"), single=False)
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

    def legacy_vpmn(self) -> None:
        """The 综合VPMN front-end: its trunk, PBX numbers, virtual calling numbers ≤ 15 digits."""
        v = self.m.legacy_vpmn
        if v is None:
            return
        path: FieldPath = ("legacy_vpmn",)
        self.c.check_trunk(self.src, (*path, "trunk"), v.trunk)
        if v.trunk in self.c.pbx_trunk_at or v.trunk in self.trunks:
            self.error((*path, "trunk"), f"trunk {v.trunk!r} is a PBX or carrier trunk")
            return
        seen: dict[str, str] = {}
        for pbx_id, number in v.pbx_numbers.items():
            ppath: FieldPath = (*path, "pbx_numbers", pbx_id)
            pbx = self.g.pbxs.get(pbx_id)
            if pbx is None:
                self.error(ppath, f"{pbx_id!r} is not a PBX of {self.m.id}")
                return
            if number in seen:
                self.error(ppath, f"PBX number {number} is also PBX {seen[number]}'s")
                return
            seen[number] = pbx_id
            longest = max((len(e) for e in pbx.extensions), default=0)
            length = len(v.virtual_prefix) + 1 + len(self.area) + len(number) + longest
            if length > 15:
                self.error(
                    ppath, f"virtual calling numbers of {pbx_id} would have {length} digits (at most 15)"
                )
                return
        self.g.vpmn = VpmnProfile(
            v.trunk, v.virtual_prefix, v.routing_prefix, v.trigger_prefix, self.area, dict(v.pbx_numbers)
        )

    def directory(self) -> None:
        """企业通信录: the switchboard, then each ``directory`` row on a member of the group."""
        sb = self.g.switchboard
        if sb is not None:
            self.c.directory.append(
                Entry(
                    self.m.id,
                    f"{self.m.name or self.m.id} 总机 (switchboard)",
                    "",
                    "",
                    "switchboard",
                    sb.short,
                    sb.dialable,
                    sb.e164,
                )
            )
        for i, row in enumerate(self.m.directory):
            party = self.g.short.get(row.number)
            if party is None:
                analysed = self.an.classify(row.number, self.area)
                e164 = analysed.e164 if isinstance(analysed, Number) else None
                party = self.c.by_e164.get(e164) if e164 else None
            if party is None or party.group != self.m.id or party.kind is PartyKind.OFF_NET:
                self.error(
                    ("directory", i, "number"),
                    f"{row.number} is neither a short number nor a member's number",
                )
                continue
            self.c.directory.append(
                Entry(
                    self.m.id,
                    row.name,
                    row.department,
                    row.title,
                    party.kind.value,
                    party.short,
                    party.dialable,
                    party.e164,
                )
            )

    def product_hunt(self, path: FieldPath, name: str, group: models.HuntGroup) -> bool:
        """Register a product's hunt group (rung by the switchboard, which needs menus)."""
        sb = self.m.switchboard
        if sb is None or not sb.menus:
            self.error(path, "needs the group's switchboard (with menus): it places the calls to the phones")
            return False
        self.g.product_hunts[name] = group
        return True

    def virtual_fixed(self) -> None:
        """虚拟固话: a fixed number of the group ringing mobile members, presented on their calls."""
        for i, entry in enumerate(self.m.virtual_fixed):
            path: FieldPath = ("virtual_fixed", i)
            if not self.in_fixed(entry.number, 1, (*path, "number"), "virtual fixed number"):
                continue
            mobiles = [self.member(m, (*path, "mobiles", mi)) for mi, m in enumerate(entry.mobiles)]
            if any(p is None for p in mobiles):
                continue
            e164 = self.an.local_e164(self.area, entry.number)
            name = f"virtual-{entry.number}"
            hunt = models.HuntGroup(
                members=entry.mobiles,
                strategy=entry.strategy,
                ring_seconds=entry.ring_seconds,
                on_no_answer=models.MenuAction.HANGUP,
            )
            if not self.product_hunt(path, name, hunt):
                return
            party = Party(
                PartyKind.VIRTUAL_FIXED,
                self.m.id,
                entry.number,
                e164,
                entry.number,
                entry.short,
                (),
                self.base,
                e164,
            )
            self.claim(e164, party, (*path, "number"))
            self.add_short(entry.short, party, (*path, "short"))
            self.g.forks[party.id] = name
            for mi, mobile in enumerate(mobiles):
                assert mobile is not None
                mpath: FieldPath = (*path, "mobiles", mi)
                if mobile.kind is not PartyKind.MOBILE:
                    self.error(mpath, f"{entry.mobiles[mi]} is not a mobile member")
                elif mobile.id in self.g.presents:
                    self.error(mpath, f"{entry.mobiles[mi]} already presents {self.g.presents[mobile.id][0]}")
                else:
                    self.g.presents[mobile.id] = (e164, "virtual_fixed", self.an.national_form(e164))

    def one_number(self) -> None:
        """一号通: the member's number rings the member and its other phones."""
        for i, entry in enumerate(self.m.one_number):
            path: FieldPath = ("one_number", i)
            party = self.member(entry.member, (*path, "member"))
            others = [self.member(m, (*path, "also", mi)) for mi, m in enumerate(entry.also)]
            if party is None or any(p is None for p in others):
                continue
            if party.id in self.g.forks or any(o is party for o in others):
                self.error((*path, "member"), f"{entry.member} already rings several phones or lists itself")
                continue
            name = f"one-{party.id.replace('/', '-')}"
            hunt = models.HuntGroup(
                members=[entry.member, *entry.also],
                strategy=entry.strategy,
                ring_seconds=entry.ring_seconds,
                on_no_answer=models.MenuAction.HANGUP,
            )
            if not self.product_hunt(path, name, hunt):
                return
            self.g.forks[party.id] = name

    def other_carrier_numbers(self) -> None:
        """他网号码: a domestic number no group here owns, on one of the group's lines or PBXs."""
        for i, entry in enumerate(self.m.other_carrier_numbers):
            path: FieldPath = ("other_carrier_numbers", i)
            analysed = self.an.analyse(entry.number, self.area)
            domestic = (CallClass.LOCAL, CallClass.NATIONAL, CallClass.MOBILE)
            if (
                not isinstance(analysed, Number)
                or analysed.e164 is None
                or analysed.call_class not in domestic
            ):
                self.error((*path, "number"), f"{entry.number} is not a domestic fixed or mobile number")
                continue
            owner = self.c.by_e164.get(analysed.e164)
            if owner is not None:
                self.error(
                    (*path, "number"),
                    f"{entry.number} is a number served here "
                    f"(group {owner.group} {owner.kind.value} {owner.id})",
                )
                continue
            other = self.c.other_at.get(analysed.e164)
            if other is not None:
                self.error((*path, "number"), f"{entry.number} is already registered at {other}")
                continue
            if entry.line is not None and entry.line not in self.g.lines:
                self.error((*path, "line"), f"{entry.line} is not a line of {self.m.id}")
                continue
            if entry.pbx is not None and entry.pbx not in self.g.pbxs:
                self.error((*path, "pbx"), f"{entry.pbx!r} is not a PBX of {self.m.id}")
                continue
            registered = OtherNumber(
                analysed.e164, analysed.national, self.m.id, entry.line, entry.pbx, entry.approved
            )
            self.g.other_numbers[analysed.e164] = registered
            self.c.other_numbers[analysed.e164] = registered
            self.c.other_at[analysed.e164] = f"group {self.m.id} ({self.c.where(self.src, path)})"

    # ------------------------------------------------------------------ service numbers

    def service_numbers(self) -> None:
        """Call-centre (special) and 400 numbers: class by the numbering plan, scope within the
        plan's attribute of the number, one owner, routes and agents naming the group's parties."""
        entries: list[tuple[FieldPath, str, str, str, list[models.ServiceRoute]]] = [
            (("call_centre", i), e.number, "call_centre", e.scope, e.routes)
            for i, e in enumerate(self.m.call_centre)
        ]
        entries += [
            (("mobile_400", i), e.number, "400", "national", e.routes)
            for i, e in enumerate(self.m.mobile_400)
        ]
        for path, number, product, scope, routes in entries:
            analysed = self.an.classify(number, self.area)
            want = CallClass.SPECIAL if product == "call_centre" else CallClass.FOUR_HUNDRED
            if not isinstance(analysed, Number) or analysed.call_class is not want:
                what = (
                    "a special-service number (95xxx, 96xxx, 1xxxx)"
                    if product == "call_centre"
                    else "a 400 number"
                )
                self.error((*path, "number"), f"{number} is not {what} of the numbering plan")
                continue
            if product == "call_centre":
                plan_scope = self.c.special_scope(number)
                if scope == "national" and plan_scope != "national":
                    self.error(
                        (*path, "scope"),
                        f"{number} is a local special number in the numbering plan: it can only run "
                        "a local call centre ([000] L93)",
                    )
                    continue
            other = self.c.service_at.get(number)
            if other is not None:
                self.error((*path, "number"), f"{number} already belongs to {other}")
                continue
            rows = tuple(
                row
                for ri, route in enumerate(routes)
                if (row := self.service_row(route, (*path, "routes", ri))) is not None
            )
            if len(rows) != len(routes):
                continue
            self.c.services[number] = ServiceNumber(number, self.m.id, product, scope, rows)
            self.c.service_at[number] = f"group {self.m.id} ({self.c.where(self.src, path)})"
        for i, entry in enumerate(self.m.call_centre):
            for ai, agent in enumerate(entry.agents):
                apath: FieldPath = ("call_centre", i, "agents", ai)
                party = self.member(agent, apath)
                if party is None:
                    continue
                if party.id in self.g.presents:
                    self.error(apath, f"{agent} already presents {self.g.presents[party.id][0]}")
                    continue
                self.g.presents[party.id] = (entry.number, "call_centre", entry.number)

    def member(self, number: str, path: FieldPath) -> Party | None:
        """The party of this group a short or long number names (with a place to ring)."""
        party = self.g.short.get(number)
        if party is None:
            analysed = self.an.classify(number, self.area)
            e164 = analysed.e164 if isinstance(analysed, Number) else None
            party = self.c.by_e164.get(e164) if e164 else None
        if party is None or party.group != self.m.id or party.kind is PartyKind.OFF_NET:
            self.error(path, f"{number} is neither a short number nor a member's number in {self.m.id}")
            return None
        if not party.targets:
            self.error(path, f"{number} is the switchboard itself (route to 'switchboard')")
            return None
        return party

    def service_row(self, route: models.ServiceRoute, path: FieldPath) -> ServiceRow | None:
        condition = self.condition(route.when, (*path, "when"))
        if route.when is not None and condition is None:
            return None
        sb = self.m.switchboard
        regions = tuple(route.regions or ())
        where = (f"when {route.when}, " if route.when else "") + (
            f"callers in {'/'.join(regions)}, " if regions else ""
        )
        goto = route.to
        if goto == "switchboard" or (isinstance(goto, models.ServiceGoto) and goto.hunt is not None):
            if sb is None:
                self.error((*path, "to"), "the group has no switchboard")
                return None
            hunt = goto.hunt if isinstance(goto, models.ServiceGoto) else None
            if hunt is not None and hunt not in sb.hunt_groups:
                known = ", ".join(sorted(sb.hunt_groups)) or "none defined"
                self.error(
                    (*path, "to", "hunt"), f"unknown hunt group {hunt!r} (switchboard.hunt_groups: {known})"
                )
                return None
            label = where + (f"hunt group {hunt} (switchboard, no menu)" if hunt else "switchboard menu")
            return ServiceRow(condition, regions, (), hunt, label)
        assert isinstance(goto, models.ServiceGoto)
        targets: list[Target] = []
        if goto.pbx is not None:
            pbx = self.g.pbxs.get(goto.pbx)
            if pbx is None or pbx.switchboard is None:
                self.error(
                    (*path, "to", "pbx"),
                    f"PBX {goto.pbx!r} is not a PBX of {self.m.id} with a switchboard number "
                    "(name an extension in members instead)",
                )
                return None
            targets += pbx.switchboard.targets
            label = f"PBX {goto.pbx} switchboard"
        else:
            assert goto.members is not None
            for mi, number in enumerate(goto.members):
                party = self.member(number, (*path, "to", "members", mi))
                if party is None:
                    return None
                targets += party.targets
            label = "members " + ", ".join(goto.members)
        return ServiceRow(condition, regions, tuple(targets), None, where + label)


def problems_as_dicts(problems: Iterable[Problem]) -> list[dict[str, Any]]:
    """JSON-ready problems (for the CLI and the operations API)."""
    return [{"file": p.source, "line": p.line, "field": p.field, "message": p.message} for p in problems]
