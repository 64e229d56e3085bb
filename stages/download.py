"""Stage `download`: fetch the corpus named by `download.url` into one file."""

from __future__ import annotations

import argparse

from charlab import params
from charlab.corpus import download
from charlab.errors import run_main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", required=True, help="where the corpus text goes")
    args = ap.parse_args()

    p = params.section(params.load(args.params), "download", params.DownloadParams)
    digest = download(p.url, args.out, sha256=p.sha256, timeout=p.timeout, retries=p.retries)
    print(f"download: {p.url} -> {args.out} (sha256 {digest})")


if __name__ == "__main__":
    run_main(main)
