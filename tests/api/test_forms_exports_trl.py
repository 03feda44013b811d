"""The feedback forms' exports train TRL's trainers unchanged: the pairs derived from Likert
ratings run RewardTrainer and DPOTrainer, good/bad's unpaired rows run KTOTrainer, each for two
optimiser steps on a tiny random Llama (worker/ml/tiny.py), loaded by `datasets` from the files
the API served.

On SQLite only: the export runs the same queries on both backends and tests/api/test_forms_exports.py
compares their rows on both; what TRL does with a file does not depend on where it came from."""

from __future__ import annotations

import pytest
import torch

from app.models import Role
from tests.admin.forms_data import form_project, form_task, rating_judgment
from tests.factories import make_user
from worker.ml.tiny import save_tiny_model

WORDS = "paris lima rome capital france peru italy city is the of good bad".split()
QUESTIONS = [("france", "paris"), ("peru", "lima"), ("italy", "rome")]


@pytest.fixture
def one_thread():
    """A tiny model gains nothing from more threads on a shared machine (as in tests/ml)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


def _project(db, form):
    project = form_project(db, form)
    labelers = [make_user(db, role=Role.labeler, projects=[project]) for _ in range(2)]
    for country, city in QUESTIONS:
        wrong = [c for _, c in QUESTIONS if c != city]
        task = form_task(
            db,
            project,
            texts=[f"the capital is {city}", f"the capital is {wrong[0]}", f"{wrong[1]} is the city"],
            prompt_text=f"capital of {country} ?",
        )
        right, *others = task.completion_ids
        for user in labelers:
            if form == "likert":
                rating_judgment(db, task, user, {right: 7, others[0]: 3, others[1]: 1})
            else:
                rating_judgment(db, task, user, {right: "good", others[0]: "bad", others[1]: "bad"})
    return project


def _load(client, auth, tmp_path, url, params):
    from datasets import load_dataset

    response = client.get(url, headers=auth, params=params)
    assert response.status_code == 200, response.text
    path = tmp_path / "export.jsonl"
    path.write_bytes(response.content)
    return load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))


def _common(tmp_path):
    """Arguments every trainer's config shares: CPU, fp32, no checkpoints, two steps."""
    return {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-3,
        "use_cpu": True,
        "bf16": False,
        "activation_checkpointing": False,  # TRL turns it on by default (transformers 5 renamed it)
        "save_strategy": "no",
        "report_to": "none",
        "logging_steps": 1,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "seed": 0,
    }


def _two_finite_steps(trainer):
    trainer.train()
    assert trainer.state.global_step == 2
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(loss == loss and abs(loss) < 1e6 for loss in losses)  # finite, not NaN


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("trainer_name", "style"), [("reward", "standard"), ("dpo", "conversational")])
def test_trl_trainers_train_on_rating_pairs(
    client, db, export_auth, tmp_path, monkeypatch, one_thread, trainer_name, style
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    trl = pytest.importorskip("trl")
    project = _project(db, "likert")
    dataset = _load(client, export_auth, tmp_path, f"/api/v1/projects/{project.id}/exports/pairs", {"style": style})
    # 3 tasks x 2 labelers x 3 pairs (7 > 3 > 1); the right answer is chosen over both others.
    assert len(dataset) == 18 and {"prompt", "chosen", "rejected"} <= set(dataset.column_names)
    assert dataset[0]["chosen"] == (
        "the capital is paris" if style == "standard" else [{"role": "assistant", "content": "the capital is paris"}]
    )
    model_dir = tmp_path / "tiny"
    save_tiny_model(model_dir, words=WORDS)
    if trainer_name == "reward":
        config = trl.RewardConfig(**_common(tmp_path), max_length=64)
        trainer = trl.RewardTrainer(model=str(model_dir), args=config, train_dataset=dataset)
    else:
        config = trl.DPOConfig(**_common(tmp_path), max_length=64)
        trainer = trl.DPOTrainer(model=str(model_dir), args=config, train_dataset=dataset)
    _two_finite_steps(trainer)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_trl_kto_trainer_trains_on_unpaired_rows(client, db, export_auth, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    trl = pytest.importorskip("trl")
    project = _project(db, "good_bad")
    dataset = _load(client, export_auth, tmp_path, f"/api/v1/projects/{project.id}/exports/unpaired", {})
    assert len(dataset) == 18 and sum(dataset["label"]) == 6  # one good answer in three
    model_dir = tmp_path / "tiny"
    save_tiny_model(model_dir, words=WORDS)
    config = trl.KTOConfig(**_common(tmp_path), max_length=64)
    trainer = trl.KTOTrainer(model=str(model_dir), args=config, train_dataset=dataset)
    _two_finite_steps(trainer)
