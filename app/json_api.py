"""Plumbing shared by every /api/v1 router: the route class and the error bodies the API documents.

Beside app/api_types.py (the constrained types of bodies and paths); each domain's routes.py
imports from here, so no domain depends on another for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field


class JsonApiRoute(APIRoute):
    """FastAPI turns a JSON body that is not UTF-8 into "400 There was an error parsing the
    body"; this checks the (cached) body first and says what is wrong."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if request.headers.get("content-type", "").startswith("application/json"):
                try:
                    (await request.body()).decode("utf-8")
                except UnicodeDecodeError as exc:
                    message = f"body: invalid UTF-8 at byte {exc.start + 1}; send JSON encoded as UTF-8"
                    return JSONResponse({"detail": message, "message": message}, status_code=422)
            return await handler(request)

        return checked


class ErrorOut(BaseModel):
    detail: str = Field(description="What was wrong, naming the field or line, and what to send instead.")


class FieldErrorOut(BaseModel):
    loc: list[str | int] = Field(description='Where: e.g. ["body", "k_min"] or ["path", "project_id"].')
    msg: str
    type: str


class UnprocessableOut(BaseModel):
    """Every 422 of /api/v1: a request FastAPI could not parse gets the list of field errors,
    a value a service refused gets one sentence naming the field."""

    detail: str | list[FieldErrorOut] = Field(description="The refused field(s) and why.")
    message: str | None = Field(None, description="The field errors in one line (with the list form).")


Responses = dict[int | str, dict[str, Any]]
"""A route's `responses=`: status code -> its OpenAPI description (the type FastAPI declares)."""

UNPROCESSABLE: Responses = {
    422: {"model": UnprocessableOut, "description": "A refused field, named; nothing was changed."}
}


def admin_api_responses(thing: str) -> tuple[Responses, Responses]:
    """(reads, changes): the `responses=` of an admin-token API over one kind of stateful thing
    (a round, an evaluation, an SFT run): reads can be 401/403/404/422; changes add 409 (not in a
    state that allows it) and 503 (the task queue is down; nothing changed)."""
    reads: Responses = {
        401: {"model": ErrorOut, "description": "Missing or unknown token."},
        403: {"model": ErrorOut, "description": "The token lacks the admin scope."},
        404: {"model": ErrorOut, "description": f"No such project or {thing}."},
        **UNPROCESSABLE,
    }
    changes: Responses = {
        **reads,
        409: {"model": ErrorOut, "description": f"The {thing} is not in a state that allows this."},
        503: {"model": ErrorOut, "description": "The task queue is unreachable; nothing was changed."},
    }
    return reads, changes
