"""The network the parallel-scan recurrent families share (minGRU, minLSTM, LRU), and the
family class they share; each family file gives only its defaults and its recurrence (the
"mixer").

Block, as Feng et al. describe the one of their language-modelling experiments ("Were RNNs
All We Needed?", arXiv 2410.01201; the first author's description of it, lucidrains/
minGRU-pytorch issue 1: a Transformer-style block, ``norm -> convolutional layer -> minGRU
-> 2-layer MLP`` with residual connections, LayerNorm; an expansion factor widens the
recurrence, projected back after the scan)::

    x = x + dropout(out_proj(scan(in_proj(conv4(LayerNorm(x))))))   # the mixer
    x = x + dropout(W2 gelu(W1 LayerNorm(x)))                       # MLP, 4x wide

stacked ``layers`` times between a token embedding and a final LayerNorm + output layer.
The convolution is causal and depthwise (kernel ``conv_kernel``, 4 as in Mamba and Griffin);
the LRU runs in the same block, so the families differ only in their recurrence. The output
layer is **not** tied to the embedding: with 65 characters tying saves ~1% of the parameters,
and an untied layer keeps its bias as the model's "nothing read yet" distribution, the one
:class:`charlab.families.streaming.StreamingLM` gives for an empty prime.

State carried between chunks, a pair of float32 tensors with the batch on dim 1 (the family
contract, :mod:`charlab.families.base`), so the trainer's detach, resume and DDP gather and
the adapter's stream reset work unchanged:

- ``h``: the recurrence's last state of every layer, (layers, B, S) (the LRU: (layers, B, N,
  2), the real and imaginary parts of its complex state);
- ``conv``: the causal convolution's last ``conv_kernel - 1`` inputs of every layer,
  (layers, B, conv_kernel - 1, hidden_size).

Both must carry: a chunked pass equals one long pass only if the convolution sees the
characters before the chunk and the scan starts from the previous chunk's state.

Precision (``set_precision``): matrix products in ``recurrence`` (the mixers' projections
and the MLPs) and ``head`` (the output layer); the residual stream, LayerNorms, the
convolution, the gates and the scan always float32, and so is the returned state.

``forward`` runs the recurrence in parallel over the chunk (:data:`charlab.families.scan.
DEFAULT_KERNEL`) when T > 1 and as one sequential step when T == 1; ``kernel`` forces one of
:data:`charlab.families.scan.KERNELS` (tests compare them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from charlab.families import scan
from charlab.families.base import Activations, Family
from charlab.families.recurrent_kernels import dropout
from charlab.families.streaming import StreamingLM
from charlab.lm import LanguageModel
from charlab.params.core import check, fraction, positive

State = tuple[torch.Tensor, torch.Tensor]
MLP_RATIO = 4


@dataclass(frozen=True)
class ScanKeys:
    """The ``train:`` keys of a parallel-scan entry (besides the keys every entry has); each
    family subclasses it with its default sizes."""

    layers: int = field(default=3, metadata=check(positive, "blocks"))
    hidden_size: int = field(default=192, metadata=check(positive, "the residual width"))
    expansion: float = field(default=1.0, metadata=check(
        positive, "the recurrence's width over hidden_size, of a parallel-scan RNN"))
    conv_kernel: int = field(default=4, metadata=check(
        positive, "the causal convolution's width before the recurrence, of a "
                  "parallel-scan RNN"))
    dropout: float = field(default=0.1, metadata=check(
        fraction, "dropout on the embedding and each block's output"))
    seq_length: int = field(default=100, metadata=check(
        positive, "an RNN's truncated-BPTT length; a GPT trains on windows of context "
                  "characters"))


def default(key: str, value: Any) -> Any:
    """A :class:`ScanKeys` field with another default (its check and help kept), for a
    family's own keys dataclass."""
    return field(default=value, metadata=ScanKeys.__dataclass_fields__[key].metadata)


@dataclass(frozen=True)
class ScanConfig:
    """Everything needed to rebuild a :class:`ScanRNN`; each family subclasses it with its
    ``CELL`` and default sizes."""

    CELL: ClassVar[str] = ""
    vocab_size: int
    cell: str = ""
    layers: int = 3
    hidden_size: int = 192
    expansion: float = 1.0  # the recurrence's width over hidden_size
    conv_kernel: int = 4
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if not self.cell:
            object.__setattr__(self, "cell", self.CELL)
        if self.cell != self.CELL:
            raise ValueError(f"cell must be {self.CELL!r}, got {self.cell!r}")
        for key in ("vocab_size", "layers", "hidden_size", "conv_kernel"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not self.expansion > 0:
            raise ValueError(f"expansion must be > 0, got {self.expansion}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def state_size(self) -> int:
        """The recurrence's width S = round(expansion * hidden_size)."""
        return max(1, round(self.expansion * self.hidden_size))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def linear(x: torch.Tensor, layer: nn.Linear, dtype: torch.dtype, keep: bool = False
           ) -> torch.Tensor:
    """``layer(x)`` computed in ``dtype``, returned in float32 (``keep``: in ``dtype``)."""
    bias = None if layer.bias is None else layer.bias.to(dtype)
    y = F.linear(x.to(dtype), layer.weight.to(dtype), bias)
    return y if keep else y.float()


class CausalConv(nn.Module):
    """Depthwise causal convolution over time: ``y_t = bias + sum_j w_j * x_{t-k+1+j}``, the
    inputs before the chunk read from the carried state (zeros at a stream's start)."""

    def __init__(self, width: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        bound = 1 / math.sqrt(kernel)  # nn.Conv1d's default for a depthwise kernel
        self.weight = nn.Parameter(torch.empty(kernel, width).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(width).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, past: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (T, B, W), ``past`` (k - 1, B, W) -> (y (T, B, W), the new past)."""
        steps, k = x.shape[0], self.kernel
        xp = torch.cat([past, x]) if k > 1 else x
        y = torch.addcmul(self.bias, xp[:steps], self.weight[0])
        for j in range(1, k):
            y.addcmul_(xp[j:j + steps], self.weight[j])
        return y, xp[xp.shape[0] - (k - 1):]


class Block(nn.Module):
    """LayerNorm -> causal conv -> mixer -> residual; LayerNorm -> MLP -> residual."""

    def __init__(self, c: ScanConfig, mixer: nn.Module) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(c.hidden_size)
        self.conv = CausalConv(c.hidden_size, c.conv_kernel)
        self.mixer = mixer
        self.ln2 = nn.LayerNorm(c.hidden_size)
        self.fc = nn.Linear(c.hidden_size, MLP_RATIO * c.hidden_size)
        self.proj = nn.Linear(MLP_RATIO * c.hidden_size, c.hidden_size)
        self.dropout = c.dropout

    def forward(self, x: torch.Tensor, h0: torch.Tensor, past: torch.Tensor,
                dtype: torch.dtype, kernel: str
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (x after the block, every step's recurrent state (T, B, *state), the conv's
        new past)."""
        u, past = self.conv(self.ln1(x), past)
        y, h = self.mixer(u, h0, dtype, kernel)
        x = x + dropout(y, self.dropout, self.training)
        # the MLP's hidden layer stays in the matrix products' dtype: two fewer casts of
        # the widest activation (GELU computes in float32 inside either way)
        mlp = linear(F.gelu(linear(self.ln2(x), self.fc, dtype, keep=True)), self.proj, dtype)
        return x + dropout(mlp, self.dropout, self.training), h, past


class ScanRNN(nn.Module):
    """Characters in, next-character logits out (see the module docstring).

    ``mixers`` makes one layer's recurrence: ``mixer(u (T, B, H), h0 (B, *state), dtype,
    kernel) -> (y (T, B, H), h (T, B, *state))``, every step's state, all float32, with
    ``state_shape`` its per-stream state shape.
    """

    def __init__(self, config: ScanConfig, mixers: Any, state_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.config = c = config
        self.state_shape = state_shape
        self.embed = nn.Embedding(c.vocab_size, c.hidden_size)
        self.blocks = nn.ModuleList(Block(c, mixers(c)) for _ in range(c.layers))
        self.ln_f = nn.LayerNorm(c.hidden_size)
        self.head = nn.Linear(c.hidden_size, c.vocab_size)
        # None: the parallel default for T > 1, one sequential step for T == 1
        self.kernel: str | None = None
        # None: the parameters' dtype
        self.recurrence_dtype: torch.dtype | None = None
        self.head_dtype: torch.dtype | None = None

    def set_precision(self, recurrence: torch.dtype | None, head: torch.dtype | None) -> None:
        """Matrix products of the blocks in ``recurrence``, of the output layer in ``head``."""
        self.recurrence_dtype, self.head_dtype = recurrence, head

    def compute_dtypes(self) -> tuple[torch.dtype, torch.dtype]:
        """(recurrence, head): what the next forward's matrix products compute in."""
        param = self.head.weight.dtype
        return self.recurrence_dtype or param, self.head_dtype or param

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        c = self.config
        h = torch.zeros(c.layers, batch_size, *self.state_shape, device=device)
        past = torch.zeros(c.layers, batch_size, c.conv_kernel - 1, c.hidden_size,
                           device=device)
        return h, past

    def forward(self, idx: torch.Tensor, state: State | None = None
                ) -> tuple[torch.Tensor, State]:
        """``idx`` (B, T) int64 -> logits (B, T, vocab) in ``head_dtype``, and the state after
        ``T`` (float32, see the module docstring)."""
        logits, _, state = self.run(idx, state)
        return logits, state

    def run(self, idx: torch.Tensor, state: State | None = None
            ) -> tuple[torch.Tensor, list[torch.Tensor], State]:
        """:meth:`forward`, and every layer's recurrent state at every step, (T, B, *state)
        each (the units the analysis reads)."""
        if state is None:
            state = self.init_state(idx.shape[0], idx.device)
        h_in, past_in = state
        kernel = self.kernel or ("loop" if idx.shape[1] == 1 else scan.DEFAULT_KERNEL)
        body, head = self.compute_dtypes()
        hs, pasts = [], []
        # the dtypes below are explicit; an autocast around the call must not rewrite them
        with torch.autocast(idx.device.type, enabled=False):
            x = dropout(self.embed(idx.t()), self.config.dropout, self.training)  # time-major
            for i, block in enumerate(self.blocks):
                x, h, past = block(x, h_in[i].float(), past_in[i].transpose(0, 1).float(),
                                   body, kernel)
                hs.append(h)
                pasts.append(past.transpose(0, 1))
            x = self.ln_f(x)
            bias = self.head.bias.to(head)
            logits = F.linear(x.to(head), self.head.weight.to(head), bias)
        state = (torch.stack([h[-1] for h in hs]), torch.stack(pasts))
        return logits.transpose(0, 1), hs, state

    def initial_logits(self) -> torch.Tensor:
        """The prediction before any character: the output layer's bias (its own "nothing
        read yet" distribution, as the other families')."""
        return self.head.bias


def init_weights(net: ScanRNN, keep: tuple[str, ...] = ()) -> None:
    """nanoGPT's initialisation, as :class:`charlab.families.gpt.GPT`: matrices N(0, 0.02), the two
    projections into the residual stream scaled by 1/sqrt(2 * layers), biases zero; the
    parameters whose names end in one of ``keep`` keep their family's own initialisation."""
    std = 0.02
    for name, p in net.named_parameters():
        if name.endswith(keep) or ".conv." in name or ".ln" in name or name.startswith("ln"):
            continue
        if p.dim() == 2:
            out = name.endswith(("proj.weight", "mixer.out.weight"))
            nn.init.normal_(p, 0.0, std / math.sqrt(2 * net.config.layers) if out else std)
        elif name.endswith("bias"):
            nn.init.zeros_(p)


class ScanFamily(Family):
    """What the parallel-scan families share; a subclass names its cell, keys, config, mixer
    and how many projections of the recurrence's width it has (for its budget)."""

    window_key = "seq_length"
    shape_keys = ("cell", "layers", "hidden_size", "expansion", "conv_kernel")
    vocab_axes = {"embed.weight": 0, "head.weight": 0, "head.bias": 0}
    mixer: ClassVar[Callable[[ScanConfig], nn.Module]]
    # matrices of the recurrence's width S: into it (H x S each) and out of it (S x H each)
    widths_in: ClassVar[int]
    widths_out: ClassVar[int]

    def state_shape(self, config: ScanConfig) -> tuple[int, ...]:
        return (config.state_size,)

    def config(self, cell: str, keys: ScanKeys, vocab_size: int) -> ScanConfig:
        return self.Config(vocab_size=vocab_size, layers=keys.layers,
                           hidden_size=keys.hidden_size, expansion=keys.expansion,
                           conv_kernel=keys.conv_kernel, dropout=keys.dropout)

    def build(self, config: ScanConfig) -> ScanRNN:
        net = ScanRNN(config, type(self).mixer, self.state_shape(config))
        self.initialise(net)
        return net

    def initialise(self, net: ScanRNN) -> None:
        init_weights(net)

    def language_model(self, net: nn.Module, device: torch.device | str) -> LanguageModel:
        return StreamingLM(net, device)

    @torch.inference_mode()
    def units(self, net: nn.Module, ids: np.ndarray) -> Activations:
        """Every layer's recurrent state after each character (the LRU's as real and
        imaginary parts), from the zero state, on the CPU in float32."""
        was = net.training
        net.eval()
        try:
            idx = torch.as_tensor(np.asarray(ids, dtype=np.int64))[None]
            _, hs, _ = net.run(idx.to(net.head.weight.device))
        finally:
            net.train(was)
        return Activations(net.config.cell, [h[:, 0].reshape(h.shape[0], -1).double().cpu()
                                             .numpy() for h in hs])

    def forward_macs(self, config: ScanConfig) -> int:
        """With V characters, width H, L blocks and a recurrence of width S (``expansion``
        x H): per block the projections into the recurrence (``widths_in`` of H x S) and out
        of it (``widths_out`` of S x H) and the MLP (H x 4H and 4H x H); the output layer
        H x V. The causal convolution, gates and scan are elementwise::

            macs = L (widths_in S H + widths_out S H + 8 H^2)  +  H V
        """
        h, s = config.hidden_size, config.state_size
        per_block = (self.widths_in + self.widths_out) * s * h + 2 * MLP_RATIO * h * h
        return config.layers * per_block + h * config.vocab_size
