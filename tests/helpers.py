"""Helpers several test files share: run a stage as dvc.yaml writes it, in this process or
a real one, and check what a user sees (one `error:` line) and what is left on disk."""

from __future__ import annotations

import hashlib
import os
import pickle
import runpy
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from charlab.checkpoint import CHECKPOINT_FORMAT, FORMAT_VERSION
from charlab.training.distributed import SINGLE, World
from charlab.training.loop import TrainResult, train
from charlab.training.plan import make_plan, run_paths

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
# the encoded corpus as the pipeline lays it out: Corpus.load(*(ws / p for p in ENCODED))
ENCODED = ("data/encoded/vocab.json", "data/encoded/corpus.bin", "data/encoded/split.json")


def stage_argv(stage: str, key: str = "rnn", item: dict | None = None) -> list[str]:
    """The stage's command line exactly as dvc.yaml writes it (without `python`), for the
    foreach entry ``key`` whose values are ``item`` (a fine-tune's ``init_from``)."""
    entry = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    cmd = entry["do"]["cmd"] if "foreach" in entry else entry["cmd"]
    for name, value in (item or {}).items():
        cmd = cmd.replace("${item." + name + "}", str(value))
    argv = shlex.split(cmd.replace("${key}", key))
    assert argv[0] == "python"
    return argv[1:]


def run_stage(ws: Path, stage: str, capsys: pytest.CaptureFixture | None = None,
              key: str = "rnn", item: dict | None = None) -> tuple[int, str, str]:
    """Run a stage script in this process, in ``ws``; (exit code, stdout, stderr)."""
    script, *args = stage_argv(stage, key, item)
    cwd, argv, threads = os.getcwd(), sys.argv, torch.get_num_threads()
    os.chdir(ws)
    sys.argv = [script, *args]
    try:
        runpy.run_path(str(REPO / script), run_name="__main__")
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        os.chdir(cwd)
        sys.argv = argv
        torch.set_num_threads(threads)  # sample/evaluate set it for their process
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return code, out, err


def one_line_error(err: str) -> str:
    """The single `error: ...` line a user error prints; no traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: equal snapshots mean nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def temp_leftovers(root: Path) -> list[str]:
    """Temp files an atomic write left behind (charlab.io names them ``.<name>.*.tmp``)."""
    return [str(p) for p in root.rglob(".*.tmp")]


# --- nodes an output path may name (test_io, test_arpa, test_analysis)

def make_node(path: Path, kind: str) -> None:
    """A FIFO, a character device (the numbers of /dev/null, made in tmp_path: the real one
    is never at risk), a directory, or symlinks to them; skips where mknod is not allowed."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "char-device":
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("mknod of a character device needs root (CAP_MKNOD)")
    elif kind == "directory":
        path.mkdir()
    elif kind == "link-loop":
        os.symlink(path.name, path)
    else:  # link-to-<kind>: a relative symlink to a node of that kind
        target = path.with_name("target")
        make_node(target, kind.removeprefix("link-to-"))
        os.symlink("target", path)


def node_kind(path: Path) -> str:
    mode = os.lstat(path).st_mode
    return ("link" if stat.S_ISLNK(mode) else "fifo" if stat.S_ISFIFO(mode) else
            "char" if stat.S_ISCHR(mode) else "dir" if stat.S_ISDIR(mode) else "file")


def edit_params(ws: Path, edit: dict) -> None:
    """Update params.yaml in ``ws``: {section: {key: value}}, train entries by model name."""
    path = ws / "params.yaml"
    p = yaml.safe_load(path.read_text())
    for section, values in edit.items():
        if section == "train":
            for name, entry in values.items():
                p["train"][name].update(entry)
        else:
            p[section].update(values)
    path.write_text(yaml.safe_dump(p, sort_keys=False, allow_unicode=True))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until ``proc`` creates ``path``; fail at once if it exits first."""
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


# --- a file whose unpickling runs code (test_checkpoint, test_security)

class Payload:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def write_malicious(path: Path, marker: Path, kind: str) -> None:
    if kind == "pickle":  # a bare pickle, the pre-zip torch format
        path.write_bytes(pickle.dumps({"format": CHECKPOINT_FORMAT, "model": Payload(marker)}))
    elif kind == "torch-zip":  # a real torch file whose data.pkl runs code
        torch.save({"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION,
                    "model": Payload(marker)}, path)
    else:  # an .npz whose object array is a pickle
        np.savez(path, format=np.array([Payload(marker)], dtype=object))


def train_entry(cfg, corpus, checkpoint_path, curve_path, *, name: str = "m",
                section: str = "train", state_path=None, run_info_path=None, init_path=None,
                world: World = SINGLE, progress: bool | None = False,
                on_step=None) -> TrainResult:
    """Train ``cfg`` on ``corpus`` as the stage does: the plan built at the edge (every check
    with key path ``<section>.<name>``), then the loop."""
    plan = make_plan(cfg, f"{section}.{name}",
                     run_paths(checkpoint_path, curve_path, run_info=run_info_path,
                               state=state_path, init=init_path),
                     train_chars=len(corpus.split("train")), world=world, progress=progress,
                     on_step=on_step)
    return train(plan, corpus)
