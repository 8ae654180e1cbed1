"""Colour science for ShapesWorld: sRGB <-> CIELAB and the object palette.

Object colours are classified in CIELAB (CIE76 delta-E) because Euclidean distance there tracks
perceived difference far better than in RGB, which keeps yellow/orange/red apart reliably.
"""

from __future__ import annotations

import numpy as np

# Saturated object colours. Chosen so every pair is >= 44 delta-E apart and every colour is
# >= 30 delta-E from any background colour (backgrounds are muted: chroma <= 10, L in [22, 55]).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 180, 60),
    "cyan": (40, 200, 220),
    "blue": (30, 90, 235),
    "purple": (180, 40, 190),
    "white": (245, 245, 245),
}

# D65 reference white.
_WHITE = np.array([0.95047, 1.0, 1.08883])
_M_RGB2XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_M_XYZ2RGB = np.linalg.inv(_M_RGB2XYZ)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert uint8 or [0, 255] float sRGB (..., 3) to CIELAB (..., 3) float32."""
    c = np.asarray(rgb, dtype=np.float32) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _M_RGB2XYZ.T.astype(np.float32) / _WHITE.astype(np.float32)
    eps = 216 / 24389
    kappa = 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    lab = np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)
    return lab.astype(np.float32)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """Convert CIELAB (..., 3) to float sRGB in [0, 255] (clipped)."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    fx = fy + lab[..., 1] / 500
    fz = fy - lab[..., 2] / 200
    f = np.stack([fx, fy, fz], -1)
    eps = 216 / 24389
    kappa = 24389 / 27
    xyz = np.where(f**3 > eps, f**3, (116 * f - 16) / kappa) * _WHITE
    lin = np.clip(xyz @ _M_XYZ2RGB.T, 0, 1)
    c = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    return np.clip(c * 255.0, 0, 255)


PALETTE_NAMES: tuple[str, ...] = tuple(PALETTE)
PALETTE_LAB: np.ndarray = srgb_to_lab(np.array([PALETTE[n] for n in PALETTE_NAMES], dtype=np.float32))


def nearest_color(lab: np.ndarray, max_delta_e: float = 40.0) -> tuple[str, float]:
    """Name of the palette colour nearest to one Lab colour, or ("unknown", d) if none is close."""
    d = np.linalg.norm(PALETTE_LAB - np.asarray(lab, dtype=np.float32)[None], axis=1)
    i = int(np.argmin(d))
    if d[i] > max_delta_e:
        return "unknown", float(d[i])
    return PALETTE_NAMES[i], float(d[i])


def delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE76 colour difference between Lab arrays (broadcasting)."""
    return np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32), axis=-1)
