"""Reward mode: sample full flow-matching trajectories and backpropagate a reward (DRaFT-K, DRTune).

Per micro-batch (``mode = "reward"``, one prompt per sample)::

    x_0 ~ N(0, I)  (the sample's seeded noise)
    for i in 0..N-1 (FlowMatchEulerDiscreteScheduler, set_timesteps(N, mu=1), as the pipelines):
        input_i = x_i.detach() if DRTune else x_i
        v_i     = CFG(DiT(input_i, t_i, text))      with gradient only if i is a chosen step,
                                                     else under torch.no_grad()
        x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v_i  (Euler: the update keeps x_i's gradient path)
    frames = VAE.decode(chosen latent frames of x_N / scaling_factor)  (causal, chunk-checkpointed)
    loss   = -mean(reward(frames, prompts))

**DRaFT-K** (``method = "draft"``) backpropagates through the whole chain of the chosen steps: the
gradient of step i's parameters reaches the reward through every later chosen step's model input.
**DRTune** (``method = "drtune"``) feeds every step's model a detached input: step i's parameters get the
gradient ``dt_i * dv_i/dtheta`` times the identity paths of the later Euler updates, never through a
later model call (a shorter, better conditioned gradient path; it allows early steps to be trained).

Chosen steps (``reward.strategy``): ``last``; ``tail`` = the last K; ``uniform`` = K evenly spaced;
``random`` = K random steps per sample (from the sample's seeded stream); ``list`` = ``step_list``.
Each chosen step's transformer call is wrapped in ``torch.utils.checkpoint`` (``checkpoint_steps``), so
activation memory does not grow with K; only the step inputs are kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from .config import ConfigError, RewardConfig
from .rng import SampleRandom, stream_seed

logger = logging.getLogger(__name__)

STRATEGIES = ("last", "tail", "uniform", "random", "list")
METHODS = ("draft", "drtune")


# ---- step selection ---------------------------------------------------------------------------------------


def step_range(num_steps: int, bounds: Sequence[int] | None) -> tuple[int, int]:
    """``[start, end)`` of the steps ``uniform``/``random`` choose from (default: all)."""
    if not bounds:
        return 0, num_steps
    start, end = int(bounds[0]), int(bounds[1])
    if not 0 <= start < end <= num_steps:
        raise ValueError(f"step range {list(bounds)} must satisfy 0 <= start < end <= {num_steps}")
    return start, end


def select_steps(
    strategy: str,
    num_steps: int,
    k: int = 1,
    step_list: Sequence[int] = (),
    bounds: Sequence[int] | None = None,
    generator: np.random.Generator | None = None,
) -> list[int]:
    """Sorted indices (0 = the first, noisiest step) of the sampling steps that get a gradient."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if strategy == "last":
        return [num_steps - 1]
    if strategy == "list":
        if not step_list:
            raise ValueError("strategy 'list' needs a non-empty step_list")
        steps = set()
        for s in step_list:
            if not -num_steps <= s < num_steps:
                raise ValueError(f"step {s} is outside the {num_steps} sampling steps")
            steps.add(s % num_steps)
        return sorted(steps)
    if not 1 <= k <= num_steps:
        raise ValueError(f"backprop_steps K={k} must be in [1, {num_steps}]")
    if strategy == "tail":
        return list(range(num_steps - k, num_steps))
    start, end = step_range(num_steps, bounds)
    if k > end - start:
        raise ValueError(
            f"backprop_steps K={k} is more than the {end - start} steps in range [{start}, {end})"
        )
    if strategy == "uniform":
        if k == 1:
            return [end - 1]
        return sorted({start + round(j * (end - 1 - start) / (k - 1)) for j in range(k)})
    if strategy == "random":
        if generator is None:
            raise ValueError("strategy 'random' needs a generator (seeded per sample)")
        return sorted(int(s) for s in generator.choice(np.arange(start, end), size=k, replace=False))
    raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def flow_schedule(num_steps: int, scheduler_config: dict[str, Any] | None = None):
    """(timesteps (N,), sigmas (N + 1,)) of the V5.1 sampler: diffusers' flow scheduler, set_timesteps(N, mu=1)."""
    from kinema.pipelines.random_model import OFFICIAL_SCHEDULER_CONFIG
    from kinema.pipelines.schedulers import make_scheduler

    scheduler, kwargs = make_scheduler("flow", dict(scheduler_config or OFFICIAL_SCHEDULER_CONFIG))
    scheduler.set_timesteps(num_steps, **kwargs)
    return scheduler.timesteps.float().clone(), scheduler.sigmas.float().clone()


# ---- the sampler -------------------------------------------------------------------------------------------


@dataclass
class RewardSample:
    frames: torch.Tensor  # (B, 3, F', H, W) in [-1, 1], with the gradient graph
    latents: torch.Tensor  # final latents (B, C, f, h, w), x scaling_factor
    grad_steps: list[list[int]]  # per sample


class RewardSampler:
    """Flow-matching Euler sampling with gradients through chosen steps, and a differentiable VAE decode.

    ``transformer``: the (LoRA-)trained VideoTransformer; ``vae``: a frozen VideoVAE. Models with inpaint or
    control channels get zero conditioning latents (their text-to-video path, as in the pipeline).
    """

    def __init__(
        self,
        transformer,
        vae,
        *,
        num_steps: int = 20,
        guidance: float = 6.0,
        method: str = "draft",
        checkpoint_steps: bool = True,
        decode_latent_frames: Sequence[int] = (),
        decode_checkpointing: bool = True,
        scheduler_config: dict[str, Any] | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    ):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        self.transformer, self.vae = transformer, vae
        self.num_steps, self.guidance, self.method = int(num_steps), float(guidance), method
        self.checkpoint_steps, self.decode_checkpointing = checkpoint_steps, decode_checkpointing
        self.decode_latent_frames = sorted(set(int(i) for i in decode_latent_frames))
        self.autocast = autocast or contextlib.nullcontext
        self.timesteps, self.sigmas = flow_schedule(self.num_steps, scheduler_config)
        from kinema.pipelines.loading import model_type_from_channels

        self.latent_channels = int(vae.config.latent_channels)
        self.model_type = model_type_from_channels(transformer.config.in_channels, self.latent_channels)
        self.extra_channels = transformer.config.in_channels - self.latent_channels

    @property
    def use_cfg(self) -> bool:
        return self.guidance > 1.0

    def latent_shape(self, height: int, width: int, frames: int) -> tuple[int, int, int, int]:
        s, t = self.vae.config.spatial_compression, self.vae.config.temporal_compression
        if (frames - 1) % t or height % (2 * s) or width % (2 * s):
            raise ValueError(
                f"size {height}x{width}x{frames}: frames must be {t}k+1, height/width multiples of {2 * s}"
            )
        return self.latent_channels, (frames - 1) // t + 1, height // s, width // s

    # ---- one step --------------------------------------------------------------------------------------
    def _conditioning(self, batch: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.extra_channels:
            return {}
        zeros = like.new_zeros(batch, self.extra_channels, *like.shape[2:])
        key = "inpaint_latents" if self.model_type == "inp" else "control_latents"
        return {key: zeros}

    def velocity(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, negative: torch.Tensor | None):
        """The (guided) velocity at ``x``: CFG with the negative prompt first in the batch, as the pipeline."""
        if self.use_cfg:
            model_in, text_in = torch.cat([x, x]), torch.cat([negative, text])
        else:
            model_in, text_in = x, text
        t_batch = t.reshape(1).expand(model_in.shape[0]).to(x.device)
        with self.autocast():
            pred = self.transformer(model_in, t_batch, text_in, **self._conditioning(model_in.shape[0], x))
        pred = pred.float()[:, : self.latent_channels]
        if self.use_cfg:
            uncond, cond = pred.chunk(2)
            pred = uncond + self.guidance * (cond - uncond)
        return pred

    def _grad_velocity(self, x, t, text, negative):
        if self.checkpoint_steps:
            return checkpoint(self.velocity, x, t, text, negative, use_reentrant=False)
        return self.velocity(x, t, text, negative)

    # ---- sampling -----------------------------------------------------------------------------------------
    def sample_latents(
        self,
        noise: torch.Tensor,
        text: torch.Tensor,
        negative: torch.Tensor | None,
        grad_steps: Sequence[Sequence[int]],
    ) -> torch.Tensor:
        """Final latents from ``noise`` (B, C, f, h, w); ``grad_steps[b]`` = the steps of sample b with gradient."""
        b = noise.shape[0]
        if len(grad_steps) != b:
            raise ValueError(f"grad_steps has {len(grad_steps)} entries for {b} samples")
        if self.use_cfg and negative is None:
            raise ValueError("guidance > 1 needs negative prompt embeddings")
        chosen = torch.zeros(self.num_steps, b, dtype=torch.bool)
        for i, steps in enumerate(grad_steps):
            for s in steps:
                chosen[s, i] = True
        sigmas, timesteps = self.sigmas.to(noise.device), self.timesteps.to(noise.device)
        x = noise.float()
        for i in range(self.num_steps):
            model_in = x.detach() if self.method == "drtune" else x
            rows = chosen[i].to(noise.device)
            if bool(rows.any()) and torch.is_grad_enabled():
                v = self._grad_velocity(model_in, timesteps[i], text, negative)
                if not bool(rows.all()):  # samples for which this step is not chosen: constant velocity
                    v = torch.where(rows.view(-1, 1, 1, 1, 1), v, v.detach())
            else:
                with torch.no_grad():
                    v = self.velocity(model_in.detach(), timesteps[i], text, negative)
            x = x + (sigmas[i + 1] - sigmas[i]) * v
        return x

    # ---- decoding ---------------------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode the chosen latent frames (all by default) to frames in [-1, 1], differentiably.

        The causal decoder runs one latent frame at a time from frame 0 to the last chosen one (frames after
        it are never decoded); only the video frames coded by chosen latent frames are returned. With
        ``decode_checkpointing`` each latent frame's decode is recomputed in the backward pass, so the
        decoder's activation memory is that of one latent frame.
        """
        vae = self.vae
        z = (latents / vae.config.scaling_factor).to(vae.dtype)
        n = z.shape[2]
        chosen = self.decode_latent_frames or list(range(n))
        if chosen[-1] >= n:
            raise ValueError(f"decode_latent_frames {chosen} has frames beyond the {n} latent frames")
        keep = set(chosen)
        cache: dict = {}
        outputs = []
        grad = torch.is_grad_enabled() and z.requires_grad
        for j in range(chosen[-1] + 1):
            chunk = z[:, :, j : j + 1]
            if grad and self.decode_checkpointing:
                out, cache = _checkpointed_decode(vae, chunk, cache)
            else:
                out = vae.decoder(vae.post_quant_conv(chunk), cache)
            if j in keep:
                outputs.append(out)
        return torch.cat(outputs, dim=2).float().clamp(-1, 1)

    def __call__(self, noise, text, negative, grad_steps) -> RewardSample:
        latents = self.sample_latents(noise, text, negative, grad_steps)
        return RewardSample(self.decode(latents), latents, [list(s) for s in grad_steps])


def _checkpointed_decode(vae, chunk: torch.Tensor, cache: dict) -> tuple[torch.Tensor, dict]:
    """Decode one latent frame under ``torch.utils.checkpoint``, passing the causal cache explicitly.

    The decoder mutates its stream cache; a checkpointed function must be pure (it runs again in the
    backward pass), so the cache goes in and out as tensors and a fresh dict is built inside.
    """
    keys = list(cache)
    flags = [torch.is_tensor(cache[k]) for k in keys]
    markers = {k: v for k, v in cache.items() if not torch.is_tensor(v)}
    tails = [cache[k] for k, is_tensor in zip(keys, flags, strict=True) if is_tensor]
    layout: dict[str, Any] = {}

    def run(z: torch.Tensor, *tensors: torch.Tensor):
        it = iter(tensors)
        local = {k: (next(it) if is_tensor else markers[k]) for k, is_tensor in zip(keys, flags, strict=True)}
        out = vae.decoder(vae.post_quant_conv(z), local)
        layout["keys"] = list(local)
        layout["markers"] = {k: v for k, v in local.items() if not torch.is_tensor(v)}
        return (out, *[v for v in local.values() if torch.is_tensor(v)])

    out, *new_tails = checkpoint(run, chunk, *tails, use_reentrant=False)
    it = iter(new_tails)
    new_cache = {k: layout["markers"][k] if k in layout["markers"] else next(it) for k in layout["keys"]}
    return out, new_cache


# ---- prompts --------------------------------------------------------------------------------------------------


def shapes_prompts(split: str, languages: Sequence[str], paths: Sequence[str], seed: int) -> list[str]:
    """One ShapesWorld prompt per (combination of the split, path, language); phrasing drawn with ``seed``."""
    from kinema.shapes import held_out_specs, make_prompt, training_specs

    specs = []
    if split in ("train", "all"):
        specs += training_specs(tuple(paths))
    if split in ("held_out", "all"):
        specs += held_out_specs(tuple(paths))
    rng = np.random.default_rng(seed)
    return [make_prompt(spec, lang, rng) for spec in specs for lang in languages]


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a .txt (one per line; '#' comments), .jsonl or .json (strings or objects with 'text')."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".txt":
        return [s.strip() for s in text.splitlines() if s.strip() and not s.lstrip().startswith("#")]
    rows = json.loads(text) if path.suffix.lower() == ".json" else [
        json.loads(line) for line in text.splitlines() if line.strip()
    ]  # fmt: skip
    prompts = []
    for i, row in enumerate(rows):
        value = row if isinstance(row, str) else row.get("text") if isinstance(row, dict) else None
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{path}: entry {i} has no prompt (a string or an object with a 'text' string)")
        prompts.append(value.strip())
    return prompts


def gather_prompts(prompts: Sequence[str], prompt_file: str, shapes_split: str, c: RewardConfig,
                   seed: int) -> list[str]:  # fmt: skip
    out = list(prompts)
    if prompt_file:
        out += read_prompt_file(prompt_file)
    if shapes_split:
        out += shapes_prompts(shapes_split, c.shapes_languages, c.shapes_paths, seed)
    return out


@dataclass(frozen=True)
class PromptRequest:
    prompt: str
    slot: int  # position in the global batch
    epoch: int
    batch_index: int


class PromptBatches:
    """Deterministic global batches of prompts, restartable at any (epoch, batch), like the bucket sampler.

    An epoch is a permutation (seeded by seed, stage, epoch) of the prompt list, tiled when the list is
    shorter than a global batch, cut into ``len // global_batch`` (at least one) batches.
    """

    def __init__(self, prompts: Sequence[str], global_batch: int, seed: int, stage_index: int = 0):
        if not prompts:
            raise ValueError("reward mode needs at least one prompt")
        self.prompts, self.global_batch = list(prompts), int(global_batch)
        self.seed, self.stage_index = seed, stage_index

    def epoch_batches(self, epoch: int) -> list[list[PromptRequest]]:
        rng = np.random.default_rng(stream_seed(self.seed, "reward_prompts", self.stage_index, epoch))
        order = rng.permutation(len(self.prompts))
        n_batches = max(1, len(order) // self.global_batch)
        order = np.resize(order, n_batches * self.global_batch)
        return [
            [PromptRequest(self.prompts[order[b * self.global_batch + s]], s, epoch, b)
             for s in range(self.global_batch)]
            for b in range(n_batches)
        ]  # fmt: skip

    def iterate(self, epoch: int = 0, batch: int = 0) -> Iterator[list[PromptRequest]]:
        while True:
            yield from self.epoch_batches(epoch)[batch:]
            epoch, batch = epoch + 1, 0


# ---- the trainer's reward task -----------------------------------------------------------------------------


class RewardTask:
    """What the one trainer needs for ``mode = "reward"``: prompt batches, the reward loss and evaluation."""

    def __init__(self, trainer):
        self.trainer = trainer
        c, rc = trainer.config, trainer.config.reward
        self.rc = rc
        self.prompts = gather_prompts(rc.prompts, rc.prompt_file, rc.shapes_prompts, rc, c.seed)
        if not self.prompts:
            raise ConfigError(
                "config: 'reward.prompts' (or reward.prompt_file / reward.shapes_prompts) gives no prompt"
            )
        self.eval_prompts = gather_prompts(rc.eval_prompts, "", rc.eval_shapes_prompts, rc, rc.eval_seed)
        if rc.eval_max_prompts and len(self.eval_prompts) > rc.eval_max_prompts:
            pick = np.random.default_rng(rc.eval_seed).choice(
                len(self.eval_prompts), rc.eval_max_prompts, replace=False
            )
            self.eval_prompts = [self.eval_prompts[i] for i in sorted(pick)]
        from kinema.rewards import build_rewards

        self.reward = build_rewards(rc.rewards)
        self.reward.to(trainer.accelerator.device)
        self.sampler = RewardSampler(
            trainer.transformer, trainer.vae, num_steps=rc.steps, guidance=rc.guidance, method=rc.method,
            checkpoint_steps=rc.checkpoint_steps, decode_latent_frames=rc.decode_latent_frames,
            decode_checkpointing=rc.decode_checkpointing, autocast=trainer.accelerator.autocast,
        )  # fmt: skip
        self.shape = self.sampler.latent_shape(rc.height, rc.width, rc.frames)
        if self.sampler.decode_latent_frames and self.sampler.decode_latent_frames[-1] >= self.shape[1]:
            raise ConfigError(
                f"config: 'reward.decode_latent_frames' {rc.decode_latent_frames} names latent frames beyond the "
                f"{self.shape[1]} of a {rc.frames}-frame video"
            )
        world = trainer.accelerator.num_processes
        self.samplers = [
            PromptBatches(self.prompts, s.batch_size * world, c.seed, i) for i, s in enumerate(c.stages)
        ]
        self._negative: torch.Tensor | None = None

    # ---- data ---------------------------------------------------------------------------------------------
    def batches(self, stage_index: int, epoch: int, batch: int, rank: int, world: int) -> Iterator[dict]:
        for global_batch in self.samplers[stage_index].iterate(epoch, batch):
            local = len(global_batch) // world
            requests = global_batch[rank * local : (rank + 1) * local]
            yield {"requests": requests, "texts": [r.prompt for r in requests], "errors": [], "plan": None}

    # ---- loss ---------------------------------------------------------------------------------------------
    def negative(self, batch: int) -> torch.Tensor | None:
        if not self.sampler.use_cfg:
            return None
        if self._negative is None:
            self._negative = self.trainer._text_embeddings([self.rc.negative_prompt])[0]
        return self._negative.expand(batch, -1, -1)

    def grad_steps(self, rand: SampleRandom) -> list[list[int]]:
        rc = self.rc
        gens = rand.numpy("reward_steps") if rc.strategy == "random" else [None] * len(rand.slots)
        return [
            select_steps(rc.strategy, rc.steps, rc.backprop_steps, rc.step_list, rc.step_range, g)
            for g in gens
        ]

    def loss(self, batch: dict, micro_step: int) -> tuple[torch.Tensor, dict[str, float]]:
        t = self.trainer
        device = t.accelerator.device
        texts = batch["texts"]
        rand = SampleRandom(t.config.seed, micro_step, [r.slot for r in batch["requests"]])
        with torch.no_grad():
            text = t._text_embeddings(texts)
        noise = rand.randn("reward_noise", self.shape, device=device)
        steps = self.grad_steps(rand)
        sample = self.sampler(noise, text, self.negative(len(texts)), steps)
        scores = self.reward(sample.frames, texts)
        loss = -scores.mean()
        stats = {
            "reward": float(scores.detach().mean()),
            "grad_steps": float(np.mean([len(s) for s in steps])),
        }
        for name, value in self.reward.last_terms.items():
            stats[f"reward_{name}"] = float(value.mean())
        return loss, stats

    # ---- evaluation -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, batch_size: int = 4) -> dict[str, float]:
        """Mean reward on ``eval_prompts`` (fixed noise per prompt index, no gradient); main process only."""
        if not self.eval_prompts:
            return {}
        t, rc = self.trainer, self.rc
        device = t.accelerator.device
        was_training = t.transformer.training
        t.transformer.eval()
        totals: dict[str, float] = {}
        try:
            for start in range(0, len(self.eval_prompts), batch_size):
                texts = self.eval_prompts[start : start + batch_size]
                rand = SampleRandom(rc.eval_seed, 0, list(range(start, start + len(texts))))
                noise = rand.randn("reward_eval_noise", self.shape, device=device)
                sample = self.sampler(
                    noise, t._text_embeddings(texts), self.negative(len(texts)), [[]] * len(texts)
                )
                scores = self.reward(sample.frames, texts)
                totals["eval_reward"] = totals.get("eval_reward", 0.0) + float(scores.sum())
                for name, value in self.reward.last_terms.items():
                    totals[f"eval_reward_{name}"] = totals.get(f"eval_reward_{name}", 0.0) + float(
                        value.sum()
                    )
        finally:
            t.transformer.train(was_training)
        return {k: v / len(self.eval_prompts) for k, v in totals.items()}


def reward_mode_errors(accelerator) -> str | None:
    """Why reward mode cannot run under this accelerate setup, or None."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        return (
            "config: mode 'reward' runs single-process or with DDP (accelerate launch --multi_gpu); DeepSpeed and "
            "FSDP wrap the transformer in ways the many-call sampling graph does not support here"
        )
    return None


def average_gradients(accelerator, params: Sequence[torch.nn.Parameter]) -> None:
    """All-reduce (mean) the gradients of ``params`` across processes.

    Reward mode calls the unwrapped transformer many times per backward pass (one call per sampling step),
    which DDP's reducer does not support, so gradients are averaged here instead of by DDP hooks.
    """
    if accelerator.num_processes <= 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.copy_(accelerator.reduce(p.grad, reduction="mean"))
