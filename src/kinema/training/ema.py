"""Exponential moving average of the trained parameters (full model or LoRA weights only)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """fp32 shadow copies of ``model``'s trainable parameters.

    ``decay_at(step) = min(decay, (1 + n) / (10 + n))`` with ``n = step - update_after_step``: the
    usual warm-up, so early averages are not dominated by the random start. Saved and restored with the
    checkpoint (``state_dict`` / ``load_state_dict``).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, update_after_step: int = 0):
        self.decay = decay
        self.update_after_step = update_after_step
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.num_updates = 0

    def decay_at(self, step: int) -> float:
        n = max(0, step - self.update_after_step)
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        if step < self.update_after_step:
            for n, p in model.named_parameters():
                if n in self.shadow:
                    self.shadow[n].copy_(p.detach().float())
            return
        d = self.decay_at(step)
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach().float().to(self.shadow[n].device), 1 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.shadow:
                p.copy_(self.shadow[n].to(p.dtype))

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state is missing {len(missing)} parameter(s), e.g. {sorted(missing)[:3]}")
        for n in self.shadow:
            self.shadow[n].copy_(state["shadow"][n])
        self.num_updates = int(state["num_updates"])
