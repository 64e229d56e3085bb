"""Stage `report`: metrics/report.md with a table of every model, figures, the analysis
(bits per class, model against model, the units) and samples."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from charlab import params
from charlab.errors import run_main
from charlab.models import checkpoint_file, model_names
from charlab.report import AnalysisFiles, TrainedInfo, write_report
from charlab.train import load_checkpoint


def main() -> None:
    args = params.stage_parser(__doc__, "metrics", "curves-dir", "samples-dir", "models-dir",
                               "out", "figures-dir", "classes", "analysis",
                               "analysis-figures", "analysis-pages").parse_args()

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
    analysis = AnalysisFiles(Path(args.classes), Path(args.analysis), Path(args.analysis_figures),
                             Path(args.analysis_pages))
    write_report(args.metrics, trained, samples, args.out, args.figures_dir, analysis)
    print(f"report: {args.out}")


if __name__ == "__main__":
    run_main(main)
