"""Fault injection: bad params, broken downloads and corpora, missing GPUs, diverging and
killed training, hostile checkpoints, unknown characters, full disks, concurrent `dvc repro`.

Every case asserts what the user sees (one line, exit code 2, the key path / file / byte
offset / step) and that nothing is lost or half-written. docs/errors.md lists each case with
its message and the test here that proves it.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import errno
import hashlib
import http.server
import io
import json
import os
import pickle
import random
import re
import resource
import runpy
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, make_text

from charlab import params
from charlab.checkpoint import (
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
)
from charlab.checkpoint import save as save_checkpoint
from charlab.cli import main as cli_main
from charlab.corpus import DownloadError, download
from charlab.encoding import Corpus, CorpusError, Vocab, encode_corpus
from charlab.errors import CharlabError
from charlab.evaluate import evaluate, write_metrics
from charlab.io import OutputError
from charlab.models import load_model
from charlab.ngram import NGramFileError, NGramLM
from charlab.params import ParamsError, TrainParams, check_train_split, parse
from charlab.runtime import (
    DeviceError,
    resolve_device,
)
from charlab.train import (
    TrainingDiverged,
    TrainingError,
    train,
)

PY = sys.executable
ENCODED = ("data/encoded/vocab.json", "data/encoded/corpus.bin", "data/encoded/split.json")
TINY = {"cell": "rnn", "layers": 1, "hidden_size": 8, "dropout": 0.0, "batch_size": 2,
        "seq_length": 8, "lr": 0.01, "max_steps": 4, "eval_every": 2, "seed": 1,
        "device": "cpu", "threads": 1, "warmup_steps": 0}
OOV = "Ω☃"  # never in make_text's corpora


# --- helpers -------------------------------------------------------------------------------

def stage_argv(stage: str, key: str = "rnn") -> list[str]:
    """The stage's command line exactly as dvc.yaml writes it (without `python`)."""
    entry = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    cmd = entry["do"]["cmd"] if "foreach" in entry else entry["cmd"]
    argv = shlex.split(cmd.replace("${key}", key))
    assert argv[0] == "python"
    return argv[1:]


def run_stage(ws: Path, stage: str, capsys: pytest.CaptureFixture | None = None
              ) -> tuple[int, str, str]:
    """Run a stage script in this process, in ``ws``; (exit code, stdout, stderr)."""
    script, *args = stage_argv(stage)
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
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def temp_leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob(".*.tmp")]


def edit_params(ws: Path, edit: dict) -> None:
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


def tiny_cfg(**kw: Any) -> TrainParams:
    return parse(TrainParams, {**TINY, **kw}, "train.m")


# --- a small workspace, built once: every stage's outputs, as the pipeline lays them out --

@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("built")
    (ws / "source.txt").write_text(make_text(6000, seed=3), encoding="utf-8")
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["download"].update(url="source.txt", sha256=None)
    p["ngram"]["orders"] = [2]
    p["train"] = {"rnn": dict(TINY)}
    p["sample"]["length"] = 20
    p["evaluate"].update(device="cpu", threads=1)
    (ws / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    for stage in ("validate", "download", "encode", "ngram", "train", "sample", "evaluate"):
        assert run_stage(ws, stage)[0] == 0, stage
    return ws


@pytest.fixture
def ws(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built workspace."""
    dest = tmp_path / "ws"
    shutil.copytree(built, dest)
    return dest


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has no CUDA and no MPS, whatever it really has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None:
        monkeypatch.setattr(mps, "is_available", lambda: False)


# === params: validated before any work, one line naming the key path =======================
# (unknown key, wrong type, range and cell/device checks of train entries are in test_params)

@pytest.mark.parametrize("text,message", [
    (b"x: !!python/object/apply:os.system ['touch pwned']\n",
     r"^error: params\.yaml: not valid YAML: could not determine a constructor for the tag "
     r"'tag:yaml\.org,2002:python/object/apply:os\.system' in \"params\.yaml\", line 1, "
     r"column 4$"),
    (b"train:\n  rnn: [1, 2\n", r"^error: params\.yaml: not valid YAML: while parsing a flow "
                               r"sequence in \"params\.yaml\", line 2, column 8 .*line 3"),
    (b"sample:\n  prime: \"\xff\"\n", r"^error: params\.yaml: not valid YAML: 'utf-8' codec "
                                    r"can't decode byte 0xff"),
], ids=["python-tag", "syntax", "not-utf8"])
def test_bad_yaml_is_one_line(ws: Path, capsys, text: bytes, message: str) -> None:
    (ws / "params.yaml").write_bytes(text)
    before = snapshot(ws)
    code, _, err = run_stage(ws, "sample", capsys)
    assert code == 2
    assert re.search(message, one_line_error(err))
    assert snapshot(ws) == before
    assert not (ws / "pwned").exists()


@pytest.mark.parametrize("name,raw,message", [
    ("download", {"url": 5}, r"^download\.url: must be a string, got 5$"),
    ("download", {"url": "x", "timeout": 0}, r"^download\.timeout: must be > 0, got 0\.0$"),
    ("download", {"url": "x", "retries": -1}, r"^download\.retries: must be >= 0, got -1$"),
    ("download", {"url": "x", "sha": "0"},
     r"^download\.sha: unknown key; allowed keys: url, sha256, timeout, retries$"),
    ("encode", {"test_fraction": 1.5}, r"^encode\.test_fraction: must be in \[0, 1\), got 1\.5$"),
    ("encode", {"val_fraction": 0.6, "test_fraction": 0.45},
     r"^encode\.val_fraction \+ encode\.test_fraction: must sum to < 1 .*got 0\.6 \+ 0\.45$"),
    ("ngram", {"discount": 1.0}, r"^ngram\.discount: must be in \[0\.001, 1\) or null, got "
                                 r"1\.0$"),
    ("sample", {"temperature": -1}, r"^sample\.temperature: must be >= 0, got -1\.0$"),
    ("sample", {"prime": 5}, r"^sample\.prime: must be a string, got 5$"),
    ("evaluate", {"device": "gpu"},
     r"^evaluate\.device: must be one of 'auto', 'cpu', 'cuda', 'mps', got 'gpu'$"),
    ("evaluate", 5, r"^evaluate: must be a mapping of keys to values, got 5$"),
], ids=["download.url-type", "download.timeout", "download.retries", "download-unknown-key",
        "encode.test_fraction", "encode-sum-over-1", "ngram.discount", "sample.temperature",
        "sample.prime-type", "evaluate.device", "evaluate-not-a-mapping"])
def test_params_section_errors_name_the_key(name: str, raw: Any, message: str) -> None:
    cls = {"download": params.DownloadParams, "encode": params.EncodeParams,
           "ngram": params.NgramParams, "sample": params.SampleParams,
           "evaluate": params.EvaluateParams}[name]
    with pytest.raises(ParamsError, match=message):
        params.section({name: raw}, name, cls)


def test_params_missing_section() -> None:
    with pytest.raises(ParamsError, match=r"^encode: section missing from params$"):
        params.section({"ecnode": {}}, "encode", params.EncodeParams)


@pytest.mark.parametrize("key,value,message", [
    ("layers", 0, r"^train\.m\.layers: must be > 0, got 0$"),
    ("seq_length", 0, r"^train\.m\.seq_length: must be > 0, got 0$"),
    ("batch_size", 1.0, r"^train\.m\.batch_size: must be an integer, got 1\.0$"),
    ("max_steps", -3, r"^train\.m\.max_steps: must be > 0, got -3$"),
    ("grad_clip", -1, r"^train\.m\.grad_clip: must be >= 0, got -1\.0$"),
    ("seed", "x", r"^train\.m\.seed: must be an integer, got 'x'$"),
    ("lr_schedule", "step", r"^train\.m\.lr_schedule: must be one of 'constant', 'cosine'"),
    ("checkpoint_every", -1, r"^train\.m\.checkpoint_every: must be >= 0, got -1$"),
], ids=["layers", "seq_length", "batch_size", "max_steps", "grad_clip", "seed", "lr_schedule",
        "checkpoint_every"])
def test_train_entry_range_errors(key: str, value: Any, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        tiny_cfg(**{key: value})


@pytest.mark.parametrize("seq_length,batch_size,n_train,message", [
    (100, 1, 50, r"^train\.m\.seq_length: 100 is too long for the train split of 50 "
                 r"characters \(each step reads seq_length \+ 1 = 101\); use at most 49"),
    (100, 1, 100, r"^train\.m\.seq_length: 100 is too long"),
    (10, 64, 500, r"^train\.m\.batch_size: 64 streams of seq_length \+ 1 = 11 characters "
                  r"need 704, the train split has 500; use batch_size <= 45"),
], ids=["seq-over-split", "seq-equals-split", "batch-over-split"])
def test_seq_length_or_batch_longer_than_the_split(seq_length: int, batch_size: int,
                                                   n_train: int, message: str) -> None:
    cfg = tiny_cfg(seq_length=seq_length, batch_size=batch_size)
    with pytest.raises(ParamsError, match=message):
        check_train_split(cfg, "m", n_train)
    check_train_split(cfg, "m", batch_size * (seq_length + 1))  # exactly enough: fine


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
def test_stage_rejects_bad_params_before_any_work(ws: Path, capsys, no_gpu, stage: str,
                                                  edit: dict, message: str) -> None:
    edit_params(ws, edit)
    before = snapshot(ws)
    code, _, err = run_stage(ws, stage, capsys)
    assert code == 2
    assert re.search(message, one_line_error(err))
    assert snapshot(ws) == before  # nothing written, nothing deleted


# === download faults: a real HTTP server on 127.0.0.1 =======================================

GOOD = make_text(3000, seed=5).encode()


class _FaultHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        with srv.lock:  # type: ignore[attr-defined]
            srv.requests += 1  # type: ignore[attr-defined]
            script = srv.script  # type: ignore[attr-defined]
            action = script.pop(0) if len(script) > 1 else script[0]
        stop: threading.Event = srv.stop  # type: ignore[attr-defined]
        kind = action[0]
        if kind == "drop":  # close the connection without a word
            self.close_connection = True
            return
        if kind == "stall":  # accept, then say nothing
            stop.wait(3)
            self.close_connection = True
            return
        if kind == "status":
            self.send_error(action[1])
            return
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", action[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = GOOD
        if kind == "wrong":  # right length, one byte flipped
            body = GOOD[:100] + bytes([GOOD[100] ^ 1]) + GOOD[101:]
        self.send_response(200)
        self.send_header("Content-Length", str(len(GOOD)))
        self.end_headers()
        if kind in ("truncate", "stall_body"):  # Content-Length promises more than comes
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            if kind == "stall_body":
                stop.wait(3)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def fault_server() -> Iterator[http.server.ThreadingHTTPServer]:
    """``server.script``: one action per request, the last one repeating."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FaultHandler)
    server.script = [("ok",)]  # type: ignore[attr-defined]
    server.requests = 0  # type: ignore[attr-defined]
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    server.stop = threading.Event()  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}/input.txt"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("previous", [True, False], ids=["previous", "fresh"])
@pytest.mark.parametrize("action,message,attempts", [
    (("drop",), r": Remote end closed connection without response \(gave up after 2 attempts\)$",
     2),
    (("status", 503), r": HTTP 503 Service Unavailable \(gave up after 2 attempts\)$", 2),
    (("stall",), r": timed out \(gave up after 2 attempts\)$", 2),
    (("stall_body",), r": timed out \(gave up after 2 attempts\)$", 2),
    (("truncate",), r": body truncated: got 1000 of 3000 bytes \(gave up after 2 attempts\)$", 2),
    (("wrong",), r": sha256 mismatch: expected [0-9a-f]{64}, got [0-9a-f]{64} \(set download", 1),
    (("status", 403), r": HTTP 403 Forbidden$", 1),
], ids=["drop", "http503", "stall", "stall-body", "truncated", "wrong-bytes", "http403"])
def test_download_fault_leaves_no_corpus_and_the_previous_one_untouched(
        fault_server, tmp_path: Path, action: tuple, message: str, attempts: int,
        previous: bool) -> None:
    fault_server.script = [action]
    dest = tmp_path / "raw" / "corpus.txt"
    if previous:
        dest.parent.mkdir()
        dest.write_bytes(b"previous good corpus")
    with pytest.raises(DownloadError, match=message):
        download(fault_server.url, dest, sha256=sha(GOOD), timeout=0.3, retries=1,
                 backoff=0.01)
    assert fault_server.requests == attempts
    if previous:
        assert dest.read_bytes() == b"previous good corpus"
    else:
        assert not dest.exists()
    assert temp_leftovers(tmp_path) == []


def test_download_5xx_then_success_retries_with_backoff(fault_server, tmp_path: Path,
                                                        monkeypatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("charlab.corpus.time.sleep", sleeps.append)
    fault_server.script = [("status", 503), ("drop",), ("status", 502), ("ok",)]
    dest = tmp_path / "corpus.txt"
    dest.write_bytes(b"previous")
    assert download(fault_server.url, dest, sha256=sha(GOOD), retries=3, backoff=0.5) == sha(GOOD)
    assert dest.read_bytes() == GOOD
    assert sleeps == [0.5, 1.0, 2.0]  # exponential backoff between the 4 attempts
    assert fault_server.requests == 4
    assert temp_leftovers(tmp_path) == []


@pytest.mark.parametrize("target", ["ftp://127.0.0.1:9/input.txt", "file:///etc/passwd",
                                    "gopher://127.0.0.1:9/x"])
def test_download_refuses_a_redirect_to_another_scheme(fault_server, tmp_path: Path,
                                                       target: str) -> None:
    fault_server.script = [("redirect", target)]
    with pytest.raises(DownloadError, match=r"(?i)redirect.*not allowed"):
        download(fault_server.url, tmp_path / "c.txt", retries=2, backoff=0.01, timeout=2)
    assert fault_server.requests == 1  # refused, not retried
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["data:text/plain,hello", "gopher://x/", "sftp://h/x",
                                 "jar:file:///x!/y"])
def test_download_scheme_allow_list(tmp_path: Path, url: str) -> None:
    with pytest.raises(DownloadError, match=r"^download\.url: scheme '\w+' is not allowed; "
                                            r"use one of http, https, file"):
        download(url, tmp_path / "c.txt")
    assert list(tmp_path.iterdir()) == []


def test_download_stage_fault_is_one_line(ws: Path, capsys, fault_server) -> None:
    fault_server.script = [("status", 500)]
    edit_params(ws, {"download": {"url": fault_server.url, "retries": 0, "timeout": 2}})
    before = (ws / "data/raw/corpus.txt").read_bytes()
    code, _, err = run_stage(ws, "download", capsys)
    assert code == 2
    assert re.fullmatch(r"error: http://127\.0\.0\.1:\d+/input\.txt: HTTP 500 Internal Server "
                        r"Error \(gave up after 1 attempt\)", one_line_error(err))
    assert (ws / "data/raw/corpus.txt").read_bytes() == before
    assert temp_leftovers(ws) == []


# === corpus faults ============================================================================

@pytest.mark.parametrize("data,message", [
    ("héllo wörld, ".encode() + b"\xff\xfe tail",
     r"data/raw/corpus\.txt is not valid UTF-8: byte offset 15 \(0xff\): invalid start byte$"),
    ("abc€".encode()[:-1],
     r"byte offset 3 \(0xe282\): unexpected end of data$"),
    ("hello".encode("utf-16"), r"byte offset 0 \(0xff\): invalid start byte$"),
    ("café au lait".encode("latin-1"), r"byte offset 3 \(0xe9\): invalid continuation byte$"),
    (b"", r"data/raw/corpus\.txt is empty$"),
    (b"a" * 5000, r"holds a single distinct character \('a', 5000 times\): there is nothing "
                  r"for a language model to predict"),
    (b"\n" * 300, r"holds a single distinct character \('\\n', 300 times\)"),
    (b"abcdefghij" * 2, r"corpus of 20 characters leaves the val split only 1 character\(s\)"),
], ids=["bad-utf8", "cut-utf8", "utf16", "latin1", "empty", "one-char", "only-newlines",
        "too-short-for-splits"])
def test_bad_corpus_is_one_clear_line_and_keeps_previous_outputs(ws: Path, capsys, data: bytes,
                                                                 message: str) -> None:
    (ws / "data/raw/corpus.txt").write_bytes(data)
    before = snapshot(ws)
    code, _, err = run_stage(ws, "encode", capsys)
    assert code == 2
    assert re.search(message, one_line_error(err))
    assert snapshot(ws) == before


def test_corpus_shorter_than_one_batch(ws: Path, capsys) -> None:
    # 400 characters encode and fit the n-grams, but hold no batch of the lecture's size
    (ws / "data/raw/corpus.txt").write_text(make_text(400, seed=9), encoding="utf-8")
    assert run_stage(ws, "encode", capsys)[0] == 0
    assert run_stage(ws, "ngram", capsys)[0] == 0
    edit_params(ws, {"train": {"rnn": {"batch_size": 64, "seq_length": 100}}})
    (ws / "models/rnn.pt").unlink()
    code, _, err = run_stage(ws, "train", capsys)
    assert code == 2
    assert re.fullmatch(r"error: train\.rnn\.batch_size: 64 streams of seq_length \+ 1 = 101 "
                        r"characters need 6464, the train split has 360; use batch_size <= 3 "
                        r"or a shorter train\.rnn\.seq_length", one_line_error(err))
    assert not (ws / "models/rnn.pt").exists()


def test_train_library_names_the_key_path_for_a_short_split(built: Path, tmp_path: Path) -> None:
    corpus = Corpus.load(*(built / p for p in ENCODED))
    with pytest.raises(TrainingError, match=r"^train\.m\.batch_size: "):
        train(tiny_cfg(batch_size=4096), corpus, checkpoint_path=tmp_path / "m.pt",
              curve_path=tmp_path / "m.csv", name="m", progress=False)


# === devices ==================================================================================

def test_cuda_without_gpu_is_an_error_and_auto_falls_back(built: Path, tmp_path: Path,
                                                          no_gpu) -> None:
    with pytest.raises(DeviceError, match=r"^device 'cuda' requested but CUDA is not available "
                                          r"on this machine \(no GPU, or a CPU-only torch "
                                          r"build\); use device: auto or cpu$"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="Apple MPS is not available"):
        resolve_device("mps")
    assert resolve_device("auto") == torch.device("cpu")
    corpus = Corpus.load(*(built / p for p in ENCODED))
    res = train(tiny_cfg(device="auto", max_steps=2), corpus, checkpoint_path=tmp_path / "m.pt",
                curve_path=tmp_path / "m.csv", name="m", progress=False)
    assert res.device == "cpu"
    with pytest.raises(DeviceError, match="CUDA is not available"):
        train(tiny_cfg(device="cuda"), corpus, checkpoint_path=tmp_path / "c.pt",
              curve_path=tmp_path / "c.csv", name="c", progress=False)
    assert not (tmp_path / "c.pt").exists() and not (tmp_path / "c.csv").exists()


def test_cli_device_cuda_without_gpu(ws: Path, capsys, monkeypatch, no_gpu) -> None:
    monkeypatch.chdir(ws)
    with pytest.raises(SystemExit) as e:
        cli_main(["sample", "rnn", "--device", "cuda", "--length", "3"])
    assert e.value.code == 2
    assert "CUDA is not available" in one_line_error(capsys.readouterr().err)


# === training divergence ========================================================================

def poison_at(step: int, value: float) -> Callable[[int, torch.nn.Module], None]:
    def hook(k: int, model: torch.nn.Module) -> None:
        if k == step:
            with torch.no_grad():
                model.head.bias[0] = value
    return hook


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_divergence_before_any_checkpoint(built: Path, tmp_path: Path, value: float) -> None:
    corpus = Corpus.load(*(built / p for p in ENCODED))
    with pytest.raises(TrainingDiverged, match=r"^train\.m: non-finite training loss nan, "
                                               r"gradient norm nan at step 4; no checkpoint "
                                               r"was written yet"):
        train(tiny_cfg(max_steps=10, eval_every=5), corpus, checkpoint_path=tmp_path / "m.pt",
              curve_path=tmp_path / "m.csv", name="m", progress=False,
              on_step=poison_at(3, value))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-made


def test_divergence_in_the_stage_names_the_step_and_keeps_the_checkpoint(
        ws: Path, capsys, monkeypatch) -> None:
    import charlab.launch

    real = charlab.launch.train  # what the train stage calls
    monkeypatch.setattr(charlab.launch, "train",
                        lambda *a, **kw: real(*a, on_step=poison_at(5, float("nan")), **kw))
    edit_params(ws, {"train": {"rnn": {"max_steps": 8, "eval_every": 2, "seed": 2}}})
    code, _, err = run_stage(ws, "train", capsys)
    assert code == 2
    assert re.fullmatch(r"error: train\.rnn: non-finite training loss nan, gradient norm nan at "
                        r"step 6; the best checkpoint \(step 4\) is kept in models/rnn\.pt, and "
                        r"the resume state stays at the last saved step\. Lower lr or "
                        r"grad_clip, or use precision: fp32", one_line_error(err))
    model, _, info = load_checkpoint(ws / "models/rnn.pt")
    assert info["step"] == 4 and all(torch.isfinite(p).all() for p in model.parameters())
    assert temp_leftovers(ws) == []


# === interrupted training ========================================================================

KILL_DRIVER = r'''
import io, json, os, signal, sys
from pathlib import Path
import torch
from charlab.encoding import Corpus
from charlab.params import TrainParams, parse
from charlab.train import train

enc, out, kill_at, how = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cfg = parse(TrainParams, json.loads(sys.argv[5]), "train.m")
corpus = Corpus.load(enc / "vocab.json", enc / "corpus.bin", enc / "split.json")
real_save = torch.save

def dying_save(obj, f, *args, **kwargs):
    """Write half of the file, make it durable, then die: SIGKILL mid-checkpoint."""
    buf = io.BytesIO()
    real_save(obj, buf, *args, **kwargs)
    fh = f if hasattr(f, "write") else open(f, "wb")  # a path or an open file
    fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    fh.flush()
    os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

def hook(step, model):
    if step == kill_at:
        if how == "step":
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save  # the next checkpoint or resume-state write dies halfway

train(cfg, corpus, checkpoint_path=out / "m.pt", curve_path=out / "m.csv", name="m",
      progress=False, on_step=hook)
'''


def curve_losses(path: Path) -> list[tuple[str, ...]]:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    return [tuple(r[:3]) for r in rows]  # step, train_loss, val_loss (not the timings)


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_sigkill_at_seeded_steps_then_resume_equals_an_uninterrupted_run(built: Path,
                                                                         tmp_path: Path) -> None:
    cfg = dict(TINY, hidden_size=16, batch_size=4, seq_length=16, dropout=0.1, max_steps=24,
               eval_every=6, checkpoint_every=5)
    corpus = Corpus.load(*(built / p for p in ENCODED))
    straight = tmp_path / "straight"
    train(parse(TrainParams, cfg, "train.m"), corpus, checkpoint_path=straight / "m.pt",
          curve_path=straight / "m.csv", name="m", progress=False)

    rng = random.Random(20240606)
    steps = sorted(rng.sample(range(1, cfg["max_steps"]), 3))
    kills = list(zip(steps, ["step", "save", rng.choice(["step", "save"])], strict=True))
    out = tmp_path / "killed"
    out.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(KILL_DRIVER)
    enc = built / "data/encoded"
    resumed = []
    for step, how in [*kills, (-1, "none")]:
        proc = subprocess.run([PY, str(driver), str(enc), str(out), str(step), how,
                               json.dumps(cfg)], capture_output=True, text=True, timeout=120)
        resumed += [int(k) for k in re.findall(r"m: resuming from step (\d+)", proc.stdout)]
        if step < 0:
            assert proc.returncode == 0, proc.stderr
        else:
            assert proc.returncode == -signal.SIGKILL, (step, how, proc.stderr)
            # whatever was renamed into place is whole: the resume state always loads
            if (out / "m.pt.state").exists():
                torch.load(out / "m.pt.state", weights_only=True)
    assert len(resumed) >= 2 and resumed == sorted(resumed), (kills, resumed)  # it did resume
    for name in ("m.pt", "m.pt.state"):
        a, b = model_weights(straight / name), model_weights(out / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (kills, name)
    assert curve_losses(straight / "m.csv") == curve_losses(out / "m.csv")


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigint_sigterm_save_the_state_and_resume_continues(ws: Path, sig: int) -> None:
    edit_params(ws, {"train": {"rnn": {"max_steps": 1_000_000, "eval_every": 1_000_000,
                                       "checkpoint_every": 2}}})
    state = ws / "models/rnn.pt.state"
    state.unlink()
    script, *args = stage_argv("train")
    proc = subprocess.Popen([PY, str(REPO / script), *args], cwd=ws, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(state, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip() == "interrupted", err
    found = re.search(r"rnn: interrupted at step (\d+); state saved to models/rnn\.pt\.state; "
                      r"run again to resume", out)
    assert found, out
    step = int(found.group(1))
    saved = torch.load(state, weights_only=True)
    assert saved["step"] == step and not saved["complete"]
    assert temp_leftovers(ws) == []
    # continue the interrupted run, a few more steps
    corpus = Corpus.load(*(ws / p for p in ENCODED))
    cfg = params.train_models(params.load(ws / "params.yaml"))["rnn"]
    res = train(parse(TrainParams, {**dataclasses.asdict(cfg), "resume": True,
                                    "max_steps": step + 3},
                      "train.rnn"), corpus, checkpoint_path=ws / "models/rnn.pt",
                curve_path=ws / "metrics/train/rnn.csv", name="rnn", progress=False)
    assert res.resumed_from == step and res.steps == step + 3


# === hostile and mismatched checkpoints ========================================================

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


def test_the_payload_is_live(tmp_path: Path) -> None:
    """The check below means something: unpickling this file does run the code."""
    write_malicious(tmp_path / "evil.pt", tmp_path / "marker", "pickle")
    pickle.loads((tmp_path / "evil.pt").read_bytes())
    assert (tmp_path / "marker").read_text() == "pwned"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
def test_loading_a_malicious_checkpoint_never_runs_its_code(ws: Path, tmp_path: Path, capsys,
                                                            monkeypatch, kind: str) -> None:
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    write_malicious(evil, marker, kind)
    vocab = Vocab.load(ws / ENCODED[0])
    with pytest.raises(CheckpointError, match=r"evil\.pt: not a readable checkpoint"):
        load_model(evil, vocab)
    monkeypatch.chdir(ws)
    for argv in (["info", str(evil)], ["sample", str(evil), "--length", "2"]):
        with pytest.raises(SystemExit) as e:
            cli_main(argv)
        assert e.value.code == 2
        assert "not a readable checkpoint" in one_line_error(capsys.readouterr().err)
    # planted as the resume state of a training run: ignored, and training starts afresh
    shutil.copy(evil, ws / "models/rnn.pt.state")
    corpus = Corpus.load(*(ws / p for p in ENCODED))
    res = train(tiny_cfg(), corpus, checkpoint_path=ws / "models/rnn.pt",
                curve_path=ws / "metrics/train/rnn.csv", name="rnn", progress=False)
    assert res.resumed_from is None
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
def test_refusing_a_malicious_checkpoint_gives_no_unsafe_advice(tmp_path: Path,
                                                                kind: str) -> None:
    write_malicious(tmp_path / "evil.pt", tmp_path / "marker", kind)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "evil.pt")
    message = str(e.value)
    assert "weights_only" not in message and "trust" not in message, message
    assert "\x1b" not in message, message  # no terminal escapes in a one-line error


def test_malicious_ngram_file_never_runs_its_code(tmp_path: Path) -> None:
    write_malicious(tmp_path / "ngram2.npz", tmp_path / "marker", "npz")
    with pytest.raises(NGramFileError, match=r"ngram2\.npz: not a readable charlab n-gram file"):
        NGramLM.load(tmp_path / "ngram2.npz", Vocab(("a", "b")))
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("damage,message", [
    ("other_vocab", r"models/rnn\.pt: trained on a different vocabulary \(\d+ chars\) than this "
                    r"corpus \(\d+ chars; only in the corpus: 'Ω'; only in the model: 'z'\); "
                    r"retrain it"),
    ("truncated", r"models/rnn\.pt: not a readable checkpoint \(truncated, corrupted, or not "
                  r"written by charlab\)"),
    ("zeros", r"models/rnn\.pt: not a readable checkpoint"),
    ("foreign", r"models/rnn\.pt: a torch file, but not a charlab RNN checkpoint$"),
    ("ngram_as_pt", r"models/rnn\.pt: not a readable checkpoint"),
    ("version", r"models/rnn\.pt: checkpoint format version 99; this charlab reads version 2$"),
    ("bad_config", r"models/rnn\.pt: damaged charlab checkpoint: unknown model config key"),
], ids=["other-vocab", "truncated", "zeros", "foreign-torch", "ngram-as-pt", "version",
        "bad-config"])
def test_mismatched_or_damaged_checkpoint_in_the_cli(ws: Path, capsys, monkeypatch, damage: str,
                                                     message: str) -> None:
    ckpt = ws / "models/rnn.pt"
    good = ckpt.read_bytes()
    obj = torch.load(ckpt, weights_only=True)
    if damage == "other_vocab":  # same size, one character swapped
        chars = sorted((set(obj["vocab"]) - {"z"}) | {"Ω"})
        Vocab(tuple(chars)).save(ws / ENCODED[0])
        if "z" not in obj["vocab"]:
            pytest.skip("corpus has no 'z'")
    elif damage == "truncated":
        ckpt.write_bytes(good[: len(good) // 2])
    elif damage == "zeros":
        ckpt.write_bytes(bytes(len(good)))
    elif damage == "foreign":
        torch.save({"state_dict": obj["model"]}, ckpt)
    elif damage == "ngram_as_pt":
        shutil.copy(ws / "models/ngram/ngram2.npz", ckpt)
    elif damage == "version":
        torch.save({**obj, "version": 99}, ckpt)
    else:
        # resealed with its checksum, so the damage reaches the config check
        save_checkpoint({**obj, "model_config": {**obj["model_config"], "heads": 4}}, ckpt)
    monkeypatch.chdir(ws)
    with pytest.raises(SystemExit) as e:
        cli_main(["sample", "rnn", "--length", "5"])
    assert e.value.code == 2
    assert re.search(message, one_line_error(capsys.readouterr().err))


# === characters outside the vocabulary ========================================================

@pytest.mark.parametrize("argv,message", [
    (["sample", "ngram2", "--prime", f"KING{OOV}"],
     r"^error: --prime: 2 character\(s\) not in the vocabulary of \d+: 'Ω', '☃'$"),
    (["sample", "rnn", "--prime", "☃"],
     r"^error: --prime: 1 character\(s\) not in the vocabulary of \d+: '☃'$"),
    (["sample", "rnn", "--prime-file", "oov.txt"],
     r"^error: oov\.txt: 2 character\(s\) not in the vocabulary of \d+: 'Ω', '☃'$"),
    (["score", "ngram2", "oov.txt"],
     r"^error: oov\.txt: 2 character\(s\) not in the vocabulary of \d+: 'Ω', '☃'$"),
    (["score", "rnn", "oov.txt"],
     r"^error: oov\.txt: 2 character\(s\) not in the vocabulary of \d+: 'Ω', '☃'$"),
    (["ngram", "show", "kΩ", "--order", "2"],
     r"^error: history: 1 character\(s\) not in the vocabulary of \d+: 'Ω'$"),
], ids=["sample-ngram-prime", "sample-rnn-prime", "sample-prime-file", "score-ngram",
        "score-rnn", "ngram-show"])
def test_out_of_vocabulary_characters_are_named(ws: Path, capsys, monkeypatch, argv: list[str],
                                                message: str) -> None:
    (ws / "oov.txt").write_text(f"KING:\nthe king{OOV[0]} shall{OOV[1]} speak\n", encoding="utf-8")
    monkeypatch.chdir(ws)
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert re.fullmatch(message, one_line_error(err))


def test_out_of_vocabulary_in_a_real_cli_process(ws: Path) -> None:
    (ws / "oov.txt").write_text(f"the king{OOV}\n", encoding="utf-8")
    charlab = Path(PY).parent / "charlab"
    proc = subprocess.run([str(charlab), "score", "ngram2", "oov.txt"], cwd=ws,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert re.fullmatch(r"error: oov\.txt: 2 character\(s\) not in the vocabulary of \d+: "
                        r"'Ω', '☃'", one_line_error(proc.stderr))


# === disk full =================================================================================

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
def test_disk_full_while_encoding(ws: Path, disk_full, monkeypatch, budget: int) -> None:
    # 100 bytes: the token file fails; 6050: the tokens fit, the vocab or manifest does not
    (ws / "data/raw/corpus.txt").write_text(make_text(6000, seed=11), encoding="utf-8")
    before = snapshot(ws)
    monkeypatch.chdir(ws)
    disk_full(budget)
    with pytest.raises(OutputError, match=r"^data/encoded/corpus\.bin, data/encoded/vocab\.json, "
                                          r"data/encoded/split\.json: " + NO_SPACE):
        encode_corpus("data/raw/corpus.txt", *ENCODED, val_fraction=0.05, test_fraction=0.05)
    assert snapshot(ws) == before  # all three outputs are the previous ones, no temp files


def test_disk_full_in_the_encode_stage_is_one_line(ws: Path, capsys, disk_full) -> None:
    (ws / "data/raw/corpus.txt").write_text(make_text(6000, seed=11), encoding="utf-8")
    before = snapshot(ws)
    disk_full(100)
    code, _, err = run_stage(ws, "encode", capsys)
    assert code == 2
    assert re.fullmatch(r"error: data/encoded/corpus\.bin, data/encoded/vocab\.json, "
                        r"data/encoded/split\.json: " + NO_SPACE, one_line_error(err))
    assert snapshot(ws) == before


@pytest.mark.parametrize("what,budget", [("download", 1000), ("ngram", 1000),
                                         ("metrics", 300), ("checkpoint", 0)])
def test_disk_full_leaves_the_previous_output(ws: Path, disk_full, fault_server, monkeypatch,
                                              what: str, budget: int) -> None:
    before = snapshot(ws)
    corpus = Corpus.load(*(ws / p for p in ENCODED))
    monkeypatch.chdir(ws)
    disk_full(budget)  # metrics: the csv fits, the json does not
    with pytest.raises(OutputError, match=NO_SPACE):
        if what == "download":
            download(fault_server.url, "data/raw/corpus.txt", retries=3, backoff=0.01)
        elif what == "ngram":
            NGramLM.fit(corpus.split("train"), corpus.vocab.size, 4).save(
                "models/ngram/ngram2.npz", corpus.vocab)
        elif what == "metrics":
            models = {"ngram2": NGramLM.load("models/ngram/ngram2.npz", corpus.vocab)}
            write_metrics(evaluate(models, corpus), "metrics/metrics.csv",
                          "metrics/metrics.json", "metrics/test_bpc.csv")
        else:
            train(tiny_cfg(seed=99), corpus, checkpoint_path="models/rnn.pt",
                  curve_path="metrics/train/rnn.csv", name="rnn", progress=False)
    if what == "download":
        assert fault_server.requests == 1  # a full disk is not a network fault: no retry
    if what == "checkpoint":  # a fresh run drops the old resume state; the rest stays
        before.pop("models/rnn.pt.state")
    assert snapshot(ws) == before


def test_disk_full_in_the_sample_stage(ws: Path, capsys, disk_full) -> None:
    edit_params(ws, {"sample": {"seed": 5, "length": 2000}})
    before = snapshot(ws)
    disk_full(3000)  # the first sample file fits, the second does not
    code, _, err = run_stage(ws, "sample", capsys)
    assert code == 2
    assert re.fullmatch(r"error: samples/ngram2\.txt, samples/rnn\.txt: " + NO_SPACE,
                        one_line_error(err))
    assert snapshot(ws) == before  # neither sample replaced


def _limit_file_size(nbytes: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.RLIM_INFINITY))
    return preexec


def test_file_size_limit_in_a_real_encode_process(ws: Path) -> None:
    """The kernel refuses a write mid-file (RLIMIT_FSIZE: EFBIG), no monkeypatching."""
    (ws / "data/raw/corpus.txt").write_text(make_text(20_000, seed=12), encoding="utf-8")
    before = snapshot(ws)
    script, *args = stage_argv("encode")
    proc = subprocess.run([PY, str(REPO / script), *args], cwd=ws, capture_output=True, text=True,
                          timeout=60, preexec_fn=_limit_file_size(8192))
    assert proc.returncode == 2
    assert re.fullmatch(r"error: data/encoded/corpus\.bin, data/encoded/vocab\.json, "
                        r"data/encoded/split\.json: cannot write: File too large \(none "
                        r"replaced; the previous files are unchanged\)",
                        one_line_error(proc.stderr))
    assert snapshot(ws) == before


def test_file_size_limit_in_a_real_train_process(ws: Path) -> None:
    edit_params(ws, {"train": {"rnn": {"seed": 7}}})
    before = (ws / "models/rnn.pt").read_bytes()
    script, *args = stage_argv("train")
    proc = subprocess.run([PY, str(REPO / script), *args], cwd=ws, capture_output=True, text=True,
                          timeout=120, preexec_fn=_limit_file_size(1024))
    assert proc.returncode == 2, proc.stderr
    assert re.fullmatch(r"error: models/rnn\.pt: cannot write: File too large \(not "
                        r"replaced; .*\)", one_line_error(proc.stderr))
    assert (ws / "models/rnn.pt").read_bytes() == before
    assert temp_leftovers(ws) == []


# === two `dvc repro` at once =====================================================================

SLOW_STAGE = """\
import pathlib, time
pathlib.Path("started").touch()
end = time.monotonic() + 60
while not pathlib.Path("release").exists() and time.monotonic() < end:
    time.sleep(0.05)
pathlib.Path("out.txt").write_text("done\\n")
"""


def test_two_dvc_repro_at_once(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = dict(os.environ, DVC_NO_ANALYTICS="1",
               PATH=f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}")

    def dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=120)
        assert not check or proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc("init", "-q")
    dvc("config", "core.analytics", "false")
    (repo / "stage.py").write_text(SLOW_STAGE)
    (repo / "dvc.yaml").write_text("stages:\n  slow:\n    cmd: python stage.py\n"
                                   "    deps: [stage.py]\n    outs: [out.txt]\n")
    first = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(repo / "started", first)
        second = dvc("repro", check=False)
    finally:
        (repo / "release").touch()
        first_out, _ = first.communicate(timeout=120)
    assert second.returncode != 0
    assert re.search(r"is busy, it is being blocked by|Unable to acquire lock",
                     second.stdout + second.stderr), second.stdout + second.stderr
    assert first.returncode == 0, first_out
    assert (repo / "out.txt").read_text() == "done\n"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (out,) = lock["stages"]["slow"]["outs"]
    assert out["md5"] == hashlib.md5(b"done\n").hexdigest()
    assert "up to date" in dvc("status").stdout
    again = dvc("repro")  # no stale lock left behind
    assert "up to date" in again.stdout + again.stderr


# === security ====================================================================================

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
    only through safe_load, and nothing unpickles (pickle is imported only for its error
    type, to name a refused checkpoint)."""
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
    assert bad == []
    assert any(name == "torch.load" for p in SOURCES for name, _ in _calls(p))  # scan works


@pytest.mark.parametrize("name", ["../escape", "..", "a/b", "/abs", "x/../../y", "a\\b",
                                  ".hidden", "models/rnn", "~root", "a b", ""])
def test_model_names_from_params_cannot_name_a_path(name: str) -> None:
    with pytest.raises(ParamsError, match="model names must be letters, digits, _ or -"):
        params.train_models({"train": {name: {}}})


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
    for cls in (params.DownloadParams, params.EncodeParams, params.NgramParams, TrainParams,
                params.SampleParams, params.EvaluateParams):
        fields = {f for f in cls.__dataclass_fields__}
        assert not {f for f in fields if re.search(r"(^|_)(path|dir|out|file)s?($|_)", f)}, cls


def test_user_errors_are_charlab_errors() -> None:
    """Every error class a user can meet prints as one line (run_main catches CharlabError)."""
    for cls in (ParamsError, DownloadError, CorpusError, OutputError, CheckpointError,
                DeviceError, TrainingError, NGramFileError):
        assert issubclass(cls, CharlabError), cls
