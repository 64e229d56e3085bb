"""Every section of params.yaml at once: what the ``validate`` stage (and ``charlab
profile``) checks before any other stage runs, so that a params error stops ``dvc repro``
before DVC deletes any output. It imports every owner's module; the stages import only
their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from charlab.models import model_names
from charlab.params.core import ParamsError, parse, shown
from charlab.params.data import DownloadParams, EncodeParams, NgramParams
from charlab.params.readers import (
    AnalyzeParams,
    EvaluateParams,
    IntervalsParams,
    SampleParams,
)
from charlab.params.training import TRAINED_SECTIONS, section_of, train_models


def _dataclass_section(cls: type) -> Callable[[Any, str], Any]:
    def check_section(raw: Any, path: str) -> Any:
        return parse(cls, raw, path)
    check_section.params_class = cls  # type: ignore[attr-defined]  # (tests walk its keys)
    return check_section


# Every top-level section of params.yaml and the function that checks it (raw value, key
# path) -> parsed value. A new section is one line.
SECTIONS: dict[str, Callable[[Any, str], Any]] = {
    "download": _dataclass_section(DownloadParams),
    "encode": _dataclass_section(EncodeParams),
    "ngram": _dataclass_section(NgramParams),
    # train: and finetune: are checked together (names are shared, fine-tunes name other
    # entries): see validate_all
    "train": lambda raw, path: raw,
    "finetune": lambda raw, path: raw,
    "sample": _dataclass_section(SampleParams),
    "evaluate": _dataclass_section(EvaluateParams),
    "analyze": _dataclass_section(AnalyzeParams),
    "intervals": _dataclass_section(IntervalsParams),
}
# sections params.yaml may leave out
OPTIONAL_SECTIONS = ("finetune",)

def register_section(name: str, cls: type | Callable[[Any, str], Any]) -> None:
    """Add a section to what :func:`validate_all` checks: a params dataclass, or a function
    (raw value, key path) -> parsed value that raises :class:`ParamsError`."""
    SECTIONS[name] = _dataclass_section(cls) if dataclasses.is_dataclass(cls) else cls


# The validate stage's first output: constant, so that no stage reruns because validation
# ran again; only a failed validation (no file) stops the stages that depend on it.
PARAMS_OK = "every params section is valid\n"


def validate_all(params: Mapping) -> dict[str, Any]:
    """Every section of loaded params, parsed and checked: section name -> parsed value.
    A section params.yaml lacks, or one no stage knows (a typo), is an error too."""
    unknown = sorted((k for k in params if k not in SECTIONS), key=str)
    if unknown:
        raise ParamsError(f"{shown(unknown[0])}: unknown section; allowed sections: "
                          f"{', '.join(SECTIONS)}")
    out = {}
    for name, check_section in SECTIONS.items():
        if name not in params:
            if name in OPTIONAL_SECTIONS:
                continue
            raise ParamsError(f"{name}: section missing from params")
        out[name] = check_section(params[name], name)
    models = train_models(params)
    for name in TRAINED_SECTIONS:
        out[name] = {m: cfg for m, cfg in models.items() if section_of(params, m) == name}
    # a pair must name a model of this params file: found by analyze only, DVC would have
    # deleted its outputs first
    out["analyze"].check_models("analyze", model_names(out["ngram"].orders, list(models)))
    return out
