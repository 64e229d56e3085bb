"""Downloads: http(s), file and local paths, sha256, retries, and every network fault the
local HTTP server (conftest.http_server) can script."""

import re
from pathlib import Path

import pytest
from conftest import make_text
from helpers import edit_params, one_line_error, run_stage, sha, temp_leftovers

from charlab.corpus import DownloadError, download


def test_http_download_verified(http_server, tmp_path, small_text):
    data = small_text.encode()
    url = http_server.put("input.txt", data)
    dest = tmp_path / "raw" / "corpus.txt"
    assert download(url, dest, sha256=sha(data)) == sha(data)
    assert dest.read_bytes() == data


@pytest.mark.parametrize("as_url", [True, False])
def test_local_file_and_file_url(tmp_path, as_url):
    src = tmp_path / "src.txt"
    src.write_bytes(b"local text")
    dest = tmp_path / "out.txt"
    download(src.as_uri() if as_url else str(src), dest, sha256=None)
    assert dest.read_bytes() == b"local text"


def test_sha_mismatch_leaves_previous_output(http_server, tmp_path):
    url = http_server.put("input.txt", b"new bytes")
    dest = tmp_path / "corpus.txt"
    dest.write_bytes(b"previous good corpus")
    with pytest.raises(DownloadError, match="sha256 mismatch: expected 0000"):
        download(url, dest, sha256="0" * 64)
    assert dest.read_bytes() == b"previous good corpus"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_http_404_is_not_retried(http_server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(http_server.url("missing.txt"), tmp_path / "c.txt", retries=5, backoff=10)
    assert not (tmp_path / "c.txt").exists()


def test_unreachable_host_retries_then_fails(tmp_path):
    # port 9 on loopback: nothing listens, the connection is refused at once
    with pytest.raises(DownloadError, match=r"gave up after 3 attempts"):
        download("http://127.0.0.1:9/x.txt", tmp_path / "c.txt", retries=2, backoff=0.01,
                 timeout=2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["ftp://example.com/x.txt", "javascript:alert(1)"])
def test_scheme_rejected(tmp_path, url):
    with pytest.raises(DownloadError, match="is not allowed"):
        download(url, tmp_path / "c.txt")


def test_missing_local_file(tmp_path):
    with pytest.raises(DownloadError, match="no such file"):
        download(str(tmp_path / "absent.txt"), tmp_path / "c.txt")


# --- download faults, served by the local HTTP server (conftest.http_server)

GOOD = make_text(3000, seed=5).encode()


@pytest.mark.parametrize("previous", [True, False], ids=["previous", "fresh"])
@pytest.mark.parametrize("action,message,attempts", [
    (("drop",), r": Remote end closed connection without response \(gave up after 2 attempts\)$",
     2),
    (("status", 503), r": HTTP 503 Service Unavailable \(gave up after 2 attempts\)$", 2),
    (("stall",), r": timed out \(gave up after 2 attempts\)$", 2),
    (("stall_body",), r": timed out \(gave up after 2 attempts\)$", 2),
    (("truncate",), r": body truncated: got 1000 of 3000 bytes \(gave up after 2 attempts\)$", 2),
    (("wrong",), r": sha256 mismatch: expected [0-9a-f]{64}, got [0-9a-f]{64} \(set download", 1),
    (("status", 403), r": HTTP 403 Forbidden$", 1),
], ids=["drop", "http503", "stall", "stall-body", "truncated", "wrong-bytes", "http403"])
def test_download_fault_leaves_no_corpus_and_the_previous_one_untouched(
        http_server, tmp_path: Path, action: tuple, message: str, attempts: int,
        previous: bool) -> None:
    http_server.put("input.txt", GOOD)
    http_server.script = [action]
    dest = tmp_path / "raw" / "corpus.txt"
    if previous:
        dest.parent.mkdir()
        dest.write_bytes(b"previous good corpus")
    with pytest.raises(DownloadError, match=message):
        download(http_server.url(), dest, sha256=sha(GOOD), timeout=0.3, retries=1,
                 backoff=0.01)
    assert http_server.requests == attempts
    if previous:
        assert dest.read_bytes() == b"previous good corpus"
    else:
        assert not dest.exists()
    assert temp_leftovers(tmp_path) == []


def test_download_5xx_then_success_retries_with_backoff(http_server, tmp_path: Path,
                                                        monkeypatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("charlab.corpus.time.sleep", sleeps.append)
    http_server.put("input.txt", GOOD)
    http_server.script = [("status", 503), ("drop",), ("status", 502), ("ok",)]
    dest = tmp_path / "corpus.txt"
    dest.write_bytes(b"previous")
    assert download(http_server.url(), dest, sha256=sha(GOOD), retries=3, backoff=0.5) == sha(GOOD)
    assert dest.read_bytes() == GOOD
    assert sleeps == [0.5, 1.0, 2.0]  # exponential backoff between the 4 attempts
    assert http_server.requests == 4
    assert temp_leftovers(tmp_path) == []


@pytest.mark.parametrize("target", ["ftp://127.0.0.1:9/input.txt", "file:///etc/passwd",
                                    "gopher://127.0.0.1:9/x"])
def test_download_refuses_a_redirect_to_another_scheme(http_server, tmp_path: Path,
                                                       target: str) -> None:
    http_server.script = [("redirect", target)]
    with pytest.raises(DownloadError, match=r"(?i)redirect.*not allowed"):
        download(http_server.url(), tmp_path / "c.txt", retries=2, backoff=0.01, timeout=2)
    assert http_server.requests == 1  # refused, not retried
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["data:text/plain,hello", "gopher://x/", "sftp://h/x",
                                 "jar:file:///x!/y"])
def test_download_scheme_allow_list(tmp_path: Path, url: str) -> None:
    with pytest.raises(DownloadError, match=r"^download\.url: scheme '\w+' is not allowed; "
                                            r"use one of http, https, file"):
        download(url, tmp_path / "c.txt")
    assert list(tmp_path.iterdir()) == []


def test_download_stage_fault_is_one_line(pipeline_ws: Path, capsys, http_server) -> None:
    http_server.script = [("status", 500)]
    edit_params(pipeline_ws, {"download": {"url": http_server.url(), "retries": 0, "timeout": 2}})
    before = (pipeline_ws / "data/raw/corpus.txt").read_bytes()
    code, _, err = run_stage(pipeline_ws, "download", capsys)
    assert code == 2
    assert re.fullmatch(r"error: http://127\.0\.0\.1:\d+/input\.txt: HTTP 500 Internal Server "
                        r"Error \(gave up after 1 attempt\)", one_line_error(err))
    assert (pipeline_ws / "data/raw/corpus.txt").read_bytes() == before
    assert temp_leftovers(pipeline_ws) == []


# --- a local path that is not a file; what HTTP says about the body (issue 20)

@pytest.mark.parametrize("kind,message", [
    ("directory", r"is a directory, not a file; name the corpus file itself"),
    ("dev-zero", r"is a character device, not a file; name the corpus file itself"),
    ("fifo", r"is a FIFO \(named pipe\), not a file; name the corpus file itself"),
], ids=["directory", "dev-zero", "fifo"])
@pytest.mark.parametrize("as_url", [False, True], ids=["path", "file-url"])
def test_a_local_url_that_is_not_a_file_says_what_it_is(tmp_path: Path, kind: str,
                                                       message: str, as_url: bool) -> None:
    """It said "no such file" (and /dev/zero would be read forever); now what it is,
    before anything is written. /dev/zero is only stat'ed; the FIFO is never opened."""
    import os

    src = Path("/dev/zero") if kind == "dev-zero" else tmp_path / "src"
    if kind == "directory":
        src.mkdir()
    elif kind == "fifo":
        os.mkfifo(src)
    dest = tmp_path / "out" / "corpus.txt"
    with pytest.raises(DownloadError, match=f"^download\\.url: {re.escape(str(src))} {message}$"):
        download(src.as_uri() if as_url else str(src), dest, sha256=None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("action", ["gzip", "gzip_members", "deflate", "deflate_raw"])
@pytest.mark.parametrize("pinned", [False, True], ids=["sha256-null", "sha256"])
def test_a_compressed_http_body_is_stored_decoded(http_server, tmp_path: Path, action: str,
                                                  pinned: bool) -> None:
    """Content-Encoding gzip or deflate: the corpus is the decoded file (it was stored
    compressed, and encode then failed at byte 1). 200 copies of GOOD: the decoder's
    bounded reads carry over many times."""
    data = GOOD * 200
    http_server.put("input.txt", data)
    http_server.script = [(action,)]
    dest = tmp_path / "corpus.txt"
    assert download(http_server.url(), dest, sha256=sha(data) if pinned else None) == sha(data)
    assert dest.read_bytes() == data
    assert temp_leftovers(tmp_path) == []


@pytest.mark.parametrize("action,message,attempts", [
    ("gzip_cut", r": body truncated: the gzip stream ends early \(gave up after 2 attempts\)$",
     2),
    ("gzip_bad", r": the body is not valid gzip data \(Content-Encoding: gzip\): Error -3 .*", 1),
    ("br", r": the server sent the body compressed as 'br' \(Content-Encoding\), which charlab "
           r"cannot decode; it decodes gzip and deflate$", 1),
], ids=["gzip-cut", "not-gzip", "brotli"])
def test_a_compressed_body_that_cannot_be_decoded(http_server, tmp_path: Path, action: str,
                                                  message: str, attempts: int) -> None:
    http_server.put("input.txt", GOOD)
    http_server.script = [(action,)]
    dest = tmp_path / "corpus.txt"
    dest.write_bytes(b"previous good corpus")
    with pytest.raises(DownloadError, match=f"^{re.escape(http_server.url())}{message}"):
        download(http_server.url(), dest, sha256=None, retries=1, backoff=0.01)
    assert http_server.requests == attempts
    assert dest.read_bytes() == b"previous good corpus"
    assert temp_leftovers(tmp_path) == []


def test_an_html_answer_is_refused_saying_what_came_back(http_server, tmp_path: Path) -> None:
    """With sha256: null a login page was stored as the corpus, silently."""
    http_server.put("input.txt", GOOD)
    http_server.script = [("html",)]
    dest = tmp_path / "corpus.txt"
    dest.write_bytes(b"previous good corpus")
    with pytest.raises(DownloadError) as e:
        download(http_server.url(), dest, sha256=None, retries=3, backoff=0.01)
    assert str(e.value) == (
        f"{http_server.url()}: the server answered with an HTML page (Content-Type: text/html; "
        "charset=utf-8, titled 'Sign in – Example Corp'), not a text corpus: a login, error or "
        "download page? Point download.url at the raw text file (a corpus that is HTML is "
        "taken when download.sha256 names it)")
    assert http_server.requests == 1  # not a network fault: not retried
    assert dest.read_bytes() == b"previous good corpus"
    assert temp_leftovers(tmp_path) == []


def test_an_html_corpus_named_by_its_sha256_is_taken(http_server, tmp_path: Path) -> None:
    from conftest import LOGIN_PAGE

    http_server.script = [("html",)]
    dest = tmp_path / "corpus.txt"
    assert download(http_server.url(), dest, sha256=sha(LOGIN_PAGE)) == sha(LOGIN_PAGE)
    assert dest.read_bytes() == LOGIN_PAGE


def test_the_download_stage_refuses_an_html_answer_in_one_line(pipeline_ws: Path, capsys,
                                                              http_server) -> None:
    http_server.script = [("html",)]
    edit_params(pipeline_ws, {"download": {"url": http_server.url(), "sha256": None}})
    before = (pipeline_ws / "data/raw/corpus.txt").read_bytes()
    code, _, err = run_stage(pipeline_ws, "download", capsys)
    assert code == 2
    assert "answered with an HTML page" in one_line_error(err)
    assert (pipeline_ws / "data/raw/corpus.txt").read_bytes() == before
