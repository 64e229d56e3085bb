"""Where and why the models differ, from the per-character scores of one scoring pass.

- bits/char per kind of character (lowercase, uppercase, space, ...) and per position
  (first of a line, first of a word, inside a word), with each class's share of the text:
  each group is a partition, so share-weighted class bits add up to the model's bpc;
- two models character by character: the difference in bits as colour, and the contexts
  where each wins most;
- the units of every network whose family has them (:mod:`charlab.cells`): the unit that
  best tracks each feature of the text, rendered over it, and gate saturation; a network
  without units (a GPT) is skipped, and the summary says why.
"""

from __future__ import annotations

import html
import math
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from charlab import cells, render  # noqa: E402
from charlab.checkpoint import load_checkpoint  # noqa: E402  (the one place checkpoints load)
from charlab.encoding import Corpus, Vocab  # noqa: E402
from charlab.errors import CharlabError  # noqa: E402
from charlab.evaluate import SplitScores  # noqa: E402
from charlab.families import family_of  # noqa: E402
from charlab.families.base import NoUnits  # noqa: E402
from charlab.io import atomic_paths, json_text  # noqa: E402

LN2 = math.log(2)
KINDS = ("lowercase", "uppercase", "space", "newline", "punctuation", "digit", "other")
POSITIONS = ("line_start", "word_start", "word_inside", "not_in_word")
CLASS_COLUMNS = ["model", "group", "class", "label", "chars", "share", "bpc"]
# Difference in bits at which the colour of a character gets one step stronger.
BIT_EDGES = (0.25, 0.5, 1.0, 2.0, 4.0)
# Activation (scaled to [-1, 1]) at which a unit's colour gets one step stronger.
UNIT_EDGES = (0.1, 0.3, 0.5, 0.7, 0.9)
PNG_COLS = 80


class AnalysisError(CharlabError, ValueError):
    """The analysis cannot run on what it was given (scores, models, text)."""


# --- classes of characters -----------------------------------------------------------------

def char_kind(ch: str) -> str:
    if ch == "\n":
        return "newline"
    if ch.isspace():
        return "space"
    if ch.islower():
        return "lowercase"
    if ch.isupper():
        return "uppercase"
    if ch.isdigit():
        return "digit"
    if unicodedata.category(ch).startswith("P"):
        return "punctuation"
    return "other"


def class_masks(text: str) -> dict[tuple[str, str], np.ndarray]:
    """For the predicted characters ``text[1:]``: one boolean mask per (group, class).

    Group ``kind`` and group ``position`` each split every predicted character into exactly
    one class. line_start: the character after a newline; word_start / word_inside: a word
    character (as :func:`charlab.cells.features` defines inside_word) after a non-word / a
    word character; not_in_word: the rest."""
    chars = np.array(list(text[1:]), dtype=object) if len(text) > 1 else np.array([], object)
    kinds = np.array([char_kind(c) for c in chars], dtype=object)
    out = {("kind", k): kinds == k for k in KINDS}
    word = cells.features(text)["inside_word"].astype(bool)
    prev_nl = np.array([c == "\n" for c in text[:-1]], dtype=bool)
    cur, prev = word[1:], word[:-1]
    out[("position", "line_start")] = prev_nl
    out[("position", "word_start")] = ~prev_nl & cur & ~prev
    out[("position", "word_inside")] = ~prev_nl & cur & prev
    out[("position", "not_in_word")] = ~prev_nl & ~cur
    return out


def class_table(text: str, logprobs: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """bits/char of each model on each class of ``text[1:]``, with the class's share.

    ``logprobs[name][t]`` is the model's natural-log probability of ``text[t + 1]``. Classes
    with no character are left out (share 0: they add nothing)."""
    masks = class_masks(text)
    n = len(text) - 1
    rows = []
    for name, lp in logprobs.items():
        lp = np.asarray(lp, dtype=np.float64)
        if lp.shape != (n,):
            raise AnalysisError(f"{name}: {lp.shape[0]} scores for {n} predicted characters")
        for (group, cls), m in masks.items():
            count = int(m.sum())
            if count:
                rows.append({"model": name, "group": group, "class": cls,
                             "label": f"{cls} · {name}", "chars": count,
                             "share": count / n, "bpc": float(-lp[m].sum() / count / LN2)})
    return pd.DataFrame(rows, columns=CLASS_COLUMNS)


def format_class_table(table: pd.DataFrame) -> str:
    """Plain text, one row per class: its share, then each model's bits/char."""
    models = list(dict.fromkeys(table["model"]))
    wide = table.pivot_table(index=["group", "class"], columns="model", values="bpc",
                             sort=False)
    share = table.drop_duplicates(["group", "class"]).set_index(["group", "class"])["share"]
    w = {m: max(12, len(m) + 2) for m in models}
    head = f"{'class':<14}{'share':>8}" + "".join(f"{m:>{w[m]}}" for m in models)
    lines = [head, "-" * len(head)]
    for group in ("kind", "position"):
        for (g, cls), row in wide.iterrows():
            if g == group:
                lines.append(f"{cls:<14}{share[(g, cls)]:>8.1%}"
                             + "".join(f"{row[m]:>{w[m]}.3f}" for m in models))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n(bits per character; share = fraction of the text)"


def plot_classes(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Grouped bars: a group of bars per class, one bar per model, share under each name."""
    models = list(dict.fromkeys(table["model"]))
    keys = list(dict.fromkeys(zip(table["group"], table["class"], strict=True)))
    share = table.drop_duplicates(["group", "class"]).set_index(["group", "class"])["share"]
    wide = table.set_index(["group", "class", "model"])["bpc"]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.9 * len(keys) + 2), 4.8))
    width = 0.8 / len(models)
    x = np.arange(len(keys), dtype=float)
    x[[i for i, k in enumerate(keys) if k[0] == "position"]] += 0.6  # gap between groups
    for j, m in enumerate(models):
        ax.bar(x + (j - (len(models) - 1) / 2) * width,
               [wide.get((g, c, m), np.nan) for g, c in keys], width, label=m, color=f"C{j}")
    ax.set_xticks(x, [f"{c.replace('_', ' ')}\n{share[(g, c)]:.1%}" for g, c in keys],
                  fontsize=8)
    ax.set_ylabel("test bits per character (lower is better)")
    ax.set_title("Where the bits go: by kind of character (left) and position (right); "
                 "share of the text under each", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


# --- two models, character by character -----------------------------------------------------

@dataclass(frozen=True)
class Context:
    """One predicted character: where it is, what came before and after, each model's bits."""

    position: int        # index of the character in the text
    char: str
    before: str
    after: str
    bits_a: float
    bits_b: float

    @property
    def gain(self) -> float:
        """Bits model A saved over model B on this character (negative: B was better)."""
        return self.bits_b - self.bits_a


def bits_gain(lp_a: np.ndarray, lp_b: np.ndarray) -> np.ndarray:
    """Per predicted character, how many bits fewer model A spent than model B."""
    return (np.asarray(lp_a, np.float64) - np.asarray(lp_b, np.float64)) / LN2


def top_contexts(text: str, lp_a: np.ndarray, lp_b: np.ndarray, n: int = 20,
                 width: int = 40) -> tuple[list[Context], list[Context]]:
    """The ``n`` characters where A beats B by most bits, and where B beats A; at most one
    per ``width`` characters, so one long run does not fill the list."""
    gain = bits_gain(lp_a, lp_b)

    def pick(order: np.ndarray) -> list[Context]:
        taken: list[int] = []
        for t in order:
            if len(taken) == n:
                break
            if all(abs(int(t) - u) >= width for u in taken):
                taken.append(int(t))
        out = []
        for t in taken:
            pos = t + 1  # gain[t] is about text[t + 1]
            out.append(Context(pos, text[pos], text[max(0, pos - width):pos],
                               text[pos + 1:pos + 1 + width // 4],
                               float(-lp_a[t] / LN2), float(-lp_b[t] / LN2)))
        return out
    order = np.argsort(-gain, kind="stable")
    return pick(order), pick(order[::-1])


def gain_levels(text: str, gain: np.ndarray) -> np.ndarray:
    """Colour level of every character of ``text``; the first (never predicted) gets 0."""
    return np.r_[0, render.levels(gain, BIT_EDGES)] if len(text) else np.zeros(0, np.int64)


def _ctx_cell(c: Context) -> render.Markup:
    esc = lambda s: html.escape(s.replace("\n", render.NEWLINE))  # noqa: E731
    return render.Markup(f'<span class="ctx">{esc(c.before)}<span class="hit">'
                         f"{esc(c.char)}</span>{esc(c.after)}</span>")


def compare_page(text: str, name_a: str, name_b: str, lp_a: np.ndarray, lp_b: np.ndarray,
                 table: pd.DataFrame, n_contexts: int = 20, width: int = 40,
                 source: str = "the test split",
                 wins: tuple[list[Context], list[Context]] | None = None) -> str:
    """The HTML page: summary, per-class table, the contexts each model wins (``wins``, or
    :func:`top_contexts`), then the whole text coloured by the difference in bits."""
    gain = bits_gain(lp_a, lp_b)
    wins_a, wins_b = wins or top_contexts(text, lp_a, lp_b, n_contexts, width)
    bpc_a, bpc_b = -np.mean(lp_a) / LN2, -np.mean(lp_b) / LN2
    body = [f"<p>{len(gain):,} predicted characters of {html.escape(source)}. "
            f"<b>{html.escape(name_a)}</b> {bpc_a:.4f} bits/char, <b>{html.escape(name_b)}"
            f"</b> {bpc_b:.4f}. <span class=\"p4\">Blue</span>: {html.escape(name_a)} spent "
            f"fewer bits on the character; <span class=\"m4\">red</span>: "
            f"{html.escape(name_b)} did. {html.escape(name_a)} is better on "
            f"{np.mean(gain > 0):.1%} of the characters.</p>",
            render.legend_html(BIT_EDGES, f"bits: {name_a} better", f"{name_b} better, bits:")]
    models = [name_a, name_b]
    wide = table[table["model"].isin(models)]
    keys = list(dict.fromkeys(zip(wide["group"], wide["class"], strict=True)))
    idx = wide.set_index(["group", "class", "model"])
    rows = [[cls, f"{idx.loc[(g, cls, name_a), 'share']:.1%}",
             *(f"{idx.loc[(g, cls, m), 'bpc']:.3f}" for m in models)] for g, cls in keys]
    body += ["<h2>Bits per character by class</h2>",
             render.table_html(["class", "share", *models], rows)]
    for title, wins in ((f"Where {name_a} wins most", wins_a),
                        (f"Where {name_b} wins most", wins_b)):
        body += [f"<h2>{html.escape(title)}</h2>", render.table_html(
            ["position", f"{name_a} bits", f"{name_b} bits", "gain", "context"],
            [[c.position, f"{c.bits_a:.2f}", f"{c.bits_b:.2f}", f"{c.gain:+.2f}",
              _ctx_cell(c)] for c in wins], left=(4,))]
    body += ["<h2>The text</h2>", render.colored_html(text, gain_levels(text, gain))]
    return render.page(f"{name_a} against {name_b}", "\n".join(body))


# --- the recurrent units ----------------------------------------------------------------------

def load_network(path: str | os.PathLike, vocab: Vocab | None = None) -> Any:
    """A trained model's network on the CPU, in eval mode (the one place this module and
    ``charlab cells`` load checkpoints)."""
    return load_checkpoint(path, "cpu", vocab=vocab)[0]


def unit_levels(values: np.ndarray) -> np.ndarray:
    """Colour levels of one unit's activation, scaled by its largest size (a cell state c is
    not bounded by 1)."""
    v = np.asarray(values, dtype=np.float64)
    top = float(np.max(np.abs(v))) if len(v) else 0.0
    return render.levels(v / top if top > 0 else v, UNIT_EDGES)


@dataclass(frozen=True)
class CellsResult:
    model: str
    cell: str
    chars: int
    best: list[cells.BestUnit]
    acts: cells.Activations
    saturation: list[dict[str, dict[str, np.ndarray]]]


def cells_report(name: str, model: Any, text: str, ids: np.ndarray) -> CellsResult:
    """Activations over ``text`` (``ids`` its encoding), the best unit for each feature.
    Raises :class:`~charlab.families.base.NoUnits` for a family without units."""
    if len(text) < 2:
        raise AnalysisError(f"{name}: need at least 2 characters to read the units on")
    if len(ids) != len(text):
        raise ValueError(f"{len(ids)} ids for {len(text)} characters")
    acts = family_of(model).units(model, ids)
    best = cells.best_units(acts, cells.features(text))
    return CellsResult(name, model.config.cell, len(text), best, acts, cells.saturation(acts))


def _unit_values(res: CellsResult, b: cells.BestUnit) -> np.ndarray:
    return res.acts.units()[1][:, b.index]


def cells_page(res: CellsResult, text: str, source: str = "the test split") -> str:
    rows = [[b.feature, cells.FEATURES[b.feature], f"{b.share:.1%}", b.unit or "–",
             "–" if b.unit is None else f"{b.r:+.3f}"] for b in res.best]
    body = [f"<p>{res.model} ({res.cell}, {len(res.acts.hidden)} layer(s) of "
            f"{res.acts.hidden[0].shape[1]} units) read {len(text):,} characters of "
            f"{html.escape(source)} from the zero state. For each feature of the text, the unit "
            "(lN.hJ: hidden output J of layer N; lN.cJ: LSTM cell state) whose activation "
            "correlates best with it (Pearson r). A feature absent from the text has no unit."
            '</p>', render.table_html(["feature", "meaning", "share", "best unit", "r"], rows,
                                      left=(0, 1, 3)),
            render.legend_html(UNIT_EDGES, "above 0 (of the unit's largest |value|)",
                               "below 0:")]
    if res.saturation:
        body += ["<h2>Gate saturation</h2>", "<p>Fraction of (unit, step) gate values below "
                 f"{cells.LEFT} (left-saturated) and above {cells.RIGHT} (right-saturated), "
                 "per layer.</p>", render.table_html(
                     ["layer", "gate", "left-saturated", "right-saturated"],
                     [[k + 1, g, f"{s['left'].mean():.1%}", f"{s['right'].mean():.1%}"]
                      for k, layer in enumerate(res.saturation) for g, s in layer.items()],
                     left=(1,))]
    for b in res.best:
        if b.unit is None:
            continue
        body += [f"<h2>{b.feature}: unit {b.unit}, r = {b.r:+.3f}</h2>",
                 f"<p>{html.escape(cells.FEATURES[b.feature])}. Blue: activation above 0, "
                 "red: below, scaled by the unit's largest value.</p>",
                 render.colored_html(text, unit_levels(_unit_values(res, b)))]
    return render.page(f"What the units of {res.model} track", "\n".join(body))


def cells_png(res: CellsResult, text: str, path: str | os.PathLike, chars: int) -> None:
    panels = [(f"{b.feature}: unit {b.unit}, r = {b.r:+.3f}",
               text[:chars], unit_levels(_unit_values(res, b)[:chars]))
              for b in res.best if b.unit is not None]
    if not panels:  # nothing to show: the plain text, so that the report's link works
        panels = [(f"{res.model}: no feature present", text[:chars],
                   np.zeros(min(chars, len(text)), np.int64))]
    render.colored_png(panels, path, cols=PNG_COLS,
                       legend="blue: activation > 0, red: < 0 (scaled by the unit's maximum)")


def plot_saturation(res: CellsResult, path: str | os.PathLike) -> None:
    """The paper's saturation plot: per layer, each gate unit's left- vs right-saturated
    fraction of steps."""
    layers = len(res.saturation)
    fig, axes = plt.subplots(1, layers, figsize=(3.6 * layers, 3.6), squeeze=False)
    for k, (ax, layer) in enumerate(zip(axes[0], res.saturation, strict=True)):
        for j, (gate, s) in enumerate(layer.items()):
            ax.scatter(s["left"], s["right"], s=8, alpha=0.6, color=f"C{j}", label=gate)
        ax.plot([0, 1], [1, 0], color="#999", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"fraction left-saturated (< {cells.LEFT})")
        if k == 0:
            ax.set_ylabel(f"fraction right-saturated (> {cells.RIGHT})")
        ax.set_title(f"{res.model} layer {k + 1}")
        ax.legend(fontsize=7)
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


# --- the stage ------------------------------------------------------------------------------

@dataclass(frozen=True)
class AnalyzeSettings:
    excerpt_chars: int = 1200
    cells_chars: int = 10000
    top_contexts: int = 20
    context_chars: int = 40
    pairs: tuple[tuple[str, str], ...] = ()


def _slug(*names: str) -> str:
    return "_vs_".join(re.sub(r"[^A-Za-z0-9_-]", "_", n) for n in names)


def best_pair(scores: SplitScores, trained: Sequence[str], ngrams: Sequence[str]
              ) -> tuple[str, str]:
    """The trained model and the n-gram with the lowest nll on the scored split."""
    def best(names: Sequence[str], what: str) -> str:
        have = [n for n in names if n in scores.models]
        if not have:
            raise AnalysisError(f"the scores hold no {what} model (they have "
                                f"{', '.join(scores.models)})")
        return min(have, key=lambda n: -float(scores[n].sum()))
    return best(trained, "trained"), best(ngrams, "n-gram")


def analyze(scores: SplitScores, corpus: Corpus, checkpoints: Mapping[str, str | os.PathLike],
            ngrams: Sequence[str], settings: AnalyzeSettings, *,
            class_csv: str | os.PathLike, figures_dir: str | os.PathLike,
            pages_dir: str | os.PathLike, summary: str | os.PathLike) -> dict:
    """Every analysis output of the pipeline, written all together or not at all.

    ``checkpoints``: trained model name -> its checkpoint; ``ngrams``: the n-gram names.
    Returns the summary that it writes as JSON (what the report shows)."""
    split = scores.split
    a, b = corpus.manifest.splits[split]
    if a != scores.start or b - a - 1 != scores.logprobs.shape[1]:
        raise AnalysisError(
            f"the scores are for {scores.logprobs.shape[1]} characters from offset "
            f"{scores.start}, the corpus's {split} split has {b - a - 1} from {a}: rerun "
            "evaluate (`dvc repro`)")
    wanted = [*ngrams, *checkpoints, *(n for pair in settings.pairs for n in pair)]
    missing = [n for n in dict.fromkeys(wanted) if n not in scores.models]
    if missing:
        raise AnalysisError(f"no scores for {', '.join(missing)} (the scores file has "
                            f"{', '.join(scores.models)}): rerun evaluate (`dvc repro`)")
    ids = np.asarray(corpus.split(split), dtype=np.int64)
    text = corpus.vocab.decode(ids)
    figures_dir, pages_dir = Path(figures_dir), Path(pages_dir)
    table = class_table(text, {m: scores[m] for m in scores.models})
    # 9 decimals: the share-weighted class bits read back from the CSV still add up to the
    # model's bpc within 1e-6 (6 decimals would not: 7 rounded products)
    writes: list[tuple[Path, object]] = [(Path(class_csv), lambda p: table.to_csv(
        p, index=False, float_format="%.9f"))]
    writes.append((figures_dir / "class_bpc.png", lambda p: plot_classes(table, p)))
    out: dict = {"split": split, "chars": len(text) - 1, "class_figure": "class_bpc.png",
                 "pairs": [], "cells": [], "skipped": []}

    pairs = [best_pair(scores, list(checkpoints), ngrams)]
    pairs += [p for p in settings.pairs if p not in pairs]
    for na, nb in pairs:
        slug = _slug(na, nb)
        lp_a, lp_b = scores[na], scores[nb]
        wins_a, wins_b = top_contexts(text, lp_a, lp_b, settings.top_contexts,
                                      settings.context_chars)
        doc = compare_page(text, na, nb, lp_a, lp_b, table, source=f"the {split} split",
                           wins=(wins_a, wins_b))
        writes.append((pages_dir / f"compare_{slug}.html",
                       lambda p, doc=doc: p.write_text(doc, encoding="utf-8")))
        n_ex = min(settings.excerpt_chars, len(text))
        lev = gain_levels(text, bits_gain(lp_a, lp_b))[:n_ex]
        writes.append((figures_dir / f"compare_{slug}.png", lambda p, n_ex=n_ex, lev=lev,
                       na=na, nb=nb: render.colored_png(
                           [(f"{na} against {nb}: the first {n_ex} test characters",
                             text[:n_ex], lev)], p, cols=PNG_COLS,
                           legend=f"blue: {na} better, red: {nb} better (steps at "
                                  f"{'/'.join(f'{e:g}' for e in BIT_EDGES)} bits)")))
        gain = bits_gain(lp_a, lp_b)
        out["pairs"].append({
            "a": na, "b": nb, "page": f"compare_{slug}.html", "figure": f"compare_{slug}.png",
            "bpc_a": float(-lp_a.mean() / LN2), "bpc_b": float(-lp_b.mean() / LN2),
            "a_better_share": float(np.mean(gain > 0)),
            "wins_a": [asdict(c) for c in wins_a], "wins_b": [asdict(c) for c in wins_b]})

    n_cells = min(settings.cells_chars, len(text))
    excerpt = text[:n_cells]
    for name, path in checkpoints.items():
        try:
            res = cells_report(name, load_network(path, corpus.vocab), excerpt, ids[:n_cells])
        except NoUnits as e:
            out["skipped"].append({"model": name, "why": str(e)})
            continue
        doc = cells_page(res, excerpt, f"the {split} split")
        writes.append((pages_dir / f"cells_{_slug(name)}.html",
                       lambda p, doc=doc: p.write_text(doc, encoding="utf-8")))
        writes.append((figures_dir / f"cells_{_slug(name)}.png", lambda p, res=res:
                       cells_png(res, excerpt, p, min(settings.excerpt_chars // 3, n_cells))))
        entry = {"model": name, "cell": res.cell, "chars": n_cells,
                 "page": f"cells_{_slug(name)}.html", "figure": f"cells_{_slug(name)}.png",
                 "best": [{"feature": b.feature, "unit": b.unit,
                           "r": None if b.unit is None else round(b.r, 6),
                           "share": round(b.share, 6)} for b in res.best]}
        if res.saturation:
            writes.append((figures_dir / f"saturation_{_slug(name)}.png",
                           lambda p, res=res: plot_saturation(res, p)))
            entry["saturation_figure"] = f"saturation_{_slug(name)}.png"
            entry["saturation"] = [{g: {"left": float(s["left"].mean()),
                                        "right": float(s["right"].mean())}
                                    for g, s in layer.items()} for layer in res.saturation]
        out["cells"].append(entry)

    writes.append((Path(summary), lambda p: p.write_text(json_text(out), encoding="utf-8")))
    # all or nothing: a failed write (disk full) replaces none of the previous outputs
    with atomic_paths(*(p for p, _ in writes)) as tmps:
        for (_, write), tmp in zip(writes, tmps, strict=True):
            write(tmp)  # type: ignore[operator]
    return out
