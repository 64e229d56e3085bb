"""CharRNN shapes, parameter counts, the fused Elman path, dropout, and its scoring adapter
(StreamingLM)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charlab.families.recurrent import CharRNN, ModelConfig
from charlab.families.recurrent_kernels import dropout
from charlab.families.streaming import SCORE_LOGITS_BYTES, StreamingLM
from charlab.lm import LanguageModel, generate, score
from charlab.runtime import dtype_trace


def make(vocab: int = 11, **kw) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=vocab, **kw))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 3])
def test_forward_shapes_and_hidden_carry(cell: str, layers: int) -> None:
    m = make(cell=cell, layers=layers, hidden_size=16)
    idx = torch.randint(0, 11, (4, 7))
    logits, hidden = m(idx)
    assert logits.shape == (4, 7, 11)
    hs = hidden if isinstance(hidden, tuple) else (hidden,)
    assert all(h.shape == (layers, 4, 16) for h in hs)
    assert len(hs) == (2 if cell == "lstm" else 1)
    # Two chunks with the state carried equal one pass over the whole sequence.
    m.eval()
    whole, _ = m(idx)
    a, h = m(idx[:, :3])
    b, _ = m(idx[:, 3:], h)
    torch.testing.assert_close(torch.cat([a, b], 1), whole, rtol=1e-5, atol=1e-5)


def elman_count(v: int, h: int, layers: int) -> int:
    first = v * h + h * h + 2 * h  # W_ih (one-hot input), W_hh, b_ih, b_hh
    deeper = (layers - 1) * (h * h + h * h + 2 * h)
    return first + deeper + h * v + v  # + output layer W_hy, b_y


def test_lecture_rnn3_parameter_count() -> None:
    # The lecture's RNN3: nn.RNN(68, 512, 3) with biases + Linear(512, 68), counted by hand:
    # 68*512 + 512*512 + 2*512  +  2 * (512*512 + 512*512 + 2*512)  +  512*68 + 68
    assert make(68, layers=3, hidden_size=512).num_params() == 1_383_492 == elman_count(68, 512, 3)
    # tiny shakespeare's 65 characters: the "1.38M params" of the FLOP ceiling
    assert make(65, layers=3, hidden_size=512).num_params() == 1_380_417


def test_single_layer_and_embedding_counts() -> None:
    assert make(65, hidden_size=512).num_params() == elman_count(65, 512, 1) == 329_793
    m = make(65, hidden_size=32, embedding_size=8)
    assert m.num_params() == 65 * 8 + (8 * 32 + 32 * 32 + 64) + 32 * 65 + 65
    lstm = make(65, cell="lstm", hidden_size=32)
    assert lstm.num_params() == 4 * (65 * 32 + 32 * 32 + 64) + 32 * 65 + 65


@pytest.mark.parametrize("layers,embedding", [(1, 0), (3, 0), (2, 5)])
def test_fused_elman_equals_nn_rnn(layers: int, embedding: int) -> None:
    m = make(layers=layers, hidden_size=12, dropout=0.0, embedding_size=embedding).double()
    idx = torch.randint(0, 11, (3, 9))
    h0 = torch.randn(layers, 3, 12, dtype=torch.double)
    results = []
    for fused in (True, False):
        m.fused = fused
        m.zero_grad()
        h = h0.clone().requires_grad_()
        logits, hn = m(idx, h)
        (logits.sin().sum() + hn.cos().sum()).backward()
        results.append([logits, hn, h.grad] + [p.grad for p in m.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


PATHS = [("rnn", True), ("rnn", False), ("lstm", False), ("gru", False)]  # (cell, fused)
RECURRENT_OPS = ("mm", "addmm", "rnn_tanh", "lstm", "gru", "mkldnn_rnn_layer", "_cudnn_rnn")


@pytest.mark.parametrize("cell,fused", PATHS)
def test_bf16_runs_the_recurrence_and_head_in_bf16(cell: str, fused: bool) -> None:
    """The dtypes each part runs in, read from the tensors: GEMMs in bf16, parameters,
    their gradients and the returned hidden state in fp32, close to an fp32 pass."""
    m = make(cell=cell, layers=2, hidden_size=64, dropout=0.0)
    m.fused = fused
    idx = torch.randint(0, 11, (8, 20))
    ref, _ = m(idx)
    ref.sum().backward()
    ref_grad = m.rnn.weight_hh_l1.grad.clone()
    m.zero_grad()
    m.set_precision(torch.bfloat16, torch.bfloat16)
    with dtype_trace() as ops:
        out, h = m(idx)
        out.float().sum().backward()
    gemms = [r for r in ops if r.op in RECURRENT_OPS]
    assert gemms and all(set(r.inputs) == {torch.bfloat16} for r in gemms
                         if r.op not in ("mm", "addmm") or r.shapes[0][-1] != 11)
    head = [r for r in ops if r.op in ("mm", "addmm") and r.shapes[0][-1] == 11]
    assert head and set(head[0].inputs) == {torch.bfloat16}
    assert out.dtype == torch.bfloat16
    assert all(t.dtype == torch.float32 for t in (h if isinstance(h, tuple) else (h,)))
    assert all(p.grad.dtype == torch.float32 for p in m.parameters())
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    cos = torch.nn.functional.cosine_similarity(m.rnn.weight_hh_l1.grad.flatten(),
                                                ref_grad.flatten(), dim=0)
    assert cos > 0.99


@pytest.mark.parametrize("cell,fused", PATHS)
def test_an_outer_autocast_does_not_change_the_dtypes(cell: str, fused: bool) -> None:
    """Autocast would pick each op's dtype itself (on CUDA: fp16 for cuDNN's RNN whatever
    it was asked for); the network's explicit dtypes win over any autocast around it."""
    m = make(cell=cell, layers=2, hidden_size=16, dropout=0.1)
    m.fused = fused
    m.set_precision(torch.bfloat16, torch.float32)
    with dtype_trace() as ops:
        with torch.autocast("cpu", dtype=torch.float16):
            logits, h = m(torch.randint(0, 11, (2, 5)))
        logits.sum().backward()
    assert not any(torch.float16 in r.inputs + r.outputs for r in ops)
    assert logits.dtype == torch.float32


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_layer_by_layer_equals_one_module_call(cell: str) -> None:
    """The path that runs one layer at a time (another recurrence dtype, or dropout between
    layers) computes what the whole nn.RNN/LSTM/GRU computes: here in float64 against it."""
    m = make(cell=cell, layers=3, hidden_size=12, dropout=0.0)
    m.fused = False
    idx = torch.randint(0, 11, (3, 9))
    h0 = torch.randn(3, 3, 12)
    hidden = (h0, h0.flip(0)) if cell == "lstm" else h0
    ref, ref_h = m(idx, hidden)
    m.set_precision(torch.float64, torch.float64)
    out, h = m(idx, hidden)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(h if cell == "lstm" else (h,), ref_h if cell == "lstm" else (ref_h,),
                    strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell,fused", PATHS)
def test_dropout_between_layers_draws_from_torch_generators(cell: str, fused: bool) -> None:
    """Every random number a training step uses comes from torch's generator (cuDNN's own
    dropout state would not be captured by a resume): the same seed, the same step."""
    m = make(cell=cell, layers=3, hidden_size=16, dropout=0.5)
    m.fused = fused
    idx = torch.randint(0, 11, (4, 6))
    torch.manual_seed(7)
    a, _ = m(idx)
    torch.manual_seed(7)
    b, _ = m(idx)
    c, _ = m(idx)
    assert torch.equal(a, b) and not torch.equal(b, c)
    assert m.rnn.dropout == 0  # nn.RNN's own (cuDNN's) dropout is off


def test_dropout_rate_scale_and_eval() -> None:
    torch.manual_seed(1)
    x = torch.ones(200, 64, 32)
    y = dropout(x, 0.1, True)
    zeros = (y == 0).float().mean().item()
    assert abs(zeros - 0.1) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01  # kept values are scaled by 1/keep
    assert dropout(x, 0.1, False) is x
    torch.manual_seed(1)
    torch.testing.assert_close(dropout(x, 0.1, True), y)  # seeded: same mask


def text_ids(n: int, vocab: int = 11, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n)


def sequential_log_probs(m: CharRNN, ids: np.ndarray) -> np.ndarray:
    m.eval()
    with torch.no_grad():
        logits, _ = m(torch.as_tensor(ids[None, :-1]))
        lp = torch.log_softmax(logits[0].double(), -1)
        return lp.gather(-1, torch.as_tensor(ids[1:, None])).squeeze(-1).numpy()


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_log_probs_batched_matches_sequential(cell: str) -> None:
    m = make(cell=cell, layers=2, hidden_size=24)
    ids = text_ids(5000)
    lm = StreamingLM(m, "cpu", burn_in=64, chunk=50)
    batched = lm.log_probs(ids)
    seq = sequential_log_probs(m, ids)
    assert batched.shape == (len(ids) - 1,)
    # 5000 // (4 * 64) = 19 streams; each has 64 characters of real context before it
    np.testing.assert_allclose(batched, seq, atol=1e-4)
    assert abs(batched.mean() - seq.mean()) < 1e-5
    # the first stream starts from the empty state: exactly the sequential values
    np.testing.assert_allclose(batched[:200], seq[:200], rtol=1e-5, atol=1e-6)


def test_log_probs_short_text_is_one_exact_stream() -> None:
    m = make(hidden_size=16)
    ids = text_ids(300)
    np.testing.assert_allclose(StreamingLM(m, "cpu").log_probs(ids), sequential_log_probs(m, ids),
                               rtol=1e-5, atol=1e-6)
    assert StreamingLM(m, "cpu").log_probs(ids[:1]).shape == (0,)


def logits_bytes(m: CharRNN) -> list[int]:
    """Bytes of every logits tensor the output layer produces from now on."""
    sizes: list[int] = []
    m.register_forward_hook(
        lambda _mod, _inp, out: sizes.append(out[0].numel() * out[0].element_size()))
    return sizes


def test_scoring_memory_is_bounded_for_a_large_vocabulary() -> None:
    """Issue 12: 256 x 256 x V logits at once (22 GB at V = 66,000). With V = 2,000 and 39
    streams, 256 steps per call would be 80 MB; the budget cuts the steps per call and
    leaves the streams, so the scores are those of the unbounded pass."""
    m = make(vocab=2000, hidden_size=8)
    ids = text_ids(40_000, vocab=2000)
    sizes = logits_bytes(m)
    lm = StreamingLM(m, "cpu")
    got = lm.log_probs(ids)
    assert max(sizes) <= SCORE_LOGITS_BYTES
    assert lm._plan(len(ids) - 1) == (39, 215)
    # same streams, 16 steps per call: the same scores up to float32 rounding
    np.testing.assert_allclose(got, StreamingLM(m, "cpu", chunk=16).log_probs(ids), rtol=1e-6,
                               atol=1e-5)
    # the first stream is exactly a sequential pass from the empty state
    np.testing.assert_allclose(got[:1000], sequential_log_probs(m, ids[:1001]), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("budget,streams", [(50 * 4 * 8, 8), (50 * 4 - 1, 1)])
def test_scoring_budget_below_one_step_runs_fewer_streams(budget: int, streams: int) -> None:
    m = make(vocab=50, layers=2, hidden_size=24)
    ids = text_ids(5000, vocab=50)
    sizes = logits_bytes(m)
    lm = StreamingLM(m, "cpu", burn_in=64, max_logits_bytes=budget)
    assert lm._plan(len(ids) - 1) == (streams, 1)
    got = lm.log_probs(ids)
    # V * 4 bytes (one stream, one step) is the floor, whatever the budget
    assert max(sizes) <= max(budget, 50 * 4)
    seq = sequential_log_probs(m, ids)
    np.testing.assert_allclose(got, seq, atol=1e-4)
    np.testing.assert_allclose(got[:200], seq[:200], rtol=1e-5, atol=1e-6)
    if streams == 1:  # one stream, no burn-in: the sequential pass itself
        np.testing.assert_allclose(got, seq, rtol=1e-5, atol=1e-5)


def test_scoring_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_logits_bytes"):
        StreamingLM(make(), "cpu", max_logits_bytes=0)


def test_start_step_agree_with_log_probs() -> None:
    m = make(layers=2, hidden_size=16)
    lm = StreamingLM(m, "cpu")
    assert isinstance(lm, LanguageModel)
    ids = text_ids(40)
    lp, state = lm.start(ids[:1])
    got = [lp[ids[1]]]
    for t in range(1, len(ids) - 1):
        lp, state = lm.step(state, int(ids[t]))
        got.append(lp[ids[t + 1]])
    np.testing.assert_allclose(got, lm.log_probs(ids), rtol=1e-5, atol=1e-6)
    # empty prime: a proper distribution from the zero state
    lp0, state0 = lm.start(np.array([], dtype=np.int64))
    assert state0 is None and abs(np.exp(lp0).sum() - 1) < 1e-5
    lp1, _ = lm.step(state0, int(ids[0]))
    np.testing.assert_allclose(lp1, lm.start(ids[:1])[0], rtol=1e-6)


def test_adapter_restores_training_mode_and_scores() -> None:
    m = make(hidden_size=16, dropout=0.5)
    m.train()
    lm = StreamingLM(m, torch.device("cpu"))
    a = lm.log_probs(text_ids(100))
    b = lm.log_probs(text_ids(100))
    np.testing.assert_array_equal(a, b)  # eval mode: dropout off, deterministic
    assert m.training
    assert lm.num_params() == m.num_params() and lm.vocab_size == 11
    assert 0 < score(lm, text_ids(100)).nll < 10
    out = list(generate(lm, np.array([1, 2]), 25, temperature=0.8, top_k=5, seed=3))
    assert len(out) == 25 and all(0 <= i < 11 for i in out)


def test_start_reads_a_long_prime_in_pieces() -> None:
    """A long prime is read ``chunk`` characters at a time, the state carried: the same
    prediction and state as one pass, the memory of one piece (issue 20: a 1 MB prime)."""
    torch.manual_seed(0)
    net = CharRNN(ModelConfig(11, cell="lstm", layers=2, hidden_size=16, dropout=0.0))
    prime = np.random.default_rng(0).integers(0, 11, 1000)
    whole_lp, whole_state = StreamingLM(net, "cpu", chunk=10**6).start(prime)
    lengths: list[int] = []
    hook = net.register_forward_hook(lambda m, args, out: lengths.append(args[0].shape[1]))
    lp, state = StreamingLM(net, "cpu", chunk=64).start(prime)
    hook.remove()
    assert max(lengths) == 64 and sum(lengths) == len(prime)
    np.testing.assert_allclose(lp, whole_lp, atol=1e-6)
    for a, b in zip(state, whole_state, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
