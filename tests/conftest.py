"""Shared fixtures: generated corpora and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"

WORDS = ["the", "king", "queen", "lord", "lady", "my", "thy", "thou", "art", "shall", "not",
         "be", "to", "and", "of", "in", "what", "why", "come", "go", "speak", "hear", "love",
         "death", "night", "day", "sweet", "good", "noble", "gentle", "fair"]


def make_text(n_chars: int, seed: int = 0) -> str:
    """Shakespeare-ish generated text: speaker lines of random words, deterministic."""
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < n_chars:
        who = rng.choice(["KING", "QUEEN", "First Citizen", "Nurse"])
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
        line = f"{who}:\n{words.capitalize()}{rng.choice('.,!?;')}\n\n"
        out.append(line)
        size += len(line)
    return "".join(out)[:n_chars]


@pytest.fixture
def small_text() -> str:
    return make_text(20_000)


@pytest.fixture
def shakespeare() -> Path:
    if not SHARED_CORPUS.is_file():
        pytest.skip("../shared/data/tinyshakespeare.txt is not available")
    return SHARED_CORPUS


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(directory, base URL): files written to the directory are served over HTTP."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- a real browser: headless Chromium (Debian's `chromium` package; .ci/run installs it) --

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="session")
def browser() -> str:
    import shutil

    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium on this machine (apt-get install chromium; "
                ".ci/run installs it)")


def screenshot(browser: str, page: Path, out: Path, size: tuple[int, int] = (1000, 1400)):
    """Open ``page`` from its file in headless Chromium, offline, and return the screenshot
    as an (H, W, 3) float array in [0, 1]."""
    import subprocess

    import matplotlib.image

    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", "--disable-background-networking",
           f"--user-data-dir={out.parent / (out.stem + '-profile')}",
           f"--window-size={size[0]},{size[1]}", f"--screenshot={out}", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-2000:]
    return matplotlib.image.imread(out)[..., :3]


def pixels_like(img, hex_color: str, tol: float = 4 / 255) -> int:
    """How many pixels of ``img`` have the colour ``#rrggbb`` (within ``tol``)."""
    import numpy as np

    rgb = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(img - rgb).max(axis=-1) <= tol).sum())
