"""The running trunk table, swapped atomically as a whole (SIGHUP, operations API).

Like the dialplan holder (:mod:`gateway.routing.reload`): a change builds a complete new
:class:`~gateway.registrar.trunks.TrunkTable` first and then replaces the running one with one
reference assignment, so no reader ever sees a half-changed table. Every reader (registrar,
Digest verifier, routers, the operations API) holds the holder, never a table, so none keeps a
stale one after a reload; the holder answers the lookups of
:class:`~gateway.registrar.trunks.TrunkLookup` from the current table. Those that derive state
from the table (the edge guard's trusted addresses, the TLS peer policy, the registrar's HA1
cache) subscribe with :meth:`TrunkHolder.on_swap`.

Operator changes from the API (enable / disable a trunk) are kept in an overrides file under
``state_dir`` (``trunk-overrides.json``), written atomically before the swap, and applied over
the trunk file at every load: they survive a restart and a reload, and the operator's trunk
file is never rewritten (its comments stay). An override naming a trunk the file no longer has
is ignored (logged). Delete the file to go back to the trunk file's ``enabled`` values.

Worker processes share ``state_dir``: worker 0 runs the API and writes the overrides; every
other worker runs an :class:`OverridesFollower`, which notices the file change within a second
and applies its ``enabled`` flags to its own running table (the trunk file itself is re-read
only by SIGHUP, validated with the dialplans).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from gateway.datafile import write_text_atomically
from gateway.polling import Poller
from gateway.registrar.trunks import (
    CarrierTrunk,
    Credential,
    PeerTrunk,
    RegisteringTrunk,
    TrunksFile,
    TrunkTable,
    build_table,
    load_trunks,
)
from gateway.sip.address import Address

log = logging.getLogger(__name__)

OVERRIDES_FILE = "trunk-overrides.json"

SwapListener = Callable[[TrunkTable], None]


class TrunkHolder:
    """Holds the current :class:`TrunkTable`; see the module docstring."""

    def __init__(self, table: TrunkTable, path: Path | None = None, overrides: Path | None = None) -> None:
        self._table = table
        self.path = path
        """The trunk file (``registrar.trunks``); None: no trunks."""
        self.overrides = overrides
        """Where operator changes are kept; None: not kept (tests, tools)."""
        self._listeners: list[SwapListener] = []

    @classmethod
    def load(cls, path: Path | None, overrides: Path | None = None) -> TrunkHolder:
        """Load at start-up; a bad trunk file raises ``DataFileError`` (the gateway must not start)."""
        holder = cls(TrunkTable(), path, overrides)
        holder._table = holder.prepare()
        return holder

    @property
    def table(self) -> TrunkTable:
        return self._table

    def on_swap(self, listener: SwapListener) -> None:
        """Call ``listener(new_table)`` after each swap (derived state is worked out again)."""
        self._listeners.append(listener)

    # -- changing ----------------------------------------------------------------------------------
    def prepare(self) -> TrunkTable:
        """Read and compile the trunk file with the overrides applied, without serving it;
        raises ``DataFileError`` (every problem: file, line, field). Reads files: call it off the
        event loop when it runs."""
        if self.path is None:
            return TrunkTable()
        table = load_trunks(self.path)
        enabled = self._read_overrides()
        if not enabled:
            return table
        for name in sorted(set(enabled) - set(table.trunks)):
            log.warning("trunk override for %r ignored: %s has no such trunk", name, self.path)
        return self._with_enabled(table, enabled)

    def _with_enabled(self, table: TrunkTable, enabled: Mapping[str, bool]) -> TrunkTable:
        """A new table: ``table``'s trunks with the ``enabled`` flags given by name."""
        spec = TrunksFile(trunks=[
            t.model_copy(update={"enabled": enabled[t.name]}) if t.name in enabled else t
            for t in table.trunks.values()
        ])
        return build_table(spec, str(self.path or "<trunks>"))

    def swap(self, table: TrunkTable) -> None:
        """Serve ``table`` from now on (one reference assignment), then tell the listeners."""
        self._table = table
        for listener in self._listeners:
            listener(table)

    def set_enabled(self, name: str, enabled: bool) -> TrunkTable:
        """Enable or disable one trunk: kept in the overrides file first, then swapped in whole.
        ``KeyError`` for an unknown trunk; ``OSError`` when the change cannot be kept (nothing
        changed then)."""
        current = self._table
        if name not in current.trunks:
            raise KeyError(name)
        table = self._with_enabled(current, {name: enabled})
        if self.overrides is not None:
            kept = self._read_overrides()
            kept[name] = enabled
            text = json.dumps({"enabled": kept}, indent=2, sort_keys=True)
            write_text_atomically(self.overrides, text + "\n")
        self.swap(table)
        return table

    def adopt_overrides(self) -> bool:
        """Apply the overrides file, as another process left it, to the running table
        (``enabled`` flags only); whether anything changed."""
        current = self._table
        changes = {
            name: value for name, value in self._read_overrides().items()
            if name in current.trunks and current.trunks[name].enabled != value
        }
        if not changes:
            return False
        self.swap(self._with_enabled(current, changes))
        log.info("trunks: operator changes adopted: %s",
                 ", ".join(f"{n} {'enabled' if v else 'disabled'}" for n, v in sorted(changes.items())))
        return True

    def _read_overrides(self) -> dict[str, bool]:
        if self.overrides is None:
            return {}
        try:
            data = json.loads(self.overrides.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # Refusing to start over an operator's note would be worse: the file's own values
            # serve instead, loudly.
            log.error("trunk overrides %s unreadable (%s): serving the trunk file's values",
                      self.overrides, exc)
            return {}
        enabled = data.get("enabled") if isinstance(data, dict) else None
        if not isinstance(enabled, dict):
            log.error("trunk overrides %s: no \"enabled\" object; ignored", self.overrides)
            return {}
        return {str(k): v for k, v in enabled.items() if isinstance(v, bool)}

    # -- reading (TrunkLookup): always the current table --------------------------------------------
    @property
    def trunks(self) -> Mapping[str, RegisteringTrunk | PeerTrunk | CarrierTrunk]:
        return self._table.trunks

    def credential(self, username: str) -> Credential | None:
        return self._table.credential(username)

    def owner_of(self, number: str) -> RegisteringTrunk | None:
        return self._table.owner_of(number)

    def did_pilot(self, number: str) -> str | None:
        return self._table.did_pilot(number)

    def carriers(self) -> list[CarrierTrunk]:
        return self._table.carriers()

    def identify(
        self, source: Address, from_user: str | None = None, from_host: str | None = None
    ) -> PeerTrunk | CarrierTrunk | None:
        return self._table.identify(source, from_user, from_host)



class OverridesFollower(Poller):
    """Adopt the trunk changes another process (the worker running the API) kept: polls the
    overrides file's size and modification time once a second (see the module docstring)."""

    def __init__(self, holder: TrunkHolder, *, interval: float = 1.0) -> None:
        super().__init__(interval=interval, name="trunk-overrides")
        self.holder = holder
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        if self.holder.overrides is None:
            return None
        try:
            stat = self.holder.overrides.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def check(self) -> bool:
        """Adopt the file if it changed since the last look; whether the table changed."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        return self.holder.adopt_overrides()
