"""Reward names (torch-free, so config validation stays light): registered names, aliases, which need weights."""

from __future__ import annotations

BUILTIN = (
    "brightness",
    "shapes_color",
    "shapes_motion",
    "shapes_shape",
    "shapes",
    "pickscore",
    "aesthetic",
    "hpsv2.1",
    "mps",
)
ALIASES = {"hps": "hpsv2.1", "hpsv2": "hpsv2.1", "hps_v2.1": "hpsv2.1", "pick_score": "pickscore"}
NEEDS_PATH = ("pickscore", "aesthetic", "hpsv2.1", "mps")  # learned rewards: a local weight folder


def canonical_name(name: str) -> str:
    return name if ":" in name else ALIASES.get(name.lower(), name.lower())


def is_known_reward(name: str) -> bool:
    """A built-in name (or alias), or a ``package.module:callable`` reference."""
    if ":" in name:
        module, _, attr = name.partition(":")
        return bool(module) and bool(attr)
    return canonical_name(name) in BUILTIN
