"""Stage `report`: metrics/report.md with a table of every model, figures, the analysis
(bits per class, model against model, the units) and samples."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from charlab import params
from charlab.errors import run_main
from charlab.models import model_names
from charlab.report import AnalysisFiles, TrainedInfo, read_run_info, write_report


def main() -> None:
    args = params.stage_parser(__doc__, "metrics", "model-set", "curves-dir", "samples-dir",
                               "runs-dir", "out", "figures-dir", "classes", "analysis",
                               "analysis-figures", "analysis-pages").parse_args()

    raw = params.load(args.params)
    configs = params.train_models(raw)
    # each sample is sample.prime + what the model wrote: the excerpt shows the latter
    prime = params.section(raw, "sample", params.SampleParams).prime
    models = params.ModelSet.load(args.model_set)  # a dependency: a new set reruns this
    trained = {}
    for name in models.trained:
        if name not in configs:
            raise params.ParamsError(f"train.{name}: in {args.model_set} but not in params "
                                     "(run `dvc repro`, which rewrites it)")
        cfg = configs[name]
        trained[name] = TrainedInfo(curve=pd.read_csv(Path(args.curves_dir) / f"{name}.csv"),
                                    chars_per_step=cfg.batch_size * cfg.seq_length,
                                    run=read_run_info(Path(args.runs_dir) / f"{name}.json"))
    samples = {name: (Path(args.samples_dir) / f"{name}.txt").read_text(encoding="utf-8")
               for name in model_names(list(models.ngram_orders), list(models.trained))}
    analysis = AnalysisFiles(Path(args.classes), Path(args.analysis), Path(args.analysis_figures),
                             Path(args.analysis_pages))
    write_report(args.metrics, trained, samples, args.out, args.figures_dir, analysis, prime)
    print(f"report: {args.out}")


if __name__ == "__main__":
    run_main(main)
