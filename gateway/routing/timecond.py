"""Time conditions (business hours, weekdays, China public holidays, explicit dates): pure.

Conditions take the moment as input (never read the clock) and are evaluated in the group's
time zone. "Workday" follows the official China calendar: public holidays (法定节假日) are rest
days and adjusted working days (调休, usually a weekend day) are workdays. The data comes from
the ``chinese-calendar`` package (1.11 covers 2004–2026) plus years supplied in the carrier file
(``calendar.years``) from the State Council notice. For a date covered by neither, the calendar
raises ``CalendarCoverageError`` instead of guessing; the decision engine then falls back to the
plain Monday–Friday week and says so in the decision's warnings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import chinese_calendar  # type: ignore[import-untyped,unused-ignore]

from gateway.routing.models import CalendarYear, DateRange, DayKind, TimeCondition, Weekday

_WEEKDAY_INDEX = {day: i for i, day in enumerate(Weekday)}
_PACKAGE_YEARS: tuple[int, int] = (
    min(chinese_calendar.constants.holidays).year,
    max(chinese_calendar.constants.holidays).year,
)


class CalendarCoverageError(LookupError):
    """The official calendar of this year is known neither to the package nor to the dialplan."""

    def __init__(self, year: int) -> None:
        self.year = year
        low, high = _PACKAGE_YEARS
        super().__init__(
            f"no China holiday calendar for {year}: chinese-calendar covers {low}-{high}; "
            f"add calendar.years.{year} (holidays, workdays) to the carrier file"
        )


class DayType(Enum):
    WORKDAY = "workday"
    REST_DAY = "rest day"
    PUBLIC_HOLIDAY = "public holiday"


class HolidayCalendar:
    """Official day types: the package's data, then the years supplied by the dialplan."""

    def __init__(self, supplied: Mapping[int, CalendarYear]) -> None:
        self._supplied_holidays = {d for year in supplied.values() for d in year.holidays}
        self._supplied_workdays = {d for year in supplied.values() for d in year.workdays}
        self._supplied_years = frozenset(supplied)
        self._cache: dict[dt.date, DayType] = {}

    @property
    def covered_years(self) -> tuple[tuple[int, int], frozenset[int]]:
        return _PACKAGE_YEARS, self._supplied_years

    def covers(self, year: int) -> bool:
        return year in self._supplied_years or _PACKAGE_YEARS[0] <= year <= _PACKAGE_YEARS[1]

    def day_type(self, day: dt.date) -> DayType:
        cached = self._cache.get(day)
        if cached is not None:
            return cached
        if day.year in self._supplied_years:
            if day in self._supplied_workdays:
                kind = DayType.WORKDAY
            elif day in self._supplied_holidays:
                kind = DayType.PUBLIC_HOLIDAY
            else:
                kind = DayType.WORKDAY if day.weekday() < 5 else DayType.REST_DAY
        elif _PACKAGE_YEARS[0] <= day.year <= _PACKAGE_YEARS[1]:
            if chinese_calendar.is_workday(day):
                kind = DayType.WORKDAY
            else:
                _, name = chinese_calendar.get_holiday_detail(day)
                kind = DayType.PUBLIC_HOLIDAY if name is not None else DayType.REST_DAY
        else:
            raise CalendarCoverageError(day.year)
        if len(self._cache) < 4096:  # a bounded memo: calls cluster on today's date
            self._cache[day] = kind
        return kind


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _date_set(
    items: list[dt.date | DateRange],
) -> tuple[frozenset[dt.date], tuple[tuple[dt.date, dt.date], ...]]:
    days = frozenset(d for d in items if isinstance(d, dt.date))
    ranges = tuple((r.start, r.end) for r in items if isinstance(r, DateRange))
    return days, ranges


def _in(day: dt.date, days: frozenset[dt.date], ranges: tuple[tuple[dt.date, dt.date], ...]) -> bool:
    return day in days or any(lo <= day <= hi for lo, hi in ranges)


@dataclass(frozen=True, slots=True)
class Evaluation:
    holds: bool
    detail: str
    warning: str | None = None


class CompiledTimeCondition:
    """A time condition ready to evaluate against a local (group time zone) datetime."""

    def __init__(self, name: str, model: TimeCondition, calendar: HolidayCalendar) -> None:
        self.name = name
        self._calendar = calendar
        self._day_kind: DayKind | None = model.days if isinstance(model.days, DayKind) else None
        self._weekdays = (
            frozenset(_WEEKDAY_INDEX[d] for d in model.days)
            if not isinstance(model.days, DayKind)
            else frozenset()
        )
        self._hours = tuple((_minutes(h.start), _minutes(h.end)) for h in model.hours)
        self._dates = _date_set(model.dates)
        self._has_dates = bool(model.dates)
        self._except = _date_set(model.except_dates)

    @property
    def uses_calendar(self) -> bool:
        """Whether the condition needs the official holiday calendar."""
        return self._day_kind is not None and self._day_kind is not DayKind.ANY

    def evaluate(self, local: dt.datetime) -> Evaluation:
        day = local.date()
        if self._has_dates and not _in(day, *self._dates):
            return Evaluation(False, f"{self.name}: {day} is not one of its dates")
        if _in(day, *self._except):
            return Evaluation(False, f"{self.name}: {day} is an excepted date")
        warning = None
        if self._day_kind is None:
            if day.weekday() not in self._weekdays:
                return Evaluation(False, f"{self.name}: {day:%a} is not one of its weekdays")
        elif self._day_kind is not DayKind.ANY:
            try:
                kind = self._calendar.day_type(day)
            except CalendarCoverageError as exc:
                kind = DayType.WORKDAY if day.weekday() < 5 else DayType.REST_DAY
                warning = f"{exc}; took {day} as a {kind.value} (Monday-Friday week)"
            wanted = {
                DayKind.WORKDAYS: kind is DayType.WORKDAY,
                DayKind.REST_DAYS: kind is not DayType.WORKDAY,
                DayKind.PUBLIC_HOLIDAYS: kind is DayType.PUBLIC_HOLIDAY,
            }[self._day_kind]
            if not wanted:
                return Evaluation(
                    False, f"{self.name}: {day} is a {kind.value}, not {self._day_kind.value}", warning
                )
        if self._hours:
            minute = local.hour * 60 + local.minute
            if not any(lo <= minute < hi for lo, hi in self._hours):
                return Evaluation(False, f"{self.name}: {local:%H:%M} is outside its hours", warning)
        return Evaluation(True, f"{self.name}: holds at {local:%Y-%m-%d %H:%M %a}", warning)
