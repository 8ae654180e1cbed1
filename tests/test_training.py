"""kinema.training: config validation, flow-matching numerics, masks/conditioning, LoRA, the trainer.

Every trainer here is tiny (2-layer 2x32 MMDiT, 16/16/32/32 VAE, 64-wide text encoder) on 64x64x9 clips
(48 tokens), single-threaded: a step takes a few tens of milliseconds.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kinema.data import Plan, SampleRequest, collate_samples
from kinema.data.synthetic import write_moving_squares
from kinema.models import VideoTransformer, VideoVAE
from kinema.training.config import ConfigError, FlowConfig, LoRAConfig, config_from_dict, load_config
from kinema.training.ema import EMA
from kinema.training.losses import (
    density_to_sigma,
    latent_frame_mask,
    masked_mse,
    noisy_latents,
    sample_sigmas,
)
from kinema.training.masks import (
    add_reference_noise,
    inpaint_latents,
    masked_video,
    random_inpaint_mask,
    reference_latents,
    resize_mask,
)
from kinema.training.rng import SampleRandom
from kinema.training.trainer import Trainer, TrainingAborted

TINY_TRANSFORMER = {
    "num_layers": 2,
    "mmdit_layers": 2,
    "num_attention_heads": 2,
    "attention_head_dim": 32,
    "time_embed_dim": 64,
    "add_norm_text_encoder": True,
}
TINY_VAE = {"block_out_channels": [16, 16, 32, 32], "norm_num_groups": 8, "layers_per_block": 1}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_moving_squares(
        root, n_clips=6, seed=0, frames=17, sizes=((64, 64),), n_images=2, control=True, camera=True
    )
    return root


@pytest.fixture(scope="module")
def text_encoder():
    from kinema.text import PromptEncoder

    return PromptEncoder.small(hidden_size=64, num_layers=2, seed=0)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VideoVAE.from_config(TINY_VAE).eval()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps process-wide state (mixed precision, accumulation); each test starts clean."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_config(tmp_path, data_root, **extra):
    data = {
        "mode": "t2v",
        "output_dir": str(tmp_path / "run"),
        "seed": 1,
        "model": {"transformer_config": TINY_TRANSFORMER, "vae_config": TINY_VAE, "init_seed": 3},
        "data": {"root": str(data_root)},
        "stages": [
            {
                "token_budget": 48,
                "resolutions": [64],
                "max_frames": 9,
                "batch_size": 2,
                "steps": 6,
                "lr": 2e-3,
            }
        ],
        "train": {"cpu_threads": 1},
        "checkpoint": {"every_steps": 0, "keep_last": 2},
        "logging": {"progress_bar": False, "tensorboard": "off"},
    }
    return config_from_dict(_merge(data, extra))


def make_trainer(config, text_encoder, vae=None):
    components = {"text_encoder": text_encoder}
    if vae is not None:
        components["vae"] = vae
    return Trainer(config, components=components)


def first_batch(trainer, stage=0):
    return next(iter(trainer._loader(stage)))


def transformer_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.transformer.state_dict().items()}


# ---- config ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"data": {"roott": "x"}}, "unknown key 'data.roott'; did you mean 'data.root'?"),
        ({"stages": [{"batch_size": "two"}]}, "'stages[0].batch_size' must be an integer, got str 'two'"),
        ({"stages": [{"max_frames": 48}]}, "'stages[0].max_frames' must be 4k+1"),
        ({"flow": {"timestep_density": "cosine"}}, "'flow.timestep_density' is 'cosine'; choose one of"),
        ({"mode": "audio"}, "'mode' is 'audio'"),
        ({"optimizer": {"betas": [0.9]}}, "'optimizer.betas' must be two numbers"),
        ({"train": {"mixed_precision": True}}, "'train.mixed_precision' must be a string"),
        ({"stages": []}, "'stages' needs at least one"),
    ],
)
def test_config_errors_name_the_field(tmp_path, data_root, extra, message):
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, data_root, **extra)
    assert message in str(err.value)


def test_missing_data_root_fails_before_anything_loads(tmp_path, data_root, text_encoder):
    config = make_config(tmp_path, data_root, data={"root": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="'data.root' folder .*nowhere' does not exist"):
        Trainer(config, components={"text_encoder": text_encoder})


def test_toml_file_cli_help_and_exit_code(tmp_path, data_root, capsys):
    from kinema.cli import main

    good = tmp_path / "good.toml"
    good.write_text(
        f'mode = "t2v"\n[data]\nroot = "{data_root}"\n[[stages]]\ntoken_budget = 48\nresolutions = [64]\n'
    )
    config = load_config(good, {"optimizer.lr": 3e-5})
    assert (
        config.data.root == str(data_root) and config.optimizer.lr == 3e-5 and config.stages[0].steps == 100
    )
    assert main(["train", str(good), "--check"]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\nroot = "/nonexistent/place"\n')
    assert main(["train", str(bad)]) == 2
    assert "'data.root' folder '/nonexistent/place' does not exist" in capsys.readouterr().err
    bad.write_text("[train]\nlearning_rate = 1\n")
    assert main(["train", str(bad)]) == 2
    assert "unknown key 'train.learning_rate'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "accelerate launch" in capsys.readouterr().out


# ---- flow matching -------------------------------------------------------------------------------------------


def test_timestep_densities():
    n = 4000
    rand = SampleRandom(0, 0, list(range(n)))
    u = density_to_sigma(
        torch.rand(n, generator=torch.Generator().manual_seed(0)), FlowConfig(timestep_density="uniform")
    )
    assert abs(u.mean() - 0.5) < 0.02
    sig = sample_sigmas(rand, FlowConfig(timestep_density="logit_normal", logit_mean=0.5, logit_std=0.8))
    logit = torch.log(sig / (1 - sig))
    assert abs(logit.mean() - 0.5) < 0.05 and abs(logit.std() - 0.8) < 0.05
    mode = sample_sigmas(rand, FlowConfig(timestep_density="mode", mode_scale=1.29))
    assert mode.min() >= 0 and mode.max() <= 1 and abs(mode.mean() - 0.5) < 0.03
    # mode_scale 0 is uniform; the shift map pushes sigmas up and keeps the ends.
    x = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert torch.allclose(density_to_sigma(x, FlowConfig(timestep_density="mode", mode_scale=0.0)), 1 - x)
    shifted = density_to_sigma(x, FlowConfig(timestep_density="uniform", shift=3.0))
    assert torch.allclose(shifted, torch.tensor([0.0, 0.5, 0.75, 1.0]))


def test_flow_matching_formula_and_frame_mask():
    x, eps = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    sig = torch.tensor([0.0, 0.7])
    x_t, target = noisy_latents(x, eps, sig)
    assert torch.equal(x_t[0], x[0]) and torch.allclose(x_t[1], 0.3 * x[1] + 0.7 * eps[1])
    assert torch.equal(target, eps - x)
    # 9 real frames of 17 -> latent frames 0..2 real, 3..4 padding; failed samples (weight 0) count zero.
    mask = latent_frame_mask(torch.tensor([17, 9]), 5)
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    pred = torch.zeros(2, 1, 5, 1, 1)
    target = torch.ones(2, 1, 5, 1, 1)
    target[1, :, 3:] = 100.0  # would dominate if padding counted
    loss, per_sample = masked_mse(pred, target, mask, torch.tensor([1.0, 0.0]))
    assert per_sample.tolist() == [1.0, 1.0] and loss.item() == 0.5


def test_step_feeds_the_dit_xt_sigma1000_and_empty_prompt(tmp_path, data_root, text_encoder, vae):
    """Recompute one step by hand from the same random streams: the DiT gets exactly
    x_t = (1-s) z + s eps (z = posterior sample x scaling), timestep s*1000, and dropped prompts get the
    empty prompt's embedding; the loss is the MSE against eps - z."""
    config = make_config(tmp_path, data_root, flow={"text_dropout": 0.5})
    trainer = make_trainer(config, text_encoder, vae).setup()
    batch = first_batch(trainer)
    seen = {}

    def spy(x_t, timestep, text, **cond):
        seen.update(x_t=x_t, timestep=timestep, text=text, cond=cond)
        return torch.zeros_like(x_t)

    trainer.train_model = spy
    trainer.state.micro_step = 5
    loss, stats = trainer.compute_loss(batch)

    rand = SampleRandom(config.seed, 5, [r.slot for r in batch["requests"]])
    posterior = vae.encode(batch["pixels"])
    z = (posterior.mean + posterior.std * rand.randn("posterior", tuple(posterior.mean.shape[1:]))) * 0.7125
    sigma = sample_sigmas(rand, config.flow)
    eps = rand.randn("noise", tuple(z.shape[1:]))
    assert torch.allclose(seen["timestep"], sigma * 1000)
    assert torch.allclose(
        seen["x_t"], (1 - sigma.view(-1, 1, 1, 1, 1)) * z + sigma.view(-1, 1, 1, 1, 1) * eps, atol=1e-5
    )
    assert torch.allclose(loss, (eps - z).pow(2).mean(), rtol=1e-5)
    dropped = (rand.rand("text_dropout", ()) < 0.5).tolist()
    empty = text_encoder.encode([""])[0][0]
    prompts = text_encoder.encode(batch["texts"])[0]
    for i, d in enumerate(dropped):
        assert torch.allclose(seen["text"][i], empty if d else prompts[i], atol=1e-6)
    assert stats["text_dropped"] == sum(dropped) and seen["cond"] == {}


def test_text_dropout_rate():
    rand = SampleRandom(0, 0, list(range(5000)))
    assert abs((rand.rand("text_dropout", ()) < 0.1).float().mean() - 0.1) < 0.015


# ---- masks and conditioning ---------------------------------------------------------------------------------


def test_mask_kinds_semantics():
    rng = np.random.default_rng(0)
    f, h, w = 9, 16, 16
    full = random_inpaint_mask("full", f, h, w, rng)
    first = random_inpaint_mask("first_frame", f, h, w, rng)
    first_last = random_inpaint_mask("first_last", f, h, w, rng)
    box = random_inpaint_mask("box", f, h, w, rng)
    assert full.min() == 1
    assert first[:, 0].max() == 0 and first[:, 1:].min() == 1
    assert first_last[:, 0].max() == 0 and first_last[:, -1].max() == 0 and first_last[:, 1:-1].min() == 1
    assert 0 < box.mean() < 1 and torch.equal(box[:, 0], box[:, -1])  # the same box in every frame
    span = random_inpaint_mask("first_span", f, h, w, rng)
    assert span[:, 0].max() == 0 and span[:, -1].min() == 1
    for kind in ("span", "random_box", "random"):
        m = random_inpaint_mask(kind, f, h, w, rng)
        assert set(m.unique().tolist()) <= {0.0, 1.0} and m.max() == 1
    # Images: temporal kinds become a spatial box (something to keep, something to generate).
    image = random_inpaint_mask("first_frame", 1, h, w, rng)
    assert 0 < image.mean() < 1


def test_inpaint_latents_match_the_inference_recipe():
    from diffusers.pipelines.easyanimate.pipeline_easyanimate_inpaint import (
        resize_mask as diffusers_resize_mask,
    )

    rng = np.random.default_rng(1)
    mask = torch.stack([random_inpaint_mask("first_frame", 9, 32, 32, rng), torch.ones(1, 9, 32, 32)])
    masked_lat = torch.randn(2, 16, 3, 4, 4)
    out = inpaint_latents(mask, masked_lat, 0.7125)
    expected_mask = diffusers_resize_mask(1 - mask, masked_lat, True) * 0.7125
    assert out.shape == (2, 17, 3, 4, 4)
    assert torch.allclose(out[0, :1], expected_mask[0]) and torch.equal(out[0, 1:], masked_lat[0])
    assert out[0, 0, 0].min() == 0.7125 and out[0, 0, 1:].max() == 0  # frame 0 kept, the rest generated
    assert out[1].abs().max() == 0  # fully masked -> T2V: zero inpaint latents
    assert torch.allclose(resize_mask(mask, masked_lat.shape), diffusers_resize_mask(mask, masked_lat, True))
    # Masked video: -1 where generated; noise augmentation leaves those -1 pixels alone.
    video = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    mv = masked_video(video, mask)
    assert torch.equal(mv[0, :, 0], video[0, :, 0]) and (mv[0, :, 1:] == -1).all() and (mv[1] == -1).all()
    noisy = add_reference_noise(mv, torch.tensor([0.05, 0.05]), torch.randn_like(mv))
    assert (noisy[0, :, 1:] == -1).all() and 0.02 < (noisy[0, :, 0] - mv[0, :, 0]).std() < 0.08


def test_flow_loss_weight_hook_scales_the_elements(tmp_path, data_root, text_encoder, vae, monkeypatch):
    import sys
    import types

    module = types.ModuleType("kinema_test_loss_weights")
    seen = []

    def first_frame_x3(batch, shape):
        seen.append((len(batch["extras"]), shape))
        w = torch.ones(shape[0], 1, *shape[2:])
        w[:, :, 0] = 3.0
        return w

    module.first_frame_x3 = first_frame_x3
    monkeypatch.setitem(sys.modules, "kinema_test_loss_weights", module)
    losses = {}
    for name, spec in (("plain", "none"), ("weighted", "kinema_test_loss_weights:first_frame_x3")):
        trainer = make_trainer(
            make_config(tmp_path / name, data_root, flow={"loss_weight": spec}), text_encoder, vae
        )
        trainer.setup()
        batch = first_batch(trainer)
        trainer.train_model = lambda x_t, t, text, **cond: torch.zeros_like(x_t)  # error = target^2
        trainer.state.micro_step = 2
        losses[name] = trainer.compute_loss(batch)[0]
    assert seen and seen[0][0] == len(batch["requests"])
    assert losses["weighted"] > losses["plain"] * 1.01
    with pytest.raises(ValueError, match="flow.loss_weight"):
        make_config(tmp_path / "bad", data_root, flow={"loss_weight": "no_colon"})


def test_i2v_conditioning_end_to_end(tmp_path, data_root, text_encoder, vae):
    """I2V batch: inpaint latents = [resize(1-mask) x sf, VAE-mode(noised masked video) x sf]."""
    config = make_config(
        tmp_path, data_root, mode="i2v",
        inpaint={"mask_probabilities": {"first_frame": 1.0}, "noise_aug_fixed": 0.0},
    )  # fmt: skip
    trainer = make_trainer(config, text_encoder, vae).setup()
    assert trainer.transformer.config.in_channels == 33
    batch = first_batch(trainer)
    seen = {}
    trainer.train_model = lambda x, t, text, **cond: (seen.update(cond), torch.zeros_like(x))[1]
    trainer.compute_loss(batch)
    lat = seen["inpaint_latents"]
    video = batch["pixels"].clone()
    video[:, :, 1:] = -1
    expected = vae.encode(video).mean * 0.7125
    assert torch.allclose(lat[:, 1:], expected, atol=1e-5)
    assert (
        torch.allclose(lat[:, 0, 0], torch.full_like(lat[:, 0, 0], 0.7125)) and lat[:, 0, 1:].abs().max() == 0
    )


def test_i2v_encodes_only_samples_that_keep_pixels(tmp_path, data_root, text_encoder, vae):
    """T2V (`full`) samples get zero inpaint latents without a VAE pass; the others are encoded as before."""
    config = make_config(
        tmp_path, data_root, mode="i2v",
        inpaint={"mask_probabilities": {"full": 0.5, "first_frame": 0.5}, "noise_aug_fixed": 0.0},
    )  # fmt: skip
    trainer = make_trainer(config, text_encoder, vae).setup()
    batch = first_batch(trainer)
    encoded, seen = [], {}
    encode = trainer._encode_mode
    trainer._encode_mode = lambda pixels: (encoded.append(pixels.shape[0]), encode(pixels))[1]
    trainer.train_model = lambda x, t, text, **cond: (seen.update(cond), torch.zeros_like(x))[1]
    for micro_step in range(8):  # until one batch mixes a T2V sample with an I2V one
        trainer.state.micro_step = micro_step
        encoded.clear()
        _, stats = trainer.compute_loss(batch)
        if stats.get("mask_full") == 1 and stats.get("mask_first_frame") == 1:
            break
    else:
        pytest.fail("no micro-step drew one full and one first_frame mask")
    lat = seen["inpaint_latents"]
    t2v = lat[:, 0].flatten(1).abs().amax(1) == 0  # the mask channel is zero only for T2V samples
    assert t2v.sum() == 1 and encoded == [1] and lat[t2v].abs().max() == 0
    video = batch["pixels"][~t2v].clone()
    video[:, :, 1:] = -1
    assert torch.allclose(lat[~t2v, 1:], vae.encode(video).mean * 0.7125, atol=1e-5)


def test_control_and_camera_conditioning(tmp_path, data_root, text_encoder, vae):
    from kinema.control.camera import camera_latents, plucker_embedding, read_pose_file

    for mode, channels in (("control", 48), ("camera", 38)):
        config = make_config(
            tmp_path, data_root, mode=mode, control={"control_dropout": 0.0, "reference_dropout": 0.0}
        )
        trainer = make_trainer(config, text_encoder, vae).setup()
        assert trainer.transformer.config.in_channels == channels
        batch = first_batch(trainer)
        seen: dict = {}

        def spy(x, t, text, seen=seen, **cond):
            seen.update(cond)
            return torch.zeros_like(x)

        trainer.train_model = spy
        trainer.compute_loss(batch)
        control = seen["control_latents"]
        first_frame_latents = vae.encode(batch["pixels"][:, :, :1]).mean * 0.7125
        ref = control[:, -16:]
        assert (
            torch.allclose(ref[:, :, :1], first_frame_latents, atol=1e-5) and ref[:, :, 1:].abs().max() == 0
        )
        if mode == "control":
            sample = trainer.stage_data[0][1].samples[batch["requests"][0].index]
            from kinema.data import load_pixels

            pixels, _ = load_pixels(sample.control_path, batch["plan"], False)
            assert torch.allclose(control[0, :16], vae.encode(pixels[None]).mean[0] * 0.7125, atol=1e-5)
        else:
            req = batch["requests"][0]
            sample = trainer.stage_data[0][1].samples[req.index]
            poses = read_pose_file(sample.camera_path)[req.plan.start : req.plan.start + req.plan.frames]
            pose_size = (
                trainer.config.control.pose_height,
                trainer.config.control.pose_width,
            )  # as generation
            expected = camera_latents(plucker_embedding(poses, 64, 64, pose_size=pose_size), 3, 8, 8)
            assert torch.allclose(control[0, :6], expected, atol=1e-6)
            assert expected.abs().max() > 1  # the x6 scale of real Plücker values
        # Dropout 1.0 zeroes both parts.
        trainer.config.control.control_dropout = trainer.config.control.reference_dropout = 1.0
        trainer.compute_loss(batch)
        assert seen["control_latents"].abs().max() == 0


# ---- LoRA -----------------------------------------------------------------------------------------------------


def test_lora_file_loads_in_diffusers_and_kinema(tmp_path):
    """A LoRA saved by the trainer has diffusers keys; loaded through diffusers' load_lora_weights into
    EasyAnimateTransformer3DModel it gives the same output as kinema with peft, and merge_lora (kinema's
    generation path, no peft) gives it too."""
    from diffusers import EasyAnimateTransformer3DModel
    from diffusers.loaders import CogVideoXLoraLoaderMixin
    from diffusers.loaders.peft import PeftAdapterMixin

    from kinema.training.lora import add_lora, load_lora, lora_state_dict, merge_lora, save_lora

    cfg = {**TINY_TRANSFORMER, "mmdit_layers": 1, "text_embed_dim": 64}
    torch.manual_seed(0)
    model = VideoTransformer.from_config(cfg)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    lora_cfg = LoRAConfig(rank=4, alpha=8.0)
    add_lora(model, lora_cfg)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    state = lora_state_dict(model)
    assert "transformer.transformer_blocks.0.attn1.to_q.lora_A.weight" in state
    assert "transformer.transformer_blocks.0.attn1.add_k_proj.lora_B.weight" in state  # MMDiT block
    assert "transformer.transformer_blocks.1.attn1.to_out.0.lora_A.weight" in state  # shared block
    assert not any("add_q_proj" in k for k in state if ".blocks.1." in k)
    raw, folded = tmp_path / "raw.safetensors", tmp_path / "folded.safetensors"
    save_lora(raw, state, lora_cfg)
    save_lora(folded, state, lora_cfg, fold_alpha=True)
    assert load_lora(raw)[1]["lora_alpha"] == 8.0 and load_lora(folded)[1]["lora_alpha"] == 4.0

    x, t, text = torch.randn(1, 16, 3, 8, 8), torch.tensor([400.0]), torch.randn(1, 7, 64)
    with torch.no_grad():
        expected = model(x, t, text)

    class DiffusersTransformer(EasyAnimateTransformer3DModel, PeftAdapterMixin):
        pass  # diffusers 0.42.1's EasyAnimate classes lack the LoRA mixins; the loading code is generic

    class Pipe(CogVideoXLoraLoaderMixin):  # any pipeline mixin with a "transformer" component
        hf_device_map = None

        def __init__(self, transformer):
            self.transformer = transformer

        @property
        def components(self):
            return {"transformer": self.transformer}

    config = VideoTransformer.from_config(cfg).config_dict()
    for file in (raw, folded):
        ref = DiffusersTransformer.from_config(config)
        ref.load_state_dict(base)
        Pipe(ref).load_lora_weights(str(file))
        with torch.no_grad():
            got = ref(x, t, encoder_hidden_states=text, return_dict=False)[0]
        assert (got - expected).abs().max() < 1e-5
        merged = VideoTransformer.from_config(cfg)
        merged.load_state_dict(base)
        assert merge_lora(merged, file) == len(state) // 2
        with torch.no_grad():
            assert (merged(x, t, text) - expected).abs().max() < 1e-5
    # `kinema generate --lora` (the pipeline's reader) on the folded file the trainer exports.
    pipeline_loading = pytest.importorskip("kinema.pipelines.loading")
    generated = VideoTransformer.from_config(cfg)
    generated.load_state_dict(base)
    pipeline_loading.merge_lora(generated, pipeline_loading.read_lora(folded))
    with torch.no_grad():
        assert (generated(x, t, text) - expected).abs().max() < 1e-5
    plain = VideoTransformer.from_config(cfg)
    plain.load_state_dict(base)
    with torch.no_grad():
        assert (plain(x, t, text) - expected).abs().max() > 1e-3  # the LoRA does change the output
    with pytest.raises(ValueError, match="no Linear layer"):
        merge_lora(
            plain,
            {
                "transformer.nope.lora_A.weight": torch.zeros(4, 8),
                "transformer.nope.lora_B.weight": torch.zeros(8, 4),
            },
        )


# ---- EMA -------------------------------------------------------------------------------------------------------


def test_ema_math():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.9, update_after_step=0)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=100)  # decay min(0.9, 101/110) = 0.9
    assert torch.allclose(ema.shadow["weight"], start * 0.9 + (start + 1) * 0.1)
    assert ema.decay_at(0) == pytest.approx(0.1)  # warm-up: early updates follow the model
    restored = EMA(model, 0.9)
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.shadow["weight"], ema.shadow["weight"])


# ---- the trainer -------------------------------------------------------------------------------------------------


def test_lr_schedule_per_stage(tmp_path, data_root):
    config = make_config(
        tmp_path, data_root,
        stages=[{"token_budget": 48, "resolutions": [64], "steps": 10, "lr": 1e-3},
                {"token_budget": 48, "resolutions": [64], "steps": 10, "lr": 1e-4}],
        scheduler={"name": "cosine", "warmup_steps": 2},
    )  # fmt: skip
    trainer = object.__new__(Trainer)
    trainer.config = config
    lr = trainer.lr_at
    assert lr(0) == pytest.approx(5e-4) and lr(1) == pytest.approx(1e-3)  # warmup
    assert lr(2) == pytest.approx(1e-3) and lr(9) < 1e-4  # cosine decay to 0 over the stage
    assert lr(10) == pytest.approx(5e-5) and lr(11) == pytest.approx(1e-4)  # stage 2 warms up again
    assert trainer.stage_at(9) == (0, 9) and trainer.stage_at(10) == (1, 0)


@pytest.mark.parametrize("lora", [False, True])
def test_resume_gives_the_same_losses_and_weights(tmp_path, data_root, text_encoder, vae, lora):
    """6 steps in one go == 3 steps + resume from the checkpoint + 3 steps: identical losses and weights.
    Covers AdamW state, LR warmup/cosine, EMA, grad clipping, a stage switch and the data position."""
    extra = {
        "stages": [
            {
                "token_budget": 48,
                "resolutions": [64],
                "max_frames": 9,
                "batch_size": 2,
                "steps": 4,
                "lr": 2e-3,
            },
            {
                "token_budget": 48,
                "resolutions": [64, 48],
                "max_frames": 9,
                "batch_size": 1,
                "steps": 2,
                "lr": 1e-3,
            },
        ],
        "scheduler": {"name": "cosine", "warmup_steps": 2},
        "ema": {"enabled": True, "decay": 0.9},
        "train": {"max_grad_norm": 0.5},
        "lora": {"enabled": lora, "rank": 4, "alpha": 8.0},
    }
    straight = make_trainer(make_config(tmp_path / "a", data_root, **extra), text_encoder, vae)
    full = straight.train()
    first = make_trainer(make_config(tmp_path / "b", data_root, max_steps=3, **extra), text_encoder, vae)
    part1 = first.train()
    resumed = make_trainer(
        make_config(tmp_path / "b", data_root, checkpoint={"resume": "latest"}, **extra), text_encoder, vae
    )
    part2 = resumed.train()
    assert len(full.losses) == 6 and part1.steps == 3 and part2.steps == 6
    assert full.losses == part1.losses + part2.losses  # exact
    a, b = transformer_state(straight), transformer_state(resumed)
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    assert all(torch.equal(straight.ema.shadow[k], resumed.ema.shadow[k]) for k in straight.ema.shadow)
    assert full.losses[0] != full.losses[1]
    out = tmp_path / "a" / "run" / "final"
    assert (out / ("lora.safetensors" if lora else "transformer")).exists()
    if lora:  # checkpoints keep the raw adapter for resuming; exports only the folded file
        assert (
            tmp_path / "a" / "run" / "checkpoints" / "step-000006" / "lora_resume_state.safetensors"
        ).exists()
        assert not (out / "lora_resume_state.safetensors").exists()
    assert (out / ("lora_ema.safetensors" if lora else "transformer_ema")).exists()
    rows = [
        json.loads(line)
        for line in (tmp_path / "a" / "run" / "logs" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and rows[-1]["stage"] == 1


def test_training_learns_and_checkpoints_rotate(tmp_path, data_root, text_encoder, vae):
    """A few dozen steps on the same 2 clips bring the loss down; only the last 2 checkpoints stay."""
    config = make_config(
        tmp_path, data_root,
        stages=[{"token_budget": 48, "resolutions": [64], "max_frames": 9, "batch_size": 2, "steps": 40, "lr": 3e-3}],
        data={"root": str(data_root), "random_start": False},
        flow={"text_dropout": 0.0}, checkpoint={"every_steps": 10, "keep_last": 2},
    )  # fmt: skip
    trainer = make_trainer(config, text_encoder, vae)
    trainer.setup()
    # Train on two fixed samples so the trend is not hidden by data variety.
    sampler = trainer.stage_data[0][0]
    keep = sampler.samples[:2]
    sampler.samples[:] = [s for s in keep for _ in range(4)]
    result = trainer.train()
    early, late = np.mean(result.losses[:8]), np.mean(result.losses[-8:])
    assert late < 0.85 * early, (early, late)
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-000030", "step-000040"]  # keep_last = 2, no temp folders left


def test_nonfinite_steps_are_skipped_then_abort_with_checkpoint(tmp_path, data_root, text_encoder, vae):
    config = make_config(tmp_path, data_root, train={"max_nonfinite_steps": 2})
    trainer = make_trainer(config, text_encoder, vae).setup()
    real = trainer.compute_loss
    bad_steps = {1, 3, 4}
    snapshots = []

    def poisoned(batch):
        loss, stats = real(batch)
        snapshots.append(transformer_state(trainer))
        return (loss * float("nan") if trainer.state.step in bad_steps else loss), stats

    trainer.compute_loss = poisoned
    with pytest.raises(TrainingAborted, match="2 non-finite steps in a row"):
        trainer.train()
    assert trainer.state.step == 5 and trainer.state.nonfinite_steps == 3
    # Step 1 was skipped: the weights before steps 1 and 2 are identical; step 2 trained.
    assert all(torch.equal(snapshots[1][k], snapshots[2][k]) for k in snapshots[1])
    assert not all(torch.equal(snapshots[2][k], snapshots[3][k]) for k in snapshots[2])
    # The abort saved a checkpoint holding the last good weights (those after step 2).
    saved = VideoTransformer.from_pretrained(tmp_path / "run" / "checkpoints" / "step-000005" / "transformer")
    assert all(torch.equal(saved.state_dict()[k], snapshots[3][k]) for k in snapshots[3])


def test_unreadable_files_are_skipped_and_counted(tmp_path, data_root, text_encoder, vae):
    bad_root = tmp_path / "data"
    bad_root.mkdir()
    rows = [json.loads(line) for line in (data_root / "metadata.jsonl").read_text().splitlines()]
    for r in rows:
        for key in ("file_path", "control_file_path", "camera_file_path"):
            if key in r:
                r[key] = str(data_root / r[key])
    (bad_root / "garbage.mp4").write_bytes(b"\x00\x01" * 500)
    # Complete metadata: not probed at startup, so the failure shows up while training.
    rows.append({"file_path": "garbage.mp4", "text": "x", "width": 64, "height": 64, "num_frames": 17})
    rows.append({"file_path": "missing.mp4", "text": "y"})  # caught at startup
    (bad_root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = make_config(tmp_path, bad_root, data={"root": str(bad_root)},
                         stages=[{"token_budget": 48, "resolutions": [64], "max_frames": 9, "batch_size": 1, "steps": 14}])  # fmt: skip
    result = make_trainer(config, text_encoder, vae).train()
    assert result.steps == 14 and result.skipped_samples == 1 and result.data_errors >= 1
    assert all(math.isfinite(v) for v in result.losses)


def test_bf16_autocast_runs_the_dit_in_bf16(tmp_path, data_root, text_encoder, vae):
    config = make_config(tmp_path, data_root, train={"mixed_precision": "bf16", "gradient_checkpointing": True},
                         stages=[{"token_budget": 48, "resolutions": [64], "max_frames": 9, "batch_size": 2, "steps": 2}])  # fmt: skip
    trainer = make_trainer(config, text_encoder, vae).setup()
    dtypes = []
    trainer.transformer.proj_out.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    result = trainer.train()
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert all(math.isfinite(v) for v in result.losses)
    assert trainer.transformer.proj_out.weight.dtype == torch.float32  # fp32 master weights


def test_i2v_from_t2v_checkpoint_widens_input_and_samples_preview(tmp_path, data_root, text_encoder, vae):
    """expand_input_channels: the widened InP model starts exactly as the T2V one; preview videos are written."""
    torch.manual_seed(0)
    t2v = VideoTransformer.from_config({**TINY_TRANSFORMER, "text_embed_dim": 64})
    t2v.save_pretrained(tmp_path / "t2v")
    config = make_config(
        tmp_path, data_root, mode="i2v",
        model={"transformer_path": str(tmp_path / "t2v"), "expand_input_channels": True},
        stages=[{"token_budget": 48, "resolutions": [64], "max_frames": 9, "batch_size": 1, "steps": 2}],
        sample={"every_steps": 2, "prompts": ["a red square"], "steps": 2},
    )  # fmt: skip
    trainer = make_trainer(config, text_encoder, vae).setup()
    widened = trainer.transformer
    assert widened.config.in_channels == 33
    x, t, text = torch.randn(1, 16, 3, 8, 8), torch.tensor([300.0]), torch.randn(1, 5, 64)
    with torch.no_grad():
        assert torch.allclose(
            widened(x, t, text, inpaint_latents=torch.randn(1, 17, 3, 8, 8)),
            t2v.eval()(x, t, text),
            atol=1e-6,
        )
    trainer.train()
    assert (tmp_path / "run" / "samples" / "step-000002-0.mp4").stat().st_size > 0
    with pytest.raises(ConfigError, match="needs a transformer with in_channels=33"):
        make_trainer(
            make_config(tmp_path, data_root, mode="i2v", model={"transformer_path": str(tmp_path / "t2v")}),
            text_encoder,
            vae,
        ).setup()


def test_condition_input_lr_multiplier_scales_only_the_new_channels(tmp_path, data_root, text_encoder, vae):
    """One i2v step with the multiplier m: the conditioning input channels of ``proj`` move m times as far as
    without it (same seed, same batch); every other weight moves exactly as without it."""
    torch.manual_seed(0)
    t2v = VideoTransformer.from_config({**TINY_TRANSFORMER, "text_embed_dim": 64})
    t2v.save_pretrained(tmp_path / "t2v")
    start = None
    moved = {}
    for mult in (1.0, 4.0):
        config = make_config(
            tmp_path, data_root, mode="i2v", output_dir=str(tmp_path / f"run{mult}"),
            model={"transformer_path": str(tmp_path / "t2v"), "expand_input_channels": True},
            stages=[{"token_budget": 48, "resolutions": [64], "max_frames": 9, "batch_size": 1, "steps": 1}],
            optimizer={"condition_input_lr_multiplier": mult, "weight_decay": 0.0},
        )  # fmt: skip
        trainer = make_trainer(config, text_encoder, vae).setup()
        before = {k: v.detach().clone() for k, v in trainer.transformer.state_dict().items()}
        start = before if start is None else start
        assert all(torch.equal(start[k], v) for k, v in before.items())
        trainer.train()
        moved[mult] = {k: v.detach() - before[k] for k, v in trainer.transformer.state_dict().items()}
    base, scaled = moved[1.0], moved[4.0]
    new = base["proj.weight"][:, 16:]
    assert new.abs().max() > 0
    assert torch.allclose(scaled["proj.weight"][:, 16:], 4 * new, rtol=1e-4, atol=1e-7)
    assert torch.equal(scaled["proj.weight"][:, :16], base["proj.weight"][:, :16])
    assert all(torch.equal(scaled[k], v) for k, v in base.items() if k != "proj.weight")
    with pytest.raises(ConfigError, match="condition_input_lr_multiplier"):
        make_config(
            tmp_path, data_root, optimizer={"condition_input_lr_multiplier": 4.0}
        )  # t2v: no new channels
    with pytest.raises(ConfigError, match="condition_input_lr_multiplier"):
        make_config(tmp_path, data_root, mode="i2v", optimizer={"condition_input_lr_multiplier": 0.0})


def test_vae_training_with_discriminator(tmp_path, data_root):
    config = make_config(
        tmp_path, data_root, mode="vae",
        stages=[{"token_budget": 48, "resolutions": [64], "max_frames": 9, "batch_size": 1, "steps": 4, "lr": 1e-3}],
        vae_loss={"disc_start": 2, "perceptual": "random_conv", "disc_channels": 8, "disc_layers": 2},
    )  # fmt: skip
    trainer = Trainer(config).setup()
    disc = trainer.accelerator.unwrap_model(trainer.disc)
    disc_before = {k: v.clone() for k, v in disc.state_dict().items()}
    vae_before = {k: v.clone() for k, v in trainer.vae.state_dict().items()}
    result = trainer.train()
    assert len(result.losses) == 4 and all(math.isfinite(v) for v in result.losses)
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()
    ]
    assert all("kl" in r and "perceptual" in r for r in rows)
    assert ["d_loss" in r for r in rows] == [False, False, True, True]  # D starts at step 2
    assert any(not torch.equal(disc_before[k], v) for k, v in disc.state_dict().items())
    assert any(not torch.equal(vae_before[k], v) for k, v in trainer.vae.state_dict().items())
    reloaded = VideoVAE.from_pretrained(tmp_path / "run" / "final" / "vae")
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in trainer.vae.state_dict().items())
    # Image batches (one frame) go through the same losses, discriminator included.
    dataset = trainer.stage_data[0][1]
    image = next(i for i, s in enumerate(dataset.samples) if s.is_image)
    batch = collate_samples([dataset[SampleRequest(image, Plan(64, 64, 1), 0, 0, 0)]])
    loss, stats = trainer.compute_loss(batch)
    assert math.isfinite(loss.item()) and "g_adv" in stats and math.isfinite(trainer._disc_backward())


def test_vae_decoder_only_training_keeps_the_latent_space(tmp_path, data_root):
    config = make_config(
        tmp_path, data_root, mode="vae",
        stages=[{"token_budget": 48, "resolutions": [64], "max_frames": 9, "batch_size": 1, "steps": 2, "lr": 1e-3}],
        vae_loss={"train_encoder": False, "sample_posterior": False},
    )  # fmt: skip
    trainer = Trainer(config).setup()
    before = {k: v.clone() for k, v in trainer.vae.state_dict().items()}
    trainer.train()
    after = trainer.vae.state_dict()
    frozen = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))


def test_latent_cache_is_filled_then_used(tmp_path, data_root, text_encoder, vae, monkeypatch):
    config = make_config(
        tmp_path,
        data_root,
        data={"root": str(data_root), "cache_dir": str(tmp_path / "cache"), "random_start": False},
    )
    first = make_trainer(config, text_encoder, vae)
    first.train()
    assert first.cache.misses > 0 and list((tmp_path / "cache").rglob("*.safetensors"))
    again = make_trainer(make_config(tmp_path / "2", data_root, data=config.data.__dict__), text_encoder, vae)
    calls = []
    again.setup()
    # must not be needed any more (monkeypatch: the VAE is shared by the module's tests)
    monkeypatch.setattr(again.vae, "encode", lambda *a, **k: calls.append(1))
    result = again.train()
    assert not calls and again.cache.hits > 0 and all(math.isfinite(v) for v in result.losses)


def test_plan_and_geometry_used_by_trainer(tmp_path, data_root, text_encoder, vae):
    trainer = make_trainer(make_config(tmp_path, data_root), text_encoder, vae).setup()
    batch = first_batch(trainer)
    assert batch["plan"] == Plan(64, 64, 9, batch["plan"].start, 1) and batch["pixels"].shape == (
        2,
        3,
        9,
        64,
        64,
    )
    assert trainer.geometry.tokens(64, 64, 9) == 48
    assert reference_latents(torch.ones(1, 2, 1, 2, 2), 3)[:, :, 1:].abs().max() == 0


def test_stage_filters(tmp_path, data_root, text_encoder, vae):
    stages = [
        {
            "token_budget": 48,
            "resolutions": [64],
            "batch_size": 1,
            "steps": 1,
            "filter": {"types": ["image"]},
        },
        {"token_budget": 48, "resolutions": [64], "batch_size": 1, "steps": 1, "filter": {"max_samples": 3}},
    ]
    trainer = make_trainer(make_config(tmp_path, data_root, stages=stages), text_encoder, vae).setup()
    assert [s.type for s in trainer.stage_data[0][1].samples] == ["image", "image"]
    assert len(trainer.stage_data[1][1].samples) == 3
    with pytest.raises(ConfigError, match=r"'stages\[0\].filter' leaves no sample"):
        bad = [{"token_budget": 48, "resolutions": [64], "filter": {"min_frames": 1000, "types": ["video"]}}]
        make_trainer(make_config(tmp_path, data_root, stages=bad), text_encoder, vae).setup()


def test_fallback_preview_sampler(text_encoder, vae):
    from kinema.training.sampling import flow_sigmas, sample_preview

    sigmas = flow_sigmas(4)
    assert sigmas[0] == 1 and sigmas[-1] == 0 and bool((sigmas[1:] < sigmas[:-1]).all())
    assert sigmas[2] == pytest.approx(math.e / (math.e + 1))  # dynamic shift mu=1 of sigma 0.5
    torch.manual_seed(0)
    model = VideoTransformer.from_config({**TINY_TRANSFORMER, "text_embed_dim": 64, "in_channels": 33})
    frames = sample_preview(model, vae, text_encoder, "a red square", height=32, width=48, frames=5, steps=2)
    assert frames.shape == (5, 32, 48, 3) and frames.dtype == np.uint8 and model.training


def test_dotted_overrides_index_arrays_of_tables():
    """``kinema train --set``: dotted keys reach into arrays of tables by index; bad paths name the rule."""
    from kinema.training.config import load_config

    root = Path(__file__).resolve().parents[1]
    config = load_config(
        root / "configs" / "reward_shapes.toml",
        {"reward.rewards.1.weight": 0.5, "stages.0.lr": 1e-4, "reward.guidance": 3.0},
    )
    assert [t.weight for t in config.reward.rewards] == [1.0, 0.5, 2.0]
    assert config.stages[0].lr == 1e-4 and config.reward.guidance == 3.0
    with pytest.raises(ConfigError, match=r"'reward.rewards' is a list of 3; use an index 0..2"):
        load_config(root / "configs" / "reward_shapes.toml", {"reward.rewards.7.weight": 0.5})
    with pytest.raises(ConfigError, match="'reward.guidance' is a value, not a table"):
        load_config(root / "configs" / "reward_shapes.toml", {"reward.guidance.x": 1})


def test_compiled_forward_trains_like_eager(tmp_path, data_root, text_encoder, vae):
    """train.compile: same loss and gradients as the eager forward (inductor reorders float sums)."""
    results = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        config = make_config(tmp_path / name, data_root, train={"compile": compiled, "cpu_threads": 1})
        trainer = make_trainer(config, text_encoder, vae).setup()
        assert (trainer.compiled_forward is not None) == compiled
        trainer.state.micro_step = 1
        loss, _ = trainer.compute_loss(first_batch(trainer))
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in trainer.transformer.parameters() if p.grad is not None])
        results[name] = (loss.detach(), grads)
    (loss_e, grad_e), (loss_c, grad_c) = results["eager"], results["compiled"]
    assert torch.allclose(loss_c, loss_e, rtol=1e-4) and loss_e > 0
    assert torch.allclose(grad_c, grad_e, rtol=1e-3, atol=1e-6)
    with pytest.raises(ConfigError, match="train.compile"):
        make_config(tmp_path / "vae", data_root, mode="vae", train={"compile": True})


def test_camera_rope_depth_turns_on_camera_aware_rope_in_camera_training(
    tmp_path, data_root, text_encoder, vae
):
    from kinema.control.camera import latent_plane_motion, read_pose_file

    config = make_config(
        tmp_path, data_root, mode="camera", model={"camera_rope_depth": 1.0},  # the synthetic plane
        control={"control_dropout": 0.0, "reference_dropout": 0.0},
    )  # fmt: skip
    trainer = make_trainer(config, text_encoder, vae).setup()
    assert trainer.transformer.config.camera_rope_depth == 1.0
    batch = first_batch(trainer)
    seen: dict = {}

    def spy(x, t, text, **cond):
        seen.update(cond)
        return torch.zeros_like(x)

    trainer.train_model = spy
    trainer.compute_loss(batch)
    req = batch["requests"][0]
    sample = trainer.stage_data[0][1].samples[req.index]
    poses = read_pose_file(sample.camera_path)[req.plan.start : req.plan.start + req.plan.frames]
    f = seen["control_latents"].shape[2]
    expected = latent_plane_motion(poses, req.plan.height, req.plan.width, 1.0, f)
    assert (expected[-1] - torch.tensor([1.0, 0.0, 0.0])).abs().max() > 0.05  # the test poses move
    assert seen["camera_motion"].shape == (len(batch["requests"]), f, 3)
    torch.testing.assert_close(seen["camera_motion"][0], expected)
    # A dropped camera is an identity motion, as the zeroed Plücker input says "no camera".
    trainer.config.control.control_dropout = 1.0
    trainer.compute_loss(batch)
    torch.testing.assert_close(
        seen["camera_motion"], torch.tensor([1.0, 0.0, 0.0]).expand_as(seen["camera_motion"])
    )
    # Only camera runs may set it.
    with pytest.raises(ValueError, match="camera_rope_depth is for camera training"):
        make_trainer(
            make_config(tmp_path, data_root, model={"camera_rope_depth": 6.0}), text_encoder, vae
        ).setup()


def test_camera_noise_warp_depth_trains_on_noise_warped_along_each_clips_camera(
    tmp_path, data_root, text_encoder, vae, monkeypatch
):
    import kinema.control.noise_warp as noise_warp
    import kinema.training.trainer as trainer_module
    from kinema.control.camera import latent_plane_motion, read_pose_file

    config = make_config(
        tmp_path, data_root, mode="camera", model={"camera_noise_warp_depth": 1.0},
        control={"control_dropout": 1.0},  # warped by the true camera even where its input is dropped
    )  # fmt: skip
    trainer = make_trainer(config, text_encoder, vae).setup()
    assert trainer.transformer.config.camera_noise_warp_depth == 1.0
    batch = first_batch(trainer)
    warps, used = [], []
    real_warp, real_noisy = noise_warp.warped_noise, trainer_module.noisy_latents

    def spy_warp(motion, shape, generator=None, **kw):
        warps.append((motion, real_warp(motion, shape, generator, **kw)))
        return warps[-1][1]

    def spy_noisy(latents, noise, sigmas):
        used.append(noise)
        return real_noisy(latents, noise, sigmas)

    monkeypatch.setattr(noise_warp, "warped_noise", spy_warp)
    monkeypatch.setattr(trainer_module, "noisy_latents", spy_noisy)
    trainer.compute_loss(batch)
    req = batch["requests"][0]
    sample = trainer.stage_data[0][1].samples[req.index]
    poses = read_pose_file(sample.camera_path)[req.plan.start : req.plan.start + req.plan.frames]
    f = used[0].shape[2]
    torch.testing.assert_close(
        warps[0][0], latent_plane_motion(poses, req.plan.height, req.plan.width, 1.0, f)
    )
    assert len(warps) == len(batch["requests"])
    torch.testing.assert_close(used[0][0], warps[0][1], rtol=0, atol=0)
    # The same micro-step draws the same noise again (resumable runs repeat their randomness).
    trainer.compute_loss(batch)
    torch.testing.assert_close(used[1], used[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="camera_noise_warp_depth is for camera training"):
        make_trainer(
            make_config(tmp_path, data_root, model={"camera_noise_warp_depth": 6.0}), text_encoder, vae
        ).setup()
