"""On-disk cache of VAE latents and text embeddings, one safetensors file per entry.

Keys are SHA-1 digests of everything the value depends on: the model fingerprint (config + a sample of
its weights), the source file (path, size, modification time) and the sample's plan (size, frames,
start, stride). A changed VAE, text encoder, file or plan therefore misses instead of returning a stale
value. The VAE *posterior moments* (mean and log-variance) are stored, not a sampled latent, so training
still draws a fresh latent sample every time. Writes are atomic (temp file + rename), so several
processes may fill the cache at once.

With ``data.random_start = true`` every epoch may pick another clip start, which is another key: set
it to false to make the cache cover the whole run after one epoch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from kinema.models.modeling_utils import _write_atomic


def model_fingerprint(model: torch.nn.Module, config: object = None) -> str:
    """A short hash of a model's config and a strided sample of its weights."""
    h = hashlib.sha1()
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, p in model.state_dict().items():
        if not torch.is_floating_point(p) or p.numel() == 0 or p.is_meta:
            continue
        flat = p.detach().reshape(-1)
        probe = flat[:: max(1, flat.numel() // 64)][:64].float().cpu()
        h.update(name.encode())
        h.update(probe.numpy().tobytes())
    return h.hexdigest()[:16]


class LatentCache:
    def __init__(self, folder: str | Path, vae_fingerprint: str = "", text_fingerprint: str = ""):
        self.folder = Path(folder)
        self.vae_fingerprint = vae_fingerprint
        self.text_fingerprint = text_fingerprint
        self.hits = 0
        self.misses = 0

    # ---- keys ------------------------------------------------------------------------------------------
    def video_key(self, path: Path, plan: object, kind: str = "video") -> str:
        try:
            stat = path.stat()
            file_id = [str(path), stat.st_size, stat.st_mtime_ns]
        except OSError:
            file_id = [str(path)]
        payload = json.dumps(["latents", self.vae_fingerprint, kind, file_id, repr(plan)])
        return hashlib.sha1(payload.encode()).hexdigest()

    def text_key(self, text: str) -> str:
        return hashlib.sha1(json.dumps(["text", self.text_fingerprint, text]).encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    # ---- access ----------------------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return self._file(key).is_file()

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        file = self._file(key)
        if not file.is_file():
            self.misses += 1
            return None
        try:
            value = load_file(str(file))
        except Exception:  # noqa: BLE001 - a damaged entry is a miss, and gets rewritten
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        _write_atomic(self._file(key), lambda tmp: save_file(data, tmp))
