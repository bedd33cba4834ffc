"""G.711 μ-law and A-law (ITU-T G.711) with small tables: the ``audioop`` module is deprecated
(PEP 594) and gone in Python 3.13.

Encoding runs once per prompt at load time (a table lookup per sample); decoding is a 256-entry
table, used by tests and by anything that inspects received audio.
"""

from __future__ import annotations

from array import array
from enum import Enum

_BIAS = 0x84
_CLIP = 32635


def _ulaw_encode_one(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sample < 0 else sample, _CLIP) + _BIAS
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not magnitude & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _ulaw_decode_one(code: int) -> int:
    code = ~code & 0xFF
    sign, exponent, mantissa = code & 0x80, (code >> 4) & 0x07, code & 0x0F
    magnitude = ((mantissa << 3) + _BIAS) << exponent
    magnitude -= _BIAS
    return -magnitude if sign else magnitude


def _alaw_encode_one(sample: int) -> int:
    sign = 0x80 if sample >= 0 else 0  # A-law: bit 7 set for positive values
    magnitude = min(-sample - 1 if sample < 0 else sample, 32767) >> 3  # 13-bit magnitude
    if magnitude < 32:
        code = magnitude >> 1
    else:
        exponent = magnitude.bit_length() - 5
        code = (exponent << 4) | ((magnitude >> exponent) & 0x0F)
    return (sign | code) ^ 0x55


def _alaw_decode_one(code: int) -> int:
    code ^= 0x55
    sign, exponent, mantissa = code & 0x80, (code >> 4) & 0x07, code & 0x0F
    magnitude = (mantissa << 4) + 8 if exponent == 0 else (mantissa << 4) + 264 << exponent - 1
    return magnitude if sign else -magnitude


# 14-bit (μ-law) and 13-bit (A-law) indexed encode tables: sample >> 2 / >> 3 picks the entry.
_ULAW_ENC = bytes(_ulaw_encode_one((i - 8192) << 2) for i in range(16384))
_ALAW_ENC = bytes(_alaw_encode_one((i - 4096) << 3) for i in range(8192))
ULAW_DECODE: tuple[int, ...] = tuple(_ulaw_decode_one(c) for c in range(256))
ALAW_DECODE: tuple[int, ...] = tuple(_alaw_decode_one(c) for c in range(256))


class Codec(Enum):
    """The G.711 laws with their static RTP payload types (RFC 3551 §6)."""

    PCMU = 0
    PCMA = 8

    @property
    def payload_type(self) -> int:
        return self.value


def encode(samples: array[int] | list[int], codec: Codec) -> bytes:
    """16-bit linear samples → G.711 octets."""
    if codec is Codec.PCMU:
        table = _ULAW_ENC
        return bytes(table[(s >> 2) + 8192] for s in samples)
    table = _ALAW_ENC
    return bytes(table[(s >> 3) + 4096] for s in samples)


def decode(data: bytes, codec: Codec) -> list[int]:
    """G.711 octets → 16-bit linear samples."""
    table = ULAW_DECODE if codec is Codec.PCMU else ALAW_DECODE
    return [table[b] for b in data]


def transcode(data: bytes, source: Codec, target: Codec) -> bytes:
    """μ-law ↔ A-law through linear (a prompt stored in one law, sent in the other)."""
    if source is target:
        return data
    return encode(decode(data, source), target)


SILENCE = {Codec.PCMU: 0xFF, Codec.PCMA: 0xD5}
"""The code of a zero sample in each law."""
