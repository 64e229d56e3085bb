from pathlib import Path

import pytest

from charlab import params
from charlab.params import (
    EncodeParams,
    NgramParams,
    ParamsError,
    SampleParams,
    TrainParams,
    parse,
    train_models,
)

REPO = Path(__file__).resolve().parents[1]


def test_default_params_file_is_valid():
    raw = params.load(REPO / "params.yaml")
    params.section(raw, "download", params.DownloadParams)
    params.section(raw, "encode", EncodeParams)
    assert params.section(raw, "ngram", NgramParams).orders == [4, 10]
    models = train_models(raw)
    assert list(models) == ["rnn", "rnn3"]
    assert (models["rnn3"].layers, models["rnn3"].hidden_size) == (3, 512)
    assert models["rnn3"].dropout == 0.1
    params.section(raw, "sample", SampleParams)
    params.section(raw, "evaluate", params.EvaluateParams)


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
    (params.DownloadParams, {"url": "x", "sha256": "abc"}, "must be 64 hex digits"),
    (params.DownloadParams, {}, r"url: missing"),
])
def test_section_errors(cls, raw, message):
    with pytest.raises(ParamsError, match=message):
        parse(cls, raw, "encode" if cls is EncodeParams else "s")


def test_defaults_fill_missing_keys():
    cfg = parse(TrainParams, {"layers": 2}, "train.x")
    assert cfg.layers == 2 and cfg.cell == "rnn"
    assert parse(TrainParams, {"lr": 1}, "t").lr == 1.0  # an int is a fine float


@pytest.mark.parametrize("text,message", [
    ("a: [1, 2", "not valid YAML"),
    ("- 1\n- 2\n", "must hold a mapping of sections"),
])
def test_load_errors(tmp_path, text, message):
    f = tmp_path / "params.yaml"
    f.write_text(text)
    with pytest.raises(ParamsError, match=message):
        params.load(f)


def test_load_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        params.load(tmp_path / "nope.yaml")


def test_yaml_tags_are_not_executed(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("x: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        params.load(f)


GPT = {"cell": "gpt", "layers": 2, "heads": 4, "hidden_size": 64, "context": 32}


def test_gpt_entry_parses_and_trains_on_windows_of_context():
    cfg = train_models({"train": {"g": GPT}})["g"]
    assert (cfg.cell, cfg.heads, cfg.context) == ("gpt", 4, 32)
    assert cfg.seq_length == 32  # a GPT's batches are windows of `context` characters
    rnn = train_models({"train": {"r": {}}})["r"]
    assert rnn.heads is None and rnn.context is None and rnn.init_from is None


@pytest.mark.parametrize("entry,message", [
    ({**GPT, "embedding_size": 16},
     r"^train\.g\.embedding_size: not a key of cell: gpt \(an RNN's input embedding; a GPT "
     r"always embeds\); a gpt entry has heads, context instead$"),
    ({**GPT, "seq_length": 16}, r"^train\.g\.seq_length: not a key of cell: gpt \(an RNN's "
                                r"truncated-BPTT length; a GPT trains on windows of context"),
    ({k: v for k, v in GPT.items() if k != "heads"},
     r"^train\.g\.heads: missing \(required for cell: gpt, attention heads"),
    ({k: v for k, v in GPT.items() if k != "context"}, r"^train\.g\.context: missing"),
    ({**GPT, "heads": None}, r"^train\.g\.heads: missing \(required for cell: gpt"),
    ({**GPT, "heads": 3}, r"^train\.g\.hidden_size: 64 must be a multiple of train\.g\.heads "
                          r"\(3\): each head gets hidden_size / heads$"),
    ({**GPT, "heads": 0}, r"^train\.g\.heads: must be > 0, got 0$"),
    ({**GPT, "context": 2.5}, r"^train\.g\.context: must be an integer or null, got 2\.5$"),
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
])
def test_finetune_section_errors(raw, message):
    with pytest.raises(ParamsError, match=message):
        train_models(raw)


def test_finetune_entries_follow_train_entries():
    raw = {"train": {"a": {}}, "finetune": {"b": {"init_from": "a"}, "c": {"init_from": "base"}}}
    models = train_models(raw)
    assert list(models) == ["a", "b", "c"]
    assert params.init_entry(models["b"]) == "a" and params.init_entry(models["c"]) == "base"
    assert params.section_of(raw, "b") == "finetune" and params.section_of(raw, "a") == "train"
    assert params.init_entry(parse(TrainParams, {"init_from": "x/y.pt"}, "t")) is None
    assert list(train_models({"train": {"a": {}}, "finetune": None})) == ["a"]


def test_gpt_split_check_names_context():
    cfg = train_models({"train": {"g": {**GPT, "batch_size": 2}}})["g"]
    with pytest.raises(ParamsError, match=r"^train\.g\.context: 32 is too long for the train "
                                          r"split of 20 characters \(each step reads context"):
        params.check_train_split(cfg, "g", 20)
