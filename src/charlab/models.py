"""Where each model of the pipeline lives on disk, and loading any of them by name."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from charlab.encoding import Vocab
from charlab.errors import CharlabError
from charlab.io import not_a_file
from charlab.lm import LanguageModel

NGRAM_SUFFIX = ".npz"
CHECKPOINT_SUFFIX = ".pt"


def ngram_name(order: int) -> str:
    return f"ngram{order}"


def ngram_file(ngram_dir: str | os.PathLike, order: int) -> Path:
    return Path(ngram_dir) / f"{ngram_name(order)}{NGRAM_SUFFIX}"


def checkpoint_file(models_dir: str | os.PathLike, name: str) -> Path:
    return Path(models_dir) / f"{name}{CHECKPOINT_SUFFIX}"


def model_names(orders: list[int], trained: list[str]) -> list[str]:
    """Every model of the pipeline: n-grams by order, then trained models in params order."""
    return [ngram_name(o) for o in sorted(orders)] + list(trained)


def model_files(orders: list[int], trained: list[str], ngram_dir: str | os.PathLike,
                models_dir: str | os.PathLike) -> dict[str, Path]:
    """Model name -> file, n-grams first (by order), then trained models in params order."""
    files = {ngram_name(o): ngram_file(ngram_dir, o) for o in sorted(orders)}
    files.update({name: checkpoint_file(models_dir, name) for name in trained})
    return files


def load_model(path: str | os.PathLike, vocab: Vocab, device: str = "cpu") -> LanguageModel:
    """Load an n-gram table or a network checkpoint (RNN or GPT) built for ``vocab``."""
    path = Path(path)
    kind = not_a_file(path)
    if kind is not None:
        raise CharlabError(f"{path}: is {kind}, not a model file")
    if not path.is_file():
        raise CharlabError(f"{path}: no such model file (has the pipeline run? `dvc repro`)")
    if path.suffix == NGRAM_SUFFIX:
        from charlab.ngram import NGramLM

        model = NGramLM.load(path, vocab)  # refuses a table of another vocabulary
    elif path.suffix == CHECKPOINT_SUFFIX:
        from charlab.checkpoint import load_checkpoint
        from charlab.networks import language_model
        from charlab.runtime import resolve_device

        dev = resolve_device(device)
        net, _vocab, _info = load_checkpoint(path, dev, vocab=vocab)
        model = language_model(net, dev)
    else:
        raise CharlabError(f"{path}: unknown model file type (expected .npz or .pt)")
    if model.vocab_size != vocab.size:
        raise CharlabError(
            f"{path}: model has {model.vocab_size} characters, vocabulary has {vocab.size}"
        )
    return model


def load_models(files: Mapping[str, Path], vocab: Vocab,
                device: str = "cpu") -> dict[str, LanguageModel]:
    return {name: load_model(path, vocab, device) for name, path in files.items()}
