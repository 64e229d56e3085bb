"""minLSTM (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs All We Needed?",
arXiv 2410.01201, section 3.2), in the block of :mod:`charlab.families.scanrnn`.

The LSTM without its output gate and with gates that read only the input, the forget and
input gates normalised to sum to one (the paper's time-independent-scale variant)::

    f_t = sigmoid(kf_t),  i_t = sigmoid(ki_t),  h~_t = g(v_t)      [kf, ki, v] = W_in u + b
    f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)
    h_t = f'_t * h_{t-1} + i'_t * h~_t,  y_t = W_out h_t + b_out

With ``d = log i - log f = softplus(-kf) - softplus(-ki)``: ``f' = sigmoid(-d)``,
``i' = sigmoid(d)``, and in log space ``log f' = -softplus(d)``, ``log i' = -softplus(-d)``.
``g`` is the paper's positive activation (see :mod:`charlab.families.mingru`), part of the
model in every mode.

Default size: 3 layers x 192, expansion 1.125 (S = 216; minLSTM has three input
projections to minGRU's two): 1,418,393 parameters with 65 characters (rnn3: 1,380,417).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from charlab.families import scan
from charlab.families.mingru import g, log_g
from charlab.families.scanrnn import ScanConfig, ScanFamily, ScanKeys, default, linear

CELL = "minlstm"


@dataclass(frozen=True)
class MinLSTMConfig(ScanConfig):
    CELL: ClassVar[str] = CELL
    hidden_size: int = 192
    expansion: float = 1.125


@dataclass(frozen=True)
class MinLSTMKeys(ScanKeys):
    expansion: float = default("expansion", MinLSTMConfig.expansion)


class MinLSTMMixer(nn.Module):
    def __init__(self, c: ScanConfig) -> None:
        super().__init__()
        self.inp = nn.Linear(c.hidden_size, 3 * c.state_size)
        self.out = nn.Linear(c.state_size, c.hidden_size)

    def forward(self, u: torch.Tensor, h0: torch.Tensor, dtype: torch.dtype, kernel: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
        kf, ki, v = linear(u, self.inp, dtype).chunk(3, dim=-1)
        d = F.softplus(-kf) - F.softplus(-ki)
        if kernel == "log":
            h = scan.log_scan(-F.softplus(d), -F.softplus(-d) + log_g(v), h0)
        else:
            run = scan.loop_scan if kernel == "loop" else scan.chunked_scan
            h = run(torch.sigmoid(-d), torch.sigmoid(d) * g(v), h0)
        return linear(h, self.out, dtype), h


class MinLSTM(ScanFamily):
    name = "minlstm"
    cells = (CELL,)
    Keys = MinLSTMKeys
    Config = MinLSTMConfig
    mixer = MinLSTMMixer
    widths_in, widths_out = 3, 1  # the forget and input gates and v in, h out


MINLSTM = MinLSTM()
