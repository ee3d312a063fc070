"""Downloads into the data directory, only when the user asked for them (``--download``)."""
from __future__ import annotations

import hashlib
import tarfile
import urllib.request
from pathlib import Path

from ..progress import progress_bar


def fetch(url: str, destination: Path, md5: str | None = None) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(destination.suffix + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
        total = int(response.headers.get("Content-Length", 0)) or None
        with progress_bar(total, f"download {destination.name}", unit="B") as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    if md5 is not None:
        got = hashlib.md5(partial.read_bytes()).hexdigest()
        if got != md5:
            partial.unlink()
            raise OSError(f"download of {url} is corrupt: md5 {got}, expected {md5}")
    partial.replace(destination)
    return destination


def fetch_and_extract(url: str, directory: Path, md5: str) -> None:
    archive = fetch(url, directory / url.rsplit("/", 1)[-1], md5)
    with tarfile.open(archive) as tar:
        tar.extractall(directory, filter="data")
    archive.unlink()
