"""Number analysis against the carrier-wide numbering plan (China), compiled into dict indexes.

``NumberAnalyser.analyse(dialled, area)`` classifies one complete dialled string (SIP delivers
numbers en bloc) in the context of the caller's area code. It returns a ``Number`` (class,
E.164 form, national form) or a ``NotANumber`` carrying the SIP status: 484 Address Incomplete
when the string is a proper prefix of something dialable, 404 otherwise.

Dialling formats ([002] L411–419): ``PQRABCD`` local; ``0XYZPQRABCD`` national; ``13SH0H1H2H3ABCD``
mobile, also with a leading 0 when dialled from a fixed line in another city; emergency numbers
dialled directly; ``00`` + country code international; ``+`` E.164. ``+86``/``0086`` numbers are
analysed as domestic numbers.

Locally dialled subscriber numbers (no prefix) must begin with 2–9: that is what tells them
from special (1xx, 95xxx) and mobile numbers. With an area code (``0XYZ``, ``+86XYZ``) nothing
is ambiguous, so any first digit but 0 is accepted and the carrier, which holds the exchange
data, has the last word.

Every family of rules is indexed by prefix in dicts (exact numbers, prefixes by length), so an
analysis is a handful of dict look-ups whatever the size of the plan. ``check_overlaps`` lists the
rules of a plan that could give one string two classifications; the compiler refuses such plans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from gateway.routing.decision import CallClass
from gateway.routing.models import NumberingPlan

_SUBSCRIBER_FIRST = frozenset("23456789")


class Number(NamedTuple):
    """A classified number. ``e164`` is None for special and emergency codes."""

    call_class: CallClass
    e164: str | None
    national: str
    area: str | None
    rule: str


class NotANumber(NamedTuple):
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class _PrefixRule:
    lengths: frozenset[int]
    max_length: int
    call_class: CallClass
    name: str


@dataclass(frozen=True, slots=True)
class _AreaRule:
    prefix: str
    code_length: int
    lengths: frozenset[int]
    max_length: int


# Enum members as module names: attribute access on an enum class costs ~100 ns in CPython 3.11.
_MOBILE, _LOCAL, _NATIONAL = CallClass.MOBILE, CallClass.LOCAL, CallClass.NATIONAL
_INTERNATIONAL, _FOUR_HUNDRED = CallClass.INTERNATIONAL, CallClass.FOUR_HUNDRED
_SPECIAL, _EMERGENCY = CallClass.SPECIAL, CallClass.EMERGENCY
# Results are built with tuple.__new__ (fields in order): a NamedTuple's generated __new__ is
# Python code, and an analysis is on the per-call path.
_new = tuple.__new__


class NumberAnalyser:
    """The compiled numbering plan."""

    def __init__(self, plan: NumberingPlan) -> None:
        self.plan = plan
        self.cc = plan.country_code
        self.plus_cc = "+" + plan.country_code
        self.national_prefix = plan.national_prefix
        self.intl_prefix = plan.international_prefix
        self.emergency: frozenset[str] = frozenset(plan.emergency)
        self._exact: dict[str, tuple[CallClass, str]] = {
            n: (CallClass.EMERGENCY, "emergency") for n in plan.emergency
        }
        self._prefixed: dict[str, list[_PrefixRule]] = {}
        for rule in plan.special:
            label = f"special {rule.name or rule.number or rule.prefix}".strip()
            if rule.number is not None:
                self._exact.setdefault(rule.number, (CallClass.SPECIAL, label))
            else:
                assert rule.prefix is not None and rule.lengths is not None  # the model guarantees it
                self._add_prefixed(rule.prefix, frozenset(rule.lengths), CallClass.SPECIAL, label)
        for ng in plan.non_geographic:
            self._add_prefixed(
                ng.prefix, frozenset([ng.length]), CallClass.FOUR_HUNDRED, f"{ng.name or ng.prefix} number"
            )
        self._prefix_lengths = sorted({len(p) for p in self._prefixed}, reverse=True)
        self._exact_partial = frozenset(n[:i] for n in self._exact for i in range(1, len(n)))
        self.mobile_prefixes = frozenset(plan.mobile_prefixes)
        self._mobile_prefix_lengths = sorted({len(p) for p in self.mobile_prefixes}, reverse=True)
        self.mobile_length = plan.mobile_length
        self._areas: dict[str, _AreaRule] = {}
        for area in plan.area_codes:
            lengths = frozenset(area.subscriber_lengths)
            self._areas[area.prefix] = _AreaRule(area.prefix, area.code_length, lengths, max(lengths))
        self._area_prefix_lengths = sorted({len(p) for p in self._areas}, reverse=True)
        self._area_lengths: dict[str, frozenset[int]] = {}  # memo: area code → subscriber lengths
        self.intl_min = plan.international.min_digits
        self.intl_max = plan.international.max_digits

    def _add_prefixed(self, prefix: str, lengths: frozenset[int], call_class: CallClass, name: str) -> None:
        self._prefixed.setdefault(prefix, []).append(_PrefixRule(lengths, max(lengths), call_class, name))

    # ------------------------------------------------------------------ look-ups

    def area_rule(self, code: str) -> _AreaRule | None:
        """The rule covering area code ``code`` if it is a valid code (right length)."""
        for n in self._area_prefix_lengths:
            rule = self._areas.get(code[:n])
            if rule is not None:
                return rule if len(code) == rule.code_length else None
        return None

    def subscriber_lengths(self, area: str) -> frozenset[int]:
        lengths = self._area_lengths.get(area)
        if lengths is None:
            rule = self.area_rule(area)
            lengths = self._area_lengths[area] = rule.lengths if rule is not None else frozenset()
        return lengths

    def is_mobile(self, digits: str) -> bool:
        return len(digits) == self.mobile_length and self._mobile_prefix(digits)

    def _mobile_prefix(self, digits: str) -> bool:
        for n in self._mobile_prefix_lengths:  # noqa: SIM110 - no generator on the per-call path
            if digits[:n] in self.mobile_prefixes:
                return True
        return False

    def local_e164(self, area: str, subscriber: str) -> str:
        return f"{self.plus_cc}{area}{subscriber}"

    def phone_context(self, area: str | None) -> str:
        """RFC 3966 §5.1.5 phone-context of a local number dialled in ``area``."""
        return f"{self.plus_cc}-{area}" if area else self.plus_cc

    def national_form(self, e164: str) -> str:
        """How the number is written nationally: 0XYZ..., 13..., 400..., 00CC..."""
        if e164.startswith(self.plus_cc):
            nsn = e164[len(self.plus_cc) :]
            if self.is_mobile(nsn) or self._special_or_400(nsn) is not None:
                return nsn
            return self.national_prefix + nsn
        return self.intl_prefix + e164[1:]

    def dialable(self, e164: str, area: str | None) -> str:
        """The form a member in ``area`` dials to call ``e164`` back (local numbers without area code)."""
        if area is not None and e164.startswith(self.plus_cc + area):
            sub = e164[len(self.plus_cc) + len(area) :]
            if len(sub) in self.subscriber_lengths(area) and sub[:1] in _SUBSCRIBER_FIRST:
                return sub
        return self.national_form(e164)

    def dialable_of(self, number: Number, area: str) -> str:
        """``dialable`` for an analysed number (no second analysis)."""
        if number.area == area and number.e164 is not None:
            sub = number.e164[len(self.plus_cc) + len(area) :]
            if sub[:1] in _SUBSCRIBER_FIRST:
                return sub
        return number.national

    # ------------------------------------------------------------------ analysis

    def analyse(self, dialled: str, area: str | None) -> Number | NotANumber:
        """Classify a complete dialled string as seen from a caller in ``area`` (None: no local dialling)."""
        return self.classify(dialled, area) or self._unknown(dialled, area)

    def classify(self, dialled: str, area: str | None) -> Number | NotANumber | None:
        """Like ``analyse`` but None (instead of working out 404 or 484) when no rule matches."""
        if not dialled:
            return NotANumber(484, "empty number")
        if dialled[0] == "+":
            digits = dialled[1:]
            if not digits.isdigit() or not digits.isascii():
                return NotANumber(404, "not a telephone number")
            return self._international(digits, area, "+")
        if not dialled.isdigit() or not dialled.isascii():
            return NotANumber(404, "not a telephone number")
        hit = self._exact.get(dialled)
        if hit is not None:
            return _new(Number, (hit[0], None, dialled, None, hit[1]))
        if dialled.startswith(self.intl_prefix):
            return self._international(dialled[len(self.intl_prefix) :], area, self.intl_prefix)
        if dialled.startswith(self.national_prefix):
            return self._domestic(dialled[len(self.national_prefix) :], area, "national prefix")
        found = self._special_or_400(dialled)
        if found is not None:
            return found
        if len(dialled) == self.mobile_length and self._mobile_prefix(dialled):
            return _new(Number, (_MOBILE, self.plus_cc + dialled, dialled, None, "mobile"))
        if area is not None and dialled[0] in _SUBSCRIBER_FIRST:
            lengths = self._area_lengths.get(area)
            if lengths is None:
                rule = self.area_rule(area)
                lengths = self._area_lengths[area] = rule.lengths if rule is not None else frozenset()
            if len(dialled) in lengths:
                return _new(
                    Number,
                    (
                        _LOCAL,
                        self.local_e164(area, dialled),
                        self.national_prefix + area + dialled,
                        area,
                        "local subscriber number",
                    ),
                )
        return None

    def _special_or_400(self, digits: str) -> Number | None:
        for n in self._prefix_lengths:
            rules = self._prefixed.get(digits[:n])
            if rules:
                for rule in rules:
                    if len(digits) in rule.lengths:
                        e164 = self.plus_cc + digits if rule.call_class is _FOUR_HUNDRED else None
                        return _new(Number, (rule.call_class, e164, digits, None, rule.name))
        return None

    def _international(self, digits: str, area: str | None, how: str) -> Number | NotANumber:
        if digits.startswith(self.cc):
            return self._domestic(digits[len(self.cc) :], area, how + self.cc, e164_form=True)
        if not digits:
            return NotANumber(484, "international number incomplete: no country code")
        if digits[0] == "0":
            return NotANumber(404, "country codes do not begin with 0")
        if len(digits) < self.intl_min:
            return NotANumber(
                484, f"international number incomplete: {len(digits)} of at least {self.intl_min} digits"
            )
        if len(digits) > self.intl_max:
            return NotANumber(
                404, f"international number too long: {len(digits)} digits, E.164 allows {self.intl_max}"
            )
        return _new(Number, (_INTERNATIONAL, "+" + digits, self.intl_prefix + digits, None, "international"))

    def _domestic(self, nsn: str, area: str | None, how: str, e164_form: bool = False) -> Number | NotANumber:
        """A national significant number, reached through the national prefix, ``+86`` or ``0086``."""
        if not nsn:
            return NotANumber(484, f"number incomplete after {how}")
        if len(nsn) == self.mobile_length and self._mobile_prefix(nsn):
            return _new(Number, (_MOBILE, self.plus_cc + nsn, nsn, None, "mobile"))
        if e164_form:
            found = self._special_or_400(nsn)
            if found is not None and found.call_class is _FOUR_HUNDRED:
                return found
        for n in self._area_prefix_lengths:
            rule = self._areas.get(nsn[:n])
            if rule is None:
                continue
            code = nsn[: rule.code_length]
            sub = nsn[rule.code_length :]
            if len(sub) in rule.lengths and sub[0] != "0":
                call_class = _LOCAL if code == area else _NATIONAL
                return _new(
                    Number, (call_class, self.plus_cc + nsn, self.national_prefix + nsn, code, "fixed number")
                )
            if sub[:1] == "0":
                return NotANumber(404, f"subscriber numbers in area {code} do not begin with 0")
            if len(sub) < rule.max_length:
                return NotANumber(
                    484, f"number incomplete: area {code} has {_lengths(rule.lengths)}-digit numbers"
                )
            return NotANumber(404, f"number too long for area {code} ({_lengths(rule.lengths)} digits)")
        if len(nsn) < self.mobile_length and (self._mobile_partial(nsn) or self._area_partial(nsn)):
            return NotANumber(484, f"number incomplete after {how}")
        return NotANumber(404, f"no area code or mobile prefix matches after {how}")

    def _unknown(self, dialled: str, area: str | None) -> NotANumber:
        """Nothing matched a complete number: 484 if more digits could make one, else 404."""
        if dialled in self._exact_partial:
            return NotANumber(484, "number incomplete (prefix of a special or emergency number)")
        for prefix, rules in self._prefixed.items():
            longest = max(r.max_length for r in rules)
            if (dialled.startswith(prefix) or prefix.startswith(dialled)) and len(dialled) < longest:
                return NotANumber(484, f"number incomplete ({rules[0].name})")
        if len(dialled) < self.mobile_length and self._mobile_partial(dialled):
            return NotANumber(484, "number incomplete (mobile numbers have 11 digits)")
        if area is not None and dialled[0] in _SUBSCRIBER_FIRST:
            lengths = self.subscriber_lengths(area)
            if lengths and len(dialled) < max(lengths):
                return NotANumber(
                    484, f"number incomplete: local numbers in area {area} have {_lengths(lengths)} digits"
                )
        if self.intl_prefix.startswith(dialled) or self.national_prefix.startswith(dialled):
            return NotANumber(484, "number incomplete")
        return NotANumber(404, "no rule of the numbering plan matches")

    def _mobile_partial(self, digits: str) -> bool:
        return any(p.startswith(digits) or digits.startswith(p) for p in self.mobile_prefixes)

    def _area_partial(self, nsn: str) -> bool:
        return any(p.startswith(nsn) for p in self._areas)

    # ------------------------------------------------------------------ plan checks

    def check_overlaps(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(field, message) for every pair of rule families that could match one string."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        local_lengths = {n for rule in self._areas.values() for n in rule.lengths}
        for i, rule in enumerate(self.plan.special):
            where: tuple[str | int, ...] = ("numbering", "special", i)
            if rule.number is not None:
                if rule.number in self.emergency:
                    problems.append((where, f"{rule.number} is an emergency number"))
                elif self._could_be_mobile_or_local(rule.number, len(rule.number), local_lengths):
                    problems.append((where, f"{rule.number} clashes with mobile or local subscriber numbers"))
            else:
                assert rule.prefix is not None and rule.lengths is not None
                for n in rule.lengths:
                    if self._could_be_mobile_or_local(rule.prefix, n, local_lengths):
                        problems.append(
                            (
                                where,
                                f"prefix {rule.prefix} with length {n} clashes with "
                                "mobile or local subscriber numbers",
                            )
                        )
        for i, ng in enumerate(self.plan.non_geographic):
            if self._could_be_mobile_or_local(ng.prefix, ng.length, local_lengths):
                problems.append(
                    (
                        ("numbering", "non_geographic", i),
                        f"prefix {ng.prefix} clashes with mobile or local subscriber numbers",
                    )
                )
        for i, area in enumerate(self.plan.area_codes):
            for mp in self.mobile_prefixes:
                if mp.startswith(area.prefix) or area.prefix.startswith(mp):
                    problems.append(
                        (
                            ("numbering", "area_codes", i),
                            f"area prefix {area.prefix} overlaps mobile prefix {mp}",
                        )
                    )
        seen: dict[str, int] = {}
        for i, area in enumerate(self.plan.area_codes):
            if area.prefix in seen:
                problems.append(
                    (
                        ("numbering", "area_codes", i),
                        f"prefix {area.prefix} repeats area_codes[{seen[area.prefix]}]",
                    )
                )
            seen.setdefault(area.prefix, i)
        for i, code in enumerate(self.plan.emergency):
            if code[0] == self.national_prefix[0] or code.startswith(self.intl_prefix):
                problems.append(
                    (("numbering", "emergency", i), "emergency numbers cannot begin with the national prefix")
                )
        return problems

    def _could_be_mobile_or_local(self, prefix: str, length: int, local_lengths: set[int]) -> bool:
        if length == self.mobile_length and any(
            p.startswith(prefix) or prefix.startswith(p) for p in self.mobile_prefixes
        ):
            return True
        return length in local_lengths and prefix[0] in _SUBSCRIBER_FIRST


def _lengths(lengths: frozenset[int]) -> str:
    return "/".join(str(n) for n in sorted(lengths))
