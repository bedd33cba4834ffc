"""Time conditions (business hours, weekdays, China public holidays, explicit dates): pure.

Conditions take the moment as input (never read the clock) and are evaluated in the group's
time zone. "Workday" follows the official China calendar: public holidays (法定节假日) are rest
days and adjusted working days (调休, usually a weekend day) are workdays.

Where the days come from, in order:

1. years supplied in the carrier file (``calendar.years``), copied from the State Council's
   notice when the package has not caught up yet (the notice comes out in November or later);
2. the ``holidays`` package's China calendar. For the years whose State Council arrangement it
   carries (it lists that year's 调休 working days), the calendar is **official**. For later years
   it still knows the statutory holidays and the make-up days when one falls on a weekend (the
   rule of 全国年节及纪念日放假办法), but not the swapped working weekends: such a year is
   **statutory** only, and a decision that relies on it says so in a warning;
3. beyond the package's years, the calendar raises ``CalendarCoverageError`` instead of guessing;
   the decision engine then falls back to the plain Monday–Friday week and says so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Set
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from importlib.metadata import version

from holidays.countries.china import China

from gateway.routing.models import CalendarYear, DateRange, DayKind, TimeCondition, Weekday

_WEEKDAY_INDEX = {day: i for i, day in enumerate(Weekday)}
PACKAGE = f"holidays {version('holidays')}"
_PACKAGE_YEARS: tuple[int, int] = (China.start_year, China.end_year)


class CalendarCoverageError(LookupError):
    """The calendar of this year is known neither to the package nor to the dialplan."""

    def __init__(self, year: int) -> None:
        self.year = year
        low, high = _PACKAGE_YEARS
        super().__init__(
            f"no China holiday calendar for {year}: {PACKAGE} covers {low}-{high}; "
            f"add calendar.years.{year} (holidays, workdays) to the carrier file"
        )


class Coverage(Enum):
    """How well the calendar knows a year."""

    OFFICIAL = "official"  # the State Council arrangement, 调休 included
    STATUTORY = "statutory"  # statutory holidays and weekend make-up days; swapped workdays unknown
    NONE = "none"


class DayType(Enum):
    WORKDAY = "workday"
    REST_DAY = "rest day"
    PUBLIC_HOLIDAY = "public holiday"


@dataclass(frozen=True, slots=True)
class _PackageYear:
    holidays: frozenset[dt.date]
    workdays: frozenset[dt.date]  # weekend days made working days (调休)


@lru_cache(maxsize=64)
def _package_year(year: int) -> _PackageYear:
    """The package's China calendar of one year (its data never changes within a process).

    The package names only the holidays themselves; the weekend days inside a break (the Sunday
    of a Spring Festival week) are days off of that holiday as the notice counts them ("放假调休，
    共N天"), so a run of days off that holds a holiday is a holiday throughout."""
    china = China(years=range(year - 1, year + 2))  # type: ignore[no-untyped-call]  # untyped __init__
    named, workdays = frozenset(china), frozenset(china.weekend_workdays)

    def day_off(day: dt.date) -> bool:
        return day in named or (day.weekday() >= 5 and day not in workdays)

    days_off: set[dt.date] = set()
    for holiday in named:
        for step in (dt.timedelta(days=-1), dt.timedelta(days=1)):
            day = holiday
            while day_off(day):
                days_off.add(day)
                day += step
    return _PackageYear(
        frozenset(d for d in days_off if d.year == year),
        frozenset(d for d in workdays if d.year == year),
    )


def statutory_warning(year: int) -> str:
    return (
        f"the official {year} holiday arrangement (调休) is not in {PACKAGE}: statutory holidays are "
        f"used and swapped working weekends are unknown; add calendar.years.{year} to the carrier "
        "file from the State Council notice"
    )


class HolidayCalendar:
    """Official day types: the years supplied by the dialplan, then the package's data."""

    def __init__(self, supplied: Mapping[int, CalendarYear]) -> None:
        self._supplied_holidays = {d for year in supplied.values() for d in year.holidays}
        self._supplied_workdays = {d for year in supplied.values() for d in year.workdays}
        self._supplied_years = frozenset(supplied)
        self._cache: dict[dt.date, DayType] = {}
        self._coverage: dict[int, Coverage] = {}

    def coverage(self, year: int) -> Coverage:
        known = self._coverage.get(year)
        if known is None:
            known = self._coverage[year] = self._find_coverage(year)
        return known

    def _find_coverage(self, year: int) -> Coverage:
        if year in self._supplied_years:
            return Coverage.OFFICIAL
        if not _PACKAGE_YEARS[0] <= year <= _PACKAGE_YEARS[1]:
            return Coverage.NONE
        # Every year since 2001 has had swapped working weekends; a year the package lists none
        # for is one whose State Council notice it does not carry yet.
        return Coverage.OFFICIAL if _package_year(year).workdays else Coverage.STATUTORY

    def covers(self, year: int) -> bool:
        """Whether the official arrangement of ``year`` is known."""
        return self.coverage(year) is Coverage.OFFICIAL

    def day_type(self, day: dt.date) -> DayType:
        cached = self._cache.get(day)
        if cached is not None:
            return cached
        holidays_: Set[dt.date]
        workdays: Set[dt.date]
        if day.year in self._supplied_years:
            holidays_, workdays = self._supplied_holidays, self._supplied_workdays
        elif _PACKAGE_YEARS[0] <= day.year <= _PACKAGE_YEARS[1]:
            known = _package_year(day.year)
            holidays_, workdays = known.holidays, known.workdays
        else:
            raise CalendarCoverageError(day.year)
        if day in workdays:
            kind = DayType.WORKDAY
        elif day in holidays_:
            kind = DayType.PUBLIC_HOLIDAY
        else:
            kind = DayType.WORKDAY if day.weekday() < 5 else DayType.REST_DAY
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
            else:
                if self._calendar.coverage(day.year) is Coverage.STATUTORY:
                    warning = f"{statutory_warning(day.year)}; took {day} as a {kind.value}"
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
