"""G.711 tables, RTP packets and prompt loading: pure."""

from __future__ import annotations

import contextlib
import struct
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.media import g711
from gateway.media.g711 import Codec
from gateway.media.prompts import FRAME_SAMPLES, PromptError, PromptLibrary, is_silent, parse_wav
from gateway.media.rtp import RtpError, RtpPacket, RtpSender, decode


@pytest.mark.parametrize(
    ("sample", "ulaw", "alaw"),
    [(0, 0xFF, 0xD5), (-1, 0x7E, 0x55), (32767, 0x80, 0xAA), (-32768, 0x00, 0x2A), (1000, 0xCE, 0xFA)],
)
def test_g711_known_codes(sample: int, ulaw: int, alaw: int) -> None:
    # Reference values of ITU-T G.711 (as produced by the classic Sun g711.c tables).
    assert g711.encode([sample], Codec.PCMU) == bytes([ulaw])
    assert g711.encode([sample], Codec.PCMA) == bytes([alaw])


@given(st.lists(st.integers(-32768, 32767), max_size=200))
def test_g711_round_trip_stays_within_the_quantisation_step(samples: list[int]) -> None:
    for codec, step in ((Codec.PCMU, 1024), (Codec.PCMA, 1024)):
        decoded = g711.decode(g711.encode(samples, codec), codec)
        for original, back in zip(samples, decoded, strict=True):
            assert abs(original - back) <= max(step * abs(original) // 8192, 16) + 16


def test_every_code_decodes_and_re_encodes_to_itself() -> None:
    for codec in Codec:
        codes = bytes(range(256))
        again = g711.encode(g711.decode(codes, codec), codec)
        # The two codes of zero (+0 / -0) collapse to one; every other code is its own.
        assert sum(a != b for a, b in zip(codes, again, strict=True)) <= 1


def test_transcoding_between_laws_keeps_the_signal() -> None:
    samples = [int(8000 * ((i % 40) - 20) / 20) for i in range(160)]
    ulaw = g711.encode(samples, Codec.PCMU)
    alaw = g711.transcode(ulaw, Codec.PCMU, Codec.PCMA)
    back = g711.decode(alaw, Codec.PCMA)
    assert max(abs(a - b) for a, b in zip(samples, back, strict=True)) < 600


def test_rtp_packet_round_trip_with_csrc_extension_and_padding() -> None:
    packet = RtpPacket(8, 65535, 4294967295, 0xDEADBEEF, b"abc", marker=True, csrcs=(7,))
    assert decode(packet.encode()) == packet
    raw = bytearray(RtpPacket(0, 1, 2, 3, b"").encode())
    raw[0] |= 0x30  # extension + padding
    raw += struct.pack("!HH", 0xBEDE, 1) + b"\x00" * 4 + b"payload" + b"\x00\x00\x03"
    parsed = decode(bytes(raw))
    assert parsed.payload == b"payload"


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80" * 11, b"\x40" + b"\x00" * 11, b"\x81" + b"\x00" * 11, b"\xa0" + b"\x00" * 11 + b"\x00"],
)
def test_rtp_rejects_what_is_not_a_usable_packet(data: bytes) -> None:
    with pytest.raises(RtpError):
        decode(data)


@given(st.binary(max_size=64))
def test_rtp_decode_never_fails_otherwise(data: bytes) -> None:
    with contextlib.suppress(RtpError):
        decode(data)


def test_sender_numbers_packets_and_marks_talkspurts() -> None:
    sender = RtpSender(ssrc=5, sequence=65535, timestamp=4294967200)
    first, second = decode(sender.packet(0, b"x")), decode(sender.packet(0, b"y"))
    assert first.marker and not second.marker
    assert (first.sequence, second.sequence) == (65535, 0)  # wraps (RFC 3550 §5.1)
    assert (second.timestamp - first.timestamp) & 0xFFFFFFFF == 160
    sender.skip()
    third = decode(sender.packet(0, b"z"))
    assert third.marker and (third.timestamp - second.timestamp) & 0xFFFFFFFF == 320
    assert third.sequence == 1  # sequence numbers count packets sent, not time


def _wav(samples: list[int], *, rate: int = 8000, channels: int = 1, tag: int = 1, bits: int = 16) -> bytes:
    if tag == 1:
        data = array("h", samples).tobytes()
    else:
        data = g711.encode(samples, Codec.PCMU if tag == 7 else Codec.PCMA)
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * bits // 8, bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack("<I", 3) + b"abc\x00"
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("tag", [1, 6, 7])
def test_wav_in_any_8khz_mono_form_becomes_20ms_frames_of_both_laws(tag: int) -> None:
    samples = [((i * 37) % 2000) - 1000 for i in range(400)]
    prompt = parse_wav("x", _wav(samples, tag=tag, bits=16 if tag == 1 else 8))
    for codec in Codec:
        frames = prompt.frames[codec]
        assert len(frames) == 3 and all(len(f) == FRAME_SAMPLES for f in frames)  # 400 → 3 frames, padded
        assert is_silent(frames[-1][80:], codec)  # the padding is silence
        assert not is_silent(frames[0], codec)
    assert prompt.duration == pytest.approx(0.06)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a wav", "RIFF"),
        (_wav([0] * 10, rate=16000), "8000 Hz mono"),
        (_wav([0] * 10, channels=2), "8000 Hz mono"),
        (_wav([0] * 10, tag=3, bits=32), "format 3"),
    ],
)
def test_unusable_wav_files_are_refused_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        parse_wav("x", data)


def test_shipped_prompts_load_in_both_languages_and_a_group_directory_overrides(tmp_path: object) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    (directory / "main_zh.wav").write_bytes(_wav([500] * 800))
    library = PromptLibrary.load(groups={"acme": directory})
    for name in ("main_zh", "main_en", "closed_zh", "closed_en", "invalid_zh", "invalid_en", "ringback"):
        prompt = library.get(name)
        assert prompt is not None and prompt.duration > 0.5, name
        assert prompt.duration < 20  # small files
    own = library.get("main_zh", "acme")
    assert own is not None and own.duration == pytest.approx(0.1)
    assert library.get("main_zh", "other") is library.get("main_zh")
