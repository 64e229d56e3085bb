"""The Linear Recurrent Unit (Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De 2023,
"Resurrecting Recurrent Neural Networks for Long Sequences", arXiv 2303.06349, section 3),
in the block of :mod:`charlab.families.scanrnn` (the minGRU's block: only the recurrence
differs; the paper's own deep model, for LRA, puts the LRU in a similar pre-norm residual
block with an MLP/GLU after it).

A complex diagonal recurrence of N = expansion * H units, input-independent::

    x_t = lambda * x_{t-1} + gamma * (B u_t)     lambda, gamma, x_t in C^N, B in C^{N x H}
    y_t = Re(C x_t) + D * u_t                    C in C^{H x N}, D in R^H

- exponential parametrisation: ``lambda = exp(-exp(nu_log) + i exp(theta_log))``, so
  ``|lambda| < 1`` whatever the update (the state never blows up);
- ring initialisation: ``|lambda|`` uniform on the ring [r_min, r_max] (area-uniform, as the
  paper samples it), the phase uniform on [0, max_phase];
- gamma normalisation: ``gamma = exp(gamma_log)``, initialised to ``sqrt(1 - |lambda|^2)``
  so that a unit with ``|lambda|`` near 1 does not amplify its input; trained, as in the paper;
- B and C initialised as the paper (real and imaginary parts N(0, 1/(2H)) and N(0, 1/N)),
  D N(0, 1).

Complex numbers only inside the layer: ``B u`` is one real product whose output pairs are
read as complex (``view_as_complex``), and ``Re(C x)`` one real product on the state's
(real, imag) pairs (``view_as_real``); the recurrence runs in complex64 through
:func:`charlab.families.scan.chunked_scan` (it has no log-space form: ``gamma B u`` has any
sign and phase). The carried state is real, (layers, B, N, 2), so that every reader of
charlab's hidden state (resume, DDP, stream resets) keeps float32 and sees no complex dtype.

Default size: 3 layers x 192, expansion 1.125 (N = 216): 1,418,393 parameters with 65
characters, as many as the minLSTM (rnn3: 1,380,417).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from charlab.families import scan
from charlab.families.scanrnn import (
    ScanConfig,
    ScanFamily,
    ScanKeys,
    ScanRNN,
    default,
    init_weights,
    linear,
)

CELL = "lru"
# Initialisation of the eigenvalues: the paper's ring for long memory (section 3.3; its
# experiments use r_min 0.9 / r_max 0.999, and a small phase range for the long tasks)
R_MIN, R_MAX, MAX_PHASE = 0.9, 0.999, math.pi / 10


@dataclass(frozen=True)
class LRUConfig(ScanConfig):
    CELL: ClassVar[str] = CELL
    hidden_size: int = 192
    expansion: float = 1.125


@dataclass(frozen=True)
class LRUKeys(ScanKeys):
    expansion: float = default("expansion", LRUConfig.expansion)


class LRUMixer(nn.Module):
    def __init__(self, c: ScanConfig) -> None:
        super().__init__()
        n, h = c.state_size, c.hidden_size
        # rows 2j, 2j + 1: the real and imaginary parts of B's row j (and C's columns)
        self.inp = nn.Linear(h, 2 * n, bias=False)
        self.out = nn.Linear(2 * n, h, bias=False)
        self.skip = nn.Parameter(torch.randn(h))
        u1, u2 = torch.rand(n), torch.rand(n).clamp_min(1e-6)
        nu_log = torch.log(-0.5 * torch.log(u1 * (R_MAX ** 2 - R_MIN ** 2) + R_MIN ** 2))
        self.nu_log = nn.Parameter(nu_log)
        self.theta_log = nn.Parameter(torch.log(MAX_PHASE * u2))
        modulus = torch.exp(-torch.exp(nu_log))
        self.gamma_log = nn.Parameter(torch.log(torch.sqrt(1 - modulus ** 2)))
        nn.init.normal_(self.inp.weight, 0.0, 1 / math.sqrt(2 * h))
        nn.init.normal_(self.out.weight, 0.0, 1 / math.sqrt(n))

    def eigenvalues(self) -> torch.Tensor:
        """lambda, complex64 (N,)."""
        return torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))

    def forward(self, u: torch.Tensor, h0: torch.Tensor, dtype: torch.dtype, kernel: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if kernel == "log":
            raise ValueError("the LRU's complex recurrence has no log-space scan")
        steps, batch, _ = u.shape
        bu = linear(u, self.inp, dtype).view(steps, batch, -1, 2)
        b = torch.view_as_complex(bu) * torch.exp(self.gamma_log)
        run = scan.loop_scan if kernel == "loop" else scan.chunked_scan
        x = run(self.eigenvalues().view(1, 1, -1), b, torch.view_as_complex(h0.contiguous()))
        pairs = torch.view_as_real(x)  # (T, B, N, 2)
        y = linear(pairs.reshape(steps, batch, -1), self.out, dtype) + u * self.skip
        return y, pairs


class LRU(ScanFamily):
    name = "lru"
    cells = (CELL,)
    Keys = LRUKeys
    Config = LRUConfig
    mixer = LRUMixer
    widths_in, widths_out = 2, 2  # B and C: the real and imaginary parts of N units

    def state_shape(self, config: ScanConfig) -> tuple[int, ...]:
        return (config.state_size, 2)  # complex: (real, imaginary) pairs

    def initialise(self, net: ScanRNN) -> None:
        # B, C, D and the eigenvalues keep the paper's initialisation (set by the mixer)
        init_weights(net, keep=("mixer.inp.weight", "mixer.out.weight", "skip", "_log"))


LRU_FAMILY = LRU()
