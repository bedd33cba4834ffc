"""Property test: any sequence of dialog inputs raises nothing but DialogError, the remote CSeq
never goes down, the local CSeq counts requests, and a terminated dialog stays terminated."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip.dialog import Dialog, DialogError, DialogState
from gateway.sip.message import Request
from tests.sip.test_dialog import VIA, invite, reply

STATUSES = [180, 183, 200, 401, 408, 481, 486, 491, 500]
METHODS = ["INVITE", "UPDATE", "INFO", "BYE", "ACK", "OPTIONS", "NOTIFY"]

ops = st.one_of(
    st.tuples(st.just("initial_response"), st.sampled_from(STATUSES)),
    st.tuples(st.just("receive_request"), st.sampled_from(METHODS), st.integers(0, 30)),
    st.tuples(st.just("send_response"), st.sampled_from(STATUSES)),
    st.tuples(st.just("create"), st.sampled_from(METHODS[:4]), st.sampled_from(STATUSES)),
    st.tuples(st.just("terminate")),
)


@settings(max_examples=150, deadline=None)
@given(st.booleans(), st.sampled_from([180, 200]), st.lists(ops, max_size=25))
def test_dialog_inputs(uac: bool, first: int, sequence: list[tuple[Any, ...]]) -> None:
    initial = invite(("Record-Route: <sip:p1.example.com;lr>",))
    dialog = Dialog.uac(initial, reply(initial, first)) if uac else Dialog.uas(initial, reply(initial, first))
    last_incoming: Request | None = None
    for op in sequence:
        was_terminated = dialog.state is DialogState.TERMINATED
        remote_seq, local_seq = dialog.remote_seq, dialog.local_seq
        try:
            if op[0] == "initial_response":
                if uac:
                    dialog.receive_response(initial, reply(initial, op[1]))
                else:
                    dialog.send_response(initial, reply(initial, op[1]))
            elif op[0] == "receive_request":
                last_incoming = invite(cseq=op[2], method=op[1], to_tag="b-tag" if uac else "a-tag")
                dialog.receive_request(last_incoming)
            elif op[0] == "send_response" and last_incoming is not None:
                dialog.send_response(last_incoming, reply(last_incoming, op[1]))
            elif op[0] == "create":
                request = dialog.create_request(op[1], via=VIA)
                assert request.cseq.seq == (local_seq or 0) + 1
                dialog.receive_response(request, reply(request, op[2]))
            elif op[0] == "terminate":
                dialog.terminate()
        except DialogError as exc:
            assert exc.status in (400, 481, 500)
        if was_terminated:
            assert dialog.state is DialogState.TERMINATED
        if remote_seq is not None:
            assert dialog.remote_seq is not None and dialog.remote_seq >= remote_seq
