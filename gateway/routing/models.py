"""The dialplan data files (YAML under ``dialplans/``) as typed, validated models.

Two kinds of file, told apart by their ``kind`` key:

- ``kind: carrier``: the carrier-wide numbering plan (China), the carrier trunk list and the
  holiday calendar supplements. Exactly one per dialplan set.
- ``kind: group``: one enterprise group (集团): its fixed numbers, members (IAD lines, mobile
  members, PBXs), short numbers, switchboard, off-net number group (网外号码组), permissions,
  caller-ID policy and time conditions.

Telephone numbers are written as quoted strings: YAML reads an unquoted ``021`` as the octal
integer 17, so a number that is not a string is an error with a hint, never a silent conversion.
The models check what one field or one object can check; rules that span objects (duplicates,
clashes with special numbers, ranges inside the group's fixed numbers) are the compiler's.
The published JSON Schema (``dialplans/schema/``) is generated from these models.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator


def _require_text(value: Any) -> Any:
    if isinstance(value, bool | int | float):
        raise ValueError(
            "write numbers as quoted strings (e.g. '021'): YAML reads an unquoted number as an integer"
        )
    return value


Digits = Annotated[
    str, BeforeValidator(_require_text), Field(pattern=r"^[0-9]+$", min_length=1, max_length=20)
]
"""A string of decimal digits."""

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", min_length=1, max_length=64)]
"""An identifier: group, member, PBX, trunk, service or time-condition name."""

ShortNumber = Annotated[
    str, BeforeValidator(_require_text), Field(pattern=r"^[0-9]{2,8}$", description="a short number (短号)")
]
SubscriberNumber = Annotated[
    str,
    BeforeValidator(_require_text),
    Field(pattern=r"^[2-9][0-9]{4,7}$", description="a local subscriber number PQRABCD, without area code"),
]
ClockTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]


def _check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}") from exc
    return value


TimeZoneName = Annotated[str, AfterValidator(_check_timezone)]


class Model(BaseModel):
    """Base of every dialplan model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- carrier file


class AreaCodeRule(Model):
    """Area codes (长途区号 XYZ, written without the national prefix 0) beginning with ``prefix``.

    ``{prefix: "2", code_length: 2}`` covers 020–029; ``{prefix: "3", code_length: 3}`` covers
    0300–0399. Subscriber numbers (PQRABCD) begin with 2–9 and have one of ``subscriber_lengths``.
    """

    prefix: Digits
    code_length: int = Field(ge=2, le=4)
    subscriber_lengths: list[Annotated[int, Field(ge=5, le=8)]] = Field(min_length=1)
    name: str = ""

    @model_validator(mode="after")
    def _prefix_fits(self) -> AreaCodeRule:
        if len(self.prefix) > self.code_length:
            raise ValueError("prefix is longer than code_length")
        return self


class SpecialRule(Model):
    """A special service number (特服号): exactly ``number``, or ``prefix`` plus digits up to ``lengths``."""

    number: Digits | None = None
    prefix: Digits | None = None
    lengths: list[Annotated[int, Field(ge=3, le=12)]] | None = None
    name: str = ""
    scope: Literal["local", "national"] = Field(
        default="local", description="local or nationwide attribute of the special number (呼叫中心直连)"
    )

    @model_validator(mode="after")
    def _one_form(self) -> SpecialRule:
        if (self.number is None) == (self.prefix is None):
            raise ValueError("give either number or prefix (with lengths)")
        if self.prefix is not None:
            if not self.lengths:
                raise ValueError("a prefix rule needs lengths")
            if min(self.lengths) <= len(self.prefix):
                raise ValueError("lengths must be longer than the prefix")
        elif self.lengths is not None:
            raise ValueError("lengths only go with prefix")
        return self


class NonGeographicRule(Model):
    """Numbers like 400 xxx xxxx: ``prefix`` and total ``length``, dialled without the 0 prefix."""

    prefix: Digits
    length: int = Field(ge=4, le=12)
    name: str = ""


class InternationalRule(Model):
    """Bounds on the digits after the international prefix (country code + number, ITU-T E.164)."""

    min_digits: int = Field(default=7, ge=3, le=15)
    max_digits: int = Field(default=15, ge=3, le=15)


class NumberingPlan(Model):
    """The carrier-wide numbering plan (China, ITU-T E.164 country code 86)."""

    country_code: Digits = "86"
    national_prefix: Digits = "0"
    international_prefix: Digits = "00"
    area_codes: list[AreaCodeRule] = Field(min_length=1)
    mobile_prefixes: list[Digits] = Field(min_length=1, description="e.g. 13..19 (1[3-9])")
    mobile_length: int = Field(default=11, ge=7, le=13)
    emergency: list[Digits] = Field(min_length=1, description="always routable, never barred")
    special: list[SpecialRule] = Field(default_factory=list)
    non_geographic: list[NonGeographicRule] = Field(default_factory=list)
    international: InternationalRule = InternationalRule()


class CalendarYear(Model):
    """Official calendar of one year, from the State Council notice, where the ``holidays`` package
    does not carry that year's arrangement (调休) yet; it replaces the package's data for that year.

    Weekends are rest days and Monday–Friday workdays, except the listed public holidays
    (法定节假日, rest days) and adjusted working days (调休, usually a Saturday or Sunday).
    """

    holidays: list[dt.date] = Field(default_factory=list)
    workdays: list[dt.date] = Field(default_factory=list)


class CalendarSupplement(Model):
    """Years supplied by operations (from the State Council notice) beyond the package's data."""

    years: dict[int, CalendarYear] = Field(default_factory=dict)


class HighRiskPrefix(Model):
    """A destination with a high toll-fraud risk (premium rate, high-fraud countries): barred
    for every caller unless its permissions list the prefix in ``high_risk_allowed``."""

    prefix: Digits = Field(description="matched against the called number in national form (00..., 0XYZ...)")
    name: str = ""


class CarrierFile(Model):
    """``kind: carrier``: the numbering plan, the carrier trunks and the calendar."""

    kind: Literal["carrier"]
    numbering: NumberingPlan
    carrier_trunks: list[Name] = Field(min_length=1, description="failover order")
    local_area: Digits | None = Field(
        default=None, description="area code of numbers the carrier trunk sends without one (e.g. '21')"
    )
    calendar: CalendarSupplement = CalendarSupplement()
    high_risk_prefixes: list[HighRiskPrefix] = Field(
        default_factory=list, description="toll-fraud guard: barred unless a group or party allows them"
    )


# --------------------------------------------------------------------------- group file


class CallRange(StrEnum):
    """Call range (呼叫范围), each level including the ones before it."""

    INTRA_GROUP = "intra_group"
    LOCAL = "local"
    NATIONAL = "national"
    INTERNATIONAL = "international"


class Permissions(Model):
    """Call-range permissions; a field left out inherits from the group (and the group from the defaults)."""

    originating: CallRange | None = None
    terminating: CallRange | None = None
    barred_prefixes: list[Digits] | None = Field(
        default=None, description="matched against the called number in national form (0XYZ..., 13..., 00...)"
    )
    off_net_hours: Name | None = Field(
        default=None,
        description="time condition outside which only intra-group and emergency calls are allowed",
    )
    high_risk_allowed: list[Digits] | None = Field(
        default=None,
        description="high-risk destinations (the carrier's high_risk_prefixes) this party may call anyway: "
        "a called number starting with one of these prefixes is not barred as high-risk",
    )


class NumberRange(Model):
    """Consecutive numbers ``first``..``last`` of the same length."""

    first: SubscriberNumber
    last: SubscriberNumber

    @model_validator(mode="after")
    def _ordered(self) -> NumberRange:
        if len(self.first) != len(self.last):
            raise ValueError("first and last must have the same length")
        if int(self.last) < int(self.first):
            raise ValueError("last is before first")
        return self


class ShortNumberRules(Model):
    """Short-number rules of the group ([002] L705–713, [000] L521)."""

    length: int = Field(ge=3, le=6, description="one length for the whole group")
    leading_digit: Annotated[str, Field(pattern=r"^[0-9]$")] | None = Field(
        default="6", description="null relaxes the rule where short numbers cannot clash with special numbers"
    )


class LineBlock(Model):
    """Fixed lines (IAD ports, SIP phones) that register with the gateway: ``first``..``last``."""

    first: SubscriberNumber
    last: SubscriberNumber | None = None
    short_first: ShortNumber | None = Field(default=None, description="short number of the first line")
    name: str = ""
    trunk: Name | None = Field(
        default=None, description="the access device (IAD) trunk the lines register through"
    )
    permissions: Permissions | None = None

    @model_validator(mode="after")
    def _ordered(self) -> LineBlock:
        if self.last is not None:
            if len(self.first) != len(self.last):
                raise ValueError("first and last must have the same length")
            if int(self.last) < int(self.first):
                raise ValueError("last is before first")
        return self


class MobileMember(Model):
    """A mobile member reached over the carrier trunk (融合V网)."""

    number: Digits
    short: ShortNumber | None = None
    name: str = ""
    permissions: Permissions | None = None


class ExtensionRange(Model):
    first: Annotated[str, BeforeValidator(_require_text), Field(pattern=r"^[0-9]{1,8}$")]
    last: Annotated[str, BeforeValidator(_require_text), Field(pattern=r"^[0-9]{1,8}$")]

    @model_validator(mode="after")
    def _ordered(self) -> ExtensionRange:
        if len(self.first) != len(self.last):
            raise ValueError("first and last must have the same length")
        if int(self.last) < int(self.first):
            raise ValueError("last is before first")
        return self


class PbxSwitchboard(Model):
    """The PBX's own switchboard (PSTN总机) number and its short number."""

    number: SubscriberNumber | None = None
    short: ShortNumber | None = None


class Pbx(Model):
    """A PBX on a static trunk.

    With ``sends_extensions`` the PBX sends and accepts extension numbers: DIDs and short numbers
    map one to one onto ``extensions`` (e.g. 61000–61999 ↔ 1000–1999). Without it the PBX is known
    only by its switchboard: its short number lands on the switchboard for a second-stage
    transfer (二次接续) and its calls present the switchboard's numbers.
    """

    id: Name
    trunk: Name
    sends_extensions: bool = True
    extensions: ExtensionRange | None = None
    did_first: SubscriberNumber | None = Field(default=None, description="DID of the first extension")
    short_first: ShortNumber | None = Field(default=None, description="short number of the first extension")
    switchboard: PbxSwitchboard | None = None
    off_net_caller_id: Literal["did", "switchboard"] = Field(
        default="did", description="number presented on off-net calls: the extension's DID or the switchboard"
    )
    permissions: Permissions | None = None

    @model_validator(mode="after")
    def _mode(self) -> Pbx:
        if self.sends_extensions and self.extensions is None:
            raise ValueError("a PBX that sends extensions needs extensions")
        if not self.sends_extensions:
            if self.extensions is not None or self.did_first is not None or self.short_first is not None:
                raise ValueError("a switchboard-only PBX has no extensions, did_first or short_first")
            if self.switchboard is None or self.switchboard.number is None:
                raise ValueError("a switchboard-only PBX needs switchboard.number")
        return self


class ScheduleEntry(Model):
    """One row of a switchboard schedule: the first row whose condition holds gives the mode."""

    when: Name | None = Field(default=None, description="time condition; none means always")
    mode: Name


MenuKey = Annotated[str, Field(pattern=r"^[0-9*#]$", description="a key of the telephone keypad")]
PromptName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=64, description="a WAV file name without .wav"),
]
MemberNumber = Annotated[
    str,
    BeforeValidator(_require_text),
    Field(pattern=r"^[0-9]{2,15}$", description="a member's short number or long number"),
]


class MenuAction(StrEnum):
    """Menu choices that need no argument."""

    OPERATOR = "operator"
    """The operator group (话务台, possibly a remote attendant on a mobile)."""
    REPEAT = "repeat"
    """Play the menu again."""
    HANGUP = "hangup"
    """Say goodbye and end the call."""


class MenuGoto(Model):
    """A menu choice with an argument: exactly one of ``hunt``, ``member``, ``menu``."""

    hunt: Name | None = Field(default=None, description="a hunt group of switchboard.hunt_groups")
    member: MemberNumber | None = Field(default=None, description="a member, by short or long number")
    menu: Name | None = Field(default=None, description="a sub-menu of switchboard.menus")

    @model_validator(mode="after")
    def _exactly_one(self) -> MenuGoto:
        if sum(v is not None for v in (self.hunt, self.member, self.menu)) != 1:
            raise ValueError("give exactly one of hunt, member, menu")
        return self


MenuChoice = MenuAction | MenuGoto


class SwitchboardMenu(Model):
    """One IVR menu: its prompt, what each key does, timeouts and retries.

    A key that begins a short number of the group starts dial-by-extension (when
    ``dial_by_extension``) unless it is one of ``options``; the number ends at the group's
    short-number length, at ``#``, or after ``inter_digit_timeout``. No key within
    ``first_digit_timeout`` after the prompt, or an invalid one, costs a retry (with
    ``invalid_prompt`` played first); after ``retries`` of them ``on_exhausted`` happens.
    """

    prompt: list[PromptName] = Field(min_length=1, description="played in order (e.g. Chinese, then English)")
    options: dict[MenuKey, MenuChoice] = Field(default_factory=dict)
    dial_by_extension: bool = True
    first_digit_timeout: float = Field(default=5.0, gt=0, le=60)
    inter_digit_timeout: float = Field(default=3.0, gt=0, le=30)
    retries: int = Field(default=2, ge=0, le=9)
    invalid_prompt: list[PromptName] = Field(default_factory=lambda: ["invalid_zh", "invalid_en"])
    on_exhausted: MenuChoice = MenuAction.OPERATOR


class HuntStrategy(StrEnum):
    SEQUENTIAL = "sequential"
    """Each member rings for ``ring_seconds`` in turn."""
    SIMULTANEOUS = "simultaneous"
    """All ring at once for ``ring_seconds``; the first to answer wins, the others are cancelled."""


class HuntGroup(Model):
    """Members (lines, PBX extensions, mobiles; short or long numbers) and how they are rung."""

    members: list[MemberNumber] = Field(min_length=1, max_length=32)
    strategy: HuntStrategy = HuntStrategy.SEQUENTIAL
    ring_seconds: int = Field(default=15, ge=1, le=120)
    on_no_answer: MenuChoice = Field(
        default=MenuAction.OPERATOR, description="when nobody answers (the operator group: hangup only)"
    )


class Switchboard(Model):
    """The group's fusion switchboard (融合总机).

    ``schedule`` picks a mode at the call's time; with ``menus`` the mode names the menu that
    answers (e.g. ``day`` and ``night``).
    """

    numbers: list[SubscriberNumber] = Field(min_length=1)
    short: ShortNumber | None = None
    service: Name = Field(description="switchboard service (IVR/attendant) that answers")
    schedule: list[ScheduleEntry] = Field(
        default_factory=lambda: [ScheduleEntry(mode="default")], min_length=1
    )
    menus: dict[Name, SwitchboardMenu] = Field(default_factory=dict)
    hunt_groups: dict[Name, HuntGroup] = Field(default_factory=dict)
    operator: HuntGroup | None = Field(default=None, description="the operator / remote attendant group")
    prompt_dir: str | None = Field(
        default=None, description="directory whose WAV files replace the shipped prompts of the same name"
    )

    @model_validator(mode="after")
    def _default_last(self) -> Switchboard:
        if self.schedule[-1].when is not None:
            raise ValueError("the last schedule row must have no 'when' (the default mode)")
        return self

    @model_validator(mode="after")
    def _references(self) -> Switchboard:
        if not self.menus:
            return self
        problems: list[str] = []
        for i, row in enumerate(self.schedule):
            if row.mode not in self.menus:
                problems.append(f"schedule[{i}].mode {row.mode!r} has no menu in menus")
        choices: list[tuple[str, MenuChoice]] = []
        for name, menu in self.menus.items():
            choices += [(f"menus.{name}.options.{key}", c) for key, c in menu.options.items()]
            choices.append((f"menus.{name}.on_exhausted", menu.on_exhausted))
        for name, group in self.hunt_groups.items():
            choices.append((f"hunt_groups.{name}.on_no_answer", group.on_no_answer))
        for where, choice in choices:
            if isinstance(choice, MenuGoto):
                if choice.menu is not None and choice.menu not in self.menus:
                    problems.append(f"{where}: unknown menu {choice.menu!r}")
                if choice.hunt is not None and choice.hunt not in self.hunt_groups:
                    problems.append(f"{where}: unknown hunt group {choice.hunt!r}")
            elif choice is MenuAction.OPERATOR and self.operator is None:
                problems.append(f"{where}: operator, but no operator group is defined")
        if self.operator is not None and isinstance(self.operator.on_no_answer, MenuGoto):
            problems.append("operator.on_no_answer: only hangup (or repeat) after the operator group")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class OffNetNumber(Model):
    """An external number in the group's off-net number group (网外号码组)."""

    number: Annotated[str, BeforeValidator(_require_text), Field(pattern=r"^\+?[0-9]{3,20}$")]
    short: ShortNumber | None = None
    name: str = ""


class CallerIdPolicy(Model):
    """Caller-ID presentation ([000] L531–533, L579; [002] L743)."""

    intra_group: Literal["long", "short", "as_dialled"] = Field(
        default="short", description="show long, show short, or 拨长显长，拨短显短"
    )
    off_net: Literal["own_number", "switchboard"] = Field(
        default="own_number", description="never a short number"
    )


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


class DayKind(StrEnum):
    """Days by the official China calendar (including 调休 adjusted working days)."""

    ANY = "any"
    WORKDAYS = "workdays"
    REST_DAYS = "rest_days"
    PUBLIC_HOLIDAYS = "public_holidays"


class HourRange(Model):
    start: ClockTime = Field(alias="from")
    end: ClockTime = Field(alias="to")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _ordered(self) -> HourRange:
        if self.end <= self.start:
            raise ValueError("'to' must be after 'from' (split a range that crosses midnight in two)")
        return self


class DateRange(Model):
    start: dt.date = Field(alias="from")
    end: dt.date = Field(alias="to")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _ordered(self) -> DateRange:
        if self.end < self.start:
            raise ValueError("'to' is before 'from'")
        return self


class TimeCondition(Model):
    """Holds at a moment when every given part holds (in the group's time zone).

    ``days`` (a day kind or a list of weekdays), ``hours`` (ranges, ``to`` exclusive), ``dates``
    (only on these dates) and ``except_dates`` (never on these dates).
    """

    days: DayKind | list[Weekday] = DayKind.ANY
    hours: list[HourRange] = Field(default_factory=list)
    dates: list[dt.date | DateRange] = Field(default_factory=list)
    except_dates: list[dt.date | DateRange] = Field(default_factory=list)


class ServiceGoto(Model):
    """Where a service-number call goes: exactly one of ``hunt``, ``members``, ``pbx``."""

    hunt: Name | None = Field(
        default=None, description="a hunt group of switchboard.hunt_groups, rung without the menu"
    )
    members: list[MemberNumber] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="members (short or long numbers), the next when one fails or is unreachable",
    )
    pbx: Name | None = Field(
        default=None, description="a PBX of the group, reached on its switchboard number"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ServiceGoto:
        if sum(v is not None for v in (self.hunt, self.members, self.pbx)) != 1:
            raise ValueError("give exactly one of hunt, members, pbx")
        return self


class ServiceRoute(Model):
    """One row of a service number's routing: the first row whose ``when`` and ``regions`` both
    hold decides; the last row has neither (the default)."""

    when: Name | None = Field(default=None, description="time condition; none means always")
    regions: list[Annotated[str, Field(min_length=2, max_length=32)]] | None = Field(
        default=None,
        min_length=1,
        description="the caller's province or city as the phonenumbers geocoder names it in Chinese "
        "(e.g. 广东省, 上海市, 广东省深圳市); a province matches all its cities",
    )
    to: Literal["switchboard"] | ServiceGoto = Field(description="'switchboard' (its menu) or a ServiceGoto")


def _default_last(routes: list[ServiceRoute]) -> list[ServiceRoute]:
    if routes and (routes[-1].when is not None or routes[-1].regions is not None):
        raise ValueError("the last route must have no 'when' and no 'regions' (the default)")
    return routes


ServiceRoutes = Annotated[list[ServiceRoute], Field(min_length=1), AfterValidator(_default_last)]


class CallCentreNumber(Model):
    """A special-service number of the group (呼叫中心直连: 95xxx, 96xxx, 1xxxx, [000] L492).

    ``scope`` is the number's attribute: ``national`` (全网) takes callers from anywhere in the
    country; ``local`` (本地) only callers of the group's own area. A number the numbering plan
    marks local cannot be run nationwide ([000] L93). ``agents`` are members whose off-net calls
    present this number (主叫: the call centre calls out on its special number).
    """

    number: Digits
    scope: Literal["local", "national"] = "local"
    name: str = ""
    routes: ServiceRoutes
    agents: list[MemberNumber] = Field(default_factory=list, description="members presenting the number")


class Mobile400Number(Model):
    """A 400 number of the group (融合通信移动400, [002] L1865): calls to it are paid by the group
    (集团统付) and routed by the call's time and the caller's region."""

    number: Digits
    name: str = ""
    group_paid: Literal[True] = Field(
        default=True, description="集团统付: the group pays calls to its 400 number"
    )
    routes: ServiceRoutes


class OtherCarrierNumber(Model):
    """A number of another carrier the group keeps (他网号码注册和透传, [000] L597), registered on
    one of its lines or PBX trunks. Calls out through the group present it as the caller only
    when ``approved`` (the OA approval by 集客部); otherwise they present the group's own number."""

    number: Annotated[str, BeforeValidator(_require_text), Field(pattern=r"^\+?[0-9]{5,20}$")]
    line: SubscriberNumber | None = Field(default=None, description="the group's line it is registered on")
    pbx: Name | None = Field(default=None, description="the group's PBX whose trunk may present it")
    approved: bool = Field(default=False, description="presented to the carrier only when approved")
    name: str = ""

    @model_validator(mode="after")
    def _one_owner(self) -> OtherCarrierNumber:
        if (self.line is None) == (self.pbx is None):
            raise ValueError("give exactly one of line, pbx")
        return self


class VirtualFixedNumber(Model):
    """虚拟固话: a fixed number of the group with no line behind it that rings mobile members
    (together or in turn, through the switchboard's hunting); their off-net calls through the
    group present it ([000] L553 number resources)."""

    number: SubscriberNumber
    short: ShortNumber | None = None
    name: str = ""
    mobiles: list[MemberNumber] = Field(
        min_length=1, max_length=8, description="mobile members (long or short)"
    )
    strategy: HuntStrategy = HuntStrategy.SIMULTANEOUS
    ring_seconds: int = Field(default=20, ge=1, le=120)


class OneNumber(Model):
    """一号通: calls to a member's number ring its other phones too (fixed and mobile, together
    or in turn); the first to answer wins and the others are cancelled ([001], [002] L2529)."""

    member: MemberNumber = Field(
        description="the member (short or long number) whose number rings several phones"
    )
    also: list[MemberNumber] = Field(min_length=1, max_length=7, description="its other phones: members")
    strategy: HuntStrategy = HuntStrategy.SIMULTANEOUS
    ring_seconds: int = Field(default=20, ge=1, le=120)


class DirectoryEntry(Model):
    """One person or desk of the enterprise directory (企业通信录): a name and department on a
    member of the group (line, PBX extension, mobile, virtual fixed number), by short or long number."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    department: Annotated[str, Field(max_length=64)] = ""
    number: MemberNumber = Field(description="the member's short or long number")
    title: Annotated[str, Field(max_length=64)] = ""


class LegacyVpmn(Model):
    """The group's PBXs face a legacy 综合VPMN platform through ``trunk``: the gateway is their
    front-end ([002] L715–781). Toward the platform a PBX caller becomes the virtual calling
    number ``virtual_prefix`` + 0 + area + PBX number + extension (≤ 15 digits) and the called
    number gets the service trigger ``trigger_prefix``; from the platform, ``routing_prefix`` +
    0 + area + PBX number is stripped from the called and calling numbers and the call goes to
    the PBX. Calls of these PBXs to mobile members and off-net numbers go to the platform."""

    trunk: Name = Field(description="the peer trunk toward the legacy VPMN platform (SCP / MSC)")
    virtual_prefix: Digits = Field(default="90", description="PBX标识前缀 of virtual calling numbers")
    routing_prefix: Digits = Field(default="904", description="PBX路由前缀 on calls toward a PBX")
    trigger_prefix: Digits = Field(default="600", description="service trigger on the called number")
    pbx_numbers: dict[
        Name, Annotated[str, BeforeValidator(_require_text), Field(pattern=r"^[0-9]{1,6}$")]
    ] = Field(min_length=1, description="PBX编号 of each of the group's PBXs that faces the platform")


class GroupFile(Model):
    """``kind: group``: one enterprise group (集团)."""

    kind: Literal["group"]
    id: Name
    name: str = ""
    area_code: Digits = Field(description="without the national prefix, e.g. '21' for Shanghai")
    timezone: TimeZoneName = "Asia/Shanghai"
    fixed_numbers: list[NumberRange] = Field(min_length=1)
    short_numbers: ShortNumberRules
    switchboard: Switchboard | None = None
    lines: list[LineBlock] = Field(default_factory=list)
    mobiles: list[MobileMember] = Field(default_factory=list)
    pbxs: list[Pbx] = Field(default_factory=list)
    off_net_numbers: list[OffNetNumber] = Field(default_factory=list)
    call_centre: list[CallCentreNumber] = Field(
        default_factory=list, description="呼叫中心直连: special-service numbers the group owns"
    )
    mobile_400: list[Mobile400Number] = Field(
        default_factory=list, description="融合通信移动400: 400 numbers the group owns"
    )
    virtual_fixed: list[VirtualFixedNumber] = Field(
        default_factory=list, description="虚拟固话: fixed numbers that ring mobile members"
    )
    one_number: list[OneNumber] = Field(
        default_factory=list, description="一号通: members whose number rings their other phones too"
    )
    legacy_vpmn: LegacyVpmn | None = Field(
        default=None, description="综合VPMN front-end profile of the group's PBXs (legacy platform)"
    )
    directory: list[DirectoryEntry] = Field(
        default_factory=list, description="企业通信录: names and departments of members, searchable"
    )
    other_carrier_numbers: list[OtherCarrierNumber] = Field(
        default_factory=list,
        description="他网号码: other carriers' numbers registered on lines or PBX trunks",
    )
    group_paid_numbers: list[NumberRange] = Field(
        default_factory=list,
        description="numbers of the group whose inbound calls the group pays for (集团统付, 400-like)",
    )
    caller_id: CallerIdPolicy = CallerIdPolicy()
    permissions: Permissions = Permissions()
    time_conditions: dict[Name, TimeCondition] = Field(default_factory=dict)
    carrier_trunks: list[Name] | None = Field(default=None, description="overrides the carrier file's list")
