"""Adapters for learned image rewards (PickScore, aesthetic, HPSv2.1, MPS), loaded from local folders only.

kinema never downloads weights: every adapter takes a folder, checks that the files it needs are there
and raises ``FileNotFoundError`` naming the missing folder or file (and what to put there) otherwise.
Models run frozen in eval mode; the frames keep their gradient through a differentiable version of the
CLIP preprocessing (resize of the shorter side with antialiased bicubic interpolation, centre crop,
mean/std normalisation from ``preprocessor_config.json`` or the OpenAI CLIP defaults). Videos are scored
frame by frame on ``num_frames`` evenly spaced frames and the scores are averaged.

=============  ==============================================================================================
``pickscore``  transformers ``CLIPModel`` folder (PickScore_v1: config.json + weights) and the CLIP tokenizer
               (vocab.json + merges.txt or tokenizer.json) in the same folder or ``processor_path``
               (PickScore uses the processor of CLIP-ViT-H-14-laion2B). Score = logit_scale * cos(image, text).
``aesthetic``  LAION aesthetic predictor v2: a CLIP ViT-L/14 in transformers format (``clip/`` subfolder,
               ``clip_path`` or the folder itself) plus the MLP head file
               (``sac+logos+ava1-l14-linearMSE.pth`` or ``aesthetic_head.safetensors``). Score = MLP of the
               L2-normalised image embedding (about 1-10).
``hpsv2.1``    a transformers ``CLIPModel`` folder converted from HPS_v2.1 (scored as cos(image, text), as
               HPSv2's own scorer), or ``HPS_v2.1_compressed.pt`` (an open_clip ViT-H-14 checkpoint) when the
               ``open_clip`` package is installed; otherwise :class:`RewardUnavailableError` says what to do.
``mps``        needs the MPS repository's model code (its CLIP with a condition cross-attention head), which
               neither transformers nor kinema provides: :class:`RewardUnavailableError` names it and the
               ``package.module:callable`` reward hook that plugs it in.
=============  ==============================================================================================
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import check_frames

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")  # fmt: skip
NO_DOWNLOAD = "kinema never downloads weights: copy the files there yourself."


class RewardUnavailableError(ImportError):
    """A reward model is present but cannot be run here; the message says what is missing."""


def require_folder(path: str | Path, who: str, what: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{who} reward: folder '{folder}' does not exist; it must hold {what}. {NO_DOWNLOAD}"
        )
    return folder


def require_transformers_model(folder: Path, who: str, what: str) -> None:
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{who} reward: '{folder / 'config.json'}' is missing; '{folder}' must be a transformers "
            f"{what} folder (config.json + model.safetensors). {NO_DOWNLOAD}"
        )
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(
            f"{who} reward: no weights in '{folder}' (expected one of {', '.join(WEIGHT_FILES)}). {NO_DOWNLOAD}"
        )


def tokenizer_folder(candidates: list[Path], who: str) -> Path:
    for folder in candidates:
        if (folder / "tokenizer.json").is_file() or (
            (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
        ):
            return folder
    where = " or ".join(f"'{c}'" for c in candidates)
    raise FileNotFoundError(
        f"{who} reward: no CLIP tokenizer files (tokenizer.json, or vocab.json + merges.txt) in {where}; "
        f"add the CLIP processor files (options.processor_path may name their folder). {NO_DOWNLOAD}"
    )


def evenly_spaced(count: int, wanted: int) -> list[int]:
    if wanted <= 0 or wanted >= count:
        return list(range(count))
    return (
        sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)}) if wanted > 1 else [count // 2]
    )


class ClipPreprocess(nn.Module):
    """Differentiable CLIP image preprocessing of RGB in [0, 1]: resize shorter side, centre crop, normalise."""

    def __init__(self, size: int, crop: int, mean=CLIP_MEAN, std=CLIP_STD):
        super().__init__()
        self.size, self.crop = int(size), int(crop)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_folder(cls, folders: list[Path], image_size: int) -> ClipPreprocess:
        """From the first ``preprocessor_config.json`` found, else the OpenAI CLIP defaults at ``image_size``."""
        for folder in folders:
            file = folder / "preprocessor_config.json"
            if file.is_file():
                cfg = json.loads(file.read_text(encoding="utf-8"))
                size = cfg.get("size", image_size)
                size = (
                    size.get("shortest_edge", size.get("height", image_size))
                    if isinstance(size, dict)
                    else size
                )
                crop = cfg.get("crop_size", size)
                crop = crop.get("height", image_size) if isinstance(crop, dict) else crop
                return cls(size, crop, cfg.get("image_mean", CLIP_MEAN), cfg.get("image_std", CLIP_STD))
        return cls(image_size, image_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        scale = self.size / min(h, w)
        size = (max(self.crop, round(h * scale)), max(self.crop, round(w * scale)))
        if size != (h, w):
            images = F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False)
        top, left = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        images = images[:, :, top : top + self.crop, left : left + self.crop]
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)


class _FrameReward(nn.Module):
    """Scores ``num_frames`` evenly spaced frames of each video as images and averages them."""

    who = "image"

    def __init__(self, num_frames: int = 4):
        super().__init__()
        self.num_frames = int(num_frames)

    def frames_as_images(self, frames: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(B, 3, F, H, W) in [-1, 1] -> (B * n, 3, H, W) in [0, 1] and n."""
        index = evenly_spaced(frames.shape[2], self.num_frames)
        picked = frames[:, :, index].float().clamp(-1, 1).add(1).div(2)
        return picked.transpose(1, 2).flatten(0, 1), len(index)

    def score_images(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        check_frames(frames, prompts, self.who)
        images, n = self.frames_as_images(frames)
        repeated = [p for p in prompts for _ in range(n)]
        return self.score_images(images, repeated).view(frames.shape[0], n).mean(dim=1)


def _freeze(model: nn.Module) -> nn.Module:
    return model.eval().requires_grad_(False)


class CLIPScoreReward(_FrameReward):
    """Image-text score of a transformers ``CLIPModel`` folder: ``[logit_scale *] cos(image, text)``."""

    who = "CLIP"

    def __init__(self, path: str | Path, processor_path: str | Path | None = None, num_frames: int = 4,
                 use_logit_scale: bool = True, max_length: int = 77):  # fmt: skip
        super().__init__(num_frames)
        from transformers import CLIPModel, CLIPTokenizer

        folder = require_folder(path, self.who, "a transformers CLIPModel (config.json + model.safetensors)")
        require_transformers_model(folder, self.who, "CLIPModel")
        candidates = ([Path(processor_path).expanduser()] if processor_path else []) + [folder]
        tok_dir = tokenizer_folder(candidates, self.who)
        self.model = _freeze(CLIPModel.from_pretrained(str(folder), local_files_only=True))
        self.tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        self.preprocess = ClipPreprocess.from_folder(candidates, self.model.config.vision_config.image_size)
        self.use_logit_scale, self.max_length = use_logit_scale, max_length

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(images).to(self.model.dtype)
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    @torch.no_grad()
    def text_embeds(self, prompts: list[str]) -> torch.Tensor:
        device = self.model.logit_scale.device
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_length,
                                return_tensors="pt")  # fmt: skip
        pooled = self.model.text_model(
            input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        ).pooler_output
        return F.normalize(self.model.text_projection(pooled).float(), dim=-1)

    def score_images(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        cos = (self.image_embeds(images) * self.text_embeds(prompts)).sum(dim=-1)
        return cos * self.model.logit_scale.exp().float() if self.use_logit_scale else cos


class PickScoreReward(CLIPScoreReward):
    who = "PickScore"


class AestheticHead(nn.Module):
    """The LAION aesthetic predictor v2 MLP (768-1024-128-64-16-1, dropout between the first layers)."""

    def __init__(self, dims: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 3:
                layers.append(nn.Dropout(0.0))
        self.layers = nn.Sequential(*layers)

    @staticmethod
    def dims_from_state(state: dict[str, torch.Tensor]) -> list[int]:
        weights = [state[k] for k in sorted((k for k in state if k.endswith(".weight")),
                                            key=lambda k: int(k.split(".")[1]))]  # fmt: skip
        return [weights[0].shape[1]] + [w.shape[0] for w in weights]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AestheticReward(_FrameReward):
    who = "aesthetic"
    HEAD_FILES = ("sac+logos+ava1-l14-linearMSE.pth", "aesthetic_head.safetensors", "aesthetic_head.pth")

    def __init__(self, path: str | Path, clip_path: str | Path | None = None, head_file: str | Path | None = None,
                 num_frames: int = 4):  # fmt: skip
        super().__init__(num_frames)
        from transformers import CLIPModel, CLIPVisionModelWithProjection

        folder = require_folder(path, self.who, "a CLIP ViT-L/14 (clip/) and the aesthetic MLP head file")
        if clip_path:
            clip_dir = Path(clip_path).expanduser()
        else:
            clip_dir = folder / "clip" if (folder / "clip").is_dir() else folder
        require_transformers_model(clip_dir, self.who, "CLIP ViT-L/14")
        if head_file:
            head = Path(head_file).expanduser()
            head = head if head.is_absolute() or head.is_file() else folder / head
        else:
            head = next(
                (folder / n for n in self.HEAD_FILES if (folder / n).is_file()), folder / self.HEAD_FILES[0]
            )
        if not head.is_file():
            raise FileNotFoundError(
                f"aesthetic reward: head file '{head}' is missing (the LAION aesthetic predictor MLP, "
                f"e.g. sac+logos+ava1-l14-linearMSE.pth; options.head_file names another). {NO_DOWNLOAD}"
            )
        model_type = json.loads((clip_dir / "config.json").read_text(encoding="utf-8")).get("model_type")
        cls = CLIPVisionModelWithProjection if model_type == "clip_vision_model" else CLIPModel
        self.clip = _freeze(cls.from_pretrained(str(clip_dir), local_files_only=True))
        state = _load_state(head)
        state = {k.removeprefix("model."): v for k, v in state.items()}
        self.head = AestheticHead(AestheticHead.dims_from_state(state))
        self.head.load_state_dict(state)
        _freeze(self.head)
        vision_cfg = getattr(self.clip.config, "vision_config", self.clip.config)
        self.preprocess = ClipPreprocess.from_folder([clip_dir, folder], vision_cfg.image_size)

    def score_images(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        pixels = self.preprocess(images).to(self.clip.dtype)
        pooled = self.clip.vision_model(pixel_values=pixels).pooler_output
        embeds = F.normalize(self.clip.visual_projection(pooled).float(), dim=-1)
        return self.head(embeds).squeeze(-1)


def _load_state(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    state = torch.load(str(file), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


class HPSv21Reward(_FrameReward):
    """HPSv2.1: cos(image, text) of its CLIP ViT-H-14, from a transformers folder or an open_clip checkpoint."""

    who = "HPSv2.1"
    CHECKPOINT = "HPS_v2.1_compressed.pt"

    def __init__(self, path: str | Path, processor_path: str | Path | None = None, num_frames: int = 4,
                 checkpoint_file: str = CHECKPOINT):  # fmt: skip
        super().__init__(num_frames)
        folder = require_folder(
            path,
            self.who,
            f"{checkpoint_file} (open_clip ViT-H-14) or a transformers CLIPModel conversion of it",
        )
        self.open_clip_model = None
        if (folder / "config.json").is_file():
            self.scorer = CLIPScoreReward(folder, processor_path, num_frames, use_logit_scale=False)
            return
        checkpoint = folder / checkpoint_file
        if not checkpoint.is_file():
            raise FileNotFoundError(
                f"HPSv2.1 reward: neither '{checkpoint}' nor a transformers CLIPModel (config.json) is in "
                f"'{folder}'. {NO_DOWNLOAD}"
            )
        try:
            import open_clip
        except ImportError:
            raise RewardUnavailableError(
                f"HPSv2.1 reward: '{checkpoint}' is an open_clip ViT-H-14 checkpoint and the 'open_clip' package "
                "is not installed (pip install open_clip_torch). Alternatively convert it to a transformers "
                "CLIPModel folder (config.json + model.safetensors + CLIP tokenizer files) and set 'path' to it."
            ) from None
        # Not exercised in kinema's tests (open_clip is not a dependency).
        model = open_clip.create_model("ViT-H-14", pretrained=None)
        model.load_state_dict(_load_state(checkpoint))
        self.open_clip_model = _freeze(model)
        self.open_clip_tokenizer = open_clip.get_tokenizer("ViT-H-14")
        self.preprocess = ClipPreprocess(224, 224)

    def forward(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if self.open_clip_model is None:
            return self.scorer(frames, prompts)
        return super().forward(frames, prompts)

    def score_images(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        model = self.open_clip_model
        image = F.normalize(model.encode_image(self.preprocess(images)).float(), dim=-1)
        with torch.no_grad():
            tokens = self.open_clip_tokenizer(prompts).to(images.device)
            text = F.normalize(model.encode_text(tokens).float(), dim=-1)
        return (image * text).sum(dim=-1)


class MPSReward(_FrameReward):
    who = "MPS"
    CHECKPOINT = "MPS_overall_checkpoint.pth"

    def __init__(self, path: str | Path, checkpoint_file: str = CHECKPOINT, **_: object):
        super().__init__()
        folder = require_folder(path, self.who, f"{checkpoint_file} and the CLIP-ViT-H-14 processor files")
        checkpoint = folder / checkpoint_file
        if not checkpoint.is_file():
            raise FileNotFoundError(f"MPS reward: checkpoint '{checkpoint}' is missing. {NO_DOWNLOAD}")
        raise RewardUnavailableError(
            f"MPS reward: '{checkpoint}' needs the model code of the MPS repository (Kwai-Kolors/MPS: its CLIP "
            "ViT-H-14 with the condition cross-attention head), which neither transformers nor kinema provides. "
            "Wrap that code in a callable (frames (B,3,F,H,W) in [-1,1], prompts) -> (B,) scores and use it as "
            "reward name 'your_module:YourMPSReward' (with path and options passed to it)."
        )
