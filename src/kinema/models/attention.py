"""Attention backends for the video transformer, and the CPU execution they share with its linears.

Every backend is ``fn(q, k, v) -> out``, all of shape (batch, tokens, heads, head_dim), any strides (the
model passes views of head-major memory, which is what per-head kernels read). No mask: EasyAnimate's
DiT lets every token attend to all.

* ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``. For GPUs and for training.
* ``"chunked"``: exact attention per head and per block of query rows, ``softmax(q k^T) v`` with two
  oneDNN matmuls and torch's softmax (which accumulates in fp32 for bf16 inputs; probabilities are
  rounded to the compute dtype before the second matmul). On the 2-core CPU of the project benchmarks:
  ~1.4x SDPA's throughput in fp32 and ~2.3x in bf16 (SDPA's CPU kernel gains nothing from bf16).
* ``"auto"`` (the model default): ``chunked`` for CPU inference, ``sdpa`` otherwise (GPU, or when
  gradients are needed: SDPA's backward does not keep the probabilities).

``register_attention_backend(name, fn)`` adds another one (e.g. a flash-attention kernel).

CPU execution. Inside ``spread_over_cores()`` (the model's CPU inference forward) the calling thread runs
single-threaded and the heavy work is split over one single-threaded worker thread per torch thread:
attention by (batch, head), linears by rows. Why: torch parallelises every op with OpenMP, and each
op's barrier stalls for a scheduler tick whenever another process holds one of the cores. On a shared
machine that made small ops (LayerNorms, copies) 10-20x slower and the forward 2-3x slower; coarse
per-core work just shares the CPU fairly. On an idle machine the two are within a few percent.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# oneDNN's fused linear: an internal op of torch's CPU build (Inductor's CPU backend emits it too). On
# the benchmark CPU (AMD Zen 5) it is 1.5-3x faster than torch's default fp32 GEMM path (MKL).
ONEDNN_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)

# Score-block size of the chunked backend, in elements: big enough for efficient GEMMs, small enough to
# stay in a core's L2 (2-core Zen 5: 0.25M-1M elements all within ~5%).
CHUNK_SCORE_ELEMENTS = 1 << 19
MIN_ROWS_PER_WORKER = 64  # below this a linear is not worth splitting


# ---- per-core workers -----------------------------------------------------------------------------------


class _CoreWorkers:
    """One single-threaded worker thread per torch thread (torch ops release the GIL).

    ``torch.set_num_threads`` is per OS thread for OpenMP/oneDNN/MKL, so the workers pin themselves to
    one thread without changing the caller's setting (the global default it also writes is restored).
    """

    def __init__(self, n: int):
        self.n, self.pid = n, os.getpid()
        ready = threading.Barrier(n + 1)

        def single_threaded() -> None:
            torch.get_num_threads()  # initialise this thread's torch threading first, or it would reset
            torch.set_num_threads(1)
            ready.wait()

        self.pool = ThreadPoolExecutor(n, thread_name_prefix="kinema-cpu", initializer=single_threaded)
        for _ in range(n):
            self.pool.submit(lambda: None)
        ready.wait()
        torch.set_num_threads(n)

    def map(self, fn: Callable, items: Iterable) -> list:
        inference = torch.is_inference_mode_enabled()

        def run(item):
            # Grad and inference modes are per thread: run like the caller (workers only serve inference).
            with torch.inference_mode(inference), torch.no_grad():
                return fn(item)

        return list(self.pool.map(run, items))


_workers: _CoreWorkers | None = None
_workers_lock = threading.Lock()
_active = threading.local()  # .workers: set inside spread_over_cores() in this thread
# Per-thread thread counts hold for ATen's OpenMP backend (Linux/Windows wheels), not its native pool.
_PER_THREAD_NUM_THREADS = "parallel backend: OpenMP" in torch.__config__.parallel_info()


def core_workers() -> _CoreWorkers | None:
    """The workers active in this thread, else a pool sized to the caller's torch threads (None if 1)."""
    global _workers
    active = getattr(_active, "workers", None)
    if active is not None:
        return active
    n = torch.get_num_threads() if _PER_THREAD_NUM_THREADS else 1
    if n == 1:
        return None
    with _workers_lock:
        # (a forked child inherits the object but not the threads)
        if _workers is None or _workers.n != n or _workers.pid != os.getpid():
            if _workers is not None and _workers.pid == os.getpid():
                _workers.pool.shutdown(wait=False)
            _workers = _CoreWorkers(n)
        return _workers


@contextlib.contextmanager
def spread_over_cores() -> Iterator[None]:
    """CPU inference: this thread single-threaded, linears and attention split over the core workers."""
    workers = None if torch.is_grad_enabled() else core_workers()
    if workers is None or getattr(_active, "workers", None) is not None:
        yield
        return
    _active.workers = workers
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(workers.n)
        _active.workers = None


# ---- CPU matmuls ----------------------------------------------------------------------------------------


def _onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        ONEDNN_LINEAR is not None
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and x.dtype == weight.dtype
        and x.dtype in (torch.float32, torch.bfloat16)
    )


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: str | None = None
) -> torch.Tensor:
    """``F.linear`` (+ ``F.gelu(approximate=gelu)``); for CPU inference a oneDNN GEMM with the GELU fused,
    split by rows over the core workers inside ``spread_over_cores()``."""
    if not _onednn(x, weight):
        y = F.linear(x, weight, bias)
        return y if gelu is None else F.gelu(y, approximate=gelu)
    args = (weight, bias, "gelu" if gelu else "none", [], gelu or "")
    workers = getattr(_active, "workers", None)
    rows = x.numel() // x.shape[-1]
    if workers is None or rows < MIN_ROWS_PER_WORKER * workers.n:
        return ONEDNN_LINEAR(x, *args)
    x2d = x.reshape(rows, x.shape[-1])
    out = x2d.new_empty(rows, weight.shape[0])
    step = -(-rows // workers.n)

    def part(start: int) -> None:
        out[start : start + step] = ONEDNN_LINEAR(x2d[start : start + step], *args)

    workers.map(part, range(0, rows, step))
    return out.view(*x.shape[:-1], weight.shape[0])


def matmul_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` for 2D operands (through oneDNN for CPU inference)."""
    return ONEDNN_LINEAR(a, b, None, "none", [], "") if _onednn(a, b) else torch.matmul(a, b.t())


# ---- attention backends ---------------------------------------------------------------------------------


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # SDPA wants (B, H, S, D): transposed views, no copies. Its CPU output is token-major in memory.
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    batch, q_len, heads, head_dim = q.shape
    rows = max(64, min(q_len, CHUNK_SCORE_ELEMENTS // k.shape[1]))  # long sequences: GEMM efficiency first
    out = q.new_empty(q.shape)

    def one_head(index: int) -> None:
        b, h = divmod(index, heads)
        # Dense per-head operands (q, k: no copy when laid out head-major, as the model does).
        q_bh = (q[b, :, h] * head_dim**-0.5).contiguous()
        k_bh = k[b, :, h].contiguous()
        v_t = v[b, :, h].t().contiguous()  # (D, S_k): the "weight" of the second matmul
        for start in range(0, q_len, rows):
            scores = matmul_nt(q_bh[start : start + rows], k_bh)
            out[b, start : start + rows, h] = matmul_nt(torch.softmax(scores, dim=-1), v_t)

    workers = core_workers() if (q.device.type == "cpu" and not _needs_grad(q, k, v)) else None
    if workers is None:
        for index in range(batch * heads):
            one_head(index)
    else:
        workers.map(one_head, range(batch * heads))
    return out


def auto_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if q.device.type == "cpu" and not _needs_grad(q, k, v):
        return chunked_attention(q, k, v)
    return sdpa_attention(q, k, v)


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


_BACKENDS: dict[str, AttentionFn] = {
    "auto": auto_attention,
    "sdpa": sdpa_attention,
    "chunked": chunked_attention,
}


def register_attention_backend(name: str, fn: AttentionFn) -> None:
    """Make ``fn(q, k, v) -> out`` (all (B, S, H, D)) selectable with ``set_attention_backend(name)``."""
    _BACKENDS[name] = fn


def attention_backends() -> list[str]:
    return list(_BACKENDS)


def get_attention_backend(name: str) -> AttentionFn:
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown attention backend '{name}'; known: {attention_backends()}") from None
