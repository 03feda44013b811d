"""Request body size limit, enforced while the body streams in (not only by Content-Length)."""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STREAMED_TYPES = ("multipart/form-data", "application/x-ndjson", "application/jsonl", "application/x-jsonlines")


class BodyTooLarge(HTTPException):
    """An HTTPException so that FastAPI's body parsing re-raises it (it turns any other error
    while reading a JSON body into a 400) and the app answers 413 wherever it was raised."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(413, _message(limit, setting))


class BodySizeLimit:
    """413 for bodies over the configured limit: file uploads get `max_upload_bytes`,
    everything else `max_body_bytes`."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        streamed = content_type.startswith(STREAMED_TYPES)
        limit = self.max_upload_bytes if streamed else self.max_body_bytes
        setting = "RANKLAB_MAX_UPLOAD_BYTES" if streamed else "RANKLAB_MAX_BODY_BYTES"
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reject(send, limit, setting)
            return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await _reject(send, limit, setting)


async def _reject(send: Send, limit: int, setting: str) -> None:
    body = json.dumps({"detail": _message(limit, setting)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _message(limit: int, setting: str) -> str:
    return f"Request body is larger than the limit of {limit} bytes (setting {setting})."
