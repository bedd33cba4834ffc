"""Where a Chinese telephone number is: its province and city, for routing by caller region.

The source is the geocoder of ``phonenumbers`` (the Python port of Google's libphonenumber):
its China data names the city of every fixed area code and of every mobile number block
(13S H0H1H2H3, the HLR segment), in Chinese as ``省`` + ``市`` (``广东省深圳市``) or the
municipality alone (``上海市``). It is released several times a year as blocks move, which is
what a routing rule by caller region needs; the numbering plan's own area codes cannot place
a mobile number. Pure: the data is Python modules, loaded once on first use.
"""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from phonenumbers import geocoder


@lru_cache(maxsize=65536)
def region_of(e164: str) -> str:
    """The province/city of ``e164`` in Chinese (``广东省深圳市``, ``上海市``); ``""`` when unknown
    (not a number, or a number placed only at country level such as 400 or 95xxx)."""
    try:
        parsed = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return ""
    if parsed.country_code != 86:
        return ""
    region = geocoder.description_for_number(parsed, "zh")
    return "" if region in ("", "中国") else region


def in_regions(region: str, regions: tuple[str, ...]) -> bool:
    """Does ``region`` lie in one of ``regions``? A province (``广东省``) contains its cities."""
    return bool(region) and region.startswith(regions)
