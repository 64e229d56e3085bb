"""Kernels for the diagonal linear recurrence ``h_t = a_t * h_{t-1} + b_t`` over one chunk.

Every kernel is **time-major**: ``a`` and ``b`` are (T, B, D) (``a`` may also broadcast, e.g.
(1, 1, D) for the LRU's input-independent eigenvalues), ``h0`` is (B, D), the state carried
in from the previous chunk (zeros at a stream's start), and the result is every ``h_t`` as
(T, B, D). Time-major because every kernel walks time: ``x[t]`` is then one contiguous block
of ``B x D`` numbers, and the models' causal convolution reads shifted views of the same
layout. They compute in float32 (complex64 for the LRU) whatever dtype the matrix products
around them use; a lower-precision operand is an error, not a silent cast.

- :func:`loop_scan`: the plain sequential loop, through autograd. The reference, and what a
  single step (T == 1, sampling and scoring one character at a time) runs.
- :func:`log_scan`: Feng et al. 2024 ("Were RNNs All We Needed?", arXiv 2410.01201, after
  Heinsen 2023): with ``a, b > 0`` given as logarithms,
  ``h_t = exp(A_t + logcumsumexp_s(log b_s - A_s))`` where ``A_t = sum_{s<=t} log a_s``.
  It needs ``b > 0``; the paper ensures that with its activation ``g`` (``x + 0.5`` for
  ``x >= 0``, else ``sigmoid(x)``) on the candidate state, and so do the minGRU and minLSTM
  here. The carried state enters linearly, ``+ exp(A_t) * h0``, so ``h0`` may be zero or of
  any sign (the paper's ``log h0`` would be ``-inf`` at a stream's start).
- :func:`chunked_scan`: sub-chunks of ``c`` steps (``c`` ~ sqrt(T)): a short loop runs all
  sub-chunks at once from a zero state, one loop of ``T / c`` steps carries the state across
  sub-chunk boundaries, and ``cumprod(a)`` within each sub-chunk adds each start state to its
  positions: ``c + T/c`` vectorised steps instead of ``T``. Its backward walks the same
  sub-chunks from the end on the adjoint (``lam_t = g_t + conj(a_{t+1}) lam_{t+1}``;
  ``dL/db = lam``, ``dL/da_t = lam_t conj(h_{t-1})``), so autograd records no graph per step.
  Real or complex.

Measured by ``bench/scan_bench.py`` (one process, kernels interleaved, best of 5) on this
project's 2-core AMD EPYC, torch 2.13, 1 thread, forward + backward of B 128 x T 100, the
machine shared (load average ~5 on 2 cores: read the ratios, not the times):

=====================  ===========  =========  ===========  =========  ================
width, dtype           loop (grad)  chunked    chunked c=T  log-space  chunked vs log
=====================  ===========  =========  ===========  =========  ================
512 float32            628 ms       46.5 ms    84.2 ms      1019 ms    21.9x faster
1024 float32           2005 ms      116 ms     187 ms       2645 ms    22.8x faster
216 complex64 (LRU)    337 ms       42.4 ms    38.4 ms      --         --
512 complex64          3464 ms      303 ms     289 ms       --         --
=====================  ===========  =========  ===========  =========  ================

(2 threads, 512 float32: chunked 93.9 ms, log-space 1807 ms, 19.3x.) ``torch.logcumsumexp``
alone takes ~210 ms forward on a (100, 128, 512) tensor on this CPU, whatever the layout,
and its backward ~4x that; the chunked kernel's work is a few fused multiply-adds per
element. The log-space gradient of ``a`` is also the less precise in float32 (~1e-4 against
~1e-7 on 37 steps: it is the difference of two large terms). So :data:`DEFAULT_KERNEL` is
``"chunked"``; ``"log"`` stays for the comparison and the tests.
"""

from __future__ import annotations

import math
from typing import Any

import torch

KERNELS = ("chunked", "log", "loop")
DEFAULT_KERNEL = "chunked"


def _check(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.dtype not in (torch.float32, torch.float64, torch.complex64, torch.complex128):
            raise TypeError(f"scan operands must be float32 or wider, got {t.dtype}")


def loop_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Every ``h_t``, one step at a time (autograd records each step)."""
    _check(a, b, h0)
    steps = b.shape[0]
    h, out = h0, []
    for t in range(steps):
        h = a[t if a.shape[0] > 1 else 0] * h + b[t]
        out.append(h)
    return torch.stack(out)


def log_scan(log_a: torch.Tensor, log_b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Every ``h_t`` for ``a = exp(log_a)``, ``b = exp(log_b)`` (both (T, B, D), real)."""
    _check(log_a, log_b, h0)
    a_star = torch.cumsum(log_a, dim=0)
    h = torch.exp(torch.logcumsumexp(log_b - a_star, dim=0) + a_star)
    return torch.addcmul(h, torch.exp(a_star), h0)  # out of place: exp's backward needs h


def best_chunk(steps: int) -> int:
    """The sub-chunk length that makes the fewest vectorised steps, ``c + ceil(T / c)``."""
    return max(1, min(range(1, steps + 1), key=lambda c: (c + math.ceil(steps / c), c)))


def _forward(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, c: int) -> torch.Tensor:
    """The chunked recurrence (no autograd): every ``h_t`` as a new (T, B, D) tensor.

    ``a`` is (T, ...) or, constant in time, (1, ...); it is never expanded to ``b``'s size
    (the LRU's products within a sub-chunk are then ``c`` powers per channel, not a tensor).
    """
    steps, rest = b.shape[0], b.shape[1:]
    n = steps // c
    m = n * c
    const = a.shape[0] == 1
    out = torch.empty_like(b)
    h = h0
    if n:
        bv = b[:m].reshape(n, c, *rest)
        av = a.expand(c, *a.shape[1:]).unsqueeze(0) if const else a[:m].reshape(n, c, *a.shape[1:])
        local = out[:m].view(n, c, *rest)
        local[:, 0] = bv[:, 0]
        for j in range(1, c):  # every sub-chunk from a zero state, all at once
            torch.addcmul(bv[:, j], av[:, j], local[:, j - 1], out=local[:, j])
        prod = torch.cumprod(av, dim=1)  # a's product from each sub-chunk's start
        starts = torch.empty((n, *rest), dtype=b.dtype, device=b.device)
        for k in range(n):  # the state entering each sub-chunk
            starts[k] = h
            h = torch.addcmul(local[k, -1], prod[0 if const else k, -1], h)
        local.addcmul_(prod, starts.unsqueeze(1))
    for t in range(m, steps):  # the T mod c steps left over
        h = torch.addcmul(b[t], a[0 if const else t], h, out=out[t])
    return out


def _adjoint(a: torch.Tensor, g: torch.Tensor, c: int) -> torch.Tensor:
    """``lam_t = g_t + a_{t+1} * lam_{t+1}`` (``lam_{T-1} = g_{T-1}``), by the same sub-chunks
    walked from the end: what flows back into each ``h_t`` (and so ``dL/db_t``)."""
    steps, rest = g.shape[0], g.shape[1:]
    n = steps // c
    m = n * c
    const = a.shape[0] == 1
    lam = torch.empty_like(g)
    lam[-1] = g[-1]
    for t in range(steps - 2, m - 1, -1):  # the T mod c steps past the last sub-chunk
        torch.addcmul(g[t], a[0 if const else t + 1], lam[t + 1], out=lam[t])
    if not n:
        return lam
    gv = g[:m].view(n, c, *rest)
    av = a.expand(c, *a.shape[1:]).unsqueeze(0) if const else a[:m].reshape(n, c, *a.shape[1:])
    local = lam[:m].view(n, c, *rest)
    local[:, -1] = gv[:, -1]
    # tail[:, j]: the product of a over the sub-chunk's positions after j (1 at its end)
    tail = torch.empty((av.shape[0], c, *av.shape[2:]), dtype=av.dtype, device=av.device)
    tail[:, -1] = 1
    for j in range(c - 2, -1, -1):  # every sub-chunk from a zero state at its end
        torch.addcmul(gv[:, j], av[:, j + 1], local[:, j + 1], out=local[:, j])
        torch.mul(tail[:, j + 1], av[:, j + 1], out=tail[:, j])
    # enter[k]: a_{(k+1)c} * lam_{(k+1)c}, what reaches sub-chunk k's last position
    enter = torch.empty((n, *rest), dtype=g.dtype, device=g.device)
    f = a[0 if const else m] * lam[m] if m < steps else torch.zeros_like(g[0])
    for k in range(n - 1, -1, -1):
        enter[k] = f
        f = av[0 if const else k, 0] * torch.addcmul(local[k, 0], tail[0 if const else k, 0], f)
    local.addcmul_(tail, enter.unsqueeze(1))
    return lam


class _ChunkedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor,  # type: ignore[override]
                h0: torch.Tensor, c: int) -> torch.Tensor:
        h = _forward(a, b, h0, c)
        ctx.save_for_backward(a, h, h0)
        ctx.c = c
        return h

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor  # type: ignore[override]
                 ) -> tuple[torch.Tensor | None, ...]:
        a, h, h0 = ctx.saved_tensors
        # complex: torch's convention is the conjugate Wirtinger gradient (a no-op on reals)
        lam = _adjoint(a.conj(), g.contiguous(), ctx.c)
        da = dh0 = None
        if ctx.needs_input_grad[0]:
            da = torch.empty_like(lam)
            torch.mul(lam[1:], h[:-1].conj(), out=da[1:])
            torch.mul(lam[0], h0.conj(), out=da[0])
            da = da.sum_to_size(a.shape)
        if ctx.needs_input_grad[2]:
            dh0 = lam[0] * a[0].conj()
        return da, lam, dh0, None


def chunked_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor,
                 chunk: int | None = None) -> torch.Tensor:
    """Every ``h_t``, by sub-chunks of ``chunk`` steps (default :func:`best_chunk`)."""
    _check(a, b, h0)
    c = best_chunk(b.shape[0]) if chunk is None else chunk
    if c < 1:
        raise ValueError(f"chunk must be >= 1, got {c}")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (a, b, h0)):
        return _ChunkedScan.apply(a, b, h0, c)
    return _forward(a, b, h0, c)
