"""VideoPipeline against diffusers' EasyAnimate pipelines on tiny random models of every type.

Every model is a random diffusers-format folder (``build_random_model``): a tiny VideoTransformer/
VideoVAE and a small Qwen2-VL text encoder with the real tokenizer. kinema and diffusers load the same
folder; outputs are compared as final latents (output_type="latent") with the same seed.

Where diffusers 0.42.1 is broken the comparison patches the one broken thing (commented at the patch)
or compares against a loop written from diffusers' components. The VAE's posterior is made (nearly)
deterministic (log-variance -30, std 3e-7) because diffusers samples V2V latents from the *global* RNG
while kinema uses the pipeline's generator.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from kinema.models import VideoVAE
from kinema.pipelines import build_random_model, load_pipeline
from kinema.pipelines.loading import merge_lora, read_lora

TOL = 1e-4  # max abs latent difference to diffusers in fp32 (measured: <= 2e-6)
H = W = 32
FRAMES = 5
STEPS = 3


def _quiet_posterior(folder) -> None:
    """Make the VAE posterior std ~3e-7: log-variance rows of quant_conv -> weight 0, bias -30."""
    vae = VideoVAE.from_pretrained(folder / "vae")
    latent = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[latent:] = 0
        vae.quant_conv.bias[latent:] = -30
    vae.save_pretrained(folder / "vae")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    out = {"t2v": build_random_model(root / "t2v", "t2v", seed=1)}
    for i, kind in enumerate(("inp", "control", "camera"), start=2):
        out[kind] = build_random_model(root / kind, kind, seed=i, text_encoder_from=out["t2v"])
    for folder in out.values():
        _quiet_posterior(folder)
    return out


@pytest.fixture(scope="module")
def pipes(folders):
    loaded = {kind: load_pipeline(folder, memory_mode="none") for kind, folder in folders.items()}
    for pipe in loaded.values():
        pipe.set_progress_bar_config(disable=True)
    return loaded


def _diffusers(cls_name: str, folder):
    import diffusers

    pipe = getattr(diffusers, cls_name).from_pretrained(str(folder))
    pipe.text_encoder.lm_head = torch.nn.Identity()  # only hidden_states[-2] is used; skip the logits
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def rand_frames(frames: int, seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, h, w, 3), dtype=np.uint8)


def as_unit_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> diffusers' video input: float (1, 3, F, H, W) in [0, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 255.0


COMMON = dict(num_frames=FRAMES, height=H, width=W, num_inference_steps=STEPS, guidance_scale=6.0)


# ---- conformance ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rescale", [0.0, 0.7])
def test_t2v_matches_diffusers(pipes, folders, rescale):
    ref = _diffusers("EasyAnimatePipeline", folders["t2v"])
    kw = dict(COMMON, guidance_rescale=rescale)
    expected = ref("a red circle", negative_prompt="", generator=gen(3), output_type="latent", **kw).frames
    got = pipes["t2v"]("a red circle", generator=gen(3), output_type="latent", **kw).frames
    assert got.shape == (1, 16, 2, 4, 4)
    assert max_diff(got, expected) < TOL


def _inpaint_reference(folder):
    ref = _diffusers("EasyAnimateInpaintPipeline", folder)
    # diffusers 0.42.1 reads vae.config.cache_mag_vae (an EasyAnimate VAE flag, not a diffusers config
    # key) when a real mask is given; the official magvit VAE has it True (first frame resized alone).
    ref.vae.register_to_config(cache_mag_vae=True)
    return ref


def test_i2v_with_start_and_end_image_matches_diffusers(pipes, folders):
    ref = _inpaint_reference(folders["inp"])
    start, end = rand_frames(1, 1)[0], rand_frames(1, 2)[0]
    # diffusers' helper layout: every frame the start image, the last the end image; mask 255 = generate.
    video = np.repeat(start[None], FRAMES, axis=0)
    video[-1] = end
    mask = torch.full((1, 1, FRAMES, H, W), 255.0)
    mask[:, :, 0] = mask[:, :, -1] = 0
    expected = ref(
        "a cat",
        negative_prompt="",
        video=as_unit_video(video),
        mask_video=mask,
        generator=gen(5),
        output_type="latent",
        **COMMON,
    ).frames
    got = pipes["inp"]("a cat", image=start, end_image=end, generator=gen(5), output_type="latent", **COMMON)
    assert got.info["mode"] == "i2v"
    assert max_diff(got.frames, expected) < TOL


def test_v2v_inpainting_with_strength_matches_diffusers(pipes, folders):
    ref = _inpaint_reference(folders["inp"])
    video = rand_frames(FRAMES, 3)
    rng = np.random.default_rng(4)
    mask = (rng.random((FRAMES, H, W)) > 0.5).astype(np.uint8) * 255  # a real, irregular mask
    expected = ref(
        "a dog",
        negative_prompt="blurry",
        video=as_unit_video(video),
        mask_video=torch.from_numpy(mask).float()[None, None],
        strength=0.7,
        generator=gen(6),
        output_type="latent",
        **COMMON,
    ).frames
    got = pipes["inp"](
        "a dog",
        negative_prompt="blurry",
        video=video,
        mask_video=mask,
        strength=0.7,
        generator=gen(6),
        output_type="latent",
        **COMMON,
    )
    assert got.info["mode"] == "inpaint"
    assert max_diff(got.frames, expected) < TOL


def test_t2v_on_inp_model_uses_zero_inpaint_latents_like_diffusers(pipes, folders):
    ref = _diffusers("EasyAnimateInpaintPipeline", folders["inp"])
    expected = ref("waves", negative_prompt="", generator=gen(7), output_type="latent", **COMMON).frames
    got = pipes["inp"]("waves", generator=gen(7), output_type="latent", **COMMON).frames
    assert max_diff(got, expected) < TOL


def _control_reference(folder):
    ref = _diffusers("EasyAnimateControlPipeline", folder)
    encode = ref.encode_prompt

    # diffusers 0.42.1's control pipeline passes text_encoder_index=0, which its encode_prompt does not
    # take (TypeError): drop that one argument.
    def encode_prompt(*args, text_encoder_index=None, **kwargs):
        return encode(*args, **kwargs)

    ref.encode_prompt = encode_prompt
    return ref


@pytest.mark.parametrize("with_reference", [False, True])
def test_control_video_matches_diffusers(pipes, folders, with_reference):
    ref = _control_reference(folders["control"])
    control, reference = rand_frames(FRAMES, 8), rand_frames(1, 9)
    expected = ref(
        "edges",
        negative_prompt="",
        control_video=as_unit_video(control),
        ref_image=as_unit_video(reference) if with_reference else None,
        generator=gen(10),
        output_type="latent",
        **COMMON,
    ).frames
    got = pipes["control"](
        "edges",
        control_video=control,
        ref_image=reference[0] if with_reference else None,
        generator=gen(10),
        output_type="latent",
        **COMMON,
    ).frames
    assert max_diff(got, expected) < TOL


def test_camera_matches_diffusers(pipes, folders):
    from kinema.control import plucker_for_preset

    ref = _control_reference(folders["camera"])
    plucker = plucker_for_preset("pan_left", FRAMES, H, W)  # (F, 6, H, W)
    reference = rand_frames(1, 11)
    expected = ref(
        "a street",
        negative_prompt="",
        control_camera_video=plucker.permute(1, 0, 2, 3)[None],
        ref_image=as_unit_video(reference),
        generator=gen(12),
        output_type="latent",
        **COMMON,
    ).frames
    got = pipes["camera"](
        "a street",
        camera="pan_left",
        ref_image=reference[0],
        generator=gen(12),
        output_type="latent",
        **COMMON,
    ).frames
    assert max_diff(got, expected) < TOL


def test_v2v_on_t2v_model_matches_a_loop_of_diffusers_components(pipes, folders):
    """diffusers' inpaint pipeline cannot run V2V on a 16-channel model (it calls
    ``torch.tensor([t], noise)``), so the reference is a loop over diffusers' own components."""
    from diffusers import AutoencoderKLMagvit, EasyAnimateTransformer3DModel, FlowMatchEulerDiscreteScheduler

    folder, strength, g = folders["t2v"], 0.7, 6.0
    video = rand_frames(FRAMES, 13)
    got = pipes["t2v"](
        "rain", video=video, strength=strength, generator=gen(14), output_type="latent", **COMMON
    )

    transformer = EasyAnimateTransformer3DModel.from_pretrained(str(folder), subfolder="transformer")
    vae = AutoencoderKLMagvit.from_pretrained(str(folder), subfolder="vae")
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(folder), subfolder="scheduler")
    encoder = pipes["t2v"].text_encoder
    out = encoder.encode_with_negative("rain", "")
    text = torch.cat([out.negative_prompt_embeds, out.prompt_embeds])
    generator = gen(14)
    noise = torch.randn((1, 16, 2, 4, 4), generator=generator)
    with torch.no_grad():
        pixels = as_unit_video(video) * 2 - 1
        video_latents = vae.encode(pixels)[0].mode() * vae.config.scaling_factor
        scheduler.set_timesteps(STEPS, mu=1)
        start = STEPS - int(STEPS * strength)
        timesteps = scheduler.timesteps[start:]
        scheduler.set_begin_index(start)
        latents = scheduler.scale_noise(video_latents, timesteps[:1], noise)
        for t in timesteps:
            pred = transformer(
                torch.cat([latents] * 2), t.expand(2), encoder_hidden_states=text, return_dict=False
            )[0]
            uncond, cond = pred.chunk(2)
            latents = scheduler.step(uncond + g * (cond - uncond), t, latents, return_dict=False)[0]
    assert got.steps_done == len(timesteps) == 2
    assert max_diff(got.frames, latents) < TOL


# ---- behaviour ---------------------------------------------------------------------------------------


def test_seed_determinism_and_negative_prompt_none_equals_empty(pipes):
    pipe = pipes["t2v"]
    a = pipe("fog", seed=21, output_type="latent", **COMMON).frames
    b = pipe("fog", negative_prompt="", seed=21, output_type="latent", **COMMON).frames
    c = pipe("fog", seed=22, output_type="latent", **COMMON).frames
    assert torch.equal(a, b)
    assert max_diff(a, c) > 0.1


def test_model_index_can_name_the_default_frame_count(folders, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(folders["t2v"], folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert load_pipeline(folder).default_num_frames == 49  # V5.1's
    index["_kinema_defaults"] = {"num_frames": 5}
    (folder / "model_index.json").write_text(json.dumps(index))
    pipe = load_pipeline(folder)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("x", seed=1, height=32, width=32, num_inference_steps=1, output_type="latent")
    assert pipe.default_num_frames == 5 and out.frames.shape[2] == 2  # 5 frames -> 2 latent frames
    index["_kinema_defaults"] = {"num_frames": 18}
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="num_frames is 18; it must be 4k"):
        load_pipeline(folder)


def test_keep_known_frames_pins_the_start_image_exactly(pipes):
    pipe = pipes["inp"]
    start = rand_frames(1, 21)[0]
    kw = dict(height=H, width=W, num_frames=9, num_inference_steps=3, seed=4, output_type="latent")
    plain = pipe("a dog", image=start, **kw).frames
    kept = pipe("a dog", image=start, keep_known_frames=True, **kw).frames
    # Latent frame 0 encodes video frame 0 alone (causal VAE): it must equal the start image's latent.
    image = torch.from_numpy(start).permute(2, 0, 1)[None, :, None].float() / 127.5 - 1
    with torch.no_grad():
        expected = pipe.vae.encode(image).mode() * pipe.vae.config.scaling_factor
    assert max_diff(kept[:, :, :1], expected) < 1e-5
    assert max_diff(plain[:, :, :1], expected) > 0.1  # the random model alone does not copy it
    assert max_diff(kept[:, :, 1:], plain[:, :, 1:]) > 0  # later frames see the pinned head
    # Nothing kept (T2V), or the default (off, as EasyAnimate): the option changes nothing.
    t2v = dict(kw, num_frames=5)
    np.testing.assert_array_equal(
        pipe("a dog", keep_known_frames=True, **t2v).frames, pipe("a dog", **t2v).frames
    )
    np.testing.assert_array_equal(pipe("a dog", image=start, keep_known_frames=False, **kw).frames, plain)
    # Decoded, the first frame is the VAE's reconstruction of the start image.
    frames = pipe("a dog", image=start, keep_known_frames=True, **dict(kw, output_type="pt")).frames
    with torch.no_grad():
        recon = pipe.vae.decode(expected / pipe.vae.config.scaling_factor).clamp(-1, 1)
    assert max_diff(frames[0, :, 0], recon[0, :, 0]) < 1e-4  # (B, 3, F, H, W) in [-1, 1]


def test_keep_known_frames_default_comes_from_the_model_folder(folders, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(folders["inp"], folder)
    assert load_pipeline(folder).default_keep_known_frames is False
    index = json.loads((folder / "model_index.json").read_text())
    index["_kinema_defaults"] = {"keep_known_frames": True}
    (folder / "model_index.json").write_text(json.dumps(index))
    pipe = load_pipeline(folder)
    pipe.set_progress_bar_config(disable=True)
    start = rand_frames(1, 22)[0]
    kw = dict(height=H, width=W, num_frames=5, num_inference_steps=2, seed=1, output_type="latent")
    by_default = pipe("x", image=start, **kw).frames
    np.testing.assert_array_equal(by_default, pipe("x", image=start, keep_known_frames=True, **kw).frames)
    assert max_diff(by_default, pipe("x", image=start, keep_known_frames=False, **kw).frames) > 0
    index["_kinema_defaults"] = {"keep_known_frames": "yes"}
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="keep_known_frames is 'yes'; it must be true or false"):
        load_pipeline(folder)


def test_callback_per_step_interrupt_and_image_output(pipes):
    pipe = pipes["t2v"]
    seen = []
    out = pipe("x", seed=1, callback=lambda i, t, lat: seen.append((i, float(t), lat.shape)), **COMMON)
    assert [s[0] for s in seen] == list(range(STEPS)) and seen[0][1] == 1000.0
    assert out.frames.shape == (1, FRAMES, H, W, 3) and out.frames.dtype == np.uint8
    stopped = pipe("x", seed=1, callback=lambda i, t, lat: i < 1, **COMMON)
    assert stopped.interrupted and stopped.steps_done == 2
    image = pipe("x", seed=1, num_frames=1, height=48, width=32, num_inference_steps=2, output_type="pt")
    assert image.frames.shape == (1, 3, 1, 48, 32) and image.frames.abs().max() <= 1


def test_interrupt_raises_when_asked_and_nan_latents_are_reported(pipes, monkeypatch):
    from kinema.pipelines import GenerationInterrupted

    pipe = pipes["t2v"]
    with pytest.raises(GenerationInterrupted, match="after 1 of 3 steps"):
        pipe("x", seed=1, callback=lambda i, t, lat: pipe.interrupt(), raise_on_interrupt=True, **COMMON)
    assert pipe("x", seed=1, output_type="latent", **COMMON).steps_done == STEPS  # the flag is reset
    monkeypatch.setattr(
        pipe.transformer, "forward", lambda x, *a, **k: torch.full_like(x[:, :16], float("nan"))
    )
    with pytest.raises(ValueError, match="diverged: NaN/inf latents after step 1"):
        pipe("x", seed=1, output_type="latent", **COMMON)


@pytest.mark.parametrize("sampler", ["euler_a", "dpm++", "unipc"])
def test_other_samplers_run_and_are_seeded(pipes, sampler):
    pipe = pipes["t2v"]
    a = pipe("x", seed=3, sampler=sampler, output_type="latent", **COMMON).frames
    b = pipe("x", seed=3, sampler=sampler, output_type="latent", **COMMON).frames
    assert torch.isfinite(a).all() and torch.equal(a, b)


def test_sampler_mapping():
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    from kinema.pipelines.random_model import OFFICIAL_SCHEDULER_CONFIG
    from kinema.pipelines.schedulers import make_scheduler

    flow, kw = make_scheduler("flow", OFFICIAL_SCHEDULER_CONFIG)
    euler, _ = make_scheduler("euler", OFFICIAL_SCHEDULER_CONFIG)
    assert isinstance(flow, FlowMatchEulerDiscreteScheduler) and kw == {"mu": 1.0}
    flow.set_timesteps(4, **kw)
    euler.set_timesteps(4, **kw)
    assert torch.equal(flow.sigmas, euler.sigmas)
    dpm, _ = make_scheduler("dpm++", OFFICIAL_SCHEDULER_CONFIG)
    assert isinstance(dpm, DPMSolverMultistepScheduler) and dpm.config.prediction_type == "flow_prediction"
    assert math.isclose(dpm.config.flow_shift, math.e)
    for bad in ("ddim", "pndm"):
        with pytest.raises(ValueError, match="no flow-matching mode"):
            make_scheduler(bad, OFFICIAL_SCHEDULER_CONFIG)
    ddpm = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "prediction_type": "v_prediction"}
    ddim, _ = make_scheduler("ddim", ddpm)
    assert ddim.config.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="needs a flow-matching model"):
        make_scheduler("flow", ddpm)


def test_memory_modes_on_cpu(pipes, folders):
    from kinema.pipelines.memory import FP8Linear

    out = pipes["t2v"].text_encoder.encode_with_negative("x", "")
    embeds = dict(prompt_embeds=out.prompt_embeds, negative_prompt_embeds=out.negative_prompt_embeds)
    base = pipes["t2v"](seed=4, output_type="latent", **embeds, **COMMON)
    assert base.memory_mode == "none"  # "auto": a tiny model fits
    for mode in ("model_offload", "sequential_offload"):
        # On a CPU-only machine offloading moves nothing, but the hooks run: results are identical.
        pipe = load_pipeline(folders["t2v"], memory_mode=mode, text_encoder=False)
        pipe.set_progress_bar_config(disable=True)
        got = pipe(seed=4, output_type="latent", **embeds, **COMMON)
        assert got.memory_mode == mode and torch.equal(got.frames, base.frames), mode
    fp8 = load_pipeline(folders["t2v"], memory_mode="fp8", text_encoder=False)
    fp8.set_progress_bar_config(disable=True)
    layer = fp8.transformer.transformer_blocks[0].attn1.to_q
    assert isinstance(layer, FP8Linear) and layer.weight_fp8.dtype == torch.float8_e4m3fn
    reference_weight = pipes["t2v"].transformer.transformer_blocks[0].attn1.to_q.weight
    # e4m3 keeps 3 mantissa bits: relative weight error <= 2^-4 of each row's scale.
    assert max_diff(layer.dequantized_weight(), reference_weight) <= reference_weight.abs().max() / 16
    got = fp8(seed=4, output_type="latent", **embeds, **COMMON).frames
    assert 0 < max_diff(got, base.frames) < 0.25 * base.frames.abs().max().item()


def test_auto_memory_mode_follows_available_memory(folders, monkeypatch):
    import kinema.pipelines.pipeline as pipeline_module

    pipe = load_pipeline(folders["t2v"], text_encoder=False)  # memory_mode="auto"
    pipe.set_progress_bar_config(disable=True)
    embeds = dict(prompt_embeds=torch.zeros(1, 8, 32), negative_prompt_embeds=torch.zeros(1, 8, 32))
    est = pipe.estimate_memory(H, W, FRAMES)
    # Everything fits -> none; a little less -> fp8 weights + VAE tiling (at 32 px tiling alone saves
    # nothing: the frame is smaller than a tile).
    for available, mode, tiled in [
        (est.peak("none", False) / 0.85 + 1, "none", False),
        (est.peak("fp8", True) / 0.85 + 1, "fp8", True),
    ]:
        monkeypatch.setattr(pipeline_module, "available_memory", lambda device, a=available: a)
        out = pipe(seed=0, output_type="latent", **embeds, **COMMON)
        assert (out.memory_mode, pipe.vae.tile_size is not None) == (mode, tiled)
    assert pipe.memory_mode == "auto" and pipe.active_memory_mode == "fp8"


def test_memory_estimate_and_auto_choice():
    from kinema.pipelines.memory import choose_memory_mode, estimate_memory

    est = estimate_memory(
        transformer_params=12e9,
        transformer_width=3072,
        text_encoder_params=7.6e9,
        vae_params=0.2e9,
        vae_first_width=128,
        height=720,
        width=1280,
        frames=49,
        dtype_bytes=2,
    )
    assert (
        est.peak("none", False, "cuda")
        > est.peak("model_offload", True, "cuda")
        > est.peak("fp8_offload", True, "cuda")
    )
    assert choose_memory_mode(est, 200e9, "cuda") == ("none", False)
    between = (est.peak("none", True, "cpu") + est.peak("none", False, "cpu")) / 2 / 0.85
    assert choose_memory_mode(est, between, "cpu") == ("none", True)  # 720p decode needs tiling
    assert choose_memory_mode(est, 40e9, "cuda")[0] in ("model_offload", "fp8_offload")
    assert choose_memory_mode(est, 16e9, "cuda")[0] in ("fp8_offload", "sequential_offload")
    with pytest.raises(ValueError, match="GB"):
        choose_memory_mode(est, 1e9, "cpu")
    # Camera guidance's still-camera row: the transformer activations of 3 rows instead of 2.
    kw = dict(transformer_params=12e9, transformer_width=3072, text_encoder_params=7.6e9, vae_params=0.2e9,
              vae_first_width=128, height=720, width=1280, frames=49, dtype_bytes=2)  # fmt: skip
    two, three = estimate_memory(**kw), estimate_memory(**kw, extra_rows=1)
    assert three.transformer_activations == pytest.approx(1.5 * two.transformer_activations)


LORA_TARGETS = ["transformer_blocks.0.attn1.to_q", "transformer_blocks.1.ff.net.2"]


@pytest.fixture(scope="module")
def lora_file(pipes, tmp_path_factory):
    """A diffusers-format LoRA (rank 4, alpha 8) on two Linear layers of the T2V transformer."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    state = {}
    for name in LORA_TARGETS:
        module = pipes["t2v"].transformer.get_submodule(name)
        state[f"transformer.{name}.lora_A.weight"] = torch.randn(4, module.in_features, generator=g) * 0.1
        state[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=g) * 0.1
        state[f"transformer.{name}.alpha"] = torch.tensor(8.0)
    path = tmp_path_factory.mktemp("lora") / "lora.safetensors"
    save_file(state, str(path))
    return path, state


def test_lora_merge_formula_and_errors(pipes, folders, lora_file, tmp_path):
    from safetensors.torch import save_file

    path, state = lora_file
    assert sorted(read_lora(path)) == sorted(LORA_TARGETS)
    merged = load_pipeline(folders["t2v"], lora=path, lora_weight=0.5, memory_mode="none", text_encoder=False)
    for name in LORA_TARGETS:
        a, b = state[f"transformer.{name}.lora_A.weight"], state[f"transformer.{name}.lora_B.weight"]
        base = pipes["t2v"].transformer.get_submodule(name).weight
        expected = base + 0.5 * (8.0 / 4) * (b @ a)  # weight x alpha / rank x B A
        assert max_diff(merged.transformer.get_submodule(name).weight, expected) < 1e-6
    bad = tmp_path / "bad.safetensors"
    save_file(
        {
            "transformer.nope.lora_A.weight": torch.zeros(1, 2),
            "transformer.nope.lora_B.weight": torch.zeros(2, 1),
        },
        str(bad),
    )
    with pytest.raises(ValueError, match="not a module"):
        merge_lora(pipes["t2v"].transformer, read_lora(bad))
    save_file({"text_encoder.x.lora_A.weight": torch.zeros(1, 2)}, str(bad))
    with pytest.raises(ValueError, match="text encoder"):
        read_lora(bad)
    # alpha from the peft LoraConfig metadata diffusers' save_lora_weights (and kinema's trainer) write.
    no_alpha = {k: v for k, v in state.items() if not k.endswith(".alpha")}
    meta = {
        "format": "pt",
        "lora_adapter_metadata": json.dumps({"transformer.r": 4, "transformer.lora_alpha": 8}),
    }
    save_file(no_alpha, str(tmp_path / "meta.safetensors"), metadata=meta)
    assert all(float(p["alpha"]) == 8.0 for p in read_lora(tmp_path / "meta.safetensors").values())
    save_file(no_alpha, str(tmp_path / "plain.safetensors"))
    assert all("alpha" not in p for p in read_lora(tmp_path / "plain.safetensors").values())  # scale 1


def test_lora_matches_peft_on_diffusers_transformer(pipes, folders, lora_file):
    """The key format is diffusers'/peft's: peft applied to diffusers' transformer gives the same output."""
    peft = pytest.importorskip("peft")
    from diffusers import EasyAnimateTransformer3DModel

    path, state = lora_file
    ours = load_pipeline(folders["t2v"], lora=path, lora_weight=0.5, memory_mode="none", text_encoder=False)
    ref = EasyAnimateTransformer3DModel.from_pretrained(str(folders["t2v"]), subfolder="transformer")
    peft.inject_adapter_in_model(peft.LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS), ref)
    peft_state = {k.removeprefix("transformer."): v for k, v in state.items() if "lora_" in k}
    peft.set_peft_model_state_dict(ref, peft_state)
    for module in ref.modules():  # peft computes W x + (alpha / r) B A x; lora_weight scales that term
        if isinstance(getattr(module, "scaling", None), dict):
            module.scaling["default"] *= 0.5
    g = torch.Generator().manual_seed(1)
    latents, text, t = (
        torch.randn(1, 16, 2, 4, 4, generator=g),
        torch.randn(1, 7, 32, generator=g),
        torch.tensor([500.0]),
    )
    with torch.no_grad():
        expected = ref(latents, t, encoder_hidden_states=text, return_dict=False)[0]
        got = ours.transformer(latents, t, text)
        plain = pipes["t2v"].transformer(latents, t, text)
    assert max_diff(got, expected) < 1e-5 and max_diff(got, plain) > 1e-3


def test_trajectory_and_canny_are_ordinary_control_videos(pipes, tmp_path):
    from kinema.control import canny_video, load_tracks, render_trajectory_video

    pipe = pipes["control"]
    tracks = tmp_path / "tracks.json"
    tracks.write_text(json.dumps([[0, 4, 4], [4, 28, 20]]))
    rendered = render_trajectory_video(load_tracks(tracks), FRAMES, H, W)
    a = pipe("ball", trajectory=tracks, seed=5, output_type="latent", **COMMON).frames
    b = pipe("ball", control_video=rendered, seed=5, output_type="latent", **COMMON).frames
    assert torch.equal(a, b)
    frames = rand_frames(FRAMES, 15)
    c = pipe(
        "ball", control_video=frames, control_type="canny", seed=5, output_type="latent", **COMMON
    ).frames
    d = pipe("ball", control_video=canny_video(frames), seed=5, output_type="latent", **COMMON).frames
    assert torch.equal(c, d)


def test_long_video_chains_i2v_chunks(pipes):
    pipe = pipes["inp"]
    start = rand_frames(1, 16)[0]
    kw = dict(height=H, width=W, num_inference_steps=2, seed=7)
    long = pipe("river", image=start, num_frames=13, chunk_frames=9, overlap_frames=4, **kw)
    first = pipe("river", image=start, num_frames=9, **kw)
    assert long.frames.shape == (1, 13, H, W, 3) and long.info["mode"] == "i2v+long"
    # The first chunk is an ordinary I2V run; only its last `overlap` frames are cross-faded.
    np.testing.assert_array_equal(long.frames[0, :5], first.frames[0, :5])


# ---- bad input: clear errors before any model runs -------------------------------------------------


def test_bad_inputs(pipes, folders, tmp_path):
    t2v, inp = pipes["t2v"], pipes["inp"]
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    bad_pose = tmp_path / "poses.txt"
    bad_pose.write_text("header\n1 2 3\n")
    bad_tracks = tmp_path / "tracks.json"
    bad_tracks.write_text("[[0, 1")
    cases = [
        (t2v, dict(height=40), "multiple of 16"),
        (t2v, dict(num_frames=6), "4k\\+1"),
        (inp, dict(image=junk), "junk.png"),
        (inp, dict(image=tmp_path / "missing.png"), "does not exist"),
        (t2v, dict(image=rand_frames(1, 0)[0]), "needs an InP model"),
        (pipes["camera"], dict(camera=bad_pose), "poses.txt"),
        (pipes["camera"], dict(camera="pan_sideways"), "pan_sideways"),
        (t2v, dict(camera="pan_left"), "Control-Camera model"),
        (pipes["control"], dict(trajectory=bad_tracks), "tracks.json"),
        (inp, dict(control_video=rand_frames(FRAMES, 0)), "needs a Control model"),
        (t2v, dict(latents=torch.full((1, 16, 2, 4, 4), float("nan"))), "NaN"),
        (t2v, dict(sampler="ddim"), "no flow-matching mode"),
        (t2v, dict(strength=0.5), "needs a video"),
        (inp, dict(video=rand_frames(3, 0)), "3 frame"),
    ]
    for pipe, kwargs, message in cases:
        args = {**COMMON, **kwargs}
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            pipe("x", seed=0, **args)


def test_loading_errors(folders, tmp_path):
    import shutil

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pipeline(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_pipeline(folders["t2v"] / "transformer")
    broken = tmp_path / "broken"
    shutil.copytree(folders["t2v"], broken, ignore=shutil.ignore_patterns("vae"))
    with pytest.raises(FileNotFoundError, match="vae"):
        load_pipeline(broken)
    with pytest.raises(ValueError, match="float16 on CPU"):
        load_pipeline(folders["t2v"], torch_dtype=torch.float16, device="cpu")
    # A component override: the InP transformer in the T2V folder makes an InP pipeline.
    mixed = load_pipeline(folders["t2v"], transformer=folders["inp"] / "transformer", memory_mode="none")
    assert mixed.model_type == "inp"


def test_camera_rope_models_get_the_plane_motion_of_their_poses(pipes, monkeypatch):
    """A Camera model with camera-aware RoPE (kinema extension) gets, at every step, the per-latent-frame
    screen motion of a plane at its depth under the requested poses; models without it get nothing."""
    from kinema.control.camera import camera_preset, latent_plane_motion

    pipe = pipes["camera"]
    tr = pipe.transformer
    seen: list = []
    original = tr.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("camera_motion"))
        return original(*args, **kwargs)

    monkeypatch.setattr(tr, "forward", spy)
    plain = pipe("a street", camera="pan_left", generator=gen(12), output_type="latent", **COMMON).frames
    assert seen and all(m is None for m in seen)
    seen.clear()
    monkeypatch.setattr(tr.config, "camera_rope_depth", 4.0)
    moved = pipe("a street", camera="pan_left", generator=gen(12), output_type="latent", **COMMON).frames
    expected = latent_plane_motion(camera_preset("pan_left", FRAMES), H, W, 4.0, moved.shape[2])
    assert expected[-1, 1] > 0.1  # content moves right by a visible fraction of a cell
    assert seen and all(torch.allclose(m[0], expected) for m in seen)
    assert max_diff(moved, plain) > 1e-3


def test_models_trained_on_warped_noise_start_from_noise_warped_along_the_camera(pipes, monkeypatch):
    """camera_noise_warp_depth (kinema extension): the initial latents are control.noise_warp's noise for the
    requested camera, drawn first from the caller's generator; a model without it gets plain noise."""
    from kinema.control import camera_preset, latent_plane_motion, warped_noise

    pipe = pipes["camera"]
    tr = pipe.transformer
    first: list = []
    original = tr.forward

    def spy(latents, *args, **kwargs):
        first.append(latents[:1].clone())
        return original(latents, *args, **kwargs)

    monkeypatch.setattr(tr, "forward", spy)
    pipe("a street", camera="pan_left", generator=gen(12), output_type="latent", **COMMON)
    plain = first[0]
    first.clear()
    monkeypatch.setattr(tr.config, "camera_noise_warp_depth", 4.0)
    pipe("a street", camera="pan_left", generator=gen(12), output_type="latent", **COMMON)
    f = plain.shape[2]
    motion = latent_plane_motion(camera_preset("pan_left", FRAMES), H, W, 4.0, f)
    assert motion[-1, 1] > 0.1
    expected = warped_noise(motion, tuple(plain.shape[1:]), gen(12))
    torch.testing.assert_close(first[0][0], expected, rtol=0, atol=0)
    assert max_diff(first[0], plain) > 0.5


def test_camera_guidance_adds_w_times_the_camera_minus_a_still_camera(pipes, monkeypatch, tmp_path):
    """camera_guidance_scale w (kinema extension): one more row per step, the positive prompt with the camera
    held at its first pose (Plücker latents of frame 0 throughout, frame 0's RoPE motion), and
    pred = CFG + w * (camera - still). One flow step is linear in pred, so the latents move by exactly w
    times one difference; a camera that does not move gets no push; w = 0 is the plain sampler."""
    from kinema.control.camera import camera_preset, write_pose_file

    pipe = pipes["camera"]
    tr = pipe.transformer
    monkeypatch.setattr(tr.config, "camera_rope_depth", 4.0)
    one = {**COMMON, "num_inference_steps": 1}
    calls: list = []
    original = tr.forward

    def spy(latents, timestep, text, **kwargs):
        calls.append(
            (latents.clone(), text.clone(), kwargs["control_latents"].clone(), kwargs["camera_motion"])
        )
        return original(latents, timestep, text, **kwargs)

    monkeypatch.setattr(tr, "forward", spy)

    def run(w, camera="pan_left"):
        return pipe("a street", camera=camera, camera_guidance_scale=w, generator=gen(3), output_type="latent",
                    **one).frames  # fmt: skip

    base = run(0.0)
    assert len(calls) == 1 and calls[0][0].shape[0] == 2  # w = 0: the plain CFG batch
    w1, w2 = run(1.0), run(2.0)
    latents, text, control, motion = calls[1]
    assert latents.shape[0] == 3 and torch.equal(latents[2], latents[1])
    assert torch.equal(text[2], text[1]) and not torch.equal(text[0], text[1])  # positive prompt, not ''
    plucker = control[:, :6]
    assert max_diff(plucker[1, :, -1], plucker[1, :, 0]) > 1e-2  # the asked camera moves
    torch.testing.assert_close(plucker[2], plucker[1, :, :1].expand_as(plucker[2]), rtol=0, atol=0)
    assert torch.equal(control[2, 6:], control[1, 6:])  # same reference channels
    assert torch.equal(motion[1], motion[0]) and torch.equal(motion[2], motion[0, :1].expand_as(motion[2]))
    push = w1 - base
    assert max_diff(w1, base) > 1e-3
    torch.testing.assert_close(w2 - base, 2 * push, rtol=0, atol=1e-5)
    # Without CFG: [camera, still] and pred = camera + w * (camera - still).
    no_cfg = {**one, "guidance_scale": 1.0}
    calls.clear()
    pipe(
        "a street",
        camera="pan_left",
        camera_guidance_scale=1.0,
        generator=gen(3),
        output_type="latent",
        **no_cfg,
    )
    assert calls[0][0].shape[0] == 2
    # A still camera: nothing to push along.
    still = tmp_path / "still.txt"
    write_pose_file(still, [camera_preset("pan_left", FRAMES)[0]] * FRAMES)
    torch.testing.assert_close(run(2.0, str(still)), run(0.0, str(still)), rtol=0, atol=1e-5)
    # The model folder's default applies when the caller leaves it unset (None).
    monkeypatch.setattr(pipe, "default_camera_guidance_scale", 1.0)
    default = pipe("a street", camera="pan_left", generator=gen(3), output_type="latent", **one).frames
    torch.testing.assert_close(default, w1, rtol=0, atol=0)
    for w, message in ((-1.0, "finite number >= 0"), (float("nan"), "finite number >= 0")):
        with pytest.raises(ValueError, match=message):
            run(w)
    with pytest.raises(ValueError, match="needs a camera"):
        pipes["t2v"]("x", camera_guidance_scale=1.0, **one)


def test_camera_guidance_default_comes_from_the_model_folder(folders, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(folders["camera"], folder)
    assert load_pipeline(folder).default_camera_guidance_scale == 0.0
    index = json.loads((folder / "model_index.json").read_text())
    for value in (1.5, 2):
        index["_kinema_defaults"] = {"camera_guidance_scale": value}
        (folder / "model_index.json").write_text(json.dumps(index))
        assert load_pipeline(folder).default_camera_guidance_scale == float(value)
    for bad in (-1, "1", True):
        index["_kinema_defaults"] = {"camera_guidance_scale": bad}
        (folder / "model_index.json").write_text(json.dumps(index))
        with pytest.raises(ValueError, match="camera_guidance_scale is .*finite number >= 0"):
            load_pipeline(folder)
