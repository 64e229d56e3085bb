"""minGRU (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs All We Needed?",
arXiv 2410.01201, section 3.1), in the block of :mod:`charlab.families.scanrnn`.

The GRU without its reset gate and with gates that read only the input, so the recurrence
is linear in ``h`` and runs as a scan over the chunk::

    z_t = sigmoid(k_t),  h~_t = g(v_t),  [k_t, v_t] = W_in u_t + b      (width S each)
    h_t = (1 - z_t) * h_{t-1} + z_t * h~_t                              (S = expansion * H)
    y_t = W_out h_t + b_out                                             (back to H)

``g(x) = x + 0.5`` for ``x >= 0``, else ``sigmoid(x)``: the paper's activation for its
log-space form, which needs ``h~ > 0``. It is part of the model here in every mode, so the
log-space, chunked and sequential kernels compute the same function (the paper's non-log
minGRU has no ``g``). In log space ``log z = -softplus(-k)``, ``log(1 - z) = -softplus(k)``.

Default size: 3 layers x 192, expansion 1.5 (S = 288): 1,418,177 parameters with 65
characters (rnn3: 1,380,417).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from charlab.families import scan
from charlab.families.scanrnn import ScanConfig, ScanFamily, ScanKeys, default, linear

CELL = "mingru"


@dataclass(frozen=True)
class MinGRUConfig(ScanConfig):
    CELL: ClassVar[str] = CELL
    hidden_size: int = 192
    expansion: float = 1.5


@dataclass(frozen=True)
class MinGRUKeys(ScanKeys):
    expansion: float = default("expansion", MinGRUConfig.expansion)


def g(x: torch.Tensor) -> torch.Tensor:
    """Feng et al.'s positive activation: ``x + 0.5`` for ``x >= 0``, else ``sigmoid(x)``,
    as ``relu(x) + sigmoid(min(x, 0))`` (the same values and gradients, without the three
    full-size tensors and the mask of a ``where``)."""
    return torch.sigmoid(x.clamp(max=0)) + F.relu(x)


def log_g(x: torch.Tensor) -> torch.Tensor:
    """``log(g(x))``, without forming ``g`` (``-softplus(-x)`` is ``log(sigmoid(x))``)."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


class MinGRUMixer(nn.Module):
    def __init__(self, c: ScanConfig) -> None:
        super().__init__()
        self.inp = nn.Linear(c.hidden_size, 2 * c.state_size)
        self.out = nn.Linear(c.state_size, c.hidden_size)

    def forward(self, u: torch.Tensor, h0: torch.Tensor, dtype: torch.dtype, kernel: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = linear(u, self.inp, dtype).chunk(2, dim=-1)
        if kernel == "log":
            h = scan.log_scan(-F.softplus(k), -F.softplus(-k) + log_g(v), h0)
        else:
            run = scan.loop_scan if kernel == "loop" else scan.chunked_scan
            h = run(torch.sigmoid(-k), torch.sigmoid(k) * g(v), h0)
        return linear(h, self.out, dtype), h


class MinGRU(ScanFamily):
    name = "mingru"
    cells = (CELL,)
    Keys = MinGRUKeys
    Config = MinGRUConfig
    mixer = MinGRUMixer
    widths_in, widths_out = 2, 1  # k and v in, h out


MINGRU = MinGRU()
