"""Attention backends for the video transformer.

Every backend has the signature ``fn(q, k, v) -> out`` on token-major tensors of shape
(batch, tokens, heads, head_dim): that is the layout the q/k/v projections produce, so no backend has to
copy its inputs. No mask: EasyAnimate's DiT lets every token attend to every other one.

* ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``. Best in fp32 and on GPUs.
* ``"chunked"``: per head and per block of queries, ``softmax(q k^T) v`` with two plain matmuls. In bf16
  on CPU this runs at ~2x the speed of SDPA (SDPA's CPU kernel gains nothing from bf16), because the
  matmuls hit the bf16 GEMM units and a score block of ~0.5M elements stays in L2. The softmax of
  bf16 scores is computed in fp32 inside torch's kernel; the probabilities are rounded to bf16 for the
  second matmul.
* ``"auto"`` (the model default): ``chunked`` for bf16 on CPU, ``sdpa`` otherwise.

``register_attention_backend(name, fn)`` adds another one (e.g. a flash-attention kernel on GPU).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# oneDNN's fused linear (an internal op of torch's CPU build, also used by the Inductor compiler).
ONEDNN_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)

# Score-block size of the chunked backend, in elements: big enough for efficient GEMMs, small enough to
# stay in L2 (measured on a 2-core Zen 5; 0.25M-1M elements are all within a few percent).
CHUNK_SCORE_ELEMENTS = 1 << 19


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # SDPA wants (B, H, S, D); transposed views are fine and its output is already token-major in memory.
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def matmul_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` for 2D operands; CPU inference goes through oneDNN (faster than MKL on this CPU)."""
    if ONEDNN_LINEAR is not None and a.device.type == "cpu" and not torch.is_grad_enabled():
        return ONEDNN_LINEAR(a, b, None, "none", [], "")
    return torch.matmul(a, b.t())


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    batch, q_len, heads, head_dim = q.shape
    k_len = k.shape[1]
    # Head-major copies (O(S*D), cheap next to the O(S^2*D) work) so every matmul operand is dense.
    q = (q * head_dim**-0.5).transpose(1, 2).contiguous()
    k = k.transpose(1, 2).contiguous()
    v_t = v.permute(0, 2, 3, 1).contiguous()  # (B, H, D, S_k)
    rows = max(16, min(q_len, CHUNK_SCORE_ELEMENTS // k_len))
    per_head = []
    for b in range(batch):
        for h in range(heads):
            blocks = []
            for start in range(0, q_len, rows):
                scores = matmul_nt(q[b, h, start : start + rows], k[b, h])
                # In bf16, torch's softmax accumulates in fp32 and rounds the probabilities to bf16.
                blocks.append(matmul_nt(torch.softmax(scores, dim=-1), v_t[b, h]))
            per_head.append(torch.cat(blocks))
    return torch.stack(per_head).unflatten(0, (batch, heads)).transpose(1, 2)


_BACKENDS: dict[str, AttentionFn] = {
    "sdpa": sdpa_attention,
    "chunked": chunked_attention,
}


def register_attention_backend(name: str, fn: AttentionFn) -> None:
    """Make ``fn(q, k, v) -> out`` (all (B, S, H, D)) selectable with ``set_attention_backend(name)``."""
    if name == "auto":
        raise ValueError("'auto' is reserved")
    _BACKENDS[name] = fn


def attention_backends() -> list[str]:
    return ["auto", *_BACKENDS]


def resolve_attention_backend(name: str, dtype: torch.dtype, device: torch.device) -> AttentionFn:
    if name == "auto":
        name = "chunked" if (device.type == "cpu" and dtype == torch.bfloat16) else "sdpa"
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown attention backend '{name}'; known: {attention_backends()}") from None
