"""Streaming a model artifact folder as a zip, only from inside the artifacts folder.

artifact_path comes from the DB (written by the worker), so it is checked like user input: it is
resolved (symlinks and `..` followed) and must land under settings.artifacts_dir; files inside the
folder whose real path leaves it (a symlink out) are skipped. The zip is written in pieces as it
is read, so a multi-gigabyte full fine-tune never sits in memory."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

CHUNK_BYTES = 1024 * 1024


class ArtifactUnavailable(Exception):
    """The artifact cannot be offered for download; the message says why."""

    status_code = 404


class ArtifactOutsideRoot(ArtifactUnavailable):
    """The path leads outside the artifacts folder: refused, whether or not it exists."""

    status_code = 403


def resolve_artifact(artifact_path: str | None, *, artifacts_dir: Path) -> Path:
    """The real path of an artifact, refusing anything outside `artifacts_dir`.
    Relative paths are read as relative to `artifacts_dir`."""
    if not artifact_path:
        raise ArtifactUnavailable("this model version has no artifact path")
    root = artifacts_dir.resolve()
    path = (root / artifact_path).resolve()  # an absolute artifact_path replaces root here
    if not path.is_relative_to(root):
        raise ArtifactOutsideRoot("the artifact path is outside the artifacts folder; refusing to serve it")
    if not path.exists():
        raise ArtifactUnavailable(
            "nothing is stored at this path under the artifacts folder "
            "(a hub id, a deleted folder, or one on another machine)"
        )
    return path


def download_filename(version_id: int, kind: str) -> str:
    """`model-<id>-<kind>.zip`, the kind reduced to [a-z0-9-]: it comes from the DB, and a quote,
    a newline or a slash in a Content-Disposition filename would break the header or the path."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(kind).lower()).strip("-")[:32] or "artifact"
    return f"model-{int(version_id)}-{slug}.zip"


def artifact_files(path: Path, *, root: Path) -> list[tuple[Path, str]]:
    """(file, name in the zip) for a file or every regular file under a folder, sorted by name."""
    root = root.resolve()
    candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    base = path.parent if path.is_file() else path
    kept = []
    for file in candidates:
        if not file.resolve().is_relative_to(root):
            continue
        kept.append((file, file.relative_to(base).as_posix()))
    return kept


class _Pieces:
    """A write-only, unseekable file object that hands out what was written since the last take()."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:  # part of the file interface ZipFile is typed to want; it never closes ours
        pass

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def stream_zip(files: list[tuple[Path, str]]) -> Iterator[bytes]:
    """Yields a stored (uncompressed: weights do not compress) zip of `files`, piece by piece."""
    sink = _Pieces()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for file, name in files:
            info = zipfile.ZipInfo.from_file(file, arcname=name)
            with file.open("rb") as source, archive.open(info, "w", force_zip64=True) as target:
                while chunk := source.read(CHUNK_BYTES):
                    target.write(chunk)
                    yield sink.take()
            yield sink.take()
    yield sink.take()
