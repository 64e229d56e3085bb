"""Stage `report`: metrics/report.md with a table of every model, figures and samples."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from charlab import params
from charlab.errors import run_main
from charlab.models import checkpoint_file, model_names
from charlab.report import TrainedInfo, write_report
from charlab.train import load_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--metrics", required=True, help="metrics.csv from evaluate")
    ap.add_argument("--curves-dir", required=True)
    ap.add_argument("--samples-dir", required=True)
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--figures-dir", required=True)
    args = ap.parse_args()

    raw = params.load(args.params)
    models = params.train_models(raw)
    orders = params.section(raw, "ngram", params.NgramParams).orders
    trained = {}
    for name, cfg in models.items():
        _, _, info = load_checkpoint(checkpoint_file(args.models_dir, name), "cpu")
        trained[name] = TrainedInfo(curve=pd.read_csv(Path(args.curves_dir) / f"{name}.csv"),
                                    chars_per_step=cfg.batch_size * cfg.seq_length,
                                    device=str(info.get("device") or "?"))
    samples = {name: (Path(args.samples_dir) / f"{name}.txt").read_text(encoding="utf-8")
               for name in model_names(orders, list(models))}
    write_report(args.metrics, trained, samples, args.out, args.figures_dir)
    print(f"report: {args.out}")


if __name__ == "__main__":
    run_main(main)
