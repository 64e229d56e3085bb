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
