"""What a network's units learned: features of the text, each unit's correlation with them,
and gate saturation (Karpathy, Johnson & Fei-Fei 2015, "Visualizing and Understanding
Recurrent Networks").

The activations come from the network's family (:meth:`charlab.families.base.Family.units`,
an :class:`~charlab.families.base.Activations`); a family without units is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from charlab.families.base import Activations

# The paper's thresholds: a gate value below 0.1 is left-saturated, above 0.9 right-saturated.
LEFT, RIGHT = 0.1, 0.9


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
