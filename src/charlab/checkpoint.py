"""The two files a training run writes, and reading them back.

- the checkpoint (``models/<model>.pt``): the best weights by validation loss, the model
  config and the vocabulary. Readers (sample, evaluate, the CLI) need only this.
- the resume state (``<checkpoint>.state``): everything needed to continue bit for bit.

Both are ``torch.save`` files of plain dicts of tensors, numbers and strings, read with
``weights_only=True`` so nothing in them can run code.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from charlab.encoding import Vocab
from charlab.errors import CharlabError
from charlab.io import atomic_open
from charlab.model import CharRNN, ModelConfig

CHECKPOINT_FORMAT = "charlab-rnn-checkpoint"
STATE_FORMAT = "charlab-rnn-train-state"
FORMAT_VERSION = 1


class CheckpointError(CharlabError):
    """A checkpoint file is missing, unreadable, not charlab's, or for another vocabulary."""



def _map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], obj: Any) -> Any:
    """``obj`` (nested dicts, lists, tuples) with ``fn`` applied to every tensor."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(fn, v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(fn, v) for v in obj)
    return obj


def to_cpu(obj: Any) -> Any:
    """Tensors copied to the CPU: a file written on a GPU loads anywhere, and a snapshot
    (the best weights) does not follow the live tensors (``.cpu()`` of a CPU tensor would
    be the same storage)."""
    return _map_tensors(lambda t: t.detach().to("cpu", copy=True), obj)


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors (not RNG states, which stay byte tensors on the CPU) moved to ``device``."""
    return _map_tensors(lambda t: t if t.dtype == torch.uint8 else t.to(device), obj)



def save(obj: dict, path: Path) -> None:
    # a file object: a failed write (disk full) surfaces as Python's OSError, which
    # atomic_path turns into one clear OutputError
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def read(path: str | os.PathLike, device: torch.device | str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: not a readable checkpoint: not a torch file, or it holds Python objects "
            "other than tensors, which charlab never unpickles"
        ) from None
    except Exception as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated, corrupted, or not written by "
            f"charlab): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") not in (CHECKPOINT_FORMAT, STATE_FORMAT):
        raise CheckpointError(f"{path}: a torch file, but not a charlab RNN checkpoint")
    if obj.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {obj.get('version')!r}; "
                              f"this charlab reads version {FORMAT_VERSION}")
    return obj


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu", *,
                    vocab: Vocab | None = None) -> tuple[CharRNN, Vocab, dict[str, Any]]:
    """Load a best-model checkpoint (or a resume state) onto ``device``, in eval mode.

    Returns the model, its vocabulary and ``info`` (``name``, ``step``, ``val_loss``,
    ``params``, ``precision``: the one training used). With ``vocab`` given, a checkpoint
    for another vocabulary is an error.
    """
    device = torch.device(device)
    obj = read(path, device)
    try:
        config = ModelConfig.from_dict(obj["model_config"])
        ckpt_vocab = Vocab(tuple(obj["vocab"]))
        model = CharRNN(config)
        model.load_state_dict(obj["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: damaged charlab checkpoint: {e}") from None
    if vocab is not None and vocab != ckpt_vocab:
        raise CheckpointError(
            f"{path}: trained on a different vocabulary ({ckpt_vocab.size} chars) than this "
            f"corpus ({vocab.size} chars{vocab.difference(ckpt_vocab)}); retrain it "
            "(`dvc repro`)"
        )
    model.to(device).eval()
    info = {k: obj.get(k) for k in ("name", "step", "val_loss", "params", "precision",
                                    "precision_parts", "device", "device_name")}
    return model, ckpt_vocab, info


def default_state_path(checkpoint_path: str | os.PathLike) -> Path:
    p = Path(checkpoint_path)
    return p.with_name(p.name + ".state")

