"""Measurement primitives for the evaluator: segmentation, blobs, shape templates, camera motion.

Everything is plain numpy and works on any video (F, H, W, 3) uint8, generated or rendered.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .color import PALETTE_LAB, PALETTE_NAMES, nearest_color, srgb_to_lab
from .geometry import shape_alpha, shape_area
from .spec import SHAPES

# A pixel is foreground when its Lab distance to the background exceeds this. Backgrounds vary by
# <= ~14 delta-E around their median; objects sit >= 30 delta-E away from any background colour.
FG_THRESHOLD = 20.0
MIN_BLOB_FRACTION = 0.0025  # of the frame area (10 px at 64x64)
UNKNOWN_COLOR_DELTA_E = 40.0
SPLIT_DELTA_E = 25.0  # core pixels this close to a palette colour may split a merged blob


@dataclass
class Blob:
    """One connected foreground region in one frame."""

    frame: int
    color: str  # palette name or "unknown"
    lab: np.ndarray  # median Lab of the blob's core
    area: float  # soft area (sum of estimated coverage)
    centroid: tuple[float, float]  # (x, y) pixel indices, coverage-weighted
    alpha: np.ndarray  # estimated coverage in a crop around the blob
    origin: tuple[int, int]  # (y0, x0) of the crop
    touches_border: bool


@dataclass
class Segmentation:
    """Per-frame foreground segmentation of a clip."""

    lab: np.ndarray  # (F, H, W, 3)
    fg: np.ndarray  # (F, H, W) bool, every pixel above the threshold
    objects: np.ndarray  # (F, H, W) bool, pixels of blobs large enough to be objects
    bg_lab: np.ndarray  # (F, 3) background reference (border median)
    blobs: list[list[Blob]]  # per frame, largest first


def dilate(mask: np.ndarray, r: int = 1) -> np.ndarray:
    """Binary dilation of the last two axes with a (2r+1)^2 square."""
    out = mask.copy()
    for _ in range(r):
        p = np.pad(out, [(0, 0)] * (out.ndim - 2) + [(1, 1), (1, 1)])
        h, w = out.shape[-2:]
        acc = out.copy()
        for dy in range(3):
            for dx in range(3):
                acc |= p[..., dy : dy + h, dx : dx + w]
        out = acc
    return out


def erode(mask: np.ndarray, r: int = 1) -> np.ndarray:
    return ~dilate(~mask, r)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of each 2-D slice of ``mask`` (..., H, W).

    Min-label propagation with pointer jumping (labels are pixel indices, and a label always
    names a pixel of the same component, so label[label] is a valid shortcut). Returns labels
    1..n (0 = background), unique across slices.
    """
    shape = mask.shape
    h, w = shape[-2:]
    m = mask.reshape(-1, h, w)
    n_pix = m.size
    big = n_pix + 1
    lab = np.where(m, np.arange(1, n_pix + 1).reshape(m.shape), big)
    flat_mask = m.ravel()
    while True:
        p = np.pad(lab, ((0, 0), (1, 1), (1, 1)), constant_values=big)
        new = lab.copy()
        for dy in range(3):
            for dx in range(3):
                np.minimum(new, p[:, dy : dy + h, dx : dx + w], out=new)
        new = np.where(m, new, big)
        flat = new.ravel()
        for _ in range(4):
            jumped = flat.copy()
            jumped[flat_mask] = flat[flat[flat_mask] - 1]
            flat = jumped
        new = flat.reshape(m.shape)
        if np.array_equal(new, lab):
            break
        lab = new
    out = np.zeros(m.shape, dtype=np.int64)
    uniq, inv = np.unique(lab[m], return_inverse=True)
    out[m] = inv + 1
    return out.reshape(shape), len(uniq)


def _border_median(lab: np.ndarray, width: int = 2) -> np.ndarray:
    """Median Lab of a ``width``-pixel frame border, per frame (F, 3)."""
    f, h, w, _ = lab.shape
    ring = np.zeros((h, w), dtype=bool)
    ring[:width], ring[-width:], ring[:, :width], ring[:, -width:] = True, True, True, True
    return np.median(lab[:, ring], axis=1)


def segment(video: np.ndarray, fg_threshold: float = FG_THRESHOLD) -> Segmentation:
    """Foreground blobs of every frame: colour class, soft coverage, area and centroid."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected a video (F, H, W, 3), got shape {video.shape}")
    f, h, w, _ = video.shape
    lab = srgb_to_lab(video)
    bg = _border_median(lab)
    dist = np.linalg.norm(lab - bg[:, None, None], axis=-1)
    fg = dist > fg_threshold
    labels, n = label_components(fg)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    min_px = max(6, int(MIN_BLOB_FRACTION * h * w))
    blobs: list[list[Blob]] = [[] for _ in range(f)]
    big = areas >= min_px
    big[0] = False
    objects = big[labels]
    for comp in np.nonzero(big)[0]:
        t = int(np.nonzero(labels == comp)[0][0])
        for part in _split_by_color(lab[t], labels[t] == comp, min_px):
            blobs[t].append(_measure_blob(t, lab[t], fg[t], part, bg[t]))
    for b in blobs:
        b.sort(key=lambda x: -x.area)
    return Segmentation(lab, fg, objects, bg, blobs)


def _split_by_color(lab: np.ndarray, comp: np.ndarray, min_px: int) -> list[np.ndarray]:
    """Split a component whose core holds two or more palette colours (touching objects) into one
    mask per colour; each pixel goes to the colour whose core median it is closest to."""
    core = erode(comp, 1)
    if core.sum() < 2 * min_px:
        return [comp]
    d = np.linalg.norm(lab[core][:, None] - PALETTE_LAB[None], axis=-1)
    cls = np.argmin(d, axis=1)
    close = d.min(axis=1) <= SPLIT_DELTA_E
    if close.mean() < 0.6:
        return [comp]  # not a union of flat palette-coloured objects (e.g. noise): leave whole
    counts = np.bincount(cls[close], minlength=len(PALETTE_LAB))
    major = [k for k in np.argsort(-counts) if counts[k] >= max(min_px // 2, 0.15 * core.sum())]
    if len(major) < 2:
        return [comp]
    centres = np.stack([np.median(lab[core][cls == k], axis=0) for k in major])
    ys, xs = np.nonzero(comp)
    owner = np.argmin(np.linalg.norm(lab[ys, xs][:, None] - centres[None], axis=-1), axis=1)
    parts = []
    for i in range(len(major)):
        m = np.zeros_like(comp)
        m[ys[owner == i], xs[owner == i]] = True
        # Keep the largest connected piece: an object is one solid region, whereas a colour class
        # inside noise is a scatter of small specks that must not count as an object.
        sub, n = label_components(m)
        if n:
            sizes = np.bincount(sub.ravel())[1:]
            if sizes.max() >= min_px:
                parts.append(sub == 1 + int(np.argmax(sizes)))
    return parts or [comp]


def _measure_blob(t: int, lab: np.ndarray, fg: np.ndarray, comp: np.ndarray, bg: np.ndarray) -> Blob:
    h, w = comp.shape
    ys, xs = np.nonzero(comp)
    pad = 4
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, h)
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, w)
    m = comp[y0:y1, x0:x1]
    lab_c = lab[y0:y1, x0:x1]
    near = dilate(m, 1)
    # Local background: non-foreground pixels in a thin ring around the blob (textures vary).
    ring = dilate(m, 3) & ~near & ~fg[y0:y1, x0:x1]
    bgl = np.median(lab_c[ring], axis=0) if ring.sum() >= 5 else bg
    core = erode(m, 1)
    core = core if core.sum() >= 3 else m
    color_lab = np.median(lab_c[core], axis=0)
    name, _ = nearest_color(color_lab, UNKNOWN_COLOR_DELTA_E)
    # Coverage = projection of (pixel - bg) on (object - bg): sub-pixel accurate at edges.
    v = color_lab - bgl
    alpha = np.clip(((lab_c - bgl) @ v) / max(float(v @ v), 1e-6), 0.0, 1.0)
    others = fg[y0:y1, x0:x1] & ~m
    alpha = np.where(near & ~others, alpha, 0.0)
    area = float(alpha.sum())
    gy, gx = np.mgrid[y0:y1, x0:x1]
    cx = float((alpha * gx).sum() / max(area, 1e-6))
    cy = float((alpha * gy).sum() / max(area, 1e-6))
    touches = bool(ys.min() == 0 or xs.min() == 0 or ys.max() == h - 1 or xs.max() == w - 1)
    return Blob(t, name, color_lab, area, (cx, cy), alpha, (int(y0), int(x0)), touches)


# ------------------------------------------------------------------------------------------------
# Shape classification
# ------------------------------------------------------------------------------------------------
_UNIT_AREA = {s: shape_area(s, 1.0) for s in SHAPES}
_SCALES = (0.92, 1.0, 1.08)
_BLURS = (0.0, 1.0, 1.8)  # template blur sigmas in px
MIN_SHAPE_IOU = 0.5


def _gauss_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with zero padding (mass leaving the crop never meets the blob)."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(img, r)
    h, w = img.shape
    tmp = sum(k[i] * p[:, i : i + w] for i in range(2 * r + 1))
    return sum(k[i] * tmp[i : i + h, :] for i in range(2 * r + 1))


def shape_scores(blob: Blob) -> dict[str, float]:
    """Soft IoU of the blob with each shape template of equal area placed at its centroid.

    Templates are tried at three scales and three blur levels (generated videos are often soft),
    keeping the best. The template's full area is known analytically (blur preserves it), so
    template mass falling outside the crop still counts in the union.
    """
    a = blob.alpha
    y0, x0 = blob.origin
    gy, gx = np.mgrid[y0 : y0 + a.shape[0], x0 : x0 + a.shape[1]].astype(np.float64)
    cx, cy = blob.centroid
    total = float(a.sum())
    scores = {}
    for s in SHAPES:
        best = 0.0
        for k in _SCALES:
            size = np.sqrt(blob.area / _UNIT_AREA[s]) * k
            sharp = shape_alpha(s, gx, gy, cx, cy, size)
            for sigma in _BLURS:
                tpl = _gauss_blur(sharp, sigma) if sigma > 0 else sharp
                inter = float(np.minimum(a, tpl).sum())
                union = total + _UNIT_AREA[s] * size * size - inter
                best = max(best, inter / max(union, 1e-6))
        scores[s] = best
    return scores


def classify_shape(blobs: list[Blob], max_frames: int = 5) -> tuple[str, float]:
    """Majority vote of per-frame template matches over (up to) ``max_frames`` whole blobs."""
    usable = [b for b in blobs if not b.touches_border] or list(blobs)
    if not usable:
        return "unknown", 0.0
    idx = np.unique(np.linspace(0, len(usable) - 1, min(max_frames, len(usable))).round().astype(int))
    votes: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for i in idx:
        sc = shape_scores(usable[i])
        best = max(sc, key=sc.get)
        if sc[best] >= MIN_SHAPE_IOU:
            votes[best] += 1
        for s, v in sc.items():
            totals[s] += v
    if not votes:
        return "unknown", max(totals.values()) / len(idx)
    top = max(votes.values())
    winner = max((s for s in votes if votes[s] == top), key=lambda s: totals[s])
    return winner, totals[winner] / len(idx)


# ------------------------------------------------------------------------------------------------
# Camera motion (global similarity of the background)
# ------------------------------------------------------------------------------------------------
def _blur(img: np.ndarray) -> np.ndarray:
    k = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    p = np.pad(img, ((0, 0), (2, 2), (2, 2)), mode="edge")
    h, w = img.shape[-2:]
    tmp = sum(k[i] * p[:, :, i : i + w] for i in range(5))
    return sum(k[i] * tmp[:, i : i + h, :] for i in range(5))


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h, w = img.shape
    x = np.clip(x, 0, w - 1.001)
    y = np.clip(y, 0, h - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    return (
        img[y0, x0] * (1 - fx) * (1 - fy)
        + img[y0, x0 + 1] * fx * (1 - fy)
        + img[y0 + 1, x0] * (1 - fx) * fy
        + img[y0 + 1, x0 + 1] * fx * fy
    )


def _downsample(img: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f, h, w = img.shape
    h2, w2 = h // 2, w // 2
    im = img[:, : 2 * h2, : 2 * w2].reshape(f, h2, 2, w2, 2).mean((2, 4))
    va = valid[:, : 2 * h2, : 2 * w2].reshape(f, h2, 2, w2, 2).all((2, 4))
    return im, va


# Damping per valid pixel, in (grey level)^2: pulls motion the image cannot constrain (plain
# backgrounds, the direction along stripes) back to zero instead of letting noise drive it.
_LK_DAMPING = 0.02
_NOISE_GRAD_VAR = 0.0227  # gradient variance of blurred unit white noise (see _blur)
_NOISE_DAMPING = 1.0  # multiples of the expected noise gradient energy


def _noise_sigma(gray: np.ndarray, valid: np.ndarray) -> float:
    """Immerkaer's Laplacian estimate of i.i.d. pixel noise (grey levels), median over frames."""
    lap = (
        gray[:, :-2, :-2] - 2 * gray[:, :-2, 1:-1] + gray[:, :-2, 2:]
        - 2 * gray[:, 1:-1, :-2] + 4 * gray[:, 1:-1, 1:-1] - 2 * gray[:, 1:-1, 2:]
        + gray[:, 2:, :-2] - 2 * gray[:, 2:, 1:-1] + gray[:, 2:, 2:]
    )  # fmt: skip
    ok = valid[:, 1:-1, 1:-1]
    per_frame = [np.abs(lap[t][ok[t]]).mean() for t in range(len(gray)) if ok[t].sum() > 50]
    return float(np.sqrt(np.pi / 2) / 6 * np.median(per_frame)) if per_frame else 0.0


def _lk_pair(
    g0: np.ndarray, g1: np.ndarray, v0: np.ndarray, v1: np.ndarray, p: np.ndarray, iters: int, damp_px: float
) -> np.ndarray:
    """Symmetric Lucas-Kanade for p = (a, tx, ty): g1(x + d/2) ~= g0(x - d/2), d = a (x - c) + t.

    Warping both frames by half the motion gives both the same interpolation smoothing, which
    removes the bias towards half-pixel shifts that one-sided warping has on noisy frames. A
    Tikhonov prior (``damp_px`` per valid pixel) pulls unconstrained motion back to zero.
    """
    h, w = g0.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    rx, ry = xs - cx, ys - cy
    inner = np.zeros((h, w), dtype=bool)
    inner[2:-2, 2:-2] = True
    r2 = float((rx**2 + ry**2).mean()) or 1.0
    p = p.copy()
    for _ in range(iters):
        dx, dy = (p[0] * rx + p[1]) / 2, (p[0] * ry + p[2]) / 2
        g0w = _bilinear(g0, xs - dx, ys - dy)
        g1w = _bilinear(g1, xs + dx, ys + dy)
        ok = inner & (np.abs(dx) <= cx - 1) & (np.abs(dy) <= cy - 1)
        ok &= _bilinear(v0.astype(np.float64), xs - dx, ys - dy) > 0.999
        ok &= _bilinear(v1.astype(np.float64), xs + dx, ys + dy) > 0.999
        ok &= (
            (xs - np.abs(dx) >= 1)
            & (xs + np.abs(dx) <= w - 2)
            & (ys - np.abs(dy) >= 1)
            & (ys + np.abs(dy) <= h - 2)
        )
        if ok.sum() < 20:
            break
        gm = (g0w + g1w) / 2
        gx = np.zeros_like(gm)
        gy = np.zeros_like(gm)
        gx[:, 1:-1] = (gm[:, 2:] - gm[:, :-2]) / 2
        gy[1:-1] = (gm[2:] - gm[:-2]) / 2
        jac = np.stack([gx * rx + gy * ry, gx, gy], -1)[ok]
        err = (g0w - g1w)[ok]
        damp = damp_px * ok.sum() * np.diag([r2, 1.0, 1.0])
        delta = np.linalg.solve(jac.T @ jac + damp, jac.T @ err - damp @ p)
        p += delta
        if np.abs(delta).max() < 1e-3:
            break
    return p


def estimate_camera_motion(
    video: np.ndarray, fg: np.ndarray | None = None, lab: np.ndarray | None = None, iters: int = 6
) -> np.ndarray:
    """Background similarity per frame (F, 3) = (scale, tx, ty) about the image centre, mapping
    frame-0 pixels to frame-t pixels (same convention as camera.plane_image_motion).

    Consecutive frames are aligned by symmetric Lucas-Kanade on a small pyramid, with object
    pixels (``fg``, e.g. Segmentation.objects, dilated here) ignored; pair motions are composed.
    Pairs keep the motion small (no lock loss on periodic textures) and each starts from zero.
    """
    if fg is None or lab is None:
        seg = segment(video)
        fg, lab = seg.objects, seg.lab
    raw = lab[..., 0].astype(np.float64) * 2.55  # L* rescaled to ~grey levels
    valid = ~dilate(fg, 4)  # fringe pixels below the threshold + the blur radius
    sigma = _noise_sigma(raw, valid)
    damp_px = _LK_DAMPING + _NOISE_DAMPING * _NOISE_GRAD_VAR * sigma**2
    levels = [(_blur(raw), valid)]
    while min(levels[-1][0].shape[1:]) >= 64:
        levels.append(_downsample(*levels[-1]))
    f = len(raw)
    out = np.zeros((f, 3))
    out[0] = (1.0, 0.0, 0.0)
    top = len(levels) - 1
    for t in range(f - 1):
        p = np.zeros(3)
        for lev in range(top, -1, -1):
            g, v = levels[lev]
            # Averaging 2x2 blocks quarters the noise variance on the coarser level.
            p = _lk_pair(g[t], g[t + 1], v[t], v[t + 1], p, iters, damp_px / 4.0**lev)
            if lev > 0:
                p[1:] *= 2.0  # translation doubles on the finer level; the scale term is unchanged
        # Symmetric parameters -> similarity x1 - c = s (x0 - c) + tau.
        s = (1 + p[0] / 2) / (1 - p[0] / 2)
        tau = p[1:] / (1 - p[0] / 2)
        s_prev, tx_prev, ty_prev = out[t]
        out[t + 1] = (s_prev * s, s * tx_prev + tau[0], s * ty_prev + tau[1])
    return out


def palette_lab(name: str) -> np.ndarray:
    return PALETTE_LAB[PALETTE_NAMES.index(name)]
