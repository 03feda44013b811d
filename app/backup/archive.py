"""Reading an archive for a restore: unpack it into a staging folder and verify every byte.

Members are copied out one by one (never all in memory) while their sha256 is computed; only
when every file matches the manifest, no file is missing or extra, and the manifest's tables are
exactly this ranklab's tables does the restore touch the database. Names are checked before
anything is written (no absolute paths, no `..`, no links or devices), so a crafted archive
cannot write outside the staging folder."""

from __future__ import annotations

import gzip
import json
import tarfile
import zlib
from pathlib import Path
from typing import Any

from app.backup import schema
from app.backup.format import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    BackupError,
    check_member_name,
    copy_hashing,
    table_member,
)


def unpack(archive: Path, staging: Path) -> dict[str, tuple[str, int]]:
    """Extracts regular files into `staging`; returns member -> (sha256, bytes)."""
    digests: dict[str, tuple[str, int]] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:  # streaming: one member at a time, in archive order
                path = check_member_name(member.name)
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BackupError(
                        f"the archive entry {member.name!r} is a link or device; a ranklab "
                        "backup holds only regular files, so it is refused"
                    )
                if member.name in digests:
                    raise BackupError(f"the archive holds {member.name!r} twice; refusing an ambiguous archive")
                target = staging / path
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)  # None only for what isfile() refused above
                if source is None:
                    raise BackupError(f"the archive entry {member.name!r} cannot be read as a file")
                with source, target.open("xb") as sink:
                    digests[member.name] = copy_hashing(source, sink)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BackupError(
            f"{archive} cannot be read as a tar archive ({exc}); it is truncated, corrupt "
            "or not a ranklab backup. Nothing was restored"
        ) from None
    return digests


def load_manifest(staging: Path, digests: dict[str, tuple[str, int]]) -> dict[str, Any]:
    if MANIFEST not in digests:
        raise BackupError(f"the archive has no {MANIFEST}: it is incomplete or not a ranklab backup")
    try:
        manifest = json.loads((staging / MANIFEST).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupError(f"{MANIFEST} is not valid JSON ({exc}); the archive is corrupt") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{MANIFEST} does not describe a {FORMAT} archive")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"the archive uses backup format {manifest.get('format_version')!r} (written by ranklab "
            f"{manifest.get('ranklab_version')}); this ranklab reads format {FORMAT_VERSION}"
        )
    required = {
        "alembic_revision": str,
        "ranklab_version": str,
        "tables": dict,
        "files": dict,
        "artifact_roots": list,
        "source": dict,
        "secret_key": bool,
    }
    wrong = [key for key, kind in required.items() if not isinstance(manifest.get(key), kind)]
    if wrong:
        raise BackupError(f"{MANIFEST} lacks or garbles {', '.join(wrong)}; the archive is corrupt")
    return manifest


def verify(manifest: dict[str, Any], digests: dict[str, tuple[str, int]]) -> None:
    listed: dict[str, dict] = manifest["files"]
    for name, meta in listed.items():
        check_member_name(name)
        if name not in digests:
            raise BackupError(
                f"the archive lacks {name}, which its manifest lists; it is incomplete. Nothing was restored"
            )
        sha, size = digests[name]
        meta = meta if isinstance(meta, dict) else {}
        if (sha, size) != (meta.get("sha256"), meta.get("bytes")):
            raise BackupError(
                f"checksum mismatch for {name} (manifest: sha256 {str(meta.get('sha256'))[:12]}…, "
                f"{meta.get('bytes')} bytes; archive: {sha[:12]}…, {size} bytes): the archive is "
                "corrupt. Nothing was restored"
            )
    extra = sorted(set(digests) - set(listed) - {MANIFEST})
    if extra:
        raise BackupError(
            f"the archive holds files its manifest does not list ({', '.join(extra[:5])}); "
            "it has been altered. Nothing was restored"
        )
    no_file = [t for t in manifest["tables"] if table_member(t) not in listed]
    if no_file:
        raise BackupError(f"the archive has no rows file for {', '.join(no_file)}; it is incomplete")
    bad_counts = [
        t
        for t, meta in manifest["tables"].items()
        if not isinstance(meta, dict) or not isinstance(meta.get("rows"), int)
    ]
    if bad_counts:
        raise BackupError(f"{MANIFEST} has no row count for {', '.join(bad_counts)}; the archive is corrupt")
    ours = [t.name for t in schema.tables()]
    theirs = list(manifest["tables"])
    missing, unknown = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    if missing or unknown:
        differences = []
        if missing:
            differences.append(f"missing {', '.join(missing)}")
        if unknown:
            differences.append(f"unknown {', '.join(unknown)}")
        raise BackupError(f"the archive's tables differ from this ranklab's: {'; '.join(differences)}")
