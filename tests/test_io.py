"""Atomic writes: what a failed write leaves, and that its message says so truthfully; a
full disk and a kernel file size limit in every stage that writes."""

from __future__ import annotations

import builtins
import errno
import io
import os
import re
import resource
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import make_text, tiny_params
from helpers import (
    ENCODED,
    PY,
    REPO,
    edit_params,
    make_node,
    node_kind,
    one_line_error,
    run_stage,
    snapshot,
    stage_argv,
    temp_leftovers,
    train_entry,
)

from charlab.corpus import download
from charlab.encoding import Corpus, encode_corpus
from charlab.evaluate import evaluate, write_metrics
from charlab.io import OutputError, atomic_path, atomic_paths, check_output, write_text
from charlab.ngram import NGramLM

FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
DVC_NOTE = (r"dvc repro deletes a stage's outputs before running it; `dvc checkout <path>` "
            r"restores a cached one, docs/errors.md says how to restore the others")


def _fill(tmp: Path) -> None:
    tmp.write_text("half")
    raise FULL


@pytest.mark.parametrize("previous,under_dvc,message", [
    ([True], False, r"^{a}: cannot write: No space left on device \(not replaced; the previous "
                    r"file is unchanged\)$"),
    # what `dvc repro` leaves: DVC deleted the output before the stage ran (DVC tells the
    # command so: DVC_STAGE is set in its environment)
    ([False], True, r"^{a}: cannot write: No space left on device \(nothing written; there "
                    r"was no previous file: " + DVC_NOTE + r"\)$"),
    # a stage or library call run by hand: nothing deleted the file, and none is blamed
    ([False], False, r"^{a}: cannot write: No space left on device \(nothing written; there "
                     r"was no previous file\)$"),
    ([True, True], False, r"^{a}, {b}: cannot write: No space left on device \(none replaced; "
                          r"the previous files are unchanged\)$"),
    ([False, False], True, r"^{a}, {b}: cannot write: .*\(nothing written; there was no "
                           r"previous file: " + DVC_NOTE + r"\)$"),
    ([True, False], True, r"^{a}, {b}: cannot write: .*\(none replaced; the previous {a} "
                          r"unchanged, no previous {b}: " + DVC_NOTE + r"\)$"),
    ([True, False], False, r"^{a}, {b}: cannot write: .*\(none replaced; the previous {a} "
                           r"unchanged, no previous {b}\)$"),
], ids=["one-kept", "one-deleted-by-dvc", "one-new-by-hand", "two-kept", "two-deleted",
        "one-of-two-deleted", "one-of-two-new-by-hand"])
def test_disk_full_message_says_what_is_really_left(tmp_path: Path, monkeypatch,
                                                     previous: list[bool], under_dvc: bool,
                                                     message: str) -> None:
    if under_dvc:
        monkeypatch.setenv("DVC_STAGE", "encode")
    else:
        monkeypatch.delenv("DVC_STAGE", raising=False)
    targets = [tmp_path / name for name in ("a.csv", "b.json")[: len(previous)]]
    for path, there in zip(targets, previous, strict=True):
        if there:
            path.write_text("previous")
    with pytest.raises(OutputError) as e:
        if len(targets) == 1:
            with atomic_path(targets[0]) as tmp:
                _fill(tmp)
        else:
            with atomic_paths(*targets) as temps:
                temps[0].write_text("new")
                _fill(temps[1])
    names = {"a": re.escape(str(targets[0])), "b": re.escape(str(targets[-1]))}
    assert re.search(message.format(**names), str(e.value)), str(e.value)
    for path, there in zip(targets, previous, strict=True):
        assert path.exists() == there
        if there:
            assert path.read_text() == "previous"
    # no temporary file is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p, there in zip(targets, previous, strict=True) if there)


# --- disk full and file size limits: the previous outputs stay whole

class _FillingFile:
    """A file that takes ``budget['left']`` more bytes, then fails with ENOSPC mid-write."""

    def __init__(self, f: Any, budget: dict[str, int]) -> None:
        self._f, self._budget = f, budget

    def write(self, data: Any) -> int:
        if not isinstance(data, str):
            data = memoryview(data).cast("B")
        left = self._budget["left"]
        if len(data) > left:
            self._f.write(data[:left])
            self._budget["left"] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget["left"] -= len(data)
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __iter__(self) -> Iterator:
        return iter(self._f)

    def __enter__(self) -> _FillingFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()


@pytest.fixture
def disk_full(monkeypatch) -> Callable[[int], None]:
    """``disk_full(n)``: from now on, temp outputs (``.<name>.*.tmp``) get ``n`` more bytes in
    all before a write fails with ENOSPC; ``torch.save`` writes half a file, then fails."""
    real_open = builtins.open
    real_save = torch.save
    budget = {"left": 0}

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(file, mode, *args, **kwargs)
        is_path = isinstance(file, (str, os.PathLike))
        if is_path and set(mode) & set("wax") and re.fullmatch(r"\..+\.tmp",
                                                                os.path.basename(file)):
            return _FillingFile(f, budget)
        return f

    def fake_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if not isinstance(f, (str, os.PathLike)):  # an open (filling) file: it fails alone
            real_save(obj, f, *args, **kwargs)
            return
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        with real_open(f, "wb") as fh:
            fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fill(n: int) -> None:
        budget["left"] = n
        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(torch, "save", fake_save)

    return fill


NO_SPACE = (r"cannot write: No space left on device \((not replaced; the previous file is "
            r"unchanged|none replaced; the previous files are unchanged)\)$")


@pytest.mark.parametrize("budget", [100, 6050], ids=["in-tokens", "in-manifest"])
def test_disk_full_while_encoding(pipeline_ws: Path, disk_full, monkeypatch, budget: int) -> None:
    # 100 bytes: the token file fails; 6050: the tokens fit, the vocab or manifest does not
    (pipeline_ws / "data/raw/corpus.txt").write_text(make_text(6000, seed=11), encoding="utf-8")
    before = snapshot(pipeline_ws)
    monkeypatch.chdir(pipeline_ws)
    disk_full(budget)
    with pytest.raises(OutputError, match=r"^data/encoded/corpus\.bin, data/encoded/vocab\.json, "
                                          r"data/encoded/split\.json: " + NO_SPACE):
        encode_corpus("data/raw/corpus.txt", *ENCODED, val_fraction=0.05, test_fraction=0.05)
    assert snapshot(pipeline_ws) == before  # all three outputs are the previous ones, no temp files


def test_disk_full_in_the_encode_stage_is_one_line(pipeline_ws: Path, capsys, disk_full) -> None:
    (pipeline_ws / "data/raw/corpus.txt").write_text(make_text(6000, seed=11), encoding="utf-8")
    before = snapshot(pipeline_ws)
    disk_full(100)
    code, _, err = run_stage(pipeline_ws, "encode", capsys)
    assert code == 2
    assert re.fullmatch(r"error: data/encoded/corpus\.bin, data/encoded/vocab\.json, "
                        r"data/encoded/split\.json: " + NO_SPACE, one_line_error(err))
    assert snapshot(pipeline_ws) == before


@pytest.mark.parametrize("what,budget", [("download", 1000), ("ngram", 1000),
                                         ("metrics", 300), ("checkpoint", 0)])
def test_disk_full_leaves_the_previous_output(pipeline_ws: Path, disk_full, http_server,
                                              monkeypatch, what: str, budget: int) -> None:
    before = snapshot(pipeline_ws)
    corpus = Corpus.load(*(pipeline_ws / p for p in ENCODED))
    monkeypatch.chdir(pipeline_ws)
    http_server.put("input.txt", make_text(3000, seed=5).encode())
    disk_full(budget)  # metrics: the csv fits, the json does not
    with pytest.raises(OutputError, match=NO_SPACE):
        if what == "download":
            download(http_server.url(), "data/raw/corpus.txt", retries=3, backoff=0.01)
        elif what == "ngram":
            NGramLM.fit(corpus.split("train"), corpus.vocab.size, 4).save(
                "models/ngram/ngram2.npz", corpus.vocab)
        elif what == "metrics":
            models = {"ngram2": NGramLM.load("models/ngram/ngram2.npz", corpus.vocab)}
            write_metrics(evaluate(models, corpus), "metrics/metrics.csv",
                          "metrics/metrics.json", "metrics/test_bpc.csv")
        else:
            train_entry(tiny_params(seed=99), corpus, checkpoint_path="models/rnn.pt",
                        curve_path="metrics/train/rnn.csv", name="rnn", progress=False)
    if what == "download":
        assert http_server.requests == 1  # a full disk is not a network fault: no retry
    if what == "checkpoint":  # a fresh run drops the old resume state; the rest stays
        before.pop("models/rnn.pt.state")
    assert snapshot(pipeline_ws) == before


def test_disk_full_in_the_sample_stage(pipeline_ws: Path, capsys, disk_full) -> None:
    edit_params(pipeline_ws, {"sample": {"seed": 5, "length": 2000}})
    before = snapshot(pipeline_ws)
    disk_full(3000)  # the first sample file fits, the second does not
    code, _, err = run_stage(pipeline_ws, "sample", capsys)
    assert code == 2
    assert re.fullmatch(r"error: samples/ngram2\.txt, samples/rnn\.txt: " + NO_SPACE,
                        one_line_error(err))
    assert snapshot(pipeline_ws) == before  # neither sample replaced


def _limit_file_size(nbytes: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.RLIM_INFINITY))
    return preexec


def test_file_size_limit_in_a_real_encode_process(pipeline_ws: Path) -> None:
    """The kernel refuses a write mid-file (RLIMIT_FSIZE: EFBIG), no monkeypatching."""
    (pipeline_ws / "data/raw/corpus.txt").write_text(make_text(20_000, seed=12), encoding="utf-8")
    before = snapshot(pipeline_ws)
    script, *args = stage_argv("encode")
    proc = subprocess.run([PY, str(REPO / script), *args], cwd=pipeline_ws, capture_output=True,
                          text=True, timeout=60, preexec_fn=_limit_file_size(8192))
    assert proc.returncode == 2
    assert re.fullmatch(r"error: data/encoded/corpus\.bin, data/encoded/vocab\.json, "
                        r"data/encoded/split\.json: cannot write: File too large \(none "
                        r"replaced; the previous files are unchanged\)",
                        one_line_error(proc.stderr))
    assert snapshot(pipeline_ws) == before


def test_file_size_limit_in_a_real_train_process(pipeline_ws: Path) -> None:
    edit_params(pipeline_ws, {"train": {"rnn": {"seed": 7}}})
    before = (pipeline_ws / "models/rnn.pt").read_bytes()
    script, *args = stage_argv("train")
    proc = subprocess.run([PY, str(REPO / script), *args], cwd=pipeline_ws, capture_output=True,
                          text=True, timeout=120, preexec_fn=_limit_file_size(1024))
    assert proc.returncode == 2, proc.stderr
    assert re.fullmatch(r"error: models/rnn\.pt: cannot write: File too large \(not "
                        r"replaced; .*\)", one_line_error(proc.stderr))
    assert (pipeline_ws / "models/rnn.pt").read_bytes() == before
    assert temp_leftovers(pipeline_ws) == []


# --- an output path is written to, never replaced by something of another kind

NOT_A_FILE = {
    "fifo": r"is a FIFO \(named pipe\), not a regular file",
    "char-device": r"is a character device, not a regular file",
    "directory": r"is a directory, not a regular file",
    "link-to-fifo": r"\(a link to .*target\): is a FIFO \(named pipe\), not a regular file",
    "link-to-char-device": r"\(a link to .*target\): is a character device, not a regular file",
    "link-loop": r"cannot write there: Too many levels of symbolic links",
}


@pytest.mark.parametrize("kind", list(NOT_A_FILE))
@pytest.mark.parametrize("how", ["write_text", "atomic_paths"])
def test_an_output_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str,
                                                         how: str) -> None:
    """Before issue 20 each of these was replaced by a regular file (as root, /dev/null
    became one). Now one line, and the node and its directory are as they were."""
    out = tmp_path / "out"
    make_node(out, kind)
    before = {p.name: node_kind(p) for p in tmp_path.iterdir()}
    with pytest.raises(OutputError, match=rf"^{re.escape(str(out))}( |: ){NOT_A_FILE[kind]}"):
        if how == "write_text":
            write_text(out, "x")
        else:  # one of a set: the other output is not written either
            with atomic_paths(tmp_path / "other.txt", out) as temps:
                for tmp in temps:
                    tmp.write_text("x")
    assert {p.name: node_kind(p) for p in tmp_path.iterdir()} == before
    assert check_output_error(out) is not None


def check_output_error(path: Path) -> str | None:
    try:
        check_output(path)
    except OutputError as e:
        return str(e)
    return None


@pytest.mark.parametrize("link", ["relative", "absolute", "chain", "dangling"])
def test_a_symlink_output_writes_its_target(tmp_path: Path, link: str) -> None:
    """The target gets the new file, atomically (temp beside the target, then renamed);
    the link stays a link; no temp file is left in either directory."""
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "real.txt"
    if link != "dangling":
        target.write_text("previous")
    out = tmp_path / "out.txt"
    if link == "absolute":
        os.symlink(target, out)
    elif link == "chain":
        os.symlink("data/real.txt", tmp_path / "mid")
        os.symlink("mid", out)
    else:
        os.symlink("data/real.txt", out)
    assert check_output_error(out) is None
    write_text(out, "new")
    assert out.is_symlink() and target.read_text() == "new"
    assert node_kind(target) == "file"
    assert temp_leftovers(tmp_path) == []


def test_a_user_named_output_needs_its_directory(tmp_path: Path) -> None:
    """check_output (the CLI's outputs, before any work) refuses a missing directory or a
    path through a file; the stages' own writes still create their output directories,
    which DVC removes before running a stage."""
    missing = tmp_path / "no" / "such" / "x.arpa"
    assert check_output_error(missing) == (f"{missing}: {missing.parent}: no such directory; "
                                           "create it first, or give another path")
    (tmp_path / "f").write_text("a file")
    assert "Not a directory" in check_output_error(tmp_path / "f" / "x.arpa")
    dangling = tmp_path / "link.arpa"
    os.symlink("gone/x.arpa", dangling)
    assert "gone: no such directory" in check_output_error(dangling)
    assert not (tmp_path / "no").exists() and not (tmp_path / "gone").exists()
    write_text(missing, "a stage output")  # atomic writes create the directory
    assert missing.read_text() == "a stage output"


def test_a_stage_creates_the_output_directory_dvc_removed(pipeline_ws: Path, capsys) -> None:
    """DVC deletes a stage's output directory (samples/) before running it: the stage's
    own writes still create it (only the CLI's user-named outputs refuse a missing one)."""
    import shutil

    before = snapshot(pipeline_ws / "samples")
    shutil.rmtree(pipeline_ws / "samples")
    assert run_stage(pipeline_ws, "sample", capsys)[0] == 0
    assert snapshot(pipeline_ws / "samples") == before


def _stale(directory: Path, name: str, size: int = 0) -> Path:
    path = directory / name
    path.write_bytes(b"\0" * size)
    return path


def test_a_write_removes_the_stale_temp_files_of_its_own_outputs(tmp_path: Path) -> None:
    """What a kill -9 in the middle of a write left (``.<name>.XXXXXXXX.tmp``, the pattern
    of mkstemp) goes at the next write of that output. Kept: a temp file a live writer
    holds, the temps of other outputs (also ``.a.csv.state.…``) and files that only look
    alike."""
    stale = [_stale(tmp_path, ".a.csv.k9x2ab3d.tmp", 1 << 20),
             _stale(tmp_path, ".a.csv.0_zz1x2y.tmp")]
    kept = [_stale(tmp_path, n) for n in (".b.csv.k9x2ab3d.tmp", ".a.csv.state.k9x2ab3d.tmp",
                                          ".a.csv.short.tmp", "a.csv.k9x2ab3d.tmp",
                                          ".a.csv.K9X2AB3D.tmp")]
    live = _stale(tmp_path, ".a.csv.livelive.tmp")
    fd = os.open(live, os.O_RDONLY)  # as a writer in another process holds its temp
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        write_text(tmp_path / "a.csv", "new")
        assert (tmp_path / "a.csv").read_text() == "new"
        assert not any(p.exists() for p in stale)
        assert all(p.exists() for p in [*kept, live])
    finally:
        os.close(fd)
    write_text(tmp_path / "a.csv", "again")  # its writer is gone: now it is stale
    assert not live.exists() and all(p.exists() for p in kept)


# --- YAML: a key given twice is refused, as DVC refuses it

@pytest.mark.parametrize("text,key,line,first", [
    ("train:\n  rnn:\n    lr: 0.1\n    lr: 0.2\n", "train.rnn.lr", 4, 3),
    ("download:\n  url: a.txt\nencode: {}\ndownload:\n  url: b.txt\n", "download", 4, 1),
    ("analyze:\n  pairs:\n  - {a: 1, a: 2}\n", r"analyze.pairs\[0\].a", 3, 3),
], ids=["nested", "section", "in-a-list"])
def test_a_duplicate_key_in_params_is_refused(tmp_path: Path, text: str, key: str, line: int,
                                              first: int) -> None:
    """PyYAML keeps the last value silently; DVC refuses the file. charlab's params.load
    (validate and every stage) now refuses it too, naming the file, the key and its line."""
    from charlab.params.core import ParamsError, load

    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as e:
        load(path)
    assert re.fullmatch(rf"{re.escape(str(path))}: not valid YAML: found duplicate key {key} "
                        rf"\(first at line {first}; DVC refuses such a file too\) in "
                        rf"\"{re.escape(str(path))}\", line {line}, column \d+", str(e.value))


def test_the_validate_stage_refuses_a_duplicate_key(tmp_path: Path, capsys) -> None:
    text = (REPO / "params.yaml").read_text()
    assert "\nsample:\n" in text
    (tmp_path / "params.yaml").write_text(text.replace("\nsample:\n", "\nsample:\n  seed: 1\n"
                                                                      "  seed: 2\n", 1))
    code, _, err = run_stage(tmp_path, "validate", capsys)
    assert code == 2
    assert re.fullmatch(r"error: params\.yaml: not valid YAML: found duplicate key sample\.seed "
                        r"\(first at line \d+; DVC refuses such a file too\) in \"params\.yaml\", "
                        r"line \d+, column 3", one_line_error(err))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_yaml_without_duplicates_reads_as_safe_load_does(tmp_path: Path) -> None:
    """Merge keys may be overridden, anchors repeat a node, the same key in two mappings is
    no duplicate; and the default params.yaml reads the same."""
    from charlab.io import read_yaml

    text = "base: &b {lr: 1, seed: 2}\nx:\n  <<: *b\n  lr: 3\ny: *b\nz: {lr: 1}\n"
    (tmp_path / "p.yaml").write_text(text)
    assert read_yaml(tmp_path / "p.yaml") == yaml.safe_load(text)
    assert read_yaml(REPO / "params.yaml") == yaml.safe_load((REPO / "params.yaml").read_text())
