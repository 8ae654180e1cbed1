"""Pre-training of the embedded model's small text encoder on ShapesWorld prompts.

EasyAnimate V5.1 conditions on a frozen *pretrained* Qwen2-VL, whose features already carry what a prompt
means. The embedded model's encoder (hidden 32, 2 layers, ``recipe.TEXT_ENCODER``) is far too small to be
a language model, and left random its features keep each word at its own token position: a linear read-out
of the position-averaged features finds the colour of 40 % of prompts and the direction of 33 %
(held-out prompts; 98 % / 75 % when every position is read separately), so the DiT has to learn, per
language and phrasing, where to look. Measured effect: the T2V model trained on random features ignored
the direction in the prompt (0 % on held-out prompts, docs/shapesworld-model.md).

This stage stands in for the pretrained LLM: it trains the encoder's embeddings and first layer (all that
``hidden_states[-2]`` depends on) so that the features the DiT reads -- averaged over the 96 positions, and
at every padding position (which attend to the whole prompt) -- linearly predict the scene the prompt
describes: each object's colour, shape, direction and path, the background and the camera, each with a
"not said" class. Prompts come from the training scenes only (the held-out colour x shape x direction
combinations are never seen), in all four languages and with random phrasing. The encoder is then frozen
like V5.1's, rounded to bf16 and stored in the ordinary Qwen2-VL format.

    python -m kinema.shapes.recipe text-encoder OUT --data runs/shapes/data [--steps 1500] [--more-steps 3000]
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .prompts import LANGUAGES, make_prompt
from .spec import BACKGROUNDS, CAMERAS, COLORS, DIRECTIONS, PATHS, SHAPES, STATIC, SceneSpec

NONE = "<none>"
MAX_OBJECTS = 2


@dataclass(frozen=True)
class Attribute:
    name: str
    classes: tuple[str, ...]

    def index(self, value: str | None) -> int:
        return self.classes.index(NONE if value is None else value)


def attributes() -> list[Attribute]:
    """What the features must tell apart; every attribute has a "not said" class."""
    out = []
    for k in range(MAX_OBJECTS):
        out += [
            Attribute(f"object{k}.color", (NONE, *COLORS)),
            Attribute(f"object{k}.shape", (NONE, *SHAPES)),
            Attribute(f"object{k}.direction", (NONE, STATIC, *DIRECTIONS)),
            Attribute(f"object{k}.path", (NONE, *PATHS)),
        ]
    return out + [Attribute("background", (NONE, *BACKGROUNDS)), Attribute("camera", (NONE, *CAMERAS))]


def labels(spec: SceneSpec | None, background: bool, camera: bool) -> list[int]:
    """Class indices of ``spec`` as a prompt made with these mention flags states it (None: empty prompt)."""
    values: dict[str, str | None] = {}
    objects = spec.objects if spec is not None else ()
    for k in range(MAX_OBJECTS):
        ob = objects[k] if k < len(objects) else None
        values[f"object{k}.color"] = ob.color if ob else None
        values[f"object{k}.shape"] = ob.shape if ob else None
        values[f"object{k}.direction"] = ob.direction if ob else None
        values[f"object{k}.path"] = ob.path if ob is not None and ob.moving else None
    values["background"] = spec.background if spec is not None and background else None
    values["camera"] = spec.camera if spec is not None and camera else None
    return [a.index(values[a.name]) for a in attributes()]


def prompt_pool(
    specs: list[SceneSpec], n: int, seed: int, empty_fraction: float = 0.03
) -> tuple[list[str], np.ndarray]:
    """``n`` random prompts of ``specs`` (languages cycled, random phrasing and mentions) and their labels."""
    rng = np.random.default_rng(seed)
    prompts, rows = [], []
    for i in range(n):
        if rng.random() < empty_fraction:
            prompts.append("")
            rows.append(labels(None, False, False))
            continue
        spec = specs[int(rng.integers(len(specs)))]
        bg = spec.background is not None and rng.random() < 0.4
        cam = spec.camera is not None and rng.random() < 0.4
        prompts.append(make_prompt(spec, LANGUAGES[i % len(LANGUAGES)], rng, bg, cam))
        rows.append(labels(spec, bg, cam))
    return prompts, np.asarray(rows, dtype=np.int64)


class AttributeHeads(torch.nn.Module):
    """One linear classifier per attribute, shared by the pooled and the per-padding-position features."""

    def __init__(self, dim: int):
        super().__init__()
        self.attrs = attributes()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(dim, len(a.classes)) for a in self.attrs)

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (N, D), targets (N, A) -> (mean cross-entropy, per-attribute accuracy (A,))."""
        losses, accs = [], []
        for k, head in enumerate(self.heads):
            logits = head(features)
            losses.append(F.cross_entropy(logits, targets[:, k]))
            accs.append((logits.argmax(-1) == targets[:, k]).float().mean())
        return torch.stack(losses).mean(), torch.stack(accs)


def _views(encoder, ids: torch.Tensor, mask: torch.Tensor, rng: torch.Generator):
    """The features the DiT reads, normalised as its RMSNorm does: the mean over all positions and one
    random padding position per prompt (prompts without padding use their last token)."""
    feats = encoder(ids, mask).float()
    feats = feats * torch.rsqrt(feats.pow(2).mean(-1, keepdim=True) + 1e-6)
    pooled = feats.mean(1)
    n_valid = mask.sum(1)
    length = mask.shape[1]
    pick = n_valid + (torch.rand(len(ids), generator=rng) * (length - n_valid).clamp(min=1)).long()
    pick = pick.clamp(max=length - 1)
    padded = feats[torch.arange(len(ids)), pick]
    return pooled, padded


def evaluate(encoder, heads: AttributeHeads, prompts: list[str], targets: np.ndarray) -> dict[str, float]:
    """Per-attribute accuracy of the pooled read-out on ``prompts`` (heads as trained)."""
    accs = []
    with torch.no_grad():
        for i in range(0, len(prompts), 256):
            ids, mask = encoder.tokenize(prompts[i : i + 256])
            pooled, _ = _views(encoder, ids, mask, torch.Generator().manual_seed(0))
            _, acc = heads(pooled, torch.from_numpy(targets[i : i + 256]))
            accs.append(acc * len(ids))
    acc = torch.stack(accs).sum(0) / len(prompts)
    return {a.name: float(v) for a, v in zip(heads.attrs, acc)}


def training_specs_from(data_root: str | Path) -> list[SceneSpec]:
    """The scenes of a ShapesWorld training set (its metadata), i.e. never a held-out combination."""
    from .dataset import load_metadata
    from .spec import spec_is_held_out

    specs = [SceneSpec.from_dict(r["spec"]) for r in load_metadata(data_root)]
    return [s for s in specs if not spec_is_held_out(s)]


def pretrain(
    encoder,
    specs: list[SceneSpec],
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    log=print,
) -> dict[str, float]:
    """Train ``encoder`` (a ``PromptEncoder``) in place; returns the final pooled accuracies on fresh prompts."""
    torch.manual_seed(seed)
    prompts, targets = prompt_pool(specs, steps * batch_size // 4 + batch_size, seed)
    # Tokenise once: the chat template and padding are the same as at inference.
    ids, mask = [], []
    for i in range(0, len(prompts), 512):
        a, b = encoder.tokenize(prompts[i : i + 512])
        ids.append(a)
        mask.append(b)
    ids, mask, targets_t = torch.cat(ids), torch.cat(mask), torch.from_numpy(targets)
    heads = AttributeHeads(encoder.hidden_size)
    encoder.train().requires_grad_(True)
    opt = torch.optim.AdamW([*encoder.parameters(), *heads.parameters()], lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    rng = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        idx = torch.randint(len(ids), (batch_size,), generator=rng)
        pooled, padded = _views(encoder, ids[idx], mask[idx], rng)
        loss_pooled, acc = heads(pooled, targets_t[idx])
        loss_padded, _ = heads(padded, targets_t[idx])
        loss = loss_pooled + loss_padded
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps:
            log(f"step {step}: loss {loss.item():.3f}, pooled accuracy {acc.mean().item():.3f}")
    encoder.eval().requires_grad_(False)
    test_prompts, test_targets = prompt_pool(specs, 2048, seed + 1)
    report = {f"train-scene {k}": v for k, v in evaluate(encoder, heads, test_prompts, test_targets).items()}
    from .spec import held_out_specs

    held_prompts, held_targets = prompt_pool(
        held_out_specs(("straight",)), 1024, seed + 2, empty_fraction=0.0
    )
    held = evaluate(encoder, heads, held_prompts, held_targets)
    report.update({f"held-out {k}": v for k, v in held.items() if k.startswith("object0.")})
    return report


# The second cycle (session 10): after the first, a linear read-out of the features named the held-out
# direction of 89 % of prompts, its errors all up <-> down (left/right 100 %), and the T2V base could not
# tell up from down either: it moved diagonals along their horizontal part and left "up"/"down" clips
# still or erratic. A second cycle at a third of the learning rate makes the read-out 100 %
# (docs/shapesworld-model.md, "Session 10"). Its length is recipe.TEXT_MORE_STEPS.
MORE_LR = 1e-3


def build_text_encoder(
    out: str | Path,
    data_root: str | Path,
    steps: int = 1500,
    seed: int = 0,
    more_steps: int | None = None,
    log=print,
) -> dict[str, float]:
    """Pre-train the embedded model's text encoder (``recipe.TEXT_ENCODER``) and save it (bf16) to ``out``.

    Two cycles: ``steps`` at lr 3e-3, then ``more_steps`` (default ``recipe.TEXT_MORE_STEPS``; 0: none) at
    ``MORE_LR`` on fresh prompts (seed + 3; each cycle draws its training, test and held-out prompts from
    three seeds) with fresh read-out heads, starting from the first cycle's weights rounded to bf16 as they
    are stored.
    """
    from kinema.text import PromptEncoder

    from .recipe import TEXT_ENCODER, TEXT_MAX_LENGTH, TEXT_MORE_STEPS

    more_steps = TEXT_MORE_STEPS if more_steps is None else more_steps
    if steps < 1 or more_steps < 0:
        raise ValueError(f"steps must be >= 1 and more_steps >= 0, got {steps} and {more_steps}")
    encoder = PromptEncoder.small(seed=seed, max_length=TEXT_MAX_LENGTH, **TEXT_ENCODER)
    specs = training_specs_from(data_root)
    cycles = [(steps, 3e-3)] + ([(more_steps, MORE_LR)] if more_steps else [])
    for k, (n, lr) in enumerate(cycles):
        if k:
            encoder.model.to(torch.bfloat16).float()
        report = pretrain(encoder, specs, steps=n, lr=lr, seed=seed + 3 * k, log=log)
        log(
            f"cycle {k + 1}: accuracy of a linear read-out of the position-averaged features (fresh prompts):"
        )
        for name, acc in report.items():
            log(f"  {name:32s} {acc:.3f}")
    # Stored in bf16 like the transformers; frozen from here on, so training and inference see these weights.
    # Written beside ``out`` and renamed: an interrupted run leaves no folder that looks finished.
    encoder.model.to(torch.bfloat16)
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    encoder.save_pretrained(tmp)
    # The record of how it was trained; scripts/train_shapes.sh takes its presence for a finished encoder
    # (a folder from before the second cycle lacks it and is rebuilt).
    record = {"steps": steps, "more_steps": more_steps, "seed": seed, "read_out_accuracy": report}
    (tmp / "pretrain.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return report
