"""The enterprise directory (企业通信录): who is who in a group, and number lookup (电话号码查询).

Entries come from the dialplan: the ``directory`` rows of a group file (a name, department and
title on one of its members), plus the group's switchboard. Each entry carries the member's
short number and long number (as members dial it, and E.164), so the operator (remote
attendant, 远端话务台) and the console can look a person up by name, department or any part
of a number. Pure: built by the compiler, searched in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Entry:
    group: str
    name: str
    department: str
    title: str
    kind: str
    """``line``, ``pbx_extension``, ``mobile``, ``virtual_fixed``, ``switchboard``..."""
    short: str | None
    long: str | None
    """The long number as the group's members dial it (``62880002``, ``13800138001``)."""
    e164: str | None

    def matches(self, needle: str, digits: str) -> bool:
        """Case-insensitive text in name, department or title; or digits inside a number."""
        if needle and (
            needle in self.name.casefold()
            or needle in self.department.casefold()
            or needle in self.title.casefold()
        ):
            return True
        if not digits:
            return False
        return any(digits in n for n in (self.short, self.long, self.e164) if n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "name": self.name,
            "department": self.department,
            "title": self.title,
            "kind": self.kind,
            "short": self.short,
            "long": self.long,
            "e164": self.e164,
        }


def search(
    entries: tuple[Entry, ...], query: str, *, group: str | None = None, limit: int = 50
) -> list[Entry]:
    """Entries matching ``query`` (all of them for an empty query), in directory order: by group,
    then as written. A query of digits (with an optional ``+``) also matches inside numbers."""
    text = query.strip()
    needle = text.casefold()
    plain = text.lstrip("+")
    digits = plain if plain.isdigit() else ""
    found: list[Entry] = []
    for entry in entries:
        if group is not None and entry.group != group:
            continue
        if not text or entry.matches(needle, digits):
            found.append(entry)
            if len(found) >= limit:
                break
    return found
