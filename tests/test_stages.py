"""dvc.yaml lists, for every stage, its script and each charlab module it imports (directly
or through another module): an edited module must rerun exactly the stages that use it.
Each stage rejects bad params before any work.

Imports at module level must be listed, and so must those of every listed module. An import
inside a function (models.load_model imports the model families it loads) may be left out
by a stage that never calls it, but nothing beyond the full import closure may be listed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from helpers import edit_params, one_line_error, run_stage, snapshot

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def charlab_imports(path: Path, nested: bool) -> set[str]:
    """Modules of charlab that ``path`` imports, as ``src/charlab/<name>.py``; ``nested``:
    also the imports inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree) if nested else tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "charlab":
                found |= {f"src/charlab/{a.name}.py" for a in node.names}
            elif node.module.startswith("charlab."):
                found.add(f"src/charlab/{node.module.split('.')[1]}.py")
        elif isinstance(node, ast.Import):
            found |= {f"src/charlab/{a.name.split('.')[1]}.py" for a in node.names
                      if a.name.startswith("charlab.")}
    return found


def closure(script: Path, nested: bool, also: set[str] = frozenset()) -> set[str]:
    """What ``script`` (and the modules ``also``) import, directly or through others."""
    todo, seen = list(charlab_imports(script, nested) | also), set()
    while todo:
        mod = todo.pop()
        if mod not in seen:
            seen.add(mod)
            todo.extend(charlab_imports(REPO / mod, nested))
    return seen


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_list_script_and_every_imported_module(name: str) -> None:
    stage = STAGES[name].get("do", STAGES[name])
    script = f"stages/{name}.py"
    deps = {d for d in stage["deps"] if isinstance(d, str)}
    assert script in deps
    listed = {d for d in deps if d.startswith("src/charlab/")}
    assert closure(REPO / script, nested=False, also=listed) <= listed
    assert listed <= closure(REPO / script, nested=True)


def test_every_stage_script_is_in_the_pipeline() -> None:
    assert {p.stem for p in (REPO / "stages").glob("*.py")} == set(STAGES)


# --- each stage rejects bad params before any work: nothing written, nothing deleted

@pytest.mark.parametrize("stage,edit,message", [
    ("download", {"download": {"timeout": 0}}, r"download\.timeout: must be > 0, got 0\.0"),
    ("encode", {"encode": {"val_fraction": 0.5, "test_fraction": 0.5}}, "must sum to < 1"),
    ("ngram", {"ngram": {"orders": [2, 2]}}, r"ngram\.orders: must not repeat an order"),
    ("train", {"train": {"rnn": {"hidden_size": -512}}},
     r"train\.rnn\.hidden_size: must be > 0, got -512"),
    ("train", {"train": {"rnn": {"seq_length": 100_000}}},
     r"train\.rnn\.seq_length: 100000 is too long for the train split of \d+ characters"),
    ("train", {"train": {"rnn": {"batch_size": 5000}}},
     r"train\.rnn\.batch_size: 5000 streams of seq_length \+ 1 = 9 characters need 45000"),
    ("train", {"train": {"rnn": {"device": "cuda"}}},
     r"train\.rnn\.device: device 'cuda' requested but CUDA is not available"),
    ("train", {"train": {"rnn": {"precision": "tf32"}}},
     r"train\.rnn\.precision: precision tf32 needs an NVIDIA GPU of compute capability 8\.0"),
    ("sample", {"sample": {"prime": "ΩMEGA:"}},
     r"sample\.prime: 1 character\(s\) not in the vocabulary of \d+: 'Ω'$"),
    ("evaluate", {"evaluate": {"device": "cuda"}},
     r"evaluate\.device: device 'cuda' requested but CUDA is not available"),
    ("evaluate", {"evaluate": {"gpus": 1}}, r"evaluate\.gpus: unknown key"),
], ids=["download-timeout", "encode-fractions", "ngram-orders", "train-hidden_size",
        "train-seq_length", "train-batch_size", "train-device-cuda", "train-precision-tf32",
        "sample-prime-oov",
        "evaluate-device-cuda", "evaluate-unknown-key"])
def test_stage_rejects_bad_params_before_any_work(pipeline_ws: Path, capsys, no_gpu, stage: str,
                                                  edit: dict, message: str) -> None:
    edit_params(pipeline_ws, edit)
    before = snapshot(pipeline_ws)
    code, _, err = run_stage(pipeline_ws, stage, capsys)
    assert code == 2
    assert re.search(message, one_line_error(err))
    assert snapshot(pipeline_ws) == before  # nothing written, nothing deleted
