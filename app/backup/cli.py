"""Arguments and output of `ranklab export-all` and `ranklab import-all` (wired into app/cli.py)."""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

from app.settings import Settings


def add_arguments(commands) -> None:
    export = commands.add_parser(
        "export-all",
        help="back up every table, the model artifacts and the signing key into one archive (docs/reliability.md)",
    )
    export.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE",
        help="archive to write: .tar, or .tar.gz / .tgz compressed; never overwritten",
    )
    restore = commands.add_parser(
        "import-all", help="restore an export-all archive into an empty database and data dir (migrates it first)"
    )
    restore.add_argument("archive", type=Path, help="a file written by `ranklab export-all`")


def _progress():
    from tqdm import tqdm

    # On stderr, so stdout keeps only the summary; hidden when nobody watches (cron, CI).
    return partial(tqdm, file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from app.backup.dump import export_all
    from app.backup.format import BackupError
    from app.backup.restore import import_all

    try:
        if args.command == "export-all":
            manifest = export_all(settings, args.out, progress=_progress())
            rows = sum(t["rows"] for t in manifest["tables"].values())
            artifacts = sum(1 for name in manifest["files"] if name.startswith("artifacts/"))
            print(
                f"Wrote {args.out}: {rows} rows in {len(manifest['tables'])} tables, {artifacts} artifact files "
                f"from {len(manifest['artifact_roots'])} model folders (migration {manifest['alembic_revision']})."
            )
            for skipped in manifest["not_archived"]:
                print(
                    f"  not archived: model version {skipped['model_version_id']} "
                    f"{skipped['artifact_path']!r}: {skipped['why']}"
                )
            return 0
        report = import_all(settings, args.archive, progress=_progress())
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"Restored {args.archive}: {sum(report['tables'].values())} rows in {len(report['tables'])} tables, "
        f"{report['artifact_files']} artifact files, {report['paths_rewritten']} artifact paths rewritten."
    )
    for note in report["notes"]:
        print(f"  note: {note}")
    return 0
