"""Security: no loader can run pickled or tagged code (a static scan of src/ and stages/,
and a live payload), params cannot name paths, and every user error prints as one line."""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import HTTPServer, make_text
from helpers import REPO, write_malicious
from test_pipeline import edit_params, make_repo, outputs, run, run_status, stages_run

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
from charlab.params.sections import validate_all
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


# the corpus of the real-DVC tests
CORPUS_TEXT = make_text(8_000, seed=4)

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


# --- dvc.yaml's commands: every ${...} in them is a value validate checks (issue 20, S1) --

# Values a shell would read as more than one plain word, or as a path, an option or an
# interpolation: what a params value must never carry into a stage's command line.
SHELL_HOSTILE = ["x;touch PWNED;", "a b", "$(touch PWNED)", "`touch PWNED`", "a|b", "a&b",
                 "a>b", "a<b", "a\nb", "a\rb", "a\tb", "a\x00b", "a'b", 'a"b', "a\\b", "a*",
                 "a?", "~a", "#a", "!a", "a{b}", "a/b", "../a", "/abs", ".", "..", "-a",
                 "--init", "${oc.env:HOME}", "$HOME", "a.pt", "é", ""]

# Every interpolation dvc.yaml puts into a stage (its cmd, deps, outs, params), and the check
# of charlab.params.training that keeps it one plain word. A new interpolation fails
# test_every_interpolation_in_dvc_yaml_is_a_validated_word until it is listed here with
# its check (and the check refuses SHELL_HOSTILE).
INTERPOLATIONS = {
    "key": "the train:/finetune: entry name: MODEL_NAME, in training._entries",
    "item.init_from": "a finetune: entry's init_from: MODEL_NAME, in training._entries",
}


def _templates() -> Iterator[tuple[str, str | None, str, str]]:
    """(stage, foreach section or None, field, template string) for every string of every
    stage of dvc.yaml, a foreach's `do:` included."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

    def strings(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for v in node:
                yield from strings(v)
        elif isinstance(node, dict):
            for k, v in node.items():
                yield from strings(k)
                yield from strings(v)

    for stage, entry in stages.items():
        section = None
        if "foreach" in entry:
            section = re.fullmatch(r"\$\{(\w+)\}", entry["foreach"]).group(1)
            entry = entry["do"]
        for fld, value in entry.items():
            for s in strings(value):
                yield stage, section, fld, s


def _hostile_params(section: str | None, name: str, value: str) -> tuple[dict, str]:
    """The default params with interpolation ``name`` of a stage over ``section`` set to
    ``value``, and the key path validate must name."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    base = dict(raw["train"]["rnn"])
    raw["finetune"] = {"ft": {**base, "init_from": "rnn"}}
    if name == "key":
        entries = raw[section]
        first = next(iter(entries))
        raw[section] = {value: entries.pop(first), **entries}
        return raw, f"{section}.{value!r}" if not value.isprintable() else f"{section}.{value}"
    assert name.startswith("item.") and section is not None, name
    first = next(iter(raw[section]))
    raw[section][first][name.removeprefix("item.")] = value
    return raw, f"{section}.{first}.{name.removeprefix('item.')}"


def test_every_interpolation_in_dvc_yaml_is_a_validated_word() -> None:
    """Issue 20, serious 1: `init_from: 'x;touch PWNED_ft;'` reached the finetune stage's
    command (`--init models/${item.init_from}.pt`) and DVC's shell ran `touch`. Every
    `${...}` of every stage's cmd (and deps, outs, params) is listed in INTERPOLATIONS, and
    validate refuses each shell-hostile value there, naming its key path."""
    found: dict[str, set[str]] = {}
    in_cmd = set()
    for _stage, section, fld, template in _templates():
        for name in re.findall(r"\$\{([^}]*)\}", template):
            found.setdefault(name, set()).add(section or "")
            in_cmd |= {name} if fld == "cmd" else set()
    assert in_cmd == {"key", "item.init_from"}  # today's: the walk finds them
    assert set(found) == set(INTERPOLATIONS), set(found) ^ set(INTERPOLATIONS)
    for name, sections in found.items():
        for section in sections:
            assert section, f"${{{name}}} outside a foreach: add how params set it"
            for value in SHELL_HOSTILE:
                raw, key = _hostile_params(section, name, value)
                with pytest.raises(ParamsError) as e:
                    validate_all(raw)
                assert str(e.value).startswith(f"{key}:"), (name, value, str(e.value))
                assert str(e.value).isprintable()
    # and the checks let a plain name through
    raw, _ = _hostile_params("finetune", "item.init_from", "rnn3")
    assert validate_all(raw)["finetune"]["ft"].init_from == "rnn3"


# --- the same through real `dvc repro` (slow: one baseline run, copied for each test) ------

@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny pipeline after a good `dvc repro`, committed (the corpus served over HTTP for
    the module's lifetime). Read-only: a test takes ``dvc_repo``, a private copy."""
    server = HTTPServer(tmp_path_factory.mktemp("www"))
    try:
        repo = make_repo(tmp_path_factory.mktemp("sec"), server, CORPUS_TEXT,
                         lambda p: p["ngram"].update(orders=[2]))
        run(["dvc", "repro"], repo)
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-qm", "baseline"], repo)
        yield repo
    finally:
        server.close()


@pytest.fixture
def dvc_repo(reproduced: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "repo"
    shutil.copytree(reproduced, dest, symlinks=True)
    return dest


def _markers(repo: Path) -> list[str]:
    return sorted(str(p.relative_to(repo)) for p in repo.rglob("*PWNED*")
                  if not p.name.endswith(".pt"))  # the init files the test put there


def _stops_at_validate(repo: Path, message: str) -> None:
    """`dvc repro` fails in validate with one `error:` line matching ``message``; nothing
    ran, no other stage's output changed or vanished."""
    before = outputs(repo)
    code, out = run_status(["dvc", "repro"], repo)
    assert code != 0, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.fullmatch(message, errors[0]), out
    assert "Traceback" not in out, out
    assert stages_run(out) == {"validate"}, out
    assert outputs(repo) == before
    assert _markers(repo) == []


@pytest.mark.slow
@pytest.mark.parametrize("init_from", ["x;touch PWNED_ft;", "a b"], ids=["semicolon", "space"])
def test_a_hostile_init_from_stops_dvc_repro_at_validate(dvc_repo: Path, init_from: str) -> None:
    """Issue 20, serious 1, as reported: with `finetune.ft.init_from: 'x;touch PWNED_ft;'`
    (and a file of that name under models/, so DVC runs the stage) `dvc repro` ran `touch
    PWNED_ft`; with 'a b' the stage printed argparse's usage. Now validate stops it in one
    line, and nothing is created or deleted."""
    shutil.copy(dvc_repo / "models/rnn.pt", dvc_repo / f"models/{init_from}.pt")
    edit_params(dvc_repo, lambda p: p.update(finetune={"ft": {**p["train"]["rnn"],
                                                              "init_from": init_from}}))
    _stops_at_validate(dvc_repo, r"error: finetune\.ft\.init_from: must be a model name: "
                                 r"letters, .*; got " + re.escape(repr(init_from)))
    assert not (dvc_repo / "models/ft.pt").exists()
