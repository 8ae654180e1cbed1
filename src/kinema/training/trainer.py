"""The trainer: one loop for every mode (T2V, I2V, Control, Camera, VAE), distributed through accelerate.

Per micro-batch (transformer modes)::

    latents  = VAE posterior sample of the clip x scaling_factor        (or from the latent cache)
    text     = prompt embeddings, replaced by the empty prompt's with p = flow.text_dropout
    cond     = the mode's inpaint / control latents
    sigma    ~ flow.timestep_density;  x_t = (1 - sigma) latents + sigma noise
    loss     = || DiT(x_t, 1000 sigma, text, cond) - (noise - latents) ||^2    (valid frames only)

``accelerate`` does device placement, DDP / DeepSpeed / FSDP wrapping, gradient accumulation and bf16
autocast; the trainer never talks to torch.distributed itself. Every random draw is keyed by (seed,
micro-step, slot in the global batch) (see ``rng.py``) and the data order by (seed, stage, epoch), so
a resumed run continues exactly like an uninterrupted one and N processes with batch b train the same
as one process with batch N*b. A step whose gradient norm is not finite (NaN/inf loss or gradients) is
skipped and counted; ``train.max_nonfinite_steps`` bad steps in a row save a checkpoint and abort.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from kinema.data import (
    BucketBatchSampler,
    BucketPlanner,
    FrameSampling,
    Geometry,
    LatentCache,
    VideoDataset,
    collate_samples,
    load_metadata,
    model_fingerprint,
    probe_samples,
)
from kinema.data.metadata import Sample

from . import checkpoint as ckpt
from .config import ConfigError, RunConfig, StageConfig, check_paths, metadata_path
from .ema import EMA
from .logs import MetricsLogger
from .losses import latent_frame_mask, masked_mse, noisy_latents, sample_sigmas
from .modes import ModeSpec, StepContext, get_mode
from .rng import SampleRandom
from .vae_losses import (
    PatchDiscriminator3D,
    VAETrainWrapper,
    build_perceptual,
    hinge_d_loss,
    import_callable,
    reconstruction_losses,
)

logger = logging.getLogger(__name__)


LORA_RAW_FILE = "lora_resume_state.safetensors"  # unfolded adapter weights, for exact resumes only


class TrainingAborted(RuntimeError):
    """Too many non-finite steps in a row; a checkpoint was saved before raising."""


@dataclass
class TrainState:
    """Everything besides model/optimizer/scheduler that a resume needs (saved with each checkpoint)."""

    step: int = 0  # optimizer steps done
    micro_step: int = 0  # micro-batches done (keys the per-sample random streams)
    stage: int = 0
    epoch: int = 0  # data position of the next batch within the stage
    batch: int = 0
    nonfinite_steps: int = 0
    nonfinite_streak: int = 0
    data_errors: int = 0

    def state_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, int]) -> None:
        for k, v in state.items():
            setattr(self, k, int(v))


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)  # per optimizer step (NaN for skipped steps)
    nonfinite_steps: int = 0
    data_errors: int = 0
    skipped_samples: int = 0  # missing / unreadable at startup
    output_dir: str = ""
    eval_start: dict[str, float] = field(default_factory=dict)  # reward mode: eval before the first step
    eval_end: dict[str, float] = field(default_factory=dict)  # ... and after the last one


class _Batches:
    """A re-iterable batch sampler for DataLoader: one process's slice of the global batches."""

    def __init__(self, sampler: BucketBatchSampler, epoch: int, batch: int, rank: int, world: int):
        self.sampler, self.epoch, self.batch, self.rank, self.world = sampler, epoch, batch, rank, world

    def __iter__(self):
        for global_batch in self.sampler.iterate(self.epoch, self.batch):
            yield BucketBatchSampler.for_rank(global_batch, self.rank, self.world)


class Trainer:
    """``Trainer(config).train()``; ``components`` may hand in prebuilt models (tests, notebooks)."""

    def __init__(self, config: RunConfig, accelerator=None, components: dict[str, Any] | None = None):
        self.config = config
        self.mode: ModeSpec = get_mode(config.mode)
        check_paths(config)  # bad paths fail here, before any model or data is loaded
        if config.train.mixed_precision == "fp16" and not torch.cuda.is_available():
            raise ConfigError("config: 'train.mixed_precision' fp16 needs a GPU; on CPU use bf16 or no")
        if accelerator is None:
            from accelerate import Accelerator

            accelerator = Accelerator(
                mixed_precision=config.train.mixed_precision,
                gradient_accumulation_steps=config.train.gradient_accumulation_steps,
            )
        self.accelerator = accelerator
        if config.train.cpu_threads and accelerator.device.type == "cpu":
            torch.set_num_threads(config.train.cpu_threads)
        self.components = components or {}
        self.output_dir = Path(config.output_dir)
        self.state = TrainState()
        self.ema: EMA | None = None
        self.cache: LatentCache | None = None
        self.reward_task = None  # reward mode: prompts, sampler and reward (training/reward.py)
        self.compiled_forward = None  # train.compile
        self.skipped_samples: list[tuple[str, str]] = []
        self._setup_done = False

    # =========================================================================================== setup
    def setup(self) -> Trainer:
        if self._setup_done:
            return self
        c, acc = self.config, self.accelerator
        self._build_models()
        self._build_data()
        self._build_optimization()
        acc.register_save_state_pre_hook(self._save_hook)
        acc.register_load_state_pre_hook(self._load_hook)
        acc.register_for_checkpointing(self.state)
        acc.register_for_checkpointing(self.scheduler)
        if self.ema is not None:
            acc.register_for_checkpointing(self.ema)
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            from kinema.models.modeling_utils import write_json_atomic

            write_json_atomic(self.output_dir / "config.json", c.to_dict())
        self.metrics = MetricsLogger(self.output_dir, c.logging.tensorboard, enabled=acc.is_main_process)
        self._maybe_resume()
        self._setup_done = True
        return self

    # ---- models --------------------------------------------------------------------------------------
    def _part_folder(self, explicit: str | None, sub: str) -> Path | None:
        if explicit:
            return Path(explicit)
        if self.config.model.pretrained:
            folder = Path(self.config.model.pretrained) / sub
            return folder if folder.is_dir() else None
        return None

    def _build_models(self) -> None:
        from kinema.models import VideoTransformer, VideoVAE

        c, m = self.config, self.config.model
        device = self.accelerator.device
        frozen_dtype = (
            torch.bfloat16 if (c.train.mixed_precision == "bf16" and device.type == "cuda") else None
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(m.init_seed)
            vae = self.components.get("vae")
            if vae is None:
                vae_dir = self._part_folder(m.vae_path, "vae")
                vae = VideoVAE.from_pretrained(vae_dir) if vae_dir else VideoVAE.from_config(m.vae_config)
            self.vae = vae
            self.scaling_factor = float(vae.config.scaling_factor)
            self.latent_channels = int(vae.config.latent_channels)
            if self.mode.trains == "vae":
                self.text_encoder = None
                self.transformer = None
                self.vae.train().requires_grad_(True)
                if not c.vae_loss.train_encoder:
                    self.vae.encoder.requires_grad_(False)
                    self.vae.quant_conv.requires_grad_(False)
                self.geometry = Geometry(vae.config.spatial_compression, vae.config.temporal_compression, 2)
                return
            self.vae.eval().requires_grad_(False).to(device=device, dtype=frozen_dtype)
            self.text_encoder = self.components.get("text_encoder") or self._build_text_encoder()
            self.text_encoder.eval().requires_grad_(False).to(device=device, dtype=frozen_dtype)
            transformer = self.components.get("transformer")
            if transformer is None:
                t_dir = self._part_folder(m.transformer_path, "transformer")
                if t_dir:
                    transformer = VideoTransformer.from_pretrained(t_dir)
                else:
                    cfg = {
                        "in_channels": self.latent_channels + self.mode.extra_channels,
                        "out_channels": self.latent_channels,
                        "text_embed_dim": self.text_encoder.hidden_size,
                        **m.transformer_config,
                    }
                    transformer = VideoTransformer.from_config(cfg)
        for key in ("camera_rope_depth", "camera_noise_warp_depth"):
            depth = getattr(m, key)
            if depth is None:
                continue
            if self.mode.name != "camera":
                raise ValueError(f"model.{key} is for camera training; this run's mode is {self.mode.name!r}")
            if not depth > 0:
                raise ValueError(f"model.{key} must be > 0 (pose units), got {depth}")
            setattr(transformer.config, key, float(depth))
        self._check_transformer(transformer)
        transformer.train()
        if c.train.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        if c.lora.enabled:
            from .lora import add_lora

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(m.init_seed + 1)  # lora_A's random init: the same in every process/run
                add_lora(transformer, c.lora)
        else:
            transformer.requires_grad_(True)
        _freeze_dead_parameters(transformer)
        self.transformer = transformer
        self.geometry = Geometry(
            vae.config.spatial_compression, vae.config.temporal_compression, transformer.config.patch_size
        )

    def _build_text_encoder(self):
        from kinema.text import PromptEncoder

        m = self.config.model
        if m.text_encoder_path:
            return PromptEncoder.from_pretrained(m.text_encoder_path)
        if m.pretrained and (Path(m.pretrained) / "text_encoder").is_dir():
            return PromptEncoder.from_pretrained(m.pretrained)
        return PromptEncoder.small(seed=m.init_seed, **m.text_encoder_small)

    def _check_transformer(self, transformer) -> None:
        need = self.latent_channels + self.mode.extra_channels
        have = transformer.config.in_channels
        if self.mode.any_input_channels:
            from kinema.pipelines.loading import model_type_from_channels

            try:
                model_type_from_channels(have, self.latent_channels)
            except ValueError as e:
                raise ConfigError(f"config: mode '{self.mode.name}': {e}") from None
        elif have != need:
            if self.config.model.expand_input_channels and have == self.latent_channels:
                _expand_input_channels(transformer, need)
                logger.info(
                    "widened the transformer input from %d to %d channels (zero-initialised)", have, need
                )
            else:
                hint = (
                    " (set model.expand_input_channels = true to start from a T2V model)"
                    if have == 16
                    else ""
                )
                raise ConfigError(
                    f"config: mode '{self.mode.name}' needs a transformer with in_channels={need} "
                    f"(16 latent + {self.mode.extra_channels}), the model has {have}{hint}"
                )
        text_dim = self.text_encoder.hidden_size
        if transformer.config.text_embed_dim != text_dim:
            raise ConfigError(
                f"config: the transformer takes text_embed_dim={transformer.config.text_embed_dim} but the text "
                f"encoder gives {text_dim}; set model.transformer_config.text_embed_dim or use matching models"
            )

    # ---- data ------------------------------------------------------------------------------------------
    def _build_data(self) -> None:
        c, acc = self.config, self.accelerator
        self.reward_task = None
        if not self.mode.needs_data:  # reward mode: batches of prompts (training/reward.py)
            from .reward import RewardTask, reward_mode_errors

            problem = reward_mode_errors(acc)
            if problem:
                raise ConfigError(problem)
            self.reward_task = RewardTask(self)
            return
        samples = load_metadata(metadata_path(c), c.data.root)
        usable, self.skipped_samples = probe_samples(samples)
        if acc.is_main_process and self.skipped_samples:
            logger.warning(
                "data: %d sample(s) skipped at startup (missing or unreadable)", len(self.skipped_samples)
            )
        if c.data.cache_dir and self.mode.trains == "transformer":
            self.cache = LatentCache(
                c.data.cache_dir,
                vae_fingerprint=model_fingerprint(self.vae, dataclasses.asdict(self.vae.config)),
                text_fingerprint=model_fingerprint(
                    self.text_encoder.text_model, self.text_encoder.max_length
                ),
            )
        sampling = FrameSampling(
            c.data.video_stride, c.data.start_fraction, c.data.end_fraction, c.data.random_start
        )
        options = self.mode.load_options(c)
        self.stage_data: list[tuple[BucketBatchSampler, VideoDataset]] = []
        for i, stage in enumerate(c.stages):
            chosen = _filter_samples(usable, stage)
            if not chosen:
                raise ConfigError(
                    f"config: 'stages[{i}].filter' leaves no sample ({len(usable)} usable samples in the data)"
                )
            planner = BucketPlanner(
                stage.token_budget, stage.resolutions, stage.image_resolutions, stage.max_frames,
                self.geometry, sampling, c.data.aspect_step,
            )  # fmt: skip
            sampler = BucketBatchSampler(
                chosen, planner, stage.batch_size * acc.num_processes, seed=c.seed, stage_index=i
            )
            dataset = VideoDataset(chosen, self.geometry, options, self.cache)
            self.stage_data.append((sampler, dataset))

    # ---- optimizer, schedule, prepare --------------------------------------------------------------------
    def _build_optimization(self) -> None:
        c, acc = self.config, self.accelerator
        o = c.optimizer
        trained = self.vae if self.mode.trains == "vae" else self.transformer
        params = [p for p in trained.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("config: nothing to train (no parameter requires gradients)")
        # lr = 1: the LambdaLR below returns absolute learning rates (per stage, with warmup and decay).
        optimizer = torch.optim.AdamW(
            params, lr=1.0, betas=tuple(o.betas), weight_decay=o.weight_decay, eps=o.eps
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_at)
        self._configure_sharding()
        if self.config.ema.enabled:
            self.ema = EMA(trained, c.ema.decay, c.ema.update_after_step)
        self.loss_weight = None
        if c.flow.loss_weight != "none" and self.mode.trains == "transformer":
            self.loss_weight = import_callable(c.flow.loss_weight, "flow.loss_weight")
        if self.mode.trains == "vae":
            v = c.vae_loss
            wrapper = VAETrainWrapper(self.vae, v.sample_posterior)
            disc = PatchDiscriminator3D(3, v.disc_channels, v.disc_layers)
            disc_opt = torch.optim.AdamW(disc.parameters(), lr=v.disc_lr, betas=(0.5, 0.9), weight_decay=0.0)
            self.perceptual = build_perceptual(v.perceptual)
            if isinstance(self.perceptual, torch.nn.Module):
                self.perceptual.to(acc.device)
            self.train_model, self.optimizer, self.disc, self.disc_optimizer = acc.prepare(
                wrapper, optimizer, disc, disc_opt
            )
        else:
            self.train_model, self.optimizer = acc.prepare(self.transformer, optimizer)
            self.disc = self.disc_optimizer = None
        # train.compile: the flow-matching forward through torch.compile (same module, same parameters).
        if c.train.compile:  # validate_config allows it for the flow-matching modes only
            self.compiled_forward = torch.compile(self.train_model)
        self.trained_params = params
        self.condition_input = None
        if o.condition_input_lr_multiplier != 1:
            from accelerate.utils import DistributedType

            if acc.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
                raise ConfigError(
                    "config: 'optimizer.condition_input_lr_multiplier' needs whole, unsharded weights (the "
                    "optimizer's update is rescaled in place); set it to 1 with DeepSpeed / FSDP"
                )
            self.condition_input = self.transformer.proj.weight

    @property
    def sharded(self) -> bool:
        """True when parameters are split across processes (FSDP, DeepSpeed ZeRO-3)."""
        from accelerate.utils import DistributedType

        acc = self.accelerator
        if acc.distributed_type == DistributedType.FSDP:
            return True
        if acc.distributed_type == DistributedType.DEEPSPEED:
            return acc.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage") == 3
        return False

    def _configure_sharding(self) -> None:
        from accelerate.utils import DistributedType

        acc = self.accelerator
        if acc.distributed_type == DistributedType.DEEPSPEED:
            # The trainer feeds its own bucketed batches (no prepared DataLoader), so DeepSpeed cannot infer
            # the micro-batch size; it only uses it for bookkeeping.
            ds = acc.state.deepspeed_plugin.deepspeed_config
            if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
                ds["train_micro_batch_size_per_gpu"] = self.config.stages[0].batch_size
        if self.config.ema.enabled and self.sharded:
            raise ConfigError(
                "config: 'ema.enabled' is not supported with sharded parameters (FSDP / DeepSpeed ZeRO-3): each "
                "process holds only a shard. Use DDP or ZeRO-2 for EMA runs, or disable EMA."
            )

    def lr_at(self, step: int) -> float:
        """Absolute learning rate of optimizer step ``step`` (0-based): stage lr x warmup x decay."""
        stage_index, offset = self.stage_at(step)
        stage = self.config.stages[stage_index]
        base = stage.lr if stage.lr is not None else self.config.optimizer.lr
        s = self.config.scheduler
        if offset < s.warmup_steps:
            return base * (offset + 1) / s.warmup_steps
        progress = (offset - s.warmup_steps) / max(1, stage.steps - s.warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        if s.name == "cosine":
            factor = s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        elif s.name == "linear":
            factor = 1 - (1 - s.min_lr_ratio) * progress
        else:
            factor = 1.0
        return base * factor

    def stage_at(self, step: int) -> tuple[int, int]:
        """(stage index, step within the stage) of optimizer step ``step``."""
        start = 0
        for i, stage in enumerate(self.config.stages):
            if step < start + stage.steps:
                return i, step - start
            start += stage.steps
        last = len(self.config.stages) - 1
        return last, step - (start - self.config.stages[last].steps)

    def stage_end(self, stage_index: int) -> int:
        return sum(s.steps for s in self.config.stages[: stage_index + 1])

    # ---- checkpoint hooks ----------------------------------------------------------------------------------
    def _save_hook(self, models, weights, output_dir) -> None:
        if not weights:  # DeepSpeed / FSDP wrote their own (sharded) model files
            return
        if self.accelerator.is_main_process:
            self.export_weights(Path(output_dir))
        weights.clear()  # kinema's files replace accelerate's model.safetensors

    def _load_hook(self, models, input_dir) -> None:
        from accelerate.utils import DistributedType

        if self.accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
            return
        folder = Path(input_dir)
        if self.mode.trains == "vae":
            _load_folder_weights(self.vae, folder / "vae")
            from safetensors.torch import load_file

            self.accelerator.unwrap_model(self.disc).load_state_dict(
                load_file(str(folder / "discriminator.safetensors"))
            )
        elif self.config.lora.enabled:
            from peft import set_peft_model_state_dict

            from .lora import PREFIX, load_lora

            state, _ = load_lora(folder / LORA_RAW_FILE)
            result = set_peft_model_state_dict(
                self.transformer, {k.removeprefix(PREFIX): v for k, v in state.items()}
            )
            if getattr(result, "unexpected_keys", None):
                raise ValueError(f"{folder}: LoRA keys do not match the model: {result.unexpected_keys[:3]}")
        else:
            _load_folder_weights(self.transformer, folder / "transformer")
        models.clear()

    def export_weights(
        self, folder: Path, use_ema: bool = False, final: bool = False, full_state: dict | None = None
    ) -> None:
        """Write the trained weights in kinema/diffusers format (main process only).

        ``final``: an export for use, not a checkpoint (no resume-only files). ``full_state``: the gathered
        state dict of a sharded (FSDP / ZeRO-3) model, from ``accelerator.get_state_dict``.
        """
        folder.mkdir(parents=True, exist_ok=True)
        if use_ema and self.ema is None:
            return
        if full_state is not None:
            self._export_gathered(folder, full_state)
            return
        suffix = "_ema" if use_ema else ""
        if self.mode.trains == "vae":
            vae = _with_ema(self.vae, self.ema) if use_ema else self.vae
            vae.save_pretrained(folder / f"vae{suffix}")
            if not use_ema:
                from safetensors.torch import save_file

                from kinema.models.modeling_utils import _write_atomic

                state = {
                    k: v.detach().cpu().contiguous()
                    for k, v in self.accelerator.unwrap_model(self.disc).state_dict().items()
                }
                _write_atomic(folder / "discriminator.safetensors", lambda tmp: save_file(state, tmp))
        elif self.config.lora.enabled:
            from .lora import lora_state_dict, save_lora

            state = lora_state_dict(self.transformer)
            if use_ema:
                shadow = {k.replace(".default.", "."): v for k, v in self.ema.shadow.items()}
                # Frozen (never trained) LoRA weights have no EMA: they keep their value.
                state = {k: shadow.get(k.removeprefix("transformer."), v).clone() for k, v in state.items()}
            # The user-facing file folds alpha/rank into lora_B, so every loader (with or without the
            # metadata) builds the same model; checkpoints also keep the raw adapter for an exact resume.
            save_lora(folder / f"lora{suffix}.safetensors", state, self.config.lora, fold_alpha=True)
            if not final and not use_ema:
                save_lora(folder / LORA_RAW_FILE, state, self.config.lora)
        else:
            model = _with_ema(self.transformer, self.ema) if use_ema else self.transformer
            model.save_pretrained(folder / f"transformer{suffix}")

    def _export_gathered(self, folder: Path, state: dict) -> None:
        """Export from a gathered full state dict (sharded runs). Keys are those of the prepared module."""
        state = {k.removeprefix("module."): v.detach().cpu() for k, v in state.items()}
        if self.mode.trains == "vae":
            vae_state = {k.removeprefix("vae."): v for k, v in state.items()}
            fresh = type(self.vae)(self.vae.config)
            fresh.load_state_dict(vae_state)
            fresh.save_pretrained(folder / "vae")
        elif self.config.lora.enabled:
            from .lora import PREFIX, save_lora

            lora = {PREFIX + k.replace(".default.", "."): v for k, v in state.items() if ".lora_" in k}
            save_lora(folder / "lora.safetensors", lora, self.config.lora, fold_alpha=True)
        else:
            fresh = type(self.transformer)(self.transformer.config)
            fresh.load_state_dict(state)
            fresh.save_pretrained(folder / "transformer")

    def _maybe_resume(self) -> None:
        resume = self.config.checkpoint.resume
        if not resume:
            return
        folder = ckpt.latest_checkpoint(self.output_dir) if resume == "latest" else Path(resume)
        if folder is None:
            logger.info("no checkpoint in %s: starting fresh", self.output_dir)
            return
        self.accelerator.load_state(str(folder))
        logger.info("resumed from %s at step %d", folder, self.state.step)

    def save_checkpoint(self) -> Path:
        return ckpt.save_checkpoint(
            self.accelerator, self.output_dir, self.state.step, self.config.checkpoint.keep_last
        )

    # =========================================================================================== the step
    def _text_embeddings(self, texts: list[str]) -> torch.Tensor:
        device = self.accelerator.device
        out: list[torch.Tensor | None] = [None] * len(texts)
        if self.cache is not None:
            keys = [self.cache.text_key(t) for t in texts]
            for i, key in enumerate(keys):
                hit = self.cache.get(key)
                out[i] = None if hit is None else hit["embeds"]
        missing = [i for i, e in enumerate(out) if e is None]
        if missing:
            embeds, _ = self.text_encoder.encode([texts[i] for i in missing], device=device)
            for j, i in enumerate(missing):
                out[i] = embeds[j]
                if self.cache is not None:
                    self.cache.put(keys[i], {"embeds": embeds[j]})
        return torch.stack([e.to(device=device, dtype=torch.float32) for e in out])

    def _empty_embedding(self) -> torch.Tensor:
        if not hasattr(self, "_empty"):
            self._empty = self._text_embeddings([""])[0]
        return self._empty

    def _moments(self, batch, pixels_key: str, cached_key: str, key_key: str) -> torch.Tensor:
        """VAE posterior moments (B, 2C, f, h, w) fp32 from the cache or by encoding; zeros for failed samples."""
        device = self.accelerator.device
        plan = batch["plan"]
        g = self.geometry
        b = len(batch["requests"])
        shape = (b, 2 * self.latent_channels, g.latent_frames(plan.frames),
                 plan.height // g.vae_spatial, plan.width // g.vae_spatial)  # fmt: skip
        out = torch.zeros(shape, device=device)
        cached = batch[cached_key]
        for i, moments in enumerate(cached):
            if moments is not None:
                out[i] = moments.to(device)
        todo = [i for i, has in enumerate(batch[f"has_{pixels_key}"]) if has and cached[i] is None]
        if todo:
            pixels = batch[pixels_key][todo].to(device=device, dtype=self.vae.dtype)
            with torch.no_grad():
                posterior = self.vae.encode(pixels)
            moments = torch.cat([posterior.mean, posterior.logvar], dim=1).float()
            for j, i in enumerate(todo):
                out[i] = moments[j]
                key = batch[key_key][i]
                if self.cache is not None and key is not None:
                    self.cache.put(key, {"moments": moments[j], "valid_frames": batch["valid_frames"][i]})
        return out

    def _encode_mode(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.vae.encode(pixels.to(self.vae.dtype)).mean.float() * self.scaling_factor

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch (this process's share) and per-batch statistics."""
        if self.mode.trains == "vae":
            return self._vae_loss(batch)
        if self.reward_task is not None:
            return self.reward_task.loss(batch, self.state.micro_step)
        c, device = self.config, self.accelerator.device
        rand = SampleRandom(c.seed, self.state.micro_step, [r.slot for r in batch["requests"]])
        with torch.no_grad():
            moments = self._moments(batch, "pixels", "cached_latents", "latent_key")
            mean, logvar = moments.chunk(2, dim=1)
            eps = rand.randn("posterior", tuple(mean.shape[1:]), device=device)
            latents = (mean + torch.exp(0.5 * logvar) * eps) * self.scaling_factor
            text = self._text_embeddings(batch["texts"])
            drop = rand.rand("text_dropout", ()) < c.flow.text_dropout
            text = torch.where(drop.to(device).view(-1, 1, 1), self._empty_embedding().expand_as(text), text)
            if batch["pixels"] is not None:
                batch["pixels"] = batch["pixels"].to(device)
            tcfg = getattr(self.transformer, "config", None)  # camera extensions (VideoTransformerConfig)
            ctx = StepContext(
                batch=batch, rand=rand, latents=latents, latent_mean=mean * self.scaling_factor,
                encode_mode=self._encode_mode,
                control_latents=lambda: self._moments(batch, "control_pixels", "cached_control", "control_key")
                .chunk(2, dim=1)[0] * self.scaling_factor,
                scaling_factor=self.scaling_factor, config=c,
                camera_rope_depth=getattr(tcfg, "camera_rope_depth", None),
                camera_noise_warp_depth=getattr(tcfg, "camera_noise_warp_depth", None),
            )  # fmt: skip
            cond = self.mode.conditioning(ctx)
            sigmas = sample_sigmas(rand, c.flow).to(device)
            noise = self.mode.noise(ctx).to(device)
            x_t, target = noisy_latents(latents, noise, sigmas)
        forward = self.train_model if self.compiled_forward is None else self.compiled_forward
        pred = forward(x_t, sigmas * 1000, text, **cond)
        frame_mask = latent_frame_mask(batch["valid_frames"], latents.shape[2], self.geometry.vae_temporal)
        element_weight = self.loss_weight(batch, tuple(latents.shape)) if self.loss_weight else None
        loss, _ = masked_mse(pred, target, frame_mask, batch["weights"], element_weight)
        stats = {"text_dropped": float(drop.float().sum()), "sigma_mean": float(sigmas.mean()), **ctx.stats}
        return loss, stats

    def _disc_active(self) -> bool:
        start = self.config.vae_loss.disc_start
        return start >= 0 and self.state.step >= start

    def _vae_loss(self, batch):
        c, device = self.config, self.accelerator.device
        rand = SampleRandom(c.seed, self.state.micro_step, [r.slot for r in batch["requests"]])
        pixels = batch["pixels"].to(device)
        plan, g = batch["plan"], self.geometry
        latent_shape = (self.latent_channels, g.latent_frames(plan.frames), plan.height // g.vae_spatial,
                        plan.width // g.vae_spatial)  # fmt: skip
        noise = rand.randn("posterior", latent_shape, device=device)
        recon, mean, logvar = self.train_model(pixels, noise)
        frame_mask = (torch.arange(plan.frames)[None] < batch["valid_frames"][:, None]).float()
        losses = reconstruction_losses(
            pixels, recon, mean, logvar, frame_mask, batch["weights"], c.vae_loss, self.perceptual
        )
        total = losses["total"]
        stats = {k: float(v.detach()) for k, v in losses.items() if k != "total"}
        if self._disc_active():
            disc = self.accelerator.unwrap_model(self.disc)
            disc.requires_grad_(False)  # the generator's adversarial term must not train D
            g_adv = -disc(recon.float()).mean()
            disc.requires_grad_(True)
            total = total + c.vae_loss.disc_weight * g_adv
            stats["g_adv"] = float(g_adv.detach())
        self._vae_pair = (pixels, recon.detach())
        return total, stats

    def _disc_backward(self) -> float:
        pixels, recon = self._vae_pair
        logits = self.disc(torch.cat([pixels.float(), recon.float()]))
        real, fake = logits.chunk(2)
        d_loss = hinge_d_loss(real, fake)
        self.accelerator.backward(d_loss)
        return float(d_loss.detach())

    # =========================================================================================== the loop
    def _loader(self, stage_index: int) -> DataLoader:
        acc = self.accelerator
        if self.reward_task is not None:
            state = self.state
            return self.reward_task.batches(stage_index, state.epoch, state.batch, acc.process_index,
                                            acc.num_processes)  # fmt: skip
        sampler, dataset = self.stage_data[stage_index]
        batches = _Batches(sampler, self.state.epoch, self.state.batch, acc.process_index, acc.num_processes)
        return DataLoader(
            dataset,
            batch_sampler=batches,
            collate_fn=collate_samples,
            num_workers=self.config.data.num_workers,
        )

    def train(self) -> TrainResult:
        self.setup()
        c, acc, state = self.config, self.accelerator, self.state
        total = c.total_steps
        result = TrainResult(
            steps=state.step, skipped_samples=len(self.skipped_samples), output_dir=str(self.output_dir)
        )
        if self.reward_task is not None and state.step == 0:
            result.eval_start = self.evaluate_reward()
        bar = _progress_bar(total, state.step, enabled=acc.is_main_process and c.logging.progress_bar)
        window_start, window_steps = time.perf_counter(), 0
        loss_sum = torch.zeros((), device=acc.device)
        micro_in_step, extra_stats = 0, {}
        while state.step < total:
            stage_index, _ = self.stage_at(state.step)
            if stage_index != state.stage:
                state.stage, state.epoch, state.batch = stage_index, 0, 0
            end = min(self.stage_end(stage_index), total)
            for batch in self._loader(stage_index):
                first = batch["requests"][0]
                if batch["errors"]:
                    state.data_errors += len(batch["errors"])
                    logger.warning("data: skipped %s", "; ".join(f"{p} ({e})" for p, e in batch["errors"]))
                models = (self.train_model, self.disc) if self.disc is not None else (self.train_model,)
                with acc.accumulate(*models):
                    loss, stats = self.compute_loss(batch)
                    acc.backward(loss)
                    if self.disc is not None and self._disc_active():
                        stats["d_loss"] = self._disc_backward()
                    loss_sum += loss.detach().float()
                    micro_in_step += 1
                    for k, v in stats.items():
                        extra_stats[k] = extra_stats.get(k, 0.0) + v
                    state.micro_step += 1
                    state.epoch, state.batch = first.epoch, first.batch_index + 1
                    if acc.sync_gradients:
                        step_loss, grad_norm, ok = self._optimizer_step(loss_sum / micro_in_step)
                        result.losses.append(step_loss if ok else float("nan"))
                        loss_sum.zero_()
                        micro_in_step = 0
                        window_steps += 1
                        if acc.is_main_process and state.step % c.logging.every_steps == 0:
                            elapsed = time.perf_counter() - window_start
                            micro = c.train.gradient_accumulation_steps
                            per_micro = {k: v / micro for k, v in extra_stats.items()}  # micro-batch means
                            self._log(
                                step_loss, grad_norm, per_micro, window_steps / max(elapsed, 1e-9), batch
                            )
                            window_start, window_steps = time.perf_counter(), 0
                        extra_stats = {}
                        if bar is not None:
                            bar.update(1)
                            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{self.lr_at(state.step - 1):.2e}")
                        self._after_step()
                        if state.step >= end:
                            break
        if bar is not None:
            bar.close()
        if self.reward_task is not None:
            result.eval_end = self.evaluate_reward()
        self.save_checkpoint()
        # Sharded runs: gather the full weights first (a collective: every process takes part).
        full_state = self.accelerator.get_state_dict(self.train_model) if self.sharded else None
        if acc.is_main_process:
            self.export_weights(self.output_dir / "final", final=True, full_state=full_state)
            self.export_weights(self.output_dir / "final", use_ema=True, final=True)
        self.metrics.close()
        result.steps = state.step
        result.nonfinite_steps = state.nonfinite_steps
        result.data_errors = state.data_errors
        return result

    def _optimizer_step(self, mean_loss: torch.Tensor) -> tuple[float, float, bool]:
        """Clip, check, step (or skip). Returns (loss averaged over processes, grad norm, stepped?)."""
        acc, c, state = self.accelerator, self.config, self.state
        step_loss = float(acc.reduce(mean_loss.detach().clone(), reduction="mean"))
        if self.reward_task is not None:  # reward mode bypasses DDP's hooks (many model calls per backward)
            from .reward import average_gradients

            average_gradients(acc, self.trained_params)
        max_norm = c.train.max_grad_norm if c.train.max_grad_norm > 0 else float("inf")
        # The norm is computed from the gradients after the all-reduce, so every process takes the same
        # decision; non-finite losses make non-finite gradients, so one check covers both.
        norm = acc.clip_grad_norm_(self.trained_params, max_norm)
        grad_norm = float(norm) if norm is not None else float("nan")
        finite = math.isfinite(grad_norm) if norm is not None else math.isfinite(step_loss)
        if finite:
            before = (
                None
                if self.condition_input is None
                else self.condition_input[:, self.latent_channels :].detach().clone()
            )
            self.optimizer.step()
            if before is not None:
                self._scale_condition_update(before)
            if self.disc_optimizer is not None and self._disc_active():
                acc.clip_grad_norm_(self.disc.parameters(), max_norm)
                self.disc_optimizer.step()
            if self.ema is not None:
                self.ema.update(self.vae if self.mode.trains == "vae" else self.transformer, state.step)
            state.nonfinite_streak = 0
        else:
            state.nonfinite_steps += 1
            state.nonfinite_streak += 1
            if acc.is_main_process:
                logger.warning("step %d: non-finite loss/gradients (loss %s, grad norm %s): skipped",
                               state.step, step_loss, grad_norm)  # fmt: skip
        self.optimizer.zero_grad(set_to_none=True)
        if self.disc_optimizer is not None:
            self.disc_optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        state.step += 1
        if state.nonfinite_streak >= c.train.max_nonfinite_steps:
            path = self.save_checkpoint()
            raise TrainingAborted(
                f"{state.nonfinite_streak} non-finite steps in a row (step {state.step}); last good weights "
                f"saved in {path}. Lower the learning rate or check the data."
            )
        return step_loss, grad_norm, finite

    @torch.no_grad()
    def _scale_condition_update(self, before: torch.Tensor) -> None:
        """Multiply this step's update of the conditioning input channels (``proj`` input channels after the
        16 latent ones; ``before`` = their values before the step) by ``optimizer.condition_input_lr_multiplier``."""
        new = self.condition_input[:, self.latent_channels :]
        new += (self.config.optimizer.condition_input_lr_multiplier - 1) * (new - before)

    def _log(self, loss: float, grad_norm: float, stats: dict, steps_per_s: float, batch) -> None:
        s = self.state
        plan = batch["plan"]
        values = {
            "loss": loss,
            "lr": self.lr_at(s.step - 1),
            "grad_norm": grad_norm,
            "steps_per_s": steps_per_s,
            "stage": s.stage,
            "nonfinite_steps": s.nonfinite_steps,
            "data_errors": s.data_errors,
            **stats,
        }
        if plan is not None:
            values["tokens_per_sample"] = self.geometry.tokens(plan.height, plan.width, plan.frames)
        if self.cache is not None:
            values.update(cache_hits=self.cache.hits, cache_misses=self.cache.misses)
        self.metrics.log(s.step, values)

    def evaluate_reward(self) -> dict[str, float]:
        """Reward mode: the mean reward on ``reward.eval_prompts``, logged at the current step (main process)."""
        if self.reward_task is None or not self.reward_task.eval_prompts:
            return {}
        values = self.reward_task.evaluate() if self.accelerator.is_main_process else {}
        if values:
            self.metrics.log(self.state.step, values)
            logger.info("step %d: %s", self.state.step, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
        self.accelerator.wait_for_everyone()
        return values

    def _after_step(self) -> None:
        c, s = self.config, self.state
        every = c.reward.eval_every_steps if self.reward_task is not None else 0
        if every and s.step % every == 0 and s.step < c.total_steps:
            self.evaluate_reward()
        if c.sample.every_steps and s.step % c.sample.every_steps == 0 and self.mode.trains == "transformer":
            self.sample_videos()
        if c.checkpoint.every_steps and s.step % c.checkpoint.every_steps == 0 and s.step < c.total_steps:
            self.save_checkpoint()

    def sample_videos(self) -> list[Path]:
        """Preview videos for ``sample.prompts`` (main process; other processes wait)."""
        from accelerate.utils import DistributedType

        acc, c = self.accelerator, self.config
        if acc.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
            logger.warning("sample.every_steps: previews are skipped with sharded (DeepSpeed/FSDP) models")
            return []
        written = []
        if acc.is_main_process:
            from kinema.videoio import write_video

            from .sampling import preview_video

            s = c.sample
            first = c.stages[0]
            size = s.height or _square_size(first, self.geometry)
            width = s.width or size
            frames = (
                s.frames
                or self.geometry.frames_for_budget(size, width, first.token_budget, first.max_frames)
                or 1
            )
            for i, prompt in enumerate(s.prompts):
                video = preview_video(
                    self.transformer, self.vae, self.text_encoder, prompt, height=size, width=width,
                    frames=frames, steps=s.steps, guidance=s.guidance, seed=s.seed + i, device=acc.device,
                )  # fmt: skip
                path = self.output_dir / "samples" / f"step-{self.state.step:06d}-{i}.mp4"
                path.parent.mkdir(parents=True, exist_ok=True)
                written.append(write_video(path, video, fps=s.fps))
        acc.wait_for_everyone()
        return written


# ---- helpers ----------------------------------------------------------------------------------------------


def _filter_samples(samples: list[Sample], stage: StageConfig) -> list[Sample]:
    f = stage.filter
    chosen = [
        s
        for s in samples
        if s.type in f.types
        and min(s.height or 0, s.width or 0) >= f.min_short_side
        and (s.is_image or (s.num_frames or 0) >= f.min_frames)
    ]
    return chosen[: f.max_samples] if f.max_samples else chosen


def _square_size(stage: StageConfig, geometry: Geometry) -> int:
    """The largest of the stage's resolutions whose single frame fits its budget (preview size)."""
    for r in sorted(stage.resolutions, reverse=True):
        if geometry.tokens(r, r, 1) <= stage.token_budget:
            return r
    return min(stage.resolutions)


def _freeze_dead_parameters(transformer) -> list[str]:
    """Freeze parameters that cannot get a gradient: the last block's text out-projection and text FFN.

    The DiT's output is read from the video tokens only, so the text stream after the last attention is
    discarded (in diffusers' model too). DDP would otherwise wait forever for their gradients (or need
    ``find_unused_parameters``, a graph walk every step); freezing them changes nothing else.
    """
    last = len(transformer.transformer_blocks) - 1
    prefixes = (f"transformer_blocks.{last}.attn1.to_add_out.", f"transformer_blocks.{last}.txt_ff.")
    frozen = []
    for name, p in transformer.named_parameters():
        if name.startswith(prefixes) and p.requires_grad:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def _expand_input_channels(transformer, channels: int) -> None:
    old = transformer.proj
    new = torch.nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride).to(old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    transformer.proj = new
    transformer.config.in_channels = channels


def _load_folder_weights(module: torch.nn.Module, folder: Path) -> None:
    from safetensors.torch import load_file

    from kinema.models.modeling_utils import weight_files

    expected = set(module.state_dict())
    seen: set[str] = set()
    for file in weight_files(folder):
        shard = load_file(str(file))
        unexpected = set(shard) - expected
        if unexpected:
            raise ValueError(f"{file}: keys not in the model: {sorted(unexpected)[:3]}")
        module.load_state_dict(shard, strict=False)
        seen |= set(shard)
    missing = expected - seen
    if missing:
        raise ValueError(
            f"{folder}: checkpoint misses {len(missing)} parameter(s), e.g. {sorted(missing)[:3]}"
        )


def _with_ema(model: torch.nn.Module, ema: EMA):
    """A copy of ``model`` with the EMA weights."""
    import copy

    clone = copy.deepcopy(model)
    ema.copy_to(clone)
    return clone


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)
