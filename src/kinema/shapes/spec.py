"""ShapesWorld vocabulary, scene specifications and the fixed held-out split."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from .color import PALETTE_NAMES

COLORS: tuple[str, ...] = PALETTE_NAMES
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star")
# Motion directions in image terms (y points down): "right" means the object moves left -> right.
DIRECTIONS: tuple[str, ...] = (
    "right",
    "left",
    "up",
    "down",
    "up_right",
    "up_left",
    "down_right",
    "down_left",
)
STATIC = "static"
PATHS: tuple[str, ...] = ("straight", "arc", "wave")
BACKGROUNDS: tuple[str, ...] = ("plain", "stripes", "checker", "noise")
# Backgrounds on which every camera translation/zoom is observable (stripes have an aperture problem).
CAMERA_BACKGROUNDS: tuple[str, ...] = ("checker", "noise")
CAMERAS: tuple[str, ...] = ("static", "pan_left", "pan_right", "pan_up", "pan_down", "zoom_in", "zoom_out")

# Unit displacement per direction in image coordinates (x right, y down).
DIRECTION_VECTORS: dict[str, tuple[float, float]] = {
    "right": (1.0, 0.0),
    "left": (-1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up_right": (0.7071067811865476, -0.7071067811865476),
    "up_left": (-0.7071067811865476, -0.7071067811865476),
    "down_right": (0.7071067811865476, 0.7071067811865476),
    "down_left": (-0.7071067811865476, 0.7071067811865476),
}


@dataclass(frozen=True)
class ObjectSpec:
    """One object: colour, shape and motion.

    direction: one of DIRECTIONS, "static" (explicitly still) or None (not specified, e.g. image captions).
    path: "straight", "arc" or "wave" (only meaningful for a moving object).
    """

    color: str
    shape: str
    direction: str | None = None
    path: str = "straight"

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}; expected one of {COLORS}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.direction is not None and self.direction != STATIC and self.direction not in DIRECTIONS:
            raise ValueError(
                f"unknown direction {self.direction!r}; expected one of {DIRECTIONS} or 'static'"
            )
        if self.path not in PATHS:
            raise ValueError(f"unknown path {self.path!r}; expected one of {PATHS}")

    @property
    def moving(self) -> bool:
        return self.direction in DIRECTIONS


@dataclass(frozen=True)
class SceneSpec:
    """What a prompt says about a clip. None means "not specified" (background / camera)."""

    objects: tuple[ObjectSpec, ...]
    background: str | None = None
    camera: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        if not self.objects:
            raise ValueError("a scene needs at least one object")
        if self.background is not None and self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; expected one of {BACKGROUNDS}")
        if self.camera is not None and self.camera not in CAMERAS:
            raise ValueError(f"unknown camera {self.camera!r}; expected one of {CAMERAS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> SceneSpec:
        objs = tuple(ObjectSpec(**o) for o in d["objects"])
        return SceneSpec(objs, background=d.get("background"), camera=d.get("camera"))

    def with_objects(self, objects: tuple[ObjectSpec, ...]) -> SceneSpec:
        return replace(self, objects=tuple(objects))


# ---------------------------------------------------------------------------------------------
# Held-out split
# ---------------------------------------------------------------------------------------------
# Every colour x shape pair holds out one direction, d1 = (3 c + 5 s + 1) mod 8 (indices into
# COLORS, SHAPES, DIRECTIONS), and pairs with c + s even also hold out (d1 + 4) mod 8: 60 of the
# 320 combinations (18.75 %). 3 and 5 are coprime to 8, so for a fixed shape the held-out d1 runs
# through all eight directions across the eight colours, and for a fixed colour through five.
# Every colour/shape, colour/direction and shape/direction pair therefore still occurs in
# training, and every colour/shape pair can be tested on a novel direction. Indices (not names)
# keep the rule one line long; new vocabulary must be appended to keep the split fixed.


def is_held_out(color: str, shape: str, direction: str | None) -> bool:
    """True if this colour x shape x direction combo is reserved for evaluation.

    Static / unspecified motion is never held out (the split is about motion combinations).
    """
    if direction not in DIRECTIONS:
        return False
    c, s, d = COLORS.index(color), SHAPES.index(shape), DIRECTIONS.index(direction)
    d1 = (3 * c + 5 * s + 1) % len(DIRECTIONS)
    return d == d1 or ((c + s) % 2 == 0 and d == (d1 + 4) % len(DIRECTIONS))


def spec_is_held_out(spec: SceneSpec) -> bool:
    """True if any object of the scene uses a held-out combination."""
    return any(is_held_out(o.color, o.shape, o.direction) for o in spec.objects)


HELD_OUT_COMBOS: tuple[tuple[str, str, str], ...] = tuple(
    (c, s, d) for c in COLORS for s in SHAPES for d in DIRECTIONS if is_held_out(c, s, d)
)
TRAINING_COMBOS: tuple[tuple[str, str, str], ...] = tuple(
    (c, s, d) for c in COLORS for s in SHAPES for d in DIRECTIONS if not is_held_out(c, s, d)
)


def _single_specs(combos: tuple[tuple[str, str, str], ...], paths: tuple[str, ...]) -> list[SceneSpec]:
    return [SceneSpec((ObjectSpec(c, s, d, p),), camera="static") for c, s, d in combos for p in paths]


def training_specs(paths: tuple[str, ...] = ("straight",)) -> list[SceneSpec]:
    """Single-object specs (static camera) for every training combination, one per path type."""
    return _single_specs(TRAINING_COMBOS, paths)


def held_out_specs(paths: tuple[str, ...] = ("straight",)) -> list[SceneSpec]:
    """Single-object specs (static camera) for every held-out combination, one per path type."""
    return _single_specs(HELD_OUT_COMBOS, paths)
