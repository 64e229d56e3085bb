"""The GPT family (``cell: gpt``): a decoder-only Transformer (nanoGPT's shape) for
characters, and its LanguageModel adapter.

:class:`GPT`: token embedding + learned position embedding -> ``layers`` pre-norm blocks
(LayerNorm -> causal self-attention -> residual; LayerNorm -> 4x GELU MLP -> residual) ->
final LayerNorm -> output layer. The output layer is **weight-tied** to the token embedding
(as nanoGPT, so the baby-GPT size has nanoGPT's parameter count) and has its own bias, the
model's "nothing read yet" distribution (what :meth:`GPTLM.start` gives for an empty
prime). Attention is ``torch.nn.functional.scaled_dot_product_attention`` (flash attention
on CUDA).

``forward(idx, cache)`` answers the family contract's ``(logits, state)`` so the trainer
runs it as any network: trained with ``cache=None`` it carries nothing between steps and returns
``None``. It computes in its parameters' dtype, and under ``torch.autocast`` when a caller
enables it; it never picks a dtype itself.

:class:`GPTLM` scores with sliding windows of ``context`` characters advancing by
``stride`` (default ``context // 2``): the first window scores every character in it, each
later window only its last ``stride`` positions, so every character is predicted from
between ``context - stride + 1`` and ``context`` characters before it (all of them near the
start). Sampling keeps a KV cache, one step per character; when the window is full it
slides by ``stride``: it drops the oldest characters, keeps the last ``context - stride`` and
recomputes their cache in one pass, so predictions see the same range of context as scoring.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from charlab.families.base import Family, eval_mode
from charlab.lm import LanguageModel
from charlab.params.core import ParamsError, check, fraction, positive

CELL = "gpt"


@dataclass(frozen=True)
class GPTKeys:
    """The ``train:`` keys of a ``cell: gpt`` entry (besides the keys every entry has)."""

    heads: int = field(metadata=check(positive, "attention heads, dividing hidden_size"))
    context: int = field(metadata=check(
        positive, "characters a GPT reads before each prediction"))
    layers: int = field(default=1, metadata=check(positive, "Transformer blocks"))
    hidden_size: int = field(default=512, metadata=check(positive, "the residual width"))
    dropout: float = field(default=0.1, metadata=check(
        fraction, "dropout on the embeddings, attention and each block's output"))

    def validate(self, path: str) -> None:
        if self.hidden_size % self.heads:
            raise ParamsError(
                f"{path}.hidden_size: {self.hidden_size} must be a multiple of "
                f"{path}.heads ({self.heads}): each head gets hidden_size / heads")


@dataclass(frozen=True)
class GPTConfig:
    """Everything needed to rebuild a :class:`GPT`; stored in checkpoints as a dict."""

    vocab_size: int
    layers: int = 6
    heads: int = 6
    hidden_size: int = 384
    context: int = 256
    dropout: float = 0.2
    cell: str = CELL

    def __post_init__(self) -> None:
        if self.cell != CELL:
            raise ValueError(f"cell must be {CELL!r}, got {self.cell!r}")
        for key in ("vocab_size", "layers", "heads", "hidden_size", "context"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of heads "
                             f"{self.heads}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> GPTConfig:
        return GPT_FAMILY.config_from_dict(obj)


class KVCache:
    """Keys and values of every layer for the characters read so far, (1..B, heads, T, d)."""

    def __init__(self, layers: int) -> None:
        self.kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * layers

    @property
    def length(self) -> int:
        first = self.kv[0]
        return 0 if first is None else first[0].shape[2]


class _Attention(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.heads = c.heads
        self.qkv = nn.Linear(c.hidden_size, 3 * c.hidden_size)
        self.proj = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout = c.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        b, t, h = x.shape
        q, k, v = self.qkv(x).split(h, dim=2)
        q, k, v = (z.view(b, t, self.heads, h // self.heads).transpose(1, 2) for z in (q, k, v))
        past = 0
        if cache is not None:
            old = cache.kv[layer]
            if old is not None:
                past = old[0].shape[2]
                k, v = torch.cat([old[0], k], dim=2), torch.cat([old[1], v], dim=2)
            cache.kv[layer] = (k, v)
        p = self.dropout if self.training else 0.0
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        elif t == 1:  # one new position sees every key: no mask
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            # new position i (absolute past + i) sees keys 0 .. past + i
            mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(b, t, h)
        return F.dropout(self.proj(y), p, self.training)


class _Block(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(c.hidden_size)
        self.attn = _Attention(c)
        self.ln2 = nn.LayerNorm(c.hidden_size)
        self.fc = nn.Linear(c.hidden_size, 4 * c.hidden_size)
        self.proj = nn.Linear(4 * c.hidden_size, c.hidden_size)
        self.dropout = c.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        mlp = self.proj(F.gelu(self.fc(self.ln2(x))))
        return x + F.dropout(mlp, self.dropout, self.training)


class GPT(nn.Module):
    """Characters in, next-character logits out (see the module docstring)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tok = nn.Embedding(c.vocab_size, c.hidden_size)
        self.pos = nn.Embedding(c.context, c.hidden_size)
        self.blocks = nn.ModuleList(_Block(c) for _ in range(c.layers))
        self.ln_f = nn.LayerNorm(c.hidden_size)
        self.head_bias = nn.Parameter(torch.zeros(c.vocab_size))
        # nanoGPT's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2L)
        for name, p in self.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                std = 0.02 / math.sqrt(2 * c.layers) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias") and not name.startswith("ln") and ".ln" not in name:
                nn.init.zeros_(p)
        # what the blocks and the output layer compute in; None: the parameters' dtype
        self.recurrence_dtype: torch.dtype | None = None
        self.head_dtype: torch.dtype | None = None

    def set_precision(self, body: torch.dtype | None, head: torch.dtype | None) -> None:
        """Compute the blocks in ``body`` and the output layer in ``head`` (charlab.runtime's
        ``recurrence`` and ``head``): matrix products autocast to that dtype, LayerNorm and
        softmax in float32, parameters float32."""
        self.recurrence_dtype, self.head_dtype = body, head

    def compute_dtypes(self) -> tuple[torch.dtype, torch.dtype]:
        param = self.head_bias.dtype
        return self.recurrence_dtype or param, self.head_dtype or param

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The tied output layer: final LayerNorm, then ``h @ tok.weight^T + bias``."""
        return F.linear(self.ln_f(h), self.tok.weight, self.head_bias)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None
                ) -> tuple[torch.Tensor, KVCache | None]:
        """``idx`` (B, T) int64 -> logits (B, T, vocab) and ``cache`` extended by ``T``.

        Without a cache (training, scoring) positions start at 0; with one they continue
        after the characters it holds. Positions past ``context`` are an error."""
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError("a GPT carries no hidden state between chunks; pass a KVCache "
                            "or None")
        start = 0 if cache is None else cache.length
        t = idx.shape[1]
        if start + t > self.config.context:
            raise ValueError(f"{start + t} positions exceed the context of "
                             f"{self.config.context}")
        pos = torch.arange(start, start + t, device=idx.device)
        x = F.dropout(self.tok(idx) + self.pos(pos), self.config.dropout, self.training)
        # autocast is safe here (no cuDNN RNN); it is set from the model's own dtypes, so an
        # autocast around the call changes nothing
        param, (body, head) = self.head_bias.dtype, self.compute_dtypes()
        kind = idx.device.type
        with torch.autocast(kind, dtype=body, enabled=body != param):
            for i, block in enumerate(self.blocks):
                x = block(x, cache, i)
        with torch.autocast(kind, dtype=head, enabled=head != param):
            return self.logits(x), cache


class GPTLM:
    """A :class:`GPT` as a :class:`charlab.lm.LanguageModel` (see the module docstring)."""

    def __init__(self, model: GPT, device: torch.device | str, *, stride: int | None = None,
                 batch: int = 32) -> None:
        context = model.config.context
        self.stride = max(1, context // 2) if stride is None else stride
        if not 1 <= self.stride <= context or batch < 1:
            raise ValueError(f"stride must be in [1, {context}] and batch >= 1")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.vocab_size = model.config.vocab_size
        self.context = context
        self.batch = batch

    def num_params(self) -> int:
        return self.model.num_params()

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.long, device=self.device)

    def log_probs(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        m = len(ids) - 1
        if m <= 0:
            return np.zeros(0)
        c, s = min(self.context, m), self.stride
        # window k reads x[k*s : k*s + c]; window 0 scores all of it, window k > 0 its
        # positions >= c - s, i.e. targets k*s + c - s ... (k+1)*s + c - s - 1
        n_windows = 1 + max(0, math.ceil((m - c) / s))
        cols = np.arange(c)
        out = np.empty(m, dtype=np.float64)
        with eval_mode(self.model), torch.inference_mode():
            for a in range(0, n_windows, self.batch):  # index arrays per batch: O(m) memory
                starts = np.arange(a, min(a + self.batch, n_windows)) * s
                pos = starts[:, None] + cols[None, :]
                valid = pos < m
                x = np.where(valid, ids[np.minimum(pos, m - 1)], 0)
                y = np.where(valid, ids[np.minimum(pos + 1, m)], 0)
                keep = valid & ((cols[None, :] >= c - s) | (starts[:, None] == 0))
                logits, _ = self.model(self._tensor(x))
                lp = torch.log_softmax(logits.float(), dim=-1)
                lp = lp.gather(-1, self._tensor(y).unsqueeze(-1)).squeeze(-1)
                out[pos[keep]] = lp.double().cpu().numpy()[keep]
        return out

    # --- sampling: state = (KV cache, the characters it holds) ---------------------------
    def _next(self, logits: torch.Tensor) -> np.ndarray:
        return torch.log_softmax(logits.float().reshape(-1), dim=-1).double().cpu().numpy()

    def _read(self, window: np.ndarray) -> tuple[np.ndarray, Any]:
        cache = KVCache(self.model.config.layers)
        logits, _ = self.model(self._tensor(window[None, :]), cache)
        return self._next(logits[0, -1]), (cache, window)

    def start(self, prime: np.ndarray) -> tuple[np.ndarray, Any]:
        prime = np.asarray(prime, dtype=np.int64)
        with eval_mode(self.model), torch.inference_mode():
            if len(prime) == 0:
                # nothing read: the output bias alone, the model's "empty" distribution
                return self._next(self.model.head_bias), None
            # the window scoring reads its last character t = n - 1 in: all of the prime
            # while it fits, else from the window start k * stride that puts t among the
            # window's last stride positions, so c - stride + 1 ... c characters (at least
            # one: context 1 has stride 1)
            n, c, s = len(prime), self.context, self.stride
            keep = n if n <= c else c - s + 1 + (n - 1 - c) % s
            return self._read(prime[n - keep:])

    def step(self, state: Any, next_id: int) -> tuple[np.ndarray, Any]:
        with eval_mode(self.model), torch.inference_mode():
            if state is None:
                return self._read(np.array([next_id], dtype=np.int64))
            cache, window = state
            window = np.append(window, np.int64(next_id))
            if cache.length >= self.context:
                # full: slide by stride, recomputing the cache of the characters kept
                return self._read(window[-(self.context - self.stride + 1):])
            logits, cache = self.model(self._tensor(window[None, -1:]), cache)
            return self._next(logits[0, -1]), (cache, window)


class GPTFamily(Family):
    name = "gpt"
    cells = (CELL,)
    Keys = GPTKeys
    Config = GPTConfig
    window_key = "context"  # a GPT trains on windows of `context` characters
    shape_keys = ("cell", "layers", "heads", "hidden_size", "context")
    # the token embedding is tied to the output layer, which has its own bias
    vocab_axes = {"tok.weight": 0, "head_bias": 0}
    no_units = "a Transformer has no recurrent units to read"

    def config(self, cell: str, keys: GPTKeys, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, layers=keys.layers, heads=keys.heads,
                         hidden_size=keys.hidden_size, context=keys.context,
                         dropout=keys.dropout)

    def build(self, config: GPTConfig) -> GPT:
        return GPT(config)

    def language_model(self, net: nn.Module, device: torch.device | str) -> LanguageModel:
        return GPTLM(net, device)

    def forward_macs(self, config: GPTConfig) -> int:
        """With V characters, width d (``hidden_size``), L pre-norm blocks and windows of T
        characters (``context``), per position and block: the q, k, v projections 3 d^2,
        the attention output 1 d^2, the MLP 4 d^2 + 4 d^2; attention itself, causal, at
        position t (0-based) reads t + 1 keys: QK^T and AV (t + 1) d each, so (T + 1) d per
        position on average over a window. The output layer is tied to the token embedding
        but is still a product, d V; the embeddings are lookups::

            macs = L (12 d^2 + (T + 1) d)  +  d V
        """
        d = config.hidden_size
        return config.layers * (12 * d * d + (config.context + 1) * d) + d * config.vocab_size


GPT_FAMILY = GPTFamily()
