"""Security: no loader can run pickled or tagged code (a static scan of src/ and stages/,
and a live payload), params cannot name paths, and every user error prints as one line."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO, write_malicious

from charlab.checkpoint import CheckpointError
from charlab.corpus import DownloadError
from charlab.encoding import CorpusError, Vocab
from charlab.errors import CharlabError, TrainingError
from charlab.families import FAMILIES
from charlab.io import OutputError
from charlab.ngram import NGramFileError, NGramLM
from charlab.params.core import ParamsError
from charlab.params.data import DownloadParams, EncodeParams, NgramParams
from charlab.params.readers import EvaluateParams, SampleParams
from charlab.params.training import TrainParams, train_models
from charlab.runtime import DeviceError


def _calls(path: Path) -> Iterator[tuple[str, ast.Call]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            if isinstance(base, ast.Name):
                yield f"{base.id}.{node.func.attr}", node


def _kw(call: ast.Call, name: str) -> Any:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


SOURCES = sorted([*(REPO / "src").rglob("*.py"), *(REPO / "stages").glob("*.py")])


def test_no_loader_can_run_pickled_or_tagged_code() -> None:
    """torch.load only with weights_only=True, np.load only with allow_pickle=False, YAML
    only through safe_load or a yaml.SafeLoader subclass, and nothing unpickles (pickle is
    imported only for its error type, to name a refused checkpoint)."""
    bad = []
    for path in SOURCES:
        text = path.read_text()
        if re.search(r"^\s*(import|from)\s+(marshal|shelve|dill)\b", text, re.M):
            bad.append(f"{path.name}: imports a pickle module")
        if re.search(r"\bpickle\.(loads?|Unpickler)\b|\bfrom\s+pickle\s+import", text):
            bad.append(f"{path.name}: unpickles")
        for name, call in _calls(path):
            where = f"{path.relative_to(REPO)}:{call.lineno}"
            if name == "torch.load" and _kw(call, "weights_only") is not True:
                bad.append(f"{where}: torch.load without weights_only=True")
            if name in ("np.load", "numpy.load") and _kw(call, "allow_pickle") is not False:
                bad.append(f"{where}: np.load without allow_pickle=False")
            if name.startswith("yaml.") and name.split(".")[1] in (
                    "load", "load_all", "unsafe_load", "full_load", "unsafe_load_all"):
                bad.append(f"{where}: {name} (use yaml.safe_load)")
        # a loader of charlab's own (io.read_yaml's, refusing duplicate keys) is a SafeLoader
        for node in ast.walk(ast.parse(text)):
            bases = [ast.unparse(b) for b in getattr(node, "bases", [])]
            if isinstance(node, ast.ClassDef) and any(b.endswith("Loader") for b in bases) \
                    and bases != ["yaml.SafeLoader"]:
                bad.append(f"{path.name}: class {node.name}({', '.join(bases)}): not a "
                           "SafeLoader")
    assert bad == []
    assert any(name == "torch.load" for p in SOURCES for name, _ in _calls(p))  # scan works


def test_malicious_ngram_file_never_runs_its_code(tmp_path: Path) -> None:
    write_malicious(tmp_path / "ngram2.npz", tmp_path / "marker", "npz")
    with pytest.raises(NGramFileError, match=r"ngram2\.npz: not a readable charlab n-gram file"):
        NGramLM.load(tmp_path / "ngram2.npz", Vocab(("a", "b")))
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("name", ["../escape", "..", "a/b", "/abs", "x/../../y", "a\\b",
                                  ".hidden", "models/rnn", "~root", "a b", ""])
def test_model_names_from_params_cannot_name_a_path(name: str) -> None:
    with pytest.raises(ParamsError, match="model names must be letters, digits, _ or -"):
        train_models({"train": {name: {}}})


def test_output_paths_come_from_dvc_yaml_and_stay_in_the_repo() -> None:
    """Params hold no output paths: every out in dvc.yaml is relative, without `..`, and its
    only interpolation is the train model name (checked by the test above)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = []
    for entry in stages.values():
        body = entry.get("do", entry)
        for key in ("outs", "metrics", "plots"):
            for item in body.get(key, []):
                outs.append(next(iter(item)) if isinstance(item, dict) else item)
    assert outs
    for out in outs:
        assert not Path(out).is_absolute() and ".." not in Path(out).parts, out
        assert set(re.findall(r"\$\{([^}]*)\}", out)) <= {"key"}, out
    for cls in (DownloadParams, EncodeParams, NgramParams, TrainParams, SampleParams,
                EvaluateParams, *(f.Keys for f in FAMILIES)):
        fields = {f for f in cls.__dataclass_fields__}
        assert not {f for f in fields if re.search(r"(^|_)(path|dir|out|file)s?($|_)", f)}, cls


def test_user_errors_are_charlab_errors() -> None:
    """Every error class a user can meet prints as one line (run_main catches CharlabError)."""
    for cls in (ParamsError, DownloadError, CorpusError, OutputError, CheckpointError,
                DeviceError, TrainingError, NGramFileError):
        assert issubclass(cls, CharlabError), cls
