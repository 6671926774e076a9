"""Fetch llama-cpp-python's source distribution for build.sh and unpack it, its SHA-256 checked first.

``python fetch.py VERSION SHA256 DEST`` leaves DEST/llama_cpp_python-VERSION/. The file is found where pip's
settings say (``pip config list``, i.e. pip.conf and PIP_* variables; pip's defaults without one): a
``find-links`` folder holding it, else the simple page (PEP 691 JSON or PEP 503 HTML) of ``index-url`` or an
``extra-index-url``, unless ``no-index``. It is downloaded with urllib and nothing in it is read until its SHA-256
equals the pinned one: ``pip download`` prepared the sdist's metadata, running its build backend, before the hash
could be checked.
Standard library only: build.sh runs it with whatever Python it was given.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

PROJECT = "llama-cpp-python"
PYPI = "https://pypi.org/simple/"
MAX_BYTES = 512 * 1024 * 1024  # the 0.3.36 sdist is ~50 MB; a mirror's endless stream stops here
TIMEOUT = 60


class FetchError(Exception):
    """The sdist was not found, not downloaded, or is not the pinned file."""


def pip_settings(python: str = sys.executable) -> dict[str, str]:
    """pip's settings for `pip download` (environment over the download section over global), by option name."""
    try:
        out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    found: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        section, dot, name = key.rpartition(".")
        if sep and dot:
            with_quotes = value.strip()
            try:
                value = ast.literal_eval(with_quotes)
            except (ValueError, SyntaxError):
                value = with_quotes
            found.setdefault(section, {})[name] = str(value)
    env = {k[4:].lower().replace("_", "-"): v for k, v in os.environ.items() if k.startswith("PIP_")}
    return {**found.get("global", {}), **found.get("download", {}), **found.get(":env:", {}), **env}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


def _open(url: str, ctx: ssl.SSLContext | None, index: str, accept: str = "*/*"):
    """urlopen `url`; the credentials in `index` (https://user:token@mirror/simple) go to the index's host only."""
    parts, creds = urllib.parse.urlsplit(url), urllib.parse.urlsplit(index)
    if parts.scheme == "file" and os.path.isdir(urllib.request.url2pathname(parts.path)):
        url = urllib.parse.urljoin(url.rstrip("/") + "/", "index.html")  # a local index, as pip reads it
    headers = {"Accept": accept, "User-Agent": "pocket-adapt llama.cpp fetch"}
    if parts.username is None and creds.username is not None and parts.hostname == creds.hostname:
        parts = creds._replace(path=parts.path, query=parts.query, fragment="")
    if parts.username is not None:
        cred = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT, context=ctx)


def index_file_url(index: str, filename: str, ctx: ssl.SSLContext | None) -> str:
    """URL of `filename` on the simple index `index`'s page for the project."""
    page = urllib.parse.urljoin(index.rstrip("/") + "/", PROJECT + "/")
    with _open(page, ctx, index, "application/vnd.pypi.simple.v1+json, text/html;q=0.1") as resp:
        base, kind, body = resp.geturl(), resp.headers.get("Content-Type", ""), resp.read(16 * 1024 * 1024)
    if "json" in kind:
        links = [f.get("url", "") for f in json.loads(body).get("files", [])]
    else:
        parser = _Links()
        parser.feed(body.decode("utf-8", "replace"))
        links = parser.hrefs
    for link in links:
        url = urllib.parse.urldefrag(urllib.parse.urljoin(base, link)).url  # the #sha256= of the index is not used
        if urllib.parse.unquote(urllib.parse.urlsplit(url).path).rsplit("/", 1)[-1] == filename:
            return url
    raise FetchError(f"{filename} is not listed on {_safe(page)}")


def _safe(url: str) -> str:
    """`url` without its credentials, for messages."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def download(url: str, dest: Path, ctx: ssl.SSLContext | None, index: str) -> None:
    """Copy `url` to `dest`, at most MAX_BYTES."""
    size = 0
    with _open(url, ctx, index) as resp, open(dest, "wb") as out:
        while chunk := resp.read(1 << 20):
            size += len(chunk)
            if size > MAX_BYTES:
                raise FetchError(f"{_safe(url)}: larger than {MAX_BYTES >> 20} MiB; not the pinned sdist")
            out.write(chunk)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(version: str, sha256: str, dest: Path, settings: dict[str, str] | None = None) -> Path:
    """Download llama-cpp-python `version`'s sdist into `dest`, check its SHA-256 against `sha256`, unpack it;
    the unpacked folder. Nothing of the file is read before the check; a mismatch leaves only the download."""
    settings = pip_settings() if settings is None else settings
    filename = f"llama_cpp_python-{version}.tar.gz"
    ctx = ssl.create_default_context(cafile=settings.get("cert") or None)
    archive = dest / filename
    for folder in (settings.get("find-links") or "").split():
        local = Path(urllib.request.url2pathname(urllib.parse.urlsplit(folder).path)) if folder.startswith(
            "file:") else Path(folder)
        if (local / filename).is_file():
            source = str(local / filename)
            with open(local / filename, "rb") as src, open(archive, "wb") as out:
                shutil.copyfileobj(src, out)
            break
    else:
        if _truthy(settings.get("no-index")):
            raise FetchError(f"{filename} is in no find-links folder and pip's no-index is set")
        failures = []
        for index in [settings.get("index-url") or PYPI, *(settings.get("extra-index-url") or "").split()]:
            try:
                source = index_file_url(index, filename, ctx)
                break
            except FetchError as e:
                failures.append(str(e))
            except OSError as e:  # urllib's URLError / HTTPError, a timeout
                failures.append(f"cannot read the index {_safe(index)}: {e}")
        else:
            raise FetchError("; ".join(failures))
        try:
            download(source, archive, ctx, index)
        except OSError as e:
            raise FetchError(f"cannot download {_safe(source)}: {e}") from None
    got = sha256_of(archive)
    if got != sha256:
        raise FetchError(f"{_safe(source)}: SHA-256 {got} is not the pinned {sha256}; not unpacked (a changed or "
                         "tampered file: check the index or mirror)")
    with tarfile.open(archive, "r:gz") as tar:
        # the "data" filter (Python 3.10.12+) refuses links and paths out of dest; the pinned file needs neither
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return dest / f"llama_cpp_python-{version}"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: fetch.py VERSION SHA256 DEST", file=sys.stderr)
        return 2
    version, sha256, dest = argv
    try:
        fetch(version, sha256.lower(), Path(dest))
    except (FetchError, OSError, tarfile.TarError) as e:
        print(f"llama.cpp build: error: {PROJECT} {version}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
