"""Stage `download`: fetch the corpus named by `download.url` into one file."""

from __future__ import annotations

from charlab import params
from charlab.corpus import download
from charlab.errors import run_main


def main() -> None:
    args = params.stage_parser(__doc__, "out").parse_args()

    p = params.section(params.load(args.params), "download", params.DownloadParams)
    digest = download(p.url, args.out, sha256=p.sha256, timeout=p.timeout, retries=p.retries)
    print(f"download: {p.url} -> {args.out} (sha256 {digest})")


if __name__ == "__main__":
    run_main(main)
