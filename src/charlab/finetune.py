"""Fine-tuning: start a network from another checkpoint's weights, across vocabularies.

``train.<model>.init_from`` names a ``.pt`` checkpoint (e.g. one brought in with ``dvc
import``) or another ``train:`` entry. The shapes (cell, layers, hidden_size, and
embedding_size or heads and context) must agree; the vocabularies need not. Every weight
indexed by character is remapped by character: a character in both vocabularies keeps its
learned row, one new to this corpus keeps the fresh initialisation, one absent from it is
dropped. Those weights are, for a CharRNN, the first layer's input weights (the columns of
``rnn.weight_ih_l0`` for one-hot input, else the rows of ``embed.weight``) and the output
layer's rows and bias; for a GPT, the token embedding (tied to the output layer) and the
output bias. Everything else is copied as it is.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from charlab import checkpoint as ckpt
from charlab.encoding import Vocab
from charlab.models import checkpoint_file
from charlab.networks import Config, config_from_dict, shape
from charlab.params import ParamsError, TrainParams, init_entry

# parameter name -> the axis indexed by character (weight_ih_l0 only for one-hot input)
VOCAB_AXES = {"embed.weight": 0, "rnn.weight_ih_l0": 1, "head.weight": 0, "head.bias": 0,
              "tok.weight": 0, "head_bias": 0}


def init_path(cfg: TrainParams, models_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``init_from`` means: the path itself, or the entry's checkpoint."""
    if cfg.init_from is None:
        return None
    entry = init_entry(cfg)
    return checkpoint_file(models_dir, entry) if entry is not None else Path(cfg.init_from)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _describe(s: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in s.items()) + "}"


def init_weights(model: nn.Module, config: Config, vocab: Vocab, path: str | os.PathLike,
                 key: str) -> dict[str, Any]:
    """Load ``path``'s weights into ``model`` (built from ``config`` for ``vocab``, freshly
    initialised), remapping character rows; return the record the checkpoint keeps.

    ``key`` (``train.<model>.init_from``) starts every error message."""
    path = Path(path)
    try:
        obj = ckpt.read(path, "cpu")
        src_config = config_from_dict(obj["model_config"])
        src_vocab = Vocab(tuple(obj["vocab"]))
        src_state = obj["model"]
    except ckpt.CheckpointError as e:
        raise ParamsError(f"{key}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ParamsError(f"{key}: {path}: damaged charlab checkpoint: {e}") from None
    if shape(src_config) != shape(config):
        raise ParamsError(
            f"{key}: {path} has shape {_describe(shape(src_config))}, this entry "
            f"{_describe(shape(config))}; fine-tuning needs the same shape")
    index = {c: i for i, c in enumerate(src_vocab.chars)}
    old = torch.tensor([index.get(c, -1) for c in vocab.chars])
    has = old >= 0
    state = model.state_dict()
    for name, target in state.items():
        source = src_state.get(name)
        if source is None:
            raise ParamsError(f"{key}: {path}: damaged charlab checkpoint: no {name!r}")
        axis = VOCAB_AXES.get(name)
        if name == "rnn.weight_ih_l0" and getattr(config, "embedding_size", 0):
            axis = None  # input is the embedding, not one-hot characters
        with torch.no_grad():
            if axis is None:
                target.copy_(source)
            else:
                rows = source.index_select(axis, old.clamp(min=0)).to(target.dtype)
                keep = has.view([-1 if d == axis else 1 for d in range(target.dim())])
                target.copy_(torch.where(keep, rows, target))
    model.load_state_dict(state)
    return {"from": str(path), "sha256": _sha256(path), "name": obj.get("name"),
            "step": obj.get("step"),
            # for each of this vocabulary's characters, its row in the init's (-1: new)
            "map": old.tolist(),
            "new": [c for c, i in zip(vocab.chars, old.tolist(), strict=True) if i < 0],
            "dropped": sorted(set(src_vocab.chars) - set(vocab.chars))}
