"""Peak RAM and time of ``VideoTransformer.from_pretrained`` on a ~1B-parameter sharded checkpoint.

The script writes a random V5.1-shaped fp32 checkpoint itself (shard by shard: never the whole model in
RAM), then loads it in fresh Python processes and reads their peak RSS (ru_maxrss), as fp32 and converted
to bf16 at load (``torch_dtype``). The bar: peak RSS <= 1.2 x the loaded model's size, with the ~0.2 GiB
of an interpreter that imported torch counted against it.

Two Linux details the measurement takes care of:
* ru_maxrss of a child starts at its parent's RSS at fork/exec time, so this parent never imports
  torch; checkpoint writing and each load run in their own processes.
* safetensors memory-maps the shards; weights loaded without dtype conversion are file-backed pages
  that only become resident when touched. Each load is therefore followed by reading every parameter,
  and the peak is taken after that.

    .venv/bin/python benchmarks/bench_loading.py [--folder DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# 24 heads x 64 = 1536 wide, 16 layers (13 MMDiT + 3 shared): ~0.98B parameters.
CONFIG = dict(
    num_attention_heads=24,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    patch_size=2,
    num_layers=16,
    mmdit_layers=13,
    time_embed_dim=512,
    text_embed_dim=3584,
    add_norm_text_encoder=True,
)
SHARD_BYTES = 500 * 2**20


def write_random_checkpoint(folder: Path) -> None:
    """Random fp32 weights written shard by shard from the shapes of a meta-device model."""
    import torch
    from safetensors.torch import save_file

    from kinema.models import VideoTransformer
    from kinema.models.modeling_utils import CONFIG_NAME, INDEX_NAME, write_json_atomic

    with torch.device("meta"):
        model = VideoTransformer.from_config(CONFIG)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    shards: list[list[str]] = [[]]
    size = 0
    for key, shape in shapes.items():
        if shards[-1] and size + shape.numel() * 4 > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += shape.numel() * 4
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    weight_map = {}
    for i, keys in enumerate(shards, 1):
        name = f"diffusion_pytorch_model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: torch.randn(shapes[k], generator=gen) * 0.02 for k in keys}, str(folder / name))
        weight_map.update(dict.fromkeys(keys, name))
    total = sum(s.numel() for s in shapes.values()) * 4
    write_json_atomic(folder / INDEX_NAME, {"metadata": {"total_size": total}, "weight_map": weight_map})
    write_json_atomic(folder / CONFIG_NAME, model.config_dict())
    print(json.dumps({"shards": len(shards)}))


def load(folder: Path, dtype_name: str) -> None:
    import torch

    from kinema.models import VideoTransformer

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    model = VideoTransformer.from_pretrained(folder, torch_dtype=getattr(torch, dtype_name))
    seconds = time.perf_counter() - start
    after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    checksum = sum(float(p.sum()) for p in model.parameters())  # make every weight resident
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    result = dict(base_kib=base, after_load_kib=after_load, peak_kib=peak, model_bytes=size, seconds=seconds)
    print(json.dumps({**result, "n_params": model.num_parameters(), "checksum_finite": checksum == checksum}))


def child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folder", type=Path, default=None, help="where to write the checkpoint (temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint folder")
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)  # child modes
    parser.add_argument("--load", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        return write_random_checkpoint(args.write)
    if args.load:
        return load(Path(args.load[0]), args.load[1])

    root = args.folder or Path(tempfile.mkdtemp(prefix="kinema-bench-loading-"))
    folder = root / "transformer"
    try:
        shards = child("--write", str(folder))["shards"]
        print(f"wrote {folder}: {shards} fp32 shards of <= {SHARD_BYTES >> 20} MiB")
        header = (
            f"{'fp32 ckpt -> dtype':20} {'model GiB':>9} {'base GiB':>8} {'after load':>10} {'peak GiB':>8}"
        )
        print(header + f" {'peak/model':>10} {'load s':>6}")
        for dtype in ("float32", "bfloat16"):
            r = child("--load", str(folder), dtype)
            gib = lambda kib: kib / 2**20  # noqa: E731
            model_gib = r["model_bytes"] / 2**30
            print(
                f"{dtype:20} {model_gib:9.2f} {gib(r['base_kib']):8.2f} {gib(r['after_load_kib']):10.2f}"
                f" {gib(r['peak_kib']):8.2f} {gib(r['peak_kib']) / model_gib:10.2f} {r['seconds']:6.1f}"
            )
        print(f"parameters: {r['n_params'] / 1e9:.2f}B; bar: peak <= 1.2 x model")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
