"""The two files a training run writes, and reading them back.

- the checkpoint (``models/<model>.pt``): the best weights by validation loss, the model
  config and the vocabulary. Readers (sample, evaluate, the CLI) need only this.
- the resume state (``<checkpoint>.state``): everything needed to continue bit for bit.

Both are ``torch.save`` files of plain dicts of tensors, numbers and strings, read with
``weights_only=True`` so nothing in them can run code. Each carries a ``checksum``: the
sha256 of everything else in it (every tensor's dtype, shape and bytes, every key and
value, in the file's own order), written by :func:`save` and checked by :func:`read`. A
torch zip checks neither its tensor bytes nor its records' CRCs on load, so without it
2,000 overwritten bytes inside a weight tensor load as a different model without a word.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from charlab.encoding import Vocab
from charlab.errors import CharlabError
from charlab.families import from_config_dict
from charlab.io import atomic_open

CHECKPOINT_FORMAT = "charlab-checkpoint"
STATE_FORMAT = "charlab-train-state"
# what the same files were called while charlab had only recurrent networks: still read
LEGACY_FORMATS = {"charlab-rnn-checkpoint": CHECKPOINT_FORMAT,
                  "charlab-rnn-train-state": STATE_FORMAT}
# 2: files carry a checksum (version 1 files have none: rerun `dvc repro` to retrain)
FORMAT_VERSION = 2
CHECKSUM_KEY = "checksum"


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



def _feed(h: Any, obj: Any) -> None:
    """Hash ``obj`` into ``h``: a type tag and a length before every value, so no two
    different objects feed the same bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous().reshape(-1)
        data = t.view(torch.uint8).numpy() if t.numel() else b""
        h.update(f"T{str(obj.dtype)}{tuple(obj.shape)}:{len(data)}:".encode())
        h.update(data)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):  # one tag: a tuple may load back as a list
        h.update(f"L{len(obj)}:".encode())
        for v in obj:
            _feed(h, v)
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        text = f"{type(obj).__name__}:{obj!r}".encode("utf-8", "surrogatepass")
        h.update(f"S{len(text)}:".encode())
        h.update(text)
    else:
        raise TypeError(f"cannot checksum a {type(obj).__name__} in a checkpoint")


def checksum(obj: dict) -> str:
    """sha256 (hex) of a checkpoint dict without its checksum entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in obj.items() if k != CHECKSUM_KEY})
    return h.hexdigest()


def save(obj: dict, path: Path) -> None:
    """Write ``obj`` with its :func:`checksum`, atomically."""
    sealed = {**obj, CHECKSUM_KEY: checksum(obj)}
    # a file object: a failed write (disk full) surfaces as Python's OSError, which
    # atomic_path turns into one clear OutputError
    with atomic_open(path, "wb") as f:
        torch.save(sealed, f)


def read(path: str | os.PathLike, device: torch.device | str) -> dict:
    from charlab.io import not_a_file

    path = Path(path)
    kind = not_a_file(path)
    if kind is not None:  # /dev/zero, a directory: no "no such file" for what is there
        raise CheckpointError(f"{path}: is {kind}, not a checkpoint file")
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
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if fmt not in (CHECKPOINT_FORMAT, STATE_FORMAT, *LEGACY_FORMATS):
        raise CheckpointError(f"{path}: a torch file, but not a charlab checkpoint")
    version = obj.get("version")
    if version != FORMAT_VERSION:
        old = isinstance(version, int) and version < FORMAT_VERSION
        raise CheckpointError(f"{path}: checkpoint format version {version!r}; this charlab "
                              f"reads version {FORMAT_VERSION}"
                              + ("; rerun `dvc repro` to retrain it" if old else ""))
    try:
        ok = obj.get(CHECKSUM_KEY) == checksum(obj)
    except TypeError:  # a value charlab never writes
        ok = False
    if not ok:
        raise CheckpointError(
            f"{path}: damaged checkpoint: its checksum does not match its contents (tensors "
            "or settings changed since training wrote it); restore it (`dvc checkout`) or "
            "retrain it (`dvc repro`)"
        )
    return {**obj, "format": LEGACY_FORMATS.get(fmt, fmt)}


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu", *,
                    vocab: Vocab | None = None) -> tuple[nn.Module, Vocab, dict[str, Any]]:
    """Load a best-model checkpoint (or a resume state) onto ``device``, in eval mode.

    The network is the one its ``model_config`` names by cell, built by that cell's family
    (:mod:`charlab.families`).

    Returns the model, its vocabulary and ``info`` (``name``, ``step``, ``val_loss``,
    ``params``, ``precision``: the one training used). With ``vocab`` given, a checkpoint
    for another vocabulary is an error.
    """
    device = torch.device(device)
    obj = read(path, device)
    try:
        family, config = from_config_dict(obj["model_config"])
        ckpt_vocab = Vocab(tuple(obj["vocab"]))
        model = family.build(config)
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
                                    "precision_parts", "device", "device_name", "init")}
    return model, ckpt_vocab, info


def default_state_path(checkpoint_path: str | os.PathLike) -> Path:
    p = Path(checkpoint_path)
    return p.with_name(p.name + ".state")

