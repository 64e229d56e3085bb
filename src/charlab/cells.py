"""What the recurrent units learned: every layer's activations over a text, features of the
text, each unit's correlation with them, and gate saturation (Karpathy, Johnson & Fei-Fei
2015, "Visualizing and Understanding Recurrent Networks").

The activations are recomputed here from the network's public weights (``model.rnn``'s
``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``), one layer after
the other, because ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` return only the last layer's outputs
and never the gates. ``tests/test_cells.py`` checks the last layer against ``model.rnn``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from charlab.model import CharRNN

# The paper's thresholds: a gate value below 0.1 is left-saturated, above 0.9 right-saturated.
LEFT, RIGHT = 0.1, 0.9
# Which gates saturate in a meaningful way (the candidate g / n is a tanh, not a gate).
GATES = {"lstm": ("input", "forget", "output"), "gru": ("reset", "update")}


@dataclass
class Activations:
    """One model's states over ``T`` characters: after reading character ``t``.

    ``hidden[k]`` (T, H) is layer k's output h; ``cell[k]`` LSTM cell state c (else empty);
    ``gates[k][name]`` (T, H) the gate values in [0, 1].
    """

    cell_type: str
    hidden: list[np.ndarray]
    cell: list[np.ndarray] = field(default_factory=list)
    gates: list[dict[str, np.ndarray]] = field(default_factory=list)

    def units(self) -> tuple[list[str], np.ndarray]:
        """Every unit as a column of one (T, U) array, and its name (``l1.h37``, ``l2.c5``)."""
        names, cols = [], []
        for k, h in enumerate(self.hidden):
            names += [f"l{k + 1}.h{j}" for j in range(h.shape[1])]
            cols.append(h)
            if self.cell:
                names += [f"l{k + 1}.c{j}" for j in range(self.cell[k].shape[1])]
                cols.append(self.cell[k])
        return names, np.concatenate(cols, axis=1)


def _layer_input(model: CharRNN, ids: torch.Tensor) -> torch.Tensor:
    if model.embed is not None:
        return model.embed(ids)
    return F.one_hot(ids, model.config.vocab_size).to(model.head.weight.dtype)


@torch.inference_mode()
def activations(model: CharRNN, ids: np.ndarray) -> Activations:
    """Run ``model`` (eval mode: no dropout) over ``ids`` from the zero state, keeping every
    layer's states and gates. Float64 on the CPU, so the recomputation is exact to rounding."""
    cell_type = model.config.cell
    if cell_type not in ("rnn", "lstm", "gru"):
        raise ValueError(f"unknown cell {cell_type!r}")
    rnn = model.rnn
    x = _layer_input(model, torch.as_tensor(np.asarray(ids, dtype=np.int64)).cpu()).double()
    out = Activations(cell_type, [])
    for k in range(model.config.layers):
        w_ih = getattr(rnn, f"weight_ih_l{k}").detach().cpu().double()
        w_hh = getattr(rnn, f"weight_hh_l{k}").detach().cpu().double()
        b_ih = getattr(rnn, f"bias_ih_l{k}").detach().cpu().double()
        b_hh = getattr(rnn, f"bias_hh_l{k}").detach().cpu().double()
        xw = x @ w_ih.t() + b_ih  # every step's input projection in one GEMM
        steps, size = xw.shape[0], w_hh.shape[1]
        h = torch.zeros(size, dtype=torch.float64)
        hs = torch.empty(steps, size, dtype=torch.float64)
        if cell_type == "rnn":
            for t in range(steps):
                h = torch.tanh(xw[t] + w_hh @ h + b_hh)
                hs[t] = h
        elif cell_type == "lstm":
            c = torch.zeros(size, dtype=torch.float64)
            cs = torch.empty_like(hs)
            gi, gf, go = (torch.empty_like(hs) for _ in range(3))
            for t in range(steps):
                z = xw[t] + w_hh @ h + b_hh
                i, f, g, o = z.chunk(4)  # torch's gate order: input, forget, cell, output
                i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
                c = f * c + i * g
                h = o * torch.tanh(c)
                hs[t], cs[t], gi[t], gf[t], go[t] = h, c, i, f, o
            out.cell.append(cs.numpy())
            out.gates.append({"input": gi.numpy(), "forget": gf.numpy(), "output": go.numpy()})
        else:  # gru: torch's order reset, update, new; r gates the hidden projection + bias
            gr, gz = torch.empty_like(hs), torch.empty_like(hs)
            xr, xz, xn = xw.chunk(3, dim=1)
            for t in range(steps):
                hr, hz, hn = (w_hh @ h + b_hh).chunk(3)
                r = torch.sigmoid(xr[t] + hr)
                u = torch.sigmoid(xz[t] + hz)
                n = torch.tanh(xn[t] + r * hn)
                h = (1 - u) * n + u * h
                hs[t], gr[t], gz[t] = h, r, u
            out.gates.append({"reset": gr.numpy(), "update": gz.numpy()})
        out.hidden.append(hs.numpy())
        x = hs  # eval mode: no dropout between layers
    return out


def saturation(acts: Activations) -> list[dict[str, dict[str, np.ndarray]]]:
    """Per layer and gate: each unit's fraction of steps left-saturated (< 0.1) and
    right-saturated (> 0.9), as ``{"left": (H,), "right": (H,)}``."""
    return [{name: {"left": (g < LEFT).mean(axis=0), "right": (g > RIGHT).mean(axis=0)}
             for name, g in layer.items()} for layer in acts.gates]


# --- features of the text -------------------------------------------------------------------

FEATURES = {
    "inside_quotes": "inside double quotes (flips at each \")",
    "inside_brackets": "inside ( ), [ ] or { }",
    "line_position": "characters since the start of the line",
    "line_start": "first character of a line",
    "speaker_line": "on a speaker-name line (a line ending with ':')",
    "inside_word": "a letter or digit (or an apostrophe between two)",
}
OPEN, CLOSE = "([{", ")]}"
QUOTES = '"\u201c\u201d'


def features(text: str) -> dict[str, np.ndarray]:
    """Each feature's value at every character of ``text`` (float64, len(text)), as a unit
    that has just read that character could know it (speaker_line also looks ahead to the
    line's end: a name line is recognisable from its capitals long before the colon)."""
    n = len(text)
    quotes = np.zeros(n)
    brackets = np.zeros(n)
    line_pos = np.zeros(n)
    line_start = np.zeros(n)
    word = np.zeros(n)
    inside, depth, pos = False, 0, 0
    for t, ch in enumerate(text):
        if ch in QUOTES:
            inside = not inside
        quotes[t] = inside
        if ch in OPEN:
            depth += 1
        elif ch in CLOSE:
            depth = max(0, depth - 1)
        brackets[t] = depth > 0
        line_start[t] = pos == 0
        line_pos[t] = pos
        pos = 0 if ch == "\n" else pos + 1
        word[t] = ch.isalnum() or (ch == "'" and 0 < t < n - 1 and text[t - 1].isalnum()
                                   and text[t + 1].isalnum())
    speaker = np.zeros(n)
    start = 0
    for line in text.split("\n"):
        end = start + len(line)
        if line.rstrip().endswith(":") and not line.startswith(" "):
            speaker[start:end + 1] = 1  # the name and its newline
        start = end + 1
    return {"inside_quotes": quotes, "inside_brackets": brackets, "line_position": line_pos,
            "line_start": line_start, "speaker_line": speaker, "inside_word": word}


def correlations(units: np.ndarray, feats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pearson correlation of every unit (columns of ``units``, (T, U)) with each feature;
    all NaN for a feature that is constant over the text (absent: nothing to track)."""
    u = units - units.mean(axis=0)
    un = np.sqrt((u * u).sum(axis=0))
    out = {}
    for name, f in feats.items():
        f = np.asarray(f, dtype=np.float64)
        d = f - f.mean()
        fn = math.sqrt(float(d @ d))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (d @ u) / (un * fn) if fn > 0 else np.full(u.shape[1], np.nan)
        out[name] = np.where(un > 0, r, np.nan) if fn > 0 else r
    return out


@dataclass(frozen=True)
class BestUnit:
    feature: str
    unit: str | None        # None: the feature is absent from the text
    index: int | None       # column in Activations.units()
    r: float                # Pearson correlation (signed); NaN when absent
    share: float            # fraction of characters where the feature is non-zero


def best_units(acts: Activations, feats: Mapping[str, np.ndarray]) -> list[BestUnit]:
    """For each feature, the unit whose |correlation| with it is highest."""
    names, units = acts.units()
    out = []
    for feature, r in correlations(units, feats).items():
        share = float(np.mean(np.asarray(feats[feature]) != 0))
        if np.all(np.isnan(r)):
            out.append(BestUnit(feature, None, None, math.nan, share))
            continue
        j = int(np.nanargmax(np.abs(r)))
        out.append(BestUnit(feature, names[j], j, float(r[j]), share))
    return out
