"""The last applied desired state and what the agent owns, saved on disk ("always save the
configuration, otherwise service breaks after a reboot", [002] L533–664) and reapplied at start.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path

import pydantic

from edge_agent.confirm import Pending
from edge_agent.model import DesiredState
from edge_agent.reconcile import ObservedAddress, Owned


def atomic_write(path: Path, data: bytes) -> None:
    """Write temp + fsync + rename (+ fsync of the directory): the file is old or new, never torn."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StoreError(Exception):
    """The persisted state file exists but cannot be used."""


@dataclass(frozen=True, slots=True)
class Saved:
    desired: DesiredState
    owned: Owned
    pending: Pending | None = None  # a change still on trial (commit confirmed)
    version_floor: int = 0  # highest version ever applied: a rolled-back one is not taken again


class StateStore:
    FILE = "applied.json"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / self.FILE

    def load(self) -> Saved | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read: {exc.strerror or exc}") from exc
        try:
            doc = json.loads(raw)
            desired = DesiredState.model_validate(doc["desired"])
            owned = Owned(
                frozenset(str(n) for n in doc["owned"]["links"]),
                frozenset(ObservedAddress(str(i), IPv4Interface(a)) for i, a in doc["owned"]["addresses"]),
            )
            pending = Pending.from_json(doc["pending"]) if doc.get("pending") else None
            floor = int(doc.get("version_floor", 0))
        except (ValueError, KeyError, TypeError, pydantic.ValidationError) as exc:
            raise StoreError(f"{self.path}: invalid saved state: {exc}") from exc
        return Saved(desired, owned, pending, floor)

    def save(
        self, desired: DesiredState, owned: Owned, pending: Pending | None = None, version_floor: int = 0
    ) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        doc = {
            "desired": desired.model_dump(mode="json"),
            "owned": {
                "links": sorted(owned.links),
                "addresses": [[a.ifname, str(a.address)] for a in sorted(owned.addresses)],
            },
            "pending": pending.to_json() if pending else None,
            "version_floor": version_floor,
        }
        atomic_write(self.path, json.dumps(doc, indent=1, sort_keys=True).encode())


@dataclass(frozen=True, slots=True)
class Accepted:
    """The newest control message accepted on a channel: its sequence and a digest of its bytes."""

    seq: int
    digest: str


class ControlSeqStore:
    """Highest accepted sequence per control channel, persisted so a reboot does not reopen the
    door to replays (see :mod:`edge_agent.signing`)."""

    FILE = "control.json"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / self.FILE

    def load(self) -> dict[str, Accepted]:
        try:
            doc = json.loads(self.path.read_bytes())
            return {str(ch): Accepted(int(v["seq"]), str(v["digest"])) for ch, v in doc.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Starting with no memory of accepted sequences would accept replays: fail closed.
            raise StoreError(f"{self.path}: invalid control sequence file: {exc}") from exc

    def save(self, accepted: dict[str, Accepted]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        doc = {ch: {"seq": a.seq, "digest": a.digest} for ch, a in sorted(accepted.items())}
        atomic_write(self.path, json.dumps(doc, indent=1).encode())
