"""Submit and skip, the requests a labeler sends all day: login, project and lock in one statement.

On 2 cores the CPU per request is the ceiling of the labeling loop (docs/labeling-performance.md).
Through FastAPI dependencies a submit cost three thread hops (login, endpoint, commit), the
dependency solving, and two statements before any labeling work: the login lookup, then the
project with the labeler's advisory lock. Here the same checks run in one worker-thread call, and
on Postgres the login, the project, the membership and the lock are one statement.

Same answers, in the same order, as DbDep + CsrfDep + UserDep + service.lock_project_for_labeler:
not logged in → LoginRequired (login redirect / 401), wrong CSRF token → 403, then the project's
NotFound / NotAMember, which `work` turns into the inline error like every labeling error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import NamedTuple, TypeVar
from weakref import WeakKeyDictionary

import anyio
from fastapi import Request
from sqlalchemy import bindparam, exists, func, select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.datastructures import FormData

from app.auth import service as auth_service
from app.auth.security import token_digest
from app.db import is_sqlite, start_write_transaction
from app.deps import SESSION_COOKIE, LoginRequired, check_csrf, is_form
from app.labeling import service
from app.labeling.errors import NotFound
from app.models import Project, ProjectMember, User, WebSession, utcnow

T = TypeVar("T")

_LOGIN_PROJECT_AND_LOCK = (
    select(
        User,
        WebSession.csrf_token,
        Project,
        exists().where(ProjectMember.project_id == Project.id, ProjectMember.user_id == User.id),
        func.pg_advisory_xact_lock(bindparam("project_id"), User.id),
    )
    .join(WebSession, WebSession.user_id == User.id)
    .outerjoin(Project, Project.id == bindparam("project_id"))
    .where(WebSession.token_hash == bindparam("token_hash"), WebSession.expires_at >= bindparam("now"), User.is_active)
)


class LabelerRequest(NamedTuple):
    user: User
    csrf_token: str
    project: Project | None
    is_member: bool
    project_id: int

    def project_to_label(self) -> Project:
        """The project, if this user may label it; raises NotFound / NotAMember otherwise."""
        if self.project is None:
            raise NotFound(f"Project {self.project_id} does not exist.")
        service.check_access(self.project, is_member=self.is_member, user=self.user)
        return self.project


def login_and_lock(db: Session, *, cookie: str, project_id: int, now: datetime) -> LabelerRequest | None:
    """The logged-in user, their CSRF token and the project, with the write transaction started and
    the labeler's lock (handout.lock_labeler) taken. None when the cookie is no live session."""
    start_write_transaction(db)
    if is_sqlite(db):  # the write lock just taken serialises everything; no labeler lock needed
        login = auth_service.get_session(db, token=cookie)
        if login is None:
            return None
        project, is_member = service.project_and_membership(db, user_id=login.user.id, project_id=project_id)
        return LabelerRequest(login.user, login.csrf_token, project, is_member, project_id)
    row = db.execute(
        _LOGIN_PROJECT_AND_LOCK, {"token_hash": token_digest(cookie), "now": now, "project_id": project_id}
    ).first()
    if row is None:
        return None
    user, csrf_token, project, is_member, _locked = row
    return LabelerRequest(user, csrf_token, project, bool(is_member), project_id)


async def as_labeler(request: Request, project_id: int, work: Callable[[Session, LabelerRequest, FormData], T]) -> T:
    """Runs `work` for the logged-in labeler in one worker-thread call and commits after it.
    The form is read first, on the event loop, as FastAPI's Form() does."""
    form = await request.form() if is_form(request) else FormData()
    return await anyio.to_thread.run_sync(
        partial(_unit, request, project_id, work, form), limiter=labeling_limiter(request.app)
    )


_limiters: WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = WeakKeyDictionary()


def labeling_limiter(app: Starlette) -> anyio.CapacityLimiter:
    """Submits and skips a process runs at once (settings.labeling_threads); the rest wait their
    turn, first come first served.

    With all of them in threads at once (anyio's default: 40), a worker's requests took turns on
    the GIL in no particular order and as many transactions competed in Postgres, which stretched
    the tail. A few at a time keep both cores busy (each request also waits on Postgres) and
    answer in arrival order: a lower p99 and less Postgres CPU per loop (measured in
    docs/labeling-performance.md, "A third pass", step 5). One limiter per event loop, as anyio's
    own default is."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(app.state.settings.labeling_threads)
    return limiter


def _unit(
    request: Request, project_id: int, work: Callable[[Session, LabelerRequest, FormData], T], form: FormData
) -> T:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise LoginRequired()
    db = request.app.state.write_sessionmaker()
    try:
        labeler = login_and_lock(db, cookie=cookie, project_id=project_id, now=utcnow())
        if labeler is None:
            raise LoginRequired()
        request.state.user, request.state.csrf_token = labeler.user, labeler.csrf_token
        check_csrf(request, form)
        result = work(db, labeler, form)
        db.commit()
        return result
    except BaseException:
        db.rollback()
        raise
    finally:
        db.close()
