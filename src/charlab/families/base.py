"""The model-family contract: everything charlab needs to know about a kind of network.

A family is one file of this package: the ``train:`` keys it owns (a params dataclass), its
config (what a checkpoint stores to rebuild the network), the network, and the adapter that
scores and samples with it (:class:`charlab.lm.LanguageModel`). The registry
(:mod:`charlab.families`) maps each ``cell:`` value to its family; the stages, the CLI, the
trainer, fine-tuning, resume and the analysis ask it, and nothing outside this package tests
a cell name.

What the trainer calls on a network (a :class:`Network`, which every family's subclasses):
``net(idx, state) -> (logits, state)`` with ``idx`` (B, T) int64 and logits (B, T, V);
``set_precision(body, head)``; ``compute_dtypes()``; ``num_params()``; ``config``. The
``state`` carried between truncated-BPTT chunks is None, a tensor or a tuple of tensors, each
with the batch on dimension 1 (as ``nn.RNN``'s ``(layers, B, H)``), so one code path detaches
it, splits it among data-parallel ranks and saves it for a resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from charlab.lm import LanguageModel

State = torch.Tensor | tuple[torch.Tensor, ...] | None


def detach_state(state: State) -> State:
    """Cut the graph between chunks (truncated BPTT) but keep the state's values."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(t.detach() for t in state)
    return state.detach()


def state_tensors(state: State) -> list[torch.Tensor]:
    """The state as a list of tensors (each with the batch on dimension 1)."""
    if state is None:
        return []
    return list(state) if isinstance(state, tuple) else [state]


def state_from_tensors(tensors: list[torch.Tensor]) -> State:
    """The inverse of :func:`state_tensors` (a one-tensor state is the tensor itself)."""
    if not tensors:
        return None
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate without dropout, then give the model back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@dataclass
class Activations:
    """One network's units over ``T`` characters: after reading character ``t``.

    ``hidden[k]`` (T, H) is layer k's output; ``cell[k]`` a second state of the layer (an
    LSTM's cell state c), else empty; ``gates[k][name]`` (T, H) gate values in [0, 1].
    """

    cell_type: str
    hidden: list[np.ndarray]
    cell: list[np.ndarray] = field(default_factory=list)
    gates: list[dict[str, np.ndarray]] = field(default_factory=list)

    def units(self) -> tuple[list[str], np.ndarray]:
        """Every unit as a column of one (T, U) array, and its name (``l1.h37``, ``l2.c5``)."""
        names, cols = [], []
        for k, h in enumerate(self.hidden):
            names += [f"l{k + 1}.h{j}" for j in range(h.shape[1])]
            cols.append(h)
            if self.cell:
                names += [f"l{k + 1}.c{j}" for j in range(self.cell[k].shape[1])]
                cols.append(self.cell[k])
        return names, np.concatenate(cols, axis=1)


class Network(nn.Module):
    """What every family's network shares: the dtypes its two parts compute in (the body:
    the recurrent layers or blocks; the head: the output layer), set by the trainer from
    the run plan's precision (:mod:`charlab.runtime`); parameters stay float32."""

    def __init__(self) -> None:
        super().__init__()
        # None: the parameters' dtype
        self.recurrence_dtype: torch.dtype | None = None
        self.head_dtype: torch.dtype | None = None

    def set_precision(self, recurrence: torch.dtype | None, head: torch.dtype | None) -> None:
        """Compute the body in ``recurrence`` and the output layer in ``head``."""
        self.recurrence_dtype, self.head_dtype = recurrence, head

    def compute_dtypes(self) -> tuple[torch.dtype, torch.dtype]:
        """(body, head): what the next forward's matrix products compute in."""
        param = next(self.parameters()).dtype
        return self.recurrence_dtype or param, self.head_dtype or param

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class NoUnits(ValueError):
    """The family offers no units to read (the analysis skips it and says why)."""


class Family:
    """One kind of network. A subclass sets the class attributes and says how it builds,
    scores and (optionally) reads units; everything else is shared here."""

    name: ClassVar[str]
    cells: ClassVar[tuple[str, ...]]  # the `cell:` values that mean this family
    Keys: ClassVar[type]  # the train: keys it owns: a frozen params dataclass
    Config: ClassVar[type]  # what a checkpoint stores to rebuild the network (vocab_size, cell..)
    # the key whose value is the characters per training chunk (and per scoring window)
    window_key: ClassVar[str] = "seq_length"
    # config keys that fix the weights' shapes: fine-tuning and `resume: true` compare them
    shape_keys: ClassVar[tuple[str, ...]]
    # weight name -> the axis indexed by character: fine-tuning remaps them by character
    vocab_axes: ClassVar[Mapping[str, int]]
    # None: :meth:`units` reads the network's units; else why it cannot (analyze says so)
    no_units: ClassVar[str | None] = None

    # --- what each family says ---------------------------------------------------------
    def config(self, cell: str, keys: Any, vocab_size: int) -> Any:
        """The network config of a ``train:`` entry (its parsed keys) for ``vocab_size``."""
        raise NotImplementedError

    def build(self, config: Any) -> nn.Module:
        """A freshly initialised network (on the CPU, float32)."""
        raise NotImplementedError

    def language_model(self, net: nn.Module, device: torch.device | str) -> LanguageModel:
        """The scoring and sampling adapter of a network."""
        raise NotImplementedError

    def forward_macs(self, config: Any) -> int:
        """Multiply-adds of one forward pass, per character: the matrix products only (the
        budget's convention, :mod:`charlab.budget`). Each family writes its formula in the
        docstring of its own method."""
        raise NotImplementedError

    def units(self, net: nn.Module, ids: np.ndarray) -> Activations:
        """Every unit's activation over ``ids`` from the empty state (eval mode, CPU)."""
        raise NoUnits(f"{self.name}: {self.no_units}")

    # --- shared ------------------------------------------------------------------------
    def window(self, keys: Any) -> int:
        """Characters per training chunk of an entry with these keys."""
        return int(getattr(keys, self.window_key))

    def shape(self, config: Any) -> dict[str, Any]:
        """The config keys that must agree for weights to carry over."""
        return {k: getattr(config, k) for k in self.shape_keys}

    def char_axes(self, config: Any) -> Mapping[str, int]:
        """Weight name -> axis indexed by character, for this config."""
        return self.vocab_axes

    def config_from_dict(self, obj: Mapping[str, Any]) -> Any:
        """A checkpoint's ``model_config`` back as :attr:`Config`; an unknown key (a file of
        another network, or damaged) is a ValueError, not silently dropped."""
        known = {f.name for f in dataclasses.fields(self.Config)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(f"unknown model config key(s): {', '.join(unknown)}")
        return self.Config(**obj)

    def key_help(self, key: str) -> str:
        """What one of this family's keys means (its field's ``help`` metadata)."""
        for f in dataclasses.fields(self.Keys):
            if f.name == key:
                return str(f.metadata.get("help", ""))
        raise KeyError(key)

    def own_keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.Keys))
