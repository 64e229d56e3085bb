"""The GPT: shapes, causality, tied output, dtypes, sliding-window scoring against a brute
force, KV-cached sampling against recomputation, and training/loading it through the
same trainer, checkpoint and load_model as the RNNs."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import train_entry
from test_train import assert_same_weights, corpus, read_curve, weights  # noqa: F401

from charlab.checkpoint import load_checkpoint
from charlab.encoding import Corpus
from charlab.families.gpt import GPT, GPTLM, GPTConfig, KVCache
from charlab.lm import generate, score
from charlab.models import load_model
from charlab.params.training import TrainParams, parse_entry
from charlab.training.guard import TrainingInterrupted

V = 11


def make(context: int = 8, dropout: float = 0.0, seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=V, layers=2, heads=2, hidden_size=16, context=context,
                      dropout=dropout, **kw))
    with torch.no_grad():  # a non-trivial output bias, so the empty-prime case means something
        m.head_bias.normal_()
    return m.eval()


def ids_of(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, n)


def last_log_probs(m: GPT, window: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        logits, _ = m(torch.as_tensor(window, dtype=torch.long)[None])
    return torch.log_softmax(logits[0, -1].double(), -1)


def brute_force(m: GPT, ids: np.ndarray, context: int, stride: int) -> np.ndarray:
    """One model call per character, on exactly the window the stated scheme gives it: all
    characters before it while they fit, then from the last window start (a multiple of
    stride) that keeps it among the window's last stride positions."""
    out = []
    for t in range(len(ids) - 1):
        start = 0 if t < context else ((t - context) // stride + 1) * stride
        out.append(float(last_log_probs(m, ids[start:t + 1])[ids[t + 1]]))
    return np.array(out)


def test_shapes_params_and_tied_output_layer() -> None:
    m = make()
    logits, state = m(torch.zeros(3, 5, dtype=torch.long))
    assert logits.shape == (3, 5, V) and state is None
    h, c = 16, 8
    per_block = 4 * h + (3 * h * h + 3 * h) + (h * h + h) + (4 * h * h + 4 * h) + (4 * h * h + h)
    # tied: the token embedding is the only (V, h) matrix; + positions, final LN, bias
    assert m.num_params() == V * h + c * h + 2 * per_block + 2 * h + V
    assert not any(p.shape == (V, h) for n, p in m.named_parameters() if n != "tok.weight")
    with torch.no_grad():
        m.tok.weight[3] += torch.randn(h)  # moves character 3's logit even where 3 is never read
    assert not torch.allclose(m(torch.zeros(1, 4, dtype=torch.long))[0][..., 3],
                              logits[:1, :4, 3])


def test_attention_is_causal() -> None:
    m = make()
    x = torch.as_tensor(ids_of(8), dtype=torch.long)[None]
    y = x.clone()
    y[0, 5] = (y[0, 5] + 1) % V
    a, b = m(x)[0], m(y)[0]
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=0)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("n", [2, 7, 8, 9, 12, 13, 40, 41])
@pytest.mark.parametrize("stride", [None, 1, 3, 8])
def test_sliding_window_scores_match_one_window_per_character(n: int, stride: int | None
                                                              ) -> None:
    m = make(context=8)
    lm = GPTLM(m, "cpu", stride=stride, batch=3)  # batch 3: windows split over calls
    ids = ids_of(n)
    expect = brute_force(m, ids, 8, lm.stride)
    np.testing.assert_allclose(lm.log_probs(ids), expect, rtol=0, atol=1e-5)
    assert lm.stride == (4 if stride is None else stride)


def test_stride_one_is_the_full_context_for_every_character() -> None:
    m = make(context=8)
    ids = ids_of(30)
    full = [float(last_log_probs(m, ids[max(0, t + 1 - 8):t + 1])[ids[t + 1]])
            for t in range(29)]
    np.testing.assert_allclose(GPTLM(m, "cpu", stride=1).log_probs(ids), full, atol=1e-5)
    assert GPTLM(m, "cpu").log_probs(ids[:1]).shape == (0,)


@pytest.mark.parametrize("prime_len", [0, 1, 5, 8, 11])
def test_cached_sampling_matches_recomputing_the_window(prime_len: int) -> None:
    m = make(context=8)
    lm = GPTLM(m, "cpu")
    prime = ids_of(prime_len, seed=2)
    lp, state = lm.start(prime)
    if prime_len == 0:
        bias = torch.log_softmax(m.head_bias.detach().double(), -1).numpy()
        np.testing.assert_allclose(lp, bias, atol=1e-6)
    seq = list(prime)
    predicted = []
    rng = np.random.default_rng(3)
    for _ in range(30):  # several slides of the full window
        nxt = int(rng.integers(V))
        predicted.append(lp[nxt])
        seq.append(nxt)
        lp, state = lm.step(state, nxt)
        cache, window = state
        assert cache.length == len(window) <= 8
        np.testing.assert_allclose(lp, last_log_probs(m, window).numpy(), atol=1e-5)
    # and each prediction is the one scoring gives that character in the whole text
    scored = lm.log_probs(np.array(seq))
    np.testing.assert_allclose(predicted[1 if prime_len == 0 else 0:],
                               scored[max(prime_len - 1, 0):], atol=1e-5)


@pytest.mark.parametrize("context", [1, 2, 3, 8])
def test_start_and_step_give_the_window_scoring_prediction_for_any_prime(context: int) -> None:
    """Issue 20, serious 4: a GPT with context 1 could not start from a prime longer than 1
    (`ValueError: 15 positions exceed the context of 1`: the crop kept `prime[-0:]`, all of
    it), and where the prime's length minus the context was a multiple of the stride (a
    prime of 12 or 32 at context 8, any prime beyond the context at stride 1) it cropped to
    the wrong window, so sampling's prediction differed from scoring's. For every prime
    length up to several windows, start's prediction and every step's after it are the
    brute force's (the window the scoring scheme gives that character)."""
    m = make(context=context)
    lm = GPTLM(m, "cpu")
    ids = ids_of(3 * context + 10, seed=5)
    expect = brute_force(m, ids, context, lm.stride)
    np.testing.assert_allclose(lm.log_probs(ids), expect, rtol=0, atol=1e-5)
    for n in range(1, len(ids)):
        lp, state = lm.start(ids[:n])
        assert lp[ids[n]] == pytest.approx(expect[n - 1], abs=1e-5), n
        for t in range(n, len(ids) - 1):  # then read the rest one character at a time
            lp, state = lm.step(state, int(ids[t]))
            assert lp[ids[t + 1]] == pytest.approx(expect[t], abs=1e-5), (n, t)
            assert state[0].length == len(state[1]) <= context


def test_a_context_one_gpt_trains_then_samples_and_scores_a_long_prime(
        corpus: Corpus, tmp_path: Path) -> None:  # noqa: F811
    """Issue 20, serious 4, as reported: `cell: gpt, context: 1` trained, then the sample
    stage failed on its 15-character prime. It samples and scores any prime."""
    train_entry(gpt_cfg(context=1, max_steps=4, eval_every=2), corpus,
                checkpoint_path=tmp_path / "g1.pt", curve_path=tmp_path / "g1.csv", name="g1")
    lm = load_model(tmp_path / "g1.pt", corpus.vocab)
    prime = corpus.split("train")[:15].astype(np.int64)  # as long as "First Citizen:\n"
    out = list(generate(lm, prime, 20, temperature=0.8, seed=1))
    assert len(out) == 20 and all(0 <= i < corpus.vocab.size for i in out)
    assert score(lm, corpus.split("val")[:200]).count == 199


def test_generate_runs_through_the_protocol() -> None:
    lm = GPTLM(make(context=8), "cpu")
    out = list(generate(lm, ids_of(3), 20, temperature=0.8, seed=1))
    assert len(out) == 20 and all(0 <= i < V for i in out)
    assert out == list(generate(lm, ids_of(3), 20, temperature=0.8, seed=1))
    assert score(lm, ids_of(50)).count == 49


def test_a_cache_step_is_one_position() -> None:
    m = make(context=8)
    cache = KVCache(2)
    m(torch.zeros(1, 3, dtype=torch.long), cache)
    logits, cache = m(torch.zeros(1, 1, dtype=torch.long), cache)
    assert logits.shape == (1, 1, V) and cache.length == 4


def test_forward_errors() -> None:
    m = make(context=8)
    with pytest.raises(ValueError, match="9 positions exceed the context of 8"):
        m(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(TypeError, match="no hidden state"):
        m(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, 16))
    with pytest.raises(ValueError, match="multiple of heads"):
        GPTConfig(vocab_size=5, heads=3, hidden_size=16)


def test_forward_runs_in_its_parameters_dtype_and_under_autocast() -> None:
    m = make()
    x = torch.as_tensor(ids_of(8), dtype=torch.long)[None]
    ref = m(x)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = m(x)[0]
    half = make().to(torch.bfloat16)
    low = half(x)[0]
    assert low.dtype == torch.bfloat16
    for out in (auto, low):
        torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)
    m.train()
    loss = torch.nn.functional.cross_entropy(half(x)[0].float().reshape(-1, V), x.reshape(-1))
    loss.backward()
    assert half.tok.weight.grad.dtype == torch.bfloat16


def gpt_cfg(**kw) -> TrainParams:
    base = dict(cell="gpt", layers=1, heads=2, hidden_size=16, context=16, batch_size=8,
                lr=0.01, max_steps=30, eval_every=10, device="cpu", threads=1, dropout=0.0,
                warmup_steps=2)
    base.update(kw)
    return parse_entry(base, "train.g")


def test_trainer_trains_checkpoints_and_loads_a_gpt(corpus: Corpus, tmp_path: Path) -> None:  # noqa: F811
    res = train_entry(gpt_cfg(), corpus, checkpoint_path=tmp_path / "g.pt",
                      curve_path=tmp_path / "g.csv", name="g", progress=False)
    rows = read_curve(tmp_path / "g.csv")
    assert [int(r["step"]) for r in rows] == [10, 20, 30]
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"]) - 0.2
    assert float(rows[-1]["val_loss"]) < np.log(corpus.vocab.size) - 0.5
    net, vocab, info = load_checkpoint(tmp_path / "g.pt")
    assert isinstance(net, GPT) and net.config.context == 16 and vocab == corpus.vocab
    assert info["params"]["context"] == 16 and "seq_length" not in info["params"]
    lm = load_model(tmp_path / "g.pt", corpus.vocab)
    assert isinstance(lm, GPTLM)
    assert score(lm, corpus.split("val")).nll == pytest.approx(res.best_val_loss, abs=1e-6)


def test_gpt_resume_after_interrupt_is_bit_identical(corpus: Corpus, tmp_path: Path  # noqa: F811
                                                     ) -> None:
    c = gpt_cfg(dropout=0.2, max_steps=16, eval_every=8)

    def run(d: str, **kw):
        return train_entry(c, corpus, checkpoint_path=tmp_path / d / "g.pt",
                           curve_path=tmp_path / d / "g.csv", name="g", progress=False, **kw)

    def hook(k: int, model: torch.nn.Module) -> None:
        if k == 11:
            os.kill(os.getpid(), signal.SIGINT)

    run("straight")
    with pytest.raises(TrainingInterrupted):
        run("resumed", on_step=hook)
    assert run("resumed").resumed_from == 11
    assert_same_weights(weights(tmp_path / "straight/g.pt"), weights(tmp_path / "resumed/g.pt"))


@pytest.mark.parametrize("first,then", [(3, 1), (3, 4), (1, 7)])
def test_extending_a_cache_equals_one_full_pass(first: int, then: int) -> None:
    m = make(context=8)
    x = torch.as_tensor(ids_of(first + then), dtype=torch.long)[None]
    full, _ = m(x)
    cache = KVCache(2)
    a, cache = m(x[:, :first], cache)
    b, cache = m(x[:, first:], cache)
    torch.testing.assert_close(torch.cat([a, b], dim=1), full, atol=1e-5, rtol=1e-5)


def test_precision_is_the_models_own_whatever_autocast_surrounds_it() -> None:
    """set_precision decides: bf16 matrix products in the blocks and the output layer, with
    float32 parameters; without it float32, even under an outer autocast."""
    from charlab.runtime import dtype_trace

    m = make(context=8)
    idx = torch.randint(0, m.config.vocab_size, (2, 8))
    with dtype_trace() as ops, torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = m(idx)
    assert logits.dtype == torch.float32
    assert all(torch.bfloat16 not in r.inputs for r in ops if r.op in ("mm", "addmm", "bmm"))
    m.set_precision(torch.bfloat16, torch.bfloat16)
    with dtype_trace() as ops:
        logits, _ = m(idx)
    gemms = [r for r in ops if r.op in ("mm", "addmm")]
    assert gemms and all(set(r.inputs) == {torch.bfloat16} for r in gemms)
    assert logits.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in m.parameters())
