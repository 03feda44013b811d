from app.models import Project, Role
from app.projects import service
from tests.factories import make_project, make_ranking, make_task, make_user


def test_create_list_get_project(client, db, upload_auth):
    response = client.post(
        "/api/v1/projects",
        headers=upload_auth,
        json={"name": "support", "guidelines": "Be **kind**.", "k_min": 4, "k_max": 6, "overlap": 2},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert (
        created["name"] == "support"
        and created["k_max"] == 6
        and created["flags"] == ["unsafe", "factually_wrong", "off_topic"]
    )

    listed = client.get("/api/v1/projects", headers=upload_auth).json()
    assert [p["id"] for p in listed] == [created["id"]]
    assert client.get(f"/api/v1/projects/{created['id']}", headers=upload_auth).json() == created


def test_duplicate_name_is_409_and_changes_nothing(client, db, upload_auth):
    make_project(db, name="taken", guidelines="original")
    response = client.post("/api/v1/projects", headers=upload_auth, json={"name": "taken", "guidelines": "new"})
    assert response.status_code == 409
    assert "name" in response.json()["detail"] and "already exists" in response.json()["detail"]
    db.expire_all()
    assert [(p.name, p.guidelines) for p in db.query(Project)] == [("taken", "original")]


def test_bad_project_values_name_the_field(client, db, upload_auth):
    cases = [
        ({"name": "a", "k_min": 3}, "k_min"),
        ({"name": "a", "k_max": 10}, "k_max"),
        ({"name": "a", "k_min": 7, "k_max": 5}, "k_min"),
        ({"name": ""}, "name"),
        ({"name": "a", "overlap": "2"}, "overlap"),
        ({"name": "a", "colour": "red"}, "colour"),
        ({"guidelines": "x"}, "name"),
    ]
    for body, field in cases:
        response = client.post("/api/v1/projects", headers=upload_auth, json=body)
        assert response.status_code == 422, (body, response.text)
        payload = response.json()
        assert field in payload.get("message", payload["detail"]), (body, payload)
    assert db.query(Project).count() == 0


def test_update_project_needs_admin_and_checks_the_whole(client, db, upload_auth, admin_auth):
    project = make_project(db, k_min=4, k_max=6)
    url = f"/api/v1/projects/{project.id}"
    assert client.patch(url, headers=upload_auth, json={"k_max": 5}).status_code == 403
    response = client.patch(url, headers=admin_auth, json={"k_min": 7})  # would pass k_max=6
    assert response.status_code == 422 and "k_min" in response.json()["detail"]
    response = client.patch(url, headers=admin_auth, json={"k_max": 8, "guidelines": "new"})
    assert response.status_code == 200
    assert response.json()["k_max"] == 8 and response.json()["guidelines"] == "new" and response.json()["k_min"] == 4


def test_auth_is_required_and_scoped(client, db, export_auth):
    assert client.get("/api/v1/projects").status_code == 401
    assert client.get("/api/v1/projects", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/api/v1/projects", headers=export_auth, json={"name": "x"}).status_code == 403
    assert client.get("/api/v1/projects/999", headers=export_auth).status_code == 404


def test_progress_counts(client, db, export_auth):
    project = make_project(db, overlap=2)
    tasks = [make_task(db, project) for _ in range(3)]
    labelers = [make_user(db, role=Role.labeler, projects=[project]) for _ in range(2)]
    for user in labelers:
        make_ranking(db, tasks[0], user, [[c] for c in tasks[0].completion_ids])
    make_ranking(db, tasks[1], labelers[0], [tasks[1].completion_ids])

    response = client.get(f"/api/v1/projects/{project.id}/progress", headers=export_auth)
    assert response.status_code == 200
    progress = response.json()
    assert progress["prompts"] == 3 and progress["tasks"] == 3 and progress["rankings"] == 3
    assert progress["tasks_complete"] == 1 and progress["tasks_open"] == 2
    assert progress["coverage"] == 0.5  # 3 of 3 × 2
    assert progress["tasks_by_rankings"] == {"0": 1, "1": 1, "2": 1}
    assert progress["open_leases"] == 0


def test_service_refuses_bad_values_with_value_error(db):
    import pytest

    with pytest.raises(ValueError, match="k_max"):
        service.create_project(db, name="x", k_max=12)
    project = service.create_project(db, name="x")
    with pytest.raises(service.DuplicateProjectName):
        service.create_project(db, name=" x ")
    with pytest.raises(service.ProjectError, match="flags"):
        service.update_project(db, project=project, flags=["ok", ""])
    assert project.flags == ["unsafe", "factually_wrong", "off_topic"]


def test_openapi_documents_the_api(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    operations = {(method, path): op for path, ops in spec["paths"].items() for method, op in ops.items()}
    expected = [
        ("post", "/api/v1/projects"),
        ("get", "/api/v1/projects/{project_id}/progress"),
        ("post", "/api/v1/projects/{project_id}/prompts"),
        ("post", "/api/v1/projects/{project_id}/prompts/jsonl"),
        ("post", "/api/v1/projects/{project_id}/prompts/{external_id}/completions"),
        ("post", "/api/v1/projects/{project_id}/completions/jsonl"),
        ("get", "/api/v1/projects/{project_id}/exports/pairs"),
    ]
    for key in expected:
        assert operations[key]["summary"] and operations[key]["description"], key
    jsonl_body = operations["post", "/api/v1/projects/{project_id}/prompts/jsonl"]["requestBody"]["content"]
    assert set(jsonl_body) == {"multipart/form-data", "application/x-ndjson"}
    prompt_schema = spec["components"]["schemas"]["PromptIn"]
    assert "idempotent" in prompt_schema["properties"]["external_id"]["description"]
