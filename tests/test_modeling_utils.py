"""Loading/saving of diffusers-format folders: round trips, shards, and clear errors."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from kinema.models.modeling_utils import INDEX_NAME, WEIGHTS_NAME, CheckpointError, ModelMixin


@dataclasses.dataclass
class TinyConfig:
    width: int = 8
    depth: int = 3
    sizes: tuple = (1, 2)


class Tiny(ModelMixin):
    config_class = TinyConfig
    ignored_config_keys = frozenset({"legacy_flag"})

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(nn.Linear(config.width, config.width) for _ in range(config.depth))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_round_trip_single_and_sharded(tmp_path):
    torch.manual_seed(0)
    model = Tiny.from_config(width=16)
    x = torch.randn(2, 16)
    for shard_size in (None, 600):
        folder = tmp_path / f"m{shard_size}"
        model.save_pretrained(folder, max_shard_size=shard_size)
        assert (folder / INDEX_NAME).exists() == bool(shard_size)
        loaded = Tiny.from_pretrained(folder)
        assert loaded.config == model.config
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # torch_dtype converts floating weights at load
    assert Tiny.from_pretrained(tmp_path / "m600", torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    # re-saving single-file over a sharded folder leaves no stale shards behind
    model.save_pretrained(tmp_path / "m600")
    assert not list((tmp_path / "m600").glob("diffusion_pytorch_model-*"))
    assert not (tmp_path / "m600" / INDEX_NAME).exists()


def test_clear_errors(tmp_path):
    model = Tiny.from_config()
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tiny.from_pretrained(tmp_path / "nope")

    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "bogus": 1, "legacy_flag": True}))
    with pytest.raises(CheckpointError, match=r"unknown config key\(s\) \['bogus'\]"):
        Tiny.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "width": 4}))
    with pytest.raises(CheckpointError, match=r"layers.0.bias' has shape \(8,\), expected \(4,\)"):
        Tiny.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "depth": 4}))
    with pytest.raises(CheckpointError, match=r"2 parameter\(s\) missing.*layers.3.bias"):
        Tiny.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(cfg))
    sd = model.state_dict()
    save_file({**sd, "extra.weight": torch.zeros(1)}, str(folder / WEIGHTS_NAME))
    with pytest.raises(CheckpointError, match="unexpected key 'extra.weight'"):
        Tiny.from_pretrained(folder)

    sharded = tmp_path / "s"
    model.save_pretrained(sharded, max_shard_size=300)
    next(sharded.glob("diffusion_pytorch_model-00002-*")).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        Tiny.from_pretrained(sharded)

    pickled = tmp_path / "p"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps(cfg))
    torch.save(sd, pickled / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safetensors only"):
        Tiny.from_pretrained(pickled)
