"""Stage `download`: fetch the corpus named by `download.url` into one file."""

from __future__ import annotations

from charlab.corpus import download
from charlab.errors import run_main
from charlab.params import core
from charlab.params.data import DownloadParams


def main() -> None:
    args = core.stage_parser(__doc__, "out").parse_args()

    p = core.section(core.load(args.params), "download", DownloadParams)
    digest = download(p.url, args.out, sha256=p.sha256, timeout=p.timeout, retries=p.retries)
    print(f"download: {p.url} -> {args.out} (sha256 {digest})")


if __name__ == "__main__":
    run_main(main)
