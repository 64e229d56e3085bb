"""The recurrent family's CPU kernels: the Elman recurrence with a hand-written backward
pass, and a dropout whose mask torch's CPU generator makes 5x faster.

Why a hand-written BPTT: torch's CPU ``nn.RNN`` spends most of its time in per-step autograd
bookkeeping and small weight-gradient GEMMs, while BPTT only needs one ``B x H @ H x H``
product per step and per direction; all weight gradients are then a single large GEMM. That
is what makes training on a CPU run near its FLOP ceiling. On CUDA the cuDNN kernels behind
``nn.RNN`` are used instead (:mod:`charlab.families.recurrent`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class ElmanRecurrence(torch.autograd.Function):
    """``h_t = tanh(xw_t + h_{t-1} W_hh^T)`` over a time-major sequence, with a manual BPTT.

    ``xw`` (T, B, H) already holds the input projection and both biases. The GEMMs run in
    ``w_hh``'s dtype (float32, or bfloat16 under autocast); pre-activations, tanh and the
    gradient that flows back through time stay float32 either way, so bf16 only rounds GEMM
    operands. Returns every ``h_t`` as (T, B, H) in the GEMM dtype; the final hidden state
    is its last row, so its gradient arrives through the same output.
    """

    @staticmethod
    def forward(ctx: Any, xw: torch.Tensor, h0: torch.Tensor,  # type: ignore[override]
                w_hh: torch.Tensor) -> torch.Tensor:
        out, acc = elman_forward(xw, h0, w_hh)
        ctx.save_for_backward(out, acc, h0, w_hh)
        ctx.xw_dtype = xw.dtype
        return out

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor  # type: ignore[override]
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        out, acc, h0, w_hh = ctx.saved_tensors
        steps, _, size = out.shape
        dout = dout.to(acc.dtype)
        # tanh' = 1 - h^2 for all steps in one pass (the scalar 1 broadcasts)
        deriv = torch.addcmul(acc.new_ones(()), acc, acc, value=-1)
        dz = torch.empty_like(out)  # in the GEMM dtype: operand of the next GEMMs
        if _low_precision(w_hh.dtype):
            g = torch.empty_like(out[0])
            dz_t = torch.mul(dout[-1], deriv[-1])
            dz[-1].copy_(dz_t)
            for t in range(steps - 1, 0, -1):
                # dL/dh_{t-1} = dout_{t-1} + dz_t W_hh, then through tanh'
                torch.mm(dz[t], w_hh, out=g)
                torch.add(dout[t - 1], g, out=dz_t)
                dz_t.mul_(deriv[t - 1])
                dz[t - 1].copy_(dz_t)
        else:
            dz.copy_(dout)
            dz[-1].mul_(deriv[-1])
            for t in range(steps - 1, 0, -1):
                dz[t - 1].addmm_(dz[t], w_hh).mul_(deriv[t - 1])
        dh0 = (dz[0] @ w_hh).to(h0.dtype) if ctx.needs_input_grad[1] else None
        dw = None
        if ctx.needs_input_grad[2]:
            # sum_t dz_t^T h_{t-1}: one large GEMM instead of T small ones
            dw = dz[0].t() @ h0.to(dz.dtype)
            if steps > 1:
                dw.addmm_(dz[1:].reshape(-1, size).t(), out[:-1].reshape(-1, size))
        return dz.to(ctx.xw_dtype), dh0, dw


def elman_forward(xw: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every h_t in the GEMM dtype, and the same in float32 (one tensor when that is it)."""
    dtype = w_hh.dtype
    wt = w_hh.t()
    h = h0.to(dtype)
    if not _low_precision(dtype):
        # in-place addmm_ on a copy of xw: MKL accumulates into C directly (beta=1), where
        # addmm(..., out=) would first copy each xw[t] into place
        out = xw.to(dtype, copy=True)
        for t in range(xw.shape[0]):
            h = out[t].addmm_(h, wt).tanh_()
        return out, out
    acc = torch.empty(xw.shape, dtype=torch.float32, device=xw.device)
    out = torch.empty(xw.shape, dtype=dtype, device=xw.device)
    z = torch.empty(xw.shape[1:], dtype=dtype, device=xw.device)
    for t in range(xw.shape[0]):
        # bf16 has no fast tanh on CPU and too few bits to accumulate into: only the GEMM
        # runs in bf16, the sum and tanh in float32.
        torch.mm(h, wt, out=z)
        torch.add(xw[t], z, out=acc[t])
        acc[t].tanh_()
        out[t].copy_(acc[t])
        h = out[t]
    return out, acc


def _low_precision(dtype: torch.dtype) -> bool:
    return dtype.itemsize < 4


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout``, but with a mask torch's CPU generator can make 5x faster.

    On CPU ``F.dropout`` draws one Mersenne-Twister number per element (~30 ms per call
    at B64 x T100 x 512, a fifth of a 3-layer training step). Here one 32-bit draw gives two
    15-bit uniforms, so the keep probability is a multiple of 1/32768 (0.1 -> 0.100006) and
    the scale uses that exact value. Elsewhere it is ``F.dropout``.
    """
    if not training or p == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    numel = x.numel()
    bits = torch.empty((numel + 1) // 2, dtype=torch.int32).random_()
    # random_() fills [0, 2^31): both 16-bit halves are uniform once the sign bit is cleared
    u = bits.view(torch.int16)[:numel].bitwise_and_(0x7FFF).view(x.shape)
    drop = min(round(p * 32768), 32767)
    scale = 32768 / (32768 - drop)
    return x * (u >= drop).to(x.dtype).mul_(scale)
