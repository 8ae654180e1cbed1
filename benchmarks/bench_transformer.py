"""Forward-pass speed of kinema's VideoTransformer vs diffusers' EasyAnimateTransformer3DModel on CPU.

An ~80M-parameter V5.1-shaped config (8 MMDiT layers, 8 heads x 64, time_embed_dim 512, text dim 3584)
on a 1x16x13x32x32 latent (3328 video tokens) with 256 text tokens. Same random weights everywhere,
same thread count, every model warmed up once, then timed runs alternate diffusers fp32 / kinema fp32 /
kinema bf16 so that load from other processes hits all three alike. Prints seconds, GFLOP/s, % of the
CPU's nominal peak, and the error of each kinema run against diffusers fp32; then one layer's attention
alone with SDPA and with kinema's chunked backend, fp32 and bf16.

    .venv/bin/python benchmarks/bench_transformer.py [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from common import CONFIG_80M as CONFIG
from common import LATENT_SHAPE, NOMINAL_PEAK_GFLOPS, TEXT_LEN


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


def measured_matmul_peak(dtype: torch.dtype, onednn: bool, n: int = 2048) -> float:
    """Best of 3 square GEMMs: torch.matmul (MKL for fp32) or oneDNN (what kinema's linears use)."""
    from kinema.models.attention import ONEDNN_LINEAR

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    if onednn and ONEDNN_LINEAR is None:
        return float("nan")
    fn = (lambda: ONEDNN_LINEAR(a, b, None, "none", [], "")) if onednn else (lambda: torch.matmul(a, b))
    fn()
    best = min(_timed(fn)[0] for _ in range(3))
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
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            mkl, dnn = measured_matmul_peak(dtype, False), measured_matmul_peak(dtype, True)
            print(f"measured 2048^3 GEMM {dtype}: torch.matmul {mkl:.0f} GFLOP/s, oneDNN {dnn:.0f} GFLOP/s")

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
    attention_alternatives(args.rounds, heads=CONFIG["num_attention_heads"], tokens=total_tokens())


def total_tokens() -> int:
    _, _, frames, height, width = LATENT_SHAPE
    return frames * (height // CONFIG["patch_size"]) * (width // CONFIG["patch_size"]) + TEXT_LEN


def attention_alternatives(rounds: int, heads: int, tokens: int, head_dim: int = 64) -> None:
    """One layer's attention alone: SDPA vs kinema's chunked backend, fp32 and bf16, alternating."""
    from kinema.models.attention import chunked_attention, sdpa_attention

    gen = torch.Generator().manual_seed(0)
    # head-major memory viewed as (B, S, H, D), as the model lays q, k, v out
    q, k, v = (torch.randn(1, heads, tokens, head_dim, generator=gen).transpose(1, 2) for _ in range(3))
    flops = 4 * tokens * tokens * head_dim * heads
    runs = {}
    for dtype, tag in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        qq, kk, vv = q.to(dtype), k.to(dtype), v.to(dtype)
        runs[f"sdpa {tag}"] = lambda qq=qq, kk=kk, vv=vv: sdpa_attention(qq, kk, vv)
        runs[f"chunked {tag}"] = lambda qq=qq, kk=kk, vv=vv: chunked_attention(qq, kk, vv)
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        reference = sdpa_attention(q, k, v)
        errors = {name: (fn().float() - reference).abs().max().item() for name, fn in runs.items()}
        for _ in range(rounds):
            for name, fn in runs.items():
                times[name].append(_timed(fn)[0])
    print(f"\nattention alone ({heads} heads x {tokens} tokens x {head_dim}, {flops / 1e9:.1f} GFLOP):")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(
            f"  {name:13} {med * 1e3:7.0f} ms {flops / med / 1e9:6.0f} GFLOP/s   max abs err {errors[name]:.1e}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
