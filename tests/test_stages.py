"""dvc.yaml lists, for every stage, its script and each charlab module it imports (directly
or through another module): an edited module must rerun exactly the stages that use it.

Imports at module level must be listed, and so must those of every listed module. An import
inside a function (models.load_model imports the model families it loads) may be left out
by a stage that never calls it, but nothing beyond the full import closure may be listed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from conftest import REPO

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


@pytest.mark.parametrize("name", ["sample", "evaluate", "analyze", "report"])
def test_readers_do_not_depend_on_the_training_code(name: str) -> None:
    """An edit of the training loop (or its batching, resume state, launch, DDP) reruns only
    the train@ and finetune@ stages: the stages that read models import none of it."""
    deps = set(STAGES[name]["deps"])
    trainer = {f"src/charlab/{m}.py" for m in ("train", "batches", "resume", "launch",
                                               "distributed", "finetune")}
    assert not deps & trainer
    assert not closure(REPO / f"stages/{name}.py", nested=True) & trainer
