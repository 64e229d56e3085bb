"""The recurrent family: the lecture's networks, ``cell: rnn`` (Elman), ``lstm`` and ``gru``.

:class:`CharRNN` holds a standard ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (so checkpoints are
plain state dicts that load anywhere) and runs the whole sequence in one ``forward`` call.
For the Elman cell off CUDA it runs an equivalent recurrence with a hand-written backward
pass over the same weights (:mod:`charlab.families.recurrent_kernels`); on CUDA the cuDNN
kernels behind ``nn.RNN``.

What each part computes in is explicit, never autocast's choice: ``recurrence_dtype`` and
``head_dtype`` (float32 unless the trainer sets them, see :mod:`charlab.runtime`). The
network casts its operands itself with autocast off; parameters and the returned hidden
state stay float32. When the recurrence runs in another dtype than the parameters, or
dropout applies between layers in training, the layers run one at a time (each one cuDNN
call on CUDA) with charlab's dropout between them, so every random number comes from torch
generators whose state a resume restores (cuDNN's own dropout state is not).

The units the analysis reads (:meth:`Recurrent.units`) are recomputed from the public
weights, one layer after the other, because ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` return
only the last layer's outputs and never the gates.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from charlab.checks import check, fraction, non_negative, positive
from charlab.families.base import Activations, Family, Network
from charlab.families.recurrent_kernels import ElmanRecurrence, dropout, elman_forward
from charlab.families.streaming import StreamingLM
from charlab.lm import LanguageModel

CELLS = ("rnn", "lstm", "gru")
# blocks of gate weights per cell (torch stacks them in weight_ih / weight_hh)
GATE_BLOCKS = {"rnn": 1, "gru": 3, "lstm": 4}
# One layer of each cell, as torch's RNN modules call them (input, hx, [w_ih, w_hh, b_ih,
# b_hh], has_biases, num_layers, dropout, train, bidirectional, batch_first).
_LAYER_FN = {"rnn": torch.rnn_tanh, "lstm": torch.lstm, "gru": torch.gru}
# Weights cast to another dtype are not views into cuDNN's flat buffer, so cuDNN packs them
# per call, and says so; charlab casts them on purpose (a few MB per step).
warnings.filterwarnings("ignore", message="RNN module weights are not part of single")

# Hidden state as nn.RNN/nn.GRU return it ((layers, B, H)), or nn.LSTM's (h, c) pair.
Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class RecurrentKeys:
    """The ``train:`` keys of a recurrent entry (besides the keys every entry has)."""

    layers: int = field(default=1, metadata=check(positive, "recurrent layers"))
    hidden_size: int = field(default=512, metadata=check(positive, "units per layer"))
    dropout: float = field(default=0.1, metadata=check(
        fraction, "dropout between layers and before the output layer"))
    # 0: one-hot input, as in the lecture; else a learned embedding of this size
    embedding_size: int = field(default=0, metadata=check(
        non_negative, "an RNN's input embedding; a GPT always embeds"))
    seq_length: int = field(default=100, metadata=check(
        positive, "an RNN's truncated-BPTT length; a GPT trains on windows of context "
                  "characters"))


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
        return RECURRENT.config_from_dict(obj)


class CharRNN(Network):
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
            out = ElmanRecurrence.apply(*args) if grad else elman_forward(*args)[0]
            finals.append(out[-1])
            x = dropout(out, c.dropout, self.training) if layer < c.layers - 1 else out
        assert x is not None
        return x, torch.stack(finals).to(param_dtype)

    def initial_logits(self) -> torch.Tensor:
        """The prediction before any character: the output layer on the zero state."""
        h = torch.zeros(self.config.hidden_size, device=self.head.weight.device)
        return self.head(h)


# --- the units, for the analysis ----------------------------------------------------------

# The gates that saturate in a meaningful way (the candidate g / n is a tanh, not a gate).
GATES = {"lstm": ("input", "forget", "output"), "gru": ("reset", "update")}


def _layer_input(model: CharRNN, ids: torch.Tensor) -> torch.Tensor:
    if model.embed is not None:
        return model.embed(ids)
    return F.one_hot(ids, model.config.vocab_size).to(model.head.weight.dtype)


@torch.inference_mode()
def activations(model: CharRNN, ids: np.ndarray) -> Activations:
    """Run ``model`` (eval mode: no dropout) over ``ids`` from the zero state, keeping every
    layer's states and gates. Float64 on the CPU, so the recomputation is exact to rounding."""
    cell_type = model.config.cell
    if cell_type not in ("rnn", "lstm", "gru"):
        raise ValueError(f"unknown cell {cell_type!r}")
    rnn = model.rnn
    x = _layer_input(model, torch.as_tensor(np.asarray(ids, dtype=np.int64)).cpu()).double()
    out = Activations(cell_type, [])
    for k in range(model.config.layers):
        w_ih = getattr(rnn, f"weight_ih_l{k}").detach().cpu().double()
        w_hh = getattr(rnn, f"weight_hh_l{k}").detach().cpu().double()
        b_ih = getattr(rnn, f"bias_ih_l{k}").detach().cpu().double()
        b_hh = getattr(rnn, f"bias_hh_l{k}").detach().cpu().double()
        xw = x @ w_ih.t() + b_ih  # every step's input projection in one GEMM
        steps, size = xw.shape[0], w_hh.shape[1]
        h = torch.zeros(size, dtype=torch.float64)
        hs = torch.empty(steps, size, dtype=torch.float64)
        if cell_type == "rnn":
            for t in range(steps):
                h = torch.tanh(xw[t] + w_hh @ h + b_hh)
                hs[t] = h
        elif cell_type == "lstm":
            c = torch.zeros(size, dtype=torch.float64)
            cs = torch.empty_like(hs)
            gi, gf, go = (torch.empty_like(hs) for _ in range(3))
            for t in range(steps):
                z = xw[t] + w_hh @ h + b_hh
                i, f, g, o = z.chunk(4)  # torch's gate order: input, forget, cell, output
                i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
                c = f * c + i * g
                h = o * torch.tanh(c)
                hs[t], cs[t], gi[t], gf[t], go[t] = h, c, i, f, o
            out.cell.append(cs.numpy())
            out.gates.append({"input": gi.numpy(), "forget": gf.numpy(), "output": go.numpy()})
        else:  # gru: torch's order reset, update, new; r gates the hidden projection + bias
            gr, gz = torch.empty_like(hs), torch.empty_like(hs)
            xr, xz, xn = xw.chunk(3, dim=1)
            for t in range(steps):
                hr, hz, hn = (w_hh @ h + b_hh).chunk(3)
                r = torch.sigmoid(xr[t] + hr)
                u = torch.sigmoid(xz[t] + hz)
                n = torch.tanh(xn[t] + r * hn)
                h = (1 - u) * n + u * h
                hs[t], gr[t], gz[t] = h, r, u
            out.gates.append({"reset": gr.numpy(), "update": gz.numpy()})
        out.hidden.append(hs.numpy())
        x = hs  # eval mode: no dropout between layers
    return out


class Recurrent(Family):
    name = "recurrent"
    cells = CELLS
    Keys = RecurrentKeys
    Config = ModelConfig
    shape_keys = ("cell", "layers", "hidden_size", "embedding_size")
    # weight_ih_l0 is indexed by character only for one-hot input (see char_axes)
    vocab_axes = {"embed.weight": 0, "rnn.weight_ih_l0": 1, "head.weight": 0, "head.bias": 0}

    def config(self, cell: str, keys: RecurrentKeys, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, cell=cell, layers=keys.layers,
                           hidden_size=keys.hidden_size, dropout=keys.dropout,
                           embedding_size=keys.embedding_size)

    def build(self, config: ModelConfig) -> CharRNN:
        return CharRNN(config)

    def language_model(self, net: nn.Module, device: torch.device | str) -> LanguageModel:
        return StreamingLM(net, device)

    def units(self, net: nn.Module, ids: np.ndarray) -> Activations:
        return activations(net, ids)

    def forward_macs(self, config: ModelConfig) -> int:
        """With V characters, H hidden units, L layers, G gate blocks (rnn 1, gru 3, lstm 4,
        each with its own input and recurrent weights) and an input of E features
        (``embedding_size``; one-hot input is a row lookup, E = 0)::

            input     E * G*H   first layer;  H * G*H  each later layer
            recurrent H * G*H   every layer
            output    H * V

            macs = [E + (L - 1) H] G H  +  L H G H  +  H V
        """
        g, h = GATE_BLOCKS[config.cell], config.hidden_size
        return ((config.embedding_size + (config.layers - 1) * h) * g * h
                + config.layers * h * g * h + h * config.vocab_size)

    def char_axes(self, config: ModelConfig) -> dict[str, int]:
        if config.embedding_size:  # the input is the embedding, not one-hot characters
            return {k: v for k, v in self.vocab_axes.items() if k != "rnn.weight_ih_l0"}
        return dict(self.vocab_axes)


RECURRENT = Recurrent()
