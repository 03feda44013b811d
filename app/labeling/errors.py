"""What can go wrong while labeling, each with the HTTP status a route answers with.

The message is shown to the labeler (or API client) as is: it says what happened and what to do."""

from __future__ import annotations


class LabelingError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(LabelingError):
    status_code = 404


class NotAMember(LabelingError):
    status_code = 403


class Conflict(LabelingError):
    """The request was well formed but the task's state no longer allows it (409)."""

    status_code = 409


class InvalidSubmission(LabelingError):
    """The ranking, flags or skip reason is malformed (422); nothing was stored."""

    status_code = 422


LEASE_LOST_MESSAGE = (
    "This task was completed by other labelers while your lease had expired; your ranking was not needed. "
    "Nothing else was lost: carry on with the next task."
)
