"""503 + Retry-After when the database cannot be reached, instead of a 500 or a hung request.

While PostgreSQL restarts (or SQLite stays locked past its busy timeout) every request that
needs the database fails in the driver: connection refused, "terminating connection due to
administrator command", "the database system is starting up", or no pooled connection free in
time. None of that is a bug in the request, and it passes by itself: the client is told to retry
(JSON under /api, a line the ranking page shows beside its submit button for htmx, a small page
otherwise). Nothing is half-stored: the request's session rolls back (app.deps.get_db), and a
commit that failed midway is safe to send again because submissions are idempotent.

Recovery needs nothing from us: a disconnect error invalidates every older pooled connection at
once, and a connection that sat idle is pinged before use (app.db._ping_after_idle).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.web import is_htmx, templates

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
"""What the Retry-After header asks for: about a fast PostgreSQL restart, short enough for a labeler."""
MESSAGE = "Database unavailable, retry shortly."
RETRY_HEADERS = {"Retry-After": str(RETRY_AFTER_SECONDS)}

_PAGE = templates.env.from_string("""{% extends "base.html" %}
{% block title %}Unavailable · ranklab{% endblock %}
{% block content %}<section class="card narrow">
  <p class="error-message" role="alert"><strong>Unavailable:</strong> {{ message }}</p>
  <p>Try again in {{ seconds }} seconds{% if path %}: <a class="button" href="{{ path }}">reload</a>{% endif %}.</p>
</section>{% endblock %}""")
_INLINE = (
    '<p class="error-message" role="alert"><strong>Unavailable:</strong> '
    f"{MESSAGE} Nothing is lost on this page; try again in {RETRY_AFTER_SECONDS} seconds.</p>"
)


def is_unavailable(exc: BaseException) -> bool:
    """The database is unreachable or overloaded (not: a constraint, a bad query, a bug)."""
    if isinstance(exc, (OperationalError, PoolTimeout)):
        return True
    # e.g. psycopg's InterfaceError "the connection is closed" on a connection the server ended.
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def unavailable_response(request: Request) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": MESSAGE}, status_code=503, headers=RETRY_HEADERS)
    if is_htmx(request):
        return HTMLResponse(_INLINE, status_code=503, headers={**RETRY_HEADERS, "Vary": "HX-Request"})
    # The base layout without a user: reading the user would need the database.
    body = _PAGE.render(
        request=request,
        user=None,
        csrf_token="",
        message=MESSAGE,
        seconds=RETRY_AFTER_SECONDS,
        path=request.url.path if request.method == "GET" else "",
    )  # a POST is resent by going back
    return HTMLResponse(body, status_code=503, headers={**RETRY_HEADERS, "Vary": "HX-Request"})


def is_unstorable_text(exc: BaseException) -> bool:
    """A NUL character reached PostgreSQL from input no schema checked (the API's bodies are
    checked by app.api_types; this is the backstop for every other path): the client's fault."""
    return isinstance(exc, DBAPIError) and "cannot contain NUL" in str(exc.orig)


def add_unavailable_handlers(app: FastAPI) -> None:
    async def _database_error(request: Request, exc: Exception) -> Response:
        if is_unstorable_text(exc):
            return JSONResponse(
                {
                    "detail": "A text field contains a NUL character (\\x00), which cannot be stored; "
                    "remove it and send again."
                },
                status_code=422,
            )
        if not is_unavailable(exc):
            raise exc  # a real error: the server's 500 handler logs it with its traceback
        # One line, not a traceback: during an outage every request lands here.
        log.warning(
            "503 for %s %s: database unavailable (%s: %s)",
            request.method,
            request.url.path,
            type(exc.orig if isinstance(exc, DBAPIError) else exc).__name__,
            str(exc).splitlines()[0],
        )
        return unavailable_response(request)

    # DBAPIError covers OperationalError and the invalidated-connection errors; the pool's
    # TimeoutError is no DBAPIError (no driver call failed: every connection was busy).
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeout, _database_error)
