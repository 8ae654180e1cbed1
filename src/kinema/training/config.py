"""Training configuration: one TOML (or JSON) file, parsed into dataclasses and checked field by field.

TOML is the primary format (stdlib ``tomllib``, comments allowed); a ``.json`` file with the same layout
works too. Every section is a dataclass below; an unknown key, a value of the wrong type or an invalid
choice raises :class:`ConfigError` (a ``ValueError``) naming the dotted field (``stages[1].batch_size``),
before any model or data is loaded. Relative paths are resolved against the current working directory.

A run is a list of ``[[stages]]`` trained one after another (EasyAnimate's token-length stages): each has
its own token budget, resolutions, data filter, batch size, number of steps and learning rate.
See docs/training.md for every field.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

MODES = ("t2v", "i2v", "control", "camera", "vae", "reward")
TIMESTEP_DENSITIES = ("uniform", "logit_normal", "mode")
LR_SCHEDULES = ("constant", "cosine", "linear")
MIXED_PRECISION = ("no", "bf16", "fp16")
MASK_KINDS = ("full", "first_frame", "first_last", "first_span", "span", "box", "random_box", "random")
SAMPLE_TYPES = ("video", "image")
REWARD_METHODS = ("draft", "drtune")
REWARD_STRATEGIES = ("last", "tail", "uniform", "random", "list")
SHAPES_SPLITS = ("", "train", "held_out", "all")


class ConfigError(ValueError):
    """A training config is invalid; the message names the field."""


# ---- sections ------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    # A diffusers-format pipeline folder (transformer/, vae/, text_encoder/, tokenizer/); any part can be
    # replaced by the *_path fields, or built fresh (random weights) from the *_config tables below.
    pretrained: str | None = None
    transformer_path: str | None = None
    vae_path: str | None = None
    text_encoder_path: str | None = None
    transformer_config: dict[str, Any] = field(default_factory=dict)  # VideoTransformerConfig keys
    vae_config: dict[str, Any] = field(default_factory=dict)  # VideoVAEConfig keys
    text_encoder_small: dict[str, Any] = field(default_factory=dict)  # PromptEncoder.small() arguments
    # Training I2V/Control from a T2V checkpoint: widen the patch embedding with zero-initialised input
    # channels so the start model behaves exactly like the T2V one.
    expand_input_channels: bool = False
    # Camera models: turn on (or change) the transformer's camera-aware RoPE (VideoTransformerConfig.
    # camera_rope_depth, a kinema extension) on a loaded checkpoint; saved with the trained weights.
    camera_rope_depth: float | None = None
    # Camera models: train on noise warped along the camera at this plane depth (control.noise_warp; saved
    # as the transformer's camera_noise_warp_depth, so the pipeline warps its initial noise the same way).
    camera_noise_warp_depth: float | None = None
    init_seed: int = 0  # seed for randomly initialised parts


@dataclass
class FilterConfig:
    """Which samples a stage trains on (e.g. EasyAnimate's "720P and above" stages)."""

    types: list[str] = field(default_factory=lambda: list(SAMPLE_TYPES))
    min_short_side: int = 0  # pixels, of the source
    min_frames: int = 0  # source frames (videos only)
    max_samples: int = 0  # 0 = all


@dataclass
class StageConfig:
    name: str = ""
    token_budget: int = 3328  # transformer tokens per sample: 3328 ~ 256x256x49, 13312 ~ 512x512x49
    # Square-equivalent sizes (px) a sample may be trained at; each is turned into aspect buckets of that
    # area. A video gets one of them at random each epoch and as many frames as the budget allows.
    resolutions: list[int] = field(default_factory=lambda: [256])
    image_resolutions: list[int] = field(default_factory=list)  # default: the largest of `resolutions`
    max_frames: int = 49
    batch_size: int = 1  # per process
    steps: int = 100  # optimizer steps in this stage
    lr: float | None = None  # default: optimizer.lr
    filter: FilterConfig = field(default_factory=FilterConfig)


@dataclass
class DataConfig:
    root: str = ""
    metadata: str = "metadata.jsonl"  # relative to root; .json, .jsonl or .csv
    video_stride: int = 1  # take every n-th source frame
    start_fraction: float = 0.0  # ignore the first/last part of each clip (titles, fades)
    end_fraction: float = 1.0
    random_start: bool = True  # random clip start inside the usable range (False: the start of it)
    num_workers: int = 0
    cache_dir: str | None = None  # safetensors cache of VAE latents and text embeddings
    aspect_step: int = 16  # pixel step of the aspect buckets (a multiple of 16 for V5.1 models)


@dataclass
class FlowConfig:
    timestep_density: str = "logit_normal"  # uniform | logit_normal | mode  (SD3's densities)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    shift: float = 1.0  # sigma -> shift*sigma / (1 + (shift-1)*sigma); 1 = none
    text_dropout: float = 0.1  # prompt replaced by the empty prompt's embedding (for CFG)
    # "package.module:callable": callable(batch, latent_shape) -> per-element loss weights broadcastable to
    # (B, C, F, h, w), or None for plain MSE; e.g. ShapesWorld's object-region emphasis.
    loss_weight: str = "none"


@dataclass
class InpaintConfig:
    """I2V (InP) training: random masks, 1 = generate, 0 = keep."""

    mask_probabilities: dict[str, float] = field(
        default_factory=lambda: {
            "full": 0.1,
            "first_frame": 0.45,
            "first_last": 0.1,
            "first_span": 0.1,
            "span": 0.05,
            "box": 0.05,
            "random_box": 0.1,
            "random": 0.05,
        }
    )
    # Noise added to the kept pixels before VAE encoding: sigma = exp(N(mean, std)) per sample
    # (EasyAnimate's training recipe; inference uses the fixed 0.0563 ~ exp(-2.88)), or a fixed sigma.
    noise_aug_log_mean: float = -3.0
    noise_aug_log_std: float = 0.5
    noise_aug_fixed: float | None = None


@dataclass
class ControlConfig:
    control_dropout: float = 0.1  # control latents zeroed (the model also learns without control)
    reference_dropout: float = 0.5  # reference latents zeroed (most control runs have no reference)
    pose_height: int = 720  # size of the video the pose files describe (for the aspect fix)
    pose_width: int = 1280


@dataclass
class VAELossConfig:
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    kl_weight: float = 1e-6  # on KL summed over latent elements, averaged over the batch (LDM convention)
    perceptual: str = "none"  # none | random_conv | "package.module:callable" (callable(x, x_hat) -> loss)
    perceptual_weight: float = 0.1
    disc_start: int = -1  # optimizer step at which the discriminator starts; -1 = never
    disc_weight: float = 0.1
    disc_lr: float = 1e-4
    disc_channels: int = 32
    disc_layers: int = 3
    sample_posterior: bool = True
    # false: decoder-only fine-tuning (encoder + quant_conv frozen), so the latent space - and any
    # transformer already trained on it - stays valid while reconstructions improve.
    train_encoder: bool = True


@dataclass
class LoRAConfig:
    enabled: bool = False
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    # Module name suffixes (peft style); default: every attention projection of both streams.
    target_modules: list[str] = field(
        default_factory=lambda: [
            "to_q",
            "to_k",
            "to_v",
            "to_out.0",
            "add_q_proj",
            "add_k_proj",
            "add_v_proj",
            "to_add_out",
        ]
    )


@dataclass
class EMAConfig:
    enabled: bool = False
    decay: float = 0.999
    update_after_step: int = 0


@dataclass
class OptimizerConfig:
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    eps: float = 1e-8
    # Scales the optimizer's update of the transformer's conditioning input channels (``proj`` weights of the
    # mask / masked-video / control / Plücker channels that a T2V model gains when it is widened). Adam moves
    # every weight by about lr per step, so zero-initialised new channels grow too slowly to matter within a
    # short fine-tune; the latent channels keep the normal rate. 1 = off. Not with DeepSpeed / FSDP.
    condition_input_lr_multiplier: float = 1.0


@dataclass
class SchedulerConfig:
    name: str = "constant"  # constant | cosine | linear (decay within each stage, after warmup)
    warmup_steps: int = 0  # linear warmup at the start of every stage
    min_lr_ratio: float = 0.0


@dataclass
class TrainConfig:
    mixed_precision: str = "no"  # no | bf16 (autocast; fp16 only on GPUs)
    gradient_checkpointing: bool = False
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0  # 0 = no clipping
    max_nonfinite_steps: int = 5  # abort (after saving a checkpoint) after this many bad steps in a row
    train_text_encoder: bool = False  # not supported yet; kept explicit so configs fail loudly
    cpu_threads: int = 0  # torch.set_num_threads on CPU runs (0 = torch's default); tiny models: use 1
    # torch.compile the transformer's forward (inductor), compiled once per batch shape (~70 s for the
    # ShapesWorld transformer on CPU). 1.25x on its bare step, no gain yet in a real CPU run
    # (docs/benchmarks-training.md).
    compile: bool = False


@dataclass
class CheckpointConfig:
    every_steps: int = 500  # 0 = only at the end
    keep_last: int = 3
    resume: str = ""  # "" = fresh run, "latest" = newest checkpoint in output_dir (if any), or a folder


@dataclass
class LoggingConfig:
    every_steps: int = 1
    tensorboard: str = "auto"  # auto (if the tensorboard package is installed) | on | off
    progress_bar: bool = True


@dataclass
class SampleConfig:
    every_steps: int = 0  # 0 = never
    prompts: list[str] = field(default_factory=list)
    steps: int = 20
    guidance: float = 6.0
    height: int = 0  # 0 = the first stage's square bucket
    width: int = 0
    frames: int = 0
    fps: int = 8
    seed: int = 42


@dataclass
class RewardTermConfig:
    """One reward term: a registered name (kinema.rewards.REWARDS) or "package.module:callable"."""

    # brightness | shapes_color | shapes_motion | shapes_shape | shapes | pickscore | aesthetic | hpsv2.1 | mps | "module:callable"
    name: str = "shapes"
    weight: float = 1.0
    path: str = ""  # local weight folder (pickscore, aesthetic, hpsv2.1, mps); nothing is ever downloaded
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the reward


@dataclass
class RewardConfig:
    """Reward backpropagation (mode = "reward"): DRaFT-K / DRTune over sampled trajectories."""

    prompts: list[str] = field(default_factory=list)
    prompt_file: str = ""  # .txt (one per line), .jsonl / .json (strings or objects with "text")
    shapes_prompts: str = ""  # "" | train | held_out | all: generated ShapesWorld prompts of that split
    shapes_languages: list[str] = field(default_factory=lambda: ["en"])
    shapes_paths: list[str] = field(default_factory=lambda: ["straight"])
    negative_prompt: str = ""
    rewards: list[RewardTermConfig] = field(default_factory=lambda: [RewardTermConfig()])
    height: int = 64
    width: int = 64
    frames: int = 17
    steps: int = 20  # sampling steps of each trajectory
    guidance: float = 6.0  # CFG scale during sampling; <= 1 disables CFG
    method: str = "draft"  # draft (DRaFT-K: full chain) | drtune (model inputs detached)
    strategy: str = "tail"  # last | tail | uniform | random | list
    backprop_steps: int = 10  # K (tail / uniform / random)
    # strategy "list": step indices (0 = first; negative counts from the end)
    step_list: list[int] = field(default_factory=list)
    step_range: list[int] = field(default_factory=list)  # [start, end) for uniform / random; [] = all steps
    checkpoint_steps: bool = True  # recompute each chosen step's transformer call in the backward pass
    # latent frames decoded for the reward (the decoder runs up to the last one); [] = all
    decode_latent_frames: list[int] = field(default_factory=list)
    decode_checkpointing: bool = True  # recompute each latent frame's VAE decode in the backward pass
    eval_every_steps: int = 0  # 0 = never; also evaluated before the first and after the last step
    eval_prompts: list[str] = field(default_factory=list)
    eval_shapes_prompts: str = ""  # e.g. "held_out"
    eval_max_prompts: int = 16  # 0 = all
    eval_seed: int = 1234


@dataclass
class RunConfig:
    mode: str = "t2v"  # t2v | i2v | control | camera | vae | reward
    output_dir: str = "runs/kinema"
    seed: int = 42
    max_steps: int = 0  # 0 = the sum of the stages' steps
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    inpaint: InpaintConfig = field(default_factory=InpaintConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    vae_loss: VAELossConfig = field(default_factory=VAELossConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    @property
    def total_steps(self) -> int:
        total = sum(s.steps for s in self.stages)
        return min(total, self.max_steps) if self.max_steps else total

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- parsing -------------------------------------------------------------------------------------------


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a TOML/JSON config; ``overrides`` maps dotted keys to values (``"train.seed"``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config '{path}' does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {e}") from e
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return config_from_dict(data, source=str(path))


def config_from_dict(data: dict[str, Any], source: str = "config") -> RunConfig:
    if isinstance(data, dict) and data.get("mode") == "reward":
        # Reward post-training trains a LoRA unless the config says otherwise (V5.1's recipe).
        lora = data.get("lora")
        if lora is None or (isinstance(lora, dict) and "enabled" not in lora):
            data = {**data, "lora": {**(lora or {}), "enabled": True}}
    config = _build(RunConfig, data, prefix="", source=source)
    validate_config(config, source)
    return config


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``a.b.c = v``; a number after an array of tables indexes it (``reward.rewards.1.weight``, ``stages.0.lr``)."""
    *parents, last = dotted.split(".")
    node: Any = data
    path: list[str] = []
    for key in [*parents, last]:
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(
                    f"--set {dotted}: '{'.'.join(path)}' is a list of {len(node)}; "
                    f"use an index 0..{len(node) - 1} after it"
                )
            key = int(key)
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{'.'.join(path)}' is a value, not a table")
        if len(path) == len(parents):
            node[key] = value
            return
        node = node[key] if isinstance(node, list) else node.setdefault(key, {})
        path.append(str(key))


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{where}' must be a table/object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, names, n=1)
        hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
        raise ConfigError(f"{source}: unknown key '{prefix}{key}'{hint}")
    kwargs = {
        name: _convert(hints[name], data[name], f"{prefix}{name}", source) for name in names if name in data
    }
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, name: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, name, source)
            except ConfigError as e:
                errors.append(e)
        raise (
            errors[0]
            if len(errors) == 1
            else ConfigError(
                f"{source}: '{name}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}"
            )
        )
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, prefix=f"{name}.", source=source)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{name}' must be a list, got {type(value).__name__} {value!r}")
        (item_type,) = typing.get_args(tp)
        return [_convert(item_type, v, f"{name}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{name}' must be a table/object, got {type(value).__name__}")
        _, value_type = typing.get_args(tp)
        return {k: _convert(value_type, v, f"{name}.{k}", source) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{name}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{name}' must be an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: '{name}' must be a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{source}: '{name}' must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{name}' must be a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{source}: '{name}': unsupported field type {_type_name(tp)}")


# ---- semantic checks -----------------------------------------------------------------------------------


def _check(ok: bool, source: str, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{source}: '{name}' {message}")


def _check_choice(value: str, choices: tuple[str, ...], source: str, name: str) -> None:
    _check(value in choices, source, name, f"is {value!r}; choose one of {', '.join(choices)}")


def _check_probability(value: float, source: str, name: str) -> None:
    _check(0.0 <= value <= 1.0, source, name, f"must be in [0, 1], got {value}")


def validate_config(c: RunConfig, source: str = "config") -> None:
    """Value checks that need no files (paths are checked by :func:`check_paths`)."""
    _check_choice(c.mode, MODES, source, "mode")
    _check(bool(c.output_dir), source, "output_dir", "must not be empty")
    _check(c.max_steps >= 0, source, "max_steps", "must be >= 0")
    _check(len(c.stages) > 0, source, "stages", "needs at least one [[stages]] entry")
    for i, s in enumerate(c.stages):
        n = f"stages[{i}]"
        _check(s.token_budget >= 1, source, f"{n}.token_budget", f"must be >= 1, got {s.token_budget}")
        _check(s.batch_size >= 1, source, f"{n}.batch_size", f"must be >= 1, got {s.batch_size}")
        _check(s.steps >= 1, source, f"{n}.steps", f"must be >= 1, got {s.steps}")
        _check(s.max_frames >= 1 and (s.max_frames - 1) % 4 == 0, source, f"{n}.max_frames",
               f"must be 4k+1 (1, 5, 9, ..., 49), got {s.max_frames}")  # fmt: skip
        _check(bool(s.resolutions), source, f"{n}.resolutions", "must list at least one size")
        for j, r in enumerate([*s.resolutions, *s.image_resolutions]):
            _check(
                r >= 16 and r % 16 == 0, source, f"{n}.resolutions[{j}]", f"must be a multiple of 16, got {r}"
            )
        _check(s.lr is None or s.lr > 0, source, f"{n}.lr", f"must be > 0, got {s.lr}")
        for t in s.filter.types:
            _check_choice(t, SAMPLE_TYPES, source, f"{n}.filter.types")
    d = c.data
    _check(d.video_stride >= 1, source, "data.video_stride", f"must be >= 1, got {d.video_stride}")
    _check(0.0 <= d.start_fraction < d.end_fraction <= 1.0, source, "data.start_fraction",
           f"and data.end_fraction must satisfy 0 <= start < end <= 1, got {d.start_fraction}, {d.end_fraction}")  # fmt: skip
    _check(d.num_workers >= 0, source, "data.num_workers", "must be >= 0")
    _check(
        d.aspect_step >= 16 and d.aspect_step % 16 == 0,
        source,
        "data.aspect_step",
        "must be a multiple of 16",
    )
    f = c.flow
    _check_choice(f.timestep_density, TIMESTEP_DENSITIES, source, "flow.timestep_density")
    _check(f.logit_std > 0, source, "flow.logit_std", "must be > 0")
    _check(f.shift > 0, source, "flow.shift", "must be > 0")
    _check_probability(f.text_dropout, source, "flow.text_dropout")
    probs = c.inpaint.mask_probabilities
    for kind, p in probs.items():
        _check_choice(kind, MASK_KINDS, source, "inpaint.mask_probabilities")
        _check(p >= 0, source, f"inpaint.mask_probabilities.{kind}", "must be >= 0")
    _check(sum(probs.values()) > 0, source, "inpaint.mask_probabilities", "must have a positive entry")
    _check_probability(c.control.control_dropout, source, "control.control_dropout")
    _check_probability(c.control.reference_dropout, source, "control.reference_dropout")
    t = c.train
    _check_choice(t.mixed_precision, MIXED_PRECISION, source, "train.mixed_precision")
    _check(t.gradient_accumulation_steps >= 1, source, "train.gradient_accumulation_steps", "must be >= 1")
    _check(t.max_grad_norm >= 0, source, "train.max_grad_norm", "must be >= 0")
    _check(t.max_nonfinite_steps >= 1, source, "train.max_nonfinite_steps", "must be >= 1")
    _check(t.cpu_threads >= 0, source, "train.cpu_threads", "must be >= 0")
    _check(not t.train_text_encoder, source, "train.train_text_encoder",
           "is not supported: kinema trains with a frozen text encoder")  # fmt: skip
    if t.compile:
        _check(c.mode in ("t2v", "i2v", "control", "camera"), source, "train.compile",
               f"compiles the flow-matching transformer forward (t2v / i2v / control / camera); mode "
               f"'{c.mode}' does not use it: set it to false")  # fmt: skip
    o = c.optimizer
    _check(o.lr > 0, source, "optimizer.lr", f"must be > 0, got {o.lr}")
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), source, "optimizer.betas",
           f"must be two numbers in [0, 1), got {o.betas}")  # fmt: skip
    mult = o.condition_input_lr_multiplier
    _check(mult > 0, source, "optimizer.condition_input_lr_multiplier", f"must be > 0, got {mult}")
    if mult != 1:
        _check(c.mode in ("i2v", "control", "camera") and not c.lora.enabled, source,
               "optimizer.condition_input_lr_multiplier",
               "applies to the conditioning input channels of a full-weight i2v / control / camera run; "
               "set it to 1 here")  # fmt: skip
    _check_choice(c.scheduler.name, LR_SCHEDULES, source, "scheduler.name")
    _check(c.scheduler.warmup_steps >= 0, source, "scheduler.warmup_steps", "must be >= 0")
    if c.lora.enabled:
        _check(
            c.mode != "vae", source, "lora.enabled", "LoRA trains the transformer; mode 'vae' trains the VAE"
        )
        _check(c.lora.rank >= 1, source, "lora.rank", "must be >= 1")
        _check(bool(c.lora.target_modules), source, "lora.target_modules", "must not be empty")
    _check(0 < c.ema.decay < 1, source, "ema.decay", f"must be in (0, 1), got {c.ema.decay}")
    _check(c.checkpoint.keep_last >= 1, source, "checkpoint.keep_last", "must be >= 1")
    _check(c.checkpoint.every_steps >= 0, source, "checkpoint.every_steps", "must be >= 0")
    _check_choice(c.logging.tensorboard, ("auto", "on", "off"), source, "logging.tensorboard")
    _check(c.logging.every_steps >= 1, source, "logging.every_steps", "must be >= 1")
    v = c.vae_loss
    if c.flow.loss_weight != "none":
        _check(":" in c.flow.loss_weight, source, "flow.loss_weight",
               f"is {c.flow.loss_weight!r}; use none or 'package.module:callable'")  # fmt: skip
    if v.perceptual not in ("none", "random_conv"):
        _check(":" in v.perceptual, source, "vae_loss.perceptual",
               f"is {v.perceptual!r}; use none, random_conv or 'package.module:callable'")  # fmt: skip
    if c.mode == "reward":
        validate_reward(c.reward, source)
    s = c.sample
    _check(s.every_steps >= 0, source, "sample.every_steps", "must be >= 0")
    if s.every_steps and c.mode != "vae":
        _check(bool(s.prompts), source, "sample.prompts", "must list prompts when sample.every_steps > 0")


def validate_reward(r: RewardConfig, source: str) -> None:
    from kinema.rewards.names import NEEDS_PATH, canonical_name, is_known_reward

    _check_choice(r.method, REWARD_METHODS, source, "reward.method")
    _check_choice(r.strategy, REWARD_STRATEGIES, source, "reward.strategy")
    _check(r.steps >= 1, source, "reward.steps", f"must be >= 1, got {r.steps}")
    if r.strategy in ("tail", "uniform", "random"):
        _check(1 <= r.backprop_steps <= r.steps, source, "reward.backprop_steps",
               f"must be in [1, reward.steps = {r.steps}], got {r.backprop_steps}")  # fmt: skip
    if r.strategy == "list":
        _check(bool(r.step_list), source, "reward.step_list", "must list step indices for strategy 'list'")
    for i, step in enumerate(r.step_list):
        _check(-r.steps <= step < r.steps, source, f"reward.step_list[{i}]",
               f"is {step}, outside the {r.steps} sampling steps")  # fmt: skip
    if r.step_range:
        ok = len(r.step_range) == 2 and 0 <= r.step_range[0] < r.step_range[1] <= r.steps
        _check(ok, source, "reward.step_range", f"must be [start, end) with 0 <= start < end <= {r.steps}, "
               f"got {r.step_range}")  # fmt: skip
        if r.strategy in ("uniform", "random"):
            _check(r.step_range[1] - r.step_range[0] >= r.backprop_steps, source, "reward.step_range",
                   f"holds fewer than reward.backprop_steps = {r.backprop_steps} steps")  # fmt: skip
    _check(
        r.frames >= 1 and (r.frames - 1) % 4 == 0, source, "reward.frames", f"must be 4k+1, got {r.frames}"
    )
    for name in ("height", "width"):
        value = getattr(r, name)
        _check(
            value >= 16 and value % 16 == 0,
            source,
            f"reward.{name}",
            f"must be a multiple of 16, got {value}",
        )
    _check(r.guidance >= 0, source, "reward.guidance", f"must be >= 0, got {r.guidance}")
    for i, f in enumerate(r.decode_latent_frames):
        _check(f >= 0, source, f"reward.decode_latent_frames[{i}]", f"must be >= 0, got {f}")
    _check(bool(r.rewards), source, "reward.rewards", "must list at least one reward")
    for i, term in enumerate(r.rewards):
        n = f"reward.rewards[{i}]"
        _check(is_known_reward(term.name), source, f"{n}.name",
               f"is {term.name!r}; use a built-in reward (brightness, shapes_color, shapes_motion, shapes_shape, shapes, "
               "pickscore, aesthetic, hpsv2.1, mps) or 'package.module:callable'")  # fmt: skip
        if canonical_name(term.name) in NEEDS_PATH:
            _check(
                bool(term.path), source, f"{n}.path", f"must name the local weight folder of {term.name!r}"
            )
    _check_choice(r.shapes_prompts, SHAPES_SPLITS, source, "reward.shapes_prompts")
    _check_choice(r.eval_shapes_prompts, SHAPES_SPLITS, source, "reward.eval_shapes_prompts")
    _check(bool(r.prompts or r.prompt_file or r.shapes_prompts), source, "reward.prompts",
           "must give prompts (reward.prompts, reward.prompt_file or reward.shapes_prompts)")  # fmt: skip
    from kinema.shapes.prompts import LANGUAGES
    from kinema.shapes.spec import PATHS

    for i, lang in enumerate(r.shapes_languages):
        _check_choice(lang, tuple(LANGUAGES), source, f"reward.shapes_languages[{i}]")
    for i, path in enumerate(r.shapes_paths):
        _check_choice(path, PATHS, source, f"reward.shapes_paths[{i}]")
    _check(r.eval_every_steps >= 0, source, "reward.eval_every_steps", "must be >= 0")
    _check(r.eval_max_prompts >= 0, source, "reward.eval_max_prompts", "must be >= 0")
    if r.eval_every_steps:
        _check(bool(r.eval_prompts or r.eval_shapes_prompts), source, "reward.eval_prompts",
               "must give prompts (or reward.eval_shapes_prompts) when reward.eval_every_steps > 0")  # fmt: skip


def check_paths(c: RunConfig, source: str = "config") -> None:
    """File checks, run before anything heavy is loaded."""
    if c.mode == "reward":
        _check_reward_paths(c, source)
        return
    _check(
        bool(c.data.root), source, "data.root", "must be set (the folder the metadata paths are relative to)"
    )
    root = Path(c.data.root)
    _check(root.is_dir(), source, "data.root", f"folder '{root}' does not exist")
    meta = Path(c.data.metadata)
    meta = meta if meta.is_absolute() else root / meta
    _check(meta.is_file(), source, "data.metadata", f"file '{meta}' does not exist")
    _check_model_paths(c, source)


def _check_model_paths(c: RunConfig, source: str) -> None:
    m = c.model
    for name in ("pretrained", "transformer_path", "vae_path", "text_encoder_path"):
        value = getattr(m, name)
        if value:
            _check(Path(value).is_dir(), source, f"model.{name}", f"folder '{value}' does not exist")
    if c.checkpoint.resume not in ("", "latest"):
        _check(Path(c.checkpoint.resume).is_dir(), source, "checkpoint.resume",
               f"checkpoint folder '{c.checkpoint.resume}' does not exist")  # fmt: skip


def _check_reward_paths(c: RunConfig, source: str) -> None:
    """Reward mode reads prompts, not a dataset: data.root is not needed."""
    _check_model_paths(c, source)
    r = c.reward
    if r.prompt_file:
        _check(
            Path(r.prompt_file).is_file(),
            source,
            "reward.prompt_file",
            f"file '{r.prompt_file}' does not exist",
        )
    for i, term in enumerate(r.rewards):
        if term.path:
            _check(Path(term.path).expanduser().is_dir(), source, f"reward.rewards[{i}].path",
                   f"folder '{term.path}' does not exist (the local weights of reward {term.name!r}; "
                   "kinema never downloads them)")  # fmt: skip


def metadata_path(c: RunConfig) -> Path:
    meta = Path(c.data.metadata)
    return meta if meta.is_absolute() else Path(c.data.root) / meta
