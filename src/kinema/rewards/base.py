"""The reward interface, weighted combinations, a trivial brightness reward and the name registry.

A reward is any callable ``reward(frames, prompts) -> scores``:

* ``frames``: float tensor (B, 3, F, H, W), RGB in [-1, 1] (what the VAE decodes), usually carrying the
  autograd graph of the sampler;
* ``prompts``: list of B strings;
* ``scores``: (B,) tensor, higher is better, differentiable with respect to ``frames``.

Rewards that hold weights are ``torch.nn.Module`` subclasses (so ``.to(device)`` works) and keep their
weights frozen: reward training only changes the video model.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from .names import canonical_name

logger = logging.getLogger(__name__)


@runtime_checkable
class RewardFn(Protocol):
    def __call__(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor: ...


def check_frames(frames: torch.Tensor, prompts: Sequence[str], who: str = "reward") -> None:
    """ValueError unless ``frames`` is (B, 3, F, H, W) and there is one prompt per video."""
    if not torch.is_tensor(frames) or frames.ndim != 5 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if torch.is_tensor(frames) else type(frames).__name__
        raise ValueError(f"{who}: expected frames (B, 3, F, H, W) in [-1, 1], got {shape}")
    if len(prompts) != frames.shape[0]:
        raise ValueError(f"{who}: {frames.shape[0]} videos but {len(prompts)} prompts")


def check_scores(scores: torch.Tensor, batch: int, who: str) -> torch.Tensor:
    if not torch.is_tensor(scores) or scores.shape != (batch,):
        shape = tuple(scores.shape) if torch.is_tensor(scores) else type(scores).__name__
        raise ValueError(f"reward {who!r} must return a (B,) = ({batch},) tensor, got {shape}")
    return scores


class BrightnessReward(nn.Module):
    """Mean pixel value in [-1, 1]: a trivially differentiable reward for tests and smoke runs."""

    def forward(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        check_frames(frames, prompts, "brightness")
        return frames.float().mean(dim=(1, 2, 3, 4))


class CombinedReward(nn.Module):
    """``sum_i weight_i * reward_i(frames, prompts)``; the last call's terms are kept in ``last_terms``."""

    def __init__(self, terms: Sequence[tuple[str, Callable, float]]):
        super().__init__()
        if not terms:
            raise ValueError("CombinedReward needs at least one reward")
        self.names = [name for name, _, _ in terms]
        self.weights = [float(w) for _, _, w in terms]
        # nn.Module rewards are registered (so .to() moves them); plain callables are kept as they are.
        self.fns: list[Callable] = []
        self.modules_ = nn.ModuleList()
        for _, fn, _ in terms:
            self.fns.append(fn)
            if isinstance(fn, nn.Module):
                self.modules_.append(fn)
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        check_frames(frames, prompts, "reward")
        total = frames.new_zeros(frames.shape[0], dtype=torch.float32)
        self.last_terms = {}
        for name, fn, weight in zip(self.names, self.fns, self.weights, strict=True):
            scores = check_scores(fn(frames, prompts), frames.shape[0], name).float()
            key = name if name not in self.last_terms else f"{name}_{len(self.last_terms)}"
            self.last_terms[key] = scores.detach()
            total = total + weight * scores
        return total


# ---- registry ----------------------------------------------------------------------------------------------


def _shapes(kind: str):
    def build(path: str | None, **options: Any):
        from . import shapes

        cls = {"shapes_color": shapes.ShapesColorReward, "shapes_motion": shapes.ShapesMotionReward,
               "shapes_shape": shapes.ShapesShapeReward, "shapes": shapes.ShapesReward}[kind]  # fmt: skip
        return cls(**options)

    return build


def _adapter(kind: str):
    def build(path: str | None, **options: Any):
        from . import adapters

        cls = {"pickscore": adapters.PickScoreReward, "aesthetic": adapters.AestheticReward,
               "hpsv2.1": adapters.HPSv21Reward, "mps": adapters.MPSReward}[kind]  # fmt: skip
        if not path:
            raise ValueError(f"reward {kind!r} needs 'path': the local folder with its weights")
        return cls(path, **options)

    return build


REWARDS: dict[str, Callable[..., Callable]] = {
    "brightness": lambda path, **options: BrightnessReward(**options),
    "shapes_color": _shapes("shapes_color"),
    "shapes_motion": _shapes("shapes_motion"),
    "shapes_shape": _shapes("shapes_shape"),
    "shapes": _shapes("shapes"),
    "pickscore": _adapter("pickscore"),
    "aesthetic": _adapter("aesthetic"),
    "hpsv2.1": _adapter("hpsv2.1"),
    "mps": _adapter("mps"),
}


def import_callable(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"reward {spec!r}: cannot import module {module_name!r}: {e}") from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ImportError(f"reward {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def build_reward(name: str, path: str | Path | None = None, **options: Any) -> Callable:
    """One reward by name: a registered name, or ``"package.module:callable"``.

    A callable that is a class (or any factory) is called with ``path=`` (when given) and ``options``;
    a plain function taking (frames, prompts) is used as it is when there are no options.
    """
    path = str(path) if path else None
    if ":" in name:
        obj = import_callable(name)
        if isinstance(obj, type) or options or path:
            kwargs = dict(options, **({"path": path} if path else {}))
            return obj(**kwargs)
        return obj
    key = canonical_name(name)
    if key not in REWARDS:
        known = ", ".join(sorted(REWARDS))
        raise ValueError(f"unknown reward {name!r}; known: {known}, or 'package.module:callable'")
    return REWARDS[key](path, **options)


def build_rewards(terms: Sequence[Any]) -> CombinedReward:
    """A :class:`CombinedReward` from config terms (objects with ``name``, ``weight``, ``path``, ``options``)."""
    built = []
    for term in terms:
        fn = build_reward(term.name, term.path or None, **dict(term.options))
        built.append((canonical_name(term.name), fn, term.weight))
    return CombinedReward(built)
