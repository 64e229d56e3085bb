"""Which models the pipeline has (the model set), where each lives on disk, and loading any
of them by name."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlab.encoding import Vocab
from charlab.errors import CharlabError
from charlab.io import not_a_file, read_json
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


class ModelSetError(CharlabError):
    """The model-set file (data/models.json) is missing or damaged."""


def seed_groups(entries: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Trained models that are seeds of one configuration: entries equal in every key but
    ``seed`` (each value has ``to_dict()``: :class:`charlab.params.training.TrainParams`).
    Each group of two or more is named by its first model in params order."""
    groups: dict[str, list[str]] = {}
    for name, cfg in entries.items():
        key = repr(sorted((k, v) for k, v in cfg.to_dict().items() if k != "seed"))
        groups.setdefault(key, []).append(name)
    return {runs[0]: tuple(runs) for runs in groups.values() if len(runs) > 1}


@dataclass(frozen=True)
class ModelSet:
    """Which models the pipeline has: the n-gram orders, the names of the train: and
    finetune: entries, and which of those are seeds of one configuration (``seeds``:
    configuration -> its runs, for configurations of two or more seeds). The validate stage
    writes it; the readers depend on it, so adding or removing a model reruns them (and only
    a change of the set does)."""

    ngram_orders: tuple[int, ...]
    trained: tuple[str, ...]
    seeds: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_params(cls, checked: Mapping[str, Any]) -> ModelSet:
        """From :func:`charlab.params.sections.validate_all`'s result."""
        entries = {**checked["train"], **checked["finetune"]}
        return cls(tuple(sorted(checked["ngram"].orders)), tuple(entries),
                   seed_groups(entries))

    def configs(self) -> dict[str, tuple[str, ...]]:
        """Every model as a configuration and its runs: the n-grams and single-seed models
        each alone, a configuration of several seeds under its first run's name, in the
        order of :func:`model_names`."""
        member = {run: config for config, runs in self.seeds.items() for run in runs}
        out: dict[str, tuple[str, ...]] = {}
        for name in model_names(list(self.ngram_orders), list(self.trained)):
            config = member.get(name, name)
            if config not in out:
                out[config] = self.seeds.get(config, (name,))
        return out

    def to_json(self) -> dict:
        out: dict[str, Any] = {"ngram_orders": list(self.ngram_orders),
                               "trained": list(self.trained)}
        if self.seeds:  # left out when empty: a set without seeds is written as before
            out["seeds"] = {config: list(runs) for config, runs in self.seeds.items()}
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> ModelSet:
        try:
            obj = read_json(path)
        except FileNotFoundError:
            raise ModelSetError(f"{path}: missing (the validate stage writes it: "
                                "`dvc repro validate`)") from None
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError
            raise ModelSetError(f"{path}: not a model-set file: {e}") from None
        orders, trained = (obj.get(k) if isinstance(obj, dict) else None
                           for k in ("ngram_orders", "trained"))
        seeds = obj.get("seeds", {}) if isinstance(obj, dict) else None
        if not (isinstance(orders, list) and all(type(o) is int for o in orders)
                and isinstance(trained, list) and all(isinstance(t, str) for t in trained)
                and isinstance(seeds, dict) and all(
                    isinstance(runs, list) and set(runs) <= set(trained)
                    for runs in seeds.values())):
            raise ModelSetError(f"{path}: not a model-set file: expected "
                                '{"ngram_orders": [int, ...], "trained": [name, ...], '
                                '"seeds": {config: [name, ...]} (optional)}')
        return cls(tuple(orders), tuple(trained),
                   {str(c): tuple(runs) for c, runs in seeds.items()})


def load_model(path: str | os.PathLike, vocab: Vocab, device: str = "cpu") -> LanguageModel:
    """Load an n-gram table or a network checkpoint (of any family) built for ``vocab``."""
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
        from charlab.families import family_of
        from charlab.runtime import resolve_device

        dev = resolve_device(device)
        net, _vocab, _info = load_checkpoint(path, dev, vocab=vocab)
        model = family_of(net).language_model(net, dev)
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
