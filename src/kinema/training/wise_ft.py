"""Weight-space interpolation of a fine-tuned transformer with the model it was branched from (WiSE-FT,
Wortsman et al. 2022): ``theta = alpha * fine_tuned + (1 - alpha) * base``.

A branch (InP from the T2V base, say) gains its new skill and drifts on the old one; the interpolated
weights usually keep most of both. On ShapesWorld the InP branch blended half-way with its 6900-step
T2V base scored T2V shape / direction 84.4 / 79.7 % on 64 held-out prompts, against 82.8 / 73.4 % for the
branch and 79.7 / 78.1 % for the base (docs/shapesworld-model.md, "Session 13").

Input channels a branch added (``model.expand_input_channels``: the InP mask and masked-video latents,
control latents) have no counterpart in the base; they keep the fine-tuned weights, and the channels both
share are blended like every other weight.
"""

from __future__ import annotations

import copy

import torch


def interpolate_weights(fine_tuned: torch.nn.Module, base: torch.nn.Module, alpha: float) -> torch.nn.Module:
    """A copy of ``fine_tuned`` with every weight ``alpha * fine_tuned + (1 - alpha) * base`` (computed in
    fp32, stored in the fine-tuned dtype). ``base`` must have the same parameter names and shapes, except
    that a fine-tuned weight may have more input channels (dim 1) than the base's."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (1 = the fine-tuned weights), got {alpha}")
    ft_state, base_state = fine_tuned.state_dict(), base.state_dict()
    differ = sorted(set(ft_state) ^ set(base_state))
    if differ:
        raise ValueError(
            f"the models differ in parameters {differ[:3]}: interpolate a branch with the model it was "
            "branched from (same architecture)"
        )
    out = {}
    for name, w in ft_state.items():
        b = base_state[name]
        widened = (
            w.dim() >= 2
            and w.shape[0] == b.shape[0]
            and w.shape[2:] == b.shape[2:]
            and w.shape[1] > b.shape[1]
        )
        if w.shape != b.shape and not widened:
            raise ValueError(
                f"{name}: shape {tuple(w.shape)} against the base's {tuple(b.shape)}; only added input "
                "channels (dim 1) may differ"
            )
        mixed = w.float().clone()
        shared = mixed[:, : b.shape[1]] if widened else mixed  # a view: blended in place
        shared.mul_(alpha).add_(b.float(), alpha=1 - alpha)
        out[name] = mixed.to(w.dtype)
    blended = copy.deepcopy(fine_tuned)
    blended.load_state_dict(out)
    return blended
