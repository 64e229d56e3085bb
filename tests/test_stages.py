"""dvc.yaml lists, for every stage, its script and each charlab module it imports (directly
or through another module; a package whose modules it all imports as the package's folder):
an edited module must rerun exactly the stages that use it. Each stage rejects bad params
before any work.

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


def module_files(module: str) -> set[str]:
    """The files Python runs to import ``module`` (``charlab.x`` or ``charlab.pkg.x``):
    ``src/charlab/x.py``, or for a package each ``__init__.py`` on the way down and the
    module itself (importing ``charlab.ngram.tables`` first runs ``charlab/ngram/__init__``)."""
    parts, found = module.split("."), set()
    for i in range(2, len(parts) + 1):
        path = "/".join(["src", *parts[:i]])
        found.add(f"{path}/__init__.py" if (REPO / path).is_dir() else f"{path}.py")
    return found


def is_module(module: str) -> bool:
    path = REPO / "/".join(["src", *module.split(".")])
    return path.is_dir() or path.with_suffix(".py").is_file()


def charlab_imports(path: Path, nested: bool) -> set[str]:
    """Files of charlab that ``path`` imports, as ``src/charlab/<name>.py`` (or
    ``src/charlab/<package>/<name>.py``); ``nested``: also the imports inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree) if nested else tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "charlab" or node.module.startswith("charlab."):
                if node.module != "charlab":
                    found |= module_files(node.module)
                # `from charlab.pkg import sub` imports the submodule too, not just a name
                for name in (f"{node.module}.{a.name}" for a in node.names):
                    if is_module(name):
                        found |= module_files(name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("charlab."):
                    found |= module_files(a.name)
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


def files_of(deps: set[str]) -> set[str]:
    """The Python files that ``deps`` name: a file itself, every .py file under a folder."""
    out = set()
    for d in deps:
        path = REPO / d
        out |= ({str(p.relative_to(REPO)) for p in path.rglob("*.py")} if path.is_dir()
                else {d})
    return out


def src_deps(name: str) -> set[str]:
    stage = STAGES[name].get("do", STAGES[name])
    return {d for d in stage["deps"] if isinstance(d, str) and d.startswith("src/charlab/")}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_list_script_and_every_imported_module(name: str) -> None:
    stage = STAGES[name].get("do", STAGES[name])
    script = f"stages/{name}.py"
    assert script in stage["deps"]
    listed = files_of(src_deps(name))
    assert closure(REPO / script, nested=False, also=listed) <= listed
    assert listed <= closure(REPO / script, nested=True)


@pytest.mark.parametrize("name", ["download", "encode", "ngram", "train", "finetune"])
def test_data_and_training_stages_do_not_depend_on_the_readers_params(name: str) -> None:
    """Editing a reader's defaults (src/charlab/params/readers.py) reruns no data stage and no
    training: only the stages that read those sections, and validate (which checks them)."""
    assert "src/charlab/params/readers.py" not in files_of(src_deps(name))


def test_every_stage_script_is_in_the_pipeline() -> None:
    assert {p.stem for p in (REPO / "stages").glob("*.py")} == set(STAGES)


@pytest.mark.parametrize("name", ["sample", "evaluate", "analyze", "intervals", "report"])
def test_readers_do_not_depend_on_the_training_code(name: str) -> None:
    """An edit of the training loop (or its batching, resume state, launch, DDP) reruns only
    the train@ and finetune@ stages: the stages that read models import none of it."""
    trainer = files_of({"src/charlab/training"})
    assert trainer and not files_of(src_deps(name)) & trainer
    assert not closure(REPO / f"stages/{name}.py", nested=True) & trainer


def test_imports_of_a_package_name_its_init_and_the_modules(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text("from charlab import io\n"
                      "from charlab.ngram import NGramLM\n"
                      "from charlab.ngram import tables\n"
                      "import charlab.ngram.counting\n"
                      "def later():\n"
                      "    from charlab.models import load_model\n")
    assert charlab_imports(script, nested=False) == {
        "src/charlab/io.py", "src/charlab/ngram/__init__.py", "src/charlab/ngram/tables.py",
        "src/charlab/ngram/counting.py"}
    assert "src/charlab/models.py" in charlab_imports(script, nested=True)
    # the package's __init__ imports each of its modules: a stage using it lists them all
    assert {f"src/charlab/ngram/{p.name}" for p in (REPO / "src/charlab/ngram").glob("*.py")
            } <= closure(script, nested=False)


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
