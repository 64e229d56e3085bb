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


def render_markdown(metrics: pd.DataFrame, trained: Mapping[str, TrainedInfo],
                    samples: Mapping[str, str], figures: Mapping[str, str]) -> str:
    """The report: one table of every model, figure links, a sample excerpt per model."""
    test = metrics[metrics["split"] == "test"].set_index("model")
    val = metrics[metrics["split"] == "val"].set_index("model")["nll"]
    best = test["nll"].idxmin()
    lines = [
        "# charlab report", "",
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
    lines += ["", "## Figures", ""]
    lines += [f"![{title}]({rel})" for title, rel in figures.items()]
    lines += ["", "## Samples", ""]
    for name in test.sort_values("nll").index:
        if name in samples:
            excerpt = samples[name][:EXCERPT_CHARS].replace("```", "'''")
            lines += [f"### {name}", "", "```text", excerpt, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(metrics_csv: str | os.PathLike, trained: Mapping[str, TrainedInfo],
                 samples: Mapping[str, str], report_path: str | os.PathLike,
                 figures_dir: str | os.PathLike) -> None:
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
    write_text(report_path, render_markdown(metrics, trained, samples, figures))
