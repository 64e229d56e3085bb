"""Truncated-BPTT batches: ``batch_size`` parallel streams over the train split.

The split is cut into that many contiguous pieces; step ``k`` reads the next
``seq_length`` characters of each, and the hidden state is carried (detached) from one
step to the next. Where a step reads is a pure function of ``k`` and the seed, so resuming
needs only the step number.
"""

from __future__ import annotations

import numpy as np
import torch

from charlab.encoding import IdFile
from charlab.errors import TrainingError


class StreamBatches:
    """``batch_size`` contiguous streams over ``ids``; step ``k`` -> (inputs, targets).

    Each epoch starts at a random offset below ``seq_length`` (seeded per epoch), so chunk
    boundaries move between epochs; the hidden state is reset when an epoch starts.

    ``ids`` is an array, or an :class:`IdFile` for a corpus larger than memory: streams are
    read ``block`` steps at a time (one read per stream), so memory stays the same whatever
    the corpus size. ``rows`` picks the streams this process reads (a DDP rank's share of
    the global batch); default all.
    """

    def __init__(self, ids: np.ndarray | IdFile, batch_size: int, seq_length: int, seed: int,
                 device: torch.device, rows: range | None = None, block: int = 64) -> None:
        per_stream = len(ids) // batch_size
        if per_stream < seq_length + 1:
            raise TrainingError(
                f"the train split has {len(ids)} characters, too few for batch_size "
                f"{batch_size} streams of seq_length {seq_length} + 1; lower batch_size or "
                f"seq_length (need at least {batch_size * (seq_length + 1)})"
            )
        rows = range(batch_size) if rows is None else rows
        self.ids = ids
        self.device = device
        self.seq_length = seq_length
        self.starts = np.asarray(rows, dtype=np.int64) * per_stream  # where each stream begins
        self.steps_per_epoch = (per_stream - 1) // seq_length
        self.slack = per_stream - 1 - self.steps_per_epoch * seq_length
        self.seed = seed
        self.block = block
        self._cached: tuple[int, int] | None = None  # (epoch, block) held in _buffer
        self._buffer = np.empty((len(rows), 0), dtype=np.int64)

    def _read(self, start: int, count: int) -> np.ndarray:
        if isinstance(self.ids, IdFile):
            return self.ids.read(start, count)
        return np.asarray(self.ids[start:start + count])

    def offset(self, epoch: int) -> int:
        if self.slack == 0:
            return 0
        return int(np.random.default_rng([self.seed, epoch]).integers(0, self.slack + 1))

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Inputs and targets (B, T) int64, and whether this step starts an epoch."""
        epoch, j = divmod(step, self.steps_per_epoch)
        b, k = divmod(j, self.block)
        t = self.seq_length
        if self._cached != (epoch, b):
            p = self.offset(epoch) + b * self.block * t
            n = min(self.block, self.steps_per_epoch - b * self.block) * t + 1
            self._buffer = np.stack([self._read(int(s) + p, n) for s in self.starts])
            self._cached = (epoch, b)
        chunk = torch.from_numpy(self._buffer[:, k * t:(k + 1) * t + 1].astype(np.int64))
        if self.device.type == "cuda":
            # pinned: the copy overlaps the previous step's work instead of syncing
            chunk = chunk.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            chunk = chunk.to(self.device)
        return chunk[:, :-1], chunk[:, 1:], j == 0

