"""Config-as-data models that load and save diffusers-format folders.

A model folder holds ``config.json`` plus either one ``diffusion_pytorch_model.safetensors`` or shards
listed in ``diffusion_pytorch_model.safetensors.index.json``. Loading builds the module on the meta
device (nothing allocated), then materialises it shard by shard, so peak RAM stays near the model size.
Only safetensors are read: pickled checkpoints are refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = WEIGHTS_NAME + ".index.json"
PICKLE_NAMES = ("diffusion_pytorch_model.bin", "pytorch_model.bin", "model.ckpt", "model.pt")

M = TypeVar("M", bound="ModelMixin")


class CheckpointError(ValueError):
    """A model folder or weight file does not match what the model expects."""


def _write_atomic(path: Path, write) -> None:
    """Write through a temp file in the same folder, then rename: no half-written file on a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates owner-only files; saved models should get the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")

    _write_atomic(Path(path), write)


def _resolve_folder(path: str | os.PathLike, subfolder: str | None) -> Path:
    folder = Path(path)
    if subfolder:
        folder = folder / subfolder
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model folder '{folder}' does not exist: pass a local folder in diffusers format "
            f"(config.json + {WEIGHTS_NAME} or its shards); kinema never downloads weights"
        )
    return folder


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder, in index order; clear errors for missing pieces."""
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"'{index}' is not a valid safetensors index ({e})") from e
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"'{index}' lists shard(s) that are missing in '{folder}': {missing}")
        return files
    single = folder / WEIGHTS_NAME
    if single.is_file():
        return [single]
    pickled = [n for n in PICKLE_NAMES if (folder / n).is_file()]
    if pickled:
        raise CheckpointError(
            f"'{folder}' has only pickled weights ({pickled[0]}); kinema loads safetensors only "
            "(pickle can run code). Convert it once with safetensors.torch.save_file."
        )
    raise CheckpointError(f"no weights in '{folder}': expected {WEIGHTS_NAME} or {INDEX_NAME}")


class ModelMixin(nn.Module):
    """Base for kinema models: ``config_class`` is a dataclass whose fields are the config.json keys.

    Subclasses set ``config_class``, ``diffusers_class_name`` (written as ``_class_name``) and may list
    ``ignored_config_keys``: keys of official configs that do not change the computation here.
    """

    config_class: ClassVar[type]
    diffusers_class_name: ClassVar[str] = ""
    ignored_config_keys: ClassVar[frozenset[str]] = frozenset()

    config: Any

    # ---- config -------------------------------------------------------------------------------
    @classmethod
    def config_from_dict(cls, data: dict[str, Any], source: str = "config") -> Any:
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = sorted(
            k for k in data if not k.startswith("_") and k not in fields and k not in cls.ignored_config_keys
        )
        if unknown:
            raise CheckpointError(
                f"{source}: unknown config key(s) {unknown} for {cls.__name__}; known keys are {sorted(fields)}. "
                "Is this the right model folder?"
            )
        kwargs = {k: v for k, v in data.items() if k in fields}
        for f in dataclasses.fields(cls.config_class):
            # JSON has no tuples; keep the dataclass's declared sequence type.
            if isinstance(kwargs.get(f.name), list) and "tuple" in str(f.type):
                kwargs[f.name] = tuple(kwargs[f.name])
        return cls.config_class(**kwargs)

    @classmethod
    def from_config(cls: type[M], config: Any = None, **overrides: Any) -> M:
        """Build with fresh (random) weights from a config dataclass, dict, or keyword overrides."""
        if config is None:
            config = cls.config_class()
        elif isinstance(config, dict):
            config = cls.config_from_dict(config)
        if overrides:
            config = dataclasses.replace(config, **overrides)
        return cls(config)

    def config_dict(self) -> dict[str, Any]:
        data = {
            "_class_name": self.diffusers_class_name or type(self).__name__,
            "_diffusers_version": "0.42.1",
        }
        data.update(dataclasses.asdict(self.config))
        # kinema-only keys stay out of config.json while off, so saved folders keep diffusers' exact keys.
        for key in getattr(self, "extension_config_keys", ()):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def load_config(cls, path: str | os.PathLike, subfolder: str | None = None) -> Any:
        folder = _resolve_folder(path, subfolder)
        cfg = folder / CONFIG_NAME
        if not cfg.is_file():
            raise FileNotFoundError(f"'{cfg}' is missing: a model folder needs its config.json")
        try:
            data = json.loads(cfg.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"'{cfg}' is not valid JSON: {e}") from e
        return cls.config_from_dict(data, source=str(cfg))

    @classmethod
    def from_pretrained(
        cls: type[M],
        path: str | os.PathLike,
        subfolder: str | None = None,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ) -> M:
        """Load a diffusers-format folder; every parameter must come from the checkpoint, with its shape."""
        folder = _resolve_folder(path, subfolder)
        config = cls.load_config(folder)
        files = weight_files(folder)
        with torch.device("meta"):
            model = cls(config)
        expected = model.state_dict()
        seen: set[str] = set()
        for file in files:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                keys = list(f.keys())
            for key in keys:
                if key not in expected:
                    raise CheckpointError(
                        f"'{file}': unexpected key '{key}' (not a parameter of {cls.__name__}); "
                        "the checkpoint and config.json do not match"
                    )
            for key in keys:
                # One open per tensor: the shard's memory map is released after each tensor, so a dtype
                # conversion never keeps a whole fp32 shard resident (measured 1.32x -> 1.13x peak RAM).
                with safe_open(str(file), framework="pt", device="cpu") as f:
                    t = f.get_tensor(key)
                if t.shape != expected[key].shape:
                    raise CheckpointError(
                        f"'{file}': key '{key}' has shape {tuple(t.shape)}, expected "
                        f"{tuple(expected[key].shape)} from config.json"
                    )
                dtype = torch_dtype if (torch_dtype is not None and t.is_floating_point()) else None
                model.load_state_dict(
                    {key: t.to(device=device, dtype=dtype or t.dtype)}, strict=False, assign=True
                )
                seen.add(key)
        missing = sorted(set(expected) - seen)
        if missing:
            shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
            raise CheckpointError(
                f"'{folder}': {len(missing)} parameter(s) missing from the checkpoint: {shown}; "
                "a partial load would give garbage, so nothing was loaded"
            )
        model._after_load()
        return model.eval()

    def _after_load(self) -> None:
        """Hook for state derived from weights/config (never holds learned values)."""

    # ---- saving -------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, max_shard_size: int | None = None) -> None:
        """Write config.json and safetensors (sharded with an index above ``max_shard_size`` bytes)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        shards = list(_split_shards(state, max_shard_size))
        # A folder switching between single-file and sharded layouts must not keep the other layout.
        for stale in [
            folder / INDEX_NAME,
            folder / WEIGHTS_NAME,
            *folder.glob("diffusion_pytorch_model-*.safetensors"),
        ]:
            if stale.exists():
                stale.unlink()
        if len(shards) == 1:
            _write_atomic(
                folder / WEIGHTS_NAME, lambda tmp: save_file(shards[0], tmp, metadata={"format": "pt"})
            )
        else:
            weight_map: dict[str, str] = {}
            n = len(shards)
            for i, shard in enumerate(shards, 1):
                name = f"diffusion_pytorch_model-{i:05d}-of-{n:05d}.safetensors"
                _write_atomic(
                    folder / name, lambda tmp, s=shard: save_file(s, tmp, metadata={"format": "pt"})
                )
                weight_map.update(dict.fromkeys(shard, name))
            total = sum(t.numel() * t.element_size() for t in state.values())
            write_json_atomic(
                folder / INDEX_NAME, {"metadata": {"total_size": total}, "weight_map": weight_map}
            )
        write_json_atomic(folder / CONFIG_NAME, self.config_dict())

    # ---- misc ---------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _split_shards(state: dict[str, torch.Tensor], max_bytes: int | None) -> Iterator[dict[str, torch.Tensor]]:
    if not max_bytes:
        yield state
        return
    shard: dict[str, torch.Tensor] = {}
    size = 0
    for k, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shard and size + nbytes > max_bytes:
            yield shard
            shard, size = {}, 0
        shard[k] = t
        size += nbytes
    if shard:
        yield shard
