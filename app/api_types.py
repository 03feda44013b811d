"""Constrained types for /api/v1 bodies and paths: only what every backend can store.

PostgreSQL cannot store a NUL character (\\x00) in TEXT or JSONB, nor NaN or Infinity in JSONB,
and our ids are 32-bit INTEGER columns; SQLite stores NULs but fails on integers past 64 bits.
Checked here, at the edge, such input is a 422 naming the field on both backends, where it used
to be a 500 from the driver on one of them. (Found by tests/api/test_schemathesis.py.)"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, Field, StrictInt
from pydantic_core import PydanticCustomError, core_schema

INT32_MAX = 2**31 - 1
NO_NUL_PATTERN = r"^[^\x00]*$"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError(
            "nul_character", r"contains a NUL character (\x00), which cannot be stored; remove it"
        )
    return value


@dataclass(frozen=True)
class _NoNul:
    """Validates with a clear message; documents the rule as a JSON-schema `pattern` (a pydantic
    `pattern` would also validate, but say only "String should match pattern ...")."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(_no_nul, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: Any) -> dict[str, Any]:
        json_schema = handler(schema)
        json_schema["pattern"] = NO_NUL_PATTERN
        return json_schema


Text = Annotated[str, _NoNul()]
"""Any string without NUL characters; combine with Field(max_length=...) as usual."""


def _storable_json(value: Any, where: str = "") -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise PydanticCustomError(
            "nul_character", r"{where}contains a NUL character (\x00), which cannot be stored", {"where": where}
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError(
            "json_number", "{where}is {value}; JSON numbers must be finite", {"where": where, "value": str(value)}
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _storable_json(key, f"key {key!r}: ")
            _storable_json(item, f"{key}: ")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _storable_json(item, f"[{index}]: ")
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_storable_json)]
"""A free-form JSON object (metadata, generation params) that both backends can store."""

DbId = Annotated[StrictInt, Field(ge=1, le=INT32_MAX)]
"""A row id in a JSON body: ids are positive 32-bit integers."""


def id_path(description: str) -> Any:
    """A row id in the URL: out of range is a 422 naming the path parameter, not a driver error."""
    return Path(ge=1, le=INT32_MAX, description=description, examples=[1])
