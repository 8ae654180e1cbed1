"""Forward-pass speed of kinema's VideoTransformer vs diffusers' EasyAnimateTransformer3DModel on CPU.

An ~80M-parameter V5.1-shaped config (8 MMDiT layers, 8 heads x 64, time_embed_dim 512, text dim 3584)
on a 1x16x13x32x32 latent (3328 video tokens) with 256 text tokens. Same random weights everywhere,
same thread count, every model warmed up once, then timed runs alternate diffusers fp32 / kinema fp32 /
kinema bf16 so that load from other processes hits all three alike. Prints seconds, GFLOP/s, % of the
CPU's nominal peak, and the error of each kinema run against diffusers fp32.

    .venv/bin/python benchmarks/bench_transformer.py [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

CONFIG = dict(
    num_attention_heads=8,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    patch_size=2,
    num_layers=8,
    mmdit_layers=8,
    time_embed_dim=512,
    text_embed_dim=3584,
    add_norm_text_encoder=True,
)
LATENT_SHAPE = (1, 16, 13, 32, 32)
TEXT_LEN = 256
NOMINAL_PEAK_GFLOPS = {"fp32": 150.0, "bf16": 350.0}  # this CPU's matmul figures from the project brief


def forward_flops(cfg: dict, latent_shape: tuple, text_len: int) -> float:
    """Multiply-adds x2 of all matmuls (linears, attention, patch conv); elementwise work ignored."""
    batch, channels, frames, height, width = latent_shape
    p, dim = cfg["patch_size"], cfg["num_attention_heads"] * cfg["attention_head_dim"]
    video = frames * (height // p) * (width // p)
    tokens = video + text_len
    per_block = 2 * tokens * dim * dim * 4  # q, k, v, out projections (both streams)
    per_block += 2 * tokens * dim * 4 * dim * 2  # feed-forward up + down
    per_block += 2 * 2 * tokens * tokens * dim  # q k^T and p v
    per_block += 2 * 2 * cfg["time_embed_dim"] * 6 * dim  # adaLN modulation (tiny)
    total = cfg["num_layers"] * per_block
    total += 2 * video * channels * p * p * dim + 2 * text_len * cfg["text_embed_dim"] * dim
    total += 2 * video * dim * p * p * cfg["out_channels"]
    return float(batch * total)


def measured_matmul_peak(dtype: torch.dtype, n: int = 2048) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best = min(_timed(lambda: torch.matmul(a, b))[0] for _ in range(3))
    return 2 * n**3 / best / 1e9


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per model (alternating); median")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import EasyAnimateTransformer3DModel

    from kinema.models import VideoTransformer

    torch.manual_seed(0)
    ref = EasyAnimateTransformer3DModel(**CONFIG).eval()
    with torch.no_grad():  # all weights random: diffusers zero-inits the adaLN / output layers
        for name, p in ref.named_parameters():
            p.normal_(1.0 if (name.endswith("weight") and p.ndim == 1) else 0.0, 0.02)
    ours = VideoTransformer.from_config(CONFIG).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours_bf16 = VideoTransformer.from_config(CONFIG).eval()
    ours_bf16.load_state_dict(ref.state_dict(), strict=True)
    ours_bf16.to(torch.bfloat16)

    latents = torch.randn(LATENT_SHAPE)
    timestep = torch.tensor([500.0])
    text = torch.randn(1, TEXT_LEN, CONFIG["text_embed_dim"])
    runs = {
        "diffusers fp32": lambda: ref(latents, timestep, encoder_hidden_states=text, return_dict=False)[0],
        "kinema fp32": lambda: ours(latents, timestep, text),
        "kinema bf16": lambda: ours_bf16(latents, timestep, text),
    }
    flops = forward_flops(CONFIG, LATENT_SHAPE, TEXT_LEN)
    print(
        f"params {ours.num_parameters() / 1e6:.1f}M, {flops / 1e9:.0f} GFLOP per forward, threads {args.threads}"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    peaks = {"fp32": measured_matmul_peak(torch.float32), "bf16": measured_matmul_peak(torch.bfloat16)}
    print(f"measured {2048}^3 matmul: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")

    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs = {}
    with torch.no_grad():
        for name, fn in runs.items():  # warm-up
            outputs[name] = fn().float()
        for _ in range(args.rounds):
            for name, fn in runs.items():
                times[name].append(_timed(fn)[0])
    print(f"load average after:  {os.getloadavg()[0]:.2f}")

    reference = outputs["diffusers fp32"]
    base = statistics.median(times["diffusers fp32"])
    print(
        f"\n{'':16} {'median s':>9} {'runs':>22} {'GFLOP/s':>8} {'% nominal':>9} {'speedup':>8} {'max rel err':>12}"
    )
    for name, ts in times.items():
        med = statistics.median(ts)
        precision = "bf16" if "bf16" in name else "fp32"
        rate = flops / med / 1e9
        err = ((outputs[name] - reference).abs().max() / reference.abs().max()).item()
        runs_txt = " ".join(f"{t:.2f}" for t in ts)
        print(
            f"{name:16} {med:9.2f} {runs_txt:>22} {rate:8.0f} {100 * rate / NOMINAL_PEAK_GFLOPS[precision]:8.0f}%"
            f" {base / med:7.2f}x {err:12.2e}"
        )
    print("\nmax rel err = max|out - diffusers fp32| / max|diffusers fp32|")


if __name__ == "__main__":
    main()
