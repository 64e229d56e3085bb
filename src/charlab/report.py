"""metrics/report.md and its figures: what a person reads after `dvc repro`."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or servers
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from charlab.io import atomic_path, read_json, write_text  # noqa: E402

EXCERPT_CHARS = 300
PRIME_CONTEXT = 100  # at most this much of the prime leads a sample's excerpt


@dataclass(frozen=True)
class TrainedInfo:
    """What the report shows about one trained model's run."""

    curve: pd.DataFrame          # the train stage's loss curve
    chars_per_step: int          # batch_size * seq_length
    run: Mapping[str, Any] = field(default_factory=dict)  # the train stage's run info

    @property
    def device(self) -> str:
        """Where it trained: ``cuda (NVIDIA H100 80GB HBM3)``, ``cpu``; ``?`` if unknown."""
        device, name = self.run.get("device"), self.run.get("device_name")
        if not device:
            return "?"
        return f"{device} ({name})" if device == "cuda" and name else str(device)

    @property
    def precision(self) -> str:
        return str(self.run.get("precision") or "?")

    @property
    def train_seconds(self) -> float:
        return float(self.curve["elapsed_sec"].iloc[-1]) if len(self.curve) else math.nan

    @property
    def chars_per_sec(self) -> float:
        """Mean training throughput over the run (evaluation time excluded)."""
        c = self.curve
        if not len(c):
            return math.nan
        steps = c["step"].diff().fillna(c["step"].iloc[0])
        seconds = (steps * self.chars_per_step / c["chars_per_sec"]).sum()
        return float(c["step"].iloc[-1] * self.chars_per_step / seconds)


def read_run_info(path: str | os.PathLike) -> dict[str, Any]:
    """The run info the train stage writes beside its curve; empty if there is none (a
    model trained before charlab wrote one)."""
    try:
        info = read_json(path)
    except FileNotFoundError:
        return {}
    return info if isinstance(info, dict) else {}


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_loss_curves(trained: Mapping[str, TrainedInfo], path: Path) -> None:
    """Train (dashed) and val (solid) loss of every trained model against characters seen."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (name, info) in enumerate(trained.items()):
        color = f"C{i}"
        chars = info.curve["step"] * info.chars_per_step / 1e6
        ax.plot(chars, info.curve["train_loss"], "--", color=color, alpha=0.7,
                label=f"{name} train")
        ax.plot(chars, info.curve["val_loss"], "-o", color=color, markersize=3,
                label=f"{name} val")
    ax.set_xlabel("characters seen in training (millions)")
    ax.set_ylabel("loss (nats per character)")
    ax.set_title("Training curves")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_bpc(test: pd.DataFrame, path: Path) -> None:
    """Horizontal bars of test bits/char per model, best at the top."""
    test = test.sort_values("bpc", ascending=False)
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(test) + 1.2))
    bars = ax.barh(test["model"], test["bpc"], color="C0")
    ax.bar_label(bars, fmt="%.3f", padding=3)
    ax.set_xlabel("test bits per character (lower is better)")
    ax.set_title("Test bits/char by model")
    ax.set_xlim(0, test["bpc"].max() * 1.15)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def _fmt(x: float, spec: str) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _md_text(s: str) -> str:
    """Text inside a markdown table cell: newlines shown, pipes and backticks harmless."""
    return s.replace("\n", "↵").replace("|", "\\|").replace("`", "'")


REPORT_CONTEXTS = 5  # of the analysis's top contexts, the report lists this many per side


def analysis_markdown(classes: pd.DataFrame, analysis: Mapping, order: list[str],
                      figures_rel: str, pages_rel: str) -> list[str]:
    """The report's analysis sections: bits/char per class, the best trained model against
    the best n-gram (and any requested pair), and what the recurrent units track.
    ``figures_rel`` / ``pages_rel``: where the analysis figures and pages are, relative to
    the report."""
    models = [m for m in order if m in set(classes["model"])]
    keyed = classes.set_index(["group", "class", "model"])
    keys = list(dict.fromkeys(zip(classes["group"], classes["class"], strict=True)))
    lines = ["", "## Where the bits go", "",
             "Test bits/char of each model by kind of character and by position; each group "
             "splits every test character into one class, so the share-weighted bits of a "
             "group add up to the model's test bpc.", "",
             "| group | class | share | " + " | ".join(models) + " |",
             "|---|---|---:|" + "---:|" * len(models)]
    for g, c in keys:
        share = keyed.loc[(g, c, models[0]), "share"]
        lines.append(f"| {g} | {c.replace('_', ' ')} | {share:.1%} | " + " | ".join(
            f"{keyed.loc[(g, c, m), 'bpc']:.3f}" for m in models) + " |")
    lines += ["", f"![Bits/char by class]({figures_rel}/{analysis['class_figure']})"]
    for pair in analysis["pairs"]:
        a, b = pair["a"], pair["b"]
        lines += ["", f"## {a} against {b}, character by character", "",
                  f"{a} {pair['bpc_a']:.4f} bits/char, {b} {pair['bpc_b']:.4f}; {a} spends "
                  f"fewer bits on {pair['a_better_share']:.1%} of the test characters. Blue: "
                  f"{a} better, red: {b} better. The whole test split, with the "
                  f"{len(pair['wins_a'])} contexts where each wins most: "
                  f"[{pair['page']}]({pages_rel}/{pair['page']}) (open the file in a browser; "
                  "it needs no network).", "",
                  f"![{a} against {b}]({figures_rel}/{pair['figure']})"]
        for who, wins in ((a, pair["wins_a"]), (b, pair["wins_b"])):
            lines += ["", f"Where {who} wins most (bits; the predicted character in **bold**):",
                      "", f"| {a} | {b} | context |", "|---:|---:|---|"]
            for w in wins[:REPORT_CONTEXTS]:
                lines.append(f"| {w['bits_a']:.2f} | {w['bits_b']:.2f} | "
                             f"`{_md_text(w['before'][-30:])}`**`{_md_text(w['char'])}`**"
                             f"`{_md_text(w['after'])}` |")
    skipped = analysis.get("skipped") or []
    if analysis["cells"] or skipped:
        lines += ["", "## What the recurrent units track", "",
                  "For each feature of the test text, the unit (lN.hJ: output J of layer N; "
                  "lN.cJ: LSTM cell state) whose activation correlates best with it over the "
                  "first characters of the test split; \u2013: the feature does not occur "
                  "there.", ""]
    if skipped:
        lines += ["Units not read: " + "; ".join(f"{s['model']} ({s['why']})" for s in skipped)
                  + ".", ""]
    for entry in analysis["cells"]:
        lines += [f"### {entry['model']} ({entry['cell']}, {entry['chars']:,} characters)", "",
                  "| feature | share | best unit | r |", "|---|---:|---|---:|"]
        for bu in entry["best"]:
            r = "–" if bu["r"] is None else f"{bu['r']:+.3f}"
            lines.append(f"| {bu['feature']} | {bu['share']:.1%} | {bu['unit'] or '–'} "
                         f"| {r} |")
        lines += ["", f"![units of {entry['model']}]({figures_rel}/{entry['figure']})", "",
                  f"Every feature over the whole excerpt: "
                  f"[{entry['page']}]({pages_rel}/{entry['page']})."]
        if "saturation" in entry:
            lines += ["", "Gate saturation (fraction of gate values < 0.1 / > 0.9):", "",
                      "| layer | gate | left-saturated | right-saturated |", "|---:|---|---:|---:|"]
            for k, layer in enumerate(entry["saturation"]):
                for gate, s in layer.items():
                    lines.append(f"| {k + 1} | {gate} | {s['left']:.1%} | {s['right']:.1%} |")
            lines += ["", f"![gate saturation of {entry['model']}]"
                          f"({figures_rel}/{entry['saturation_figure']})"]
        lines.append("")
    return lines


def sample_excerpt(sample: str, prime: str = "") -> str:
    """At most EXCERPT_CHARS of a sample (``prime`` + generated text), generated text first
    in mind: the prime's last PRIME_CONTEXT characters (after "…" when cut), then what the
    model wrote. A short prime gives the sample's first EXCERPT_CHARS characters, as
    before; a long one no longer fills the excerpt by itself."""
    if not prime or not sample.startswith(prime):
        return sample[:EXCERPT_CHARS]
    lead = prime if len(prime) <= PRIME_CONTEXT else "…" + prime[-PRIME_CONTEXT:]
    return lead + sample[len(prime):][:max(EXCERPT_CHARS - len(lead), 0)]


def render_markdown(metrics: pd.DataFrame, trained: Mapping[str, TrainedInfo],
                    samples: Mapping[str, str], figures: Mapping[str, str],
                    analysis: list[str] | None = None, prime: str = "",
                    verdict: str = "", stats: list[str] | None = None) -> str:
    """The report: the ``verdict`` (markdown) first, one table of every model, the
    ``stats`` sections (intervals, seeds, budgets: :mod:`charlab.report_stats`), figure
    links, the analysis sections (lines from :func:`analysis_markdown`), a sample excerpt
    per model (each sample is ``prime`` and what the model wrote after it)."""
    test = metrics[metrics["split"] == "test"].set_index("model")
    val = metrics[metrics["split"] == "val"].set_index("model")["nll"]
    best = test["nll"].idxmin()
    lines = [
        "# charlab report", "", *([verdict.rstrip("\n"), "", "## Every model", ""]
                                  if verdict else []),
        f"Best model on the test split: **{best}** "
        f"({test.loc[best, 'bpc']:.3f} bits/char, perplexity {test.loc[best, 'perplexity']:.2f}).",
        "", "nll is the mean negative log-likelihood in nats per character over the whole "
        "split; bpc = nll / ln 2; perplexity = exp(nll). Every model scores the same "
        f"{int(test['chars'].iloc[0]):,} test characters.", "",
        "| model | params | test nll | test bpc | test perplexity | val nll | train time (s) "
        "| train chars/s | device | precision |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, row in test.sort_values("nll").iterrows():
        info = trained.get(name)
        lines.append(
            f"| {name} | {int(row['params']):,} | {row['nll']:.4f} | {row['bpc']:.4f} "
            f"| {row['perplexity']:.3f} | {_fmt(val.get(name, math.nan), '.4f')} "
            f"| {_fmt(info.train_seconds if info else math.nan, '.0f')} "
            f"| {_fmt(info.chars_per_sec if info else math.nan, ',.0f')} "
            f"| {info.device if info else 'cpu (counting)'} "
            f"| {info.precision if info else '–'} |"
        )
    lines += stats or []
    lines += ["", "## Figures", ""]
    lines += [f"![{title}]({rel})" for title, rel in figures.items()]
    lines += analysis or []
    lines += ["", "## Samples", ""]
    for name in test.sort_values("nll").index:
        if name in samples:
            excerpt = sample_excerpt(samples[name], prime).replace("```", "'''")
            lines += [f"### {name}", "", "```text", excerpt, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True)
class AnalysisFiles:
    """The analyze stage's outputs that the report shows."""

    classes: Path       # bits/char per class, CSV
    summary: Path       # summary.json
    figures: Path       # the figures' folder
    pages: Path         # the HTML pages' folder


def write_report(metrics_csv: str | os.PathLike, trained: Mapping[str, TrainedInfo],
                 samples: Mapping[str, str], report_path: str | os.PathLike,
                 figures_dir: str | os.PathLike, analysis: AnalysisFiles | None = None,
                 prime: str = "", verdict: str = "", stats: list[str] | None = None) -> None:
    metrics = pd.read_csv(metrics_csv)
    report_path, figures_dir = Path(report_path), Path(figures_dir)
    figures: dict[str, str] = {}
    test = metrics[metrics["split"] == "test"]
    plot_bpc(test, figures_dir / "test_bpc.png")
    figures["Test bits/char by model"] = os.path.relpath(figures_dir / "test_bpc.png",
                                                         report_path.parent)
    if trained:
        plot_loss_curves(trained, figures_dir / "loss_curves.png")
        figures["Training curves"] = os.path.relpath(figures_dir / "loss_curves.png",
                                                     report_path.parent)
    extra = None
    if analysis is not None:
        order = list(test.sort_values("nll")["model"])
        rel = lambda p: os.path.relpath(p, report_path.parent)  # noqa: E731
        extra = analysis_markdown(pd.read_csv(analysis.classes), read_json(analysis.summary),
                                  order, rel(analysis.figures), rel(analysis.pages))
    write_text(report_path, render_markdown(metrics, trained, samples, figures, extra, prime,
                                            verdict, stats))
