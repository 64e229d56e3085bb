"""The parallel-scan recurrent families (minGRU, minLSTM, LRU): the scan kernels against a
plain loop, parallel chunks with a carried state against one character at a time, gradients
through the parallel scan, float32 state under bf16, the state through the trainer's own
helpers, and the LanguageModel adapter against a sequential pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_text

from charlab.families import lru, mingru, minlstm, scan
from charlab.families.base import detach_state
from charlab.families.scanrnn import ScanRNN
from charlab.families.streaming import StreamingLM, _zero_stream
from charlab.training.resume import restore_hidden

FAMILIES = {"mingru": (mingru.MINGRU, mingru.MinGRUConfig),
            "minlstm": (minlstm.MINLSTM, minlstm.MinLSTMConfig),
            "lru": (lru.LRU_FAMILY, lru.LRUConfig)}
# every parallel kernel a family runs (the LRU's complex recurrence has no log-space form)
PARALLEL = {"mingru": ("chunked", "log"), "minlstm": ("chunked", "log"), "lru": ("chunked",)}
TEXT = make_text(400, seed=3)
CHARS = sorted(set(TEXT))
IDS = np.array([CHARS.index(ch) for ch in TEXT], dtype=np.int64)


def make(family: str, seed: int = 0, **kw) -> ScanRNN:
    """A tiny network with weights far from their small initial values, so that every
    character of context moves the log-probabilities (and a state not carried shows)."""
    module, config = FAMILIES[family]
    torch.manual_seed(seed)
    sizes = {"layers": 2, "hidden_size": 16, "expansion": 1.5, "dropout": 0.0} | kw
    net = module.build(config(vocab_size=len(CHARS), **sizes))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if not name.endswith("_log"):  # the LRU's eigenvalues keep their ring
                p.normal_(0.0, 0.3)
    return net.eval()


def log_probs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.double(), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def sequential(net: ScanRNN, ids: np.ndarray) -> tuple[torch.Tensor, tuple]:
    """log p(ids[t + 1] | ids[:t + 1]) one character at a time from the zero state."""
    x = torch.as_tensor(ids)[None]
    state, out = None, []
    with torch.no_grad():
        for t in range(len(ids) - 1):
            logits, state = net(x[:, t:t + 1], state)
            out.append(log_probs(logits, x[:, t + 1:t + 2]))
    return torch.cat(out, 1)[0], state


def chunked(net: ScanRNN, ids: np.ndarray, bounds: list[int], carry: str = "both"
            ) -> torch.Tensor:
    """The same, in parallel chunks ``ids[a:b]``; ``carry`` "h" or "conv" drops the other."""
    x = torch.as_tensor(ids)[None]
    state, out = None, []
    with torch.no_grad():
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if state is not None and carry != "both":
                keep = 0 if carry == "h" else 1
                state = tuple(s if i == keep else torch.zeros_like(s) for i, s in enumerate(state))
            logits, state = net(x[:, a:b], state)
            out.append(log_probs(logits, x[:, a + 1:b + 1]))
    return torch.cat(out, 1)[0]


# --- the kernels ---------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 37, 100])
def test_log_and_chunked_scans_agree_with_a_loop(steps: int) -> None:
    g = torch.Generator().manual_seed(steps)
    a = torch.sigmoid(torch.randn(steps, 3, 8, generator=g, dtype=torch.float64))
    b = torch.rand(steps, 3, 8, generator=g, dtype=torch.float64) + 0.05
    h0 = torch.randn(3, 8, generator=g, dtype=torch.float64)  # nonzero, of either sign
    w = torch.randn(steps, 3, 8, generator=g, dtype=torch.float64)

    def run(dtype: torch.dtype, kernel, *args) -> tuple[torch.Tensor, ...]:
        leaves = [t.to(dtype).requires_grad_() for t in (a, b, h0)]
        first = leaves[:2] if kernel is not scan.log_scan else [t.log() for t in leaves[:2]]
        h = kernel(*first, leaves[2], *args)
        return (h.detach(), *torch.autograd.grad((h * w.to(dtype)).sum(), leaves))

    kernels = [(scan.log_scan,), (scan.chunked_scan,), (scan.chunked_scan, 1),
               (scan.chunked_scan, 7), (scan.chunked_scan, steps)]
    ref = run(torch.float64, scan.loop_scan)
    for kernel in kernels:
        # the formulas, and their gradients, exactly
        for x, y in zip(ref, run(torch.float64, *kernel), strict=True):
            torch.testing.assert_close(y, x, rtol=1e-10, atol=1e-10)
        # float32, as the models run them: every h_t within 1e-5, and the chunked kernel's
        # gradients too (the log-space gradient of a is only ~1e-4 close in float32: it is
        # a difference of two large terms, one through logcumsumexp)
        got = run(torch.float32, *kernel)
        checked = len(got) if kernel[0] is scan.chunked_scan else 1
        for x, y in zip(ref[:checked], got[:checked], strict=True):
            torch.testing.assert_close(y, x.float(), rtol=1e-5, atol=1e-5)


def test_complex_chunked_scan_agrees_with_a_loop() -> None:
    g = torch.Generator().manual_seed(0)
    lam = torch.polar(0.5 + 0.49 * torch.rand(1, 1, 6, generator=g), torch.rand(1, 1, 6,
                                                                                  generator=g))
    b = torch.randn(23, 2, 6, 2, generator=g)
    h0 = torch.randn(2, 6, 2, generator=g)
    w = torch.randn(23, 2, 6, 2, generator=g)

    def run(kernel) -> tuple[torch.Tensor, ...]:
        leaves = [t.clone().requires_grad_() for t in (torch.view_as_real(lam), b, h0)]
        h = kernel(*(torch.view_as_complex(t) for t in leaves))
        return (h.detach(), *torch.autograd.grad((torch.view_as_real(h) * w).sum(), leaves))

    for x, y in zip(run(scan.loop_scan), run(scan.chunked_scan), strict=True):
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-5)


def test_the_kernels_refuse_low_precision_operands() -> None:
    a = torch.full((4, 1, 2), 0.5, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="float32"):
        scan.chunked_scan(a, a, a[0])


# --- the networks ----------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_parallel_chunks_with_carried_state_equal_one_character_at_a_time(family: str) -> None:
    net = make(family)
    seq, seq_state = sequential(net, IDS)
    bounds = [0, 100, 177, 277, 320, len(IDS) - 1]  # uneven: remainders of every sub-chunk
    for kernel in PARALLEL[family]:
        net.kernel = kernel
        par = chunked(net, IDS, bounds)
        assert (par - seq).abs().max() < 1e-5, kernel
    net.kernel = None
    # the test can see a state that is not carried: dropping either part moves the scores
    for part in ("h", "conv"):
        assert (chunked(net, IDS, bounds, carry=part) - seq).abs().max() > 1e-3, part
    # and the state after the text is the one-step pass's
    _, state = net(torch.as_tensor(IDS[:-1])[None])
    for x, y in zip(state, seq_state, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_through_the_parallel_scan_match_sequential_steps(family: str) -> None:
    net = make(family, layers=2, hidden_size=8)
    x = torch.as_tensor(IDS[:41]).view(1, -1).repeat(2, 1)
    x[1] = torch.as_tensor(IDS[50:91])
    with torch.no_grad():  # a nonzero carried state, as after a previous chunk
        _, state = net(torch.as_tensor(IDS[100:130]).view(2, 15))

    def grads(parallel: bool) -> list[torch.Tensor]:
        net.zero_grad()
        if parallel:
            logits, _ = net(x[:, :-1], state)
        else:  # one step at a time, autograd through every step
            s, out = state, []
            for t in range(x.shape[1] - 1):
                step_logits, s = net(x[:, t:t + 1], s)
                out.append(step_logits)
            logits = torch.cat(out, 1)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
        return [p.grad.clone() for p in net.parameters()]

    for kernel in PARALLEL[family]:
        net.kernel = kernel
        for g_par, g_seq in zip(grads(True), grads(False), strict=True):
            torch.testing.assert_close(g_par, g_seq, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_state_stays_float32_under_bf16(family: str) -> None:
    net = make(family, dropout=0.1).train()
    net.set_precision(torch.bfloat16, torch.bfloat16)
    assert net.compute_dtypes() == (torch.bfloat16, torch.bfloat16)
    x = torch.as_tensor(IDS[:60]).view(2, 30)
    logits, state = net(x[:, :20])
    logits, state = net(x[:, 20:], detach_state(state))
    assert logits.dtype == torch.bfloat16 and logits.shape == (2, 10, len(CHARS))
    assert all(s.dtype == torch.float32 for s in state)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    logits.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_the_state_goes_through_the_trainers_helpers(family: str) -> None:
    """What train.py does with a carried state: detach it, gather it along the batch (DDP,
    resume), take this rank's rows back, and reset one stream (RNNLM's burn-in)."""
    net = make(family)
    _, state = net(torch.as_tensor(IDS[:40]).view(4, 10))
    h, past = detach_state(state)
    c = net.config
    assert h.shape[:2] == past.shape[:2] == (c.layers, 4)
    assert past.shape[2:] == (c.conv_kernel - 1, c.hidden_size)
    saved = [torch.cat([t[:, :2], t[:, 2:]], dim=1) for t in (h, past)]
    mine = restore_hidden(saved, range(2, 4), next(net.parameters()))
    assert isinstance(mine, tuple) and len(mine) == 2
    torch.testing.assert_close(mine[0], h[:, 2:], rtol=0, atol=0)
    torch.testing.assert_close(mine[1], past[:, 2:], rtol=0, atol=0)
    _zero_stream(mine, 0)
    fresh, _ = net(torch.as_tensor(IDS[40:45])[None])
    again, _ = net(torch.as_tensor(IDS[40:45])[None], tuple(t[:, :1] for t in mine))
    torch.testing.assert_close(again, fresh, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_language_model_scores_and_samples_as_a_sequential_pass(family: str) -> None:
    net = make(family)
    seq, _ = sequential(net, IDS)
    lm = StreamingLM(net, "cpu")
    assert lm.vocab_size == len(CHARS) and lm.num_params() == net.num_params()
    np.testing.assert_allclose(lm.log_probs(IDS), seq.numpy(), rtol=0, atol=1e-5)
    lm.chunk = 64  # several calls, the state carried between them
    np.testing.assert_allclose(lm.log_probs(IDS), seq.numpy(), rtol=0, atol=1e-5)
    lp, state = lm.start(IDS[:30])
    np.testing.assert_allclose(lp[IDS[30]], seq[29].item(), rtol=0, atol=1e-5)
    for t in range(30, 60):
        lp, state = lm.step(state, int(IDS[t]))
        np.testing.assert_allclose(lp[IDS[t + 1]], seq[t].item(), rtol=0, atol=1e-5)
    empty, _ = lm.start(IDS[:0])  # nothing read: the output layer's bias
    expect = torch.log_softmax(net.head.bias.detach().double(), -1).numpy()
    np.testing.assert_allclose(empty, expect, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_config_round_trips_and_refuses_another_cell(family: str) -> None:
    module, config = FAMILIES[family]
    c = config(vocab_size=65)
    assert c.cell == family and module.config_from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="cell"):
        config(vocab_size=65, cell="gru")
    with pytest.raises(ValueError, match="unknown"):
        module.config_from_dict(c.to_dict() | {"heads": 2})
    with pytest.raises(ValueError, match="expansion"):
        config(vocab_size=65, expansion=0)
    # the default size is about rnn3's 1,380,417 parameters
    assert abs(module.build(c).num_params() / 1_380_417 - 1) < 0.03
