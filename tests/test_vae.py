"""VideoVAE: conformance with diffusers' AutoencoderKLMagvit, causality, chunking, tiling, bad input."""

import inspect
import json

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLMagvit

from kinema.models import VideoVAE, VideoVAEConfig
from kinema.models.vae import GaussianPosterior

ATOL = 1e-5  # fp32 conformance tolerance (max abs) against diffusers with the same weights

SMALL = dict(block_out_channels=(8, 16, 32, 32), norm_num_groups=4, latent_channels=4, layers_per_block=1)
# Fewer blocks, other widths and depth: temporal 2x, spatial 4x.
NARROW = dict(
    block_out_channels=(16, 24, 24),
    down_block_types=("SpatialDownBlock3D", "SpatialTemporalDownBlock3D", "SpatialTemporalDownBlock3D"),
    up_block_types=("SpatialUpBlock3D", "SpatialTemporalUpBlock3D", "SpatialTemporalUpBlock3D"),
    norm_num_groups=8,
    latent_channels=6,
    layers_per_block=2,
    act_fn="mish",
)


def make_pair(config: dict, seed: int = 0) -> tuple[AutoencoderKLMagvit, VideoVAE]:
    """diffusers' model with random weights (norm affines too) and a VideoVAE holding the same ones."""
    torch.manual_seed(seed)
    ref = AutoencoderKLMagvit(**config).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    ours = VideoVAE.from_config(config).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)  # strict: exactly the same keys and shapes
    return ref, ours


def video(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


# ---- conformance with diffusers -------------------------------------------------------------------


def test_default_config_and_state_dict_match_diffusers():
    defaults = {
        name: p.default for name, p in inspect.signature(AutoencoderKLMagvit.__init__).parameters.items()
    }
    del defaults["self"]
    ours = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(VideoVAEConfig()).items()}
    assert ours == {k: list(v) if isinstance(v, (tuple, list)) else v for k, v in defaults.items()}
    with torch.device("meta"):  # full size, no memory
        ref_shapes = {k: v.shape for k, v in AutoencoderKLMagvit().state_dict().items()}
        our_shapes = {k: v.shape for k, v in VideoVAE.from_config().state_dict().items()}
    assert our_shapes == ref_shapes
    assert VideoVAEConfig().scaling_factor == 0.7125


@pytest.mark.parametrize(
    "config, shape, chunk",
    [
        (SMALL, (1, 3, 9, 32, 32), 1),
        (SMALL, (2, 3, 17, 24, 40), 2),  # batch 2, non-square, 17 frames
        (SMALL, (1, 3, 1, 16, 16), 1),  # an image
        (NARROW, (1, 3, 9, 16, 24), None),
        ({**SMALL, "spatial_group_norm": False}, (1, 3, 9, 16, 16), 2),  # forces the reference chunking
    ],
    ids=["small-9f", "small-b2-17f-nonsquare", "small-image", "narrow-3blocks", "chunk-wide-norm"],
)
def test_matches_diffusers(config, shape, chunk):
    ref, ours = make_pair(config)
    x = video(*shape)
    with torch.no_grad():
        ref_post = ref.encode(x).latent_dist
        post = ours.encode(x, chunk_latent_frames=chunk)
        assert max_diff(post.mean, ref_post.mean) < ATOL
        assert max_diff(post.logvar, ref_post.logvar) < ATOL
        assert max_diff(post.std, ref_post.std) < ATOL
        # diffusers sums its KL over dims 1-3 only; over the last one too it is ours (per sample)
        torch.testing.assert_close(post.kl(), ref_post.kl().sum(-1), rtol=1e-5, atol=1e-4)
        sample = post.sample(torch.Generator().manual_seed(3))
        assert max_diff(sample, ref_post.sample(torch.Generator().manual_seed(3))) < ATOL
        assert torch.equal(post.mode(), post.mean)

        z = ref_post.mean
        decoded = ours.decode(z, chunk_latent_frames=chunk)
        assert max_diff(decoded, ref.decode(z).sample) < ATOL
    t, s = ours.config.temporal_compression, ours.config.spatial_compression
    b, _, f, h, w = shape
    assert post.mean.shape == (b, config["latent_channels"], (f - 1) // t + 1, h // s, w // s)
    assert decoded.shape == shape


def test_folders_round_trip_with_diffusers(tmp_path):
    ref, ours = make_pair(SMALL)
    z = torch.randn(1, 4, 3, 4, 4)
    with torch.no_grad():
        expected = ref.decode(z).sample

        ref.save_pretrained(tmp_path / "from_diffusers")  # writes _class_name, _diffusers_version, ...
        loaded = VideoVAE.from_pretrained(tmp_path / "from_diffusers")
        assert loaded.config == ours.config
        assert max_diff(loaded.decode(z), expected) < ATOL

        ours.save_pretrained(tmp_path / "from_kinema")
        back = AutoencoderKLMagvit.from_pretrained(tmp_path / "from_kinema").eval()
        assert max_diff(back.decode(z).sample, expected) == 0
    for key, value in ref.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key

    # keys of some published configs that do not change the computation are accepted
    cfg_path = tmp_path / "from_diffusers" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "force_upcast": True, "sample_size": 256, "_name_or_path": "x"}))
    assert VideoVAE.from_pretrained(tmp_path / "from_diffusers").config == ours.config


# ---- causality, chunking, state --------------------------------------------------------------------


def test_chunked_equals_one_pass():
    _, ours = make_pair(SMALL)
    x = video(1, 3, 17, 24, 16)
    with torch.no_grad():
        one_pass = ours.encode(x, chunk_latent_frames=None)
        z = one_pass.mean
        decoded = ours.decode(z, chunk_latent_frames=None)
        for chunk in (1, 2, 3):
            post = ours.encode(x, chunk_latent_frames=chunk)
            assert max_diff(post.mean, one_pass.mean) < 1e-5
            assert max_diff(post.logvar, one_pass.logvar) < 1e-5
            assert max_diff(ours.decode(z, chunk_latent_frames=chunk), decoded) < 1e-5


@pytest.mark.parametrize("chunk", [1, None])
def test_latents_depend_only_on_current_and_earlier_frames(chunk):
    _, ours = make_pair(SMALL)
    x = video(1, 3, 17, 16, 16)
    changed = x.clone()
    changed[:, :, 9] = 0.5  # frame 9 opens latent frame 3 (frames 9-12)
    with torch.no_grad():
        before = ours.encode(x, chunk_latent_frames=chunk).mean
        after = ours.encode(changed, chunk_latent_frames=chunk).mean
        image = ours.encode(x[:, :, :1], chunk_latent_frames=chunk).mean
    assert max_diff(after[:, :, :3], before[:, :, :3]) <= 1e-6
    assert max_diff(after[:, :, 3:], before[:, :, 3:]) > 1e-3
    assert max_diff(image, before[:, :, :1]) <= 1e-6  # the first frame is coded alone

    z = before.clone()
    z[:, :, 2] += 1.0  # latent frame 2 decodes to frames 5-8
    with torch.no_grad():
        decoded, decoded_changed = ours.decode(before, chunk), ours.decode(z, chunk)
    assert max_diff(decoded_changed[:, :, :5], decoded[:, :, :5]) <= 1e-6
    assert max_diff(decoded_changed[:, :, 5:], decoded[:, :, 5:]) > 1e-3


def test_no_state_leaks_between_calls_even_after_an_exception():
    _, ours = make_pair(SMALL)
    _, fresh = make_pair(SMALL)
    x, z = video(1, 3, 13, 16, 16), torch.randn(1, 4, 4, 2, 2)
    calls = {"n": 0}

    def fail_on_second_chunk(module, args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")

    with torch.no_grad():
        for module, run in (
            (ours.encoder.mid_block, lambda: ours.encode(x)),
            (ours.decoder.up_blocks[1], lambda: ours.decode(z)),
        ):
            calls["n"] = 0
            handle = module.register_forward_pre_hook(fail_on_second_chunk)
            with pytest.raises(RuntimeError, match="boom"):
                run()
            handle.remove()
        assert torch.equal(ours.encode(x).mean, fresh.encode(x).mean)
        assert torch.equal(ours.decode(z), fresh.decode(z))
        assert torch.equal(ours.decode(z), fresh.decode(z))  # and again: repeated calls agree


# ---- tiling ----------------------------------------------------------------------------------------


def test_tile_weights_sum_to_one():
    _, ours = make_pair(SMALL)
    ours.enable_tiling(tile_size=32, overlap=16)
    for height, width, scale in ((7, 13, 1), (5, 9, 8)):
        total = torch.zeros(height * scale, width * scale)
        tiles = ours._tile_plan(height, width, scale)
        assert len(tiles) > 1
        for (y0, y1), (x0, x1), weight in tiles:
            total[y0 * scale : y1 * scale, x0 * scale : x1 * scale] += weight
        torch.testing.assert_close(total, torch.ones_like(total))


def test_tiling_is_exact_for_a_spatially_local_network():
    """Stand-ins without spatial context: the blended tiles must then reproduce the untiled result."""
    _, ours = make_pair(SMALL)

    def local_encoder(x, cache):  # one latent frame per 4 frames (the first alone), 8x8 mean pool
        return F.avg_pool3d(x[:, :, ::4], (1, 8, 8)).repeat(1, 3, 1, 1, 1)[:, :8]

    def local_decoder(z, cache):  # 4 frames per latent frame (the stream's first gives 1), nearest 8x
        frames = z[:, :3].repeat_interleave(4, dim=2)
        if not cache:
            frames, cache["started"] = frames[:, :, 3:], True
        return F.interpolate(frames, scale_factor=(1, 8, 8))

    ours.encoder.forward, ours.decoder.forward = local_encoder, local_decoder
    x, z = video(1, 3, 9, 56, 80), torch.randn(1, 4, 3, 7, 10)
    with torch.no_grad():
        expected_mean, expected_video = ours.encode(x).mean, ours.decode(z)
        ours.enable_tiling(tile_size=32, overlap=16)
        torch.testing.assert_close(ours.encode(x).mean, expected_mean, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.decode(z), expected_video, rtol=0, atol=1e-6)


def test_tiling():
    _, ours = make_pair(SMALL)
    x = video(1, 3, 9, 64, 96)
    with torch.no_grad():
        post = ours.encode(x)
        decoded = ours.decode(post.mean)
        ours.enable_tiling(tile_size=96, overlap=16)  # the frame fits one tile: exactly untiled
        assert torch.equal(ours.encode(x).mean, post.mean)
        assert torch.equal(ours.decode(post.mean), decoded)
        ours.enable_tiling(tile_size=64, overlap=16)  # 1x2 tiles
        tiled_mean = ours.encode(x).mean
        tiled_decoded = ours.decode(post.mean)
        ours.disable_tiling()
        assert torch.equal(ours.decode(post.mean), decoded)
    assert tiled_mean.shape == post.mean.shape and tiled_decoded.shape == decoded.shape
    # Tiles see less context near their borders, so results differ. Bounds: 1.5x the mean abs errors
    # measured for this tiny random-weight model (0.031, 0.110; docs/vae.md has full-size figures).
    assert (tiled_mean - post.mean).abs().mean() < 0.05
    assert (tiled_decoded - decoded).abs().mean() < 0.17
    with pytest.raises(ValueError, match="multiples of 8"):
        ours.enable_tiling(tile_size=30, overlap=8)
    with pytest.raises(ValueError, match="overlap"):
        ours.enable_tiling(tile_size=32, overlap=32)


# ---- precision, errors -----------------------------------------------------------------------------


def test_bfloat16_mode():
    _, ours = make_pair(SMALL)
    x = video(1, 3, 9, 32, 32)
    with torch.no_grad():
        post = ours.encode(x)
        decoded = ours.decode(post.mean)
        ours.to(torch.bfloat16)
        post16 = ours.encode(x)  # fp32 input is cast to the model's dtype
        decoded16 = ours.decode(post.mean)
    assert post16.mean.dtype == decoded16.dtype == torch.bfloat16
    assert max_diff(post16.mean, post.mean) < 0.05
    assert max_diff(decoded16, decoded) < 0.1


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 3, 10, 16, 16), r"video has 10 frames; the VAE needs 4k\+1 frames \(nearest: 9 or 13\)"),
        ((1, 3, 0, 16, 16), r"video has 0 frames; .* \(nearest: 1\)"),
        ((1, 3, 9, 20, 16), r"video height is 20; it must be a multiple of 8 \(nearest: 16 or 24\)"),
        ((1, 3, 9, 16, 4), r"video width is 4; it must be a multiple of 8 \(nearest: 8\)"),
        ((1, 4, 9, 16, 16), r"video has 4 channels; the VAE needs 3"),
        ((3, 9, 16, 16), r"video must be 5-D .* got shape \(3, 9, 16, 16\).*unsqueeze\(2\)"),
    ],
)
def test_bad_video_is_rejected_before_any_work(shape, message):
    _, ours = make_pair(SMALL)
    ours.encoder.forward = None  # any call into the network would raise a TypeError instead
    with pytest.raises(ValueError, match=message):
        ours.encode(torch.zeros(shape))


def test_bad_values_and_latents():
    _, ours = make_pair(SMALL)
    x = video(1, 3, 9, 16, 16)
    x[0, 1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        ours.encode(x)
    with pytest.raises(ValueError, match="floating-point"):
        ours.encode(torch.zeros(1, 3, 9, 16, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match="latents have 16 channels; the VAE needs 4"):
        ours.decode(torch.zeros(1, 16, 3, 2, 2))
    with pytest.raises(ValueError, match="NaN or infinite"):
        ours.decode(torch.full((1, 4, 3, 2, 2), float("inf")))
    with pytest.raises(TypeError, match="torch.Tensor"):
        ours.decode([[0.0]])
    with pytest.raises(ValueError, match="chunk_latent_frames must be a positive int"):
        ours.decode(torch.zeros(1, 4, 3, 2, 2), chunk_latent_frames=0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(norm_num_groups=3), "does not divide"),
        (dict(block_out_channels=(8, 16)), "must match"),
        (dict(down_block_types=("SpatialDownBlock3D",) * 3 + ("Bogus",)), "unknown block type"),
        (dict(up_block_types=("SpatialUpBlock3D",) * 4), "must agree"),
        (dict(act_fn="tanh"), "act_fn"),
        (dict(layers_per_block=0), "layers_per_block"),
    ],
)
def test_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        VideoVAEConfig(**{**SMALL, **overrides})


def test_posterior_and_forward():
    _, ours = make_pair(SMALL)
    x = video(1, 3, 5, 16, 16)
    with torch.no_grad():
        post = ours.encode(x)
        assert isinstance(post, GaussianPosterior)
        assert post.kl().shape == (1,)
        torch.testing.assert_close(post.var, post.std**2)
        assert ours(x).shape == x.shape
        a = ours(x, sample_posterior=True, generator=torch.Generator().manual_seed(0))
        b = ours(x, sample_posterior=True, generator=torch.Generator().manual_seed(0))
        assert torch.equal(a, b)
    assert ours.num_latent_frames(17) == 5 and ours.num_video_frames(5) == 17
