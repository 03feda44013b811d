import json

from sqlalchemy import select

from app.models import Prompt
from tests.factories import make_project

NDJSON = {"Content-Type": "application/x-ndjson"}


def stored(db, project):
    db.expire_all()
    return {p.external_id: p for p in db.scalars(select(Prompt).where(Prompt.project_id == project.id))}


def test_json_batch_stores_text_and_chat_prompts_idempotently(client, db, upload_auth):
    project = make_project(db)
    url = f"/api/v1/projects/{project.id}/prompts"
    body = {
        "prompts": [
            {"external_id": "a", "text": "Say hi", "metadata": {"src": "faq"}},
            {
                "external_id": "b",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}],
                "split": "validation",
            },
            {"text": "No id given"},
        ]
    }
    response = client.post(url, headers=upload_auth, json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 3, "already_present": 0, "rejected": 0, "errors": [], "errors_omitted": 0}
    prompts = stored(db, project)
    assert prompts["a"].text == "Say hi" and prompts["a"].meta == {"src": "faq"} and prompts["a"].messages is None
    assert (
        prompts["b"].messages[-1] == {"role": "user", "content": "Name a prime."} and prompts["b"].split == "validation"
    )
    derived = next(k for k in prompts if k.startswith("sha256:"))

    body["prompts"][0]["text"] = "Changed text"  # re-sent with a change: counted, not applied
    response = client.post(url, headers=upload_auth, json=body)
    assert response.json()["created"] == 0 and response.json()["already_present"] == 3
    prompts = stored(db, project)
    assert len(prompts) == 3 and prompts["a"].text == "Say hi" and derived in prompts


def test_json_batch_with_a_bad_prompt_stores_nothing(client, db, upload_auth, settings):
    project = make_project(db)
    url = f"/api/v1/projects/{project.id}/prompts"
    cases = [
        ({"external_id": "x", "text": "   "}, "prompts.1.text"),
        ({"external_id": "x", "text": 5}, "prompts.1.text"),
        ({"external_id": 7, "text": "hi"}, "prompts.1.external_id"),
        ({"external_id": "x"}, "text: missing"),
        ({"external_id": "x", "messages": [{"role": "robot", "content": "hi"}]}, "prompts.1.messages.0.role"),
        (
            {
                "external_id": "x",
                "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
            },
            "last turn must be the user's",
        ),
        ({"external_id": "x", "messages": [{"role": "user", "content": 3}]}, "prompts.1.messages.0.content"),
        ({"external_id": "x", "text": "hi", "metadata": []}, "prompts.1.metadata"),
        ({"external_id": "x", "text": "hi", "colour": "red"}, "prompts.1.colour"),
    ]
    for bad, named in cases:
        response = client.post(url, headers=upload_auth, json={"prompts": [{"external_id": "ok", "text": "fine"}, bad]})
        assert response.status_code == 422, (bad, response.text)
        assert named in response.json()["message"], (bad, response.json())

    too_long = "x" * (settings.max_text_chars + 1)
    response = client.post(
        url,
        headers=upload_auth,
        json={"prompts": [{"external_id": "ok", "text": "fine"}, {"external_id": "long", "text": too_long}]},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["line"] == 2 and "prompts[1]: text" in response.json()["detail"]
    assert stored(db, project) == {}


def test_jsonl_file_stores_good_lines_and_reports_bad_ones(client, db, upload_auth, settings):
    project = make_project(db)
    make_project(db, name="other")
    client.post(
        f"/api/v1/projects/{project.id}/prompts",
        headers=upload_auth,
        json={"prompts": [{"external_id": "old", "text": "kept as is"}]},
    )
    lines = [
        json.dumps({"external_id": "p1", "text": "first"}).encode(),  # 1 good
        b"",  # 2 blank: skipped
        b'{"external_id": "p2", "text": "broken"',  # 3 invalid JSON
        json.dumps({"external_id": "p3", "text": ""}).encode(),  # 4 empty text
        '{"external_id": "p4", "text": "caf\u00e9"}'.encode("latin-1"),  # 5 invalid UTF-8
        json.dumps({"external_id": "p5"}).encode(),  # 6 missing text
        json.dumps({"external_id": "p6", "text": ["a"]}).encode(),  # 7 wrong type
        json.dumps({"external_id": "p7", "messages": [{"role": "assistant", "content": "hi"}]}).encode(),  # 8
        json.dumps({"external_id": "old", "text": "changed"}).encode(),  # 9 already present
        json.dumps(["not", "an", "object"]).encode(),  # 10
        json.dumps({"external_id": "p8", "text": "x" * (settings.max_text_chars + 1)}).encode(),  # 11 too long
        json.dumps({"external_id": "p9", "messages": [{"role": "user", "content": "ok"}]}).encode(),  # 12 good
        json.dumps({"external_id": "p1", "text": "repeat"}).encode(),  # 13 repeat of line 1
    ]
    response = client.post(
        f"/api/v1/projects/{project.id}/prompts/jsonl",
        headers=upload_auth,
        files={"file": ("prompts.jsonl", b"\n".join(lines) + b"\n", "application/octet-stream")},
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["created"], report["already_present"], report["rejected"]) == (2, 2, 8)
    reasons = {e["line"]: e["reason"] for e in report["errors"]}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 10, 11]
    assert reasons[3].startswith("invalid JSON")
    assert reasons[4].startswith("text: is empty")
    assert reasons[5].startswith("invalid UTF-8")
    assert reasons[6].startswith("text: missing")
    assert reasons[7].startswith("text: Input should be a valid string")
    assert "last turn must be the user's" in reasons[8]
    assert reasons[10] == "expected a JSON object, got an array"
    assert "limit is" in reasons[11] and "RANKLAB_MAX_TEXT_CHARS" in reasons[11]
    prompts = stored(db, project)
    assert sorted(prompts) == ["old", "p1", "p9"]
    assert prompts["old"].text == "kept as is" and prompts["p1"].text == "first"


def test_raw_ndjson_body_and_unknown_field_hint(client, db, upload_auth):
    project = make_project(db)
    body = b'\xef\xbb\xbf{"external_id": "a", "text": "bom first line"}\r\n{"external_id": "b", "txt": "typo"}\n'
    response = client.post(
        f"/api/v1/projects/{project.id}/prompts/jsonl", headers={**upload_auth, **NDJSON}, content=body
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["created"] == 1 and report["rejected"] == 1
    assert report["errors"][0]["line"] == 2 and report["errors"][0]["reason"].startswith("txt: unknown field")
    assert "metadata" in report["errors"][0]["reason"]


def test_upload_errors_name_what_to_send(client, db, upload_auth):
    project = make_project(db)
    url = f"/api/v1/projects/{project.id}/prompts/jsonl"
    response = client.post(url, headers={**upload_auth, "Content-Type": "text/plain"}, content=b"{}")
    assert response.status_code == 415 and "application/x-ndjson" in response.json()["detail"]
    response = client.post(url, headers=upload_auth, files={"other": ("x.jsonl", b"{}")})
    assert response.status_code == 422 and response.json()["detail"].startswith("file: missing")
    response = client.post("/api/v1/projects/999/prompts/jsonl", headers={**upload_auth, **NDJSON}, content=b"{}")
    assert response.status_code == 404 and "project_id" in response.json()["detail"]
    response = client.post(url, headers=NDJSON, content=b"{}")
    assert response.status_code == 401


def test_reported_errors_are_capped_with_a_count(client, db, upload_auth):
    project = make_project(db)
    body = b"not json\n" * 1005
    response = client.post(
        f"/api/v1/projects/{project.id}/prompts/jsonl", headers={**upload_auth, **NDJSON}, content=body
    )
    report = response.json()
    assert report["rejected"] == 1005 and len(report["errors"]) == 1000 and report["errors_omitted"] == 5


def test_rejected_batch_leaves_stored_prompts_unchanged(client, db, upload_auth):
    project = make_project(db)
    url = f"/api/v1/projects/{project.id}/prompts"
    client.post(url, headers=upload_auth, json={"prompts": [{"external_id": "a", "text": "original"}]})
    response = client.post(
        url,
        headers=upload_auth,
        json={
            "prompts": [
                {"external_id": "a", "text": "rewritten"},
                {"external_id": "b", "text": "new"},
                {"external_id": "c", "text": ""},
            ]
        },
    )
    assert response.status_code == 422 and "prompts.2.text" in response.json()["message"]
    prompts = stored(db, project)
    assert list(prompts) == ["a"] and prompts["a"].text == "original"


def test_malformed_json_bodies_name_the_problem(client, db, upload_auth):
    project = make_project(db)
    url = f"/api/v1/projects/{project.id}/prompts"
    response = client.post(url, headers={**upload_auth, "Content-Type": "application/json"}, content=b'{"prompts": [')
    assert response.status_code == 422 and "JSON decode error" in response.json()["message"]
    response = client.post(url, headers=upload_auth, json={"prompts": "all of them"})
    assert response.status_code == 422 and "prompts" in response.json()["message"]
    response = client.post(
        url,
        headers={**upload_auth, "Content-Type": "application/json"},
        content='{"prompts": [{"text": "caf\u00e9"}]}'.encode("latin-1"),
    )
    assert response.status_code == 422 and response.json()["detail"].startswith("body: invalid UTF-8 at byte")
    assert stored(db, project) == {}
