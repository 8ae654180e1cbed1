"""The causal video VAE of EasyAnimate V5.1 (the "magvit" VAE), weight-compatible with diffusers.

``VideoVAE`` has exactly the parameter names of diffusers' ``AutoencoderKLMagvit``, and its config fields
are that class's ``__init__`` arguments, so an official ``vae/`` folder loads unchanged. With the
official config a video (B, 3, 4k+1, H, W) in [-1, 1] maps to latents (B, 16, k+1, H/8, W/8): the first
frame is coded alone (so a single frame is an image), every later latent frame codes 4 frames.

How it runs
-----------
Every temporal convolution is causal: output frame t sees input frames t-2..t, and the start of the
video is padded by repeating the first frame. The video is processed as a *stream* of chunks of latent
frames. Each causal conv keeps the input frames its next window still needs (2 frames, or 1 after a
stride-2 conv) in a ``StreamCache`` that belongs to one encode/decode call and is passed explicitly;
the modules hold no state, so nothing leaks between calls, even after an exception. With per-frame
group norm (``spatial_group_norm=True``, the official setting) every layer is then frame-local or
causal, so any chunking gives the same result as one pass, and peak memory is set by the chunk
size, not the video length. Unlike the reference, each causal conv is one conv3d over the whole
chunk, not a Python loop over 3-frame windows.

Large frames can be split into overlapping spatial tiles whose outputs are blended (``enable_tiling``).
Latents are *unscaled*: diffusion models see ``latents * config.scaling_factor`` (as in diffusers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .modeling_utils import ModelMixin

# Block type -> does the block also resample time (besides 2x in height and width)?
DOWN_BLOCK_TYPES = {"SpatialDownBlock3D": False, "SpatialTemporalDownBlock3D": True}
UP_BLOCK_TYPES = {"SpatialUpBlock3D": False, "SpatialTemporalUpBlock3D": True}
ACTIVATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "silu": F.silu,
    "swish": F.silu,
    "relu": F.relu,
    "gelu": F.gelu,
    "mish": F.mish,
}
NORM_EPS = 1e-6

# Per-call state of the causal layers: module -> the tail of its input stream (or a start marker).
StreamCache = dict


@dataclasses.dataclass
class VideoVAEConfig:
    """The arguments of diffusers' ``AutoencoderKLMagvit`` (= the keys of its config.json)."""

    in_channels: int = 3
    latent_channels: int = 16
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    down_block_types: tuple[str, ...] = (
        "SpatialDownBlock3D",
        "SpatialTemporalDownBlock3D",
        "SpatialTemporalDownBlock3D",
        "SpatialTemporalDownBlock3D",
    )
    up_block_types: tuple[str, ...] = (
        "SpatialUpBlock3D",
        "SpatialTemporalUpBlock3D",
        "SpatialTemporalUpBlock3D",
        "SpatialTemporalUpBlock3D",
    )
    layers_per_block: int = 2
    act_fn: str = "silu"
    norm_num_groups: int = 32
    scaling_factor: float = 0.7125
    # True: group norm statistics per frame (official). False: over all frames of a chunk, which makes
    # the result depend on the chunking, so the reference chunking (one latent frame) is then used.
    spatial_group_norm: bool = True

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(self.block_out_channels)
        self.down_block_types = tuple(self.down_block_types)
        self.up_block_types = tuple(self.up_block_types)
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(
                f"block_out_channels has {n} entries but down_block_types has {len(self.down_block_types)} "
                f"and up_block_types {len(self.up_block_types)}; they must match"
            )
        for name, types, known in (
            ("down_block_types", self.down_block_types, DOWN_BLOCK_TYPES),
            ("up_block_types", self.up_block_types, UP_BLOCK_TYPES),
        ):
            unknown = [t for t in types if t not in known]
            if unknown:
                raise ValueError(f"{name}: unknown block type(s) {unknown}; known: {sorted(known)}")
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"act_fn '{self.act_fn}' is not one of {sorted(ACTIVATIONS)}")
        if self.layers_per_block < 1:
            raise ValueError(f"layers_per_block must be >= 1, got {self.layers_per_block}")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups={self.norm_num_groups} does not divide block width(s) {bad}")
        if self.temporal_compression != _temporal_factor(self.up_block_types, UP_BLOCK_TYPES):
            raise ValueError(
                f"down_block_types compress time {self.temporal_compression}x but up_block_types "
                f"expand it {_temporal_factor(self.up_block_types, UP_BLOCK_TYPES)}x; they must agree"
            )

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)  # every block but the last halves H and W

    @property
    def temporal_compression(self) -> int:
        return _temporal_factor(self.down_block_types, DOWN_BLOCK_TYPES)


def _temporal_factor(block_types: tuple[str, ...], temporal: dict[str, bool]) -> int:
    return 2 ** sum(temporal[t] for t in block_types[:-1])  # the last block never resamples


# ---- layers ------------------------------------------------------------------------------------


class CausalConv3d(nn.Conv3d):
    """A 3x3x3 conv that only looks back in time, run chunk by chunk over a stream of frames.

    Output frame j reads stream frames [j*stride, j*stride + 3). The stream starts with two copies of
    the first frame (the reference's replicate padding); each later chunk is prefixed with the frames
    the next window still needs, which the cache carries. Height and width are zero-padded as in a
    plain conv. Parameters are nn.Conv3d's (``weight``, ``bias``).
    """

    def __init__(self, in_channels: int, out_channels: int, stride=(1, 1, 1), padding: int = 1):
        super().__init__(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=(0, padding, padding)
        )

    def forward(self, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        k, stride = self.kernel_size[0], self.stride[0]
        tail = cache.get(self) if cache is not None else None
        if tail is None:
            tail = x[:, :, :1].expand(-1, -1, k - 1, -1, -1)
        stream = torch.cat([tail, x], dim=2)
        if cache is not None:
            next_window = ((stream.shape[2] - k) // stride + 1) * stride
            cache[self] = stream[:, :, next_window:].clone()  # a copy: a view would pin the whole chunk
        # One conv over the chunk (the reference loops over 3-frame windows in Python).
        return F.conv3d(stream, self.weight, self.bias, self.stride, self.padding)


def frame_group_norm(x: torch.Tensor, norm: nn.GroupNorm, per_frame: bool) -> torch.Tensor:
    """Group norm of a (B, C, T, H, W) tensor, with statistics per frame or over all T frames.

    The per-frame result is a (B, C, T, H, W) view of frame-major memory; the next conv's input
    concatenation turns it back, so the layout change costs one copy each way.
    """
    if not per_frame:
        return norm(x)
    b, c, t, h, w = x.shape
    frames = x.transpose(1, 2).reshape(b * t, c, h, w)
    return norm(frames).reshape(b, t, c, h, w).transpose(1, 2)


def activate(x: torch.Tensor, act: Callable[..., torch.Tensor]) -> torch.Tensor:
    """The nonlinearity, in place when no autograd graph is recorded (saves a large allocation)."""
    if torch.is_grad_enabled() or act is F.gelu:
        return act(x)
    return act(x, inplace=True)


class ResidualBlock3D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, config: VideoVAEConfig, per_frame_norm: bool):
        super().__init__()
        groups = config.norm_num_groups
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=NORM_EPS)
        self.conv1 = CausalConv3d(in_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=NORM_EPS)
        self.conv2 = CausalConv3d(out_channels, out_channels)
        # A 1x1x1 projection only when the width changes (diffusers: an Identity, no parameters).
        self.shortcut = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.act = ACTIVATIONS[config.act_fn]
        self.per_frame_norm = per_frame_norm

    def forward(self, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        h = self.conv1(activate(frame_group_norm(x, self.norm1, self.per_frame_norm), self.act), cache)
        h = self.conv2(activate(frame_group_norm(h, self.norm2, self.per_frame_norm), self.act), cache)
        return h.add_(self.shortcut(x) if self.shortcut is not None else x)  # h is fresh: safe in place


class Downsampler(nn.Module):
    """Halve H and W (and time, if temporal) with a strided causal conv; pads right/bottom only."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, stride=(2 if temporal else 1, 2, 2), padding=0)

    def forward(self, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)), cache)


class Upsampler(nn.Module):
    """Double H and W (nearest) then conv; if temporal, then double every frame but the stream's first."""

    def __init__(self, channels: int, temporal: bool, trilinear: bool):
        super().__init__()
        self.conv = CausalConv3d(channels, channels)
        self.temporal = temporal
        self.trilinear = trilinear

    def forward(self, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        x = self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"), cache)
        if not self.temporal:
            return x
        at_stream_start = cache is None or self not in cache
        if cache is not None:
            cache[self] = True  # the stream has started: from now on every frame is doubled
        first, rest = (x[:, :, :1], x[:, :, 1:]) if at_stream_start else (None, x)
        if rest.shape[2]:
            if self.trilinear:
                rest = F.interpolate(rest, scale_factor=(2, 1, 1), mode="trilinear")
            else:
                rest = rest.repeat_interleave(2, dim=2)
        return rest if first is None else torch.cat([first, rest], dim=2)


def residual_blocks(in_channels: int, out_channels: int, num: int, config: VideoVAEConfig, per_frame: bool):
    return nn.ModuleList(
        ResidualBlock3D(in_channels if i == 0 else out_channels, out_channels, config, per_frame)
        for i in range(num)
    )


class DownBlock(nn.Module):
    """Residual blocks, then (except in the last block) a downsampler."""

    def __init__(self, in_channels: int, out_channels: int, config: VideoVAEConfig, temporal: bool | None):
        super().__init__()
        per_frame = config.spatial_group_norm
        self.convs = residual_blocks(in_channels, out_channels, config.layers_per_block, config, per_frame)
        self.downsampler = Downsampler(out_channels, temporal) if temporal is not None else None

    def forward(self, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        for block in self.convs:
            x = block(x, cache)
        return x if self.downsampler is None else self.downsampler(x, cache)


class UpBlock(nn.Module):
    """One more residual block than a DownBlock, then (except in the last block) an upsampler."""

    def __init__(self, in_channels: int, out_channels: int, config: VideoVAEConfig, temporal: bool | None):
        super().__init__()
        per_frame, num_layers = config.spatial_group_norm, config.layers_per_block + 1
        self.convs = residual_blocks(in_channels, out_channels, num_layers, config, per_frame)
        # Without per-frame norm the reference interpolates time linearly instead of repeating frames.
        upsampler = (
            Upsampler(out_channels, temporal, trilinear=not per_frame) if temporal is not None else None
        )
        self.upsampler = upsampler

    def forward(self, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        for block in self.convs:
            x = block(x, cache)
        return x if self.upsampler is None else self.upsampler(x, cache)


class MidBlock(nn.Module):
    def __init__(self, channels: int, config: VideoVAEConfig, per_frame: bool):
        super().__init__()
        self.convs = residual_blocks(channels, channels, config.layers_per_block, config, per_frame)

    def forward(self, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        for block in self.convs:
            x = block(x, cache)
        return x


class Encoder(nn.Module):
    def __init__(self, config: VideoVAEConfig):
        super().__init__()
        widths, last = config.block_out_channels, len(config.block_out_channels) - 1
        self.conv_in = CausalConv3d(config.in_channels, widths[0])
        self.down_blocks = nn.ModuleList(
            DownBlock(widths[max(i - 1, 0)], widths[i], config, None if i == last else DOWN_BLOCK_TYPES[kind])
            for i, kind in enumerate(config.down_block_types)
        )
        self.mid_block = MidBlock(widths[-1], config, per_frame=config.spatial_group_norm)
        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, widths[-1], eps=NORM_EPS)
        self.conv_out = CausalConv3d(widths[-1], 2 * config.latent_channels)  # mean and log-variance
        self.act = ACTIVATIONS[config.act_fn]
        self.per_frame_norm = config.spatial_group_norm

    def forward(self, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        x = self.conv_in(x, cache)
        for block in self.down_blocks:
            x = block(x, cache)
        x = self.mid_block(x, cache)
        x = activate(frame_group_norm(x, self.conv_norm_out, self.per_frame_norm), self.act)
        return self.conv_out(x, cache)


class Decoder(nn.Module):
    def __init__(self, config: VideoVAEConfig):
        super().__init__()
        widths, last = config.block_out_channels[::-1], len(config.block_out_channels) - 1
        self.conv_in = CausalConv3d(config.latent_channels, widths[0])
        # The reference's decoder mid block normalises per frame whatever spatial_group_norm says.
        self.mid_block = MidBlock(widths[0], config, per_frame=True)
        self.up_blocks = nn.ModuleList(
            UpBlock(widths[max(i - 1, 0)], widths[i], config, None if i == last else UP_BLOCK_TYPES[kind])
            for i, kind in enumerate(config.up_block_types)
        )
        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, widths[-1], eps=NORM_EPS)
        self.conv_out = CausalConv3d(widths[-1], config.out_channels)
        self.act = ACTIVATIONS[config.act_fn]
        self.per_frame_norm = config.spatial_group_norm

    def forward(self, z: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z, cache), cache)
        for block in self.up_blocks:
            x = block(x, cache)
        x = activate(frame_group_norm(x, self.conv_norm_out, self.per_frame_norm), self.act)
        return self.conv_out(x, cache)


# ---- the model ---------------------------------------------------------------------------------


class GaussianPosterior:
    """Diagonal Gaussian q(z | video) from the encoder's moments (mean and log-variance on dim 1)."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)  # as diffusers: keeps exp() finite

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def var(self) -> torch.Tensor:
        return torch.exp(self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * noise

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, summed over channels, frames, height and width: shape (B,)."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).flatten(1).sum(1)


class VideoVAE(ModelMixin):
    """Causal video VAE: (B, C, 1 + t*k, H, W) <-> latents (B, latent_channels, 1 + k, H/s, W/s).

    t = ``config.temporal_compression`` (4 officially), s = ``config.spatial_compression`` (8).
    ``encode`` returns a ``GaussianPosterior``; ``decode`` returns the video tensor; no output wrappers.
    """

    config_class = VideoVAEConfig
    diffusers_class_name = "AutoencoderKLMagvit"
    # Keys some EasyAnimate/diffusers configs carry that do not change the computation.
    ignored_config_keys = frozenset({"force_upcast", "sample_size"})

    def __init__(self, config: VideoVAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv3d(2 * config.latent_channels, 2 * config.latent_channels, 1)
        self.post_quant_conv = nn.Conv3d(config.latent_channels, config.latent_channels, 1)
        self.tile_size: int | None = None  # spatial tiling is off until enable_tiling()
        self.tile_overlap = 0

    # ---- frame bookkeeping ----------------------------------------------------------------------
    def num_latent_frames(self, num_frames: int) -> int:
        return (num_frames - 1) // self.config.temporal_compression + 1

    def num_video_frames(self, num_latent_frames: int) -> int:
        return (num_latent_frames - 1) * self.config.temporal_compression + 1

    def _first_video_frame(self, latent_index: int) -> int:
        """Index of the first video frame coded by latent frame ``latent_index``."""
        return max(0, self.num_video_frames(latent_index + 1) - self.config.temporal_compression)

    def _latent_chunks(self, num_latent: int, chunk_latent_frames: int | None) -> Iterator[tuple[int, int]]:
        if chunk_latent_frames is not None and (
            not isinstance(chunk_latent_frames, int) or chunk_latent_frames < 1
        ):
            raise ValueError(
                f"chunk_latent_frames must be a positive int or None, got {chunk_latent_frames!r}"
            )
        if not self.config.spatial_group_norm:
            chunk_latent_frames = 1  # chunk-wide norm statistics: use the reference's chunking
        step = chunk_latent_frames or num_latent
        for start in range(0, num_latent, step):
            yield start, min(start + step, num_latent)

    # ---- tiling -----------------------------------------------------------------------------------
    def enable_tiling(self, tile_size: int = 256, overlap: int = 64) -> None:
        """Encode/decode frames larger than ``tile_size`` pixels as overlapping tiles, blended linearly.

        Both are in video pixels and must be multiples of the spatial compression (8), with
        0 <= overlap < tile_size.
        """
        s = self.config.spatial_compression
        if tile_size % s or overlap % s or not 0 <= overlap < tile_size:
            raise ValueError(
                f"tile_size={tile_size}, overlap={overlap}: both must be multiples of {s} with "
                f"0 <= overlap < tile_size"
            )
        self.tile_size, self.tile_overlap = tile_size, overlap

    def disable_tiling(self) -> None:
        self.tile_size = None

    # ---- encode / decode --------------------------------------------------------------------------
    def encode(self, video: torch.Tensor, chunk_latent_frames: int | None = 1) -> GaussianPosterior:
        """Encode (B, C, 1 + t*k, H, W) in [-1, 1] to the posterior over (B, L, 1 + k, H/s, W/s) latents.

        The video runs through the encoder ``chunk_latent_frames`` latent frames (t video frames each)
        at a time; None: all at once. With per-frame norm the result does not depend on it, only the
        peak memory does, which grows with the chunk, not with the video length.
        """
        self._check_video(video)
        video = video.to(self.dtype)
        b, _, f, h, w = video.shape
        s = self.config.spatial_compression
        shape = (b, 2 * self.config.latent_channels, self.num_latent_frames(f), h // s, w // s)
        tiles = self._tile_plan(h // s, w // s, scale=1)
        moments = video.new_empty(shape) if len(tiles) == 1 else video.new_zeros(shape)
        for (y0, y1), (x0, x1), weight in tiles:
            tile = video[:, :, :, y0 * s : y1 * s, x0 * s : x1 * s]
            cache: StreamCache = {}
            for start, stop in self._latent_chunks(shape[2], chunk_latent_frames):
                frames = tile[:, :, self._first_video_frame(start) : self._first_video_frame(stop)]
                out = self.quant_conv(self.encoder(frames, cache))
                _blend_into(moments[:, :, start:stop, y0:y1, x0:x1], out, weight)
        return GaussianPosterior(moments)

    def decode(self, latents: torch.Tensor, chunk_latent_frames: int | None = 1) -> torch.Tensor:
        """Decode unscaled latents (B, L, 1 + k, h, w) to a video (B, C, 1 + t*k, h*s, w*s), about [-1, 1].

        Latents from a diffusion model must be divided by ``config.scaling_factor`` first. Decoding runs
        ``chunk_latent_frames`` latent frames at a time (None: all at once), as for ``encode``.
        """
        self._check_latents(latents)
        latents = latents.to(self.dtype)
        b, _, n, h, w = latents.shape
        s = self.config.spatial_compression
        shape = (b, self.config.out_channels, self.num_video_frames(n), h * s, w * s)
        tiles = self._tile_plan(h, w, scale=s)
        video = latents.new_empty(shape) if len(tiles) == 1 else latents.new_zeros(shape)
        for (y0, y1), (x0, x1), weight in tiles:
            tile = latents[:, :, :, y0:y1, x0:x1]
            cache: StreamCache = {}
            for start, stop in self._latent_chunks(n, chunk_latent_frames):
                out = self.decoder(self.post_quant_conv(tile[:, :, start:stop]), cache)
                frames = slice(self._first_video_frame(start), self._first_video_frame(stop))
                _blend_into(video[:, :, frames, y0 * s : y1 * s, x0 * s : x1 * s], out, weight)
        return video

    def forward(
        self, video: torch.Tensor, sample_posterior: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Reconstruct a video through the latent space (the posterior mode unless sampling)."""
        posterior = self.encode(video)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z)

    def _tile_plan(self, height: int, width: int, scale: int) -> list:
        """Tiles of a (height, width) latent grid as (rows, cols, weight); one weightless tile if untiled.

        ``weight`` has the tile's size times ``scale`` (the output's pixels per latent pixel). It ramps
        linearly across overlaps with neighbouring tiles and is normalised so the weights of all tiles
        sum to 1 at every output pixel: the result is a weighted average of the tiles.
        """
        s = self.config.spatial_compression
        if self.tile_size is None or (height * s <= self.tile_size and width * s <= self.tile_size):
            return [((0, height), (0, width), None)]
        size, overlap = self.tile_size // s, self.tile_overlap // s
        tiles, total = [], torch.zeros(height * scale, width * scale)
        for y0 in _tile_starts(height, size, overlap):
            for x0 in _tile_starts(width, size, overlap):
                y1, x1 = min(y0 + size, height), min(x0 + size, width)
                wy = _ramp((y1 - y0) * scale, overlap * scale, y0 > 0, y1 < height)
                wx = _ramp((x1 - x0) * scale, overlap * scale, x0 > 0, x1 < width)
                weight = wy[:, None] * wx[None, :]
                total[y0 * scale : y1 * scale, x0 * scale : x1 * scale] += weight
                tiles.append(((y0, y1), (x0, x1), weight))
        normalised = []
        for (y0, y1), (x0, x1), weight in tiles:
            weight = weight / total[y0 * scale : y1 * scale, x0 * scale : x1 * scale]
            normalised.append(((y0, y1), (x0, x1), weight.to(self.device, self.dtype)))
        return normalised

    # ---- input checks (cheap, before any heavy work) ----------------------------------------------
    def _check_video(self, video: torch.Tensor) -> None:
        c, t, s = self.config.in_channels, self.config.temporal_compression, self.config.spatial_compression
        _check_tensor(video, "video", ("batch", "channels", "frames", "height", "width"))
        b, ch, f, h, w = video.shape
        if ch != c:
            raise ValueError(f"video has {ch} channels; the VAE needs {c} (layout is B, C, F, H, W)")
        if f < 1 or (f - 1) % t:
            low = (max(f, 1) - 1) // t * t + 1
            nearest = f"{low} or {low + t}" if f > 1 else str(low)
            raise ValueError(f"video has {f} frames; the VAE needs {t}k+1 frames (nearest: {nearest})")
        for name, size in (("height", h), ("width", w)):
            if size < s or size % s:
                low = size // s * s
                nearest = f"{low} or {low + s}" if low else str(s)
                raise ValueError(f"video {name} is {size}; it must be a multiple of {s} (nearest: {nearest})")
        _check_finite(video, "video")

    def _check_latents(self, latents: torch.Tensor) -> None:
        _check_tensor(latents, "latents", ("batch", "channels", "frames", "height", "width"))
        if latents.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"latents have {latents.shape[1]} channels; the VAE needs {self.config.latent_channels}"
            )
        _check_finite(latents, "latents")


def _check_tensor(x, name: str, dims: tuple[str, ...]) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != len(dims):
        hint = " (for images add a frame axis: x.unsqueeze(2))" if x.ndim == len(dims) - 1 else ""
        raise ValueError(
            f"{name} must be {len(dims)}-D ({', '.join(dims)}); got shape {tuple(x.shape)}{hint}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _check_finite(x: torch.Tensor, name: str) -> None:
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _tile_starts(length: int, size: int, overlap: int) -> list[int]:
    """Tile starts covering [0, length) with >= ``overlap`` shared pixels; the last tile ends flush."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, size - overlap))
    return starts + [length - size]


def _ramp(n: int, overlap: int, ramp_in: bool, ramp_out: bool) -> torch.Tensor:
    """Blend weights along one axis: linear over ``overlap`` pixels at edges shared with a neighbour."""
    w = torch.ones(n)
    if overlap:
        up = (torch.arange(overlap) + 0.5) / overlap  # strictly positive: every pixel keeps some weight
        if ramp_in:
            w[:overlap] = torch.minimum(w[:overlap], up)
        if ramp_out:
            w[-overlap:] = torch.minimum(w[-overlap:], up.flip(0))
    return w


def _blend_into(target: torch.Tensor, out: torch.Tensor, weight: torch.Tensor | None) -> None:
    """Write (untiled) or add the weighted tile output into a view of the result."""
    if weight is None:
        target.copy_(out)
    else:
        target.add_(out * weight)
