"""A full or unwritable artifact disk: the step fails early or cleanly with a message that names
the folder and the cause, registers no model, leaves no temp folder, and Retry completes the
round once the admin has fixed the disk.

The faults are real filesystem conditions: a regular file where the artifacts folder should be
(ENOTDIR), a read-only tmpfs (EROFS), and a tiny tmpfs filled with a ballast file (ENOSPC).
Permission bits would not do: the tests run as root, which ignores them. Mounting needs root
(CAP_SYS_ADMIN); where it is refused, the tmpfs tests skip and say so, or fail in CI like a missing
service (tests/services.missing).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services
from tests.loop.helpers import Api, label_everything, wait_for
from tests.loop.test_failures import SQLITE_ONLY, step_progress, versions
from tests.loop.test_loop import tiny_config
from worker.loop import artifacts

FIX_HINT = "fix it (free space, permissions, mount, or RANKLAB_DATA_DIR) and retry the round"


def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    result = (
        subprocess.run(
            [mount or "mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
        )
        if mount
        else None
    )
    if result is None or result.returncode != 0:
        reason = result.stderr.strip() if result is not None else "no mount command"
        services.missing(f"mounting a tmpfs (needs root with CAP_SYS_ADMIN; here: {reason})")


@pytest.fixture
def tmpfs_mounts() -> Iterator[list[Path]]:
    """Mount points to unmount at the end (lazily: a stopped worker may still hold a file)."""
    mounted: list[Path] = []
    yield mounted
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path, *, leave: int) -> Path:
    """A ballast file that leaves `leave` bytes free on the folder's (tmpfs) filesystem."""
    ballast = folder / "ballast"
    free = shutil.disk_usage(folder).free
    with open(ballast, "wb") as handle:
        handle.write(b"\0" * (free - leave))
    assert shutil.disk_usage(folder).free == leave
    return ballast


# ---- the checks themselves, without a worker ------------------------------------------------------


def test_a_file_where_the_artifacts_folder_should_be_is_named(tmp_path):
    (tmp_path / "artifacts").write_text("not a folder")
    out = tmp_path / "artifacts" / "project-1" / "round-0" / "reward"
    with pytest.raises(artifacts.ArtifactDirNotWritable) as failure:
        artifacts.prepare(out)
    assert str(failure.value) == (
        f"artifact directory {out.parent} is not writable: "
        f"{tmp_path / 'artifacts'} is a file, not a directory; {FIX_HINT}"
    )


def test_a_read_only_filesystem_is_named(tmp_path, tmpfs_mounts):
    mount_tmpfs(tmp_path / "artifacts", "size=64k,ro")
    tmpfs_mounts.append(tmp_path / "artifacts")
    out = tmp_path / "artifacts" / "project-1" / "round-0" / "policy"
    with pytest.raises(artifacts.ArtifactDirNotWritable) as failure:
        artifacts.prepare(out)
    assert str(failure.value) == (
        f"artifact directory {out.parent} is not writable: "  # the folder it could not make
        f"Read-only file system ({tmp_path / 'artifacts' / 'project-1'}); {FIX_HINT}"
    )


def test_a_full_disk_is_named_with_its_free_space_and_the_half_written_model_is_removed(
    tmp_path, tmpfs_mounts, tiny_model_dir
):
    from worker.ml.models import load_causal_lm, load_tokenizer, save_artifact

    folder = tmp_path / "artifacts"
    mount_tmpfs(folder, "size=64k")
    tmpfs_mounts.append(folder)
    fill(folder, leave=8192)
    out = folder / "round-0" / "reward"
    artifacts.prepare(out)  # a small file still fits: the check passes, the model will not
    model, tokenizer = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    with pytest.raises(artifacts.DiskFull) as failure, artifacts.writing(out, "the reward model"):
        save_artifact(model, tokenizer, out, {"kind": "test"})
    assert str(failure.value) == (
        f"disk full while writing the reward model to {out}: No space left on device "
        f"(8.0 kB free of 64.0 kB on that filesystem); {FIX_HINT}"
    )
    assert "No space left on device" in str(failure.value.__cause__)  # safetensors' own error, kept as the cause
    assert list(out.parent.iterdir()) == []  # neither `reward` nor a `.reward.tmp-*` folder


# ---- a round on a real worker ------------------------------------------------------------------


@SQLITE_ONLY
def test_a_full_disk_fails_the_reward_step_cleanly_and_retry_completes_the_round(
    app, db, client, admin_token, loop_project, tiny_model_dir, settings, tmpfs_mounts, start_worker
):
    project, labelers = loop_project
    api = Api(client, admin_token)
    mount_tmpfs(settings.artifacts_dir, "size=1m")
    tmpfs_mounts.append(settings.artifacts_dir)
    ballast = fill(settings.artifacts_dir, leave=8192)  # room for the write check, not for a model
    worker = start_worker()
    round0 = api.post(f"/api/v1/projects/{project.id}/rounds", tiny_config(tiny_model_dir), expect=201)
    api.wait_status(round0["id"], "labeling", worker=worker)
    label_everything(app, db, labelers, project.id)

    failed = api.wait_status(round0["id"], "failed", worker=worker)
    out = settings.artifacts_dir / f"project-{project.id}" / "round-0" / "reward"
    assert failed["error_step"] == "training_reward"
    assert failed["error_message"] == (
        f"DiskFull: disk full while writing the reward model to {out}: No space left "
        f"on device (8.0 kB free of 1.0 MB on that filesystem); {FIX_HINT}"
    )
    assert step_progress(db, round0["id"], "training_reward") >= 1  # it failed saving, after training
    assert versions(db, round0["id"], "reward") == 0 and failed["reward_model_id"] is None
    assert list(out.parent.iterdir()) == []  # no half-written model, no temp folder
    # Re-raised: Celery records the task as failed. It logs the traceback after the task has
    # marked the round failed, so the line may come a moment after the status.
    wait_for(lambda: "Traceback" in worker.output(), timeout=30, what="the task's traceback in the log", worker=worker)

    # The admin frees space and retries: the step runs again and the round completes.
    ballast.unlink()
    api.post(f"/api/v1/rounds/{round0['id']}/retry")
    done = api.wait_status(round0["id"], "done", worker=worker)
    assert versions(db, round0["id"], "reward") == 1 and versions(db, round0["id"], "policy") == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["policy", "reward"]
    assert api.get(f"/api/v1/rounds/{round0['id']}")["error_message"] is None
    assert (out / "ranklab_card.json").is_file() and done["reward_model_id"] is not None


@SQLITE_ONLY
def test_an_unwritable_artifacts_folder_fails_the_step_before_training_and_retry_completes_the_round(
    app, db, client, admin_token, loop_project, tiny_model_dir, settings, start_worker
):
    project, labelers = loop_project
    api = Api(client, admin_token)
    settings.artifacts_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.artifacts_dir.write_text("a file where the artifacts folder should be")
    worker = start_worker()
    round0 = api.post(f"/api/v1/projects/{project.id}/rounds", tiny_config(tiny_model_dir), expect=201)
    api.wait_status(round0["id"], "labeling", worker=worker)
    label_everything(app, db, labelers, project.id)

    failed = api.wait_status(round0["id"], "failed", worker=worker)
    folder = settings.artifacts_dir / f"project-{project.id}" / "round-0"
    assert failed["error_step"] == "training_reward"
    assert failed["error_message"] == (
        f"ArtifactDirNotWritable: artifact directory {folder} is not writable: "
        f"{settings.artifacts_dir} is a file, not a directory; {FIX_HINT}"
    )
    assert step_progress(db, round0["id"], "training_reward") == 0  # failed before any training
    assert versions(db, round0["id"], "reward") == 0

    # The admin moves the file away and retries.
    settings.artifacts_dir.unlink()
    api.post(f"/api/v1/rounds/{round0['id']}/retry")
    api.wait_status(round0["id"], "done", worker=worker)
    assert versions(db, round0["id"], "reward") == 1 and versions(db, round0["id"], "policy") == 1
    assert sorted(p.name for p in folder.iterdir()) == ["policy", "reward"]
