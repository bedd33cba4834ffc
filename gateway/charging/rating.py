"""Rating: tariff tables (``config/tariffs.yaml``) turned into a price for a call.

A table gives, per call class, a price in fen per billing unit; the billing unit (60 s by
default, 6 s allowed) and the rounding rule (per started unit by default) apply table-wide and
may be overridden per class and per group customer. All money is integer fen; prices may be
fractional fen per unit (0.8 fen per 6 s) and are kept as ``Decimal``: the amount of a call is
``units * price`` rounded half up to a whole fen, once per call, never via a float.

Billing starts at answer: the duration rated is answer → end in milliseconds, so an
unanswered attempt rates to 0 units and 0 fen.

Tariffs change by version (``versions``), each in force from 00:00 of its ``effective_from``
date in the tariff's ``timezone``: a call is rated with the version in force at its answer
time, so a change at a month boundary never re-rates earlier calls. A version lists only what
changes (prices per class, unit, rounding); the rest carries over from the version before.
The ``billing`` section (rent, packages, tiers, contracts, accounts) is the monthly part of the
model, used by the statement (:mod:`gateway.billing.model`).
"""

from __future__ import annotations

import bisect
import datetime as dt
import zoneinfo
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.billing.model import BillingModel
from gateway.charging.events import CallClass, Rating, Rounding
from gateway.datafile import load_model

_CEIL, _NEAREST = Rounding.CEIL, Rounding.NEAREST  # hot path: no enum descriptor call (3.11)

UnitSeconds = Annotated[int, Field(ge=1, le=3600)]
GroupName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class _TariffModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassTariff(_TariffModel):
    """The price of one call class."""

    price_fen_per_unit: Decimal = Field(ge=0, le=100_000)
    billing_unit_seconds: UnitSeconds | None = None
    rounding: Rounding | None = None

    @field_validator("price_fen_per_unit", mode="before")
    @classmethod
    def _no_binary_float(cls, value: object) -> object:
        # YAML reads 0.8 as a binary float; go through its shortest repr so 0.8 stays 0.8.
        return str(value) if isinstance(value, float) else value

    @field_validator("price_fen_per_unit")
    @classmethod
    def _at_most_four_decimals(cls, value: Decimal) -> Decimal:
        if value != value.quantize(Decimal("0.0001")):
            raise ValueError("at most 4 decimal places (fen per unit)")
        return value


class GroupTariff(_TariffModel):
    """Overrides for one group customer; classes not listed use the default table."""

    billing_unit_seconds: UnitSeconds | None = None
    rounding: Rounding | None = None
    classes: dict[CallClass, ClassTariff] = Field(default_factory=dict)


class TariffVersion(_TariffModel):
    """A later version of the per-minute prices, in force from 00:00 of ``effective_from``."""

    effective_from: dt.date
    billing_unit_seconds: UnitSeconds | None = None
    rounding: Rounding | None = None
    classes: dict[CallClass, ClassTariff] = Field(default_factory=dict)


class TariffFile(_TariffModel):
    """The whole ``tariffs.yaml``."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    currency: Literal["CNY"] = "CNY"
    timezone: str = "Asia/Shanghai"
    """Where the versions' dates and the billing month are (the operator's local time)."""
    effective_from: dt.date = dt.date(2000, 1, 1)
    billing_unit_seconds: UnitSeconds = 60
    rounding: Rounding = Rounding.CEIL
    classes: dict[CallClass, ClassTariff]
    groups: dict[GroupName, GroupTariff] = Field(default_factory=dict)
    versions: list[TariffVersion] = Field(default_factory=list)
    billing: BillingModel = BillingModel()

    @model_validator(mode="after")
    def _every_class_priced(self) -> TariffFile:
        missing = [c.value for c in CallClass if c not in self.classes]
        if missing:
            raise ValueError(f"classes: no price for call class(es) {', '.join(missing)}")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone: unknown time zone {self.timezone!r}") from exc
        dates = [self.effective_from, *(v.effective_from for v in self.versions)]
        if dates != sorted(set(dates)):
            raise ValueError("versions: effective_from dates must increase (and follow the base's)")
        return self

    def flattened(self) -> list[TariffFile]:
        """The base and each version as a complete table (a version inherits what it omits)."""
        tables = [self]
        for version in self.versions:
            prev = tables[-1]
            tables.append(prev.model_copy(update={
                "effective_from": version.effective_from,
                "billing_unit_seconds": version.billing_unit_seconds or prev.billing_unit_seconds,
                "rounding": version.rounding or prev.rounding,
                "classes": {**prev.classes, **version.classes},
                "versions": [],
            }))
        return tables


@dataclass(frozen=True, slots=True)
class Tariff:
    """One compiled tariff row."""

    tariff_id: str
    unit_seconds: int
    rounding: Rounding
    price_fen_per_unit: Decimal
    price_text: str = field(init=False)
    whole_price: int | None = field(init=False)
    """The price as an int when it is whole fen: integer arithmetic, no Decimal, per event."""

    def __post_init__(self) -> None:
        price = self.price_fen_per_unit
        object.__setattr__(self, "price_text", format(price.normalize(), "f"))
        object.__setattr__(self, "whole_price", int(price) if price == price.to_integral_value() else None)

    def units(self, duration_ms: int) -> int:
        unit_ms = self.unit_seconds * 1000
        if duration_ms <= 0:
            return 0
        if self.rounding is _CEIL:
            return -(-duration_ms // unit_ms)
        if self.rounding is _NEAREST:
            return (2 * duration_ms + unit_ms) // (2 * unit_ms)
        return duration_ms // unit_ms

    def rate(self, duration_ms: int) -> Rating:
        units = self.units(duration_ms)
        if self.whole_price is not None:
            amount = units * self.whole_price
        else:
            amount = int((self.price_fen_per_unit * units).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        return Rating(
            tariff_id=self.tariff_id,
            billing_unit_seconds=self.unit_seconds,
            rounding=self.rounding,
            price_fen_per_unit=self.price_text,
            units=units,
            charged_seconds=units * self.unit_seconds,
            amount_fen=amount,
            currency="CNY",
        )


class Rater:
    """Compiled tariff tables, one per version: a dictionary lookup per call, no YAML at call time."""

    def __init__(self, table: TariffFile) -> None:
        self.table_id = table.id
        self.model = table
        self.tz = zoneinfo.ZoneInfo(table.timezone)
        self._free: dict[tuple[str, str | None, CallClass, int], Tariff] = {}
        tables = table.flattened()
        self._starts = [
            dt.datetime.combine(t.effective_from, dt.time(), self.tz).astimezone(dt.UTC) for t in tables
        ]
        self._versions = [_Table(t, first=i == 0) for i, t in enumerate(tables)]

    def _version(self, at: dt.datetime | None) -> int:
        """Index of the version in force at ``at`` (the latest one when ``at`` is None)."""
        if at is None:
            return len(self._versions) - 1
        return max(0, bisect.bisect_right(self._starts, at) - 1)

    def tariff(self, group: str | None, call_class: CallClass, at: dt.datetime | None = None) -> Tariff:
        return self._versions[self._version(at)].tariff(group, call_class)

    def rate(
        self, group: str | None, call_class: CallClass, duration_ms: int, at: dt.datetime | None = None
    ) -> Rating:
        return self.tariff(group, call_class, at).rate(duration_ms)

    def free(
        self, reason: str, group: str | None, call_class: CallClass, at: dt.datetime | None = None
    ) -> Tariff:
        """The zero-price row for a call the charging rules make free (``gateway.charging.payer``):
        the class's billing unit and rounding, so the units still show the call's length."""
        version = self._version(at)
        key = (reason, group, call_class, version)
        row = self._free.get(key)
        if row is None:
            base = self._versions[version].tariff(group, call_class)
            row = Tariff(f"{self.table_id}/free/{reason}", base.unit_seconds, base.rounding, Decimal(0))
            self._free[key] = row
        return row


class _Table:
    """One version's rows: per class, and per group and class."""

    def __init__(self, table: TariffFile, *, first: bool) -> None:
        self.table_id = table.id if first else f"{table.id}@{table.effective_from.isoformat()}"
        self._default = {
            cls: self._compile(table, "default", cls, (base,)) for cls, base in table.classes.items()
        }
        self._groups = {
            group: {
                cls: self._compile(table, group, cls, (base, override, override.classes.get(cls)))
                for cls, base in table.classes.items()
            }
            for group, override in table.groups.items()
        }

    def _compile(
        self,
        table: TariffFile,
        scope: str,
        cls: CallClass,
        layers: tuple[ClassTariff] | tuple[ClassTariff, GroupTariff, ClassTariff | None],
    ) -> Tariff:
        """Layers run from general to specific (default class, group, group class): the last setting wins."""
        table_id = self.table_id
        unit, rounding = table.billing_unit_seconds, table.rounding
        for layer in layers:
            if layer is not None:
                unit = layer.billing_unit_seconds or unit
                rounding = layer.rounding or rounding
        price = next(layer for layer in reversed(layers) if isinstance(layer, ClassTariff)).price_fen_per_unit
        return Tariff(f"{table_id}/{scope}/{cls.value}", unit, rounding, price)

    def tariff(self, group: str | None, call_class: CallClass) -> Tariff:
        if group is not None:
            rows = self._groups.get(group)
            if rows is not None and call_class in rows:
                return rows[call_class]
        return self._default[call_class]



def load_tariffs(path: str | Path) -> Rater:
    """Load, validate (errors name file, line and field) and compile a tariff file."""
    return Rater(load_model(TariffFile, path))
