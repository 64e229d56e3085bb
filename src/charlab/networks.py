"""Which network a checkpoint or a ``train:`` entry means: a small registry keyed by cell.

``rnn``, ``lstm`` and ``gru`` are :class:`charlab.model.CharRNN`; ``gpt`` is
:class:`charlab.gpt.GPT`. Checkpoints written before the GPT existed hold an RNN cell in
``model_config`` and load as they always did.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from charlab.gpt import GPT, GPTLM, GPTConfig
from charlab.lm import LanguageModel
from charlab.model import CELLS, RNNLM, CharRNN, ModelConfig
from charlab.params import TrainParams

Config = ModelConfig | GPTConfig
Network = CharRNN | GPT

# the config keys that fix the shape of the weights (all but vocab_size and dropout)
SHAPE_KEYS = {"rnn": ("cell", "layers", "hidden_size", "embedding_size"),
              "gpt": ("cell", "layers", "heads", "hidden_size", "context")}


def config_from_dict(obj: Mapping[str, Any]) -> Config:
    """A checkpoint's ``model_config`` back as its dataclass (ValueError if not one)."""
    cell = obj.get("cell", "rnn")
    if cell == "gpt":
        return GPTConfig.from_dict(obj)
    if cell in CELLS:
        return ModelConfig.from_dict(obj)
    raise ValueError(f"unknown cell {cell!r}")


def config_for(cfg: TrainParams, vocab_size: int) -> Config:
    """The network config of a ``train:`` entry."""
    if cfg.cell == "gpt":
        assert cfg.heads is not None and cfg.context is not None  # params checked it
        return GPTConfig(vocab_size=vocab_size, layers=cfg.layers, heads=cfg.heads,
                         hidden_size=cfg.hidden_size, context=cfg.context, dropout=cfg.dropout)
    return ModelConfig(vocab_size=vocab_size, cell=cfg.cell, layers=cfg.layers,
                       hidden_size=cfg.hidden_size, dropout=cfg.dropout,
                       embedding_size=cfg.embedding_size)


def build(config: Config) -> Network:
    return GPT(config) if isinstance(config, GPTConfig) else CharRNN(config)


def shape(config: Config) -> dict[str, Any]:
    """The keys that must agree for weights to carry over (fine-tuning)."""
    keys = SHAPE_KEYS["gpt" if isinstance(config, GPTConfig) else "rnn"]
    return {k: getattr(config, k) for k in keys}


def language_model(net: nn.Module, device: torch.device | str) -> LanguageModel:
    """The :class:`charlab.lm.LanguageModel` adapter of a network."""
    return GPTLM(net, device) if isinstance(net, GPT) else RNNLM(net, device)
