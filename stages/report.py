"""Stage `report`: metrics/report.md with a table of every model, figures, the analysis
(bits per class, model against model, the units) and samples."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from charlab.errors import CharlabError, run_main
from charlab.models import ModelSet, model_names
from charlab.params import core
from charlab.params.readers import SampleParams
from charlab.report import AnalysisFiles, TrainedInfo, read_run_info, write_report


def main() -> None:
    args = core.stage_parser(__doc__, "metrics", "model-set", "curves-dir", "samples-dir",
                               "runs-dir", "out", "figures-dir", "classes", "analysis",
                               "analysis-figures", "analysis-pages").parse_args()

    # each sample is sample.prime + what the model wrote: the excerpt shows the latter
    prime = core.section(core.load(args.params), "sample", SampleParams).prime
    models = ModelSet.load(args.model_set)  # a dependency: a new set reruns this
    trained = {}
    for name in models.trained:
        run = read_run_info(Path(args.runs_dir) / f"{name}.json")
        if "chars_per_step" not in run:
            raise CharlabError(f"{args.runs_dir}/{name}.json: no run info of this charlab "
                               f"(written by an older one, or missing); retrain {name} "
                               "(`dvc repro`)")
        trained[name] = TrainedInfo(curve=pd.read_csv(Path(args.curves_dir) / f"{name}.csv"),
                                    chars_per_step=int(run["chars_per_step"]), run=run)
    samples = {name: (Path(args.samples_dir) / f"{name}.txt").read_text(encoding="utf-8")
               for name in model_names(list(models.ngram_orders), list(models.trained))}
    analysis = AnalysisFiles(Path(args.classes), Path(args.analysis), Path(args.analysis_figures),
                             Path(args.analysis_pages))
    write_report(args.metrics, trained, samples, args.out, args.figures_dir, analysis, prime)
    print(f"report: {args.out}")


if __name__ == "__main__":
    run_main(main)
