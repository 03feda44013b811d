"""The one-click presets of issue 13 through the API and the evaluations page: "SFT vs base" and
"policy vs SFT" launch the pair they name, alone, and refuse (naming `preset`) when the project
has no such pair; the page's buttons are disabled until it has."""

from __future__ import annotations

from sqlalchemy import select

from app.models import Evaluation
from tests.admin.helpers import admin_client, fresh
from tests.api.conftest import bearer
from tests.evaluation.helpers import add_prompts
from tests.factories import make_project, make_token
from tests.rounds.helpers import make_version


def test_named_presets_launch_their_pair_from_the_api(client, db):
    project = make_project(db)
    add_prompts(db, project, 2)
    auth = bearer(make_token(db, "admin"))
    url = f"/api/v1/projects/{project.id}/evaluations"

    missing = client.post(url, json={"preset": "sft_vs_base"}, headers=auth)
    assert missing.status_code == 422 and "preset: SFT vs base: the project has no sft model" in missing.text

    base = make_version(db, project, kind="base")
    sft = make_version(db, project, kind="sft", parent=base)
    policy = make_version(db, project, kind="policy", parent=sft)
    answer = client.post(url, json={"preset": "sft_vs_base", "prompts": 2}, headers=auth)
    assert answer.status_code == 201, answer.text
    assert answer.json()["comparisons"] == [[sft.id, base.id]]
    answer = client.post(url, json={"preset": "policy_vs_sft", "prompts": 2}, headers=auth)
    assert answer.status_code == 201, answer.text
    assert answer.json()["comparisons"] == [[policy.id, sft.id]]

    for body, words in [
        ({"preset": "policy_vs_sft", "version_ids": [policy.id, base.id]}, "preset: give a preset alone"),
        ({"preset": "policy_vs_sft", "version_id": policy.id, "against": ["base"]}, "preset: give a preset alone"),
        ({"preset": "dpo_vs_sft"}, "preset"),
    ]:
        refused = client.post(url, json=body, headers=auth)
        assert refused.status_code == 422 and words in refused.text, refused.text


def test_the_evaluations_page_offers_the_presets_it_can_run(client, db):
    project = make_project(db)
    add_prompts(db, project, 2)
    _admin, csrf = admin_client(client, db)
    base = make_version(db, project, kind="base")
    make_version(db, project, kind="policy", parent=base)
    page = client.get(f"/admin/projects/{project.id}/evaluations").text
    assert 'data-preset="sft_vs_base" disabled' in page and 'data-preset="policy_vs_sft" disabled' in page

    sft = make_version(db, project, kind="sft", parent=base)
    page = client.get(f"/admin/projects/{project.id}/evaluations").text
    assert 'data-preset="sft_vs_base" >' in page and 'data-preset="policy_vs_sft" disabled' in page
    answer = client.post(
        f"/admin/projects/{project.id}/evaluations",
        data={"csrf_token": csrf, "preset": "sft_vs_base"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    fresh(db)
    evaluation = db.scalar(select(Evaluation).where(Evaluation.project_id == project.id))
    assert evaluation.comparisons == [[sft.id, base.id]]
