"""Bugs tests/api/test_schemathesis.py found, pinned by plain tests (both backends) so they stay
fixed without the fuzzer: each was a 500 on one backend; now a 422 naming the field, nothing stored."""

import json

import pytest
from sqlalchemy import func, select

from app.models import Project, Prompt, Ranking
from tests.factories import csrf_of, login, make_project, make_task, make_user
from tests.rounds.helpers import make_round

BIG_IDS = [2**31, 2**63, 10**30]  # past Postgres INTEGER, past SQLite's 64 bits, past both


def fields(response) -> list[str]:
    """The dotted locations a 422 names."""
    assert response.status_code == 422, response.text
    return [".".join(str(p) for p in e["loc"]) for e in response.json()["detail"]]


def count(db, model) -> int:
    db.rollback()  # a fresh snapshot (SQLite keeps a read transaction's view)
    return db.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize("big", BIG_IDS)
def test_ids_out_of_range_name_the_path_parameter(client, db, admin_auth, big):
    project = make_project(db)
    make_round(db, project)
    for url in (
        f"/api/v1/projects/{big}",
        f"/api/v1/projects/{big}/progress",
        f"/api/v1/projects/{big}/exports/pairs",
        f"/api/v1/rounds/{big}",
    ):
        assert fields(client.get(url, headers=admin_auth)) == [f"path.{url.split('/')[3][:-1]}_id"]
    assert fields(client.post(f"/api/v1/rounds/{big}/cancel", headers=admin_auth)) == ["path.round_id"]
    assert fields(client.get("/api/v1/rounds/1", params={"events_after": big}, headers=admin_auth)) == [
        "query.events_after"
    ]
    assert fields(client.get("/api/v1/projects/0", headers=admin_auth)) == ["path.project_id"]
    assert client.get("/api/v1/projects/2147483647", headers=admin_auth).status_code == 404  # largest id: not there


def test_nul_characters_are_refused_in_project_fields(client, db, admin_auth):
    nul = "bad\x00name"
    response = client.post(
        "/api/v1/projects", headers=admin_auth, json={"name": nul, "guidelines": nul, "flags": ["ok", nul]}
    )
    assert fields(response) == ["body.name", "body.guidelines", "body.flags.1"]
    assert "NUL character" in response.json()["message"]
    project = make_project(db, name="kept")
    assert fields(client.patch(f"/api/v1/projects/{project.id}", headers=admin_auth, json={"description": nul})) == [
        "body.description"
    ]
    assert count(db, Project) == 1 and db.get(Project, project.id).description == ""


def test_patching_flags_to_null_is_a_422_naming_flags(client, db, admin_auth):
    project = make_project(db, name="kept")
    flags_before = list(project.flags)
    response = client.patch(f"/api/v1/projects/{project.id}", headers=admin_auth, json={"flags": None})
    assert response.status_code == 422 and "flags" in response.text, response.text
    db.rollback()
    db.expire_all()
    assert db.get(Project, project.id).flags == flags_before


def test_nul_characters_anywhere_in_a_prompt_batch_store_nothing(client, db, upload_auth):
    project = make_project(db)
    url = f"/api/v1/projects/{project.id}/prompts"
    ok = {"external_id": "fine", "text": "Say hi"}
    for bad, where in (
        ({"text": "a\x00b"}, "body.prompts.1.text"),
        ({"external_id": "x\x00"}, "body.prompts.1.external_id"),
        ({"metadata": {"src": ["a", "b\x00"]}}, "body.prompts.1.metadata"),
        ({"metadata": {"k\x00": 1}}, "body.prompts.1.metadata"),
    ):
        prompt = {"external_id": "second", "text": "hello"} | bad
        response = client.post(url, headers=upload_auth, json={"prompts": [ok, prompt]})
        assert fields(response) == [where]
    assert count(db, Prompt) == 0


def test_a_nul_in_a_jsonl_line_rejects_that_line_only(client, db, upload_auth):
    project = make_project(db)
    lines = [
        {"external_id": "a", "text": "fine"},
        {"external_id": "b", "text": "has \x00 inside"},
        {"external_id": "c", "messages": [{"role": "user", "content": "\x00"}]},
    ]
    response = client.post(
        f"/api/v1/projects/{project.id}/prompts/jsonl",
        headers=upload_auth | {"Content-Type": "application/x-ndjson"},
        content="\n".join(json.dumps(line) for line in lines),
    )
    report = response.json()
    assert response.status_code == 200 and report["created"] == 1 and report["rejected"] == 2
    assert [e["line"] for e in report["errors"]] == [2, 3] and all("NUL" in e["reason"] for e in report["errors"])


def test_completions_refuse_nul_in_text_model_params_and_the_path(client, db, upload_auth):
    project = make_project(db, k_min=4, k_max=4)
    task = make_task(db, project)
    external_id = task.prompt.external_id
    good = [{"text": f"answer {i}"} for i in range(4)]
    url = f"/api/v1/projects/{project.id}/prompts/{external_id}/completions"
    for bad, where in (
        ({"text": "x\x00"}, "body.completions.0.text"),
        ({"model": "m\x00"}, "body.completions.0.model"),
        ({"generation_params": {"stop": ["\x00"]}}, "body.completions.0.generation_params"),
    ):
        assert fields(client.post(url, headers=upload_auth, json={"completions": [good[0] | bad, *good[1:]]})) == [
            where
        ]
    response = client.post(
        f"/api/v1/projects/{project.id}/prompts/a%00b/completions", headers=upload_auth, json={"completions": good}
    )
    assert fields(response) == ["path.external_id"]


def test_round_settings_refuse_huge_seeds_and_non_finite_numbers(client, db, admin_auth):
    project = make_project(db)
    url = f"/api/v1/projects/{project.id}/rounds"
    assert fields(client.post(url, headers=admin_auth, json={"seed": 2**40, "generation": {"seed": -1}})) == [
        "body.seed",
        "body.generation.seed",
    ]
    # Python's JSON parser takes these literals; JSONB (and the trainer) would not.
    response = client.post(
        url,
        headers=admin_auth | {"Content-Type": "application/json"},
        content='{"ppo": {"adaptive_kl_target": Infinity, "missing_eos_penalty": NaN}}',
    )
    assert fields(response) == ["body.ppo.adaptive_kl_target", "body.ppo.missing_eos_penalty"]
    assert fields(client.post(url, headers=admin_auth, json={"model": "hub/\x00"})) == ["body.model"]


def test_prompt_metadata_refuses_non_finite_numbers(client, db, upload_auth):
    project = make_project(db)
    response = client.post(
        f"/api/v1/projects/{project.id}/prompts",
        headers=upload_auth | {"Content-Type": "application/json"},
        content='{"prompts": [{"text": "hi", "metadata": {"score": NaN}}]}',
    )
    assert fields(response) == ["body.prompts.0.metadata"] and count(db, Prompt) == 0


def test_malformed_multipart_is_a_422_naming_the_file_field(client, db, upload_auth):
    project = make_project(db)
    response = client.post(
        f"/api/v1/projects/{project.id}/completions/jsonl",
        headers=upload_auth | {"Content-Type": "multipart/form-data; boundary=xyz"},
        content=b"--xyz\r\nno headers here--xyz--\r\n",
    )
    assert response.status_code == 422 and response.json()["detail"].startswith("file: the multipart body")


def test_labeling_api_refuses_mistyped_numbers_big_ids_nul_and_bad_utf8(client, db):
    project = make_project(db)
    task = make_task(db, project)
    login(client, make_user(db, projects=[project]))
    leased = client.get(f"/api/v1/labeling/projects/{project.id}/next").json()["task"]
    headers = {"X-CSRF-Token": csrf_of(client, db)}
    url = f"/api/v1/labeling/projects/{project.id}/assignments/{leased['assignment_id']}"
    groups = [[c] for c in task.completion_ids]
    for bad, where in (
        ({"time_spent_ms": False}, "body.time_spent_ms"),
        ({"time_spent_ms": "12"}, "body.time_spent_ms"),
        ({"none_acceptable": 1}, "body.none_acceptable"),
        ({"comment": "\x00"}, "body.comment"),
        ({"ranking": [[2**40]]}, "body.ranking.0.0"),
        ({"flags": {str(2**40): ["x"]}}, "body.flags"),
    ):
        assert where in ".".join(fields(client.post(f"{url}/ranking", headers=headers, json={"ranking": groups} | bad)))
    assert fields(client.post(f"{url}/skip", headers=headers, json={"reason": "a\x00"})) == ["body.reason"]
    assert fields(
        client.post(
            f"/api/v1/labeling/projects/{project.id}/assignments/{2**31}/skip", headers=headers, json={"reason": "why"}
        )
    ) == ["path.assignment_id"]
    response = client.post(f"{url}/skip", headers=headers | {"Content-Type": "application/json"}, content=b'{"\xff"}')
    assert response.status_code == 422 and "invalid UTF-8" in response.json()["detail"]
    assert count(db, Ranking) == 0
    ok = client.post(f"{url}/ranking", headers=headers, json={"ranking": groups, "time_spent_ms": 1200})
    assert ok.status_code == 200 and count(db, Ranking) == 1
    assert db.get(Ranking, ok.json()["ranking_id"]).time_spent_ms == 1200
