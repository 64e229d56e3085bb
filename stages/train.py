"""Stage `train@<model>`: train one entry of `train:` into a checkpoint and a loss curve.

With `train.<model>.nproc` > 1 the stage checks everything, then replaces itself by torchrun
running this same command in `nproc` data-parallel processes. Started by torchrun (by the
stage, or by hand on several nodes) it joins the other ranks.
"""

from __future__ import annotations

from charlab.errors import run_main
from charlab.params.core import stage_parser
from charlab.training.launch import run_entry


def main() -> None:
    args = stage_parser(__doc__, "model", "checkpoint", "curve", "run-info",
                               corpus=True).parse_args()
    run_entry(args, "train")


if __name__ == "__main__":
    run_main(main)
