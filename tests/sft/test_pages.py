"""The admin's SFT pages: the runs list with the "Run SFT" form (errors beside their inputs), the
run page with live progress, loss chart and cancel/retry, and the round form's SFT start option."""

from __future__ import annotations

from app.models.jobs import JobEvent, TrainingJob
from tests.admin.helpers import admin_client, fresh
from tests.factories import make_project, make_user
from tests.rounds.helpers import make_version
from tests.sft.helpers import add_demonstrations, populate_jobs


def test_run_sft_from_the_form(db, client):
    _, csrf = admin_client(client, db)
    project = make_project(db)
    author = make_user(db, projects=[project])
    add_demonstrations(db, project, 3, author=author)
    sft = make_version(db, project, kind="sft", name="an earlier SFT")

    shown = client.get(f"/admin/projects/{project.id}/sft")
    assert shown.status_code == 200
    html = shown.text
    assert 'name="sft.learning_rate"' in html and 'value="0.0002"' in html and author.email in html
    assert f'<option value="{sft.id}"' in html and "3 accepted demonstrations" in html

    form = {"csrf_token": csrf, "sft.learning_rate": "5", "sft.epochs": "1", "demonstrations.statuses": "accepted"}
    for f in ("lora_r", "lora_alpha", "num_virtual_tokens", "batch_tokens", "max_length", "seed"):
        form.setdefault(f"sft.{f}", "16")
    for f in ("lora_dropout", "weight_decay", "warmup_fraction", "eval_fraction"):
        form.setdefault(f"sft.{f}", "0")
    form.update({"sft.grad_clip": "1", "sft.mode": "lora", "sft.peft_method": "lora", "sft.lr_schedule": "linear"})
    refused = client.post(f"/admin/projects/{project.id}/sft", data=form)
    assert refused.status_code == 422
    assert 'id="f-sft-learning_rate-error"' in refused.text and "less than 1" in refused.text
    assert db.query(TrainingJob).count() == 0

    form["sft.learning_rate"] = "0.001"
    form["demonstrations.labeler_ids"] = str(author.id)
    launched = client.post(f"/admin/projects/{project.id}/sft", data=form, follow_redirects=False)
    assert launched.status_code == 303, launched.text
    fresh(db)
    job = db.query(TrainingJob).one()
    assert launched.headers["location"] == f"/admin/sft/{job.id}"
    assert job.config["sft"]["learning_rate"] == 0.001 and job.config["demonstrations"]["labeler_ids"] == [author.id]

    page = client.get(f"/admin/sft/{job.id}")
    assert page.status_code == 200 and 'hx-trigger="every 2s"' in page.text and "data-demonstrations>3<" in page.text
    cancelled = client.post(f"/admin/sft/{job.id}/cancel", data={"csrf_token": csrf}, headers={"HX-Request": "true"})
    assert cancelled.status_code == 200 and 'data-status="cancelled"' in cancelled.text
    assert "Retry" in cancelled.text and "every 2s" not in cancelled.text


def test_a_finished_run_shows_its_loss_chart_and_result(db, client):
    admin_client(client, db)
    project = make_project(db)
    add_demonstrations(db, project, 2)
    base = make_version(db, project, kind="base")
    job = populate_jobs(db, project, start=base)
    db.add_all(
        JobEvent(job_id=job.id, kind="metric", step=step, data={"loss": 2.0 / step}, message="") for step in (2, 3)
    )
    db.add(JobEvent(job_id=job.id, kind="metric", step=3, data={"eval_loss": 0.9}, message=""))
    db.commit()
    html = client.get(f"/admin/sft/{job.id}").text
    assert "Training loss" in html and "Held-out loss" in html and "<svg" in html
    assert f"data-result>sft #{job.result_model_id}<" in html and "every 2s" not in html
    assert client.get("/admin/sft/999999").status_code == 404
    version = client.get(f"/admin/models/{job.result_model_id}").text  # the version's lineage names its run
    assert f'<a href="/admin/sft/{job.id}" data-sft-run>SFT run #{job.id}</a>' in version


def test_the_round_form_offers_sft_versions_as_the_start(db, client):
    admin_client(client, db)
    project = make_project(db)
    sft = make_version(db, project, kind="sft", name="tuned")
    html = client.get(f"/admin/projects/{project.id}/rounds/new").text
    assert 'name="start_version_id"' in html and f'<option value="{sft.id}" >sft: tuned (#{sft.id})</option>' in html
