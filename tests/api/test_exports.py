import io
import json

import pyarrow.parquet as pq
import pytest

from app.models import Prompt, Role
from tests.factories import make_project, make_ranking, make_task, make_user


@pytest.fixture
def labeled(db):
    """Two tasks: a text prompt ranked by two labelers (one with a tie), a chat prompt ranked once."""
    project = make_project(db, name="exp", overlap=2)
    alice, bob = (make_user(db, role=Role.labeler, projects=[project]) for _ in range(2))
    text_task = make_task(db, project, texts=["best", "good", "ok", "bad"], prompt_text="Say something")
    a, b, c, d = text_task.completion_ids
    make_ranking(
        db, text_task, alice, [[a], [b], [c], [d]], flags={str(d): ["unsafe"]}, time_spent_ms=4200, comment="d is rude"
    )
    make_ranking(db, text_task, bob, [[a, b], [c], [d]], none_acceptable=False, time_spent_ms=3100)
    chat_task = make_task(db, project, texts=["w", "x", "y", "z"])
    prompt = db.get(Prompt, chat_task.prompt_id)
    prompt.text, prompt.messages = (
        None,
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Pick a letter."}],
    )
    db.commit()
    w, x, y, z = chat_task.completion_ids
    make_ranking(db, chat_task, alice, [[z], [y], [x], [w]], none_acceptable=True)
    make_task(db, project)  # unranked: in no export
    return {"project": project, "users": (alice, bob), "text_task": text_task, "chat_task": chat_task}


def jsonl_rows(response):
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def test_raw_rankings_export(client, labeled, export_auth):
    project, (alice, bob) = labeled["project"], labeled["users"]
    rows = jsonl_rows(client.get(f"/api/v1/projects/{project.id}/exports/rankings", headers=export_auth))
    assert len(rows) == 3
    first, second, chat = rows
    a, b, c, d = labeled["text_task"].completion_ids
    assert first["ranking"] == [[a], [b], [c], [d]] and first["ranking_texts"] == [["best"], ["good"], ["ok"], ["bad"]]
    assert second["ranking"] == [[a, b], [c], [d]] and second["ranking_texts"][0] == ["best", "good"]
    assert first["flags"] == [{"completion_id": d, "flags": ["unsafe"]}] and first["comment"] == "d is rude"
    assert first["time_spent_ms"] == 4200 and first["display_order"] == [a, b, c, d]
    assert first["prompt_text"] == "Say something" and first["prompt_messages"] is None
    assert [item["text"] for item in first["completions"]] == ["best", "good", "ok", "bad"]
    assert chat["prompt_text"] is None and chat["prompt_messages"][-1]["content"] == "Pick a letter."
    assert chat["none_acceptable"] is True
    # pseudonymous and stable per labeler, never the email or the account id
    assert first["labeler_id"] == chat["labeler_id"] != second["labeler_id"]
    assert first["labeler_id"].startswith("labeler-")
    body = json.dumps(rows)
    assert alice.email not in body and bob.email not in body


def test_consensus_export(client, labeled, export_auth):
    project = labeled["project"]
    rows = jsonl_rows(client.get(f"/api/v1/projects/{project.id}/exports/consensus", headers=export_auth))
    assert [row["task_id"] for row in rows] == [labeled["text_task"].id, labeled["chat_task"].id]
    text_row, chat_row = rows
    a, b, c, d = labeled["text_task"].completion_ids
    # alice: a1 b2 c3 d4; bob: a1.5 b1.5 c3 d4 -> means 1.25, 1.75, 3, 4
    assert text_row["consensus"] == [[a], [b], [c], [d]]
    assert [item["mean_rank"] for item in text_row["completions"]] == [1.25, 1.75, 3.0, 4.0]
    assert text_row["n_rankings"] == 2 and text_row["status"] == "complete"
    assert text_row["completions"][3]["flags"] == [{"flag": "unsafe", "count": 1}]
    assert text_row["mean_kendall_tau_b"] == pytest.approx(5 / (6 * 5) ** 0.5)
    assert 0.9 < text_row["kendall_w"] <= 1
    assert chat_row["n_rankings"] == 1 and chat_row["kendall_w"] is None and chat_row["none_acceptable_votes"] == 1


def test_pairs_export_standard_and_conversational(client, labeled, export_auth):
    project = labeled["project"]
    url = f"/api/v1/projects/{project.id}/exports/pairs"
    standard = jsonl_rows(client.get(url, headers=export_auth))
    # alice 6 pairs + bob 5 (the a-b tie gives none) + chat 6
    assert len(standard) == 17
    assert {(r["chosen"], r["rejected"]) for r in standard if r["prompt"] == "Say something"} >= {("best", "good")}
    tied = [r for r in standard if r["ranking_id"] == standard[6]["ranking_id"]]
    assert ("best", "good") not in {(r["chosen"], r["rejected"]) for r in tied}
    chat_pairs = [r for r in standard if r["task_id"] == labeled["chat_task"].id]
    assert chat_pairs[0]["prompt"] == "System: Be terse.\n\nUser: Pick a letter."
    assert all(isinstance(r[k], str) for r in standard for k in ("prompt", "chosen", "rejected"))

    conversational = jsonl_rows(client.get(url, headers=export_auth, params={"style": "conversational"}))
    assert len(conversational) == 17
    row = conversational[0]
    assert row["prompt"] == [{"role": "user", "content": "Say something"}]
    assert row["chosen"] == [{"role": "assistant", "content": "best"}]
    assert conversational[-1]["prompt"][0] == {"role": "system", "content": "Be terse."}


@pytest.mark.parametrize(
    "kind, params", [("rankings", {}), ("consensus", {}), ("pairs", {}), ("pairs", {"style": "conversational"})]
)
def test_exports_load_unchanged_with_datasets(client, labeled, export_auth, tmp_path, monkeypatch, kind, params):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from datasets import load_dataset

    url = f"/api/v1/projects/{labeled['project'].id}/exports/{kind}"
    response = client.get(url, headers=export_auth, params=params)
    rows = jsonl_rows(response)
    (tmp_path / "export.jsonl").write_bytes(response.content)
    from_json = load_dataset(
        "json", data_files=str(tmp_path / "export.jsonl"), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert from_json.to_list() == rows

    parquet = client.get(url, headers=export_auth, params={**params, "format": "parquet"})
    assert parquet.status_code == 200 and parquet.headers["content-type"] == "application/vnd.apache.parquet"
    assert pq.read_table(io.BytesIO(parquet.content)).to_pylist() == rows
    (tmp_path / "export.parquet").write_bytes(parquet.content)
    from_parquet = load_dataset(
        "parquet", data_files=str(tmp_path / "export.parquet"), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert from_parquet.to_list() == rows


def test_empty_export_and_access(client, db, export_auth, upload_auth):
    project = make_project(db)
    for kind in ("rankings", "consensus", "pairs"):
        url = f"/api/v1/projects/{project.id}/exports/{kind}"
        assert jsonl_rows(client.get(url, headers=export_auth)) == []
        parquet = client.get(url, headers=export_auth, params={"format": "parquet"})
        assert pq.read_table(io.BytesIO(parquet.content)).num_rows == 0
        assert client.get(url, headers=upload_auth).status_code == 403
    response = client.get(f"/api/v1/projects/{project.id}/exports/pairs", headers=export_auth, params={"style": "x"})
    assert response.status_code == 422 and "style" in response.json()["message"]
    response = client.get(f"/api/v1/projects/{project.id}/exports/pairs", headers=export_auth, params={"format": "csv"})
    assert response.status_code == 422 and "format" in response.json()["message"]
    assert client.get("/api/v1/projects/999/exports/pairs", headers=export_auth).status_code == 404
