"""Peak memory of one reward-backpropagation step vs K (the number of sampling steps with gradient).

One step = sample a full trajectory (``--steps`` Euler steps, CFG) with gradients through the last K steps
(DRaFT-K, strategy "tail"), decode latent frames through the VAE (``--decode first``: latent frame 0 only,
one video frame, so the transformer's share shows; ``all``: the whole clip), mean-brightness reward,
backward.
The transformer is a small V5.1-shaped MMDiT with a rank-16 LoRA on the attention projections (what
reward mode trains); the VAE is frozen.

Variants (each K runs in its own subprocess, so ru_maxrss is that run's own peak):

* ``none``: no checkpointing: every chosen step's transformer activations and the decoder's are kept;
* ``steps``: ``reward.checkpoint_steps`` + ``reward.decode_checkpointing`` (the defaults): one transformer
  call / one latent frame's decode is recomputed at a time in the backward pass;
* ``steps+blocks``: additionally ``train.gradient_checkpointing`` (per-block recomputation inside a call).

Reported: peak RSS of the process, the step's own increase over the RSS before it (model weights, text
encoder-free), and seconds per step. ``--mmap-threshold 65536`` runs the children with glibc's
``MALLOC_MMAP_THRESHOLD_`` fixed, so freed activation buffers go back to the OS instead of fragmenting the
heap: that isolates what the step really keeps alive from allocator growth (but allocation is slower).

    .venv/bin/python benchmarks/bench_reward_memory.py [--threads 2] [--size 128] [--frames 17] [--steps 20]
        [--decode first|all] [--variants none,steps,steps+blocks] [--ks 1,5,10] [--mmap-threshold 65536]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

TRANSFORMER = dict(
    num_attention_heads=4,
    attention_head_dim=64,
    num_layers=8,
    mmdit_layers=8,
    time_embed_dim=256,
    text_embed_dim=256,
    add_norm_text_encoder=True,
)
VAE = dict(block_out_channels=[16, 32, 64, 64], norm_num_groups=8, layers_per_block=1)
VARIANTS = ("none", "steps", "steps+blocks")
KS = (1, 5, 10)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(args: argparse.Namespace) -> None:
    import torch

    from kinema.models import VideoTransformer, VideoVAE
    from kinema.training.config import LoRAConfig
    from kinema.training.lora import add_lora
    from kinema.training.reward import RewardSampler, select_steps

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    transformer = VideoTransformer.from_config(TRANSFORMER)
    add_lora(transformer, LoRAConfig(enabled=True, rank=16, alpha=16))
    if args.variant == "steps+blocks":
        transformer.enable_gradient_checkpointing()
    vae = VideoVAE.from_config(VAE).eval().requires_grad_(False)
    ckpt = args.variant != "none"
    sampler = RewardSampler(transformer, vae, num_steps=args.steps, guidance=6.0, method="draft",
                            checkpoint_steps=ckpt, decode_checkpointing=ckpt,
                            decode_latent_frames=[0] if args.decode == "first" else [])  # fmt: skip
    shape = sampler.latent_shape(args.size, args.size, args.frames)
    noise = torch.randn(1, *shape)
    text, negative = torch.randn(1, 64, 256), torch.randn(1, 64, 256)
    steps = [select_steps("tail", args.steps, args.k)]
    before = rss_mb()
    start = time.perf_counter()
    frames = sampler(noise, text, negative, steps).frames
    (-frames.mean()).backward()
    seconds = time.perf_counter() - start
    tokens = shape[1] * (shape[2] // 2) * (shape[3] // 2)
    print(json.dumps({"variant": args.variant, "k": args.k, "decode": args.decode, "peak_mb": peak_mb(), "step_mb": peak_mb() - before,
                      "seconds": seconds, "video_tokens": tokens, "frames": frames.shape[2]}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=128, help="video height = width (px)")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=20, help="sampling steps per trajectory")
    parser.add_argument("--decode", choices=("first", "all"), default="first", help="latent frames decoded")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--ks", default=",".join(map(str, KS)))
    parser.add_argument(
        "--mmap-threshold", type=int, default=0, help="MALLOC_MMAP_THRESHOLD_ for the runs (0: unset)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="steps", help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    rows = []
    for variant in args.variants.split(","):
        for k in map(int, args.ks.split(",")):
            cmd = [sys.executable, __file__, "--child", "--variant", variant, "--k", str(k),
                   "--threads", str(args.threads), "--size", str(args.size), "--frames", str(args.frames),
                   "--steps", str(args.steps), "--decode", args.decode]  # fmt: skip
            env = dict(os.environ)
            if args.mmap_threshold:
                env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    first = rows[0]
    print(f"\n{args.size}x{args.size}x{args.frames} video ({first['video_tokens']} video tokens, decode {args.decode}: "
          f"{first['frames']} decoded frames), {args.steps} sampling steps with CFG, "
          f"{args.threads} threads" + (f", MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}" if args.mmap_threshold
          else "") + "\n")  # fmt: skip
    print("| checkpointing | K | peak RSS (MB) | step's increase (MB) | s / step |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['variant']} | {r['k']} | {r['peak_mb']:.0f} | {r['step_mb']:.0f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
