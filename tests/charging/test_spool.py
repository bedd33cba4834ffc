"""The spool: append in batches, rotate by size, read back tolerating a torn last line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.charging.events import encode
from gateway.charging.spool import Spool, abandoned_spools, read_segment
from tests.charging.helpers import synthetic_event


def _lines(n: int, first: int = 0) -> list[bytes]:
    return [encode(synthetic_event(i, 1)) for i in range(first, first + n)]


def test_append_then_read_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append(_lines(3))
    spool.append(_lines(2, 3))
    assert spool.sealed_segments() == [] and spool.active_has_data
    spool.rotate()
    (path,) = spool.sealed_segments()
    segment = read_segment(path)
    assert [eid for eid, _ in segment.records] == [f"gw1:load{i:06d}:1" for i in range(5)]
    assert not segment.torn_tail and segment.corrupt_lines == 0


def test_rotation_by_size_keeps_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_segment_bytes=4096)
    spool.open()
    for batch in range(20):
        spool.append(_lines(3, batch * 3))
    spool.rotate()
    segments = spool.sealed_segments()
    assert len(segments) > 3
    ids = [eid for path in segments for eid, _ in read_segment(path).records]
    assert ids == [f"gw1:load{i:06d}:1" for i in range(60)]


def test_a_torn_last_line_and_a_corrupt_line_are_skipped(tmp_path: Path) -> None:
    good = _lines(3)
    path = tmp_path / "0000000000000001.jsonl"
    path.write_bytes(good[0] + b"\n" + b"{not json\n" + good[1] + b"\n" + good[2][:40])
    segment = read_segment(path)
    assert [line for _, line in segment.records] == [good[0], good[1]]
    assert segment.torn_tail and segment.corrupt_lines == 1


def test_open_seals_what_a_previous_process_left_and_never_appends_to_it(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.open()
    first.append(_lines(2))
    # The process dies here (no rotate/close); a new one starts.
    second = Spool(tmp_path)
    second.open()
    (old,) = second.sealed_segments()
    second.append(_lines(1, 2))
    assert second.sealed_segments() == [old]
    assert len(read_segment(old).records) == 2
    second.rotate()
    assert [p.name for p in second.sealed_segments()] == ["0000000000000001.jsonl", "0000000000000002.jsonl"]


def test_a_failed_write_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append(_lines(1))
    real_write = os.write

    def half_then_fail(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        spool.append(_lines(2, 1))
    monkeypatch.setattr(os, "write", real_write)
    spool.append(_lines(2, 1))  # the retry
    spool.rotate()
    (path,) = spool.sealed_segments()
    segment = read_segment(path)
    assert [eid for eid, _ in segment.records] == [f"gw1:load{i:06d}:1" for i in range(3)]
    assert segment.corrupt_lines == 0 and not segment.torn_tail


def test_a_segment_older_than_the_age_limit_is_sealed_after_the_next_write(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_segment_age=3600)
    spool.open()
    spool.append(_lines(1), now=100.0)
    spool.append(_lines(1, 1), now=3699.0)
    assert spool.sealed_segments() == []
    spool.append(_lines(1, 2), now=3700.0)  # an hour after the segment was opened
    (sealed,) = spool.sealed_segments()
    assert len(read_segment(sealed).records) == 3 and not spool.active_has_data


def test_adopt_moves_another_spools_segments_behind_ours_in_their_order(tmp_path: Path) -> None:
    mine, theirs = tmp_path / "w0", tmp_path / "w3"
    left = Spool(theirs)
    left.open()
    left.append(_lines(2, first=10))
    left.rotate()
    left.append(_lines(1, first=20))
    left.close()
    spool = Spool(mine)
    spool.open()
    spool.append(_lines(1))
    spool.close()
    spool = Spool(mine)
    spool.open()
    assert spool.adopt(theirs) == 2
    assert spool.adopt(theirs) == 0 and spool.adopt(tmp_path / "absent") == 0 and spool.adopt(mine) == 0
    assert list(theirs.iterdir()) == []
    segments = [read_segment(p).records for p in spool.sealed_segments()]
    calls = [[event_id.split(":")[1] for event_id, _ in records] for records in segments]
    assert calls == [["load000000"], ["load000010", "load000011"], ["load000020"]]
    spool.append(_lines(1, first=30))  # the next segment comes after the adopted ones
    assert spool.sealed_segments()[-1].stem < sorted(mine.iterdir())[-1].stem


def test_abandoned_spools_are_those_no_current_process_writes(tmp_path: Path) -> None:
    base = tmp_path / "charging-spool"
    for name in ("w0", "w1", "w2", "w10", "wx"):
        (base / name).mkdir(parents=True)
    (base / "w5").write_text("")  # a file, not a spool
    # One process now: every worker spool of an earlier multi-worker run.
    every = [base / "w0", base / "w1", base / "w2", base / "w10"]
    assert abandoned_spools(base, workers=1, worker_index=None) == every
    # Two workers now: worker 0 takes what one process left in the base and w2, w10.
    assert abandoned_spools(base / "w0", workers=2, worker_index=0) == [base, base / "w2", base / "w10"]
    assert abandoned_spools(base / "w1", workers=2, worker_index=1) == []
    assert abandoned_spools(tmp_path / "none", workers=1, worker_index=None) == []
