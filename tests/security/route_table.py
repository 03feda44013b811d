"""Every route of the app, read from its route table, and who may call it.

Each (method, path) is declared here with a category; the tests in this folder fail for a route
that is not declared, so a new route is covered as soon as it is added. The category says how
the route authenticates (session cookie or API token) and who is let in."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, routing
from starlette.routing import Mount

# ---- categories --------------------------------------------------------------------------------

PUBLIC = "public"
"""Anyone, logged in or not (login page, API docs)."""
SIGNED_IN = "signed-in page"
"""Any logged-in user, whatever the project (the queue, logout)."""
LABELING_PAGE = "labeling page"
"""Pages of the project in the path: its members and admins."""
LABELING_API = "labeling api"
"""The same as LABELING_PAGE as JSON (session cookie + X-CSRF-Token, not API tokens)."""
ADMIN_PAGE = "admin page"
"""Admins only (projects, people, tokens, stats, rounds, model versions)."""
API_ANY = "api, any token"
"""Bearer token with any scope; session cookies are not accepted."""
API_UPLOAD = "api, upload scope"
API_EXPORT = "api, export scope"
API_ADMIN = "api, admin scope"

TOKEN_CATEGORIES = {API_ANY, API_UPLOAD, API_EXPORT, API_ADMIN}
"""Authenticated by an Authorization header, which a browser never adds by itself, and never by
the session cookie: no CSRF token needed. Every other state change must check one."""

CSRF_EXEMPT = {
    ("POST", "/login"): "nobody is logged in yet (no token to check): cross-site posts are refused "
    "by their Origin / Sec-Fetch-Site instead (test_csrf.py)"
}
"""State changes outside the token API that need no CSRF token, each with the reason."""

ROUTES: dict[tuple[str, str], str] = {
    # auth
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): PUBLIC,  # ends the caller's own session, if any (then CSRF-checked)
    # FastAPI's own docs
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    # labeling
    ("GET", "/"): SIGNED_IN,
    ("GET", "/projects/{project_id}/label"): LABELING_PAGE,
    ("POST", "/projects/{project_id}/label/preview"): LABELING_PAGE,
    ("POST", "/projects/{project_id}/label/{assignment_id}"): LABELING_PAGE,
    ("POST", "/projects/{project_id}/label/{assignment_id}/skip"): LABELING_PAGE,
    ("GET", "/api/v1/labeling/projects/{project_id}/next"): LABELING_API,
    ("POST", "/api/v1/labeling/projects/{project_id}/assignments/{assignment_id}/ranking"): LABELING_API,
    ("POST", "/api/v1/labeling/projects/{project_id}/assignments/{assignment_id}/skip"): LABELING_API,
    # admin: projects, people, tokens
    ("GET", "/admin"): ADMIN_PAGE,
    ("GET", "/admin/projects/new"): ADMIN_PAGE,
    ("POST", "/admin/projects"): ADMIN_PAGE,
    ("GET", "/admin/projects/{project_id}/settings"): ADMIN_PAGE,
    ("POST", "/admin/projects/{project_id}/settings"): ADMIN_PAGE,
    ("POST", "/admin/markdown-preview"): ADMIN_PAGE,
    ("GET", "/admin/projects/{project_id}"): ADMIN_PAGE,
    ("POST", "/admin/projects/{project_id}/upload"): ADMIN_PAGE,
    ("POST", "/admin/projects/{project_id}/members"): ADMIN_PAGE,
    ("POST", "/admin/projects/{project_id}/members/{user_id}/remove"): ADMIN_PAGE,
    ("GET", "/admin/users"): ADMIN_PAGE,
    ("POST", "/admin/users"): ADMIN_PAGE,
    ("POST", "/admin/users/{user_id}/active"): ADMIN_PAGE,
    ("POST", "/admin/users/{user_id}/password"): ADMIN_PAGE,
    ("GET", "/admin/tokens"): ADMIN_PAGE,
    ("POST", "/admin/tokens"): ADMIN_PAGE,
    ("POST", "/admin/tokens/{token_id}/revoke"): ADMIN_PAGE,
    # admin: rounds and model versions
    ("GET", "/admin/projects/{project_id}/rounds"): ADMIN_PAGE,
    ("GET", "/admin/projects/{project_id}/rounds/new"): ADMIN_PAGE,
    ("POST", "/admin/projects/{project_id}/rounds"): ADMIN_PAGE,
    ("GET", "/admin/rounds/{round_id}"): ADMIN_PAGE,
    ("POST", "/admin/rounds/{round_id}/start-training"): ADMIN_PAGE,
    ("POST", "/admin/rounds/{round_id}/cancel"): ADMIN_PAGE,
    ("POST", "/admin/rounds/{round_id}/retry"): ADMIN_PAGE,
    # admin: SFT runs
    ("GET", "/admin/projects/{project_id}/sft"): ADMIN_PAGE,
    ("POST", "/admin/projects/{project_id}/sft"): ADMIN_PAGE,
    ("GET", "/admin/sft/{job_id}"): ADMIN_PAGE,
    ("POST", "/admin/sft/{job_id}/cancel"): ADMIN_PAGE,
    ("POST", "/admin/sft/{job_id}/retry"): ADMIN_PAGE,
    # AI judges (issue 16)
    ("GET", "/admin/projects/{project_id}/judge"): ADMIN_PAGE,
    ("POST", "/admin/projects/{project_id}/judge"): ADMIN_PAGE,
    ("POST", "/admin/projects/{project_id}/judge/runs"): ADMIN_PAGE,
    # Active-learning handout priorities (issue 16 §2)
    ("POST", "/admin/projects/{project_id}/priorities/refresh"): ADMIN_PAGE,
    ("GET", "/admin/projects/{project_id}/models"): ADMIN_PAGE,
    ("GET", "/admin/models/{version_id}"): ADMIN_PAGE,
    ("GET", "/admin/models/{version_id}/download"): ADMIN_PAGE,
    # admin: evaluations
    ("GET", "/admin/projects/{project_id}/evaluations"): ADMIN_PAGE,
    ("POST", "/admin/projects/{project_id}/evaluations"): ADMIN_PAGE,
    ("POST", "/admin/projects/{project_id}/eval-set"): ADMIN_PAGE,
    ("POST", "/admin/projects/{project_id}/demonstration-tasks"): ADMIN_PAGE,
    ("GET", "/admin/evaluations/{evaluation_id}"): ADMIN_PAGE,
    ("POST", "/admin/evaluations/{evaluation_id}/close"): ADMIN_PAGE,
    ("POST", "/admin/evaluations/{evaluation_id}/cancel"): ADMIN_PAGE,
    # admin: demonstrations
    ("GET", "/admin/projects/{project_id}/demonstrations"): ADMIN_PAGE,
    ("GET", "/admin/projects/{project_id}/demonstrations/export.jsonl"): ADMIN_PAGE,
    ("POST", "/admin/projects/{project_id}/demonstrations/upload"): ADMIN_PAGE,
    # API: projects, uploads, exports
    ("GET", "/api/v1/projects"): API_ANY,
    ("GET", "/api/v1/projects/{project_id}"): API_ANY,
    ("POST", "/api/v1/projects"): API_UPLOAD,
    ("PATCH", "/api/v1/projects/{project_id}"): API_ADMIN,
    ("GET", "/api/v1/projects/{project_id}/progress"): API_EXPORT,
    ("POST", "/api/v1/projects/{project_id}/prompts"): API_UPLOAD,
    ("POST", "/api/v1/projects/{project_id}/prompts/jsonl"): API_UPLOAD,
    ("POST", "/api/v1/projects/{project_id}/prompts/{external_id:path}/completions"): API_UPLOAD,
    ("POST", "/api/v1/projects/{project_id}/completions/jsonl"): API_UPLOAD,
    ("GET", "/api/v1/projects/{project_id}/exports/rankings"): API_EXPORT,
    ("GET", "/api/v1/projects/{project_id}/exports/consensus"): API_EXPORT,
    ("GET", "/api/v1/projects/{project_id}/exports/pairs"): API_EXPORT,
    ("GET", "/api/v1/projects/{project_id}/exports/unpaired"): API_EXPORT,
    ("GET", "/api/v1/projects/{project_id}/exports/judgments"): API_EXPORT,
    ("POST", "/api/v1/projects/{project_id}/demonstrations"): API_UPLOAD,
    ("POST", "/api/v1/projects/{project_id}/demonstration-tasks"): API_UPLOAD,
    ("GET", "/api/v1/projects/{project_id}/demonstrations/export"): API_EXPORT,
    # API: rounds
    ("POST", "/api/v1/projects/{project_id}/rounds"): API_ADMIN,
    ("GET", "/api/v1/projects/{project_id}/rounds"): API_ADMIN,
    ("GET", "/api/v1/projects/{project_id}/models"): API_ADMIN,
    ("GET", "/api/v1/rounds/{round_id}"): API_ADMIN,
    ("POST", "/api/v1/rounds/{round_id}/start"): API_ADMIN,
    ("POST", "/api/v1/rounds/{round_id}/cancel"): API_ADMIN,
    ("POST", "/api/v1/rounds/{round_id}/retry"): API_ADMIN,
    # API: SFT runs
    ("POST", "/api/v1/projects/{project_id}/sft-runs"): API_ADMIN,
    ("GET", "/api/v1/projects/{project_id}/sft-runs"): API_ADMIN,
    ("GET", "/api/v1/sft-runs/{job_id}"): API_ADMIN,
    ("POST", "/api/v1/sft-runs/{job_id}/cancel"): API_ADMIN,
    ("POST", "/api/v1/sft-runs/{job_id}/retry"): API_ADMIN,
    ("GET", "/api/v1/projects/{project_id}/judge"): API_ADMIN,
    ("PUT", "/api/v1/projects/{project_id}/judge"): API_ADMIN,
    ("POST", "/api/v1/projects/{project_id}/judge/runs"): API_ADMIN,
    ("GET", "/api/v1/projects/{project_id}/judge/runs"): API_ADMIN,
    ("GET", "/api/v1/projects/{project_id}/judge/agreement"): API_ADMIN,
    ("GET", "/api/v1/judge-runs/{run_id}"): API_ADMIN,
    ("POST", "/api/v1/projects/{project_id}/priorities/refresh"): API_ADMIN,
    # API: evaluations
    ("POST", "/api/v1/projects/{project_id}/evaluations"): API_ADMIN,
    ("GET", "/api/v1/projects/{project_id}/evaluations"): API_ADMIN,
    ("POST", "/api/v1/projects/{project_id}/eval-set"): API_ADMIN,
    ("GET", "/api/v1/evaluations/{evaluation_id}"): API_ADMIN,
    ("POST", "/api/v1/evaluations/{evaluation_id}/close"): API_ADMIN,
    ("POST", "/api/v1/evaluations/{evaluation_id}/cancel"): API_ADMIN,
}

JSON_BODIES: dict[tuple[str, str], dict] = {
    ("POST", "/api/v1/labeling/projects/{project_id}/assignments/{assignment_id}/ranking"): {"ranking": [[1]]},
    ("POST", "/api/v1/labeling/projects/{project_id}/assignments/{assignment_id}/skip"): {"reason": "unclear"},
}
"""Well-formed bodies for routes that check access inside the endpoint, after FastAPI validated the
body: without one, every caller would get 422 before the access check. Other routes get no body."""

MOUNTS = {"/static": (PUBLIC, "css/app.css")}
"""Mounted apps (whole folders) by path: their category and a file to ask for."""

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass(frozen=True)
class RouteEntry:
    method: str
    path: str
    """The path template as routed, e.g. /admin/rounds/{round_id}."""
    category: str | None
    """None when ROUTES does not declare it."""


def app_routes(app: FastAPI) -> list[RouteEntry]:
    """(method, path) for every route the app answers, with its declared category.
    HEAD is left out: Starlette answers it with the GET handler."""
    entries = []
    for context in routing.iter_route_contexts(app.routes):
        if isinstance(context.original_route, Mount):
            continue
        for method in sorted((context.methods or set()) - {"HEAD"}):
            entries.append(RouteEntry(method, context.path, ROUTES.get((method, context.path))))
    return entries


def app_mounts(app: FastAPI) -> list[str]:
    return [
        context.path for context in routing.iter_route_contexts(app.routes) if isinstance(context.original_route, Mount)
    ]


def unclassified_message(entries: list[RouteEntry]) -> str:
    missing = "\n".join(f"    ({e.method!r}, {e.path!r}): <category>," for e in entries)
    return (
        "These routes are not classified. Add each to ROUTES in tests/security/route_table.py with the "
        "category that says who may call it (PUBLIC, SIGNED_IN, LABELING_PAGE, LABELING_API, ADMIN_PAGE, "
        f"API_ANY, API_UPLOAD, API_EXPORT, API_ADMIN):\n{missing}"
    )
