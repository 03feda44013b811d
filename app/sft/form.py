"""The "Run SFT" form: demonstrations, start model and hyper-parameters, validated by SFTRunIn.

The hyper-parameter inputs are generated from SFTSettings as the round launch form is generated
from RoundConfigIn (app/rounds/launch_form.py), so they never drift from what the API accepts;
each pydantic error is shown beside the input its `loc` names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from app.rounds.launch_form import Field, LaunchForm, input_for
from app.sft.schemas import SFTRunIn, SFTSettings

STATUSES = ("accepted", "pending_review", "rejected")


def hyper_fields() -> list[Field]:
    return [input_for(f"sft.{key}", info) for key, info in SFTSettings.model_fields.items()]


def blank_form() -> LaunchForm:
    # `is`, not `in (None, False)`: 0 == False, and a blank required input (seed 0, dropout 0.0)
    # kept the browser from submitting the form with its defaults.
    values = {
        f.name: ("on" if f.default is True else "" if f.default is None or f.default is False else str(f.default))
        for f in hyper_fields()
    }
    values.update({"name": "", "start_model_id": "", "demonstrations.source": "", "demonstrations.created_after": ""})
    return LaunchForm(values=values)


def parse(posted: dict[str, Any], statuses: list[str], labeler_ids: list[str]) -> tuple[LaunchForm, SFTRunIn | None]:
    """Posted strings (and the multi-value inputs) → SFTRunIn, or the form with per-field errors."""
    form = LaunchForm(values={key: value for key, value in posted.items() if isinstance(value, str)})
    form.values["demonstrations.statuses"] = ",".join(statuses)
    form.values["demonstrations.labeler_ids"] = ",".join(labeler_ids)
    sft: dict[str, Any] = {}
    for f in hyper_fields():
        text = str(posted.get(f.name, ""))
        key = f.name.split(".", 1)[1]
        if f.kind == "bool":
            sft[key] = text not in ("", "off", "false")
        elif text.strip() == "" and f.kind in ("int", "float"):
            form.errors[f.name] = "enter a number"
        else:
            sft[key] = text.strip()
    demonstrations: dict[str, Any] = {"statuses": statuses or ["accepted"]}
    if labeler_ids:
        demonstrations["labeler_ids"] = labeler_ids
    if posted.get("demonstrations.source"):
        demonstrations["source"] = posted["demonstrations.source"]
    after = str(posted.get("demonstrations.created_after", "")).strip()
    if after:
        try:  # a datetime-local input sends no zone: the page says times are UTC
            demonstrations["created_after"] = datetime.fromisoformat(after).replace(tzinfo=UTC).isoformat()
        except ValueError:
            form.errors["demonstrations.created_after"] = "enter a date and time"
    body = {
        "name": posted.get("name", ""),
        "start_model_id": posted.get("start_model_id") or None,
        "demonstrations": demonstrations,
        "sft": sft,
    }
    try:
        run = SFTRunIn.model_validate(body, strict=False)
    except ValidationError as exc:
        run = None
        for error in exc.errors():
            path = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
            form.errors.setdefault(path or "__all__", error["msg"].removeprefix("Value error, "))
    return form, (None if form.errors else run)
