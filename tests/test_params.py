import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import tiny_params
from helpers import one_line_error, run_stage, snapshot

from charlab import models
from charlab.params import core, data, readers, sections, training
from charlab.params.core import ParamsError, parse
from charlab.params.data import EncodeParams, NgramParams
from charlab.params.readers import SampleParams
from charlab.params.training import parse_entry, train_models
from charlab.training import plan
from charlab.training.plan import check_train_split

REPO = Path(__file__).resolve().parents[1]


def test_default_params_file_is_valid():
    raw = core.load(REPO / "params.yaml")
    core.section(raw, "download", data.DownloadParams)
    core.section(raw, "encode", EncodeParams)
    assert core.section(raw, "ngram", NgramParams).orders == [4, 10]
    models = train_models(raw)
    assert list(models) == ["rnn", "rnn3"]
    assert (models["rnn3"].net.layers, models["rnn3"].net.hidden_size) == (3, 512)
    assert models["rnn3"].net.dropout == 0.1
    core.section(raw, "sample", SampleParams)
    core.section(raw, "evaluate", readers.EvaluateParams)


@pytest.mark.parametrize("entry,message", [
    ({"hidden_size": -5}, r"^train\.rnn3\.hidden_size: must be > 0, got -5$"),
    ({"hidden_size": 2.5}, r"^train\.rnn3\.hidden_size: must be an integer, got 2\.5$"),
    ({"hidden_size": True}, r"^train\.rnn3\.hidden_size: must be an integer"),
    ({"cell": "transformer"}, r"^train\.rnn3\.cell: must be one of 'rnn', 'lstm', 'gru'"),
    ({"device": "tpu"}, r"^train\.rnn3\.device: must be one of 'auto', 'cpu'"),
    ({"dropout": 1.0}, r"^train\.rnn3\.dropout: must be in \[0, 1\)"),
    ({"lr": "fast"}, r"^train\.rnn3\.lr: must be a number, got 'fast'"),
    ({"hiden_size": 3}, r"^train\.rnn3\.hiden_size: unknown key; allowed keys: cell, "),
    ({"seed": -1}, r"^train\.rnn3\.seed: must be >= 0, got -1$"),
    ({"nproc": 0}, r"^train\.rnn3\.nproc: must be > 0, got 0$"),
    ({"batch_size": 6, "nproc": 4}, r"^train\.rnn3\.nproc: 4 processes must share batch_size 6 "
                                    r"evenly"),
])
def test_train_entry_errors_name_key_path(entry, message):
    with pytest.raises(ParamsError, match=message):
        train_models({"train": {"rnn3": entry}})


@pytest.mark.parametrize("raw,message", [
    ({}, r"^train: must map each model name"),
    ({"train": {"ngram4": {}}}, r"^train\.ngram4: names ngram<order> are reserved"),
    ({"train": {"a b": {}}}, r"^train\.a b: model names must be"),
    ({"train": {"x": [1, 2]}}, r"^train\.x: must be a mapping"),
])
def test_train_section_errors(raw, message):
    with pytest.raises(ParamsError, match=message):
        train_models(raw)


@pytest.mark.parametrize("cls,raw,message", [
    (EncodeParams, {"val_fraction": 0.5, "test_fraction": 0.5}, "must sum to < 1"),
    (EncodeParams, {"val_fraction": 0.0}, r"encode\.val_fraction: must be > 0"),
    (NgramParams, {"orders": []}, r"orders: must list at least one order"),
    (NgramParams, {"orders": [4, -1]}, r"orders\[1\]: must be >= 0"),
    (NgramParams, {"orders": [4, 4]}, "must not repeat"),
    (NgramParams, {"orders": [4, "x"]}, r"orders\[1\]: must be an integer"),
    (NgramParams, {"smoothing": "magic"}, "smoothing: must be one of"),
    (SampleParams, {"top_k": 0}, r"top_k: must be >= 1 or null"),
    (data.DownloadParams, {"url": "x", "sha256": "abc"}, "must be 64 hex digits"),
    (data.DownloadParams, {}, r"url: missing"),
])
def test_section_errors(cls, raw, message):
    with pytest.raises(ParamsError, match=message):
        parse(cls, raw, "encode" if cls is EncodeParams else "s")


def test_defaults_fill_missing_keys():
    cfg = parse_entry({"layers": 2}, "train.x")
    assert cfg.net.layers == 2 and cfg.cell == "rnn"
    assert parse_entry({"lr": 1}, "t").lr == 1.0  # an int is a fine float


@pytest.mark.parametrize("text,message", [
    ("a: [1, 2", "not valid YAML"),
    ("- 1\n- 2\n", "must hold a mapping of sections"),
])
def test_load_errors(tmp_path, text, message):
    f = tmp_path / "params.yaml"
    f.write_text(text)
    with pytest.raises(ParamsError, match=message):
        core.load(f)


def test_load_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        core.load(tmp_path / "nope.yaml")


def test_yaml_tags_are_not_executed(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("x: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        core.load(f)


GPT = {"cell": "gpt", "layers": 2, "heads": 4, "hidden_size": 64, "context": 32}


def test_gpt_entry_parses_and_trains_on_windows_of_context():
    cfg = train_models({"train": {"g": GPT}})["g"]
    assert (cfg.cell, cfg.net.heads, cfg.net.context) == ("gpt", 4, 32)
    assert cfg.seq_length == 32  # a GPT's batches are windows of `context` characters
    rnn = train_models({"train": {"r": {}}})["r"]
    assert not hasattr(rnn.net, "heads") and not hasattr(rnn.net, "context")
    assert rnn.init_from is None


@pytest.mark.parametrize("entry,message", [
    ({**GPT, "embedding_size": 16},
     r"^train\.g\.embedding_size: only a cell: rnn, lstm or gru entry has this key \(an RNN's "
     r"input embedding; a GPT always embeds\); this entry is cell: gpt$"),
    ({**GPT, "seq_length": 16}, r"^train\.g\.seq_length: only a cell: rnn, lstm, gru, mingru, "
                                r"minlstm or lru entry has this key \(an RNN's truncated-BPTT "
                                r"length; a GPT trains on windows of context"),
    ({"cell": "rnn", "expansion": 2}, r"^train\.g\.expansion: only a cell: mingru, minlstm or "
                                      r"lru entry has this key .*this entry is cell: rnn$"),
    ({k: v for k, v in GPT.items() if k != "heads"},
     r"^train\.g\.heads: missing \(required for cell: gpt, attention heads"),
    ({k: v for k, v in GPT.items() if k != "context"}, r"^train\.g\.context: missing"),
    ({**GPT, "heads": None}, r"^train\.g\.heads: missing \(required for cell: gpt"),
    ({**GPT, "heads": 3}, r"^train\.g\.hidden_size: 64 must be a multiple of train\.g\.heads "
                          r"\(3\): each head gets hidden_size / heads$"),
    ({**GPT, "heads": 0}, r"^train\.g\.heads: must be > 0, got 0$"),
    ({**GPT, "context": 2.5}, r"^train\.g\.context: must be an integer, got 2\.5$"),
    ({"cell": "rnn", "heads": 4},
     r"^train\.g\.heads: only a cell: gpt entry has this key \(attention heads, dividing "
     r"hidden_size\); this entry is cell: rnn$"),
    ({"cell": "lstm", "context": 64}, r"^train\.g\.context: only a cell: gpt entry has this "
                                      r"key .*this entry is cell: lstm$"),
    ({"init_from": ""}, r"^train\.g\.init_from: must be a \.pt path, an entry name, or null$"),
    ({"init_from": 5}, r"^train\.g\.init_from: must be a string or null, got 5$"),
])
def test_gpt_and_rnn_keys_are_errors_on_the_other_kind(entry, message):
    with pytest.raises(ParamsError, match=message):
        train_models({"train": {"g": entry}})


@pytest.mark.parametrize("raw,message", [
    ({"train": {"a": {"init_from": "b"}}},
     r"^train\.a\.init_from: a fine-tune is an entry of finetune:, not train: \(its stage, "
     r"finetune@a, depends on the init checkpoint\); move it there$"),
    ({"train": {"a": {}}, "finetune": {"b": {}}},
     r"^finetune\.b\.init_from: missing \(required in finetune:"),
    ({"train": {"a": {}}, "finetune": {"b": {"init_from": "models/a.pt"}}},
     r"^finetune\.b\.init_from: must name a checkpoint in models/ \(another entry, or one "
     r"imported there: dvc import <repo> <path> -o models/<name>\.pt\), got 'models/a\.pt'$"),
    ({"train": {"a": {}}, "finetune": {"b": {"init_from": "b"}}},
     r"^finetune\.b\.init_from: a cycle of fine-tunes: b -> b$"),
    ({"train": {"a": {}}, "finetune": {"b": {"init_from": "c"}, "c": {"init_from": "b"}}},
     r"^finetune\.c\.init_from: a cycle of fine-tunes: b -> c -> b$"),
    ({"train": {"a": {}}, "finetune": {"a": {"init_from": "x"}}},
     r"^finetune\.a: train\.a has this name already"),
    ({"train": {"a": {}}, "finetune": [1]}, r"^finetune: must map each model name"),
    ({"train": {"a": {}}, "finetune": {"b": {"init_from": "a", "lr": "x"}}},
     r"^finetune\.b\.lr: must be a number"),
    # issue 20, serious 1: dvc.yaml puts init_from in a shell command line
    # (`--init models/${item.init_from}.pt`): `x;touch PWNED_ft;` ran `touch PWNED_ft`
    ({"train": {"a": {}}, "finetune": {"b": {"init_from": "x;touch PWNED_ft;"}}},
     r"^finetune\.b\.init_from: must be a model name: letters, digits, _ or - \(starting "
     r"with a letter or _\), as dvc\.yaml puts it in a command line; got 'x;touch PWNED_ft;'$"),
    ({"train": {"a": {}}, "finetune": {"b": {"init_from": "a b"}}},
     r"^finetune\.b\.init_from: must be a model name: .*; got 'a b'$"),
    ({"train": {"a": {}}, "finetune": {"b": {"init_from": "$(touch X)"}}},
     r"^finetune\.b\.init_from: must be a model name: .*; got '\$\(touch X\)'$"),
    ({"train": {"a": {}}, "finetune": {"b": {"init_from": "a\nb"}}},
     r"^finetune\.b\.init_from: must be a model name: .*; got 'a\\nb'$"),
    ({"train": {"a": {}}, "finetune": {"b": {"init_from": "a" * 106}}},
     r"^finetune\.b\.init_from: must be a model name: at most 105 characters \(file names "
     r"are built from them, .*\), got 106$"),
])
def test_finetune_section_errors(raw, message):
    with pytest.raises(ParamsError, match=message):
        train_models(raw)


def test_finetune_entries_follow_train_entries():
    raw = {"train": {"a": {}}, "finetune": {"b": {"init_from": "a"}, "c": {"init_from": "base"}}}
    models = train_models(raw)
    assert list(models) == ["a", "b", "c"]
    assert training.init_entry(models["b"]) == "a" and training.init_entry(models["c"]) == "base"
    assert training.section_of(raw, "b") == "finetune" and training.section_of(raw, "a") == "train"
    assert training.init_entry(parse_entry({"init_from": "x/y.pt"}, "t")) is None
    assert list(train_models({"train": {"a": {}}, "finetune": None})) == ["a"]


def test_gpt_split_check_names_context():
    cfg = train_models({"train": {"g": {**GPT, "batch_size": 2}}})["g"]
    with pytest.raises(ParamsError, match=r"^train\.g\.context: 32 is too long for the train "
                                          r"split of 20 characters \(each step reads context"):
        plan.check_train_split(cfg, "train.g", 20)

# --- values that used to be accepted and then failed later (issue 12) --------------------

def _default() -> dict:
    return core.load(REPO / "params.yaml")


def _edit(path: str, value) -> dict:
    """The default params with one dotted key set (``train.rnn.seed``)."""
    raw = _default()
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[last] = value
    return raw


@pytest.mark.parametrize("key,value,message", [
    ("download.timeout", float("inf"), r"^download\.timeout: must be a finite number, got inf$"),
    ("download.timeout", 1e300, r"^download\.timeout: must be at most 86400 seconds \(a day\), "
                                r"got 1e\+300$"),
    ("download.timeout", 10**400, r"^download\.timeout: must be a finite number, got 1000"),
    ("train.rnn.seed", 2**63, r"^train\.rnn\.seed: must fit in 64 bits \(between -\(2\*\*63 - 1\) "
                              r"and 2\*\*63 - 1 = 9223372036854775807\), got 9223372036854775808$"),
    ("sample.seed", 2**64, r"^sample\.seed: must fit in 64 bits"),
    ("train.rnn.hidden_size", 2**70, r"^train\.rnn\.hidden_size: must fit in 64 bits"),
    ("ngram.add_k", float("inf"), r"^ngram\.add_k: must be a finite number, got inf$"),
    ("ngram.discount", float("nan"), r"^ngram\.discount: must be a finite number, got nan$"),
    ("train.rnn.lr", float("nan"), r"^train\.rnn\.lr: must be a finite number, got nan$"),
    ("train.rnn.dropout", float("nan"), r"^train\.rnn\.dropout: must be a finite number"),
    ("train.rnn.grad_clip", float("inf"), r"^train\.rnn\.grad_clip: must be a finite number"),
    ("sample.temperature", float("inf"), r"^sample\.temperature: must be a finite number"),
    ("encode.val_fraction", float("-inf"), r"^encode\.val_fraction: must be a finite number"),
    ("train.rnn.lr", "1e999", r"^train\.rnn\.lr: must be a finite number, got '1e999'$"),
    ("train.rnn.lr", "nan", r"^train\.rnn\.lr: must be a number, got 'nan'$"),
    ("train.rnn.max_steps", "1e3", r"^train\.rnn\.max_steps: must be an integer, got the string "
                                   r"'1e3' \(write digits only, without quotes, a dot or an "
                                   r"exponent\)$"),
    ("download.url", "http://[::1", r"^download\.url: not a valid URL: Invalid IPv6 URL \(got "
                                    r"http://\[::1\)$"),
    ("download.url", "http://example.com:99999/x",
     r"^download\.url: not a valid URL: Port out of range"),
    ("download.url", "file://otherhost/data/corpus.txt",
     r"^download\.url: a file:// URL names a file on this machine: host 'otherhost' is not "
     r"allowed \(use file:///path or file://localhost/path; got file://otherhost/data/corpus\.txt"
     r"\)$"),
    ("download.url", "http:///corpus.txt", r"^download\.url: an http URL needs a host"),
    ("download.url", "", r"^download\.url: must name a file or an http\(s\) URL, got an empty"),
    ("download.url", "ftp://example.com/x.txt", r"^download\.url: scheme 'ftp' is not allowed"),
    ("train", {}, r"^train: lists no model; add at least one entry \(name: settings\)"),
    ("train", {"my model": {}}, r"^train\.my model: model names must be letters, digits, _ or -"),
    ("train", {"../x": {}}, r"^train\.\.\./x: model names must be letters, digits, _ or -"),
    ("train", {1: {}}, r"^train\.1: model names must be letters"),
    ("train", None, r"^train: must map each model name to its settings$"),
    # bounds that keep later arithmetic finite and sizes sane
    ("ngram.orders", [4, 10**5], r"^ngram\.orders\[1\]: must be at most 64 \(the table grows "
                                r"with the order\), got 100000$"),
    ("ngram.add_k", 1e308, r"^ngram\.add_k: must be in \[1e-10, 1e\+06\] \(beyond, "
                           r"probabilities underflow or the model is uniform\), got 1e\+308$"),
    ("ngram.add_k", 1e-320, r"^ngram\.add_k: must be in \[1e-10, 1e\+06\]"),
    ("ngram.discount", 1e-300, r"^ngram\.discount: must be in \[0\.001, 1\) or null, got "
                               r"1e-300$"),
    ("train.rnn.threads", 2**31, r"^train\.rnn\.threads: must be at most 4096 \(torch threads "
                                 r"per process\), got 2147483648$"),
    ("evaluate.threads", 10**6, r"^evaluate\.threads: must be at most 4096"),
    ("train.rnn.nproc", 2**40, r"^train\.rnn\.nproc: must be at most 4096"),
], ids=[
    "timeout-inf",
    "timeout-1e300",
    "timeout-huge-int",
    "train-seed-2**63",
    "sample-seed-2**64",
    "hidden_size-2**70",
    "add_k-inf",
    "discount-nan",
    "lr-nan",
    "dropout-nan",
    "grad_clip-inf",
    "temperature-inf",
    "val_fraction--inf",
    "lr-string-1e999",
    "lr-string-nan",
    "max_steps-string-1e3",
    "url-bad-ipv6",
    "url-bad-port",
    "url-file-otherhost",
    "url-http-no-host",
    "url-empty",
    "url-ftp",
    "train-empty",
    "train-name-space",
    "train-name-path",
    "train-name-int",
    "train-null",
    "order-1e5",
    "add_k-1e308",
    "add_k-1e-320",
    "discount-1e-300",
    "threads-2**31",
    "evaluate-threads-1e6",
    "nproc-2**40",
])
def test_validate_all_rejects_what_used_to_fail_later(key, value, message):
    with pytest.raises(ParamsError, match=message):
        sections.validate_all(_edit(key, value))


@pytest.mark.parametrize("url,message", [
    ("data/a\x00b.txt", r"must not hold control characters \(a newline, a tab, NUL\), got "
                        r"'data/a\\x00b\.txt'$"),
    ("http://127.0.0.1:9/a\nb", r"must not hold control characters .*, got "
                                r"'http://127\.0\.0\.1:9/a\\nb'$"),
    ("file:///a\tb", r"must not hold control characters"),
    ("https://h/a b.txt", r"an https URL cannot hold a space: write it %20 \(got "
                          r"https://h/a b\.txt\)$"),
], ids=["nul-path", "newline-http", "tab-file", "space-https"])
def test_a_url_that_fails_only_at_download_is_refused_by_validate(url: str, message: str):
    """Issue 20, quality bar (found by tests/test_security.py): a NUL in a path was a
    `ValueError: embedded null byte` traceback from the download stage, a newline or a space
    in an http URL a download error (on two lines, for the newline), each after DVC had
    deleted data/raw/corpus.txt; urllib.parse drops a newline or tab, fetching another URL."""
    with pytest.raises(ParamsError, match=r"^download\.url: " + message):
        sections.validate_all(_edit("download.url", url))


@pytest.mark.parametrize("url", ["file:///data/corpus.txt", "file://localhost/data/corpus.txt",
                                 "https://example.com/a.txt", "http://[::1]:8000/x.txt",
                                 "data/corpus.txt", "/abs/corpus.txt", "my corpus;1.txt",
                                 "https://h/a%20b.txt?q=$(x)&r=`y`", "${x}/c.txt"])
def test_good_urls_pass(url):
    assert sections.validate_all(_edit("download.url", url))["download"].url == url


def test_a_number_written_as_yaml_reads_a_string_is_the_number_meant(tmp_path):
    """PyYAML (YAML 1.1) reads `1e-3` and `1.0e3` as strings: for a number key they are the
    number the user wrote. Integer keys want digits (1000, not 1e3)."""
    text = (REPO / "params.yaml").read_text().replace("lr: 0.004", "lr: 1e-3").replace(
        "lr: 0.002", "lr: 2.0e3").replace("add_k: 0.01", "add_k: '.5'")
    assert "lr: 1e-3" in text and "lr: 2.0e3" in text
    (tmp_path / "params.yaml").write_text(text)
    raw = core.load(tmp_path / "params.yaml")
    assert raw["train"]["rnn"]["lr"] == "1e-3"  # what YAML gives
    checked = sections.validate_all(raw)
    assert checked["train"]["rnn"].lr == 0.001
    assert checked["train"]["rnn3"].lr == 2000.0
    assert checked["ngram"].add_k == 0.5


def test_validate_all_checks_every_section_and_knows_no_other():
    checked = sections.validate_all(_default())
    assert list(checked) == ["download", "encode", "ngram", "train", "finetune", "sample",
                             "evaluate", "analyze", "intervals"]
    assert list(checked["train"]) == ["rnn", "rnn3"]
    raw = _default()
    raw["sampel"] = {"length": 5}
    with pytest.raises(ParamsError, match=r"^sampel: unknown section; allowed sections: "
                                          r"download, encode, ngram, train, finetune, sample, "
                                          r"evaluate, analyze, intervals$"):
        sections.validate_all(raw)
    raw = _default()
    del raw["evaluate"]
    with pytest.raises(ParamsError, match=r"^evaluate: section missing from params$"):
        sections.validate_all(raw)


def test_a_new_section_is_one_registration(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class BenchParams:
        repeats: int = dataclasses.field(default=3, metadata={"check": core.positive})

    monkeypatch.setattr(sections, "SECTIONS", dict(sections.SECTIONS))
    sections.register_section("bench", BenchParams)
    raw = _default()
    with pytest.raises(ParamsError, match=r"^bench: section missing"):
        sections.validate_all(raw)
    raw["bench"] = {"repeats": 0}
    with pytest.raises(ParamsError, match=r"^bench\.repeats: must be > 0, got 0$"):
        sections.validate_all(raw)
    raw["bench"] = {"repeats": 2}
    assert sections.validate_all(raw)["bench"].repeats == 2


def test_model_set_round_trip_and_errors(tmp_path):
    ms = models.ModelSet.from_params(sections.validate_all(_edit("ngram.orders", [10, 4])))
    assert ms == models.ModelSet((4, 10), ("rnn", "rnn3"))
    path = tmp_path / "models.json"
    path.write_text(json.dumps(ms.to_json()))
    assert models.ModelSet.load(path) == ms
    for text, message in [("{", "not a model-set file: Expecting"),
                          ('{"ngram_orders": [4], "trained": [1]}', "not a model-set file: "
                                                                     "expected")]:
        path.write_text(text)
        with pytest.raises(models.ModelSetError, match=r"models\.json: " + message):
            models.ModelSet.load(path)
    with pytest.raises(models.ModelSetError, match=r"nope\.json: missing \(the validate stage"):
        models.ModelSet.load(tmp_path / "nope.json")


def _validate_stage(tmp_path: Path, raw: dict) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return subprocess.run(
        [sys.executable, str(REPO / "stages/validate.py"), "--params", "params.yaml",
         "--ok", "data/params.ok", "--model-set", "data/models.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")})


def test_validate_stage_writes_a_constant_ok_and_the_model_set(tmp_path):
    proc = _validate_stage(tmp_path, _default())
    assert proc.returncode == 0, proc.stderr
    ok = (tmp_path / "data/params.ok").read_bytes()
    assert json.loads((tmp_path / "data/models.json").read_text()) == {
        "ngram_orders": [4, 10], "trained": ["rnn", "rnn3"]}
    # another valid params file: the same ok file (nothing downstream reruns for it)
    proc = _validate_stage(tmp_path, _edit("train.rnn3.lr", 0.5))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "data/params.ok").read_bytes() == ok == sections.PARAMS_OK.encode()


def test_validate_stage_error_is_one_line(tmp_path):
    proc = _validate_stage(tmp_path, _edit("ngram.add_k", float("inf")))
    assert proc.returncode == 2
    assert proc.stderr == "error: ngram.add_k: must be a finite number, got inf\n"
    assert not (tmp_path / "data").exists()


def test_validate_stage_checks_analyze_pairs_against_the_model_set(tmp_path):
    """Issue 20, minor: `analyze.pairs` naming a model no longer in `train:` passed validate;
    analyze then failed, after DVC had deleted its outputs. validate names it in one line."""
    raw = _edit("analyze.pairs", [["rnn", "rnn3"], ["ngram4", "rnn9"]])
    proc = _validate_stage(tmp_path, raw)
    assert proc.returncode == 2
    assert proc.stderr == ("error: analyze.pairs[1][1]: unknown model 'rnn9'; the models are "
                           "ngram4, ngram10, rnn, rnn3\n")
    assert not (tmp_path / "data").exists()
    del raw["train"]["rnn3"]  # the issue's case: the entry a pair names is removed
    proc = _validate_stage(tmp_path, {**raw, "analyze": {**raw["analyze"],
                                                         "pairs": [["rnn", "rnn3"]]}})
    assert proc.stderr == ("error: analyze.pairs[0][1]: unknown model 'rnn3'; the models are "
                           "ngram4, ngram10, rnn\n")
    ft = {"finetune": {"ft": {"init_from": "rnn"}}, "analyze": {"pairs": [["ft", "ngram10"]]}}
    assert _validate_stage(tmp_path, {**raw, **ft}).returncode == 0  # fine-tunes are models


# --- params.yaml and its sections: validated before any work, one line naming the key path

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
def test_bad_yaml_is_one_line(pipeline_ws: Path, capsys, text: bytes, message: str) -> None:
    (pipeline_ws / "params.yaml").write_bytes(text)
    before = snapshot(pipeline_ws)
    code, _, err = run_stage(pipeline_ws, "sample", capsys)
    assert code == 2
    assert re.search(message, one_line_error(err))
    assert snapshot(pipeline_ws) == before
    assert not (pipeline_ws / "pwned").exists()


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
    cls = {"download": data.DownloadParams, "encode": data.EncodeParams,
           "ngram": data.NgramParams, "sample": readers.SampleParams,
           "evaluate": readers.EvaluateParams}[name]
    with pytest.raises(ParamsError, match=message):
        core.section({name: raw}, name, cls)


def test_params_missing_section() -> None:
    with pytest.raises(ParamsError, match=r"^encode: section missing from params$"):
        core.section({"ecnode": {}}, "encode", data.EncodeParams)


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
        tiny_params(**{key: value})


@pytest.mark.parametrize("seq_length,batch_size,n_train,message", [
    (100, 1, 50, r"^train\.m\.seq_length: 100 is too long for the train split of 50 "
                 r"characters \(each step reads seq_length \+ 1 = 101\); use at most 49"),
    (100, 1, 100, r"^train\.m\.seq_length: 100 is too long"),
    (10, 64, 500, r"^train\.m\.batch_size: 64 streams of seq_length \+ 1 = 11 characters "
                  r"need 704, the train split has 500; use batch_size <= 45"),
], ids=["seq-over-split", "seq-equals-split", "batch-over-split"])
def test_seq_length_or_batch_longer_than_the_split(seq_length: int, batch_size: int,
                                                   n_train: int, message: str) -> None:
    cfg = tiny_params(seq_length=seq_length, batch_size=batch_size)
    with pytest.raises(ParamsError, match=message):
        check_train_split(cfg, "train.m", n_train)
    check_train_split(cfg, "train.m", batch_size * (seq_length + 1))  # exactly enough: fine


# --- model names are bounded so every file name built from them fits (issue 20, serious 5)

def test_model_names_are_bounded_by_the_longest_file_name_built_from_them():
    """The longest file name built from model names is the analysis page of a pair while
    it is written (charlab.io's `.<name>.XXXXXXXX.tmp`) or checked out (DVC's
    `<name>.<22 characters>.tmp`): `compare_<a>_vs_<b>.html` with both names at the bound
    fits NAME_MAX (255 bytes); one more character each does not. A name one over the bound
    is one line from validate, in train: and in finetune:."""
    n = training.MAX_NAME_LENGTH
    page = "compare_{a}_vs_{b}.html"
    temps = [".{f}.XXXXXXXX.tmp", "{f}.0123456789abcdefghijkl.tmp"]

    def longest(k: int) -> int:
        return max(len(t.format(f=page.format(a="m" * k, b="m" * k))) for t in temps)

    assert longest(n) <= 255 < longest(n + 1)
    ok = {"train": {"m" * n: {}}, "finetune": {"f" * n: {"init_from": "m" * n}}}
    assert list(train_models(ok)) == ["m" * n, "f" * n]
    for raw, key in [({"train": {"m" * (n + 1): {}}}, "train"),
                     ({"train": {"a": {}}, "finetune": {"f" * (n + 1): {"init_from": "a"}}},
                      "finetune")]:
        with pytest.raises(ParamsError) as e:
            train_models(raw)
        assert str(e.value) == (
            f"{key}.{next(iter(raw[key]))}: model names must be at most {n} characters "
            f"(file names are built from them, the longest compare_<a>_vs_<b>.html and its "
            f"temporary copies, and a file name has at most 255 bytes), got {n + 1}")


@pytest.mark.slow
def test_models_named_at_the_bound_train_sample_evaluate_and_analyze(pipeline_ws: Path,
                                                                     capsys):
    """Issue 20, serious 5, as reported: a 240-character name passed validate and training
    failed at its first save (`OSError: [Errno 36] File name too long:
    'models/<name>.pt.state'`). Two models named at the bound (an LSTM, whose gates make a
    saturation figure, and an RNN) go through every stage that builds a file name from a
    model name, their pair page included; one character more stops validate."""
    n = training.MAX_NAME_LENGTH
    a, b = "a" * n, "b" * n
    path = pipeline_ws / "params.yaml"
    p = yaml.safe_load(path.read_text())
    tiny = p["train"]["rnn"]
    p["train"] = {a: {**tiny, "cell": "lstm"}, b: tiny}
    p["analyze"].update(pairs=[[a, b]], cells_chars=200, excerpt_chars=200)
    p["intervals"]["block"] = 20  # of 299 test characters
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    assert run_stage(pipeline_ws, "validate")[0] == 0
    for name in (a, b):
        assert run_stage(pipeline_ws, "train", key=name)[0] == 0
        assert (pipeline_ws / f"models/{name}.pt").is_file()
        assert (pipeline_ws / f"models/{name}.pt.state").is_file()
    for stage in ("sample", "evaluate", "analyze", "intervals", "report"):
        assert run_stage(pipeline_ws, stage)[0] == 0, stage
    assert (pipeline_ws / f"metrics/analysis/pages/compare_{a}_vs_{b}.html").is_file()
    assert (pipeline_ws / f"metrics/analysis/figures/saturation_{a}.png").is_file()
    assert (pipeline_ws / f"samples/{b}.txt").is_file()

    p["train"] = {a + "x": tiny}
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    capsys.readouterr()
    code, _, err = run_stage(pipeline_ws, "validate", capsys)
    assert code == 2
    assert one_line_error(err).endswith(f"must be at most {n} characters (file names are "
                                        "built from them, the longest compare_<a>_vs_<b>.html "
                                        f"and its temporary copies, and a file name has at most "
                                        f"255 bytes), got {n + 1}")
