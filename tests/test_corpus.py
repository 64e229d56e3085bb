import hashlib

import pytest

from charlab.corpus import DownloadError, download


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_http_download_verified(http_dir, tmp_path, small_text):
    root, base = http_dir
    data = small_text.encode()
    (root / "input.txt").write_bytes(data)
    dest = tmp_path / "raw" / "corpus.txt"
    assert download(f"{base}/input.txt", dest, sha256=sha(data)) == sha(data)
    assert dest.read_bytes() == data


@pytest.mark.parametrize("as_url", [True, False])
def test_local_file_and_file_url(tmp_path, as_url):
    src = tmp_path / "src.txt"
    src.write_bytes(b"local text")
    dest = tmp_path / "out.txt"
    download(src.as_uri() if as_url else str(src), dest, sha256=None)
    assert dest.read_bytes() == b"local text"


def test_sha_mismatch_leaves_previous_output(http_dir, tmp_path):
    root, base = http_dir
    (root / "input.txt").write_bytes(b"new bytes")
    dest = tmp_path / "corpus.txt"
    dest.write_bytes(b"previous good corpus")
    with pytest.raises(DownloadError, match="sha256 mismatch: expected 0000"):
        download(f"{base}/input.txt", dest, sha256="0" * 64)
    assert dest.read_bytes() == b"previous good corpus"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_http_404_is_not_retried(http_dir, tmp_path):
    _, base = http_dir
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{base}/missing.txt", tmp_path / "c.txt", retries=5, backoff=10)
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
