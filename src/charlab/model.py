"""CharRNN: one character-level recurrent network for every cell type and depth.

``CharRNN`` holds a standard ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (so checkpoints are plain
state dicts that load anywhere), and runs the whole sequence in one ``forward`` call.

For the Elman cell (``cell: rnn``) off CUDA it does not call ``nn.RNN`` but an equivalent
recurrence with a hand-written backward pass (:class:`_ElmanRecurrence`), over the same
weights: torch's CPU ``nn.RNN`` spends most of its time in per-step autograd bookkeeping and
small weight-gradient GEMMs, while BPTT only needs one ``B x H @ H x H`` product per step and
per direction; all weight gradients are then a single large GEMM. That is what makes training
on a CPU run near its FLOP ceiling. On CUDA the cuDNN kernels behind ``nn.RNN`` are used.

What each part computes in is explicit, never autocast's choice: ``recurrence_dtype`` and
``head_dtype`` (float32 unless the trainer sets them, see :mod:`charlab.runtime`). The
network casts its operands itself with autocast off; parameters and the returned hidden
state stay float32. When the recurrence runs in another dtype than the parameters, or
dropout applies between layers in training, the layers run one at a time (each one cuDNN
call on CUDA) with charlab's dropout between them, so every random number comes from torch
generators whose state a resume restores (cuDNN's own dropout state is not).

:class:`RNNLM` adapts a trained model to the :class:`charlab.lm.LanguageModel` protocol.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CELLS = ("rnn", "lstm", "gru")
C = TypeVar("C")
# One layer of each cell, as torch's RNN modules call them (input, hx, [w_ih, w_hh, b_ih,
# b_hh], has_biases, num_layers, dropout, train, bidirectional, batch_first).
_LAYER_FN = {"rnn": torch.rnn_tanh, "lstm": torch.lstm, "gru": torch.gru}
# Weights cast to another dtype are not views into cuDNN's flat buffer, so cuDNN packs them
# per call, and says so; charlab casts them on purpose (a few MB per step).
warnings.filterwarnings("ignore", message="RNN module weights are not part of single")

# Hidden state as nn.RNN/nn.GRU return it ((layers, B, H)), or nn.LSTM's (h, c) pair.
Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`CharRNN`; stored in checkpoints as a dict."""

    vocab_size: int
    cell: str = "rnn"
    layers: int = 1
    hidden_size: int = 512
    dropout: float = 0.1
    # 0: one-hot input, as in the lecture (the first layer's input weights act as the table)
    embedding_size: int = 0

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        for key in ("vocab_size", "layers", "hidden_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.embedding_size < 0:
            raise ValueError(f"embedding_size must be >= 0, got {self.embedding_size}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> ModelConfig:
        return config_from_dict(cls, obj)


def config_from_dict(cls: type[C], obj: Mapping[str, Any]) -> C:
    """A network config dataclass from a checkpoint's ``model_config``; an unknown key (a
    file of another network, or damaged) is a ValueError, not silently dropped."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ValueError(f"unknown model config key(s): {', '.join(unknown)}")
    return cls(**obj)


class _ElmanRecurrence(torch.autograd.Function):
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
        out, acc = _elman_forward(xw, h0, w_hh)
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


def _elman_forward(xw: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor
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


class CharRNN(nn.Module):
    """Characters in, next-character logits out: input -> recurrent layers -> Linear.

    Dropout (charlab's own, see :func:`dropout`) sits between recurrent layers and before the
    output layer (the lecture's ``Dropout(0.1)``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.embedding_size) if c.embedding_size else None
        rnn_cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[c.cell]
        # dropout between layers is charlab's own (see forward), never the module's
        self.rnn = rnn_cls(c.embedding_size or c.vocab_size, c.hidden_size, c.layers,
                           batch_first=True)
        self.head = nn.Linear(c.hidden_size, c.vocab_size)
        # None: pick per call (the manual Elman recurrence off CUDA); tests force either path.
        self.fused: bool | None = None
        # None: the parameters' dtype
        self.recurrence_dtype: torch.dtype | None = None
        self.head_dtype: torch.dtype | None = None

    def set_precision(self, recurrence: torch.dtype | None, head: torch.dtype | None) -> None:
        """Compute the recurrent layers in ``recurrence`` and the output layer in ``head``."""
        self.recurrence_dtype, self.head_dtype = recurrence, head

    def compute_dtypes(self) -> tuple[torch.dtype, torch.dtype]:
        """(recurrence, head): what the next forward computes in."""
        param = self.head.weight.dtype
        return self.recurrence_dtype or param, self.head_dtype or param

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_hidden(self, batch_size: int, device: torch.device | None = None) -> Hidden:
        c = self.config
        h = torch.zeros(c.layers, batch_size, c.hidden_size, device=device)
        return (h, h.clone()) if c.cell == "lstm" else h

    def forward(self, idx: torch.Tensor, hidden: Hidden | None = None
                ) -> tuple[torch.Tensor, Hidden]:
        """``idx`` (B, T) int64 -> logits (B, T, vocab) and the hidden state after ``T``.

        The logits are in ``head_dtype``; the hidden state in the parameters' dtype.
        """
        fused = self.fused
        if fused is None:
            fused = self.config.cell == "rnn" and idx.device.type != "cuda"
        if fused and self.config.cell != "rnn":
            raise ValueError("the fused recurrence exists only for cell 'rnn'")
        # the dtypes below are explicit; an autocast around the call must not rewrite them
        with torch.autocast(idx.device.type, enabled=False):
            if fused:
                out, hidden = self._elman_layers(idx.t(), hidden)  # time-major inside
            else:
                out, hidden = self._layers(idx, hidden)
            out = dropout(out, self.config.dropout, self.training)
            dt = self.compute_dtypes()[1]
            logits = F.linear(out.to(dt), self.head.weight.to(dt), self.head.bias.to(dt))
        return (logits.transpose(0, 1) if fused else logits), hidden

    def _layers(self, idx: torch.Tensor, hidden: Hidden | None) -> tuple[torch.Tensor, Hidden]:
        """The recurrent layers through torch's kernels (cuDNN on CUDA), batch-major."""
        c = self.config
        param_dtype, dtype = self.head.weight.dtype, self.compute_dtypes()[0]
        x = F.one_hot(idx, c.vocab_size) if self.embed is None else self.embed(idx)
        x = x.to(dtype)
        between = c.dropout if self.training and c.layers > 1 else 0.0
        if dtype == param_dtype and between == 0:
            return self.rnn(x, hidden)  # all layers in one call
        if hidden is None:
            hidden = self.init_hidden(idx.shape[0], idx.device)
        states = hidden if isinstance(hidden, tuple) else (hidden,)
        finals: list[tuple[torch.Tensor, ...]] = []
        for layer in range(c.layers):
            weights = [getattr(self.rnn, f"{name}_l{layer}").to(dtype)
                       for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            hx = [s[layer:layer + 1].to(dtype) for s in states]
            x, *final = _LAYER_FN[c.cell](x, hx if c.cell == "lstm" else hx[0], weights,
                                           True, 1, 0.0, self.training, False, True)
            finals.append(tuple(final))
            if layer < c.layers - 1:
                x = dropout(x, between, self.training)
        stacked = [torch.cat([f[i] for f in finals]).to(param_dtype) for i in range(len(states))]
        return x, (stacked[0], stacked[1]) if c.cell == "lstm" else stacked[0]

    def _elman_layers(self, idx_tm: torch.Tensor, hidden: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        param_dtype, dtype = self.head.weight.dtype, self.compute_dtypes()[0]
        grad = torch.is_grad_enabled()
        finals = []
        x: torch.Tensor | None = None
        for layer in range(c.layers):
            w_ih = getattr(self.rnn, f"weight_ih_l{layer}")
            w_hh = getattr(self.rnn, f"weight_hh_l{layer}")
            bias = getattr(self.rnn, f"bias_ih_l{layer}") + getattr(self.rnn, f"bias_hh_l{layer}")
            if layer == 0 and self.embed is None:
                # one-hot @ W_ih^T + b is a row lookup in (W_ih^T + b): same maths and
                # gradients, no (T, B, vocab) tensor
                xw = F.embedding(idx_tm, w_ih.t() + bias)
            else:
                inp = self.embed(idx_tm) if layer == 0 else x
                xw = F.linear(inp.to(dtype), w_ih.to(dtype), bias.to(dtype))
            h0 = xw.new_zeros(xw.shape[1:], dtype=param_dtype) if hidden is None else hidden[layer]
            args = (xw, h0, w_hh.to(dtype))
            out = _ElmanRecurrence.apply(*args) if grad else _elman_forward(*args)[0]
            finals.append(out[-1])
            x = dropout(out, c.dropout, self.training) if layer < c.layers - 1 else out
        assert x is not None
        return x, torch.stack(finals).to(param_dtype)


def detach_hidden(hidden: Hidden | None) -> Hidden | None:
    """Cut the graph between chunks (truncated BPTT) but keep the state's values."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return (hidden[0].detach(), hidden[1].detach())
    return hidden.detach()


def _zero_stream(hidden: Hidden, index: int) -> None:
    for h in hidden if isinstance(hidden, tuple) else (hidden,):
        h[:, index] = 0


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate without dropout, then give the model back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# Scoring holds at most this many bytes of float32 logits per forward call, whatever the
# vocabulary size: 256 streams x 256 steps x 65 chars is 17 MiB; 60,000 chars at 256
# streams fit one step per call.
SCORE_LOGITS_BYTES = 64 << 20


class RNNLM:
    """A :class:`CharRNN` as a :class:`charlab.lm.LanguageModel`.

    ``log_probs`` on a long text cuts it into ``streams`` contiguous pieces scored in
    parallel as one batch; each piece first reads the ``burn_in`` characters before it (not
    scored) so that its first scored characters have real context. The first piece starts
    from the empty state at ``ids[0]``, exactly as a sequential pass would.

    Memory, whatever the vocabulary size ``V``: each forward call reads ``streams x steps``
    characters with ``streams * steps * V * 4 <= max_logits_bytes`` (default
    :data:`SCORE_LOGITS_BYTES`, 64 MiB), first by taking fewer steps per call (``chunk`` is
    the most), which leaves every score as it is, and only when one step of ``max_streams``
    streams exceeds the budget (``V`` > 65,536 at the default) by running fewer streams
    (never fewer than 1: ``V * 4`` bytes is the floor). Each target's log-probability is its
    logit minus the log-sum-exp of its row, computed in place in the logits tensor: no second
    ``V``-wide tensor. Besides the logits a call holds the recurrent activations, a few
    ``streams x steps x hidden`` tensors (at most ``max_streams x chunk``), plus, for a
    one-hot ``lstm`` / ``gru`` input, the one-hot tensor (int64 then float32, 3x the logits
    bytes); and the text's own index arrays, ~40 bytes per character of ``ids``.
    """

    def __init__(self, model: CharRNN, device: torch.device | str, *, burn_in: int = 256,
                 max_streams: int = 256, chunk: int = 256,
                 max_logits_bytes: int = SCORE_LOGITS_BYTES) -> None:
        if burn_in < 1 or max_streams < 1 or chunk < 1 or max_logits_bytes < 1:
            raise ValueError("burn_in, max_streams, chunk and max_logits_bytes must be >= 1")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.vocab_size = model.config.vocab_size
        self.burn_in = burn_in
        self.max_streams = max_streams
        self.chunk = chunk
        self.max_logits_bytes = max_logits_bytes

    def num_params(self) -> int:
        return self.model.num_params()

    def _run(self, x: np.ndarray, hidden: Hidden | None) -> tuple[torch.Tensor, Hidden]:
        idx = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.long, device=self.device)
        return self.model(idx, hidden)

    def _target_log_probs(self, logits: torch.Tensor, target: np.ndarray) -> torch.Tensor:
        """``log_softmax(logits)[target]`` as logit - logsumexp, overwriting ``logits``."""
        logits = logits.float()  # a no-op for float32 logits: no copy
        t = torch.as_tensor(target, device=self.device).unsqueeze(-1)
        picked = logits.gather(-1, t).squeeze(-1)
        top = logits.amax(dim=-1, keepdim=True)
        # in place: exp(x - max) reuses the logits' memory; the row sums are (streams, steps)
        lse = logits.sub_(top).exp_().sum(dim=-1).log_().add_(top.squeeze(-1))
        return picked - lse

    def _plan(self, m: int) -> tuple[int, int]:
        """(streams, steps per forward call) for ``m`` scored positions within the budget."""
        per_step = self.vocab_size * 4  # bytes of float32 logits per stream and step
        # Enough streams to fill a batch, few enough that burn-in stays <= 25% extra work.
        streams = max(1, min(self.max_streams, m // (4 * self.burn_in)))
        streams = max(1, min(streams, self.max_logits_bytes // per_step))
        steps = max(1, min(self.chunk, self.max_logits_bytes // (per_step * streams)))
        return streams, steps

    def log_probs(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        m = len(ids) - 1  # positions scored
        if m <= 0:
            return np.zeros(0)
        streams, steps = self._plan(m)
        length = math.ceil(m / streams)
        burn = self.burn_in if streams > 1 else 0
        # pos[s, k]: which character stream s reads at column k; stream s scores
        # positions s*length ... and first reads the burn characters before them.
        pos = np.arange(streams)[:, None] * length - burn + np.arange(burn + length)[None, :]
        valid = (pos >= 0) & (pos < m)
        x = np.where(valid, ids[np.clip(pos, 0, m - 1)], 0)
        y = np.where(valid, ids[np.clip(pos + 1, 0, m)], 0)
        out = np.empty((streams, length), dtype=np.float64)
        with eval_mode(self.model), torch.inference_mode():
            hidden: Hidden | None = None
            for a in range(0, burn, steps):  # burn-in: its logits are dropped, call by call
                # (not kept in a variable: the next call's logits would join them in memory)
                hidden = self._run(x[:, a:min(a + steps, burn)], hidden)[1]
            if burn:
                assert hidden is not None
                _zero_stream(hidden, 0)  # stream 0 starts at ids[0] from the empty state
            for a in range(burn, burn + length, steps):
                b = min(a + steps, burn + length)
                logits, hidden = self._run(x[:, a:b], hidden)
                lp = self._target_log_probs(logits, y[:, a:b])
                del logits
                out[:, a - burn:b - burn] = lp.double().cpu().numpy()
        return out.reshape(-1)[:m]

    def _next(self, logits: torch.Tensor) -> np.ndarray:
        return torch.log_softmax(logits.float().reshape(-1), dim=-1).double().cpu().numpy()

    def start(self, prime: np.ndarray) -> tuple[np.ndarray, Any]:
        prime = np.asarray(prime, dtype=np.int64)
        with eval_mode(self.model), torch.inference_mode():
            if len(prime) == 0:
                # No character read yet: predict from the zero hidden state, i.e. the output
                # layer's bias, the model's own "nothing seen" distribution.
                h = torch.zeros(self.model.config.hidden_size, device=self.device)
                return self._next(self.model.head(h)), None
            logits, hidden = self._run(prime[None, :], None)
            return self._next(logits[0, -1]), hidden

    def step(self, state: Any, next_id: int) -> tuple[np.ndarray, Any]:
        with eval_mode(self.model), torch.inference_mode():
            logits, hidden = self._run(np.array([[next_id]]), state)
            return self._next(logits[0, -1]), hidden
