"""The FastAPI app factory: settings, DB, static files, routers, error handlers."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from importlib import import_module
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import sessionmaker

from app.db import is_sqlite, make_engine, write_lock_at_begin
from app.deps import LoginRequired
from app.keepalive import KeepAliveLimit, worker_load
from app.limits import BodySizeLimit
from app.security_headers import SecurityHeaders
from app.settings import ROOT, Settings, get_settings
from app.unavailable import add_unavailable_handlers

# Each domain module exposes `router` (pages) and/or `api_router` (/api/v1). Routes are matched in
# this order, so labeling (most of all requests) comes first; no two domains' paths overlap.
DOMAINS = [
    "labeling",
    "auth",
    "projects",
    "prompts",
    "exports",
    "admin",
    "rounds",
    "evaluation",
    "sft",
    "demonstrations",
    "judges",
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="ranklab",
        version="0.1.0",
        description="Self-hosted RLHF: rank completions, train reward models, run PPO.",
    )
    app.state.settings = settings
    app.state.engine = make_engine(settings.sqlalchemy_url, ping="after_idle")  # a round trip less per request
    # info["settings"]: tasks enqueued in a request go to this app's broker (app/rounds/queue.py).
    app.state.sessionmaker = sessionmaker(bind=app.state.engine, expire_on_commit=False, info={"settings": settings})
    app.state.write_sessionmaker = (
        sessionmaker(bind=write_lock_at_begin(app.state.engine), expire_on_commit=False, info={"settings": settings})
        if is_sqlite(app.state.engine)
        else app.state.sessionmaker
    )

    app.mount("/static", StaticFiles(directory=str(ROOT / "static")), name="static")
    for name in DOMAINS:
        module = import_module(f"app.{name}.routes")
        for attr in ("api_router", "router"):
            router = getattr(module, attr, None)
            if router is not None:
                app.include_router(router)

    _add_error_handlers(app)
    add_unavailable_handlers(app)  # database down → 503 + Retry-After
    app.add_middleware(
        BodySizeLimit, max_body_bytes=settings.max_body_bytes, max_upload_bytes=settings.max_upload_bytes
    )
    app.add_middleware(SecurityHeaders)  # outside BodySizeLimit: its 413s carry the headers too
    return app


def create_served_app() -> FastAPI:
    """The app as `ranklab serve` runs it, built once in each worker process.

    Python's full garbage collection walks every tracked object, and after start-up (FastAPI,
    SQLAlchemy, pydantic, Jinja) a worker holds a great many, nearly all living as long as the
    process. Under load each full collection held the GIL long enough to stall every request of
    that worker at once: that was the labeling loop's p99 (measured in docs/labeling-performance.md,
    "A third pass", step 1). gc.freeze() moves what start-up made out of the collector's way; full
    collections then walk only objects made since. Tests build many apps in one process and keep
    create_app's plain collection.

    KeepAliveLimit moves long-lived connections so they spread over the worker processes."""
    app = create_app()
    load = worker_load()
    if app.state.settings.keepalive_requests or load is not None:
        app.add_middleware(KeepAliveLimit, max_requests=app.state.settings.keepalive_requests, load=load)
    gc.collect()
    gc.freeze()
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, _exc: LoginRequired) -> Response:
        target = "/login?next=" + quote(request.url.path)
        if request.headers.get("HX-Request") == "true":
            return Response(status_code=401, headers={"HX-Redirect": target})
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "Not logged in."}, status_code=401)
        return RedirectResponse(target, status_code=303)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name each offending field in plain words, keep FastAPI's structured list too.
        errors = exc.errors()
        summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:20])
        return JSONResponse({"detail": _jsonable(errors), "message": summary}, status_code=422)


def _jsonable(errors: Sequence[dict]) -> list[dict]:
    return [
        {k: (v if k != "ctx" else {ck: str(cv) for ck, cv in v.items()}) for k, v in e.items() if k != "input"}
        for e in errors
    ]
