"""Prompt encoder: the Qwen2-VL language model of EasyAnimate V5.1, without its vision tower.

The recipe is the one of diffusers' ``EasyAnimatePipeline.encode_prompt``: every prompt is wrapped in a
one-turn Qwen2-VL chat, rendered with the chat template (generation prompt appended), tokenized to exactly
``max_length`` (256) tokens with right padding and truncation, and the text model's second-to-last hidden
state (``hidden_states[-2]``) is the prompt feature, returned with the attention mask.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from .tokenizer import build_qwen2vl_tokenizer, check_qwen2vl_tokenizer, load_tokenizer

if TYPE_CHECKING:  # transformers is an optional dependency (the "text" extra)
    from transformers import PreTrainedTokenizerBase, Qwen2VLConfig

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 256  # EasyAnimate's max_sequence_length for the Qwen2-VL text encoder

# Vocabulary rows of Qwen2-VL-2B: the 151,657 token ids padded up to a multiple of 128.
SMALL_VOCAB_SIZE = 151936

# Vision tower written next to small text encoders so that their folders are complete
# Qwen2VLForConditionalGeneration checkpoints (stock transformers/diffusers load them without missing
# keys). It is random, tiny (~30k parameters) and never used for text encoding.
PLACEHOLDER_VISION_CONFIG: dict[str, Any] = {
    "depth": 1,
    "embed_dim": 16,
    "num_heads": 1,
    "mlp_ratio": 1,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "in_channels": 3,
}

_SAFETENSORS_INDEX = "model.safetensors.index.json"
_SAFETENSORS_SINGLE = "model.safetensors"


class GuidanceEmbeddings(NamedTuple):
    """Prompt and negative-prompt features for classifier-free guidance."""

    prompt_embeds: torch.Tensor  # (B * n, L, D)
    prompt_attention_mask: torch.Tensor  # (B * n, L)
    negative_prompt_embeds: torch.Tensor  # (B * n, L, D)
    negative_prompt_attention_mask: torch.Tensor  # (B * n, L)


def _text_weight_name(key: str) -> str | None:
    """Map a Qwen2VLForConditionalGeneration checkpoint key to a Qwen2VLTextModel key (None: not text).

    Two layouts exist: the original one (``model.layers.*``, ``visual.*``), which the official checkpoints
    and every transformers ``save_pretrained`` write, and the in-memory layout of transformers >= 4.52
    (``model.language_model.*``, ``model.visual.*``), which some re-saved checkpoints carry.
    """
    if key.endswith("rotary_emb.inv_freq"):
        return None  # a derived buffer that some old checkpoints stored; it is recomputed on load
    if key.startswith("model.language_model."):
        return key[len("model.language_model.") :]
    if key.startswith(("visual.", "model.visual.", "lm_head.")):
        return None
    if key.startswith("model."):
        return key[len("model.") :]
    raise ValueError(key)


def _checkpoint_files(folder: Path) -> list[Path]:
    """Safetensors files of a checkpoint folder that hold language-model weights."""
    index_path = folder / _SAFETENSORS_INDEX
    if index_path.is_file():
        weight_map: dict[str, str] = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        # Shards holding only the vision tower are never opened.
        names = sorted({file for key, file in weight_map.items() if _safe_text_name(key) is not None})
        files = [folder / name for name in names]
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(f"{index_path} lists shard {file.name}, but {file} does not exist.")
        return files
    if (folder / _SAFETENSORS_SINGLE).is_file():
        return [folder / _SAFETENSORS_SINGLE]
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return shards
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickles:
        raise FileNotFoundError(
            f"{folder} has only pickle checkpoints ({', '.join(pickles)}); kinema loads safetensors only, "
            "because unpickling can run arbitrary code. Fix: convert them to model.safetensors."
        )
    raise FileNotFoundError(f"{folder} has no {_SAFETENSORS_SINGLE}, {_SAFETENSORS_INDEX} or *.safetensors.")


def _safe_text_name(key: str) -> str | None:
    try:
        return _text_weight_name(key)
    except ValueError:
        return key  # unknown keys are reported by the loader, so keep their shard


def _load_text_state_dict(
    folder: Path, device: torch.device, dtype: torch.dtype | None
) -> dict[str, torch.Tensor]:
    """Read the language-model tensors of a checkpoint folder; vision tower and LM head are never read."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for file in _checkpoint_files(folder):
        with safe_open(str(file), framework="pt", device=str(device)) as handle:
            for key in handle.keys():
                try:
                    name = _text_weight_name(key)
                except ValueError:
                    unknown.append(f"{file.name}:{key}")
                    continue
                if name is None:
                    continue
                tensor = handle.get_tensor(key)
                # Convert tensor by tensor so a bf16 -> fp32 load never holds two full copies.
                state[name] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    if unknown:
        raise ValueError(
            f"{folder}: weights {unknown[:5]} are neither Qwen2-VL language-model keys (model.layers.*, "
            "model.language_model.*) nor vision/LM-head keys. Fix: point to a Qwen2VLForConditionalGeneration "
            "checkpoint."
        )
    return state


def _read_config(folder: Path) -> Qwen2VLConfig:
    from transformers import Qwen2VLConfig

    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} does not exist: a text encoder folder needs the Qwen2VLForConditionalGeneration "
            "config.json next to its safetensors weights."
        )
    raw = json.loads(config_path.read_text(encoding="utf-8"))
    if raw.get("model_type") != "qwen2_vl":
        raise ValueError(
            f"{config_path} has model_type {raw.get('model_type')!r}; EasyAnimate V5.1's text encoder is "
            "'qwen2_vl' (Qwen2VLForConditionalGeneration). Fix: point to the model's text_encoder/ folder."
        )
    return Qwen2VLConfig.from_pretrained(str(folder), local_files_only=True)


def _is_placeholder_vision(config: Qwen2VLConfig) -> bool:
    vision = config.vision_config
    return all(getattr(vision, key, None) == value for key, value in PLACEHOLDER_VISION_CONFIG.items())


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies into Qwen2-VL's (temporal, height, width) sections.

    Qwen2-VL uses [16, 24, 24] for head_dim 128; the same 1:1.5:1.5 split is kept for smaller heads. For
    text the three position components are equal, so the split does not change the result, but the
    sections must add up to head_dim/2.
    """
    half = head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


def _shard(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


class PromptEncoder(nn.Module):
    """Qwen2-VL text model + tokenizer that turn prompts into EasyAnimate V5.1 text features.

    Build it with :meth:`from_pretrained` (official or kinema model folders), :meth:`small` (a random,
    trainable small encoder) or :meth:`from_config`. ``encode`` runs without gradients unless the module is
    in training mode, so a small encoder can be trained end to end.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        config: Qwen2VLConfig,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        source: str | None = None,
    ) -> None:
        super().__init__()
        check_qwen2vl_tokenizer(tokenizer, source or "tokenizer")
        if len(tokenizer) > config.text_config.vocab_size:
            raise ValueError(
                f"{source or 'text encoder'}: tokenizer has {len(tokenizer)} tokens but the embedding has only "
                f"{config.text_config.vocab_size} rows. Fix: use a text_config.vocab_size >= {len(tokenizer)}."
            )
        self.model: nn.Module | None = model
        self.tokenizer = tokenizer
        self.config = config
        self.max_length = max_length
        self.source = source

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def from_config(
        cls,
        config: Qwen2VLConfig,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        seed: int | None = None,
    ) -> PromptEncoder:
        """Random-init text model for ``config`` (a ``Qwen2VLConfig``), trainable, with the Qwen2-VL tokenizer."""
        from transformers import Qwen2VLTextModel

        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model = Qwen2VLTextModel(config.text_config)
        encoder = cls(model, tokenizer or build_qwen2vl_tokenizer(), config, max_length=max_length)
        return encoder.train()

    @classmethod
    def small(
        cls,
        *,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_attention_heads: int = 4,
        num_key_value_heads: int = 2,
        intermediate_size: int | None = None,
        vocab_size: int = SMALL_VOCAB_SIZE,
        max_length: int = DEFAULT_MAX_LENGTH,
        seed: int | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        init_std: float = 0.02,
    ) -> PromptEncoder:
        """A small random Qwen2-VL-architecture text encoder (default ~9.8M parameters, 9.7M of them the
        151,936 x 64 embedding), trainable, with the real tokenizer.

        ``init_std`` is the weights' initial std (Qwen2's ``initializer_range``). Kept random and frozen, the
        default 0.02 barely mixes context: each position's features are ~99.9% its own token, so a prompt's
        meaning sits in a few token positions. About ``1 / sqrt(hidden_size)`` makes attention carry the
        prompt into every later position, the padding included (the DiT attends to all 256).
        """
        from transformers import Qwen2VLConfig

        if hidden_size % num_attention_heads or num_attention_heads % num_key_value_heads:
            raise ValueError(
                f"hidden_size={hidden_size} must be divisible by num_attention_heads={num_attention_heads}, "
                f"which must be divisible by num_key_value_heads={num_key_value_heads}."
            )
        if num_layers < 2:
            # hidden_states[-2] of a one-layer model would be the raw token embedding.
            raise ValueError(
                f"num_layers={num_layers}: the recipe reads hidden_states[-2], use num_layers >= 2."
            )
        head_dim = hidden_size // num_attention_heads
        config = Qwen2VLConfig(
            text_config={
                "vocab_size": vocab_size,
                "hidden_size": hidden_size,
                "intermediate_size": intermediate_size or 4 * hidden_size,
                "num_hidden_layers": num_layers,
                "num_attention_heads": num_attention_heads,
                "num_key_value_heads": num_key_value_heads,
                "max_position_embeddings": 32768,
                "rms_norm_eps": 1e-6,
                "rope_scaling": {"type": "mrope", "mrope_section": _mrope_section(head_dim)},
                "rope_theta": 1000000.0,
                "initializer_range": init_std,
            },
            vision_config={**PLACEHOLDER_VISION_CONFIG, "hidden_size": hidden_size},
            # No separate LM head: stock loaders tie it to the embedding instead of adding 9.7M parameters.
            tie_word_embeddings=True,
        )
        return cls.from_config(config, tokenizer=tokenizer, max_length=max_length, seed=seed)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        text_encoder_subfolder: str = "text_encoder",
        tokenizer_subfolder: str = "tokenizer",
        tokenizer: PreTrainedTokenizerBase | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        max_length: int | None = None,
        trainable: bool = False,
    ) -> PromptEncoder:
        """Load the text model (language-model weights only) and tokenizer from a local folder.

        ``max_length`` None: the folder's own (``kinema_max_length`` in its config.json, written by
        :meth:`save_pretrained` for encoders not at EasyAnimate's 256), else 256.

        ``path`` is either a pipeline folder with ``text_encoder/`` and ``tokenizer/`` (official
        EasyAnimateV5.1 diffusers layout, or one written by :meth:`save_pretrained`), or a plain Qwen2-VL
        folder holding config, safetensors and tokenizer files together. ``dtype=None`` keeps the dtype
        stored in the checkpoint. With ``trainable=False`` (default) parameters are frozen and the module
        is in eval mode.
        """
        from transformers import Qwen2VLTextModel

        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"Model folder {root} does not exist.")
        if (root / text_encoder_subfolder).is_dir():
            text_dir, tokenizer_dir = root / text_encoder_subfolder, root / tokenizer_subfolder
        elif (root / "config.json").is_file():
            text_dir = tokenizer_dir = root
        else:
            raise FileNotFoundError(
                f"{root} has neither a '{text_encoder_subfolder}/' subfolder nor a config.json. Fix: pass an "
                "EasyAnimate model folder (text_encoder/ + tokenizer/) or a Qwen2-VL folder."
            )
        config = _read_config(text_dir)
        device = torch.device(device)
        state = _load_text_state_dict(text_dir, device, dtype)

        # Build on the meta device: no random init of billions of weights that are overwritten anyway.
        with torch.device("meta"):
            model = Qwen2VLTextModel(config.text_config)
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
        if missing or unexpected:
            raise ValueError(
                f"{text_dir}: checkpoint does not match its config.json: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}. Fix: check the folder holds the complete text encoder."
            )
        # Non-persistent buffers (rotary inverse frequencies) are not in the checkpoint: recompute them.
        rotary_cls = type(model.rotary_emb)
        with torch.device(device):
            model.rotary_emb = rotary_cls(config=config.text_config)
        left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:
            raise RuntimeError(f"{text_dir}: tensors {left[:5]} were not initialised while loading.")

        if tokenizer is None:
            if not tokenizer_dir.is_dir():
                raise FileNotFoundError(
                    f"Tokenizer folder {tokenizer_dir} does not exist. Fix: add it, or pass "
                    "tokenizer=kinema.text.build_qwen2vl_tokenizer()."
                )
            tokenizer = load_tokenizer(tokenizer_dir)
        if max_length is None:
            max_length = int(getattr(config, "kinema_max_length", None) or DEFAULT_MAX_LENGTH)
        encoder = cls(model, tokenizer, config, max_length=max_length, source=str(root))
        encoder.requires_grad_(trainable)
        return encoder.train(trainable)

    # -------------------------------------------------------------------------------------------- state
    @property
    def text_model(self) -> nn.Module:
        """The Qwen2-VL text model; raises if :meth:`free` released it."""
        if self.model is None:
            raise RuntimeError(
                f"PromptEncoder{f' from {self.source}' if self.source else ''} was freed; "
                "load it again with PromptEncoder.from_pretrained(...)."
            )
        return self.model

    @property
    def hidden_size(self) -> int:
        return int(self.config.text_config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.text_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.text_model.parameters()).dtype

    def free(self) -> None:
        """Release the text model (e.g. before running the transformer); the tokenizer is kept."""
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ----------------------------------------------------------------------------------------- encoding
    def chat_texts(self, prompts: Sequence[str]) -> list[str]:
        """Render each prompt as a one-turn user chat with the generation prompt, as EasyAnimate does."""
        return [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for prompt in prompts
        ]

    def tokenize(self, prompts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, each (B, max_length): right padding with <|endoftext|>, truncation."""
        prompts = _as_list(prompts, "prompt")
        batch = self.tokenizer(
            self.chat_texts(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_attention_mask=True,
            padding_side="right",
            return_tensors="pt",
        )
        return batch["input_ids"], batch["attention_mask"]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Second-to-last hidden state (B, L, D) of the text model."""
        model = self.text_model
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        # Positions 0..L-1 for every token, padding included: this is what the full Qwen2-VL model uses
        # for text-only input in transformers 5 (and what diffusers' reference therefore computes). The
        # padded positions' features depend on it, and EasyAnimate's transformer sees them.
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand(input_ids.shape[0], -1)
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=False,
            output_hidden_states=True,
        )
        return out.hidden_states[-2]

    def _encode_batch(
        self,
        prompts: list[str],
        num_videos_per_prompt: int,
        device: torch.device | None,
        dtype: torch.dtype | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if num_videos_per_prompt < 1:
            raise ValueError(f"num_videos_per_prompt must be >= 1, got {num_videos_per_prompt}.")
        input_ids, mask = self.tokenize(prompts)
        # Gradients only flow when training (a small encoder trained with the video model).
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.training):
            embeds = self(input_ids, mask)
        device = device or embeds.device
        embeds = embeds.to(device=device, dtype=dtype or embeds.dtype)
        mask = mask.to(device)
        # Copies of one prompt are adjacent (p0, p0, p1, p1), like the latents they condition.
        if num_videos_per_prompt > 1:
            embeds = embeds.repeat_interleave(num_videos_per_prompt, dim=0)
            mask = mask.repeat_interleave(num_videos_per_prompt, dim=0)
        return embeds, mask

    def encode(
        self,
        prompt: str | Sequence[str],
        *,
        num_videos_per_prompt: int = 1,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        free_after: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts: ``(embeds (B*n, max_length, D), attention_mask (B*n, max_length))``.

        ``device``/``dtype`` default to the model's. ``free_after`` releases the model afterwards.
        """
        prompts = _as_list(prompt, "prompt")
        try:
            return self._encode_batch(prompts, num_videos_per_prompt, _device(device), dtype)
        finally:
            if free_after:
                self.free()

    def encode_with_negative(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        num_videos_per_prompt: int = 1,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        free_after: bool = False,
    ) -> GuidanceEmbeddings:
        """Encode prompts and negative prompts for classifier-free guidance.

        ``negative_prompt`` None means the empty string; a single string is used for every prompt, a list
        must have one entry per prompt.
        """
        prompts = _as_list(prompt, "prompt")
        if negative_prompt is None:
            negatives = [""] * len(prompts)
        elif isinstance(negative_prompt, str):
            negatives = [negative_prompt] * len(prompts)
        else:
            negatives = _as_list(negative_prompt, "negative_prompt")
            if len(negatives) != len(prompts):
                raise ValueError(
                    f"negative_prompt has {len(negatives)} entries but prompt has {len(prompts)}; pass one "
                    "negative prompt per prompt, a single string, or None."
                )
        try:
            target = _device(device)
            embeds, mask = self._encode_batch(prompts, num_videos_per_prompt, target, dtype)
            neg_embeds, neg_mask = self._encode_batch(negatives, num_videos_per_prompt, target, dtype)
        finally:
            if free_after:
                self.free()
        return GuidanceEmbeddings(embeds, mask, neg_embeds, neg_mask)

    # -------------------------------------------------------------------------------------------- saving
    def save_pretrained(self, folder: str | Path, *, max_shard_bytes: int = 5 * 1024**3) -> Path:
        """Write ``folder/text_encoder/`` (Qwen2VLForConditionalGeneration config + safetensors, original key
        layout ``model.*``) and ``folder/tokenizer/``; :meth:`from_pretrained` loads it back identically.

        Small encoders (placeholder vision config) also get their tiny random vision tower, so stock
        transformers/diffusers load the folder without missing weights. Encoders loaded from an official
        checkpoint never read its vision tower, so their folder has text weights only.
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        text_dir = folder / "text_encoder"
        text_dir.mkdir(parents=True, exist_ok=True)
        model = self.text_model
        state = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
        if _is_placeholder_vision(self.config):
            state.update(_placeholder_vision_weights(self.config, self.dtype))
        else:
            logger.info("%s: the vision tower was not loaded, so it is not written.", text_dir)

        config = self.config.__class__.from_dict(self.config.to_dict())
        config.dtype = self.dtype
        config.text_config.dtype = self.dtype
        config.architectures = ["Qwen2VLForConditionalGeneration"]
        if self.max_length != DEFAULT_MAX_LENGTH:
            config.kinema_max_length = self.max_length  # from_pretrained's default for this folder
        elif hasattr(config, "kinema_max_length"):
            del config.kinema_max_length
        for stale in (
            _SAFETENSORS_SINGLE,
            _SAFETENSORS_INDEX,
            *[p.name for p in text_dir.glob("*.safetensors")],
        ):
            (text_dir / stale).unlink(missing_ok=True)
        config.save_pretrained(str(text_dir))

        shards = _shard(state, max_shard_bytes)
        if len(shards) == 1:
            save_file(shards[0], str(text_dir / _SAFETENSORS_SINGLE), metadata={"format": "pt"})
        else:
            weight_map: dict[str, str] = {}
            for i, shard in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(text_dir / name), metadata={"format": "pt"})
                weight_map.update(dict.fromkeys(shard, name))
            total = sum(t.numel() * t.element_size() for t in state.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (text_dir / _SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
        self.tokenizer.save_pretrained(str(folder / "tokenizer"))
        return folder


def _placeholder_vision_weights(config: Qwen2VLConfig, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Deterministic random weights of the tiny placeholder vision tower (``visual.*`` keys)."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    # Forking the RNG keeps the caller's random stream untouched and the placeholder reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vision = Qwen2VisionTransformerPretrainedModel(config.vision_config)
    return {f"visual.{k}": v.detach().to(dtype).contiguous() for k, v in vision.state_dict().items()}


def _as_list(value: str | Sequence[str], name: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = list(value)
    if not items or not all(isinstance(item, str) for item in items):
        raise ValueError(f"{name} must be a string or a non-empty list of strings, got {value!r}.")
    return items


def _device(device: str | torch.device | None) -> torch.device | None:
    return torch.device(device) if device is not None else None
