"""Shared fixtures: generated corpora, the one local HTTP server (files and scripted faults),
the tiny training params, and a small pipeline workspace built once per session."""

from __future__ import annotations

import functools
import gzip
import http.server
import random
import shutil
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO, run_stage

from charlab.params.training import TrainParams, parse_entry

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
    """Serves the server's directory; each request first takes the next scripted action."""

    protocol_version = "HTTP/1.1"  # a Content-Length is a promise the client can check

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv: HTTPServer = self.server.owner  # type: ignore[attr-defined]
        with srv.lock:
            srv.requests += 1
            action = srv.script.pop(0) if len(srv.script) > 1 else srv.script[0]
        kind = action[0]
        if kind == "ok":
            super().do_GET()
            return
        if kind == "drop":  # close the connection without a word
            self.close_connection = True
            return
        if kind == "stall":  # accept, then say nothing
            srv.stop.wait(3)
            self.close_connection = True
            return
        if kind == "status":
            self.send_error(action[1])
            return
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", action[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if kind == "html":  # a login page, whatever was asked for
            self._send(LOGIN_PAGE, {"Content-Type": "text/html; charset=utf-8"})
            return
        # the file's bytes, damaged: "wrong" flips one byte (right length); "truncate" and
        # "stall_body" promise the whole file in Content-Length and send a third of it
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        good = path.read_bytes()
        if kind in COMPRESSED:  # the file compressed, as Content-Encoding says (or claims)
            coding, body = COMPRESSED[kind](good)
            self._send(body, {"Content-Type": "text/plain", "Content-Encoding": coding})
            return
        body = good[:100] + bytes([good[100] ^ 1]) + good[101:] if kind == "wrong" else good
        self.send_response(200)
        self.send_header("Content-Length", str(len(good)))
        self.end_headers()
        if kind in ("truncate", "stall_body"):
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            if kind == "stall_body":
                srv.stop.wait(3)
            self.close_connection = True
            return
        self.wfile.write(body)


    def _send(self, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(200)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


LOGIN_PAGE = (b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n"
              b"<title>\n  Sign in \xe2\x80\x93 Example Corp</title></head>"
              b"<body><form>user <input name=u></form></body></html>\n")


def _raw_deflate(data: bytes) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return z.compress(data) + z.flush()


COMPRESSED = {  # action: data -> (Content-Encoding, body)
    "gzip": lambda d: ("gzip", gzip.compress(d)),
    "gzip_members": lambda d: ("gzip", gzip.compress(d[:1000]) + gzip.compress(d[1000:])),
    "deflate": lambda d: ("deflate", zlib.compress(d)),
    "deflate_raw": lambda d: ("deflate", _raw_deflate(d)),
    "gzip_cut": lambda d: ("gzip", gzip.compress(d)[: len(gzip.compress(d)) // 2]),
    "gzip_bad": lambda d: ("gzip", d),  # says gzip, is not
    "br": lambda d: ("br", d),
}


class HTTPServer:
    """A real HTTP server on 127.0.0.1 serving the files under ``root``.

    ``script`` holds one action per request, the last one repeating: ``("ok",)`` serves the
    file (the default), ``("drop",)`` closes the connection unanswered, ``("stall",)`` says
    nothing, ``("status", 503)`` answers with that error, ``("redirect", url)`` sends a 302,
    ``("wrong",)`` serves the file with one byte flipped, ``("truncate",)`` and
    ``("stall_body",)`` send a third of the file (then close, or stall); ``("gzip",)``,
    ``("deflate",)`` (and the others of COMPRESSED) serve it with that Content-Encoding;
    ``("html",)`` answers any path with a login page (text/html). ``requests`` counts the
    GETs.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.script: list[tuple] = [("ok",)]
        self.requests = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()  # set at teardown: stalled answers end
        handler = functools.partial(_Handler, directory=str(root))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path: str = "input.txt") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{path}"

    def put(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path``; its URL."""
        (self.root / path).write_bytes(data)
        return self.url(path)

    def close(self) -> None:
        self.stop.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServer]:
    """The one local HTTP server: files under ``.root`` (or ``.put``) are served at
    ``.url(path)``; ``.script`` injects faults (see HTTPServer). Its root is outside the
    test's tmp_path, so a test can assert what it wrote there."""
    server = HTTPServer(tmp_path_factory.mktemp("www"))
    try:
        yield server
    finally:
        server.close()


# --- tiny training: the one set of params small enough for a test to train in seconds ------

TINY = {"cell": "rnn", "layers": 1, "hidden_size": 8, "dropout": 0.0, "batch_size": 2,
        "seq_length": 8, "lr": 0.01, "max_steps": 4, "eval_every": 2, "seed": 1,
        "device": "cpu", "threads": 1, "warmup_steps": 0}


def tiny_params(key: str = "train.m", **overrides: Any) -> TrainParams:
    """TrainParams from TINY with ``overrides``, parsed (and so checked) as params key ``key``."""
    return parse_entry({**TINY, **overrides}, key)


def with_keys(cfg: TrainParams, key: str = "train.m", **overrides: Any) -> TrainParams:
    """``cfg`` with some keys changed (the network's keys too), parsed again as ``key``."""
    return parse_entry({**cfg.to_dict(), **overrides}, key)


# --- a small workspace, built once: every stage's outputs, as the pipeline lays them out --

@pytest.fixture(scope="session")
def pipeline_built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only: validate .. evaluate run on a 6000-character corpus, one TINY `rnn` entry
    and the order-2 n-gram. Tests that write take ``pipeline_ws``, a private copy."""
    ws = tmp_path_factory.mktemp("built")
    (ws / "source.txt").write_text(make_text(6000, seed=3), encoding="utf-8")
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["download"].update(url="source.txt", sha256=None)
    p["ngram"]["orders"] = [2]
    p["train"] = {"rnn": dict(TINY)}
    p["sample"]["length"] = 20
    p["evaluate"].update(device="cpu", threads=1)
    (ws / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    for stage in ("validate", "download", "encode", "ngram", "train", "sample", "evaluate"):
        assert run_stage(ws, stage)[0] == 0, stage
    return ws


@pytest.fixture
def pipeline_ws(pipeline_built: Path, tmp_path: Path) -> Path:
    """A private copy of the built workspace."""
    dest = tmp_path / "ws"
    shutil.copytree(pipeline_built, dest)
    return dest


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has no CUDA and no MPS, whatever it really has."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None:
        monkeypatch.setattr(mps, "is_available", lambda: False)


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
