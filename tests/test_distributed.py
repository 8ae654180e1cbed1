"""Data parallel training through accelerate: 2 CPU processes (gloo) == 1 process with the combined batch.

The 2-process run uses the real launcher: ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
--num_processes 2`` (torchrun underneath; the env var makes accelerate pick MULTI_CPU/gloo, since
``--cpu`` with several processes would need mpirun). Each process trains with batch 1, the reference
process with batch 2; the bucket sampler hands process r slots [r] of the same global batch and every
random draw is keyed by the slot, so the two runs must agree up to float summation order.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kinema.data.synthetic import write_moving_squares

WORKER = r"""
import json, sys
import torch
torch.set_num_threads(1)
from kinema.training.config import config_from_dict
from kinema.training.trainer import Trainer

config = config_from_dict(json.loads(open(sys.argv[1]).read()))
trainer = Trainer(config).setup()
acc = trainer.accelerator
# 1) One forward/backward on the first global batch: the loss averaged over processes and the
#    gradients after DDP's all-reduce.
batch = next(iter(trainer._loader(0)))
loss, _ = trainer.compute_loss(batch)
acc.backward(loss)
mean_loss = acc.reduce(loss.detach().clone(), reduction="mean")
grads = {n: p.grad.detach().clone() for n, p in trainer.transformer.named_parameters() if p.grad is not None}
trainer.optimizer.zero_grad(set_to_none=True)
# 2) A short real training run (AdamW, clipping, LR schedule, checkpoint at the end).
result = trainer.train()
if acc.is_main_process:
    torch.save({
        "processes": acc.num_processes,
        "distributed_type": str(acc.distributed_type),
        "slots": [r.slot for r in batch["requests"]],
        "loss": float(mean_loss),
        "grads": grads,
        "losses": result.losses,
        "weights": {k: v.detach().clone() for k, v in trainer.transformer.state_dict().items()},
    }, sys.argv[2])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path: Path, data_root: Path, name: str, batch_size: int) -> Path:
    config = {
        "mode": "t2v",
        "output_dir": str(tmp_path / name),
        "seed": 5,
        "model": {
            "init_seed": 2,
            "transformer_config": {"num_layers": 2, "mmdit_layers": 2, "num_attention_heads": 2,
                                   "attention_head_dim": 32, "time_embed_dim": 64, "add_norm_text_encoder": True},
            "vae_config": {"block_out_channels": [16, 16, 32, 32], "norm_num_groups": 8, "layers_per_block": 1},
            "text_encoder_small": {"hidden_size": 64, "num_layers": 2},
        },
        "data": {"root": str(data_root)},
        "stages": [{"token_budget": 48, "resolutions": [64], "max_frames": 9, "batch_size": batch_size,
                    "steps": 3, "lr": 1e-3}],
        "flow": {"text_dropout": 0.5},
        "train": {"cpu_threads": 1, "max_grad_norm": 1.0},
        "checkpoint": {"every_steps": 0},
        "logging": {"progress_bar": False, "tensorboard": "off"},
    }  # fmt: skip
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    return env


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None,
                    reason="accelerate launcher not installed")  # fmt: skip
def test_two_processes_match_one_process_with_the_combined_batch(tmp_path):
    data_root = tmp_path / "data"
    write_moving_squares(data_root, n_clips=6, seed=0, frames=17, sizes=((64, 64),))
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)

    single_out = tmp_path / "single.pt"
    subprocess.run([sys.executable, str(worker), str(_config(tmp_path, data_root, "single", 2)), str(single_out)],
                   check=True, env=_env(), timeout=300)  # fmt: skip

    multi_out = tmp_path / "multi.pt"
    launcher = str(Path(sys.executable).parent / "accelerate")
    cmd = [
        launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(worker), str(_config(tmp_path, data_root, "multi", 1)), str(multi_out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, env={**_env(), "ACCELERATE_USE_CPU": "1"}, timeout=300)

    single, multi = torch.load(single_out), torch.load(multi_out)
    assert single["processes"] == 1 and multi["processes"] == 2
    assert multi["distributed_type"] == "DistributedType.MULTI_CPU"
    assert single["slots"] == [0, 1] and multi["slots"] == [0]  # rank 0 trains slot 0 of the same batch
    assert abs(single["loss"] - multi["loss"]) < 1e-6, (single["loss"], multi["loss"])
    assert single["grads"].keys() == multi["grads"].keys() and len(single["grads"]) > 10
    for name, g in single["grads"].items():
        assert torch.allclose(g, multi["grads"][name], rtol=1e-4, atol=1e-7), name
    assert len(single["losses"]) == len(multi["losses"]) == 3
    assert max(abs(a - b) for a, b in zip(single["losses"], multi["losses"])) < 1e-5
    # After 3 AdamW steps (lr 1e-3: up to 3e-3 per weight) the weights agree to ~1e-5: Adam divides by
    # sqrt(v), which magnifies the float-order noise of near-zero gradients; nothing systematic.
    worst = max((w - multi["weights"][k]).abs().max().item() for k, w in single["weights"].items())
    assert worst < 5e-5, worst
    # The 2-process run saved one checkpoint (collectively, atomically) at its end.
    assert [p.name for p in (tmp_path / "multi" / "checkpoints").iterdir()] == ["step-000003"]


def test_shipped_accelerate_configs_parse_with_accelerate():
    """The DDP / DeepSpeed ZeRO-2/3 / FSDP / multi-node configs are valid accelerate configs (they cannot
    run here: no GPUs)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    folder = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
    expected = {
        "ddp.yaml": (DistributedType.MULTI_GPU, None),
        "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 2),
        "deepspeed_zero3.yaml": (DistributedType.DEEPSPEED, 3),
        "fsdp.yaml": (DistributedType.FSDP, None),
        "multinode_deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 2),
    }
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(expected)
    for name, (kind, zero_stage) in expected.items():
        config = load_config_from_file(str(folder / name))
        assert config.distributed_type == kind and config.mixed_precision == "bf16", name
        if zero_stage is not None:
            assert config.deepspeed_config["zero_stage"] == zero_stage
        if kind == DistributedType.FSDP:
            assert config.fsdp_config["fsdp_use_orig_params"] is True
            assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "TransformerBlock"
