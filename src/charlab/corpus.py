"""Fetch the corpus: http(s), file:// or a local path, streamed, verified, written atomically."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from charlab.errors import CharlabError
from charlab.io import atomic_path, not_a_file
from charlab.params.data import url_problem

CHUNK = 1 << 16


class DownloadError(CharlabError, RuntimeError):
    """The corpus could not be fetched, or is not the file that was asked for."""


class _Retryable(DownloadError):
    """A fault worth another try: connection trouble, a 5xx, a truncated body."""


def _local_path(url: str) -> Path | None:
    """The local file ``url`` names, or None for http(s); a URL that the params check
    (scheme, syntax, a file:// host other than this machine) refuses is an error here too."""
    problem = url_problem(url)
    if problem:
        raise DownloadError(f"download.url: {problem}")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(url)
    return None


def _check_local(url: str) -> Path | None:
    """``_local_path``, and the file must be there and be a regular file (a directory or
    /dev/zero is named as what it is, before anything is written)."""
    local = _local_path(url)
    if local is not None:
        kind = not_a_file(local)
        if kind is not None:
            raise DownloadError(f"download.url: {local} is {kind}, not a file; name the "
                                "corpus file itself")
        if not local.is_file():
            raise DownloadError(f"download.url: no such file: {local}")
    return local


class _WriteFailed(DownloadError):
    """Writing the local copy failed (disk full): not a network fault, never retried."""


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s): urllib would also follow one to ftp://."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlparse(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise DownloadError(
                f"{req.full_url}: redirected to {newurl}: scheme {scheme!r} is not allowed "
                "for a redirect (only http, https)"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SafeRedirects)


def _copy(src: BinaryIO, dst: BinaryIO, total: int | None, label: str, digest) -> int:
    done = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False,
              disable=None) as bar:
        while chunk := src.read(CHUNK):
            try:
                dst.write(chunk)
            except OSError as e:
                # io.atomic_path turns a full disk into one clear OutputError
                raise _WriteFailed(f"cannot write the downloaded corpus: {e.strerror}") from e
            digest.update(chunk)
            done += len(chunk)
            bar.update(len(chunk))
    return done


class _Decoded:
    """A response body that HTTP says is compressed (Content-Encoding gzip or deflate),
    read decompressed, in pieces of at most ``n`` bytes (a small compressed body can
    expand to any size: memory stays bounded). ``raw`` counts the bytes received, which
    is what Content-Length promises."""

    def __init__(self, resp: BinaryIO, coding: str, url: str) -> None:
        self.resp, self.coding, self.url, self.raw = resp, coding, url, 0
        self.z: zlib._Decompress | None = None  # made on the first bytes (deflate: which kind)

    def _new(self, first: bytes) -> zlib._Decompress:
        if self.coding != "deflate":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip
        # "deflate" should be zlib-wrapped (RFC 9110); some servers send raw deflate
        wrapped = len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)

    def read(self, n: int) -> bytes:
        try:
            while True:
                z = self.z
                if z is not None and z.unconsumed_tail:  # what the last max_length held back
                    data = z.unconsumed_tail
                elif z is not None and z.eof and z.unused_data and self.coding == "gzip":
                    data, self.z = z.unused_data, None  # another gzip member: the same file
                else:
                    data = self.resp.read(n)
                    self.raw += len(data)
                    if not data:
                        if z is not None and not z.eof:
                            raise _Retryable(f"{self.url}: body truncated: the {self.coding} "
                                             "stream ends early")
                        return b""
                    if z is not None and z.eof:
                        if self.coding != "gzip":
                            continue  # bytes after the deflate stream: not part of it
                        self.z = None  # another gzip member
                if self.z is None:
                    self.z = self._new(data)
                out = self.z.decompress(data, n)
                if out:
                    return out
        except zlib.error as e:
            raise DownloadError(f"{self.url}: the body is not valid {self.coding} data "
                                f"(Content-Encoding: {self.coding}): {e}") from None


_CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


def _body(resp: http.client.HTTPResponse, url: str) -> BinaryIO | _Decoded:
    """The response body as the file it stands for: decompressed if HTTP says so."""
    coding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
    if coding in ("identity", ""):
        return resp
    if coding not in _CODINGS:
        raise DownloadError(f"{url}: the server sent the body compressed as {coding!r} "
                            "(Content-Encoding), which charlab cannot decode; it decodes gzip "
                            "and deflate")
    return _Decoded(resp, _CODINGS[coding], url)


def _html_page(url: str, resp: http.client.HTTPResponse, body: BinaryIO | _Decoded) -> str:
    """The error for an HTML answer: a login, error or download page, not a corpus."""
    head = body.read(CHUNK).decode("utf-8", "replace")
    title = re.search(r"<title[^>]*>(.*?)</title>", head, re.I | re.S)
    what = f", titled {' '.join(title.group(1).split())[:80]!r}" if title else ""
    return (f"{url}: the server answered with an HTML page (Content-Type: "
            f"{resp.headers.get('Content-Type')}{what}), not a text corpus: a login, error "
            "or download page? Point download.url at the raw text file (a corpus that is "
            "HTML is taken when download.sha256 names it)")


def _fetch_once(url: str, tmp: Path, timeout: float, allow_html: bool = False) -> str:
    digest = hashlib.sha256()
    local = _check_local(url)
    with open(tmp, "wb") as out:
        if local is not None:
            try:
                src = open(local, "rb")  # noqa: SIM115 (closed below; its error named here)
            except OSError as e:
                raise DownloadError(f"download.url: {local}: {e.strerror}") from None
            with src:
                _copy(src, out, local.stat().st_size, local.name, digest)
            return digest.hexdigest()
        req = urllib.request.Request(url, headers={"User-Agent": "charlab"})
        try:
            with _OPENER.open(req, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                body = _body(resp, url)
                if resp.headers.get_content_type() in ("text/html", "application/xhtml+xml") \
                        and not allow_html:
                    raise DownloadError(_html_page(url, resp, body))
                got = _copy(body, out, total if body is resp else None,
                            Path(urllib.parse.urlparse(url).path).name or url, digest)
                if isinstance(body, _Decoded):
                    got = body.raw
        except urllib.error.HTTPError as e:
            msg = f"{url}: HTTP {e.code} {e.reason}"
            if e.code >= 500 or e.code == 429:
                raise _Retryable(msg) from None
            raise DownloadError(msg) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            raise _Retryable(f"{url}: {reason}") from None
        if total is not None and got != total:
            raise _Retryable(f"{url}: body truncated: got {got} of {total} bytes")
    return digest.hexdigest()


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None,
             timeout: float = 30.0, retries: int = 3, backoff: float = 1.0) -> str:
    """Fetch ``url`` into ``dest`` and return its sha256.

    ``dest`` is replaced only by a complete file whose hash matches ``sha256`` (when given);
    otherwise it is left as it was. Connection faults, 5xx answers and truncated bodies are
    retried ``retries`` times with exponential backoff.
    """
    _check_local(url)  # reject a bad scheme, a missing file, a directory: before anything
    attempt = 0
    while True:
        try:
            with atomic_path(dest) as tmp:
                got = _fetch_once(url, tmp, timeout, allow_html=sha256 is not None)
                if sha256 is not None and got.lower() != sha256.lower():
                    raise DownloadError(
                        f"{url}: sha256 mismatch: expected {sha256.lower()}, got {got} "
                        "(set download.sha256 to the new hash, or null to skip the check)"
                    )
            return got
        except _Retryable as e:
            if attempt >= retries:
                tries = f"{attempt + 1} attempt" + ("s" if attempt else "")
                raise DownloadError(f"{e} (gave up after {tries})") from None
            time.sleep(backoff * 2**attempt)
            attempt += 1


