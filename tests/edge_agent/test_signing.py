"""Signed control messages, pure (fixed clock): every reason to refuse, checked in a fixed order;
the persisted sequence store; the agent's control section refusing bad key files."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import AgentConfig
from edge_agent.signing import ControlRefusedError, Refusal, Verified, load_public_keys, verify
from edge_agent.store import Accepted, ControlSeqStore, StoreError
from tests.edge_agent.conftest import OpsKey, make_ops_key

NOW = 1_800_000_000.0


def check(
    key: OpsKey,
    data: bytes,
    *,
    site: str = "s1",
    channel: str = "desired",
    last_seq: int = 0,
    now: float = NOW,
) -> Verified:
    keys = load_public_keys([key.public_file])
    return verify(data, keys, site=site, channel=channel, now=now, last_seq=last_seq, max_skew_s=60)


def refusal(key: OpsKey, data: bytes, **kw: Any) -> Refusal:
    with pytest.raises(ControlRefusedError) as info:
        check(key, data, **kw)
    return info.value.reason


def test_a_signed_message_verifies_and_carries_its_body(ops_key: OpsKey) -> None:
    data = ops_key.sign("s1", "desired", {"version": 3}, seq=10, now=NOW)
    verified = check(ops_key, data, last_seq=9)
    assert verified.body == {"version": 3} and verified.seq == 10


def test_every_reason_to_refuse(ops_key: OpsKey, tmp_path: Path) -> None:
    good = ops_key.sign("s1", "desired", {"version": 3}, seq=10, now=NOW, lifetime_s=60)
    assert refusal(ops_key, b'{"version": 3}') is Refusal.UNSIGNED
    assert refusal(ops_key, b"{nope") is Refusal.MALFORMED
    assert refusal(ops_key, b'{"v": 1, "payload": 5, "sig": "x"}') is Refusal.MALFORMED
    assert refusal(ops_key, b'{"v": 2, "payload": "", "sig": ""}') is Refusal.MALFORMED
    other = make_ops_key(tmp_path, "intruder")
    assert refusal(ops_key, other.sign("s1", "desired", {}, seq=10, now=NOW)) is Refusal.BAD_SIGNATURE
    # One changed byte of the signed payload: the signature no longer matches.
    envelope = json.loads(good)
    inner = base64.urlsafe_b64decode(envelope["payload"] + "==").replace(b'"version":3', b'"version":4')
    envelope["payload"] = base64.urlsafe_b64encode(inner).decode().rstrip("=")
    assert refusal(ops_key, json.dumps(envelope).encode()) is Refusal.BAD_SIGNATURE
    assert refusal(ops_key, good, site="s2") is Refusal.WRONG_SITE
    assert refusal(ops_key, good, channel="cmd") is Refusal.WRONG_CHANNEL
    assert refusal(ops_key, good, now=NOW + 61) is Refusal.EXPIRED
    assert refusal(ops_key, good, now=NOW - 61) is Refusal.NOT_YET_VALID
    assert refusal(ops_key, good, last_seq=11) is Refusal.REPLAYED
    check(ops_key, good, now=NOW - 59)  # within the tolerated skew
    check(ops_key, good, last_seq=10)  # the same sequence is for the caller to judge (redelivery)
    with pytest.raises(ControlRefusedError) as info:
        verify(good, [], site="s1", channel="desired", now=NOW, last_seq=0, max_skew_s=60)
    assert info.value.reason is Refusal.NO_KEY


def test_any_configured_key_verifies_for_rotation(ops_key: OpsKey, tmp_path: Path) -> None:
    new = make_ops_key(tmp_path, "new")
    keys = load_public_keys([ops_key.public_file, new.public_file])
    data = new.sign("s1", "cmd", {"command": "report"}, seq=1, now=NOW)
    assert verify(data, keys, site="s1", channel="cmd", now=NOW, last_seq=0, max_skew_s=0).body == {
        "command": "report"
    }


def test_sequence_store_survives_restart_and_fails_closed(tmp_path: Path) -> None:
    store = ControlSeqStore(tmp_path)
    assert store.load() == {}
    store.save({"desired": Accepted(5, "ab"), "cmd": Accepted(7, "cd")})
    assert ControlSeqStore(tmp_path).load() == {"desired": Accepted(5, "ab"), "cmd": Accepted(7, "cd")}
    (tmp_path / ControlSeqStore.FILE).write_text("{broken", encoding="utf-8")
    with pytest.raises(StoreError, match=r"control\.json"):
        ControlSeqStore(tmp_path).load()


def test_config_refuses_a_key_file_that_is_not_an_ed25519_public_key(ops_key: OpsKey, tmp_path: Path) -> None:
    ok = AgentConfig.model_validate({"site": "s1", "control": {"public_keys": [str(ops_key.public_file)]}})
    assert ok.control.public_keys == (ops_key.public_file,)
    for bad in (tmp_path / "missing.pub", ops_key.private_file):
        with pytest.raises(ValueError, match=r"control\.public_keys"):
            AgentConfig.model_validate({"site": "s1", "control": {"public_keys": [str(bad)]}})
