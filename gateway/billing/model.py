"""The monthly part of the tariff model (``config/tariffs.yaml``), as validated data.

The seeds give the structure, not the prices ([000] L62–104, [002] L1363, L1865–1879): number
monthly rent (号码月租费) and monthly function fees per product (月功能费: switchboard, IVR,
extension lines); packages with included minutes per call class, shared by a group per month;
tiered per-minute prices by monthly volume (移动400: 阶梯模式); per-group contracts negotiated
case by case (一事一议) on a class or a destination prefix, as a price or a discount, valid from
one date to another; a discount for the off-net number group (网外号码组); and the account
states (欠费, 停机, 预销号, 销号). Per-minute prices by class, billing unit and rounding, and their
versions by effective date, are in :mod:`gateway.charging.rating` (the gateway rates each call
with them too); this module is what only the monthly statement needs.

Dates are calendar dates in the tariff's time zone (the operator's billing month is local).
``valid_to`` is inclusive: a contract "until 2026-12-31" covers the whole 31st.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.routing.decision import CallClass

Fen = Annotated[int, Field(ge=0, le=100_000_000)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
Subscriber = Annotated[str, Field(pattern=r"^[0-9]{3,15}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Proration(StrEnum):
    """How rent is charged for a number or product added (or removed) within a month."""

    DAILY = "daily"
    """Per day of the month it was held (按天: rent × days held / days in the month, half up)."""
    FULL_MONTH = "full_month"
    """The whole month's rent for any part of it (一次性)."""
    NEXT_MONTH = "next_month"
    """Free until the 1st of the next month (次月生效)."""


class Rent(_Model):
    """Monthly fees in fen (号码月租费, 月功能费)."""

    number_fen: Fen = 0
    """Rent per fixed number per month."""
    products_fen: dict[Name, Fen] = Field(default_factory=dict)
    """Function fee per product per month, e.g. switchboard (总机功能费), ivr, line (分机功能费)."""
    proration: Proration = Proration.DAILY


class Package(_Model):
    """A monthly package: a fee, and minutes per class included for the whole group (shared)."""

    fee_fen: Fen
    included_minutes: dict[CallClass, Annotated[int, Field(ge=0)]]


class Tier(_Model):
    """From ``from_minute`` (of the month's volume, counting from 0) on, this price per minute."""

    from_minute: Annotated[int, Field(ge=0)]
    price_fen_per_minute: Decimal = Field(ge=0, le=100_000)

    @field_validator("price_fen_per_minute", mode="before")
    @classmethod
    def _no_binary_float(cls, value: object) -> object:
        return str(value) if isinstance(value, float) else value


class TierKey(StrEnum):
    """What a tier table prices: inbound minutes on group-paid numbers (400-like)."""

    GROUP_PAID_INBOUND = "group_paid_inbound"


class AccountState(StrEnum):
    """The account states of the seeds ([003] L69) and their effect on the monthly charges."""

    NORMAL = "normal"
    ARREARS = "arrears"
    """欠费: still charged (rent and usage); late fees are BOSS's."""
    SUSPENDED = "suspended"
    """停机: no calls; rent still due (the number is kept)."""
    PRE_CANCELLED = "pre_cancelled"
    """预销号: no calls; no rent from the day it was entered."""
    CANCELLED = "cancelled"
    """销号: nothing more is charged."""


RENT_STOPS = frozenset({AccountState.PRE_CANCELLED, AccountState.CANCELLED})


class NumberBlock(_Model):
    """Fixed numbers the group rents, from ``since`` (and until ``until``, inclusive)."""

    first: Subscriber
    last: Subscriber | None = None
    since: dt.date
    until: dt.date | None = None

    @property
    def count(self) -> int:
        return 1 if self.last is None else int(self.last) - int(self.first) + 1

    @model_validator(mode="after")
    def _ordered(self) -> NumberBlock:
        if self.last is not None and (len(self.last) != len(self.first) or int(self.last) < int(self.first)):
            raise ValueError("last must have the length of first and not be before it")
        if self.until is not None and self.until < self.since:
            raise ValueError("until is before since")
        return self


class ProductHolding(_Model):
    product: Name
    count: Annotated[int, Field(ge=1)] = 1
    since: dt.date
    until: dt.date | None = None


class Contract(_Model):
    """一事一议: a negotiated price or discount for one group, on classes or a destination prefix."""

    id: Name
    classes: list[CallClass] = Field(default_factory=list)
    prefix: Annotated[str, Field(pattern=r"^[0-9]{1,15}$")] | None = None
    """Destination prefix in national form (e.g. ``010`` for Beijing, ``00852``)."""
    price_fen_per_minute: Decimal | None = Field(default=None, ge=0, le=100_000)
    discount_percent: Decimal | None = Field(default=None, gt=0, le=100)
    valid_from: dt.date
    valid_to: dt.date | None = None

    @field_validator("price_fen_per_minute", "discount_percent", mode="before")
    @classmethod
    def _no_binary_float(cls, value: object) -> object:
        return str(value) if isinstance(value, float) else value

    @model_validator(mode="after")
    def _one_of(self) -> Contract:
        if (self.price_fen_per_minute is None) == (self.discount_percent is None):
            raise ValueError("give exactly one of price_fen_per_minute and discount_percent")
        if not self.classes and self.prefix is None:
            raise ValueError("give classes, a prefix, or both")
        if self.valid_to is not None and self.valid_to < self.valid_from:
            raise ValueError("valid_to is before valid_from")
        return self


class GroupAccount(_Model):
    """What one group holds: numbers, products, its package, contracts, its account state."""

    numbers: list[NumberBlock] = Field(default_factory=list)
    products: list[ProductHolding] = Field(default_factory=list)
    package: Name | None = None
    contracts: list[Contract] = Field(default_factory=list)
    account_state: AccountState = AccountState.NORMAL
    state_since: dt.date | None = None
    """When the account entered ``account_state`` (rent stops from then for pre-cancelled/cancelled)."""


class BillingModel(_Model):
    """The ``billing`` section of ``tariffs.yaml``."""

    rent: Rent = Rent()
    packages: dict[Name, Package] = Field(default_factory=dict)
    tiers: dict[TierKey, list[Tier]] = Field(default_factory=dict)
    off_net_group_discount_percent: Decimal = Field(default=Decimal(0), ge=0, le=100)
    accounts: dict[Name, GroupAccount] = Field(default_factory=dict)

    @field_validator("off_net_group_discount_percent", mode="before")
    @classmethod
    def _no_binary_float(cls, value: object) -> object:
        return str(value) if isinstance(value, float) else value

    @field_validator("tiers")
    @classmethod
    def _tiers_from_zero(cls, value: dict[TierKey, list[Tier]]) -> dict[TierKey, list[Tier]]:
        for key, tiers in value.items():
            starts = [t.from_minute for t in tiers]
            if not tiers or starts[0] != 0 or starts != sorted(set(starts)):
                raise ValueError(f"{key.value}: tiers start at minute 0, in increasing order")
        return value

    @model_validator(mode="after")
    def _known_names(self) -> BillingModel:
        for group, account in self.accounts.items():
            if account.package is not None and account.package not in self.packages:
                raise ValueError(f"accounts.{group}.package: no package {account.package!r}")
            for i, holding in enumerate(account.products):
                if holding.product not in self.rent.products_fen:
                    raise ValueError(
                        f"accounts.{group}.products.{i}: no rent for product {holding.product!r}"
                    )
        return self
