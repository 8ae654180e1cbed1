"""VideoTransformer against diffusers' EasyAnimateTransformer3DModel: outputs, RoPE, checkpoints, switches."""

import dataclasses
import json
import warnings

import pytest
import torch
from diffusers import EasyAnimateTransformer3DModel
from diffusers.models.transformers.transformer_easyanimate import EasyAnimateRotaryPosEmbed

from kinema.models import VideoTransformer, VideoTransformerConfig
from kinema.models import attention as attention_mod
from kinema.models.modeling_utils import CONFIG_NAME, INDEX_NAME, CheckpointError
from kinema.models.transformer import rotary_embedding

FP32_ATOL = 1e-5  # max abs difference to diffusers in fp32 (measured: <= 1e-6)

TINY = dict(
    in_channels=16,
    out_channels=16,
    num_attention_heads=2,
    attention_head_dim=16,
    patch_size=2,
    time_embed_dim=32,
    text_embed_dim=24,
    add_norm_text_encoder=True,
    num_layers=2,
    mmdit_layers=2,
)


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter random (diffusers zero-inits adaLN and output layers); norm weights around 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.1
            is_norm_scale = name.endswith("weight") and p.ndim == 1
            p.copy_(noise + 1.0 if is_norm_scale else noise)


def pair(**overrides):
    """A random diffusers model and a VideoTransformer holding the same weights (strict load)."""
    cfg = {**TINY, **overrides}
    torch.manual_seed(0)
    ref = EasyAnimateTransformer3DModel(**cfg).eval()
    randomize_(ref)
    ours = VideoTransformer.from_config(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def inputs(batch, channels, frames, height, width, text_len=7, text_dim=24, seed=1):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, channels, frames, height, width, generator=gen)
    timestep = torch.tensor([37.0, 911.5][:batch])
    text = torch.randn(batch, text_len, text_dim, generator=gen)
    return latents, timestep, text


def run_ref(ref, latents, timestep, text, **kw):
    with torch.no_grad():
        return ref(latents, timestep, encoder_hidden_states=text, return_dict=False, **kw)[0]


# ---- conformance --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant, frames, hw, layers",
    [
        ("t2v", 1, (6, 10), (2, 2)),  # image, landscape grid, all MMDiT
        ("inp", 3, (10, 4), (3, 1)),  # portrait, 1 MMDiT + 2 shared blocks
        ("control", 5, (4, 6), (3, 2)),
        ("camera", 2, (6, 6), (2, 1)),  # 16 + Plücker 6 + reference 16, passed as control latents
    ],
)
def test_matches_diffusers(variant, frames, hw, layers):
    in_channels = {"t2v": 16, "inp": 33, "control": 48, "camera": 38}[variant]
    ref, ours = pair(in_channels=in_channels, num_layers=layers[0], mmdit_layers=layers[1])
    latents, timestep, text = inputs(2, 16, frames, *hw)
    extra = {}
    if variant == "inp":
        extra["inpaint_latents"] = torch.randn(2, 17, frames, *hw)
    if variant in ("control", "camera"):
        extra["control_latents"] = torch.randn(2, in_channels - 16, frames, *hw)
    expected = run_ref(ref, latents, timestep, text, **extra)
    with torch.no_grad():
        got = ours(latents, timestep, text, **extra)
        assert got.shape == (2, 16, frames, *hw)
        assert expected.std() > 0.1  # a real signal, not zero-initialised output layers
        torch.testing.assert_close(got, expected, rtol=0, atol=FP32_ATOL)
        # the two batch items (different timesteps) really differ
        assert (got[0] - got[1]).abs().max() > 0.1
        # and the comparison can fail: nudge the last block's video FFN gate (chunks: shift, scale, gate)
        ours.transformer_blocks[-1].norm2.linear.bias[64:96].add_(0.01)
        assert (ours(latents, timestep, text, **extra) - expected).abs().max() > 10 * FP32_ATOL


@pytest.mark.parametrize(
    "overrides", [{"add_norm_text_encoder": False}, {"after_norm": True, "norm_eps": 1e-6}]
)
def test_matches_diffusers_config_options(overrides):
    ref, ours = pair(**overrides)
    latents, timestep, text = inputs(2, 16, 2, 4, 8)
    with torch.no_grad():
        got = ours(latents, timestep, text)
    torch.testing.assert_close(got, run_ref(ref, latents, timestep, text), rtol=0, atol=FP32_ATOL)


@pytest.mark.parametrize(
    "frames, grid", [(1, (30, 45)), (13, (24, 42)), (3, (48, 32)), (2, (16, 16)), (1, (3, 7))]
)
def test_rope_matches_diffusers(frames, grid):
    ref_cos, ref_sin = EasyAnimateRotaryPosEmbed(patch_size=2, rope_dim=64)(
        torch.empty(1, 1, frames, grid[0] * 2, grid[1] * 2)
    )
    rot = rotary_embedding(frames, *grid, head_dim=64, patch_size=2)
    # diffusers repeats each pair's cos/sin twice (interleaved pairs)
    torch.testing.assert_close(rot.real.repeat_interleave(2, -1), ref_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(rot.imag.repeat_interleave(2, -1), ref_sin, rtol=0, atol=1e-6)


def test_scalar_timestep_and_input_errors():
    _, ours = pair()
    latents, _, text = inputs(2, 16, 1, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(
            ours(latents, 500.0, text), ours(latents, torch.tensor([500.0, 500.0]), text)
        )
        with pytest.raises(ValueError, match="channels"):
            ours(latents, 500.0, text, inpaint_latents=latents)
        with pytest.raises(ValueError, match="multiples of patch"):
            ours(latents[..., :3], 500.0, text)


# ---- published configs: same parameters as diffusers --------------------------------------------------

V5_1 = dict(
    num_attention_heads=48,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    patch_size=2,
    time_embed_dim=512,
    text_embed_dim=3584,
    add_norm_text_encoder=True,
)


@pytest.mark.parametrize(
    "name, layers, mmdit, in_channels, n_params",
    [("12b", 48, 48, 16, 11.78e9), ("7b-InP", 36, 18, 33, 6.81e9), ("7b-Control", 36, 18, 48, 6.81e9)],
)
def test_published_configs_have_diffusers_parameters(name, layers, mmdit, in_channels, n_params):
    cfg = {**V5_1, "num_layers": layers, "mmdit_layers": mmdit, "in_channels": in_channels}
    with torch.device("meta"):
        ours = VideoTransformer.from_config(cfg)
        ref = EasyAnimateTransformer3DModel(**cfg)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    assert ours.num_parameters() == pytest.approx(n_params, rel=0.01)
    mmdit_blocks = [b.attn1.add_q_proj is not None for b in ours.transformer_blocks]
    assert mmdit_blocks == [True] * mmdit + [False] * (layers - mmdit)


# ---- checkpoints ---------------------------------------------------------------------------------------


def test_diffusers_folders_load_and_save_back(tmp_path):
    ref, _ = pair(num_layers=3, mmdit_layers=2, in_channels=33)
    latents, timestep, text = inputs(2, 16, 2, 4, 6)
    inpaint = torch.randn(2, 17, 2, 4, 6)
    expected = run_ref(ref, latents, timestep, text, inpaint_latents=inpaint)
    for shard in (None, "20KB"):
        folder = tmp_path / f"diffusers-{shard}"
        ref.save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
        assert (folder / INDEX_NAME).exists() == bool(shard)
        ours = VideoTransformer.from_pretrained(folder)
        with torch.no_grad():
            torch.testing.assert_close(
                ours(latents, timestep, text, inpaint), expected, rtol=0, atol=FP32_ATOL
            )
        # ... and back: our sharded save loads in diffusers with identical weights
        back = tmp_path / f"kinema-{shard}"
        ours.save_pretrained(back, max_shard_size=20_000)
        assert len(json.loads((back / INDEX_NAME).read_text())["weight_map"]) == len(ref.state_dict())
        reloaded = EasyAnimateTransformer3DModel.from_pretrained(back).eval()
        for key, value in ref.state_dict().items():
            assert torch.equal(reloaded.state_dict()[key], value), key
    # bf16 at load time; output close to fp32 (bf16 linears, fp32 norms and residual stream)
    ours16 = VideoTransformer.from_pretrained(tmp_path / "diffusers-20KB", torch_dtype=torch.bfloat16)
    assert ours16.dtype == torch.bfloat16 and ours16.attention_backend == "auto"
    with torch.no_grad():
        got = ours16(latents, timestep, text, inpaint)
    assert got.dtype == torch.float32
    assert (got - expected).abs().max() / expected.abs().max() < 0.03


def test_official_config_keys_are_accepted_or_refused(tmp_path):
    _, ours = pair()
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    # keys present in the published V5.1 configs (values as published)
    official = dict(
        add_ref_latent_in_control_model=True,
        clip_channels=None,
        enable_clip_in_inpaint=False,
        ref_channels=None,
        swa_layers=None,
    )
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**config, **official}))
    assert VideoTransformer.from_pretrained(tmp_path).config == ours.config
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**config, **official, "swa_layers": [1, 2]}))
    with pytest.raises(CheckpointError, match="swa_layers"):
        VideoTransformer.from_pretrained(tmp_path)


def test_loading_errors_on_a_transformer_folder(tmp_path):
    _, ours = pair()
    ours.save_pretrained(tmp_path / "m", max_shard_size=20_000)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoTransformer.from_pretrained(tmp_path / "m", subfolder="transformer")
    # unknown config key
    config = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    (tmp_path / "m" / CONFIG_NAME).write_text(json.dumps({**config, "use_flux": True}))
    with pytest.raises(CheckpointError, match="unknown config key.*use_flux"):
        VideoTransformer.from_pretrained(tmp_path / "m")
    # shape mismatch: an InP config over T2V weights
    (tmp_path / "m" / CONFIG_NAME).write_text(json.dumps({**config, "in_channels": 33}))
    with pytest.raises(CheckpointError, match="proj.weight.*shape"):
        VideoTransformer.from_pretrained(tmp_path / "m")
    # a missing shard
    (tmp_path / "m" / CONFIG_NAME).write_text(json.dumps(config))
    next((tmp_path / "m").glob("diffusion_pytorch_model-00002-*")).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        VideoTransformer.from_pretrained(tmp_path / "m")


def test_fp16_refused_on_cpu(tmp_path):
    _, ours = pair()
    ours.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="float16 on CPU"):
        half = VideoTransformer.from_pretrained(tmp_path, torch_dtype=torch.float16)
    latents, timestep, text = inputs(1, 16, 1, 4, 4)
    with pytest.raises(RuntimeError, match="bfloat16"):
        half(latents, timestep, text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VideoTransformer.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)


# ---- switches ------------------------------------------------------------------------------------------


def test_gradient_checkpointing_same_gradients_and_recomputes():
    _, ours = pair(num_layers=2, mmdit_layers=1)
    ours.train()
    latents, timestep, text = inputs(2, 16, 2, 4, 4)
    calls = []
    for block in ours.transformer_blocks:
        block.register_forward_pre_hook(lambda *_: calls.append(1))

    def grads():
        ours.zero_grad()
        calls.clear()
        ours(latents, timestep, text).square().mean().backward()
        return {n: p.grad.clone() for n, p in ours.named_parameters()}, len(calls)

    plain, plain_calls = grads()
    ours.enable_gradient_checkpointing()
    ckpt, ckpt_calls = grads()
    assert (plain_calls, ckpt_calls) == (2, 4)  # each block runs again in backward
    for name, g in plain.items():
        torch.testing.assert_close(ckpt[name], g, rtol=1e-5, atol=1e-7, msg=name)
    assert all(g.abs().sum() > 0 for g in plain.values())


def test_attention_backends(monkeypatch):
    ref, ours = pair()
    latents, timestep, text = inputs(2, 16, 3, 6, 8)
    expected = run_ref(ref, latents, timestep, text)
    # two query blocks per head (64 + 15 rows of 79 tokens)
    monkeypatch.setattr(attention_mod, "CHUNK_SCORE_ELEMENTS", 16 * 79)
    ours.set_attention_backend("chunked")
    with torch.no_grad():
        torch.testing.assert_close(ours(latents, timestep, text), expected, rtol=0, atol=FP32_ATOL)

    seen = []

    def spy(q, k, v):
        seen.append((q.shape, q.dtype))
        return attention_mod.sdpa_attention(q, k, v)

    attention_mod.register_attention_backend("spy", spy)
    ours.set_attention_backend("spy")
    with torch.no_grad():
        ours(latents, timestep, text)
    assert seen == [(torch.Size([2, 7 + 3 * 3 * 4, 2, 16]), torch.float32)] * 2
    with pytest.raises(ValueError, match="unknown attention backend"):
        ours.set_attention_backend("flash")


def test_bf16_close_to_fp32_with_each_backend():
    _, ours = pair(num_layers=3, mmdit_layers=2)
    latents, timestep, text = inputs(2, 16, 3, 6, 8)
    with torch.no_grad():
        expected = ours(latents, timestep, text)
        ours.to(torch.bfloat16)
        for backend in ("auto", "chunked", "sdpa"):
            ours.set_attention_backend(backend)
            got = ours(latents, timestep, text)
            assert got.dtype == torch.float32  # the dtype of the latents, not of the model
            assert (got - expected).abs().max() / expected.abs().max() < 0.03, backend


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
def test_chunked_attention_on_worker_threads(dtype, atol, monkeypatch):
    """With 2 torch threads, heads run on 2 single-threaded workers; the caller's setting is untouched."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 100, 3, 16, generator=gen).to(dtype) for _ in range(3))
    monkeypatch.setattr(attention_mod, "CHUNK_SCORE_ELEMENTS", 16 * 100)  # 2 blocks of rows per head
    expected = attention_mod.sdpa_attention(q.float(), k.float(), v.float())
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            got = attention_mod.chunked_attention(q, k, v)
        assert torch.get_num_threads() == 2
        workers = attention_mod.core_workers()
        assert workers.n == 2 and workers.map(lambda _: torch.get_num_threads(), range(2)) == [1, 1]
    finally:
        torch.set_num_threads(1)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), expected, rtol=0, atol=atol)


def test_forward_spread_over_core_workers_matches_single_thread(monkeypatch):
    """2 torch threads: linears split by rows and heads over 2 workers; same output as 1 thread."""
    ref, ours = pair(num_layers=2, mmdit_layers=1)
    latents, timestep, text = inputs(2, 16, 3, 6, 8, text_len=40)
    monkeypatch.setattr(attention_mod, "MIN_ROWS_PER_WORKER", 8)  # split even these small linears
    split_calls = []
    real_map = attention_mod._CoreWorkers.map
    monkeypatch.setattr(attention_mod._CoreWorkers, "map", lambda *a: split_calls.append(1) or real_map(*a))
    with torch.no_grad():
        single = ours(latents, timestep, text)
        torch.set_num_threads(2)
        try:
            spread = ours(latents, timestep, text)
            assert torch.get_num_threads() == 2
        finally:
            torch.set_num_threads(1)
    assert len(split_calls) > 2 * 8  # every block's linears and attention went through the workers
    torch.testing.assert_close(spread, single, rtol=0, atol=1e-6)
    torch.testing.assert_close(spread, run_ref(ref, latents, timestep, text), rtol=0, atol=FP32_ATOL)


def test_chunked_attention_trains_like_sdpa(monkeypatch):
    monkeypatch.setattr(attention_mod, "CHUNK_SCORE_ELEMENTS", 16 * 100)  # 2 blocks of rows per head
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 100, 2, 16, generator=gen, requires_grad=True) for _ in range(3))
    grads = []
    for fn in (attention_mod.sdpa_attention, attention_mod.chunked_attention):
        (fn(q, k, v) * torch.linspace(-1, 1, 16)).sum().backward()
        grads.append([t.grad.clone() for t in (q, k, v)])
        for t in (q, k, v):
            t.grad = None
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_config_round_trip_and_refusals():
    cfg = VideoTransformerConfig(**TINY)
    assert VideoTransformer.config_from_dict(dataclasses.asdict(cfg)) == cfg
    with pytest.raises(NotImplementedError, match="T5"):
        VideoTransformer.from_config({**TINY, "text_embed_dim_t5": 16})
    with pytest.raises(ValueError, match="multiple of 16"):
        VideoTransformer.from_config({**TINY, "attention_head_dim": 24})


# ---- camera-aware RoPE (kinema extension) ----------------------------------------------------------------


def test_camera_rope_identity_is_plain_rope_and_a_pan_shifts_positions_by_whole_tokens():
    frames, gh, gw, p = 3, 6, 10, 2
    plain = rotary_embedding(frames, gh, gw, head_dim=64, patch_size=p)
    identity = torch.tensor([[1.0, 0.0, 0.0]]).repeat(frames, 1)[None]
    torch.testing.assert_close(
        rotary_embedding(frames, gh, gw, 64, p, camera_motion=identity)[0], plain, rtol=0, atol=1e-5
    )
    # Content moves right by one token (p latent cells) per frame: the token at column j of frame f shows
    # what column j - f showed in frame 0, so it takes frame f's plain rotation of column j - f.
    pan = torch.tensor([[1.0, float(p * f), 0.0] for f in range(frames)])[None]
    rot = rotary_embedding(frames, gh, gw, 64, p, camera_motion=pan)[0].reshape(frames, gh, gw, -1)
    ref = plain.reshape(frames, gh, gw, -1)
    for f in range(frames):
        torch.testing.assert_close(rot[f, :, f:], ref[f, :, : gw - f], rtol=0, atol=1e-4)
    # A zoom about the centre keeps the centre's position and spreads the others.
    zoom = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 0.0, 0.0]])[None]
    assert not torch.allclose(
        rotary_embedding(frames, gh, gw, 64, p, camera_motion=zoom)[0, -gh * gw :], ref[-1].flatten(0, 1)
    )
    with pytest.raises(ValueError, match="camera_motion must have shape"):
        rotary_embedding(frames, gh, gw, 64, p, camera_motion=pan[:, :2])


def test_camera_motion_changes_only_models_with_camera_rope_depth():
    _, plain = pair(in_channels=22)
    cam = VideoTransformer.from_config({**dataclasses.asdict(plain.config), "camera_rope_depth": 6.0}).eval()
    cam.load_state_dict(plain.state_dict(), strict=True)
    latents, timestep, text = inputs(2, 16, 3, 8, 8)
    control = torch.randn(2, 6, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    identity = torch.tensor([[1.0, 0.0, 0.0]] * 3)[None]
    pan = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.5, 0.0], [1.0, 3.0, 0.0]])[None]
    with torch.no_grad():
        base = cam(latents, timestep, text, control_latents=control)
        same = cam(latents, timestep, text, control_latents=control, camera_motion=identity)
        moved = cam(latents, timestep, text, control_latents=control, camera_motion=pan)
        ignored = plain(latents, timestep, text, control_latents=control, camera_motion=pan)
        plain_base = plain(latents, timestep, text, control_latents=control)
    torch.testing.assert_close(same, base, rtol=0, atol=1e-4)
    assert (moved - base).abs().max() > 1e-2
    torch.testing.assert_close(ignored, plain_base, rtol=0, atol=0)
    # Frame 0 is never moved, but attention mixes frames: only its own RoPE is unchanged, not its output.
    assert VideoTransformerConfig().camera_rope_depth is None  # official checkpoints: off


@pytest.mark.parametrize("key", ["camera_rope_depth", "camera_noise_warp_depth"])
def test_camera_extension_keys_are_saved_only_when_set(tmp_path, key):
    _, model = pair()
    model.save_pretrained(tmp_path / "off")
    assert key not in json.loads((tmp_path / "off" / CONFIG_NAME).read_text())
    setattr(model.config, key, 8.0)
    model.save_pretrained(tmp_path / "on")
    assert json.loads((tmp_path / "on" / CONFIG_NAME).read_text())[key] == 8.0
    assert getattr(VideoTransformer.from_pretrained(tmp_path / "on").config, key) == 8.0
    assert getattr(VideoTransformer.from_pretrained(tmp_path / "off").config, key) is None


@pytest.mark.parametrize("key", ["camera_rope_depth", "camera_noise_warp_depth"])
@pytest.mark.parametrize("depth", [0.0, -2.0, float("nan"), "8"])
def test_bad_camera_extension_depths_are_refused(key, depth):
    with pytest.raises(ValueError, match=key):
        VideoTransformer.from_config({**TINY, key: depth})


def test_interpolate_weights_blends_a_branch_with_its_base_and_keeps_added_input_channels():
    from kinema.training import interpolate_weights

    torch.manual_seed(0)
    base = VideoTransformer.from_config(TINY).eval()
    branch = VideoTransformer.from_config({**TINY, "in_channels": 33}).eval()  # an InP branch: 17 new inputs
    with torch.no_grad():
        for p in branch.parameters():
            p.add_(0.1 * torch.randn_like(p))
    half = interpolate_weights(branch, base, 0.5)
    name = "transformer_blocks.0.attn1.to_q.weight"
    b, f, h = base.state_dict(), branch.state_dict(), half.state_dict()
    torch.testing.assert_close(h[name], (b[name] + f[name]) / 2)
    torch.testing.assert_close(h["proj.weight"][:, :16], (b["proj.weight"] + f["proj.weight"][:, :16]) / 2)
    torch.testing.assert_close(h["proj.weight"][:, 16:], f["proj.weight"][:, 16:], rtol=0, atol=0)
    assert half.config.in_channels == 33 and branch.state_dict()[name].equal(f[name])  # inputs untouched
    # alpha 0 is the base on the channels they share: with zero inpaint latents, the base's output.
    x, text = torch.randn(1, 16, 2, 8, 8), torch.randn(1, 5, 24)
    t = torch.tensor([500.0])
    with torch.no_grad():
        zero = torch.zeros(1, 17, 2, 8, 8)
        torch.testing.assert_close(
            interpolate_weights(branch, base, 0.0)(x, t, text, inpaint_latents=zero), base(x, t, text)
        )
        torch.testing.assert_close(interpolate_weights(branch, base, 1.0)(x, t, text, inpaint_latents=zero),
                                   branch(x, t, text, inpaint_latents=zero), rtol=0, atol=0)  # fmt: skip
    with pytest.raises(ValueError, match="alpha must be in"):
        interpolate_weights(branch, base, 1.5)
    other = VideoTransformer.from_config({**TINY, "num_layers": 1, "mmdit_layers": 1})
    with pytest.raises(ValueError, match="differ in parameters"):
        interpolate_weights(branch, other, 0.5)
