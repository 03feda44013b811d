"""Artifact folders of a round: where its models go, a write check before a long step, plain
messages for disk faults, and removal of what a killed or failed writer left behind.

worker.ml writes each model into a temp sibling `.NAME.tmp-*` and renames it into place, so a
complete artifact is the only thing ever found under its final name, and a ModelVersion row is
only inserted after that rename. What a fault can leave is temp folders: a SIGKILL mid-write
leaves one, which the next run of the step deletes; a failed write is cleaned up at once.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from worker.loop.runtime import settings

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST)
FIX = "fix it (free space, permissions, mount, or RANKLAB_DATA_DIR) and retry the round"


class DiskFull(OSError):
    """The artifact disk ran out of space (or quota) while a step wrote to it."""


class ArtifactDirNotWritable(OSError):
    """The artifact folder cannot be created or written (read-only, a file in the way, ...)."""


def round_dir(project_id: int, number: int) -> Path:
    return settings().artifacts_dir / f"project-{project_id}" / f"round-{number}"


def prepare(out: Path) -> None:
    """Before a long step that ends by writing `out`: fail now, with a plain message, if its folder
    cannot be written, rather than after an hour of training; and delete temp folders a killed
    run of this step left there."""
    folder = out.parent
    probe = folder / f".write-check.tmp-{uuid.uuid4().hex[:8]}"  # a temp name: removed if we die here
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"ranklab")
            handle.flush()
            os.fsync(handle.fileno())  # a full disk may only say so when the data is flushed
        probe.unlink()
    except OSError as exc:
        if folder.is_dir():
            probe.unlink(missing_ok=True)
        fault = describe(exc, folder, f"checking that {folder} can be written")
        if fault is None:
            raise
        raise fault from exc
    remove_partial_artifacts(folder)


@contextmanager
def writing(out: Path, what: str) -> Iterator[None]:
    """Around the step's work that writes `out`: on any way out but success, this step's temp
    folders are removed (nothing was registered), and a disk fault is re-raised as DiskFull /
    ArtifactDirNotWritable with a message an admin can act on."""
    try:
        yield
    except BaseException as exc:
        remove_partial_artifacts(out.parent, name=out.name)
        fault = describe(exc, out.parent, f"writing {what} to {out}") if isinstance(exc, Exception) else None
        if fault is None:
            raise
        raise fault from exc


def describe(exc: BaseException, folder: Path, doing: str) -> OSError | None:
    """DiskFull or ArtifactDirNotWritable for a disk fault anywhere in `exc`'s chain, else None."""
    code, cause = _fault(exc, folder)
    fault: OSError
    if code in DISK_FULL:
        fault = DiskFull(f"disk full while {doing}: {os.strerror(code)} ({_space(folder)}); {FIX}")
    elif code in NOT_WRITABLE:
        fault = ArtifactDirNotWritable(f"artifact directory {folder} is not writable: {_why(code, cause)}; {FIX}")
    else:
        return None
    fault.errno = code
    return fault


def _fault(exc: BaseException | None, folder: Path) -> tuple[int | None, BaseException | None]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc.errno, exc
        # Only a write fails with "not writable" codes under our folder; reading the backbone from
        # elsewhere with "Permission denied" is a different problem and keeps its own message.
        if isinstance(exc, OSError) and exc.errno in NOT_WRITABLE and _under(exc.filename, folder):
            return exc.errno, exc
        # Libraries wrap the OS error in their own type; safetensors says
        # "I/O error: No space left on device (os error 28)". Only ever written files fill a disk.
        for code in DISK_FULL:
            if os.strerror(code) in str(exc) or f"os error {code})" in str(exc):
                return code, exc
        exc = exc.__cause__ or exc.__context__
    return None, None


def _under(filename, folder: Path) -> bool:
    """Is `filename` the artifacts root, the folder, or inside either (or an ancestor of them:
    mkdir of a missing parent fails on the parent's name)?"""
    if not filename:
        return False
    path = Path(os.fsdecode(filename))
    return any(path == p or p in path.parents or path in p.parents for p in (settings().artifacts_dir, folder))


def _why(code: int, cause: BaseException | None) -> str:
    filename = getattr(cause, "filename", None)
    if code in (errno.ENOTDIR, errno.EEXIST) and filename:
        path = Path(os.fsdecode(filename))
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{blocker} is a file, not a directory"
    return os.strerror(code) + (f" ({os.fsdecode(filename)})" if filename else "")


def _space(folder: Path) -> str:
    existing = next((p for p in [folder, *folder.parents] if p.is_dir()), None)
    if existing is None:
        return "free space unknown"
    usage = shutil.disk_usage(existing)
    return f"{_size(usage.free)} free of {_size(usage.total)} on that filesystem"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def remove_partial_artifacts(folder: Path, *, name: str = "") -> list[str]:
    """Delete temp folders a killed or failed writer left in `folder` (only `.NAME.tmp-*` ones
    when `name` is given). worker.ml renames a finished artifact into place, so a complete one
    never has such a name."""
    removed = []
    if folder.is_dir():
        for child in folder.iterdir():
            if child.name.startswith(f".{name}") and (".tmp-" in child.name or ".old-" in child.name):
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
                removed.append(child.name)
    return removed
