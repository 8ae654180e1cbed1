"""Token-length bucketing (EasyAnimate's 基于Token长度的模型训练) and a resumable bucket batch sampler.

A stage has a *token budget*: the number of transformer tokens one sample may use
(``latent frames x (H/16) x (W/16)`` for V5.1-class models). Each sample is planned as follows:

* its aspect ratio picks the closest bucket of :func:`kinema.sizes.aspect_buckets` at one of the stage's
  ``resolutions`` (square-equivalent sizes; a video draws one at random each epoch, so one model sees
  256x256x49, 512x512x13 and 1024x1024x1 alike at a 3328-token budget);
* a video gets as many frames (``4k+1``) as the budget allows at that size (nearest latent-frame count,
  like the V5.1 table: 13312 tokens -> 512x512x49, 768x768x21, 1024x1024x9), capped by the stage's
  ``max_frames`` and by the frames the clip has after the start/end crop and stride;
* an image is one frame at the largest image resolution whose single frame fits the budget.

Samples with the same planned ``(height, width, frames)`` form a bucket; a bucket emits a batch as soon
as it holds one *global* batch (``batch_size x processes``), so image and video batches interleave and
every batch is shape-uniform. Which samples go where depends only on ``(seed, stage, epoch)``: the
sampler is deterministic and can restart at any ``(epoch, batch)`` position (resume). Partial buckets
left at the end of an epoch are dropped (they get their turn in later epochs' shuffles).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from kinema.sizes import aspect_buckets, closest_bucket

from .metadata import Sample


@dataclass(frozen=True)
class Geometry:
    """How pixels map to transformer tokens: VAE compression and patch size (V5.1: 8, 4, 2)."""

    vae_spatial: int = 8
    vae_temporal: int = 4
    patch: int = 2

    @property
    def spatial_multiple(self) -> int:
        return self.vae_spatial * self.patch

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.vae_temporal + 1

    def tokens(self, height: int, width: int, frames: int) -> int:
        m = self.spatial_multiple
        return self.latent_frames(frames) * (height // m) * (width // m)

    def round_frames_down(self, frames: int) -> int:
        """Largest ``t*k + 1`` not above ``frames`` (at least 1)."""
        return max(1, (frames - 1) // self.vae_temporal * self.vae_temporal + 1)

    def frames_for_budget(self, height: int, width: int, budget: int, max_frames: int) -> int | None:
        """Frames (``t*k+1``) that best use ``budget`` at this size; None if not even one frame fits.

        The latent-frame count is rounded to nearest (as the V5.1 report's 768x768x21 at 13312), so a
        sample may exceed the budget by less than half a latent frame.
        """
        per_frame = self.tokens(height, width, 1)
        if per_frame > budget:
            return None
        latent = max(1, (2 * budget + per_frame) // (2 * per_frame))
        frames = (latent - 1) * self.vae_temporal + 1
        return min(frames, self.round_frames_down(max_frames))


V51_GEOMETRY = Geometry()


@dataclass(frozen=True)
class Plan:
    """What one sample becomes in one epoch: output size, frame count and which source frames."""

    height: int
    width: int
    frames: int
    start: int = 0  # first source frame
    stride: int = 1

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.frames)


@dataclass(frozen=True)
class SampleRequest:
    """One entry of a batch: the sample, its plan, and where it sits (for per-sample randomness)."""

    index: int  # into the stage's sample list
    plan: Plan
    slot: int  # position in the global batch (rank * local_batch + i)
    epoch: int
    batch_index: int  # batch number within the epoch


@dataclass(frozen=True)
class FrameSampling:
    stride: int = 1
    start_fraction: float = 0.0
    end_fraction: float = 1.0
    random_start: bool = True


def usable_frame_range(num_frames: int, sampling: FrameSampling) -> tuple[int, int]:
    """[first, end) source frames left after the start/end crop (at least one frame)."""
    first = min(int(math.floor(num_frames * sampling.start_fraction)), num_frames - 1)
    end = max(first + 1, min(num_frames, int(math.ceil(num_frames * sampling.end_fraction))))
    return first, end


class BucketPlanner:
    """Plans samples for one stage (sizes, frames, clip start) from its budget and resolutions."""

    def __init__(
        self,
        token_budget: int,
        resolutions: list[int],
        image_resolutions: list[int] | None = None,
        max_frames: int = 49,
        geometry: Geometry = V51_GEOMETRY,
        sampling: FrameSampling | None = None,
        aspect_step: int = 16,
    ):
        self.budget = token_budget
        self.geometry = geometry
        self.sampling = sampling or FrameSampling()
        self.max_frames = max_frames
        self.buckets = {r: aspect_buckets(r, aspect_step) for r in sorted(set(resolutions))}
        image_res = sorted(set(image_resolutions or [max(resolutions)]))
        self.image_buckets = {r: aspect_buckets(r, aspect_step) for r in image_res}

    def plan(self, sample: Sample, rng: np.random.Generator) -> Plan | None:
        """The sample's plan for one epoch, or None if it cannot fit the budget at any resolution."""
        g = self.geometry
        if sample.is_image:
            for res in sorted(self.image_buckets, reverse=True):
                _, (h, w) = closest_bucket(sample.height, sample.width, self.image_buckets[res])
                if g.tokens(h, w, 1) <= self.budget:
                    return Plan(h, w, 1)
            return None
        first, end = usable_frame_range(sample.num_frames, self.sampling)
        stride = self.sampling.stride
        available = g.round_frames_down((end - first - 1) // stride + 1)
        options = []
        for table in self.buckets.values():
            _, (h, w) = closest_bucket(sample.height, sample.width, table)
            frames = g.frames_for_budget(h, w, self.budget, self.max_frames)
            if frames is not None:
                options.append((h, w, min(frames, available)))
        if not options:
            return None
        h, w, frames = options[int(rng.integers(len(options)))] if len(options) > 1 else options[0]
        span = (frames - 1) * stride + 1
        slack = (end - first) - span
        start = first + (int(rng.integers(slack + 1)) if self.sampling.random_start and slack > 0 else 0)
        return Plan(h, w, frames, start=start, stride=stride)


class BucketBatchSampler:
    """Deterministic, resumable stream of shape-uniform global batches for one stage.

    ``iterate(epoch, batch)`` starts at that position; each yielded batch is a list of
    ``global_batch_size`` :class:`SampleRequest` s. :meth:`for_rank` gives one process its slice.
    """

    def __init__(
        self,
        samples: list[Sample],
        planner: BucketPlanner,
        global_batch_size: int,
        seed: int,
        stage_index: int = 0,
    ):
        if not samples:
            raise ValueError(
                "no usable samples for this stage (check data.root, the metadata and the stage filter)"
            )
        self.samples = samples
        self.planner = planner
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.stage_index = stage_index
        self.unplannable = 0  # samples that fit no resolution in the last planned epoch
        self._epoch_cache: tuple[int, list[list[SampleRequest]]] | None = None

    def epoch_batches(self, epoch: int) -> list[list[SampleRequest]]:
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        order = np.random.default_rng([self.seed, self.stage_index, epoch]).permutation(len(self.samples))
        pending: dict[tuple[int, int, int], list[tuple[int, Plan]]] = {}
        batches: list[list[SampleRequest]] = []
        unplannable = 0
        for index in order.tolist():
            rng = np.random.default_rng([self.seed, self.stage_index, epoch, index])
            plan = self.planner.plan(self.samples[index], rng)
            if plan is None:
                unplannable += 1
                continue
            bucket = pending.setdefault(plan.key, [])
            bucket.append((index, plan))
            if len(bucket) == self.global_batch_size:
                b = len(batches)
                batches.append([SampleRequest(i, p, slot, epoch, b) for slot, (i, p) in enumerate(bucket)])
                del pending[plan.key]
        self.unplannable = unplannable
        self._epoch_cache = (epoch, batches)
        return batches

    def iterate(self, epoch: int = 0, batch: int = 0) -> Iterator[list[SampleRequest]]:
        """Endless stream of global batches from position ``(epoch, batch)``."""
        empty_epochs = 0
        while True:
            batches = self.epoch_batches(epoch)
            if not batches:
                empty_epochs += 1
                if empty_epochs >= 3:
                    raise ValueError(
                        f"stage {self.stage_index}: no bucket collects a batch of {self.global_batch_size} "
                        f"samples ({len(self.samples)} samples, {self.unplannable} fit no resolution in the "
                        "budget); lower the batch size, use fewer resolutions or add data"
                    )
            yield from batches[batch:]
            epoch, batch = epoch + 1, 0

    @staticmethod
    def for_rank(batch: list[SampleRequest], rank: int, num_processes: int) -> list[SampleRequest]:
        local = len(batch) // num_processes
        return batch[rank * local : (rank + 1) * local]
