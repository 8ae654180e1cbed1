"""Rewards for reward-backpropagation post-training (see docs/reward.md).

A reward is any callable ``(frames (B, 3, F, H, W) in [-1, 1], prompts: list[str]) -> (B,)`` scores,
differentiable with respect to the frames. Built in: ``brightness``; the ShapesWorld rewards
``shapes_color``, ``shapes_motion``, ``shapes_shape``, ``shapes``; adapters for ``pickscore``, ``aesthetic``, ``hpsv2.1``
and ``mps`` that load local weight folders only. ``build_reward(name, path, **options)`` builds one,
``build_rewards(terms)`` a weighted sum; ``"package.module:callable"`` plugs in any other.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "RewardFn": ".base",
    "BrightnessReward": ".base",
    "CombinedReward": ".base",
    "REWARDS": ".base",
    "build_reward": ".base",
    "build_rewards": ".base",
    "is_known_reward": ".names",
    "ShapesColorReward": ".shapes",
    "ShapesMotionReward": ".shapes",
    "ShapesShapeReward": ".shapes",
    "ShapesReward": ".shapes",
    "CLIPScoreReward": ".adapters",
    "PickScoreReward": ".adapters",
    "AestheticReward": ".adapters",
    "HPSv21Reward": ".adapters",
    "MPSReward": ".adapters",
    "RewardUnavailableError": ".adapters",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
