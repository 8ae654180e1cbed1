"""Training-step throughput of a V5.1-shaped DiT on CPU (not a test: prints figures).

``--model 80m`` (default): the ~80M-parameter DiT below. ``--model shapes``: the embedded ShapesWorld
transformer as `configs/shapes/t2v.toml` trains it (3.65M parameters, batch 32 of 5x8x8 latents = 17
frames of 64x64, 96 text tokens of width 32), where the question is how much of a step is matmul.

One training step = forward + flow-matching MSE + backward + AdamW step, on a 1x16x13x32x32 latent
(13 x 16 x 16 = 3328 video tokens, the 256x256x49 budget of V5.1's first stage) with 256 text tokens of
width 3584. Variants: fp32 / bf16 autocast (what ``train.mixed_precision = "bf16"`` does), each with and
without gradient checkpointing. Each variant runs in its own subprocess so its peak RSS is its own.

Reported: seconds per step (median of the timed steps), video tokens/s, GFLOP/s counting 3 x forward
FLOPs per step (the usual "model FLOPs": recomputation under checkpointing is not counted as useful
work), that as % of this CPU's nominal matmul peak (150 fp32 / 350 bf16 GFLOP/s, from the project
brief) and of the matmul peak measured here, and peak RSS.

    .venv/bin/python benchmarks/bench_training.py [--threads 2] [--steps 3]
    .venv/bin/python benchmarks/bench_training.py --model shapes --steps 10   # + a torch.compile variant
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from common import CONFIG_80M, LATENT_SHAPE, NOMINAL_PEAK_GFLOPS, TEXT_LEN

# The embedded ShapesWorld transformer (configs/shapes/t2v.toml), at the trainer's batch.
CONFIG_SHAPES = dict(
    num_attention_heads=4, attention_head_dim=32, in_channels=16, out_channels=16, patch_size=2,
    num_layers=6, mmdit_layers=6, time_embed_dim=128, add_norm_text_encoder=True, text_embed_dim=32,
    sample_height=8, sample_width=8,
)  # fmt: skip
MODELS = {  # name: (config, latent shape, text tokens, variants (precision, checkpointing, compile))
    "80m": (
        CONFIG_80M, LATENT_SHAPE, TEXT_LEN,
        [("fp32", False, False), ("fp32", True, False), ("bf16", False, False), ("bf16", True, False)],
    ),
    "shapes": (
        CONFIG_SHAPES, (32, 16, 5, 8, 8), 96,
        [("fp32", False, False), ("bf16", False, False), ("bf16", False, True)],
    ),
}  # fmt: skip


def forward_flops(cfg: dict, latent_shape: tuple, text_len: int) -> float:
    """2 x multiply-adds of every matmul of one forward pass (linears, attention, patch conv)."""
    batch, channels, frames, height, width = latent_shape
    p, dim = cfg["patch_size"], cfg["num_attention_heads"] * cfg["attention_head_dim"]
    video = frames * (height // p) * (width // p)
    tokens = video + text_len
    per_block = 2 * tokens * dim * dim * 4  # q, k, v, out projections (both streams)
    per_block += 2 * tokens * dim * 4 * dim * 2  # feed-forward up + down
    per_block += 2 * 2 * tokens * tokens * dim  # q k^T and p v
    per_block += 2 * 2 * cfg["time_embed_dim"] * 6 * dim  # adaLN modulation
    total = cfg["num_layers"] * per_block
    total += 2 * video * channels * p * p * dim + 2 * text_len * cfg["text_embed_dim"] * dim
    total += 2 * video * dim * p * p * cfg["out_channels"]
    return float(batch * total)


def matmul_peak(dtype_name: str, n: int = 2048) -> float:
    import torch

    dtype = torch.float32 if dtype_name == "fp32" else torch.bfloat16
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def run_variant(
    model_name: str, precision: str, checkpointing: bool, compiled: bool, steps: int, threads: int
):
    import torch

    torch.set_num_threads(threads)
    from kinema.models import VideoTransformer

    config, latent_shape, text_len, _ = MODELS[model_name]
    torch.manual_seed(0)
    model = VideoTransformer.from_config(config).train()
    if checkpointing:
        model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if compiled else model
    batch = latent_shape[0]
    latents = torch.randn(latent_shape)
    noise = torch.randn(latent_shape)
    text = torch.randn(batch, text_len, config["text_embed_dim"])
    sigma = torch.linspace(0.2, 0.9, batch)
    s = sigma.view(-1, 1, 1, 1, 1)
    x_t = (1 - s) * latents + s * noise
    target = noise - latents

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            pred = forward(x_t, sigma * 1000, text)
        loss = (pred.float() - target).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    start = time.perf_counter()
    step()  # warm-up (allocations, oneDNN primitive creation; compilation)
    first_s = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "precision": precision,
        "checkpointing": checkpointing,
        "first_s": first_s,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "step_s": statistics.median(times),
        "all_s": times,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "matmul_peak_gflops": matmul_peak(precision),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=sorted(MODELS), default="80m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # child mode: "fp32:0:0"
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.variant:
        precision, ckpt, compiled = args.variant.split(":")
        r = run_variant(args.model, precision, ckpt == "1", compiled == "1", args.steps, args.threads)
        print(json.dumps(r))
        return

    config, latent_shape, text_len, variants = MODELS[args.model]
    video_tokens = latent_shape[0] * latent_shape[2] * (latent_shape[3] // 2) * (latent_shape[4] // 2)
    model_flops = 3 * forward_flops(config, latent_shape, text_len)
    print(f"video tokens {video_tokens}, text tokens {text_len} x {latent_shape[0]}, threads {args.threads}, "
          f"model FLOPs/step {model_flops / 1e9:.0f} G (3 x forward)")  # fmt: skip
    print(f"load average before: {os.getloadavg()[0]:.2f} (2-core machine shared with other jobs)")
    header = f"{'variant':<22}{'s/step':>8}{'tokens/s':>10}{'GFLOP/s':>9}{'% nominal':>11}{'% measured':>12}{'peak RSS':>10}"
    print(header)
    for precision, ckpt, compiled in variants:
        cmd = [sys.executable, __file__, "--model", args.model, "--variant", f"{precision}:{int(ckpt)}:{int(compiled)}",
               "--threads", str(args.threads), "--steps", str(args.steps)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        gflops = model_flops / r["step_s"] / 1e9
        name = f"{precision}{' + checkpointing' if ckpt else ''}{' + compile' if compiled else ''}"
        print(
            f"{name:<22}{r['step_s']:>8.2f}{video_tokens / r['step_s']:>10.0f}{gflops:>9.1f}"
            f"{100 * gflops / NOMINAL_PEAK_GFLOPS[precision]:>10.1f}%{100 * gflops / r['matmul_peak_gflops']:>11.1f}%"
            f"{r['peak_rss_gb']:>9.2f}G   (steps {', '.join(f'{t:.2f}' for t in r['all_s'])}; "
            f"first {r['first_s']:.1f} s; matmul peak {r['matmul_peak_gflops']:.0f} GFLOP/s; {r['params_m']:.2f}M params)"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
