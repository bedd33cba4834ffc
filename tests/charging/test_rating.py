"""Rating from tariff tables: demo tariffs, billing units, rounding, group overrides, located errors."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.charging.events import CallClass, Rounding
from gateway.charging.rating import Tariff, load_tariffs
from gateway.datafile import DataFileError
from tests.charging.helpers import demo_rater


@pytest.mark.parametrize(
    ("call_class", "duration_ms", "units", "amount_fen"),
    [
        (CallClass.LOCAL, 1, 1, 10),  # any answered call is at least one started minute
        (CallClass.LOCAL, 60_000, 1, 10),
        (CallClass.LOCAL, 60_001, 2, 20),
        (CallClass.NATIONAL, 125_000, 3, 90),
        (CallClass.INTERNATIONAL, 59_500, 1, 80),
        (CallClass.INTERNATIONAL, 600_000, 10, 800),
        (CallClass.MOBILE, 90_000, 2, 20),
        (CallClass.INTRA_GROUP_SHORT, 300_000, 5, 0),
        (CallClass.INTRA_GROUP_LONG, 300_000, 5, 0),
        (CallClass.EMERGENCY, 180_000, 3, 0),
        (CallClass.FOUR_HUNDRED, 120_000, 2, 0),
        (CallClass.LOCAL, 0, 0, 0),  # unanswered
    ],
)
def test_demo_tenant_tariffs(call_class: CallClass, duration_ms: int, units: int, amount_fen: int) -> None:
    rating = demo_rater().rate("acme", call_class, duration_ms)
    assert (rating.units, rating.amount_fen) == (units, amount_fen)
    assert rating.billing_unit_seconds == 60 and rating.rounding is Rounding.CEIL
    assert rating.charged_seconds == units * 60
    assert isinstance(rating.amount_fen, int)
    assert rating.tariff_id == f"demo-2026/default/{call_class.value}"


def test_rounding_rules() -> None:
    tariff = Tariff("t", 60, Rounding.CEIL, Decimal(10))
    assert [tariff.units(ms) for ms in (0, 1, 59_999, 60_000, 60_001)] == [0, 1, 1, 1, 2]
    tariff = Tariff("t", 60, Rounding.NEAREST, Decimal(10))
    assert [tariff.units(ms) for ms in (29_999, 30_000, 89_999, 90_000)] == [0, 1, 1, 2]
    tariff = Tariff("t", 60, Rounding.FLOOR, Decimal(10))
    assert [tariff.units(ms) for ms in (59_999, 60_000, 119_999)] == [0, 1, 1]


def test_fractional_price_per_six_second_unit_rounds_half_up_once_per_call() -> None:
    tariff = Tariff("t", 6, Rounding.CEIL, Decimal("0.8"))  # 0.08 yuan/min
    rating = tariff.rate(61_000)  # 11 units * 0.8 = 8.8 fen
    assert (rating.units, rating.amount_fen, rating.price_fen_per_unit) == (11, 9, "0.8")
    assert tariff.rate(37_000).amount_fen == 6  # 7 units * 0.8 = 5.6


@settings(deadline=None)
@given(duration=st.integers(min_value=1, max_value=10 * 3600 * 1000), unit=st.sampled_from([1, 6, 60]),
       price=st.integers(min_value=0, max_value=1000))
def test_ceil_is_per_started_unit(duration: int, unit: int, price: int) -> None:
    rating = Tariff("t", unit, Rounding.CEIL, Decimal(price)).rate(duration)
    assert (rating.units - 1) * unit * 1000 < duration <= rating.units * unit * 1000
    assert rating.amount_fen == rating.units * price


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tariffs.yaml"
    path.write_text(text, encoding="utf-8")
    return path


_ALL_CLASSES = "".join(f"  '{c.value}': {{price_fen_per_unit: 10}}\n" for c in CallClass)


def test_group_override_layers(tmp_path: Path) -> None:
    rater = load_tariffs(_write(tmp_path, (
        "id: t1\nclasses:\n" + _ALL_CLASSES +
        "groups:\n"
        "  acme:\n"
        "    billing_unit_seconds: 6\n"
        "    classes:\n"
        "      national: {price_fen_per_unit: 2.5}\n"
        "      local: {price_fen_per_unit: 1, rounding: floor}\n"
    )))
    national = rater.rate("acme", CallClass.NATIONAL, 61_000)  # 11 units of 6 s at 2.5 fen
    assert (national.tariff_id, national.units, national.amount_fen) == ("t1/acme/national", 11, 28)
    local = rater.rate("acme", CallClass.LOCAL, 61_000)
    assert (local.units, local.amount_fen, local.rounding) == (10, 10, Rounding.FLOOR)
    # Classes the group does not price use the default price but the group's billing unit.
    mobile = rater.rate("acme", CallClass.MOBILE, 61_000)
    assert (mobile.tariff_id, mobile.billing_unit_seconds, mobile.amount_fen) == ("t1/acme/mobile", 6, 110)
    # Other groups: the default table.
    other = rater.rate("other", CallClass.NATIONAL, 61_000)
    assert (other.tariff_id, other.units, other.amount_fen) == ("t1/default/national", 2, 20)


def test_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, (
        "id: t1\nclasses:\n" + _ALL_CLASSES.replace("  'local': {price_fen_per_unit: 10}\n",
                                                     "  'local': {price_fen_per_unit: 0.12345}\n")
        + "  locl: {price_fen_per_unit: 1}\n"
        + "groups:\n  acme:\n    billing_unit_seconds: 7200\n"
    ))
    with pytest.raises(DataFileError) as info:
        load_tariffs(path)
    rendered = "\n".join(str(p) for p in info.value.problems)
    assert f"{path}:5: classes.local.price_fen_per_unit:" in rendered and "4 decimal" in rendered
    assert "classes.locl" in rendered
    assert "groups.acme.billing_unit_seconds" in rendered


def test_a_class_without_price_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "id: t1\nclasses:\n  local: {price_fen_per_unit: 10}\n")
    with pytest.raises(DataFileError, match="no price for call class"):
        load_tariffs(path)
