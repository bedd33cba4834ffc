"""Account stores (memory and a real Redis), the gate call control uses, and the CLI."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.accounts import cli as accounts_cli
from gateway.accounts.policy import AccountsSettings, AccountState
from gateway.accounts.store import (
    AccountGate,
    AccountStore,
    MemoryAccountStore,
    RedisAccountStore,
    Scope,
    Subscriber,
    account_store,
)
from gateway.cli import build_parser

S = AccountState
IAD_LINE = Subscriber("62880001", "acme")  # demo tenant: an analogue line of acme-iad
OTHER_LINE = Subscriber("62880002", "acme")


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[AccountStore]:
    if request.param == "memory":
        yield MemoryAccountStore()
        return
    url = request.getfixturevalue("redis_url")
    redis_store = RedisAccountStore(aioredis.Redis.from_url(url), "accounts")
    yield redis_store
    await redis_store.close()


async def test_an_iad_line_in_arrears_cannot_call_a_mobile_but_can_call_110(store: AccountStore) -> None:
    gate = AccountGate(store)
    assert await gate.check_call(IAD_LINE, None) is None
    await store.set(Scope.NUMBER, "62880001", S.ARREARS)  # takes effect for the next call
    refusal = await gate.check_call(IAD_LINE, None)  # 013800138000: off-net, national mobile
    assert refusal is not None and (refusal.status, refusal.reason) == (403, "Account In Arrears")
    assert await gate.check_call(IAD_LINE, None, is_emergency=True) is None  # 110
    assert await gate.check_call(None, IAD_LINE) is None  # incoming still rings
    assert await gate.check_call(OTHER_LINE, None) is None  # the neighbour line is fine


async def test_a_cancelled_line_cannot_register(store: AccountStore) -> None:
    gate = AccountGate(store)
    await store.set(Scope.NUMBER, "62880001", S.CANCELLED)
    refusal = await gate.check_registration(IAD_LINE)
    assert refusal is not None and (refusal.status, refusal.reason) == (403, "Account Cancelled")
    assert await gate.check_registration(OTHER_LINE) is None


async def test_group_state_applies_to_every_member_and_the_stricter_wins(store: AccountStore) -> None:
    gate = AccountGate(store)
    await store.set(Scope.GROUP, "acme", S.SUSPENDED)
    for line in (IAD_LINE, OTHER_LINE):
        assert (await gate.check_call(line, None)) is not None
        refusal = await gate.check_call(None, line)
        assert refusal is not None and refusal.party == "called"
    await store.set(Scope.NUMBER, "62880001", S.CANCELLED)
    refusal = await gate.check_registration(IAD_LINE)
    assert refusal is not None and refusal.state is S.CANCELLED
    await store.set(Scope.GROUP, "acme", S.NORMAL)
    assert await gate.check_call(OTHER_LINE, IAD_LINE) is not None  # on-net to a cancelled line
    assert await gate.check_call(OTHER_LINE, None) is None


async def test_set_get_all_and_back_to_normal(store: AccountStore) -> None:
    await store.set(Scope.NUMBER, "62880003", S.PRE_CANCELLED)
    await store.set(Scope.GROUP, "acme", S.ARREARS)
    assert await store.get(Scope.NUMBER, "62880003") is S.PRE_CANCELLED
    assert await store.all(Scope.NUMBER) == {"62880003": S.PRE_CANCELLED}
    assert await store.all(Scope.GROUP) == {"acme": S.ARREARS}
    await store.set(Scope.NUMBER, "62880003", S.NORMAL)
    assert await store.get(Scope.NUMBER, "62880003") is S.NORMAL
    assert await store.all(Scope.NUMBER) == {}


async def test_redis_changes_by_another_process_apply_to_the_next_call(redis_url: str) -> None:
    gateway_side = AccountGate(RedisAccountStore(aioredis.Redis.from_url(redis_url)))
    operator_side = RedisAccountStore(aioredis.Redis.from_url(redis_url))
    try:
        assert await gateway_side.check_call(IAD_LINE, None) is None
        await operator_side.set(Scope.NUMBER, IAD_LINE.number, S.ARREARS)
        assert await gateway_side.check_call(IAD_LINE, None) is not None
        # A value written by hand that is not a state is read as normal (and logged).
        await operator_side.client.hset("accounts:number", "62880002", "bogus")
        assert await gateway_side.check_call(OTHER_LINE, None) is None
    finally:
        await gateway_side.store.close()
        await operator_side.close()


def test_account_store_follows_the_one_rule() -> None:
    auto = AccountsSettings()
    assert isinstance(account_store(auto, None), MemoryAccountStore)
    assert isinstance(account_store(auto, "redis://127.0.0.1:1/0"), RedisAccountStore)
    with pytest.raises(ValueError, match=r"accounts\.store: the redis accounts store needs redis\.url"):
        account_store(AccountsSettings(store="redis"), None)


def _parser() -> argparse.ArgumentParser:
    try:
        return build_parser()
    except ModuleNotFoundError:  # another team's command module not there yet
        parser = argparse.ArgumentParser(prog="gateway")
        accounts_cli.register(parser.add_subparsers(dest="command", required=True))
        return parser


async def test_account_cli_set_get_list(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = str(tmp_path / "absent.yaml")

    async def run(*argv: str) -> int:
        args = _parser().parse_args(["account", *argv, "--redis", redis_url, "--config", absent])
        code: int = await asyncio.to_thread(args.handler, args)
        return code

    assert await run("set", "62880001", "arrears") == 0
    assert await run("set", "acme", "suspended", "--group") == 0
    assert await run("get", "62880001") == 0
    assert await run("list", "--group") == 0
    assert capsys.readouterr().out == (
        "number 62880001: arrears\ngroup acme: suspended\nnumber 62880001: arrears\nacme\tsuspended\n"
    )
    gate = AccountGate(RedisAccountStore(aioredis.Redis.from_url(redis_url)))
    try:
        assert await gate.check_call(IAD_LINE, None) is not None
    finally:
        await gate.store.close()
    with pytest.raises(SystemExit):
        _parser().parse_args(["account", "set", "62880001", "broke"])


async def test_a_refused_call_gets_a_stop_event_with_the_refusal_cause() -> None:
    from gateway.charging.events import CallClass, EndReason, ReleasedBy
    from gateway.charging.service import ChargingService
    from gateway.charging.sinks import MemorySink
    from tests.charging.helpers import call_info, demo_rater

    store = MemoryAccountStore()
    await store.set(Scope.NUMBER, IAD_LINE.number, S.ARREARS)
    gate = AccountGate(store)
    sink = MemorySink()
    charging = ChargingService(node_id="gw1", rater=demo_rater(), sink=sink)
    # What call control does with an INVITE from the line to 013800138000:
    call = charging.open_call(call_info(CallClass.NATIONAL))
    refusal = await gate.check_call(IAD_LINE, None)
    assert refusal is not None
    call.ended(EndReason.BARRED, ReleasedBy.GATEWAY, sip_status=refusal.status, q850=refusal.q850_cause,
               text=refusal.reason)
    (stop,) = sink.events
    assert stop.release is not None
    assert (stop.release.reason, stop.release.sip_status, stop.release.q850_cause, stop.release.text) == (
        EndReason.BARRED, 403, 21, "Account In Arrears")
    assert (stop.billable_seconds, stop.rating.amount_fen) == (0, 0)


def test_gate_from_settings() -> None:
    from gateway.accounts.policy import AccountsSettings

    gate = AccountGate.from_settings(AccountsSettings(), None)
    assert isinstance(gate.store, MemoryAccountStore)
    assert gate.policy.check_registration(S.CANCELLED) is not None


async def test_an_unreachable_store_refuses_with_503_by_default_or_fails_open() -> None:
    from tests.support.servers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = AccountsSettings(store="redis", timeout_s=0.5)
    allow = AccountGate(account_store(settings, url), fail_open=True)
    refuse = AccountGate(account_store(settings, url))  # fail closed: the default
    try:
        assert await allow.check_call(IAD_LINE, None) is None
        assert await allow.check_registration(IAD_LINE) is None
        assert allow.store_errors == 2
        refusal = await refuse.check_call(IAD_LINE, None)
        assert refusal is not None and (refusal.status, refusal.state) == (503, None)
        registration = await refuse.check_registration(IAD_LINE)
        assert registration is not None and registration.party == "registration"
        assert await refuse.check_call(IAD_LINE, None, is_emergency=True) is None  # 110 always
    finally:
        await allow.store.close()
        await refuse.store.close()
