"""The integer codes inside llama.cpp's block formats, read and written in place (for medkit.convert.quant.gptq).

A block-quantized weight is value = a * g(k) + b per element, where k is a small integer packed into the
block's bits, a and b come from the block's scales (fixed once llama.cpp has chosen them), and g is the
identity (Q2_K ... Q6_K) or a 16-entry codebook (IQ4_NL, IQ4_XS). Not here: the i-quants below 4 bits
(their codes are lattice points of several weights at once). ``decode`` returns the grid (a, b, k range,
codebook) and the current codes; ``encode`` packs new codes into a copy of the raw bytes, scales untouched.
Only the layouts are facts taken from ggml (ggml-common.h: block_q4_0 ... block_q6_K, block_q2_K,
block_q3_K, block_iq4_xs); tests check every codec against gguf.quants.dequantize, the gguf package's reader.

    grid, k = decode("Q4_0", raw)          # raw: uint8 [rows, bytes per row]
    raw2 = encode("Q4_0", raw, k2)         # same shape, same scales, codes k2
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# IQ4_NL's codebook (ggml-common.h kvalues_iq4nl)
IQ4NL_VALUES = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float32
)


@dataclass
class Grid:
    """value = a * g(k) + b for k in lo..hi; g = codebook[k] when a codebook is given, else k."""

    a: np.ndarray  # [rows, n] float32
    b: np.ndarray  # [rows, n] float32
    lo: int | np.ndarray  # an int, or one per row (rows of several tensors stacked)
    hi: int | np.ndarray
    codebook: np.ndarray | None = None

    def values(self, k: np.ndarray) -> np.ndarray:
        g = self.codebook[k] if self.codebook is not None else k.astype(np.float32)
        return self.a * g + self.b


def _half(b: np.ndarray) -> np.ndarray:
    """[..., 2] uint8 -> [...] float32 (little-endian f16; ggml computes its scales in float32 too)."""
    return np.ascontiguousarray(b).view(np.float16)[..., 0].astype(np.float32)


def _nib(qs: np.ndarray) -> np.ndarray:
    """[..., 16] bytes -> [..., 32] codes: element j = low nibble of byte j, j+16 = its high nibble."""
    return np.concatenate([qs & 0xF, qs >> 4], axis=-1)


def _unnib(k: np.ndarray) -> np.ndarray:
    return (k[..., :16] | (k[..., 16:] << 4)).astype(np.uint8)


def _bits(qh: np.ndarray) -> np.ndarray:
    """[..., 4] bytes (a little-endian uint32) -> [..., 32] bits, bit i = element i's fifth bit."""
    return np.unpackbits(qh, axis=-1, bitorder="little")


def _unbits(h: np.ndarray) -> np.ndarray:
    return np.packbits(h.astype(np.uint8), axis=-1, bitorder="little")


def _blocks(raw: np.ndarray, size: int) -> np.ndarray:
    return raw.reshape(raw.shape[0], -1, size)


def _expand(x: np.ndarray, per: int) -> np.ndarray:
    """[rows, nb, m] per-group values -> [rows, nb * m * per] per element."""
    return np.repeat(x, per, axis=-1).reshape(x.shape[0], -1)


# ---- 32-wide blocks ------------------------------------------------------------------------------


def _q4_0(raw: np.ndarray) -> tuple[Grid, np.ndarray]:
    b = _blocks(raw, 18)
    d = _expand(_half(b[..., :2])[..., None], 32)
    return Grid(d, -8 * d, 0, 15), _nib(b[..., 2:]).reshape(raw.shape[0], -1)


def _q4_1(raw: np.ndarray) -> tuple[Grid, np.ndarray]:
    b = _blocks(raw, 20)
    d, m = (_expand(_half(b[..., i : i + 2])[..., None], 32) for i in (0, 2))
    return Grid(d, m, 0, 15), _nib(b[..., 4:]).reshape(raw.shape[0], -1)


def _q5(raw: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    b = _blocks(raw, size)
    qh, qs = b[..., size - 20 : size - 16], b[..., size - 16 :]
    return b, (_nib(qs) | (_bits(qh) << 4)).reshape(raw.shape[0], -1)


def _q5_0(raw: np.ndarray) -> tuple[Grid, np.ndarray]:
    b, k = _q5(raw, 22)
    d = _expand(_half(b[..., :2])[..., None], 32)
    return Grid(d, -16 * d, 0, 31), k


def _q5_1(raw: np.ndarray) -> tuple[Grid, np.ndarray]:
    b, k = _q5(raw, 24)
    d, m = (_expand(_half(b[..., i : i + 2])[..., None], 32) for i in (0, 2))
    return Grid(d, m, 0, 31), k


def _q8_0(raw: np.ndarray) -> tuple[Grid, np.ndarray]:
    b = _blocks(raw, 34)
    d = _expand(_half(b[..., :2])[..., None], 32)
    return Grid(d, np.zeros_like(d), -128, 127), b[..., 2:].view(np.int8).reshape(raw.shape[0], -1)


def _iq4_nl(raw: np.ndarray) -> tuple[Grid, np.ndarray]:
    b = _blocks(raw, 18)
    d = _expand(_half(b[..., :2])[..., None], 32)
    return Grid(d, np.zeros_like(d), 0, 15, IQ4NL_VALUES), _nib(b[..., 2:]).reshape(raw.shape[0], -1)


def _put_nib(raw: np.ndarray, k: np.ndarray, size: int, at: int) -> np.ndarray:
    out = _blocks(raw.copy(), size)
    out[..., at : at + 16] = _unnib(k.reshape(out.shape[0], out.shape[1], 32))
    return out.reshape(raw.shape)


def _put_q5(raw: np.ndarray, k: np.ndarray, size: int) -> np.ndarray:
    out = _blocks(raw.copy(), size)
    kb = k.reshape(out.shape[0], out.shape[1], 32)
    out[..., size - 20 : size - 16] = _unbits(kb >> 4)
    out[..., size - 16 :] = _unnib(kb & 0xF)
    return out.reshape(raw.shape)


def _put_q8_0(raw: np.ndarray, k: np.ndarray) -> np.ndarray:
    out = _blocks(raw.copy(), 34)
    out[..., 2:] = k.reshape(out.shape[0], out.shape[1], 32).astype(np.int8).view(np.uint8)
    return out.reshape(raw.shape)


# ---- 256-wide K blocks ---------------------------------------------------------------------------


def _k4_scales(sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K's 12 scale bytes -> 8 six-bit scales and 8 six-bit mins per super-block."""
    sc = sc.astype(np.int64)
    lo_s, lo_m = sc[..., 0:4] & 63, sc[..., 4:8] & 63
    hi_s = (sc[..., 8:12] & 0xF) | ((sc[..., 0:4] >> 6) << 4)
    hi_m = (sc[..., 8:12] >> 4) | ((sc[..., 4:8] >> 6) << 4)
    f = np.float32
    return np.concatenate([lo_s, hi_s], -1).astype(f), np.concatenate([lo_m, hi_m], -1).astype(f)


def _q4_k(raw: np.ndarray) -> tuple[Grid, np.ndarray]:
    b = _blocks(raw, 144)
    d, dmin = _half(b[..., 0:2])[..., None], _half(b[..., 2:4])[..., None]
    s, m = _k4_scales(b[..., 4:16])
    qs = b[..., 16:].reshape(b.shape[0], b.shape[1], 4, 32)  # 4 chunks of 64 elements
    k = np.concatenate([qs & 0xF, qs >> 4], axis=-1).reshape(raw.shape[0], -1)
    return Grid(_expand(d * s, 32), _expand(-dmin * m, 32), 0, 15), k


def _put_q4_k(raw: np.ndarray, k: np.ndarray) -> np.ndarray:
    out = _blocks(raw.copy(), 144)
    kb = k.reshape(out.shape[0], out.shape[1], 4, 2, 32)
    out[..., 16:] = (kb[..., 0, :] | (kb[..., 1, :] << 4)).reshape(out.shape[0], out.shape[1], 128)
    return out.reshape(raw.shape)


def _q6_k(raw: np.ndarray) -> tuple[Grid, np.ndarray]:
    b = _blocks(raw, 210)
    rows, nb = b.shape[:2]
    ql = b[..., 0:128].reshape(rows, nb, 2, 2, 32)  # [half][low/high 32 bytes]
    qh = b[..., 128:192].reshape(rows, nb, 2, 32)
    sc: np.ndarray = b[..., 192:208].view(np.int8).astype(np.float32)  # 16 scales of 16 elements
    d = _half(b[..., 208:210])[..., None]
    parts = [
        (ql[:, :, :, 0] & 0xF) | (((qh >> 0) & 3) << 4),
        (ql[:, :, :, 1] & 0xF) | (((qh >> 2) & 3) << 4),
        (ql[:, :, :, 0] >> 4) | (((qh >> 4) & 3) << 4),
        (ql[:, :, :, 1] >> 4) | (((qh >> 6) & 3) << 4),
    ]  # each [rows, nb, half, 32]: elements 0-31, 32-63, 64-95, 96-127 of the half
    k = np.stack(parts, axis=3).reshape(rows, -1)
    a = _expand(d * sc, 16)
    return Grid(a, -32 * a, 0, 63), k


def _put_q6_k(raw: np.ndarray, k: np.ndarray) -> np.ndarray:
    out = _blocks(raw.copy(), 210)
    rows, nb = out.shape[:2]
    p: np.ndarray = k.reshape(rows, nb, 2, 4, 32).astype(np.uint8)
    low = np.stack([(p[:, :, :, 0] & 0xF) | ((p[:, :, :, 2] & 0xF) << 4),
                    (p[:, :, :, 1] & 0xF) | ((p[:, :, :, 3] & 0xF) << 4)], axis=3)  # fmt: skip
    high = (p[:, :, :, 0] >> 4) | ((p[:, :, :, 1] >> 4) << 2) | ((p[:, :, :, 2] >> 4) << 4)
    high = high | ((p[:, :, :, 3] >> 4) << 6)
    out[..., 0:128] = low.reshape(rows, nb, 128)
    out[..., 128:192] = high.reshape(rows, nb, 64)
    return out.reshape(raw.shape)


def _q5_k(raw: np.ndarray) -> tuple[Grid, np.ndarray]:
    b = _blocks(raw, 176)
    rows, nb = b.shape[:2]
    d, dmin = _half(b[..., 0:2])[..., None], _half(b[..., 2:4])[..., None]
    s, m = _k4_scales(b[..., 4:16])
    qh = b[..., 16:48][:, :, None, None, :]  # bit 2c (+1 for the high nibbles) of byte l: chunk c, element l
    qs = b[..., 48:].reshape(rows, nb, 4, 1, 32)
    shift = (2 * np.arange(4)[:, None] + np.arange(2)[None, :])[None, None, :, :, None]
    low = np.concatenate([qs & 0xF, qs >> 4], axis=3)  # [rows, nb, chunk, half, 32]
    k = (low | (((qh >> shift) & 1) << 4)).reshape(rows, -1)
    return Grid(_expand(d * s, 32), _expand(-dmin * m, 32), 0, 31), k


def _put_q5_k(raw: np.ndarray, k: np.ndarray) -> np.ndarray:
    out = _blocks(raw.copy(), 176)
    rows, nb = out.shape[:2]
    kb = k.reshape(rows, nb, 4, 2, 32)
    out[..., 48:] = ((kb[..., 0, :] & 0xF) | ((kb[..., 1, :] & 0xF) << 4)).reshape(rows, nb, 128)
    shift = (2 * np.arange(4)[:, None] + np.arange(2)[None, :])[None, None, :, :, None]
    out[..., 16:48] = (((kb >> 4) & 1) << shift).sum(axis=(2, 3)).astype(np.uint8)
    return out.reshape(raw.shape)


# [rows, nb, half, j, 32]: the 2-bit field j of a byte (Q2_K's codes, Q3_K's low bits)
_SHIFT2: np.ndarray = (2 * np.arange(4, dtype=np.uint8)).reshape(1, 1, 1, 4, 1)


def _unpack2(qs: np.ndarray) -> np.ndarray:
    """[rows, nb, 64] bytes -> [rows, nb, 256] 2-bit codes: element 128 h + 32 j + l is bits 2j of byte 32 h + l."""
    rows, nb = qs.shape[:2]
    return ((qs.reshape(rows, nb, 2, 1, 32) >> _SHIFT2) & 3).reshape(rows, nb, 256)


def _q2_k(raw: np.ndarray) -> tuple[Grid, np.ndarray]:
    """16 bytes of 4-bit scales (low nibble) and mins (high), 64 bytes of 2-bit codes (_unpack2), d, dmin:
    value = d * scale * k - dmin * min per 16 elements."""
    b = _blocks(raw, 84)
    rows, nb = b.shape[:2]
    sc = b[..., 0:16]
    d, dmin = _half(b[..., 80:82])[..., None], _half(b[..., 82:84])[..., None]
    k = _unpack2(b[..., 16:80]).reshape(rows, -1)
    a = _expand(d * (sc & 0xF).astype(np.float32), 16)
    return Grid(a, _expand(-dmin * (sc >> 4).astype(np.float32), 16), 0, 3), k


def _pack2(kb: np.ndarray) -> np.ndarray:
    """[rows, nb, 2, 4, 32] 2-bit codes -> [rows, nb, 64] bytes (field j at bits 2j)."""
    return (
        ((kb & 3).astype(np.uint8) << _SHIFT2)
        .sum(axis=3, dtype=np.uint8)
        .reshape(kb.shape[0], kb.shape[1], 64)
    )


def _put_q2_k(raw: np.ndarray, k: np.ndarray) -> np.ndarray:
    out = _blocks(raw.copy(), 84)
    out[..., 16:80] = _pack2(k.reshape(out.shape[0], out.shape[1], 2, 4, 32))
    return out.reshape(raw.shape)


def _q3_k(raw: np.ndarray) -> tuple[Grid, np.ndarray]:
    """32 bytes of high bits (element 32 i + l: bit i of byte l), 64 bytes of low 2 bits (as Q2_K), 12
    bytes of 6-bit scales (low nibbles in bytes 0-7, two high bits in 8-11), d: value = d * (scale - 32)
    * (k - 4) per 16 elements, k = low | high << 2 in 0..7."""
    b = _blocks(raw, 110)
    rows, nb = b.shape[:2]
    sc: np.ndarray = b[..., 96:108].astype(np.int64)
    s = np.arange(16)
    low = (sc[..., s % 8] >> (4 * (s // 8))) & 0xF
    high = (sc[..., 8 + s % 4] >> (2 * (s // 4))) & 3
    d = _half(b[..., 108:110])[..., None]
    lo2 = _unpack2(b[..., 32:96])
    hbit = (b[..., 0:32].reshape(rows, nb, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)) & 1
    k = lo2 | (hbit.reshape(rows, nb, 256) << 2)
    a = _expand(d * ((low | (high << 4)) - 32).astype(np.float32), 16)
    return Grid(a, -4 * a, 0, 7), k.reshape(rows, -1)


def _put_q3_k(raw: np.ndarray, k: np.ndarray) -> np.ndarray:
    out = _blocks(raw.copy(), 110)
    rows, nb = out.shape[:2]
    kb = k.reshape(rows, nb, 2, 4, 32)
    out[..., 32:96] = _pack2(kb)
    bits = ((kb.reshape(rows, nb, 8, 32) >> 2) & 1).astype(np.uint8)
    out[..., 0:32] = (bits << np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)).sum(axis=2, dtype=np.uint8)
    return out.reshape(raw.shape)


def _iq4_xs(raw: np.ndarray) -> tuple[Grid, np.ndarray]:
    b = _blocks(raw, 136)
    rows, nb = b.shape[:2]
    d = _half(b[..., 0:2])[..., None]
    high = b[..., 2:4].copy().view(np.uint16).astype(np.int64)  # [rows, nb, 1]: 2 bits per sub-block
    low: np.ndarray = b[..., 4:8].astype(np.int64)
    ib = np.arange(8)
    ls = ((low[..., ib // 2] >> (4 * (ib % 2))) & 0xF) | (((high >> (2 * ib)) & 3) << 4)
    k = _nib(b[..., 8:].reshape(rows, nb, 8, 16)).reshape(rows, -1)
    a = _expand(d * (ls - 32).astype(np.float32), 32)
    return Grid(a, np.zeros_like(a), 0, 15, IQ4NL_VALUES), k


def _put_iq4_xs(raw: np.ndarray, k: np.ndarray) -> np.ndarray:
    out = _blocks(raw.copy(), 136)
    rows, nb = out.shape[:2]
    out[..., 8:] = _unnib(k.reshape(rows, nb, 8, 32)).reshape(rows, nb, 128)
    return out.reshape(raw.shape)


_DECODE = {
    "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0, "IQ4_NL": _iq4_nl,
    "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k, "IQ4_XS": _iq4_xs, "Q2_K": _q2_k, "Q3_K": _q3_k,
}  # fmt: skip
_ENCODE = {
    "Q4_0": lambda r, k: _put_nib(r, k, 18, 2), "Q4_1": lambda r, k: _put_nib(r, k, 20, 4),
    "Q5_0": lambda r, k: _put_q5(r, k, 22), "Q5_1": lambda r, k: _put_q5(r, k, 24),
    "Q8_0": _put_q8_0, "IQ4_NL": lambda r, k: _put_nib(r, k, 18, 2), "Q4_K": _put_q4_k, "Q5_K": _put_q5_k,
    "Q6_K": _put_q6_k, "IQ4_XS": _put_iq4_xs, "Q2_K": _put_q2_k, "Q3_K": _put_q3_k,
}  # fmt: skip
TYPES = tuple(_DECODE)  # the GGML tensor types whose codes medkit can rewrite


def decode(ggml: str, raw: np.ndarray) -> tuple[Grid, np.ndarray]:
    """(grid, codes) of a tensor's raw bytes (uint8 [rows, bytes per row]) in GGML type ``ggml``."""
    grid, k = _DECODE[ggml](np.ascontiguousarray(raw, dtype=np.uint8))
    return grid, k.astype(np.int16)


def encode(ggml: str, raw: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``raw`` with its codes replaced by ``k`` (ints in the grid's range), its scales as they were."""
    out: np.ndarray = _ENCODE[ggml](np.ascontiguousarray(raw, dtype=np.uint8), np.asarray(k, dtype=np.int16))
    return out
