"""Scoring and sampling with a network that carries its past in a state: the adapter of the
recurrent family (and of any family whose ``forward(idx, state)`` works that way)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from charlab.families.base import State, eval_mode, state_tensors


def _zero_stream(state: State, index: int) -> None:
    """Stream ``index`` of a batched state starts over from the empty state."""
    for t in state_tensors(state):
        t[:, index] = 0


# Scoring holds at most this many bytes of float32 logits per forward call, whatever the
# vocabulary size: 256 streams x 256 steps x 65 chars is 17 MiB; 60,000 chars at 256
# streams fit one step per call.
SCORE_LOGITS_BYTES = 64 << 20


class StreamingLM:
    """A network that carries a state between chunks as a :class:`charlab.lm.LanguageModel`
    (the recurrent family's adapter, and any family whose ``forward(idx, state)`` carries
    its whole past in ``state``).

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

    def __init__(self, model: nn.Module, device: torch.device | str, *, burn_in: int = 256,
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

    def _run(self, x: np.ndarray, hidden: State) -> tuple[torch.Tensor, State]:
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
            hidden: State = None
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
                # No character read yet: the network's own "nothing seen" distribution
                # (for a CharRNN the output layer on the zero state, i.e. its bias).
                return self._next(self.model.initial_logits()), None
            # in pieces of `chunk` characters, the state carried: memory stays that of one
            # piece (a 1 MB prime held every position's logits at once: 1.35 GB)
            hidden: State = None
            for a in range(0, len(prime), self.chunk):
                logits, hidden = self._run(prime[None, a:a + self.chunk], hidden)
            return self._next(logits[0, -1]), hidden

    def step(self, state: Any, next_id: int) -> tuple[np.ndarray, Any]:
        with eval_mode(self.model), torch.inference_mode():
            logits, hidden = self._run(np.array([[next_id]]), state)
            return self._next(logits[0, -1]), hidden
