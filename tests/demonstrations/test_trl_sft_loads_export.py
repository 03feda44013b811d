"""The export loads unchanged with `datasets` and trains with TRL's SFTTrainer.

Demonstrations come in through the real upload API and the review path's columns (a reviewer's
edit), go out through the real export API into files, and `load_dataset("json", ...)` hands them
to SFTTrainer, which runs a few optimiser steps on a tiny random Llama (worker/ml/tiny.py) in
both of TRL's forms. Run once, on SQLite: the backend changes neither the rows (the export tests
compare them on both) nor what TRL does with the file."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker

from app.main import create_app
from app.settings import Settings
from tests.demonstrations.data_helpers import upload, write_demonstration
from tests.factories import make_project, make_token, make_user
from worker.ml.tiny import save_tiny_model

WORDS = "paris lima rome capital france peru italy city".split()


@pytest.fixture
def sqlite_app(sqlite_template, tmp_path):
    path = tmp_path / "ranklab.sqlite"
    shutil.copy(sqlite_template, path)
    app = create_app(
        Settings(
            data_dir=tmp_path / "data",
            database_url=f"sqlite:///{path}",
            secret_key="test",
            embedded_worker=False,
            _env_file=None,
        )
    )
    yield app
    app.state.engine.dispose()


@pytest.fixture
def one_thread():
    """A tiny model gains nothing from more threads on a shared machine (as in tests/ml)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("form", ["messages", "prompt_completion"])
def test_trl_sft_trainer_trains_on_the_export(sqlite_app, tmp_path, one_thread, form):
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")

    db = sessionmaker(bind=sqlite_app.state.engine, expire_on_commit=False)()
    project = make_project(db)
    upload_auth = {"Authorization": f"Bearer {make_token(db, 'upload')}"}
    export_auth = {"Authorization": f"Bearer {make_token(db, 'export')}"}
    cities = [("france", "paris"), ("peru", "lima"), ("italy", "rome")]
    rows = [
        {"messages": [{"role": "user", "content": f"capital of {c} ?"}, {"role": "assistant", "content": f"{city} ."}]}
        for c, city in cities
    ] + [{"prompt": f"what is the capital of {c} ?", "completion": f"the capital is {city}"} for c, city in cities]
    author, reviewer = make_user(db), make_user(db)
    write_demonstration(db, project.id, author, "rome", reviewer=reviewer, reviewed_response="rome is the city .")
    write_demonstration(db, project.id, author, "not trained", status="rejected", reviewer=reviewer)

    with TestClient(sqlite_app) as client:
        assert upload(client, project.id, upload_auth, *rows).status_code == 200
        response = client.get(
            f"/api/v1/projects/{project.id}/demonstrations/export", headers=export_auth, params={"format": form}
        )
    assert response.status_code == 200
    data_file = tmp_path / f"sft-{form}.jsonl"
    data_file.write_bytes(response.content)
    db.close()

    dataset = datasets.load_dataset("json", data_files=str(data_file), split="train")
    assert len(dataset) == 7  # 6 uploaded + the reviewed one; the rejected one is not exported
    texts = json.dumps(dataset.to_list())
    assert "rome is the city ." in texts and "not trained" not in texts

    model_dir = tmp_path / "tiny"
    save_tiny_model(model_dir, words=WORDS)
    config = trl.SFTConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        max_length=64,
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = trl.SFTTrainer(model=str(model_dir), args=config, train_dataset=dataset)
    # TRL recognised the form: the chat template framed the turns, and a prompt/completion file
    # trains on the completion only (prompt labels -100).
    prepared = trainer.train_dataset
    first = trainer.processing_class.decode(prepared[0]["input_ids"]).replace(" ", "")  # word-level: spaced
    assert first.startswith("<|im_start|>user") and "<|im_start|>assistantromeisthecity.<|im_end|>" in first
    labels, ids = prepared[0]["labels"], prepared[0]["input_ids"]
    prompt_masked = labels[0] == -100 and labels[-1] == ids[-1]
    assert prompt_masked == (form == "prompt_completion"), labels
    result = trainer.train()
    assert trainer.state.global_step == 3
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(loss == loss and loss > 0 for loss in losses)  # finite, not NaN
    assert result.training_loss > 0
