"""EasyAnimate V5.1's video diffusion transformer (an MMDiT), loadable from diffusers-format folders.

    latents (B, C, F, h, w) --per-frame 2x2 Conv2d--> video tokens (B, F*h/2*w/2, d), ordered (f, y, x)
    text states (B, L, 3584) --RMSNorm + Linear-----> text tokens (B, L, d)
    timestep (B,) ----------sinusoid(d) + MLP-------> temb (B, 512)
    num_layers blocks, each: adaLN-zero(joint attention over [text; video]), adaLN-zero(feed-forward)
        * the first ``mmdit_layers`` are MMDiT blocks: text has its own q/k/v, out-projection and FFN;
        * later ("shared") blocks use one set of weights for both streams; text gets no out-projection.
    LayerNorm, adaptive LayerNorm(temb), Linear, unpatchify --> (B, out_channels, F, h, w)

Parameter names are exactly those of diffusers' ``EasyAnimateTransformer3DModel``, so the official
``transformer/`` folders load unchanged; that is why some modules have index-like names (``to_out.0``,
``ff.net.2``). Numerics: norms, RoPE and the residual streams are always fp32; linears and attention run
in the parameter dtype (fp32, or bf16 for ~3x speed on CPU). See docs/transformer.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import AttentionFn, get_attention_backend, linear, spread_over_cores
from .modeling_utils import CheckpointError, ModelMixin

# EasyAnimate fits every latent grid onto a 480x720-video (60x90-latent) grid for the spatial RoPE
# positions, whatever ``sample_height``/``sample_width`` say (the original code hardcodes it too).
ROPE_BASE_LATENT_HW = (60, 90)
ROPE_THETA = 10000.0
QK_NORM_EPS = 1e-6
TEXT_NORM_EPS = 1e-6
ACTIVATIONS = {"silu": F.silu, "swish": F.silu, "gelu": F.gelu, "relu": F.relu, "mish": F.mish}
GELU_APPROXIMATION = {"gelu": "none", "gelu-approximate": "tanh"}


@dataclasses.dataclass
class VideoTransformerConfig:
    """The keys of a diffusers ``EasyAnimateTransformer3DModel`` config.json, with diffusers' defaults.

    (diffusers leaves in/out_channels and patch_size unset; here they default to the V5.1 T2V values.)
    Only the DiT's shape and numerics come from here; ``sample_*``, ``resize_inpaint_mask_directly``,
    ``enable_text_attention_mask`` and ``add_noise_in_inpaint_model`` are read by pipelines, not the DiT.
    """

    num_attention_heads: int = 48
    attention_head_dim: int = 64
    in_channels: int = 16  # T2V 16; InP 33 = 16 + mask 1 + masked video 16; Control 48; Camera 38
    out_channels: int = 16
    patch_size: int = 2
    sample_width: int = 90
    sample_height: int = 60
    activation_fn: str = "gelu-approximate"
    timestep_activation_fn: str = "silu"
    freq_shift: int = 0
    num_layers: int = 48
    mmdit_layers: int = 48  # blocks [0, mmdit_layers) are MMDiT, the rest share weights across streams
    dropout: float = 0.0
    time_embed_dim: int = 512
    add_norm_text_encoder: bool = False  # True in every V5.1 checkpoint
    text_embed_dim: int = 3584
    text_embed_dim_t5: int | None = None
    norm_eps: float = 1e-5
    norm_elementwise_affine: bool = True
    flip_sin_to_cos: bool = True
    time_position_encoding_type: str = "3d_rope"
    after_norm: bool = False
    resize_inpaint_mask_directly: bool = True
    enable_text_attention_mask: bool = True
    add_noise_in_inpaint_model: bool = True
    # kinema extension (not in EasyAnimate/diffusers; None = off, as every official checkpoint): camera-aware
    # RoPE. Video tokens take the spatial RoPE position of the point they show on a plane at this depth
    # (pose units), so the model's "same position across frames" prior holds the background still in the
    # world, i.e. moving on screen as the camera says. Callers pass ``camera_motion`` (control.camera.
    # latent_plane_motion at this depth); docs/shapesworld-model.md, "Session 12".
    camera_rope_depth: float | None = None
    # kinema extension (None = off): the model was trained on camera-warped noise (control.noise_warp) at
    # this plane depth, so the pipeline warps its initial noise along the requested camera. The transformer
    # itself does not read it; it travels with the weights because sampling must match training.
    camera_noise_warp_depth: float | None = None


# Keys of the official V5.1 configs that diffusers ignores. With these values they change nothing; other
# values would need modules neither diffusers nor kinema has, so they are refused rather than ignored.
_INERT_OFFICIAL_KEYS = {
    "add_ref_latent_in_control_model": None,  # any value: a pipeline flag
    "clip_channels": (None,),
    "enable_clip_in_inpaint": (None, False),
    "ref_channels": (None,),
    "swa_layers": (None,),
}


# ---- building blocks --------------------------------------------------------------------------------


class Linear(nn.Linear):
    """nn.Linear that can fuse a GELU; CPU inference runs on oneDNN, split over cores (see attention.py).

    A subclass, not a function, so LoRA libraries still find and wrap every linear layer.
    """

    def forward(self, x: torch.Tensor, gelu: str | None = None) -> torch.Tensor:
        return linear(x, self.weight, self.bias, gelu)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed (and returned) in fp32 whatever the input and parameter dtypes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()


class TextProjection(nn.Sequential):
    """fp32 RMSNorm then Linear (a Sequential only for diffusers' key names text_proj.0 / text_proj.1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm, linear = self
        return linear(norm(x).to(linear.weight.dtype))


class TimestepEmbedding(nn.Module):
    def __init__(self, dim: int, out_dim: int, activation: str):
        super().__init__()
        self.linear_1 = Linear(dim, out_dim)
        self.linear_2 = Linear(out_dim, out_dim)
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


def timestep_sinusoid(t: torch.Tensor, dim: int, flip_sin_to_cos: bool, freq_shift: float) -> torch.Tensor:
    """DDPM sinusoidal features of (possibly fractional) timesteps: (B,) -> (B, dim), fp32."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device)
    angles = t.float()[:, None] * torch.exp(exponent / (half - freq_shift))[None]
    halves = [angles.cos(), angles.sin()] if flip_sin_to_cos else [angles.sin(), angles.cos()]
    return F.pad(torch.cat(halves, dim=-1), (0, dim % 2))


def rope_crop_region(grid_hw: tuple[int, int], base_hw: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """Where a (h, w) token grid lands when fitted (aspect kept, centred) into the base grid."""
    (h, w), (base_h, base_w) = grid_hw, base_hw
    if h / w > base_h / base_w:
        fit_h, fit_w = base_h, int(round(base_h / h * w))
    else:
        fit_h, fit_w = int(round(base_w / w * h)), base_w
    top, left = int(round((base_h - fit_h) / 2.0)), int(round((base_w - fit_w) / 2.0))
    return (top, left), (top + fit_h, left + fit_w)


def rotary_embedding(
    frames: int,
    grid_h: int,
    grid_w: int,
    head_dim: int,
    patch_size: int,
    device=None,
    camera_motion: torch.Tensor | None = None,
):
    """3D RoPE for the (f, y, x)-ordered video tokens: unit complex numbers, (F*h*w, head_dim / 2).

    The head dim is split t:y:x = 1/4 : 3/8 : 3/8. Spatial positions are fractional: the token grid is
    stretched over its crop of the base grid, so every resolution covers the same position range.

    ``camera_motion`` (B, F, 3) = per-frame screen similarity (scale, tx, ty), translation in latent cells,
    frame 0 -> frame f about the grid centre: each token then takes the position of the frame-0 point it
    shows (camera-aware RoPE), and the result is (B, F*h*w, head_dim / 2). Identity motion gives exactly
    the plain positions.
    """
    base_hw = (ROPE_BASE_LATENT_HW[0] // patch_size, ROPE_BASE_LATENT_HW[1] // patch_size)
    (top, left), (bottom, right) = rope_crop_region((grid_h, grid_w), base_hw)

    def positions(start: float, stop: float, n: int) -> torch.Tensor:
        return torch.linspace(start, stop * (n - 1) / n, n, dtype=torch.float32, device=device)

    dim_t, dim_hw = head_dim // 4, head_dim // 8 * 3
    if camera_motion is not None:
        return _camera_rope(
            camera_motion, frames, grid_h, grid_w, dim_t, dim_hw, patch_size, (top, left, bottom, right)
        )
    a_t = _rope_angles(positions(0, frames, frames), dim_t)[:, None, None, :].expand(-1, grid_h, grid_w, -1)
    a_y = _rope_angles(positions(top, bottom, grid_h), dim_hw)[None, :, None, :].expand(
        frames, -1, grid_w, -1
    )
    a_x = _rope_angles(positions(left, right, grid_w), dim_hw)[None, None, :, :].expand(
        frames, grid_h, -1, -1
    )
    theta = torch.cat([a_t, a_y, a_x], dim=-1).flatten(0, 2)
    return torch.polar(torch.ones_like(theta), theta)


def _rope_angles(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """RoPE angles (..., dim / 2) for positions of any shape."""
    exponents = torch.arange(0, dim, 2, dtype=torch.float32, device=pos.device) / dim
    return pos[..., None] * (1.0 / (ROPE_THETA**exponents))


def _camera_rope(motion, frames, grid_h, grid_w, dim_t, dim_hw, patch_size, box):
    """rotary_embedding's camera-aware positions: (B, F*h*w, dim/2); see there."""
    top, left, bottom, right = box
    motion = motion.to(torch.float32)
    if motion.ndim != 3 or motion.shape[1:] != (frames, 3):
        raise ValueError(f"camera_motion must have shape (B, {frames}, 3), got {tuple(motion.shape)}")
    device = motion.device

    def step(start: float, stop: float, n: int) -> float:  # plain positions: linspace(start, stop (n-1)/n, n)
        return (stop * (n - 1) / n - start) / (n - 1) if n > 1 else 0.0

    # Token centres in latent cells, relative to the grid centre; back through the similarity to frame 0.
    ys = (
        torch.arange(grid_h, dtype=torch.float32, device=device) + 0.5
    ) * patch_size - grid_h * patch_size / 2
    xs = (
        torch.arange(grid_w, dtype=torch.float32, device=device) + 0.5
    ) * patch_size - grid_w * patch_size / 2
    scale, tx, ty = (motion[..., i, None, None] for i in range(3))  # (B, F, 1, 1)
    y0 = (ys[None, None, :, None] - ty) / scale  # (B, F, h, 1)
    x0 = (xs[None, None, None, :] - tx) / scale  # (B, F, 1, w)
    # Back to token indices (fractional), then onto the plain positions' affine map.
    iy = (y0 + grid_h * patch_size / 2) / patch_size - 0.5
    ix = (x0 + grid_w * patch_size / 2) / patch_size - 0.5
    pos_y = (top + iy * step(top, bottom, grid_h)).expand(-1, -1, grid_h, grid_w)
    pos_x = (left + ix * step(left, right, grid_w)).expand(-1, -1, grid_h, grid_w)
    b = motion.shape[0]
    pos_t = torch.arange(frames, dtype=torch.float32, device=device)[None, :, None, None].expand(
        b, -1, grid_h, grid_w
    )
    theta = torch.cat(
        [_rope_angles(pos_t, dim_t), _rope_angles(pos_y, dim_hw), _rope_angles(pos_x, dim_hw)], -1
    )
    theta = theta.flatten(1, 3)
    return torch.polar(torch.ones_like(theta), theta)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) of (B, S, H, D) fp32 tokens by the (S, D/2) rotations
    (or per-sample (B, S, D/2) rotations: camera-aware RoPE)."""
    pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * (rope[:, None] if rope.ndim == 2 else rope[:, :, None])).flatten(-2)


def join_head_major(text: torch.Tensor, video: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[text; video] along tokens, cast and written once into (B, H, S, D) memory, returned as a
    (B, S, H, D) view: the layout attention kernels read per head, at the cost of a single copy."""
    b, text_len, heads, head_dim = text.shape
    out = text.new_empty(b, heads, text_len + video.shape[1], head_dim, dtype=dtype)
    out[:, :, :text_len] = text.transpose(1, 2)
    out[:, :, text_len:] = video.transpose(1, 2)
    return out.transpose(1, 2)


class AdaLayerNormZero(nn.Module):
    """One fp32 LayerNorm for both streams, modulated by temb; also returns the residual gates."""

    def __init__(self, cond_dim: int, dim: int, eps: float, affine: bool):
        super().__init__()
        self.linear = Linear(cond_dim, 6 * dim)
        self.norm = FP32LayerNorm(dim, eps=eps, elementwise_affine=affine)

    def forward(self, video: torch.Tensor, text: torch.Tensor, temb: torch.Tensor):
        mod = self.linear(F.silu(temb)).float().unsqueeze(1)
        shift, scale, gate, text_shift, text_scale, text_gate = mod.chunk(6, dim=-1)
        video = torch.addcmul(shift, self.norm(video), 1 + scale).to(temb.dtype)
        text = torch.addcmul(text_shift, self.norm(text), 1 + text_scale).to(temb.dtype)
        return video, text, gate, text_gate


class JointAttention(nn.Module):
    """Attention over [text; video] tokens with per-head qk-LayerNorm and RoPE on the video tokens.

    MMDiT blocks project text with its own weights (``add_*``, ``to_add_out``); shared blocks project
    text with the video weights and return it without out-projection.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, separate_text_weights: bool):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (Linear(dim, inner) for _ in range(3))
        self.norm_q, self.norm_k = (FP32LayerNorm(head_dim, eps=QK_NORM_EPS) for _ in range(2))
        self.to_out = nn.ModuleList([Linear(inner, dim)])
        self.add_q_proj = self.add_k_proj = self.add_v_proj = self.to_add_out = None
        self.norm_added_q = self.norm_added_k = None
        if separate_text_weights:
            self.add_q_proj, self.add_k_proj, self.add_v_proj = (Linear(dim, inner) for _ in range(3))
            self.norm_added_q, self.norm_added_k = (
                FP32LayerNorm(head_dim, eps=QK_NORM_EPS) for _ in range(2)
            )
            self.to_add_out = Linear(inner, dim)

    def _qkv(self, x, to_q, to_k, to_v, norm_q, norm_k):
        """(B, S, dim) -> q, k (fp32, normed) and v, each (B, S, heads, head_dim)."""
        split_heads = lambda t: t.unflatten(-1, (self.heads, -1))  # noqa: E731
        return norm_q(split_heads(to_q(x))), norm_k(split_heads(to_k(x))), split_heads(to_v(x))

    def forward(self, video, text, rope: torch.Tensor, attend: AttentionFn):
        vq, vk, vv = self._qkv(video, self.to_q, self.to_k, self.to_v, self.norm_q, self.norm_k)
        if self.add_q_proj is not None:
            tq, tk, tv = self._qkv(
                text, self.add_q_proj, self.add_k_proj, self.add_v_proj, self.norm_added_q, self.norm_added_k
            )
        else:
            tq, tk, tv = self._qkv(text, self.to_q, self.to_k, self.to_v, self.norm_q, self.norm_k)
        q = join_head_major(tq, apply_rope(vq, rope), vv.dtype)
        k = join_head_major(tk, apply_rope(vk, rope), vv.dtype)
        out = attend(q, k, join_head_major(tv, vv, vv.dtype)).flatten(2)
        text_out, video_out = out[:, : text.shape[1]], out[:, text.shape[1] :]
        if self.to_add_out is not None:
            text_out = self.to_add_out(text_out)
        return self.to_out[0](video_out), text_out


class GELUProjection(nn.Module):
    def __init__(self, dim: int, out_dim: int, approximate: str):
        super().__init__()
        self.proj = Linear(dim, out_dim)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(self.proj) is Linear:  # not wrapped (e.g. by a LoRA library): fuse the GELU
            return self.proj(x, gelu=self.approximate)
        return F.gelu(self.proj(x), approximate=self.approximate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, activation_fn: str, dropout: float):
        super().__init__()
        # net.0 / net.2 are diffusers' names; net.1 and net.3 are parameter-free dropouts.
        gelu = GELUProjection(dim, 4 * dim, GELU_APPROXIMATION[activation_fn])
        self.net = nn.ModuleList([gelu, nn.Dropout(dropout), Linear(4 * dim, dim), nn.Dropout(dropout)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TransformerBlock(nn.Module):
    def __init__(self, config: VideoTransformerConfig, mmdit: bool):
        super().__init__()
        c = config
        dim = c.num_attention_heads * c.attention_head_dim
        eps, affine = c.norm_eps, c.norm_elementwise_affine
        self.norm1 = AdaLayerNormZero(c.time_embed_dim, dim, eps, affine)
        self.attn1 = JointAttention(dim, c.num_attention_heads, c.attention_head_dim, mmdit)
        self.norm2 = AdaLayerNormZero(c.time_embed_dim, dim, eps, affine)
        self.ff = FeedForward(dim, c.activation_fn, c.dropout)
        self.txt_ff = FeedForward(dim, c.activation_fn, c.dropout) if mmdit else None
        self.norm3 = FP32LayerNorm(dim, eps=eps, elementwise_affine=affine) if c.after_norm else None

    def forward(self, video, text, temb, rope, attend: AttentionFn):
        # adaLN-zero: modulate the normed input, run the sublayer, add it back through a learned gate.
        x, y, gate, text_gate = self.norm1(video, text, temb)
        x, y = self.attn1(x, y, rope, attend)
        video, text = video.addcmul(gate, x), text.addcmul(text_gate, y)

        x, y, gate, text_gate = self.norm2(video, text, temb)
        x, y = self.ff(x), (self.txt_ff if self.txt_ff is not None else self.ff)(y)
        if self.norm3 is not None:
            x, y = self.norm3(x), self.norm3(y)
        return video.addcmul(gate, x), text.addcmul(text_gate, y)


class AdaLayerNorm(nn.Module):
    """Output norm: LayerNorm modulated by temb (shift first, then scale), no gate."""

    def __init__(self, cond_dim: int, dim: int, eps: float, affine: bool):
        super().__init__()
        self.linear = Linear(cond_dim, 2 * dim)
        self.norm = FP32LayerNorm(dim, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift, scale = self.linear(F.silu(temb)).float().unsqueeze(1).chunk(2, dim=-1)
        return torch.addcmul(shift, self.norm(x), 1 + scale)


# ---- the model ----------------------------------------------------------------------------------------


class VideoTransformer(ModelMixin):
    """EasyAnimate V5.1 MMDiT: ``forward(latents, timestep, text_states) -> predicted (B, 16, F, h, w)``.

    Run it in fp32 or bf16 (``model.to(torch.bfloat16)`` / ``from_pretrained(..., torch_dtype=...)``);
    fp16 is for GPUs only. ``set_attention_backend`` picks the attention kernel (see ``attention.py``);
    ``enable_gradient_checkpointing()`` recomputes each block in the backward pass.
    """

    config_class = VideoTransformerConfig
    diffusers_class_name = "EasyAnimateTransformer3DModel"
    ignored_config_keys = frozenset(_INERT_OFFICIAL_KEYS)
    extension_config_keys = (
        "camera_rope_depth",
        "camera_noise_warp_depth",
    )  # kinema's own fields (see VideoTransformerConfig)

    def __init__(self, config: VideoTransformerConfig):
        super().__init__()
        _check_config(config)
        self.config = c = config
        dim = c.num_attention_heads * c.attention_head_dim
        p = c.patch_size
        self.time_embedding = TimestepEmbedding(dim, c.time_embed_dim, c.timestep_activation_fn)
        self.proj = nn.Conv2d(c.in_channels, dim, kernel_size=p, stride=p)
        if c.add_norm_text_encoder:
            self.text_proj = TextProjection(
                RMSNorm(c.text_embed_dim, TEXT_NORM_EPS), Linear(c.text_embed_dim, dim)
            )
        else:
            self.text_proj = Linear(c.text_embed_dim, dim)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(c, mmdit=i < c.mmdit_layers) for i in range(c.num_layers)
        )
        self.norm_final = FP32LayerNorm(dim, eps=c.norm_eps, elementwise_affine=c.norm_elementwise_affine)
        self.norm_out = AdaLayerNorm(c.time_embed_dim, dim, c.norm_eps, c.norm_elementwise_affine)
        self.proj_out = Linear(dim, p * p * c.out_channels)
        self.gradient_checkpointing = False
        self.attention_backend = "auto"

    # ---- switches -------------------------------------------------------------------------------
    def enable_gradient_checkpointing(self) -> None:
        """Recompute each block's activations during backward (only when grad is enabled)."""
        self.gradient_checkpointing = True

    def disable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = False

    def set_attention_backend(self, name: str) -> None:
        """``"auto"`` (CPU inference: ``"chunked"``, else ``"sdpa"``), ``"sdpa"``, ``"chunked"``, or registered."""
        get_attention_backend(name)  # unknown names fail here, not at the next forward
        self.attention_backend = name

    @classmethod
    def config_from_dict(cls, data: dict[str, Any], source: str = "config") -> VideoTransformerConfig:
        for key, inert in _INERT_OFFICIAL_KEYS.items():
            if inert is not None and data.get(key) not in inert:
                raise CheckpointError(
                    f"{source}: {key}={data[key]!r} needs modules EasyAnimate V5.1 does not have "
                    f"(diffusers ignores it silently); only {inert} is supported"
                )
        return super().config_from_dict(data, source)

    @classmethod
    def from_pretrained(cls, path, subfolder=None, torch_dtype=None, device="cpu") -> VideoTransformer:
        if torch_dtype == torch.float16 and torch.device(device).type == "cpu":
            warnings.warn(
                "loading in float16 on CPU: move the model to a GPU before running it; CPU fp16 matmuls "
                "are ~1000x slower than bf16 (use torch_dtype=torch.bfloat16 on CPU)",
                stacklevel=2,
            )
        return super().from_pretrained(path, subfolder=subfolder, torch_dtype=torch_dtype, device=device)

    # ---- forward --------------------------------------------------------------------------------
    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float,
        text_states: torch.Tensor,
        inpaint_latents: torch.Tensor | None = None,
        control_latents: torch.Tensor | None = None,
        camera_motion: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict from noisy ``latents`` (B, C, F, h, w) at ``timestep`` (B,) or scalar, in [0, 1000].

        ``text_states`` (B, L, text_embed_dim) are the text encoder's hidden states; padded tokens take
        part in attention exactly as in EasyAnimate (the DiT has no text mask). ``inpaint_latents``
        (InP: mask + masked video) and ``control_latents`` (Control/Camera) are concatenated to
        ``latents`` on channels, in that order, and must add up to ``in_channels``. Returns
        (B, out_channels, F, h, w) in ``latents.dtype``. ``camera_motion`` (B or 1, F, 3): see
        ``camera_rope_depth``; ignored by models without it (their camera is the Plücker input alone).
        """
        device = self.proj.weight.device
        if self.proj.weight.dtype == torch.float16 and device.type == "cpu":
            raise RuntimeError(
                "VideoTransformer in float16 on CPU: CPU fp16 matmuls run at ~0.4 GFLOP/s. "
                "Use model.to(torch.bfloat16) (fast on CPU) or float32; fp16 is for GPUs."
            )
        # CPU inference: linears and attention split over per-core workers (no-op with grad or 1 thread).
        with spread_over_cores() if device.type == "cpu" else contextlib.nullcontext():
            return self._forward(
                latents, timestep, text_states, inpaint_latents, control_latents, camera_motion
            )

    def _forward(
        self, latents, timestep, text_states, inpaint_latents, control_latents, camera_motion=None
    ) -> torch.Tensor:
        c = self.config
        dtype, device = self.proj.weight.dtype, self.proj.weight.device
        x = torch.cat([t for t in (latents, inpaint_latents, control_latents) if t is not None], dim=1)
        batch, channels, frames, height, width = x.shape
        p = c.patch_size
        if channels != c.in_channels:
            raise ValueError(
                f"latents + inpaint_latents + control_latents have {channels} channels, the model takes "
                f"{c.in_channels} (T2V 16, InP 33, Control 48)"
            )
        if height % p or width % p:
            raise ValueError(f"latent height/width ({height}, {width}) must be multiples of patch {p}")
        grid_h, grid_w = height // p, width // p
        timestep = torch.as_tensor(timestep, device=device).reshape(-1).expand(batch)

        dim = c.num_attention_heads * c.attention_head_dim
        sinusoid = timestep_sinusoid(timestep, dim, c.flip_sin_to_cos, c.freq_shift)
        temb = self.time_embedding(sinusoid.to(dtype))
        # Per-frame patch embedding; tokens come out (f, y, x)-ordered.
        video = self.proj(x.transpose(1, 2).flatten(0, 1).to(dtype))  # (B*F, dim, h/p, w/p)
        video = video.flatten(2).transpose(1, 2).reshape(batch, -1, dim).float()
        text = self.text_proj(text_states.to(dtype)).float()
        if c.camera_rope_depth is None:
            camera_motion = None  # only camera-aware models read it
        elif camera_motion is not None:
            camera_motion = camera_motion.to(device).expand(batch, -1, -1)
        rope = rotary_embedding(frames, grid_h, grid_w, c.attention_head_dim, p, device, camera_motion)
        attend = get_attention_backend(self.attention_backend)

        for block in self.transformer_blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                video, text = checkpoint(block, video, text, temb, rope, attend, use_reentrant=False)
            else:
                video, text = block(video, text, temb, rope, attend)

        video = self.proj_out(self.norm_out(self.norm_final(video), temb).to(dtype))
        # Unpatchify: each token's features are ordered (channel, dy, dx).
        out = video.unflatten(1, (frames, grid_h, grid_w)).unflatten(-1, (c.out_channels, p, p))
        out = out.permute(0, 4, 1, 2, 5, 3, 6).reshape(batch, c.out_channels, frames, height, width)
        return out.to(latents.dtype)


def _check_config(c: VideoTransformerConfig) -> None:
    if c.text_embed_dim_t5 is not None:
        raise NotImplementedError(
            "text_embed_dim_t5: a second (T5) text encoder is not used by EasyAnimate V5.1 and not supported"
        )
    if c.activation_fn not in GELU_APPROXIMATION:
        raise ValueError(f"activation_fn={c.activation_fn!r}: supported {sorted(GELU_APPROXIMATION)}")
    if c.timestep_activation_fn not in ACTIVATIONS:
        raise ValueError(
            f"timestep_activation_fn={c.timestep_activation_fn!r}: supported {sorted(ACTIVATIONS)}"
        )
    if c.time_position_encoding_type != "3d_rope":
        raise ValueError(
            f"time_position_encoding_type={c.time_position_encoding_type!r}: only '3d_rope' (V5.1)"
        )
    if c.attention_head_dim % 16:
        raise ValueError(
            f"attention_head_dim={c.attention_head_dim} must be a multiple of 16 for the 3D RoPE split"
        )
    for key in ("camera_rope_depth", "camera_noise_warp_depth"):
        depth = getattr(c, key)
        if depth is not None and not (isinstance(depth, (int, float)) and math.isfinite(depth) and depth > 0):
            raise ValueError(
                f"{key}={depth!r}: must be a positive number (pose units) or null to turn it off"
            )
