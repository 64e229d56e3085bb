"""Fine-tuning: start a network from another checkpoint's weights, across vocabularies.

``finetune.<model>.init_from`` names another entry (its checkpoint ``models/<name>.pt``, or
one brought in there with ``dvc import``); the library also takes a ``.pt`` path. The
shapes (the family's shape keys: cell, layers, hidden_size, ...) must agree; the
vocabularies need not. Every weight the family says is indexed by character
(:meth:`charlab.families.base.Family.char_axes`: for a CharRNN the one-hot input weights or
the embedding, and the output layer; for a GPT the tied token embedding and the output
bias) is remapped by character: a character in both vocabularies keeps its learned row, one
new to this corpus keeps the fresh initialisation, one absent from it is dropped.
Everything else is copied as it is.
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
from charlab.families import by_cell, from_config_dict
from charlab.params.core import ParamsError


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _describe(s: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in s.items()) + "}"


def init_weights(model: nn.Module, config: Any, vocab: Vocab, path: str | os.PathLike,
                 key: str) -> dict[str, Any]:
    """Load ``path``'s weights into ``model`` (built from ``config`` for ``vocab``, freshly
    initialised), remapping character rows; return the record the checkpoint keeps.

    ``key`` (``finetune.<model>.init_from``) starts every error message."""
    path = Path(path)
    try:
        obj = ckpt.read(path, "cpu")
        src_family, src_config = from_config_dict(obj["model_config"])
        src_vocab = Vocab(tuple(obj["vocab"]))
        src_state = obj["model"]
    except ckpt.CheckpointError as e:
        raise ParamsError(f"{key}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ParamsError(f"{key}: {path}: damaged charlab checkpoint: {e}") from None
    family = by_cell(config.cell)
    if src_family.shape(src_config) != family.shape(config):
        raise ParamsError(
            f"{key}: {path} has shape {_describe(src_family.shape(src_config))}, this entry "
            f"{_describe(family.shape(config))}; fine-tuning needs the same shape")
    axes = family.char_axes(config)
    index = {c: i for i, c in enumerate(src_vocab.chars)}
    old = torch.tensor([index.get(c, -1) for c in vocab.chars])
    has = old >= 0
    state = model.state_dict()
    for name, target in state.items():
        source = src_state.get(name)
        if source is None:
            raise ParamsError(f"{key}: {path}: damaged charlab checkpoint: no {name!r}")
        axis = axes.get(name)
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
