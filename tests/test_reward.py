"""Reward backpropagation (DRaFT-K / DRTune): step selection, gradient paths, decoding, rewards, the trainer.

Models are tiny (2-layer 2x16 MMDiT, 8/8/16/16 VAE) on 32x32x5 videos (2x4x4 latents), single-threaded.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kinema.models import VideoTransformer, VideoVAE
from kinema.rewards import CombinedReward, build_reward
from kinema.rewards.adapters import RewardUnavailableError
from kinema.training.config import ConfigError, config_from_dict, load_config
from kinema.training.reward import PromptBatches, RewardSampler, flow_schedule, select_steps

TINY_TRANSFORMER = {
    "num_layers": 2,
    "mmdit_layers": 2,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "time_embed_dim": 32,
    "add_norm_text_encoder": True,
    "text_embed_dim": 32,
}
TINY_VAE = {"block_out_channels": [8, 8, 16, 16], "norm_num_groups": 4, "layers_per_block": 1}
LATENT = (16, 2, 4, 4)  # 32 x 32 x 5 video


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    transformer = VideoTransformer.from_config(TINY_TRANSFORMER).eval()
    vae = VideoVAE.from_config(TINY_VAE).eval().requires_grad_(False)
    return transformer, vae


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(2, *LATENT, generator=g)
    text = torch.randn(2, 6, 32, generator=g)
    negative = torch.randn(2, 6, 32, generator=g)
    return noise, text, negative


def params_of(model):
    return [p for p in model.parameters() if p.requires_grad]


def grads_of(output, params, **kwargs):
    """d output / d params, zeros for parameters that take no part (the last block's text out-projection)."""
    got = torch.autograd.grad(output, params, allow_unused=True, **kwargs)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(got, params)]


def latent_reward(x):
    """A fixed linear reward on the final latents (so the VAE is out of the picture)."""
    w = torch.linspace(-1, 1, x[0].numel()).view(x.shape[1:])
    return (x * w).sum()


# ---- step selection ---------------------------------------------------------------------------------------


def test_step_strategies_select_the_right_steps():
    assert select_steps("last", 20) == [19]
    assert select_steps("tail", 20, 10) == list(range(10, 20))
    assert select_steps("uniform", 20, 5) == [0, 5, 10, 14, 19]
    assert select_steps("uniform", 20, 3, bounds=[10, 20]) == [10, 14, 19]
    assert select_steps("uniform", 20, 1) == [19]
    assert select_steps("list", 20, step_list=[0, -1, 5, 5]) == [0, 5, 19]
    draws = [
        select_steps("random", 20, 4, bounds=[5, 15], generator=np.random.default_rng(s)) for s in range(50)
    ]
    assert all(len(d) == 4 and len(set(d)) == 4 and 5 <= min(d) and max(d) < 15 for d in draws)
    assert len({tuple(d) for d in draws}) > 30  # really random across samples ...
    again = select_steps("random", 20, 4, bounds=[5, 15], generator=np.random.default_rng(7))
    assert again == draws[7]  # ... and reproducible from the sample's seed
    for bad in [dict(strategy="tail", num_steps=5, k=6), dict(strategy="list", num_steps=5),
                dict(strategy="list", num_steps=5, step_list=[5]), dict(strategy="random", num_steps=5, k=2),
                dict(strategy="uniform", num_steps=10, k=4, bounds=[0, 3]), dict(strategy="nope", num_steps=5)]:  # fmt: skip
        with pytest.raises(ValueError):
            select_steps(**bad)


def test_prompt_batches_are_deterministic_and_restartable():
    batches = PromptBatches([f"p{i}" for i in range(5)], global_batch=2, seed=3)
    stream = batches.iterate()
    first = [next(stream) for _ in range(5)]  # 2 batches per epoch: crosses two epoch boundaries
    assert [(b[0].epoch, b[0].batch_index) for b in first] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    restarted = next(batches.iterate(1, 1))
    assert [r.prompt for r in restarted] == [r.prompt for r in first[3]]
    assert [r.slot for r in first[0]] == [0, 1]
    tiled = PromptBatches(["only"], global_batch=3, seed=0).epoch_batches(0)
    assert [r.prompt for r in tiled[0]] == ["only"] * 3


# ---- the sampler --------------------------------------------------------------------------------------------


def test_sampler_reproduces_the_generation_pipeline(models, inputs):
    from kinema.pipelines import VideoPipeline

    transformer, vae = models
    noise, text, negative = inputs
    pipe = VideoPipeline(transformer, vae, None, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(prompt_embeds=text[:1], negative_prompt_embeds=negative[:1], latents=noise[:1], num_frames=5,
                    height=32, width=32, num_inference_steps=4, guidance_scale=3.0, output_type="latent").frames  # fmt: skip
    sampler = RewardSampler(transformer, vae, num_steps=4, guidance=3.0)
    with torch.no_grad():
        got = sampler.sample_latents(noise[:1], text[:1], negative[:1], [[]])
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=1e-5)
    timesteps, sigmas = flow_schedule(4)
    assert torch.allclose(timesteps, sigmas[:-1] * 1000) and sigmas[-1] == 0


def _record_grad_calls(transformer):
    calls = []
    handle = transformer.register_forward_hook(lambda m, args, out: calls.append(torch.is_grad_enabled()))
    return calls, handle


@pytest.mark.parametrize("method", ["draft", "drtune"])
def test_steps_outside_the_set_run_without_gradient(models, inputs, method):
    transformer, vae = models
    noise, text, negative = inputs
    sampler = RewardSampler(
        transformer, vae, num_steps=6, guidance=2.0, method=method, checkpoint_steps=False
    )
    calls, handle = _record_grad_calls(transformer)
    try:
        x = sampler.sample_latents(noise, text, negative, [[2, 4]] * 2)
    finally:
        handle.remove()
    assert calls == [False, False, True, False, True, False]  # one (CFG-batched) model call per step
    latent_reward(x).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [transformer.proj.weight])
    transformer.zero_grad(set_to_none=True)
    with torch.no_grad():  # nothing chosen: the whole trajectory is gradient-free
        assert not sampler.sample_latents(noise, text, negative, [[2, 4]] * 2).requires_grad


def _capture_model_inputs(transformer, store):
    def hook(module, args):
        if torch.is_grad_enabled():
            store.append(args[0])

    return transformer.register_forward_pre_hook(hook)


def test_drtune_stops_the_gradient_at_model_inputs_draft_does_not(models, inputs):
    transformer, vae = models
    noise, text, negative = inputs
    params = params_of(transformer)
    steps = [2, 3, 4]

    def run(method):
        sampler = RewardSampler(
            transformer, vae, num_steps=5, guidance=2.0, method=method, checkpoint_steps=False
        )
        seen = []
        handle = _capture_model_inputs(transformer, seen)
        try:
            x = sampler.sample_latents(noise, text, negative, [steps] * 2)
        finally:
            handle.remove()
        for t in seen:
            if t.requires_grad:
                t.retain_grad()
        grads = grads_of(latent_reward(x), params, retain_graph=True)
        return sampler, seen, grads, x

    sampler, seen, drtune, _ = run("drtune")
    # DRTune: no model input carries a gradient path (the model sees x.detach()) ...
    assert len(seen) == 3 and not any(t.requires_grad for t in seen)
    # ... so the parameter gradient is exactly the sum of the direct terms dt_i * (dv_i/dtheta)^T dR/dx_N:
    # an early step's gradient never passes through a later model call.
    w = torch.autograd.functional.vjp(latent_reward, noise, torch.tensor(1.0))[1]  # dR/dx (R is linear)
    x, expected = noise.clone(), [torch.zeros_like(p) for p in params]
    for i in range(5):
        dt = float(sampler.sigmas[i + 1] - sampler.sigmas[i])
        if i in steps:
            v = sampler.velocity(x, sampler.timesteps[i], text, negative)
            for acc, g in zip(expected, grads_of(v, params, grad_outputs=dt * w)):
                acc += g
        with torch.no_grad():
            x = x + dt * sampler.velocity(x, sampler.timesteps[i], text, negative)
    for got, ref in zip(drtune, expected, strict=True):
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-4)

    _, seen, draft, _ = run("draft")
    # DRaFT-K: the first chosen step's input is a constant, every later one lies on the gradient chain.
    assert [t.requires_grad for t in seen] == [False, True, True]
    assert seen[1].grad is not None and seen[1].grad.abs().sum() > 0  # the reward's gradient passes through
    assert sum((a - b).abs().sum() for a, b in zip(draft, drtune)) > 1e-6  # the chain adds terms

    # With one chosen step (DRaFT-1 = "last") both methods are the same computation.
    steps = [4]
    _, _, draft1, _ = run("draft")
    _, _, drtune1, _ = run("drtune")
    for a, b in zip(draft1, drtune1):
        torch.testing.assert_close(a, b)


def test_per_sample_step_sets_are_independent(models, inputs):
    """A batch whose samples chose different steps gets the sum of the per-sample gradients."""
    transformer, vae = models
    noise, text, negative = inputs
    params = params_of(transformer)
    sampler = RewardSampler(transformer, vae, num_steps=4, guidance=2.0, method="draft")

    def grads(sl, steps):
        x = sampler.sample_latents(noise[sl], text[sl], negative[sl], steps)
        return grads_of(latent_reward(x) if x.shape[0] == 2 else _one(x, sl), params)

    def _one(x, sl):
        full = torch.zeros(2, *x.shape[1:])
        full[sl] = x
        return latent_reward(full)

    both = grads(slice(0, 2), [[1], [2, 3]])
    first = grads(slice(0, 1), [[1]])
    second = grads(slice(1, 2), [[2, 3]])
    for b, f, s in zip(both, first, second):
        torch.testing.assert_close(b, f + s, atol=1e-6, rtol=1e-4)


def test_checkpointing_changes_memory_not_gradients(models, inputs):
    transformer, vae = models
    noise, text, negative = inputs
    params = params_of(transformer)
    results = []
    for ckpt in (False, True):
        sampler = RewardSampler(transformer, vae, num_steps=4, guidance=2.0, checkpoint_steps=ckpt,
                                decode_checkpointing=ckpt)  # fmt: skip
        out = sampler(noise, text, negative, [[1, 2, 3]] * 2)
        results.append(grads_of(out.frames.mean(), params))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)


def test_decode_subset_matches_the_vae_and_carries_gradient(models):
    transformer, vae = models
    g = torch.Generator().manual_seed(2)
    latents = torch.randn(1, 16, 3, 4, 4, generator=g)  # 9 video frames
    full = vae.decode(latents / vae.config.scaling_factor).clamp(-1, 1)
    sampler = RewardSampler(transformer, vae, num_steps=2)
    with torch.no_grad():
        torch.testing.assert_close(sampler.decode(latents), full)
    sampler.decode_latent_frames = [1]  # latent frame 1 codes video frames 1..4
    z = latents.clone().requires_grad_(True)
    part = sampler.decode(z)
    torch.testing.assert_close(part.detach(), full[:, :, 1:5])
    part.sum().backward()
    per_frame = z.grad.abs().sum(dim=(0, 1, 3, 4))
    assert per_frame[0] > 0 and per_frame[1] > 0  # frame 0 reaches frame 1 through the causal cache
    assert per_frame[2] == 0  # never decoded


# ---- rewards --------------------------------------------------------------------------------------------------


def _clip_tensor(spec, seed=3):
    from kinema.shapes import render_from_spec

    frames = render_from_spec(spec, seed=seed).frames
    return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1


def test_shapes_rewards_agree_with_the_prompt():
    from kinema.shapes import ObjectSpec, SceneSpec, make_prompt

    color, motion, both = build_reward("shapes_color"), build_reward("shapes_motion"), build_reward("shapes")
    rng = np.random.default_rng(0)
    spec = SceneSpec((ObjectSpec("blue", "star", "up_left"),), camera="static")
    wrong = SceneSpec((ObjectSpec("orange", "star", "down_right"),))
    video = _clip_tensor(spec)
    for lang in ("en", "zh", "ja", "ko"):
        right_p, wrong_p = make_prompt(spec, lang, rng), make_prompt(wrong, lang, rng)
        assert float(color(video, [right_p])) > float(color(video, [wrong_p])) + 0.1
        assert float(motion(video, [right_p])) > 0.5 > -0.5 > float(motion(video, [wrong_p]))
    two = SceneSpec(
        (ObjectSpec("red", "circle", "right"), ObjectSpec("green", "square", "up")), camera="static"
    )
    swapped = SceneSpec((ObjectSpec("red", "circle", "up"), ObjectSpec("green", "square", "right")))
    video2 = _clip_tensor(two, seed=5)
    assert float(motion(video2, [make_prompt(two, "en", rng)])) > 0.5
    assert float(motion(video2, [make_prompt(swapped, "en", rng)])) < 0
    frames = video.repeat(2, 1, 1, 1, 1).requires_grad_(True)
    scores = both(frames, [make_prompt(spec, "en", rng), "no shapes here"])
    assert scores.shape == (2,) and float(scores.detach()[1]) == 0.0  # unreadable prompt: 0
    scores.sum().backward()
    assert torch.isfinite(frames.grad).all() and frames.grad[0].abs().sum() > 0


def test_shape_reward_prefers_the_prompts_shape():
    """On rendered clips of every shape (plain and textured backgrounds, one and two objects), the prompt
    naming the drawn shape scores above 0.2 and above every prompt naming another shape; a blurred blob
    scores below a sharp render; gradients reach the frames."""
    from kinema.shapes import ObjectSpec, SceneSpec, make_prompt
    from kinema.shapes.spec import SHAPES

    reward = build_reward("shapes_shape")
    rng = np.random.default_rng(1)
    for i, shape in enumerate(SHAPES):
        spec = SceneSpec((ObjectSpec("yellow", shape, "right"),), camera="static")
        video = _clip_tensor(spec, seed=10 + i)
        scores = {
            s: float(reward(video, [make_prompt(SceneSpec((ObjectSpec("yellow", s, "right"),)), "en", rng)]))
            for s in SHAPES
        }
        assert scores[shape] > 0.2 and all(scores[shape] > v for s, v in scores.items() if s != shape), (
            shape,
            scores,
        )
    two = SceneSpec(
        (ObjectSpec("red", "triangle", "left"), ObjectSpec("blue", "square", "up")), camera="static"
    )
    video2 = _clip_tensor(two, seed=4)
    right = float(reward(video2, [make_prompt(two, "zh", rng)]))
    swapped = SceneSpec((ObjectSpec("red", "square", "left"), ObjectSpec("blue", "triangle", "up")))
    assert right > 0.2 > float(reward(video2, [make_prompt(swapped, "zh", rng)]))
    square = SceneSpec((ObjectSpec("green", "square", "down"),), camera="static")
    sharp = _clip_tensor(square, seed=2)
    blurred = torch.nn.functional.avg_pool3d(
        sharp, (1, 9, 9), stride=1, padding=(0, 4, 4), count_include_pad=False
    )
    prompt = make_prompt(square, "ko", rng)
    assert float(reward(sharp, [prompt])) > float(reward(blurred, [prompt])) + 0.1
    frames = blurred.clone().requires_grad_(True)
    reward(frames, [prompt]).sum().backward()
    assert torch.isfinite(frames.grad).all() and frames.grad.abs().sum() > 0


def test_combined_reward_and_callable_hook():
    frames = torch.full((2, 3, 5, 16, 16), 0.5)
    combined = CombinedReward([("brightness", build_reward("brightness"), 2.0),
                               ("custom", build_reward("kinema.rewards.base:BrightnessReward"), -1.0)])  # fmt: skip
    torch.testing.assert_close(combined(frames, ["a", "b"]), torch.full((2,), 0.5))
    assert set(combined.last_terms) == {"brightness", "custom"}
    with pytest.raises(ValueError, match="unknown reward 'sharpness'"):
        build_reward("sharpness")
    with pytest.raises(ImportError, match="no attribute"):
        build_reward("kinema.rewards.base:Nope")


def _bytes_to_unicode():
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tiny_clip(folder, with_tokenizer=True):
    """A random CLIPModel + character-level CLIP tokenizer in transformers format (no download)."""
    from transformers import CLIPConfig, CLIPModel

    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    torch.manual_seed(0)
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos,
                pad_token_id=eos)  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)  # fmt: skip
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    if with_tokenizer:
        (folder / "vocab.json").write_text(json.dumps(vocab))
        (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def test_learned_reward_adapters_load_local_folders_and_backprop(tmp_path):
    from safetensors.torch import save_file

    clip = write_tiny_clip(tmp_path / "pickscore")
    frames = (torch.rand(2, 3, 5, 40, 48) * 2 - 1).requires_grad_(True)
    prompts = ["a red circle", "a blue star"]
    pick = build_reward("pickscore", clip)
    scores = pick(frames, prompts)
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    scores.sum().backward()
    assert frames.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in pick.parameters())  # the reward model stays frozen
    hps = build_reward("hpsv2.1", clip)  # a transformers conversion of HPSv2.1: plain cosine
    cos = hps(frames.detach(), prompts)
    torch.testing.assert_close(scores.detach(), cos * pick.model.logit_scale.exp())

    aesthetic_dir = tmp_path / "aesthetic"
    write_tiny_clip(aesthetic_dir / "clip", with_tokenizer=False)
    torch.manual_seed(0)
    dims = [16, 24, 8, 8, 4, 1]  # the LAION head's layer pattern, with small widths
    head = {f"layers.{i}.weight": torch.randn(dims[j + 1], dims[j]) for j, i in enumerate([0, 2, 4, 6, 7])}
    head.update({f"layers.{i}.bias": torch.randn(dims[j + 1]) for j, i in enumerate([0, 2, 4, 6, 7])})
    save_file(head, str(aesthetic_dir / "aesthetic_head.safetensors"))
    aesthetic = build_reward("aesthetic", aesthetic_dir, num_frames=2)
    frames.grad = None
    aesthetic(frames, prompts).sum().backward()
    assert frames.grad[:, :, [0, 4]].abs().sum() > 0 and frames.grad[:, :, 2].abs().sum() == 0  # 2 frames


def test_learned_reward_adapters_name_what_is_missing(tmp_path):
    missing = tmp_path / "nowhere"
    for name in ("pickscore", "aesthetic", "hpsv2.1", "mps"):
        with pytest.raises(FileNotFoundError, match="nowhere' does not exist"):
            build_reward(name, missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json' is missing"):
        build_reward("pickscore", empty)
    with pytest.raises(FileNotFoundError, match="HPS_v2.1_compressed.pt"):
        build_reward("hpsv2.1", empty)
    with pytest.raises(FileNotFoundError, match="MPS_overall_checkpoint.pth' is missing"):
        build_reward("mps", empty)
    no_tok = write_tiny_clip(tmp_path / "clip_only", with_tokenizer=False)
    with pytest.raises(FileNotFoundError, match="no CLIP tokenizer files"):
        build_reward("pickscore", no_tok)
    with pytest.raises(FileNotFoundError, match="head file .*sac\\+logos\\+ava1-l14-linearMSE.pth"):
        build_reward("aesthetic", no_tok)
    (empty / "HPS_v2.1_compressed.pt").write_bytes(b"")
    (empty / "MPS_overall_checkpoint.pth").write_bytes(b"")
    with pytest.raises(RewardUnavailableError, match="open_clip"):
        build_reward("hpsv2.1", empty)
    with pytest.raises(RewardUnavailableError, match="MPS repository"):
        build_reward("mps", empty)
    with pytest.raises(ValueError, match="needs 'path'"):
        build_reward("pickscore")


# ---- config and trainer ------------------------------------------------------------------------------------


def reward_config(tmp_path, **extra):
    data = {
        "mode": "reward",
        "output_dir": str(tmp_path / "run"),
        "seed": 1,
        "model": {
            "transformer_config": TINY_TRANSFORMER,
            "vae_config": TINY_VAE,
            "init_seed": 3,
            "text_encoder_small": {"hidden_size": 32, "num_layers": 2},
        },  # fmt: skip
        "stages": [{"batch_size": 2, "steps": 3, "lr": 1e-2}],
        "train": {"cpu_threads": 1},
        "reward": {
            "prompts": ["a red circle moves right", "a blue square moves up", "a white star"],
            "rewards": [{"name": "brightness"}],
            "height": 32,
            "width": 32,
            "frames": 5,
            "steps": 4,
            "guidance": 2.0,
            "backprop_steps": 2,
        },  # fmt: skip
        "checkpoint": {"every_steps": 0, "keep_last": 2},
        "logging": {"progress_bar": False, "tensorboard": "off"},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return config_from_dict(copy.deepcopy(data))


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"method": "drfat"}, "'reward.method' is 'drfat'; choose one of draft, drtune"),
        ({"strategy": "tial"}, "'reward.strategy' is 'tial'"),
        ({"backprop_steps": 5}, "'reward.backprop_steps' must be in [1, reward.steps = 4], got 5"),
        ({"strategy": "list"}, "'reward.step_list' must list step indices"),
        ({"strategy": "list", "step_list": [4]}, "'reward.step_list[0]' is 4, outside the 4 sampling steps"),
        ({"strategy": "uniform", "step_range": [0, 1]}, "'reward.step_range' holds fewer than"),
        ({"frames": 8}, "'reward.frames' must be 4k+1"),
        ({"rewards": [{"name": "sharpness"}]}, "'reward.rewards[0].name' is 'sharpness'"),
        ({"rewards": [{"name": "pickscore"}]}, "'reward.rewards[0].path' must name the local weight folder"),
        (
            {"rewards": [{"name": "shapes", "wieght": 2}]},
            "unknown key 'reward.rewards[0].wieght'; did you mean",
        ),
        ({"prompts": []}, "'reward.prompts' must give prompts"),
        ({"shapes_prompts": "test"}, "'reward.shapes_prompts' is 'test'"),
        ({"shapes_languages": ["fr"]}, "'reward.shapes_languages[0]' is 'fr'"),
        ({"eval_every_steps": 2}, "'reward.eval_prompts' must give prompts"),
        ({"backprop_stepz": 2}, "unknown key 'reward.backprop_stepz'; did you mean 'reward.backprop_steps'?"),
    ],
)
def test_reward_config_errors_name_the_field(tmp_path, extra, message):
    with pytest.raises(ConfigError) as info:
        reward_config(tmp_path, reward=extra)
    assert message in str(info.value)


def test_reward_config_defaults_and_paths(tmp_path):
    from kinema.training.config import check_paths

    config = reward_config(tmp_path)
    assert config.lora.enabled  # reward mode trains a LoRA unless told otherwise
    assert not reward_config(tmp_path, lora={"enabled": False}).lora.enabled
    check_paths(config)  # no data.root needed
    bad = reward_config(tmp_path, reward={"rewards": [{"name": "aesthetic", "path": str(tmp_path / "gone")}]})
    with pytest.raises(ConfigError, match=r"'reward.rewards\[0\].path' folder '.*gone' does not exist"):
        check_paths(bad)
    with pytest.raises(ConfigError, match="'reward.prompt_file' file"):
        check_paths(reward_config(tmp_path, reward={"prompt_file": str(tmp_path / "p.txt")}))
    example = load_config(Path(__file__).resolve().parents[1] / "configs" / "reward_shapes.toml")
    assert example.mode == "reward" and example.lora.enabled and example.reward.strategy == "tail"


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield


def test_reward_training_raises_the_reward(tmp_path):
    from kinema.training.trainer import Trainer

    prompts = ["a red circle moves right", "a blue square moves up"]
    config = reward_config(tmp_path, lora={"enabled": False}, stages=[{"batch_size": 2, "steps": 12, "lr": 1e-2}],
                           reward={"eval_prompts": prompts, "eval_every_steps": 6, "steps": 5,
                                   "backprop_steps": 3})  # fmt: skip
    result = Trainer(config).train()
    start, end = result.eval_start["eval_reward"], result.eval_end["eval_reward"]
    assert end > start + 0.02, (start, end)  # mean brightness in [-1, 1] on fixed held-out noise
    log = [json.loads(line) for line in (tmp_path / "run/logs/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "eval_reward" in r] == [0, 6, 12]
    assert all("reward" in r and "grad_norm" in r for r in log if "loss" in r)
    assert (tmp_path / "run/final/transformer/config.json").is_file()


def test_reward_lora_is_saved_loaded_and_resumes_exactly(tmp_path):
    from kinema.training.lora import merge_lora
    from kinema.training.trainer import Trainer

    def train(out, steps, **extra):
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        config = reward_config(tmp_path, output_dir=str(tmp_path / out), max_steps=steps,
                               stages=[{"batch_size": 2, "steps": 4, "lr": 2e-2}],
                               reward={"strategy": "random", "method": "drtune"}, **extra)  # fmt: skip
        trainer = Trainer(config)
        return trainer, trainer.train()

    whole, whole_result = train("whole", 4)
    train("split", 2, checkpoint={"every_steps": 0})
    resumed, resumed_result = train("split", 4, checkpoint={"resume": "latest"})
    assert resumed_result.losses == whole_result.losses[2:]
    lora_file = tmp_path / "whole/final/lora.safetensors"
    assert lora_file.is_file()
    # A fresh transformer with the merged LoRA file computes what the trained peft model computes.
    torch.manual_seed(0)
    fresh = VideoTransformer.from_config(TINY_TRANSFORMER)
    fresh.load_state_dict({k.replace(".base_layer", ""): v for k, v in whole.transformer.state_dict().items()
                           if ".lora_" not in k})  # fmt: skip
    assert merge_lora(fresh, lora_file) > 0
    x, t, text = torch.randn(1, *LATENT), torch.tensor([500.0]), torch.randn(1, 6, 32)
    whole.transformer.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            fresh.eval()(x, t, text), whole.transformer(x, t, text), atol=1e-5, rtol=1e-5
        )
        for a, b in zip(resumed.transformer.parameters(), whole.transformer.parameters()):
            torch.testing.assert_close(a, b)


def test_registry_names_match():
    from kinema.rewards.base import REWARDS
    from kinema.rewards.names import BUILTIN

    assert set(REWARDS) == set(BUILTIN)


DDP_WORKER = r"""
import json, sys, torch
torch.set_num_threads(1)
from kinema.training.config import config_from_dict
from kinema.training.trainer import Trainer
trainer = Trainer(config_from_dict(json.loads(open(sys.argv[1]).read())))
result = trainer.train()
if trainer.accelerator.is_main_process:
    torch.save({"processes": trainer.accelerator.num_processes, "losses": result.losses,
                "weights": {k: v.detach().clone() for k, v in trainer.transformer.state_dict().items()}}, sys.argv[2])
"""


def test_two_processes_train_like_one_with_the_combined_batch(tmp_path):
    """DDP (2 gloo processes, batch 1 each) == 1 process with batch 2: reward mode averages gradients itself."""
    import os
    import shutil
    import socket
    import subprocess
    import sys

    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if launcher is None:
        pytest.skip("accelerate launcher not installed")
    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    results = {}
    for name, batch in (("one", 2), ("two", 1)):
        config = reward_config(tmp_path, output_dir=str(tmp_path / name), lora={"enabled": False},
                               train={"cpu_threads": 1, "max_grad_norm": 0.0},
                               stages=[{"batch_size": batch, "steps": 3, "lr": 1e-2}],
                               reward={"strategy": "random", "prompts": ["a red circle moves right",
                                       "a blue square moves up", "a white star", "a green diamond"]})  # fmt: skip
        (tmp_path / f"{name}.json").write_text(json.dumps(config.to_dict()))
        args = [str(worker), str(tmp_path / f"{name}.json"), str(tmp_path / f"{name}.pt")]
        if name == "one":
            subprocess.run([sys.executable, *args], check=True, env=env, timeout=300)
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), *args]  # fmt: skip
            subprocess.run(cmd, check=True, env={**env, "ACCELERATE_USE_CPU": "1"}, timeout=300)
        results[name] = torch.load(tmp_path / f"{name}.pt")
    one, two = results["one"], results["two"]
    assert (one["processes"], two["processes"]) == (1, 2)
    np.testing.assert_allclose(two["losses"], one["losses"], atol=1e-6)
    for key, value in one["weights"].items():
        torch.testing.assert_close(two["weights"][key], value, atol=2e-4, rtol=1e-4)
