"""Video size rules, latent shapes, token budgets and aspect-ratio buckets (EasyAnimate V5.1 class).

The V5.1 models use a VAE with 8x spatial / 4x temporal compression (first frame kept on its own, so
``frames = 4k + 1``) and a transformer with 2x2 spatial patches. Height and width must therefore be
multiples of 16 and the sequence length of the transformer is::

    tokens = ((frames - 1) // 4 + 1) * (height / 16) * (width / 16)

Conventions used here: sizes are ``(height, width)``; an *aspect ratio* given to :func:`size_for_budget`
is **width / height** (``"16:9"`` means landscape) while bucket keys of :func:`aspect_buckets` are
**height / width** like EasyAnimate's ``ASPECT_RATIO_512`` table (so the trainer can use them as-is).
"""

from __future__ import annotations

import math

VAE_SPATIAL = 8
VAE_TEMPORAL = 4
PATCH_SIZE = 2
LATENT_CHANNELS = 16
SPATIAL_MULTIPLE = VAE_SPATIAL * PATCH_SIZE  # 16
DEFAULT_FRAMES = 49  # V5.1 was trained at 49 frames (8 fps, ~6 s)


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _neighbours(value: int, multiple: int, offset: int = 0) -> tuple[int, int]:
    """Closest values of the form ``k * multiple + offset`` (k >= 0, result >= 1) below and above ``value``."""
    low = (value - offset) // multiple * multiple + offset
    high = low + multiple
    if low < max(1, offset):
        low = high
    return low, high


def nearest_valid_size(height: int, width: int, frames: int = 1) -> tuple[int, int, int]:
    """Round to the nearest valid V5.1 size: height/width to multiples of 16, frames to ``4k + 1``.

    Ties round up (e.g. 520 -> 528) so a requested size is never silently shrunk by a rounding tie.
    """
    for name, value in (("height", height), ("width", width), ("frames", frames)):
        _check_positive_int(name, value)

    def nearest(value: int, multiple: int, offset: int) -> int:
        low, high = _neighbours(value, multiple, offset)
        return low if value - low < high - value else high

    return (
        nearest(height, SPATIAL_MULTIPLE, 0),
        nearest(width, SPATIAL_MULTIPLE, 0),
        nearest(frames, VAE_TEMPORAL, 1),
    )


def validate_size(height: int, width: int, frames: int = 1) -> None:
    """Raise ``ValueError`` unless height/width are multiples of 16 and frames is ``4k + 1``.

    The message names every broken rule and the nearest valid values on both sides.
    """
    for name, value in (("height", height), ("width", width), ("frames", frames)):
        _check_positive_int(name, value)
    problems = []
    for name, value in (("height", height), ("width", width)):
        if value % SPATIAL_MULTIPLE:
            low, high = _neighbours(value, SPATIAL_MULTIPLE)
            problems.append(
                f"{name}={value} is not a multiple of {SPATIAL_MULTIPLE} (nearest valid: {low} or {high})"
            )
    if (frames - 1) % VAE_TEMPORAL:
        low, high = _neighbours(frames, VAE_TEMPORAL, 1)
        problems.append(f"frames={frames} is not of the form 4k+1 (nearest valid: {low} or {high})")
    if problems:
        h, w, f = nearest_valid_size(height, width, frames)
        raise ValueError(
            "invalid video size for V5.1-class models: "
            + "; ".join(problems)
            + f". Nearest valid size: {h}x{w} (HxW), {f} frames."
        )


def latent_shape(
    height: int,
    width: int,
    frames: int,
    vae_spatial: int = VAE_SPATIAL,
    vae_temporal: int = VAE_TEMPORAL,
    channels: int = LATENT_CHANNELS,
) -> tuple[int, int, int, int]:
    """Latent shape ``(channels, latent_frames, height // vae_spatial, width // vae_spatial)``.

    ``latent_frames = (frames - 1) // vae_temporal + 1`` (causal VAE: the first frame is its own latent).
    Raises ``ValueError`` if the size does not divide exactly, because a silently floored shape would
    not match what the VAE produces.
    """
    for name, value in (("height", height), ("width", width), ("frames", frames)):
        _check_positive_int(name, value)
    if height % vae_spatial or width % vae_spatial:
        raise ValueError(f"height and width must be multiples of {vae_spatial}, got {height}x{width}")
    if (frames - 1) % vae_temporal:
        raise ValueError(f"frames must be of the form {vae_temporal}k+1, got {frames}")
    return (channels, (frames - 1) // vae_temporal + 1, height // vae_spatial, width // vae_spatial)


def token_count(
    height: int,
    width: int,
    frames: int,
    patch: int = PATCH_SIZE,
    vae_spatial: int = VAE_SPATIAL,
    vae_temporal: int = VAE_TEMPORAL,
) -> int:
    """Transformer sequence length: latent frames x (h / 8 / patch) x (w / 8 / patch)."""
    _, lat_f, lat_h, lat_w = latent_shape(height, width, frames, vae_spatial, vae_temporal)
    if lat_h % patch or lat_w % patch:
        raise ValueError(f"height and width must be multiples of {vae_spatial * patch}, got {height}x{width}")
    return lat_f * (lat_h // patch) * (lat_w // patch)


def max_frames_for_budget(
    height: int,
    width: int,
    token_budget: int,
    max_frames: int | None = None,
    rounding: str = "nearest",
    patch: int = PATCH_SIZE,
) -> int:
    """Frame count (``4k + 1``) for ``height x width`` that best uses ``token_budget``.

    ``rounding="nearest"`` (default) rounds the number of latent frames the budget allows to the nearest
    integer, which is how the V5.1 report's equal-budget table reads: at 13312 tokens 512x512 -> 49,
    768x768 -> 21 (13824 tokens, 3.8% over), 1024x1024 -> 9. ``rounding="floor"`` never exceeds the
    budget (768x768 -> 17); use it when the budget is a hard memory cap. ``max_frames`` (if given) caps
    the answer, rounded down to ``4k + 1``. Raises ``ValueError`` if not even a single frame fits.
    """
    _check_positive_int("token_budget", token_budget)
    if rounding not in ("nearest", "floor"):
        raise ValueError(f"rounding must be 'nearest' or 'floor', got {rounding!r}")
    per_frame = token_count(height, width, 1, patch=patch)
    if rounding == "floor":
        latent_frames = token_budget // per_frame
    else:
        # Round half up, in integers so exact halves are not at the mercy of float rounding.
        latent_frames = (2 * token_budget + per_frame) // (2 * per_frame)
    if latent_frames < 1:
        raise ValueError(
            f"a single {height}x{width} frame needs {per_frame} tokens, more than the budget {token_budget}"
        )
    frames = (latent_frames - 1) * VAE_TEMPORAL + 1
    if max_frames is not None:
        _check_positive_int("max_frames", max_frames)
        frames = min(frames, (max_frames - 1) // VAE_TEMPORAL * VAE_TEMPORAL + 1)
    return frames


def parse_aspect_ratio(aspect_ratio: float | int | str) -> float:
    """Width / height as a float from ``1.5``, ``"16:9"``, ``"16/9"``, ``"16x9"`` or ``"1.78"``."""
    if isinstance(aspect_ratio, str):
        text = aspect_ratio.strip().lower()
        for sep in (":", "/", "x"):
            if sep in text:
                left, _, right = text.partition(sep)
                try:
                    value = float(left) / float(right)
                except (ValueError, ZeroDivisionError):
                    raise ValueError(f"cannot parse aspect ratio {aspect_ratio!r}; use e.g. '16:9'") from None
                break
        else:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"cannot parse aspect ratio {aspect_ratio!r}; use e.g. '16:9'") from None
    else:
        value = float(aspect_ratio)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"aspect ratio must be positive and finite, got {aspect_ratio!r}")
    return value


def size_for_budget(
    token_budget: int,
    aspect_ratio: float | str = 1.0,
    frames: int | None = None,
    tolerance: float = 0.05,
) -> tuple[int, int, int]:
    """Largest ``(height, width, frames)`` of the given aspect (width / height) within ``token_budget``.

    ``frames`` defaults to 49 (V5.1 training length) and must be ``4k + 1``. Height and width are multiples
    of 16. Among sizes whose aspect is within ``tolerance`` (relative, in log space) of the request, the one
    with the most pixels wins (ties: closest aspect); if none is within tolerance (tiny budgets) the
    closest aspect wins. The budget is a hard cap here. Examples (V5.1 report): 13312 tokens, 1:1, 49 frames
    -> 512x512; 3328 -> 256x256; 53248 -> 1024x1024. With 21 frames at 13312 the answer is 752x752, not the
    report's 768x768 (that is 13824 tokens; it comes from the other direction, :func:`max_frames_for_budget`,
    with its default nearest rounding).
    """
    _check_positive_int("token_budget", token_budget)
    ratio = parse_aspect_ratio(aspect_ratio)
    frames = DEFAULT_FRAMES if frames is None else frames
    _check_positive_int("frames", frames)
    if (frames - 1) % VAE_TEMPORAL:
        validate_size(SPATIAL_MULTIPLE, SPATIAL_MULTIPLE, frames)  # raises with the nearest valid values
    latent_frames = (frames - 1) // VAE_TEMPORAL + 1
    per_frame = token_budget // latent_frames  # patches (16x16 pixel cells) allowed per latent frame
    if per_frame < 1:
        raise ValueError(
            f"token budget {token_budget} is too small for {frames} frames ({latent_frames} latent)"
        )

    best_key: tuple[bool, int, float] | None = None
    best: tuple[int, int] = (1, 1)
    for h_cells in range(1, per_frame + 1):
        ideal = h_cells * ratio
        for w_cells in {max(1, math.floor(ideal)), max(1, math.ceil(ideal))}:
            if h_cells * w_cells > per_frame:
                continue
            error = abs(math.log(w_cells / h_cells / ratio))
            # Rank: within tolerance first, then area, then aspect accuracy.
            key = (error <= tolerance, h_cells * w_cells, -error)
            if best_key is None or key > best_key:
                best_key, best = key, (h_cells, w_cells)
        if h_cells * max(1, math.floor(ideal)) > per_frame:
            break
    return best[0] * SPATIAL_MULTIPLE, best[1] * SPATIAL_MULTIPLE, frames


def aspect_buckets(base_size: int = 512, step: int = 16) -> dict[float, tuple[int, int]]:
    """Aspect-ratio buckets ``{round(h / w, 2): (h, w)}`` with area at most ``base_size ** 2``.

    Built like EasyAnimate's ``ASPECT_RATIO_512``: for every long side ``L`` from ``base_size`` to
    ``2 * base_size`` in steps of ``step``, the short side is the largest multiple of ``step`` with
    ``L * short <= base_size ** 2``; both orientations are added, so ratios span 0.25 .. 4.0. With
    ``base_size=512, step=32`` this gives 33 of the reference's 40 entries exactly and nothing else; the
    other 7 (e.g. 0.94 = 480x512) are smaller-area alternatives the reference adds by hand.
    """
    _check_positive_int("base_size", base_size)
    _check_positive_int("step", step)
    if base_size % step:
        raise ValueError(f"base_size ({base_size}) must be a multiple of step ({step})")
    area = base_size * base_size
    buckets: dict[float, tuple[int, int]] = {}
    for long_side in range(base_size, 2 * base_size + 1, step):
        short_side = area // long_side // step * step
        if short_side < step:
            continue
        for h, w in ((long_side, short_side), (short_side, long_side)):
            key = round(h / w, 2)
            # Two sizes can share a rounded key; keep the larger one (closer to the full budget).
            if key not in buckets or h * w > buckets[key][0] * buckets[key][1]:
                buckets[key] = (h, w)
    return dict(sorted(buckets.items()))


def closest_bucket(
    height: int, width: int, buckets: dict[float, tuple[int, int]] | None = None
) -> tuple[float, tuple[int, int]]:
    """The bucket ``(key, (h, w))`` whose h/w is closest to ``height / width`` (compared in log space,
    so 2:1 and 1:2 are treated symmetrically; the reference compares plain ratios)."""
    _check_positive_int("height", height)
    _check_positive_int("width", width)
    buckets = aspect_buckets() if buckets is None else buckets
    if not buckets:
        raise ValueError("no buckets given")
    target = math.log(height / width)
    key = min(buckets, key=lambda k: abs(math.log(buckets[k][0] / buckets[k][1]) - target))
    return key, buckets[key]


def model_default_frames(model_index: dict, source: str = "model_index.json") -> int:
    """The frame count a model folder asks for (``"_kinema_defaults": {"num_frames": N}`` in its
    model_index.json, a private key diffusers ignores), else V5.1's :data:`DEFAULT_FRAMES`."""
    frames = (model_index.get("_kinema_defaults") or {}).get("num_frames", DEFAULT_FRAMES)
    if not isinstance(frames, int) or frames < 1 or (frames - 1) % 4:
        raise ValueError(
            f"{source}: _kinema_defaults.num_frames is {frames!r}; it must be 4k+1 (1, 5, ..., 49). "
            "Fix: correct it or remove the key."
        )
    return frames


def model_default_flag(model_index: dict, name: str, source: str = "model_index.json") -> bool:
    """A boolean generation default a model folder sets (``"_kinema_defaults": {name: true}``), else off."""
    value = (model_index.get("_kinema_defaults") or {}).get(name, False)
    if not isinstance(value, bool):
        raise ValueError(
            f"{source}: _kinema_defaults.{name} is {value!r}; it must be true or false. "
            "Fix: correct it or remove the key."
        )
    return value


def model_default_scale(model_index: dict, name: str, source: str = "model_index.json") -> float:
    """A guidance-like generation default a model folder sets (``"_kinema_defaults": {name: 1.0}``), else 0."""
    value = (model_index.get("_kinema_defaults") or {}).get(name, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{source}: _kinema_defaults.{name} is {value!r}; it must be a finite number >= 0. "
            "Fix: correct it or remove the key."
        )
    return float(value)
