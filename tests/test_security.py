"""Security: no loader can run pickled or tagged code (a static scan of src/ and stages/,
and a live payload), params cannot name paths, every user error prints as one line, and no
params or profile value reaches a shell or is resolved: each ${...} of dvc.yaml is a
checked name, and every string of params.yaml and of a profile is refused before any stage
deletes an output or kept verbatim as data (in-process for every key, through real `dvc
repro` and `dvc exp run` for a representative subset: tests marked slow)."""

from __future__ import annotations

import ast
import copy
import dataclasses
import re
import shutil
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

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
from charlab.params.data import DownloadParams, EncodeParams, NgramParams, url_problem
from charlab.params.readers import EvaluateParams, SampleParams
from charlab.params.sections import SECTIONS, validate_all
from charlab.params.training import TRAINED_SECTIONS, TrainParams, train_models
from charlab.profiles import ProfileError, overrides
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


# primes the real-DVC tests sample from: shell metacharacters, quotes, backslashes, $,
# ${...} (params.yaml only: a profile refuses it), newlines, a tab, a NUL (params.yaml only)
PROFILE_PRIME = ("KING: $(touch PWNED_p); `touch PWNED_q` | & > < * ? ~ # ! ' \" \\ a\\b "
                 "\\' $HOME %s\n\tend\r\n")
PARAMS_PRIME = PROFILE_PRIME + "${oc.env:CHARLAB_SECRET} ${train.rnn.lr}\x00:"
SECRET = "s3cr3t-4242-never-written"
# the corpus of the real-DVC tests: every character of the primes is in its vocabulary
CORPUS_TEXT = make_text(8_000, seed=4) + PARAMS_PRIME + make_text(500, seed=5)

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


# --- every string of params.yaml and of a profile: refused, or data kept verbatim ---------

# More than SHELL_HOSTILE: interpolations DVC and Hydra know, lone control characters, long.
HOSTILE = [*SHELL_HOSTILE, "${oc.env:CHARLAB_SECRET}", "${train.rnn.lr}", "${key}",
           "${item.init_from}", "\n", "\x00", "\x7f", "a\u2028b", "a" * 300, "C:\\x\\",
           "http://127.0.0.1:9/x;touch PWNED", "file:///etc/passwd", "rnn rnn3"]

# The string values that are pure data, never interpolated by DVC (dvc.yaml names no key of
# theirs, and DVC resolves no ${...} inside params.yaml's values) and never in a command
# line (each stage reads them from params.yaml itself): a value there is refused only when
# it cannot be used as written, else it is kept exactly, ${...}, newlines and $ included.
VERBATIM = {
    # the text generation starts from; written verbatim at the head of samples/<m>.txt
    # (its characters must be in the corpus vocabulary: the sample stage checks that)
    "sample.prime": lambda v: True,
    # a local path or an http(s)/file URL, opened by Python (open, urllib), never a shell;
    # refused when it cannot be fetched as written: control characters, a space in an http
    # URL, a scheme or host that is not allowed, an empty string
    "download.url": lambda v: url_problem(v) is None,
}


def _string_type(tp: Any) -> bool:
    """Whether a params field's type admits a string (str, a Literal of strings, a list of
    them, a union with one)."""
    origin = typing.get_origin(tp)
    if tp is str:
        return True
    if origin is Literal:
        return any(isinstance(a, str) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType, list):
        return any(_string_type(a) for a in typing.get_args(tp))
    return False


def _holding(tp: Any, value: str) -> Any:
    """A value of type ``tp`` with ``value`` at its first string: a list of strings gets
    [value, "rnn"] (a pair whose other model exists)."""
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return [value, "rnn"] if _string_type(item) and typing.get_origin(item) is not list \
            else [_holding(item, value)]
    return value


def _string_fields(cls: type) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)
            if f.name != "net" and _string_type(hints[f.name])]


_DEFAULT = yaml.safe_load((REPO / "params.yaml").read_text())


def _default_params() -> dict:
    raw = copy.deepcopy(_DEFAULT)
    raw["finetune"] = {"ft": {**raw["train"]["rnn"], "init_from": "rnn"}}
    return raw


def _entry_of(family: Any) -> dict:
    """A valid train: entry of ``family``'s first cell (its required keys set)."""
    entry: dict[str, Any] = {"cell": family.cells[0]}
    for f in dataclasses.fields(family.Keys):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            entry[f.name] = 8  # every required key today is a size (a GPT's heads, context)
    return entry


# A slot: (key path as validate names it, function params -> None that puts a value there)
Slot = tuple[str, Callable[[dict, str], None]]


def _slots() -> list[Slot]:
    """Every place params.yaml holds a string: every string-typed key of every section's
    dataclass, of every train:/finetune: entry (the keys every entry has and each family's
    keys, on an entry of that family), the entry names, and any key's name (an unknown key)."""
    out: list[Slot] = []

    def put(path: tuple, tp: Any) -> Slot:
        def set_value(raw: dict, value: str) -> None:
            node = raw
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = _holding(tp, value)
        return ".".join(path), set_value

    for section, check_section in SECTIONS.items():
        if section in TRAINED_SECTIONS:
            continue
        cls = getattr(check_section, "params_class", None)
        assert cls is not None, f"{section}: not a params dataclass; add its strings here"
        out += [put((section, name), tp) for name, tp in _string_fields(cls)]
    for section, entry in (("train", "rnn"), ("finetune", "ft")):
        out += [put((section, entry, name), tp) for name, tp in _string_fields(TrainParams)]
        for family in FAMILIES:
            for name, tp in _string_fields(family.Keys):
                def set_family(raw: dict, value: str, section=section, family=family,
                               name=name, tp=tp) -> None:
                    raw[section]["fam"] = {**_entry_of(family), name: _holding(tp, value)}
                out.append((f"{section}.fam.{name}", set_family))

        def rename(raw: dict, value: str, section=section, entry=entry) -> None:
            raw[section] = {value: raw[section].pop(entry), **raw[section]}
        out.append((section, rename))  # the entry's name: validate names section.<name>
    for section in SECTIONS:
        def unknown(raw: dict, value: str, section=section) -> None:
            node = raw[section]["rnn"] if section == "train" else (
                raw[section]["ft"] if section == "finetune" else raw[section])
            node[value] = 1
        out.append((section, unknown))  # validate names section[.entry].<key>
    out.append(("", lambda raw, value: raw.update({value: {}})))  # a section's name
    return out


def _in_yaml(value: str) -> bool:
    """Whether a params.yaml can hold ``value`` (as a value and as a key): what safe_dump
    writes, safe_load reads back."""
    try:
        obj = {value: value}
        return yaml.safe_load(yaml.safe_dump(obj, allow_unicode=True)) == obj
    except yaml.YAMLError:
        return False


def test_every_string_of_params_is_refused_or_kept_verbatim(tmp_path: Path) -> None:
    """Issue 20, quality bar: shell metacharacters, ${...} interpolations, NUL, newlines and
    path separators (HOSTILE) in every string value of params.yaml, and as every name
    (entries, keys, sections). Each is refused by validate (what `dvc repro` runs first, so
    nothing is deleted) in one printable line naming the key path, or kept exactly as
    written: never resolved, never split.

    Refused, whatever the value: the names of train:/finetune: entries and init_from (dvc.yaml
    puts them in a shell command line and in file names: letters, digits, _ and -, at most
    105 characters), analyze.pairs (must name models of the file), cell, device, precision,
    lr_schedule, smoothing (one of their words), download.sha256 (hex), and any unknown key
    or section. Kept verbatim: the VERBATIM data values, sample.prime (any text: it heads
    the samples) and download.url (opened by Python, not a shell; refused only when it could
    not be fetched as written). Neither reaches a shell or a DVC interpolation: dvc.yaml
    names no key of theirs (test_every_interpolation_in_dvc_yaml_is_a_validated_word) and
    DVC resolves no ${...} inside params.yaml's values (the real runs below)."""
    slots = _slots()
    names = {path for path, _ in slots}
    # every string of the default params is one of the slots
    def leaves(node: Any, path: tuple = ()) -> Iterator[tuple]:
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, (*path, k))
        elif isinstance(node, str):
            yield path
    for path in leaves(_default_params()):
        generic = ".".join(p if i != 1 or path[0] not in TRAINED_SECTIONS else
                           {"train": "rnn", "finetune": "ft"}[path[0]]
                           for i, p in enumerate(path))
        assert generic in names, generic
    assert {"sample.prime", "download.url", "train.rnn.init_from", "finetune.ft.init_from",
            "analyze.pairs", "train.rnn.cell"} <= names
    kept = 0
    values = [v for v in HOSTILE if _in_yaml(v)]
    assert len(values) >= len(HOSTILE) - 2, set(HOSTILE) - set(values)
    for path, set_value in slots:
        for value in values:
            raw = _default_params()
            set_value(raw, value)
            try:
                checked = validate_all(raw)
            except ParamsError as e:
                msg = str(e)
                assert msg.isprintable() and msg, (path, value, msg)
                assert msg.startswith(path) or not path, (path, value, msg)
                continue
            assert path in VERBATIM and VERBATIM[path](value), (path, value)
            section, key = path.split(".")
            assert getattr(checked[section], key) == value  # exactly as written
            kept += 1
    assert kept >= len(HOSTILE)  # the data values took most of them (the test can fail)


def test_every_string_of_a_profile_is_refused_or_reaches_params_verbatim(tmp_path: Path
                                                                         ) -> None:
    """The same strings in a profile (`charlab profile`): refused in one line before DVC
    runs, or handed to `dvc exp run -S` as overrides that Hydra's parser (what DVC applies)
    reads back as the very value; only the VERBATIM keys take one, none holding `${`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    base = tmp_path / "params.yaml"
    base.write_text(yaml.safe_dump(_default_params(), sort_keys=False))
    prof = tmp_path / "p.yaml"
    applied = 0
    for path, set_value in _slots():
        for value in filter(_in_yaml, HOSTILE):
            full = _default_params()
            set_value(full, value)
            profile = _changed(_default_params(), full)
            prof.write_text(yaml.safe_dump(profile, allow_unicode=True, sort_keys=False))
            try:
                got = overrides(prof, base)
            except (ProfileError, ParamsError) as e:
                assert str(e).isprintable(), (path, value, str(e))
                continue
            assert path in VERBATIM and "${" not in value and "\x00" not in value, (path, value)
            parsed = {o.key_or_group: o.value() for o in map(parser.parse_override, got)}
            assert parsed[path] == value, (path, value, parsed)
            applied += 1
    assert applied >= len(HOSTILE) // 2


def _changed(base: Any, new: Any) -> Any:
    """The part of ``new`` that differs from ``base``: what a profile would hold."""
    if isinstance(base, dict) and isinstance(new, dict):
        out = {k: _changed(base.get(k), v) for k, v in new.items()
               if k not in base or base[k] != v}
        return out
    return new


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


@pytest.mark.slow
@pytest.mark.parametrize("edit,message", [
    (lambda p: p["train"].update({"$(touch PWNED_name)": p["train"]["rnn"]}),
     r"error: train\.\$\(touch PWNED_name\): model names must be letters, digits, _ or - .*"),
    (lambda p: p["train"].update({"${oc.env:CHARLAB_SECRET}": p["train"]["rnn"]}),
     r"error: train\.\$\{oc\.env:CHARLAB_SECRET\}: model names must be letters, .*"),
    (lambda p: p["train"].update({"m" * 106: p["train"]["rnn"]}),
     r"error: train\.m{106}: model names must be at most 105 characters .*, got 106"),
    (lambda p: p["train"]["rnn"].update(device="cpu;touch PWNED_dev"),
     r"error: train\.rnn\.device: must be one of 'auto', 'cpu', 'cuda', 'mps', got "
     r"'cpu;touch PWNED_dev'"),
    (lambda p: p.update(finetune={"ft": {**p["train"]["rnn"],
                                         "init_from": "${oc.env:CHARLAB_SECRET}"}}),
     r"error: finetune\.ft\.init_from: must be a model name: letters, .*; got "
     r"'\$\{oc\.env:CHARLAB_SECRET\}'"),
    (lambda p: (p["train"].pop("rnn3"), p["analyze"].update(pairs=[["rnn", "rnn3"]])),
     r"error: analyze\.pairs\[0\]\[1\]: unknown model 'rnn3'; the models are ngram2, rnn"),
    (lambda p: p["analyze"].update(pairs=[["rnn", "`touch PWNED_pair`"]]),
     r"error: analyze\.pairs\[0\]\[1\]: unknown model '`touch PWNED_pair`'; .*"),
    (lambda p: p["download"].update(url="corpus\x00;touch PWNED_url"),
     r"error: download\.url: must not hold control characters \(a newline, a tab, NUL\), "
     r"got 'corpus\\x00;touch PWNED_url'"),
    (lambda p: p["download"].update(url="http://127.0.0.1:9/$(touch PWNED_url) x"),
     r"error: download\.url: an http URL cannot hold a space: .*"),
], ids=["name-command-substitution", "name-interpolation", "name-over-the-bound",
        "device-semicolon", "init-from-interpolation", "pair-of-a-removed-model",
        "pair-hostile", "url-nul", "url-space"])
def test_hostile_or_stale_values_stop_dvc_repro_at_validate(dvc_repo: Path, edit, message: str,
                                                            monkeypatch) -> None:
    """A representative subset of the in-process matrix, through real `dvc repro`: each
    stops at validate with one line; nothing runs, nothing is resolved (the secret is in no
    file), no other output is deleted. The stale pair is issue 20's minor: a pair naming a
    removed train: entry passed validate, and analyze failed after DVC deleted its outputs."""
    monkeypatch.setenv("CHARLAB_SECRET", SECRET)
    edit_params(dvc_repo, edit)
    _stops_at_validate(dvc_repo, message)
    assert _files_holding(dvc_repo, SECRET) == []


def _files_holding(root: Path, text: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and text.encode() in p.read_bytes())


@pytest.mark.slow
def test_hostile_data_in_params_is_used_verbatim_and_never_run(dvc_repo: Path,
                                                               monkeypatch) -> None:
    """The data values (VERBATIM) through real `dvc repro`: a prime of shell metacharacters,
    `${oc.env:...}`, `$HOME`, backslashes, newlines and a NUL heads every sample exactly as
    written, and a URL with `$(...)`, backquotes and `${IFS}` is fetched as written; no
    command runs, nothing is resolved (the secret is in no file)."""
    monkeypatch.setenv("CHARLAB_SECRET", SECRET)
    url = yaml.safe_load((dvc_repo / "params.yaml").read_text())["download"]["url"]
    hostile_url = url + "?q=$(touch${IFS}PWNED_url);`touch${IFS}PWNED_tick`&s=${oc.env:HOME}"

    def edit(p: dict) -> None:
        p["sample"]["prime"] = PARAMS_PRIME
        p["download"]["url"] = hostile_url
    edit_params(dvc_repo, edit)
    out = run(["dvc", "repro"], dvc_repo)
    assert {"validate", "download", "sample", "report"} <= stages_run(out), out
    assert yaml.safe_load((dvc_repo / "params.yaml").read_text())["sample"]["prime"] == \
        PARAMS_PRIME
    samples = sorted((dvc_repo / "samples").glob("*.txt"))
    assert [p.stem for p in samples] == ["ngram2", "rnn", "rnn3"]
    for path in samples:
        assert path.read_bytes().decode().startswith(PARAMS_PRIME), path  # \r\n kept
    assert (dvc_repo / "data/raw/corpus.txt").read_bytes() == CORPUS_TEXT.encode()
    assert _markers(dvc_repo) == []
    assert _files_holding(dvc_repo, SECRET) == []


@pytest.mark.slow
def test_a_profile_sets_hostile_data_verbatim_through_dvc_exp_run(dvc_repo: Path,
                                                                  tmp_path: Path) -> None:
    """`charlab profile` with a prime of shell metacharacters, quotes, backslashes (one
    before a quote, one alone), `$HOME`, newlines and a tab: `dvc exp run` writes the very
    string into params.yaml (a lone backslash was doubled) and every sample starts with it;
    no command runs."""
    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump({"sample": {"prime": PROFILE_PRIME}}, allow_unicode=True))
    out = run(["charlab", "profile", str(prof)], dvc_repo)
    assert "Traceback" not in out, out
    assert yaml.safe_load((dvc_repo / "params.yaml").read_text())["sample"]["prime"] == \
        PROFILE_PRIME
    for path in sorted((dvc_repo / "samples").glob("*.txt")):
        assert path.read_bytes().decode().startswith(PROFILE_PRIME), path
    assert _markers(dvc_repo) == []
