import json

import pytest
from sqlalchemy import func, select

from app.models import Completion, Prompt, RankingTask, TaskCompletion
from app.prompts import service
from tests.factories import make_project


def counts(db):
    db.expire_all()
    return tuple(
        db.scalar(select(func.count()).select_from(t)) for t in (Prompt, Completion, RankingTask, TaskCompletion)
    )


@pytest.fixture
def project_with_prompt(client, db, upload_auth):
    project = make_project(db, k_min=4, k_max=6)
    client.post(
        f"/api/v1/projects/{project.id}/prompts",
        headers=upload_auth,
        json={"prompts": [{"external_id": "q/1", "text": "What is 2+2?"}]},
    )
    return project


def completions(n, prefix="answer"):
    return [{"text": f"{prefix} {i}", "model": "m-1", "generation_params": {"temperature": 0.7}} for i in range(n)]


def test_completions_make_one_task_and_reposting_returns_it(client, db, upload_auth, project_with_prompt):
    url = f"/api/v1/projects/{project_with_prompt.id}/prompts/q%2F1/completions"
    response = client.post(url, headers=upload_auth, json={"completions": completions(5)})
    assert response.status_code == 201, response.text
    task = response.json()
    assert task["created"] is True and task["prompt_external_id"] == "q/1" and task["status"] == "open"
    assert [c["position"] for c in task["completions"]] == [0, 1, 2, 3, 4]
    assert [c["text"] for c in task["completions"]] == [f"answer {i}" for i in range(5)]
    stored = db.get(Completion, task["completions"][0]["id"])
    assert (stored.source, stored.model_name, stored.generation_params) == ("upload", "m-1", {"temperature": 0.7})
    before = counts(db)

    again = client.post(url, headers=upload_auth, json={"completions": list(reversed(completions(5)))})
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["task_id"] == task["task_id"]
    assert counts(db) == before

    other = client.post(url, headers=upload_auth, json={"completions": completions(4, prefix="other")})
    assert other.status_code == 201 and other.json()["task_id"] != task["task_id"]


@pytest.mark.parametrize(
    "body, status, named",
    [
        ({"completions": completions(3)}, 422, "completions: 3 given; project"),
        ({"completions": completions(7)}, 422, "takes 4–6"),
        ({"completions": completions(3) + [{"text": ""}]}, 422, "completions.3.text"),
        ({"completions": completions(3) + [{"text": 4}]}, 422, "completions.3.text"),
        (
            {"completions": completions(3) + [{"text": "answer 1"}]},
            422,
            "completions[3].text: same text as completions[1]",
        ),
        ({"completions": completions(3) + [{"text": "x", "params": {}}]}, 422, "completions.3.params"),
        ({"completions": "four"}, 422, "completions"),
        ({}, 422, "completions"),
    ],
)
def test_bad_completions_are_refused_and_store_nothing(
    client, db, upload_auth, project_with_prompt, body, status, named
):
    before = counts(db)
    url = f"/api/v1/projects/{project_with_prompt.id}/prompts/q%2F1/completions"
    response = client.post(url, headers=upload_auth, json=body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert named in payload.get("message", payload["detail"])
    assert counts(db) == before


def test_unknown_prompt_or_project_is_404(client, db, upload_auth, project_with_prompt):
    response = client.post(
        f"/api/v1/projects/{project_with_prompt.id}/prompts/nope/completions",
        headers=upload_auth,
        json={"completions": completions(4)},
    )
    assert response.status_code == 404 and "external_id: no prompt 'nope'" in response.json()["detail"]
    response = client.post(
        "/api/v1/projects/999/prompts/q%2F1/completions", headers=upload_auth, json={"completions": completions(4)}
    )
    assert response.status_code == 404


def test_too_long_completion_names_the_setting(client, db, upload_auth, project_with_prompt, settings):
    body = {"completions": completions(3) + [{"text": "y" * (settings.max_text_chars + 1)}]}
    response = client.post(
        f"/api/v1/projects/{project_with_prompt.id}/prompts/q%2F1/completions", headers=upload_auth, json=body
    )
    assert response.status_code == 422 and "RANKLAB_MAX_TEXT_CHARS" in response.json()["detail"]


def test_completions_jsonl_creates_tasks_and_prompts(client, db, upload_auth, project_with_prompt):
    lines = [
        {"external_id": "q/1", "completions": completions(4)},  # 1 new task
        {"external_id": "new", "text": "Fresh prompt", "completions": completions(4)},  # 2 prompt + task
        {"external_id": "q/1", "completions": completions(4)},  # 3 same set again
        {"external_id": "missing", "completions": completions(4)},  # 4 unknown prompt
        {"external_id": "q/1", "completions": completions(2)},  # 5 K too small
        {"completions": completions(4)},  # 6 no prompt named
        {
            "external_id": "chat",
            "messages": [{"role": "assistant", "content": "x"}],
            "completions": completions(4),
        },  # 7 bad chat
    ]
    body = "\n".join(json.dumps(line) for line in lines) + "\n" + '{"external_id": "q/1", "completions": [\n'
    response = client.post(
        f"/api/v1/projects/{project_with_prompt.id}/completions/jsonl",
        headers=upload_auth,
        files={"file": ("c.jsonl", body.encode(), "application/x-ndjson")},
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["created"], report["already_present"], report["rejected"], report["prompts_created"]) == (2, 1, 5, 1)
    reasons = {e["line"]: e["reason"] for e in report["errors"]}
    assert "no prompt 'missing'" in reasons[4]
    assert "2 given" in reasons[5]
    assert reasons[6].startswith("external_id: missing")
    assert "last turn must be the user's" in reasons[7]
    assert reasons[8].startswith("invalid JSON")
    db.expire_all()
    assert db.scalar(select(Prompt.text).where(Prompt.external_id == "new")) == "Fresh prompt"
    assert db.scalar(select(func.count()).select_from(RankingTask)) == 2


def test_service_add_completions_for_admin_pages(db):
    from app.projects.service import create_project

    project = create_project(db, name="svc", k_min=4, k_max=4)
    service.add_prompts(db, project=project, prompts=[service.PromptIn(external_id="p", text="hi")])
    task, report = service.add_completions(
        db, project=project, prompt_external_id="p", completions=[{"text": t} for t in "abcd"]
    )
    assert report.created and report.task_id == task.id and len(report.completion_ids) == 4
    assert [item.completion.text for item in task.items] == list("abcd")
    with pytest.raises(service.CompletionsRejected, match=r"completions\[1\]\.model"):
        service.add_completions(
            db,
            project=project,
            prompt_external_id="p",
            completions=[{"text": "a"}, {"text": "b", "model": 3}, {"text": "c"}, {"text": "d"}],
        )
