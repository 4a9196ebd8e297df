"""A PNG of a matrix without kaleido or PIL: numpy builds the RGB pixels, zlib and struct the file."""

from __future__ import annotations

import struct
import zlib

import numpy as np

# Viridis at 9 stops (matplotlib's), interpolated linearly to 256 entries.
_VIRIDIS_STOPS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)
VIRIDIS = (
    np.stack([np.interp(np.linspace(0, 8, 256), np.arange(9), _VIRIDIS_STOPS[:, c]) for c in range(3)], 1)
    .round()
    .astype(np.uint8)
)
"""uint8[256, 3]: the colour map of the overview images."""


def colourise(matrix: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """uint8[H, W, 3]: values mapped linearly onto VIRIDIS (NaN -> black)."""
    m = np.asarray(matrix, dtype=np.float64)
    lo = np.nanmin(m) if vmin is None else vmin
    hi = np.nanmax(m) if vmax is None else vmax
    scaled = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    index = np.clip(np.nan_to_num(scaled, nan=0.0) * 255, 0, 255).astype(np.int64)
    rgb = VIRIDIS[index]
    rgb[np.isnan(m)] = 0
    return rgb


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray) -> bytes:
    """The bytes of an 8-bit RGB PNG of ``rgb`` uint8[H, W, 3] (filter 0 on every row)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be uint8[H, W, 3], got {rgb.shape}")
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")
    )


def matrix_png(matrix: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> bytes:
    return encode_png(colourise(matrix, vmin, vmax))
