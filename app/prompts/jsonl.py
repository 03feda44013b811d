"""Reading JSONL uploads one line at a time, and saying in plain words why a line was refused.

Nothing here holds more than one line in memory: uploads are spooled to a temporary file
(by Starlette for multipart, by `spool_stream` for raw bodies) and read back line by line."""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import IO, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)
SPOOL_IN_MEMORY_BYTES = 1024 * 1024
BOM = b"\xef\xbb\xbf"


class OversizedLine(bytes):
    """Stands in for a line longer than the limit (its content is dropped while reading)."""

    length: int
    limit: int

    def __new__(cls, length: int, limit: int) -> OversizedLine:
        line = super().__new__(cls, b"")
        line.length, line.limit = length, limit
        return line


async def spool_stream(chunks: AsyncIterator[bytes]) -> IO[bytes]:
    """Copies a request body to a temporary file (in memory up to 1 MiB, then on disk)."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)
    async for chunk in chunks:
        spool.write(chunk)
    spool.seek(0)
    return spool


def read_lines(file: IO[bytes], *, max_line_bytes: int) -> Iterator[bytes]:
    """Yields each line of a binary file; a line over `max_line_bytes` becomes an OversizedLine
    without ever being held whole."""
    while True:
        line = file.readline(max_line_bytes + 1)
        if not line:
            return
        if len(line) <= max_line_bytes or line.endswith(b"\n"):
            yield line
            continue
        length = len(line)
        while line and not line.endswith(b"\n"):  # skip the rest of the long line
            line = file.readline(SPOOL_IN_MEMORY_BYTES)
            length += len(line)
        yield OversizedLine(length, max_line_bytes)


def parse_lines(lines: Iterable[bytes], model: type[Model]) -> Iterator[tuple[int, Model | str]]:
    """(line number, the parsed record or the reason it was refused) per non-blank line, numbered
    from 1 as in the file (blank lines are skipped but counted)."""
    for number, raw in enumerate(lines, 1):
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        if isinstance(raw, OversizedLine):
            yield number, f"line is {raw.length} bytes long; the limit is {raw.limit} (setting RANKLAB_MAX_BODY_BYTES)"
            continue
        if not raw.strip():
            continue
        try:
            yield number, model.model_validate_json(raw)
        except ValidationError as exc:
            yield number, explain_line(raw, model, exc)


def explain_line(raw: bytes, model: type[BaseModel], exc: ValidationError) -> str:
    """The first thing wrong with a line, checked in the order a person would fix them."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"invalid UTF-8 at byte {err.start + 1} of the line; save the file as UTF-8"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return f"invalid JSON: {err.msg} at column {err.colno}"
    if not isinstance(value, dict):
        return f"expected a JSON object, got {_json_kind(value)}"
    try:
        model.model_validate(value)
    except ValidationError as python_exc:
        exc = python_exc  # same rules; messages from Python-mode validation name the field the same way
    return describe_errors(exc, model)


def describe_errors(exc: ValidationError, model: type[BaseModel] | None = None, *, prefix: str = "") -> str:
    """`field: message; ...` with list positions written as [i], e.g. `messages[2].role: ...`."""
    parts = []
    for error in exc.errors(include_url=False):
        where = prefix + _loc(error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(model.model_fields) if model is not None and where.count(".") == 0 else ""
            message = "unknown field" + (f" (allowed: {allowed}; put extra data under metadata)" if allowed else "")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "tagged-union")):
            out += ("." if out else "") + str(part)
    return out


def _json_kind(value) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
