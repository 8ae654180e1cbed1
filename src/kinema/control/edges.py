"""Control videos: control-type names, validation and a built-in Canny edge extractor.

EasyAnimate V5.1 Control consumes any control signal as an RGB video that it VAE-encodes. Canny is
built in here (the reference does ``cv2.Canny(cv2.cvtColor(frame, RGB2GRAY), low, high)`` per frame and
copies the edge map to three channels); depth, pose and MLSD videos come ready-made from their own
annotators; trajectory videos come from :mod:`kinema.control.trajectory`; ``raw`` is any other video.

Two Canny backends: ``"opencv"`` (``opencv-python-headless``, if installed) and ``"numpy"``, a pure
numpy port of OpenCV's algorithm (fixed-point grey, 3x3 Sobel with replicated borders, L1 magnitude,
OpenCV's fixed-point direction sectors and tie rules, 8-connected hysteresis). The numpy port matches
OpenCV exactly on the tests' images; ``"auto"`` uses OpenCV when available.
"""

from __future__ import annotations

import numpy as np

CONTROL_TYPES = ("canny", "depth", "pose", "mlsd", "trajectory", "raw")


def validate_control_type(control_type: str) -> str:
    """Normalise (case, whitespace) and check a control type name; ``ValueError`` lists the valid ones."""
    name = str(control_type).strip().lower()
    if name not in CONTROL_TYPES:
        raise ValueError(f"unknown control type {control_type!r}; expected one of {', '.join(CONTROL_TYPES)}")
    return name


def validate_control_video(
    frames: np.ndarray,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> np.ndarray:
    """Check a control video is uint8 ``(F, H, W, 3)`` (and matches the given size); return it unchanged."""
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"control video must be a numpy array, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"control video must have shape (F, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"control video must be uint8 (0..255), got {frames.dtype}")
    expected = {"frames": (num_frames, frames.shape[0]), "height": (height, frames.shape[1])}
    expected["width"] = (width, frames.shape[2])
    wrong = [
        f"{k}={got} (expected {want})"
        for k, (want, got) in expected.items()
        if want is not None and want != got
    ]
    if wrong:
        raise ValueError("control video does not match the requested size: " + ", ".join(wrong))
    return frames


def _opencv():
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def opencv_available() -> bool:
    """True if OpenCV can be imported (the ``"opencv"`` backend works)."""
    return _opencv() is not None


def rgb_to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(..., 3)`` -> uint8 grey with OpenCV's fixed-point BT.601 weights (bit-exact)."""
    rgb = image.astype(np.int32)
    # OpenCV 4's Q15 weights for 8-bit RGB->grey (0.299, 0.587, 0.114; found to be bit-exact vs cv2).
    return ((rgb[..., 0] * 9798 + rgb[..., 1] * 19235 + rgb[..., 2] * 3735 + 16384) >> 15).astype(np.uint8)


def _sobel(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 Sobel derivatives (int32) with replicated borders, like OpenCV's Canny."""
    p = np.pad(gray.astype(np.int32), 1, mode="edge")
    h, w = gray.shape

    def at(dy: int, dx: int) -> np.ndarray:
        return p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = (at(-1, 1) - at(-1, -1)) + 2 * (at(0, 1) - at(0, -1)) + (at(1, 1) - at(1, -1))
    gy = (at(1, -1) - at(-1, -1)) + 2 * (at(1, 0) - at(-1, 0)) + (at(1, 1) - at(-1, 1))
    return gx, gy


def _hysteresis(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """Keep weak pixels 8-connected (through weak/strong pixels) to a strong pixel.

    Connected components by min-label propagation with pointer jumping, which converges in few passes
    even for long edges, unlike plain iterative dilation.
    """
    cand = strong | weak
    h, w = cand.shape
    big = np.int64(h * w)
    labels = np.where(cand, np.arange(h * w, dtype=np.int64).reshape(h, w), big)
    while True:
        p = np.pad(labels, 1, constant_values=big)
        nb = labels.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    np.minimum(nb, p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w], out=nb)
        nb = np.where(cand, nb, big)
        flat = nb.reshape(-1)
        for _ in range(4):  # pointer jumping: follow label -> label of that pixel
            inside = flat < big
            flat = np.where(inside, flat[np.minimum(flat, big - 1)], big)
        new = np.minimum(flat.reshape(h, w), nb)
        if np.array_equal(new, labels):
            break
        labels = new
    keep = np.unique(labels[strong])
    return np.isin(labels, keep) & cand


def _canny_numpy(gray: np.ndarray, low: float, high: float) -> np.ndarray:
    gx, gy = _sobel(gray)
    mag = np.abs(gx) + np.abs(gy)
    h, w = gray.shape
    pm = np.pad(mag, 1)  # OpenCV treats magnitudes outside the image as 0

    def nb(dy: int, dx: int) -> np.ndarray:
        return pm[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    # OpenCV's fixed-point sector test: tan(22.5 deg) in Q15, tan(67.5) = tan(22.5) + 2.
    shift = 15
    tg22 = int(0.4142135623730950488016887242097 * (1 << shift) + 0.5)
    ax = np.abs(gx).astype(np.int64)
    ay = np.abs(gy).astype(np.int64) << shift
    tg22x = ax * tg22
    tg67x = tg22x + (ax << (shift + 1))
    horizontal = ay < tg22x
    vertical = ~horizontal & (ay > tg67x)
    diagonal = ~horizontal & ~vertical
    s = np.where((gx ^ gy) < 0, -1, 1)  # -1: gradient along the anti-diagonal
    keep_h = (mag > nb(0, -1)) & (mag >= nb(0, 1))
    keep_v = (mag > nb(-1, 0)) & (mag >= nb(1, 0))
    keep_d = np.where(s > 0, (mag > nb(-1, -1)) & (mag > nb(1, 1)), (mag > nb(-1, 1)) & (mag > nb(1, -1)))
    local_max = (horizontal & keep_h) | (vertical & keep_v) | (diagonal & keep_d)
    candidate = local_max & (mag > low)
    strong = candidate & (mag > high)
    edges = _hysteresis(strong, candidate & ~strong)
    return edges.astype(np.uint8) * 255


def canny(image: np.ndarray, low: float = 100, high: float = 200, backend: str = "auto") -> np.ndarray:
    """Canny edges of one uint8 RGB ``(H, W, 3)`` or grey ``(H, W)`` image -> uint8 ``(H, W)`` in {0, 255}.

    Thresholds are on the L1 Sobel magnitude, as ``cv2.Canny(gray, low, high)`` (aperture 3).
    """
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[-1] == 3:
        gray = rgb_to_gray(image)
    elif image.ndim == 2:
        gray = image
    else:
        raise ValueError(f"image must have shape (H, W, 3) or (H, W), got {image.shape}")
    if low > high:  # OpenCV swaps them too
        low, high = high, low
    if backend not in ("auto", "opencv", "numpy"):
        raise ValueError(f"backend must be 'auto', 'opencv' or 'numpy', got {backend!r}")
    cv2 = _opencv() if backend in ("auto", "opencv") else None
    if backend == "opencv" and cv2 is None:
        raise ImportError("the 'opencv' Canny backend needs opencv-python-headless (pip install it)")
    if cv2 is not None:
        return cv2.Canny(np.ascontiguousarray(gray), float(low), float(high))
    return _canny_numpy(gray, float(low), float(high))


def canny_video(frames: np.ndarray, low: float = 100, high: float = 200, backend: str = "auto") -> np.ndarray:
    """Canny control video: uint8 ``(F, H, W, 3)`` RGB -> uint8 ``(F, H, W, 3)`` white edges on black."""
    validate_control_video(frames)
    edges = np.stack([canny(frame, low, high, backend) for frame in frames])
    return np.repeat(edges[..., None], 3, axis=-1)
