"""Account states at registration: pre-cancelled and cancelled numbers (and groups) may not
register (403); arrears and suspension do not stop registration; removing a binding always works."""

from __future__ import annotations

import pytest

from gateway.accounts.policy import AccountState
from gateway.accounts.store import AccountGate, MemoryAccountStore, Scope
from gateway.registrar.location import MemoryLocationStore
from gateway.registrar.registrar import Registrar
from gateway.registrar.settings import RegistrarConfig
from gateway.registrar.trunks import load_trunks
from tests.registrar.test_registrar import ROOT, Clock, Device


async def registrar_with(states: dict[Scope, dict[str, AccountState]]) -> Registrar:
    store = MemoryAccountStore()
    for scope, entries in states.items():
        for key, state in entries.items():
            await store.set(scope, key, state)
    return Registrar(
        RegistrarConfig.model_validate({"algorithms": ["MD5"]}),
        load_trunks(ROOT / "config" / "trunks.yaml"),
        MemoryLocationStore(),
        b"k" * 32,
        clock=Clock(),
        accounts=AccountGate(store),
    )


@pytest.mark.parametrize("state", [AccountState.CANCELLED, AccountState.PRE_CANCELLED])
async def test_cancelled_line_cannot_register(state: AccountState) -> None:
    registrar = await registrar_with({Scope.NUMBER: {"62880001": state}})
    response = await Device(registrar).register()
    assert response.status == 403
    assert await registrar.store.lookup("62880001", registrar.clock()) == []
    # Another line of the same IAD is not affected.
    assert (await Device(registrar, user="62880002").register()).status == 200


async def test_cancelled_group_bars_every_line() -> None:
    registrar = await registrar_with({Scope.GROUP: {"acme": AccountState.CANCELLED}})
    assert (await Device(registrar, user="62880003").register()).status == 403


@pytest.mark.parametrize("state", [AccountState.NORMAL, AccountState.ARREARS, AccountState.SUSPENDED])
async def test_other_states_register(state: AccountState) -> None:
    registrar = await registrar_with({Scope.NUMBER: {"62880001": state}})
    assert (await Device(registrar).register()).status == 200


async def test_deregistration_is_allowed_after_cancellation() -> None:
    registrar = await registrar_with({})
    device = Device(registrar)
    assert (await device.register()).status == 200
    await registrar.accounts.store.set(Scope.NUMBER, "62880001", AccountState.CANCELLED)  # type: ignore[union-attr]
    assert (await device.register(expires=0)).status == 200
    assert await registrar.store.lookup("62880001", registrar.clock()) == []
