"""Authorization matrix: every route of the app × every kind of caller → the expected answer.

Routes come from the app's route table (tests/security/route_table.py declares each one's
category, and an undeclared route fails here). Path parameters are filled with ids of real rows,
each caller runs on a database of its own (so a revoke or a member removal by one caller cannot
change another's answers), and each request carries a fresh login session with its CSRF token,
so what is tested is who may call, not CSRF (tests/security/test_csrf.py) or logout.

"Allowed" means the request reached the route's own logic: not 401, 403 or 404, not a redirect to
the login page, not a server error. Requests carry no body, so an allowed caller of a form or
JSON route gets 422 (or 400/409) and nothing changes; that still proves the door was open."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.auth import service as auth_service
from app.auth.security import token_digest
from app.deps import SESSION_COOKIE
from app.main import create_app
from app.models import Assignment, Prompt, Role, WebSession, utcnow
from app.settings import Settings
from tests.factories import make_eval_task, make_project, make_task, make_token, make_user
from tests.rounds.helpers import make_round, make_version
from tests.security import route_table as rt
from tests.sft.helpers import populate_jobs

ALLOWED = "allowed"
LOGIN = "303 to /login"
UNAUTHORIZED = "401"
FORBIDDEN = "403"

PRINCIPALS = ["anonymous", "labeler", "other_project_labeler", "admin", "upload_token", "export_token", "admin_token"]
"""labeler is a member of the project in every path; other_project_labeler only of another one."""

_NO_COOKIE_PAGE = {"anonymous": LOGIN, "upload_token": LOGIN, "export_token": LOGIN, "admin_token": LOGIN}
_NO_COOKIE_API = {
    "anonymous": UNAUTHORIZED,
    "upload_token": UNAUTHORIZED,
    "export_token": UNAUTHORIZED,
    "admin_token": UNAUTHORIZED,
}
_NO_TOKEN = {
    "anonymous": UNAUTHORIZED,
    "labeler": UNAUTHORIZED,
    "other_project_labeler": UNAUTHORIZED,
    "admin": UNAUTHORIZED,
}  # a session cookie never opens the token API

EXPECTED: dict[str, dict[str, str]] = {
    rt.PUBLIC: dict.fromkeys(PRINCIPALS, ALLOWED),
    rt.SIGNED_IN: {**_NO_COOKIE_PAGE, "labeler": ALLOWED, "other_project_labeler": ALLOWED, "admin": ALLOWED},
    rt.LABELING_PAGE: {**_NO_COOKIE_PAGE, "labeler": ALLOWED, "other_project_labeler": FORBIDDEN, "admin": ALLOWED},
    rt.LABELING_API: {**_NO_COOKIE_API, "labeler": ALLOWED, "other_project_labeler": FORBIDDEN, "admin": ALLOWED},
    rt.ADMIN_PAGE: {**_NO_COOKIE_PAGE, "labeler": FORBIDDEN, "other_project_labeler": FORBIDDEN, "admin": ALLOWED},
    rt.API_ANY: {**_NO_TOKEN, "upload_token": ALLOWED, "export_token": ALLOWED, "admin_token": ALLOWED},
    rt.API_UPLOAD: {**_NO_TOKEN, "upload_token": ALLOWED, "export_token": FORBIDDEN, "admin_token": ALLOWED},
    rt.API_EXPORT: {**_NO_TOKEN, "upload_token": FORBIDDEN, "export_token": ALLOWED, "admin_token": ALLOWED},
    rt.API_ADMIN: {**_NO_TOKEN, "upload_token": FORBIDDEN, "export_token": FORBIDDEN, "admin_token": ALLOWED},
}


def outcome(response) -> str:
    """What an answer means for access; anything else is returned as its status code."""
    status = response.status_code
    if status == 303 and response.headers.get("location", "").startswith("/login?next="):
        return LOGIN
    if status in (401, 403):
        return str(status)
    if status == 404 or status >= 500:
        return f"{status} ({response.text[:120]!r})"
    return ALLOWED


@dataclass
class World:
    """Rows the path parameters point at, and each caller's credentials."""

    path_values: dict[str, str]
    users: dict[str, object]
    tokens: dict[str, str]
    assignments: dict[str, int]


def _judge_run(db, project) -> int:
    from app.judges import service as judges
    from app.models.judges import JudgeRun

    judge = judges.save_judge(db, project=project, data={})
    run = JudgeRun(judge_id=judge.id, project_id=project.id, user_id=judge.user_id)
    db.add(run)
    db.commit()
    return run.id


def build_world(db, settings: Settings) -> World:
    project = make_project(db, name="project in every path")
    elsewhere = make_project(db, name="another project")
    admin = make_user(db, role=Role.admin)
    labeler = make_user(db, projects=[project])
    other = make_user(db, projects=[elsewhere])
    victim = make_user(db, projects=[project])  # the user_id in /admin/users/{user_id}/... paths
    tasks = [make_task(db, project) for _ in range(2)]
    # Each labeling caller holds a task of its own, so that submit and skip get past the access checks.
    lease = utcnow() + timedelta(hours=1)
    held = {}
    for name, user, task in (("labeler", labeler, tasks[0]), ("admin", admin, tasks[1])):
        row = Assignment(task_id=task.id, user_id=user.id, project_id=project.id, lease_expires_at=lease)
        db.add(row)
        db.flush()
        held[name] = row.id
    db.commit()
    training_round = make_round(db, project, status="labeling")
    folder = settings.artifacts_dir / "policy-0"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    version = make_version(db, project, training_round=training_round, artifact_path=str(folder))
    victim_token, _ = auth_service.create_api_token(db, name="victim", scopes=["upload"], created_by=admin)
    db.commit()
    evaluation_id = make_eval_task(db, project).evaluation_id
    db.commit()
    job_id = populate_jobs(db, project, start=version).id  # an SFT run (app/sft)
    external_id = db.get(Prompt, tasks[0].prompt_id).external_id
    run_id = _judge_run(db, project)  # an AI judge run (app/judges)
    return World(
        path_values={
            "project_id": str(project.id),
            "user_id": str(victim.id),
            "token_id": str(victim_token.id),
            "round_id": str(training_round.id),
            "version_id": str(version.id),
            "external_id": external_id,
            "assignment_id": str(held["labeler"]),
            "evaluation_id": str(evaluation_id),
            "job_id": str(job_id),
            "run_id": str(run_id),
        },
        users={"labeler": labeler, "other_project_labeler": other, "admin": admin},
        tokens={scope: make_token(db, scope) for scope in ("upload", "export", "admin")},
        assignments=held,
    )


def fill_path(template: str, values: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        assert name in values, f"no value for path parameter {name!r} in {template}: add a real row's id to build_world"
        return values[name]

    return re.sub(r"\{(\w+)(?::\w+)?\}", value, template)


def credentials(db, world: World, principal: str) -> dict[str, str]:
    """Headers for one request: a fresh session (and its CSRF token), a bearer token, or nothing."""
    if principal in world.users:
        cookie = auth_service.start_session(db, user=world.users[principal], hours=1)
        csrf = db.scalar(select(WebSession.csrf_token).where(WebSession.token_hash == token_digest(cookie)))
        db.commit()  # and no read left open: on SQLite it would block the app's writes
        return {"Cookie": f"{SESSION_COOKIE}={cookie}", "X-CSRF-Token": csrf}
    if principal.endswith("_token"):
        return {"Authorization": f"Bearer {world.tokens[principal.removesuffix('_token')]}"}
    return {}


def test_every_route_is_classified(tmp_path):
    app = create_app(
        Settings(
            data_dir=tmp_path,
            database_url=f"sqlite:///{tmp_path / 'unused.sqlite'}",
            embedded_worker=False,
            _env_file=None,
        )
    )
    entries = rt.app_routes(app)
    assert len(entries) >= 50  # the route table was really read
    unclassified = [e for e in entries if e.category is None]
    assert not unclassified, rt.unclassified_message(unclassified)
    stale = set(rt.ROUTES) - {(e.method, e.path) for e in entries}
    assert not stale, f"ROUTES in tests/security/route_table.py names routes the app no longer has: {sorted(stale)}"
    assert set(rt.app_mounts(app)) == set(rt.MOUNTS), "classify each mounted app in MOUNTS"
    assert set(rt.ROUTES.values()) <= set(EXPECTED)
    app.state.engine.dispose()


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_authorization_matrix(principal, app, db, settings):
    world = build_world(db, settings)
    entries = rt.app_routes(app)
    unclassified = [e for e in entries if e.category is None]
    assert not unclassified, rt.unclassified_message(unclassified)
    if principal in world.assignments:
        world.path_values["assignment_id"] = str(world.assignments[principal])

    wrong = []
    with TestClient(app, follow_redirects=False) as client:
        for entry in entries:
            url = fill_path(entry.path, world.path_values)
            client.cookies.clear()  # only this request's credentials
            response = client.request(
                entry.method,
                url,
                headers=credentials(db, world, principal),
                json=rt.JSON_BODIES.get((entry.method, entry.path)),
            )
            expected, got = EXPECTED[entry.category][principal], outcome(response)
            if got != expected:
                wrong.append(f"{entry.method} {url} [{entry.category}]: expected {expected}, got {got}")
        for mount, (category, sample) in rt.MOUNTS.items():
            response = client.get(f"{mount}/{sample}", headers=credentials(db, world, principal))
            if outcome(response) != EXPECTED[category][principal]:
                wrong.append(f"GET {mount}/{sample} [{category}]: got {outcome(response)}")
    assert not wrong, f"as {principal}:\n" + "\n".join(wrong)
