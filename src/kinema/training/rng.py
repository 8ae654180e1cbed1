"""Per-sample random streams that make runs reproducible, resumable and independent of the process count.

Every random draw of a training step (VAE posterior sample, noise, timestep, text dropout, masks, ...)
comes from a generator seeded by ``(run seed, micro-step, slot in the global batch, stream name)``. So a
sample gets the same randomness whether it is trained by process 0 of 1 or process 1 of 2, and a resumed
run repeats exactly what an uninterrupted run would have drawn: there is no generator state to save.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def stream_seed(*parts: int | str) -> int:
    """A 63-bit seed mixed from integers and stream names (stable across processes and runs)."""
    entropy = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)


class SampleRandom:
    """Random draws for the samples of one micro-batch, one independent stream per (slot, name)."""

    def __init__(self, seed: int, micro_step: int, slots: list[int]):
        self.seed, self.micro_step, self.slots = seed, micro_step, list(slots)

    def generators(self, stream: str) -> list[torch.Generator]:
        gens = []
        for slot in self.slots:
            g = torch.Generator()
            g.manual_seed(stream_seed(self.seed, self.micro_step, slot, stream))
            gens.append(g)
        return gens

    def randn(self, stream: str, shape: tuple[int, ...], device=None, dtype=torch.float32) -> torch.Tensor:
        """(B, *shape) standard normal, row i from sample i's stream (drawn on CPU, then moved)."""
        rows = [torch.randn(shape, generator=g, dtype=torch.float32) for g in self.generators(stream)]
        return torch.stack(rows).to(device=device, dtype=dtype)

    def rand(self, stream: str, shape: tuple[int, ...] = (), device=None) -> torch.Tensor:
        rows = [torch.rand(shape, generator=g) for g in self.generators(stream)]
        return torch.stack(rows).to(device)

    def numpy(self, stream: str) -> list[np.random.Generator]:
        return [np.random.default_rng(stream_seed(self.seed, self.micro_step, s, stream)) for s in self.slots]
