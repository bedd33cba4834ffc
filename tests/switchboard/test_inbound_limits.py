"""An inbound switchboard call takes a slot of its inbound trunk's limits through the call
core, as call control's calls do: with the carrier trunk at ``max_calls: 1``, a second caller
to the switchboard gets 503 while the first is in the IVR; the slot is given back at the end."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import yaml

from tests.call.harness import free_port, run_caller, screen
from tests.mgmt.test_under_load import wait_until
from tests.switchboard.peers import WORKDAY_MORNING, demo_gateway, switchboard_status
from tests.switchboard.test_sipp_ivr import assert_ok, call, settle


def test_a_second_caller_gets_503_while_the_trunk_slot_is_held_in_the_ivr(tmp_path: Path) -> None:
    caller, second, pbx = free_port(), free_port(), free_port()
    gw = demo_gateway(
        tmp_path / "gw", carrier=caller, pbx=pbx, at=WORKDAY_MORNING, switchboard={"media_timeout": 2.0},
    )
    trunks_file = tmp_path / "gw" / "trunks.yaml"
    trunks = yaml.safe_load(trunks_file.read_text())
    for trunk in trunks["trunks"]:
        if trunk["name"] == "carrier":  # a second address, so that a second caller is the carrier too
            trunk["max_calls"] = 1
            trunk["destinations"].append({**trunk["destinations"][0], "port": second})
    trunks_file.write_text(yaml.safe_dump(trunks))
    gw.start()
    try:
        outcome: dict[str, subprocess.CompletedProcess[str]] = {}
        # The first caller stays silent in the menu until the media timeout hangs it up; the
        # PBX trunk has no listener, so no hunt answers meanwhile.
        first = threading.Thread(target=lambda: outcome.setdefault("first", call(
            gw, tmp_path / "first", end="gateway_bye", caller_port=caller, callee_port=free_port(),
        )[0]))
        first.start()
        wait_until(lambda: switchboard_status(gw)["calls"] == 1)
        second = run_caller(tmp_path / "second", "call_uac_503.xml", second, gw, service="62880000")
        assert second.returncode == 0, screen(tmp_path / "second") + gw.log()[-3000:]
        first.join(timeout=60)
        assert_ok(outcome["first"], gw, tmp_path / "first")
        assert "Limit Reached (trunk:carrier)" in gw.log()
        settle(gw)  # no limit slot left (the call status socket's ``limits``)
        # The slot was given back: the next caller is answered by the IVR (and hangs up).
        again, _receiver, _invites = call(
            gw, tmp_path / "third", end="caller_bye", caller_port=caller, callee_port=free_port(),
        )
        assert_ok(again, gw, tmp_path / "third")
        settle(gw)
    finally:
        gw.stop()
