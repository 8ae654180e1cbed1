"""Shape geometry shared by the renderer and the evaluator's template matcher.

Every shape is parameterised by one nominal ``size`` (pixels) and is centred on its area
centroid, so a rendered object's pixel centroid equals its track point. Shapes never rotate
(triangle and star point up, square is axis aligned, diamond is a tall rhombus).
Anti-aliasing uses a signed distance field: coverage = clip(0.5 - sdf, 0, 1) per pixel.
"""

from __future__ import annotations

import math

import numpy as np

# Proportions relative to ``size`` chosen so all shapes have a similar visual area (0.6-0.8 size^2).
_SQUARE_HALF = 0.44
_TRI_R = 0.70
_DIAMOND_HW, _DIAMOND_HH = 0.50, 0.65
_STAR_R, _STAR_INNER = 0.66, 0.50  # inner radius as a fraction of the outer radius


def _regular_vertices(radius: float, n: int, start_deg: float = -90.0) -> np.ndarray:
    a = np.deg2rad(start_deg + 360.0 / n * np.arange(n))
    return np.stack([radius * np.cos(a), radius * np.sin(a)], -1)


def shape_vertices(shape: str, size: float) -> np.ndarray | None:
    """Polygon vertices (N, 2) relative to the centroid, image axes (y down); None for a circle."""
    if shape == "circle":
        return None
    if shape == "square":
        h = _SQUARE_HALF * size
        return np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    if shape == "triangle":
        return _regular_vertices(_TRI_R * size, 3)
    if shape == "diamond":
        w, h = _DIAMOND_HW * size, _DIAMOND_HH * size
        return np.array([[0.0, -h], [w, 0.0], [0.0, h], [-w, 0.0]])
    if shape == "star":
        outer = _regular_vertices(_STAR_R * size, 5)
        inner = _regular_vertices(_STAR_R * _STAR_INNER * size, 5, start_deg=-90.0 + 36.0)
        return np.stack([outer, inner], 1).reshape(10, 2)
    raise ValueError(f"unknown shape {shape!r}")


def shape_area(shape: str, size: float) -> float:
    """Exact area of a shape in px^2."""
    if shape == "circle":
        return math.pi * (0.5 * size) ** 2
    v = shape_vertices(shape, size)
    x, y = v[:, 0], v[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def shape_radius(shape: str, size: float) -> float:
    """Circumradius (max distance of the outline from the centroid) in px."""
    if shape == "circle":
        return 0.5 * size
    return float(np.linalg.norm(shape_vertices(shape, size), axis=1).max())


def polygon_sdf(px: np.ndarray, py: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from points to a simple polygon."""
    d2 = np.full(np.broadcast(px, py).shape, np.inf)
    inside = np.zeros(d2.shape, dtype=bool)
    n = len(verts)
    for i in range(n):
        ax, ay = verts[i]
        bx, by = verts[(i + 1) % n]
        ex, ey = bx - ax, by - ay
        wx, wy = px - ax, py - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        d2 = np.minimum(d2, (wx - t * ex) ** 2 + (wy - t * ey) ** 2)
        # Even-odd crossing test for a horizontal ray towards +x.
        crosses = ((ay > py) != (by > py)) & (px < ax + (py - ay) * ex / np.where(ey == 0, 1e-12, ey))
        inside ^= crosses
    d = np.sqrt(d2)
    return np.where(inside, -d, d)


def shape_sdf(shape: str, px: np.ndarray, py: np.ndarray, cx: float, cy: float, size: float) -> np.ndarray:
    """Signed distance in px from pixel coordinates to a shape centred at (cx, cy)."""
    dx, dy = px - cx, py - cy
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - 0.5 * size
    return polygon_sdf(dx, dy, shape_vertices(shape, size))


def shape_alpha(shape: str, px: np.ndarray, py: np.ndarray, cx: float, cy: float, size: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of each pixel (pixel centres at integer coordinates)."""
    return np.clip(0.5 - shape_sdf(shape, px, py, cx, cy, size), 0.0, 1.0)
