"""Helpers shared by the backup tests: settings as `ranklab bootstrap` makes them, model
artifacts as the worker writes them, and row counts per table."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select

from app.backup import schema
from app.db import make_engine
from app.settings import Settings


def make_settings(data_dir: Path, url: str) -> Settings:
    # No secret key in the environment: the data dir's generated key, as `ranklab bootstrap` makes it.
    return Settings(data_dir=data_dir, database_url=url, secret_key="", embedded_worker=False, _env_file=None)


def target_settings(request, tmp_path, backend: str) -> Settings:
    url = (
        f"sqlite:///{tmp_path / 'target' / 'ranklab.sqlite'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_target_url")
    )
    return make_settings(tmp_path / "target", url)


def write_artifact(folder: Path, seed: int) -> None:
    """What worker.ml leaves behind: a config, weights (binary, > one read chunk) and a subfolder."""
    (folder / "adapter").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"seed": seed, "kind": folder.name}))
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(bytes((i * seed) % 256 for i in range(70_000)) * 20)


def counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            present = set(conn.dialect.get_table_names(conn))
            return {
                t.name: conn.scalar(select(func.count()).select_from(t)) for t in schema.tables() if t.name in present
            }
    finally:
        engine.dispose()
