"""Benchmark kinema's VideoVAE against diffusers' AutoencoderKLMagvit: same weights, inputs and threads.

    .venv/bin/python benchmarks/bench_vae.py                 # 2 threads, default cases
    .venv/bin/python benchmarks/bench_vae.py --threads 1 --rounds 2 --cases decode9 encode9

Default config (block_out_channels 128,256,512,512; 16 latent channels), random weights written once
to a temp folder that both implementations load. Every measurement runs in a fresh subprocess, and
kinema and diffusers alternate within each round, so machine load hits both alike. Each child times a
first ("cold") call and a second ("warm") call; peak RSS is the process's resident high-water mark
reset after loading (/proc/self/clear_refs), so it covers the calls: weights + activations + caches.
GFLOP counts the convolutions (torch.utils.flop_counter on a 16x16 input, scaled by area: exact,
as every conv's output area is proportional to the frame area). The conv peak is measured here too
(one large conv3d at the same thread count), since the nominal figures depend on the machine's load.
Not a test: it prints a table.

    .venv/bin/python benchmarks/bench_vae.py --accuracy     # error figures instead of timings

measures, on the same default-size random-weight model and a smooth synthetic 9-frame video: chunked
vs one-pass, bfloat16 vs float32, and spatial tiling vs untiled (256x256 frames).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only

CASES = {  # name: (operation, video frames); frames are 128x128, latents 16x16
    "decode9": ("decode", 9),
    "decode25": ("decode", 25),
    "encode9": ("encode", 9),
    "encode25": ("encode", 25),
}
NOMINAL_PEAK = {"float32": 200.0, "bfloat16": 400.0}  # GFLOP/s, conv3d on this CPU as quoted in the issue
SIZE = 128


def high_water_mb() -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def child(args: argparse.Namespace) -> None:
    """One measurement: load, time a cold and a warm call, report JSON on stdout."""
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    inputs = load_file(os.path.join(args.workdir, "inputs.safetensors"))
    x = inputs[args.input_key]
    folder = os.path.join(args.workdir, "vae")
    if args.impl == "kinema":
        from kinema.models import VideoVAE

        model = VideoVAE.from_pretrained(folder, torch_dtype=dtype)
        run = (lambda v: model.encode(v).mean) if args.op == "encode" else model.decode
    else:
        from diffusers import AutoencoderKLMagvit

        model = AutoencoderKLMagvit.from_pretrained(folder, torch_dtype=dtype).eval()
        if args.op == "encode":
            run = lambda v: model.encode(v).latent_dist.mean  # noqa: E731
        else:
            run = lambda v: model.decode(v).sample  # noqa: E731
    x = x.to(dtype)
    Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark: measure the calls only
    rss_before = high_water_mb()
    times, cpu_times = [], []
    with torch.no_grad():
        for _ in range(args.calls):
            start, cpu_start = time.perf_counter(), _cpu_seconds()
            out = run(x)
            times.append(time.perf_counter() - start)
            cpu_times.append(_cpu_seconds() - cpu_start)
    peak = high_water_mb()
    save_file({"out": out.float().contiguous()}, args.out)
    print(json.dumps({"times": times, "cpu_times": cpu_times, "peak_mb": peak, "rss_before_mb": rss_before}))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(args: argparse.Namespace, workdir: str, name: str, impl: str) -> dict | None:
    op, _ = CASES[name]
    base, _, precision = impl.partition("-")
    dtype = {"bf16": "bfloat16", "": "float32"}[precision]
    out = os.path.join(workdir, f"{name}-{impl}.safetensors")
    cmd = [sys.executable, __file__, "--_child", "--threads", str(args.threads), "--calls", str(args.calls)]
    cmd += [
        "--impl",
        base,
        "--op",
        op,
        "--dtype",
        dtype,
        "--input_key",
        name,
        "--workdir",
        workdir,
        "--out",
        out,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        print(f"{name} {impl} failed:\n{proc.stderr[-3000:]}")
        return None
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "out": out, "dtype": dtype}


def conv_peak(threads: int, dtype: str) -> float:
    """GFLOP/s of one large conv3d (512->512, 3x3x3, 4 frames of 32x32), best of 3, in this process."""
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    dt = getattr(torch, dtype)
    x = torch.randn(1, 512, 6, 32, 32, dtype=dt)
    w = torch.randn(512, 512, 3, 3, 3, dtype=dt) * 0.01
    flops = 2 * 512 * 512 * 27 * 4 * 32 * 32
    F.conv3d(x, w, padding=(0, 1, 1))
    best = min(_timed(lambda: F.conv3d(x, w, padding=(0, 1, 1))) for _ in range(3))
    return flops / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def conv_gflop(op: str, frames: int) -> float:
    """Conv GFLOP of one call at SIZE x SIZE: counted on a 16x16 input, scaled by the area ratio."""
    from torch.utils.flop_counter import FlopCounterMode

    from kinema.models import VideoVAE

    with torch.device("meta"):
        model = VideoVAE.from_config()
    model = model.to_empty(device="cpu")
    torch.set_num_threads(1)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        if op == "encode":
            model.encode(torch.zeros(1, 3, frames, 16, 16))
        else:
            model.decode(torch.zeros(1, 16, model.num_latent_frames(frames), 2, 2))
    return counter.get_total_flops() * (SIZE // 16) ** 2 / 1e9


def synthetic_video(frames: int, size: int) -> torch.Tensor:
    """A smooth moving pattern in [-1, 1], more image-like than uniform noise."""

    t = torch.arange(frames).view(-1, 1, 1).float()
    y = torch.linspace(0, 1, size).view(1, -1, 1)
    x = torch.linspace(0, 1, size).view(1, 1, -1)
    channels = [
        torch.sin(6.0 * x + 4.0 * y + 0.3 * t),
        torch.cos(9.0 * x * y - 0.2 * t),
        torch.sin(12.0 * (x - 0.5) ** 2 + 12.0 * (y - 0.5) ** 2 + 0.25 * t),
    ]
    return torch.stack(channels).unsqueeze(0).clamp(-1, 1)


def accuracy(args: argparse.Namespace) -> None:

    from kinema.models import VideoVAE

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = VideoVAE.from_config().eval()

    def report(name: str, value: torch.Tensor, reference: torch.Tensor) -> None:
        err = (value.float() - reference.float()).abs()
        rms = reference.float().pow(2).mean().sqrt()
        print(f"{name:48} max {err.max():.2e}  mean {err.mean():.2e}  (reference RMS {rms:.3f})")

    print(
        f"# default config, random weights (seed {args.seed}), smooth synthetic video, {args.threads} threads"
    )
    with torch.no_grad():
        video = synthetic_video(9, SIZE)
        post = model.encode(video, chunk_latent_frames=None)
        z = post.mean
        decoded = model.decode(z, chunk_latent_frames=None)
        for chunk in (1, 2):
            report(f"encode mean, chunks of {chunk} vs one pass", model.encode(video, chunk).mean, post.mean)
            report(f"decode, chunks of {chunk} vs one pass", model.decode(z, chunk), decoded)

        model.to(torch.bfloat16)
        report("encode mean, bfloat16 vs float32", model.encode(video).mean, post.mean)
        report("decode, bfloat16 vs float32", model.decode(z), decoded)
        model.to(torch.float32)

        big = synthetic_video(9, 256)
        post_big = model.encode(big)
        decoded_big = model.decode(post_big.mean)
        for tile, overlap in ((128, 32), (192, 64)):
            model.enable_tiling(tile, overlap)
            report(
                f"256x256 encode mean, tiles {tile}/{overlap} vs untiled",
                model.encode(big).mean,
                post_big.mean,
            )
            report(
                f"256x256 decode, tiles {tile}/{overlap} vs untiled", model.decode(post_big.mean), decoded_big
            )
        model.disable_tiling()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument(
        "--impls", nargs="+", default=["kinema", "diffusers", "kinema-bf16", "diffusers-bf16"]
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; the best time is kept")
    parser.add_argument("--calls", type=int, default=2, help="calls per child: cold, then warm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accuracy", action="store_true", help="print error figures, no timings")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (weights, outputs)")
    parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    for name in ("impl", "op", "dtype", "input_key", "workdir", "out"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        child(args)
        return
    if args.accuracy:
        accuracy(args)
        return

    from safetensors.torch import load_file, save_file

    from kinema.models import VideoVAE

    workdir = tempfile.mkdtemp(prefix="bench_vae_")
    torch.manual_seed(args.seed)
    VideoVAE.from_config().save_pretrained(os.path.join(workdir, "vae"))
    inputs = {}
    for name in args.cases:
        op, frames = CASES[name]
        if op == "encode":
            inputs[name] = torch.rand(1, 3, frames, SIZE, SIZE) * 2 - 1
        else:  # latents as the encoder would produce them
            inputs[name] = torch.randn(1, 16, (frames - 1) // 4 + 1, SIZE // 8, SIZE // 8)
    save_file(inputs, os.path.join(workdir, "inputs.safetensors"))

    load = os.getloadavg()[0]
    peaks = {dt: conv_peak(args.threads, dt) for dt in ("float32", "bfloat16")}
    print(
        f"# torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs, load average {load:.2f}"
    )
    print(
        "# measured conv3d peak: "
        + ", ".join(f"{dt} {g:.0f} GFLOP/s (nominal {NOMINAL_PEAK[dt]:.0f})" for dt, g in peaks.items())
    )
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.rounds):
        for name in args.cases:
            for impl in args.impls:  # kinema and diffusers alternate: load changes hit both
                record = run_child(args, workdir, name, impl)
                if record is not None:
                    runs.setdefault((name, impl), []).append(record)
    # Best of the rounds for times (the machine is shared), the largest peak RSS seen.
    results = {
        key: {
            "cold": min(r["times"][0] for r in records),
            "warm": min(min(r["times"][1:], default=float("nan")) for r in records),
            "warm_cpu": min(min(r["cpu_times"][1:], default=float("nan")) for r in records),
            "peak_mb": max(r["peak_mb"] for r in records),
            "out": records[0]["out"],
            "dtype": records[0]["dtype"],
        }
        for key, records in runs.items()
    }

    print(
        f"\n# best of {args.rounds} round(s); warm cpu = user+sys seconds of the process during the warm call"
    )
    print(
        f"{'case':9} {'impl':14} {'cold s':>7} {'warm s':>7} {'warm cpu':>8} {'peak RSS MB':>11} {'GFLOP':>6} "
        f"{'GFLOP/s':>7} {'%meas':>6} {'%nom':>5}  max|diff| vs"
    )
    for name in args.cases:
        op, frames = CASES[name]
        gflop = conv_gflop(op, frames)
        ref_name = "diffusers" if (name, "diffusers") in results else "kinema"
        ref = results.get((name, ref_name))
        ref_out = load_file(ref["out"])["out"] if ref else None
        for impl in args.impls:
            r = results.get((name, impl))
            if r is None:
                continue
            rate = gflop / min(r["cold"], r["warm"]) if r["warm"] == r["warm"] else gflop / r["cold"]
            diff = ""
            if ref_out is not None and r is not ref:
                diff = f"{(load_file(r['out'])['out'] - ref_out).abs().max().item():.2e} {ref_name}"
            print(
                f"{name:9} {impl:14} {r['cold']:7.2f} {r['warm']:7.2f} {r['warm_cpu']:8.2f} {r['peak_mb']:11.0f} "
                f"{gflop:6.0f} {rate:7.0f} {100 * rate / peaks[r['dtype']]:5.0f}% "
                f"{100 * rate / NOMINAL_PEAK[r['dtype']]:4.0f}%  {diff}"
            )
        for suffix in ("", "-bf16"):
            k, d = results.get((name, "kinema" + suffix)), results.get((name, "diffusers" + suffix))
            if k and d:
                print(
                    f"{'':9} kinema{suffix} vs diffusers{suffix}: {d['cold'] / k['cold']:.2f}x faster cold, "
                    f"{d['warm'] / k['warm']:.2f}x warm; peak RSS {k['peak_mb'] / d['peak_mb']:.2f}x"
                )
    for op in ("decode", "encode"):
        for impl in args.impls:
            short, long = results.get((f"{op}9", impl)), results.get((f"{op}25", impl))
            if short and long:
                print(
                    f"# {op} {impl}: peak RSS 25 frames / 9 frames = {long['peak_mb'] / short['peak_mb']:.2f}"
                )
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")
    if args.keep:
        print(f"# weights, inputs and outputs kept in {workdir}")
    else:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
