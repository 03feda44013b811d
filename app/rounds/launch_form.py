"""The "Launch round" form, generated from RoundConfigIn so it never drifts from what the API accepts.

Each leaf field of RoundConfigIn becomes one input named by its dotted path ("reward.mode");
defaults, ranges and help text come from the pydantic field. Posted strings are nested back
into a dict and validated by RoundConfigIn itself, and each pydantic error is shown beside the
field its `loc` names."""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from app.rounds.schemas import RoundConfigIn

LABELS = {
    "model": "Starting model (folder or hub id)",
    "start_version_id": "Start from model version",
    "init_from": "Initialise from",
    "weights": "Aspect weights (multi-aspect projects)",
    "k": "K (completions per prompt)",
    "seed": "Seed",
    "gpu_class": "GPU class of the workers (empty: default)",
    "count": "Prompts",
    "all_unlabeled": "Use every unused prompt",
    "validation_fraction": "Validation share",
    "top_p": "Top-p",
    "lora_r": "LoRA rank",
    "mode": "Training mode",
    "kl_coef": "KL coefficient (β)",
    "adaptive_kl_target": "Adaptive KL target",
    "ppo_epochs": "PPO epochs",
    "min_coverage": "Minimum coverage",
    "auto_start": "Start training automatically",
    "source": "Labelled by",
    "judge_rounds": "AI-labelled rounds in a row",
    "optimizer": "Policy optimizer",
    "rloo.k": "Samples per prompt (group)",
    "beta": "β (pull towards the reference)",
    "rankings_from": "Rankings DPO trains on",
    "labels_from": "Labels KTO trains on",
    "desirable_weight": "Weight of good answers (λ_D)",
    "undesirable_weight": "Weight of bad answers (λ_U)",
    "prompts_per_step": "Prompts per step",
    "update_epochs": "Passes over each batch",
    "kl_in": "KL placed in",
}
SECTION_TITLES = {
    "prompts": "Prompts",
    "generation": "Generation",
    "reward": "Reward model",
    "ppo": "Policy (PPO)",
    "dpo": "Policy (DPO)",
    "rloo": "Policy (RLOO / GRPO)",
    "kto": "Policy (KTO)",
    "labeling": "When to train",
}
CHOICE_LABELS = {
    "lora": "LoRA (adapters + score head)",
    "full": "Full fine-tune",
    "kwise": "K-wise pairs (InstructGPT)",
    "plackett_luce": "Plackett–Luce (listwise)",
    "sft": "the SFT model (InstructGPT)",
    "base": "the pre-SFT base model",
    "ppo": "PPO (reward model, value head)",
    "dpo": "DPO (on the rankings)",
    "rloo": "RLOO (k samples, leave-one-out)",
    "grpo": "GRPO (k samples, group-normalised)",
    "kto": "KTO (on good/bad labels)",
    "sigmoid": "sigmoid (DPO)",
    "ipo": "IPO",
    "policy_line": "this and earlier rounds of the policy line",
    "this_round": "this round only",
    "humans": "the labeling team",
    "judge": "the project's AI judge only (RLAIF)",
}


def placeholders(project: Any) -> dict[str, str]:
    """What an empty optional input means, shown in it."""
    return {
        "model": "latest policy, or bundled SmolLM2",
        "start_version_id": "— the starting model above —",
        "k": f"project's K min ({project.k_min})",
        "generation.seed": "random",
        "ppo.max_new_tokens": "generation's",
        "ppo.temperature": "generation's",
        "rloo.k": "the round's K",
        "reward.weights": "equal; e.g. helpfulness: 0.7, harmlessness: 0.3",
        "rloo.max_new_tokens": "generation's",
        "rloo.temperature": "generation's",
    }


def version_options(db: Any, project: Any) -> dict[str, list[tuple[str, str]]]:
    """Inputs offered as a list of choices taken from the database: the start version is one of
    the project's SFT models, policies and bases (newest first, SFT models on top)."""
    from sqlalchemy import select

    from app.models import ModelKind, ModelVersion

    order = {ModelKind.sft: 0, ModelKind.policy: 1, ModelKind.base: 2}
    versions = db.scalars(
        select(ModelVersion)
        .where(ModelVersion.project_id == project.id, ModelVersion.kind.in_(list(order)))
        .order_by(ModelVersion.id.desc())
    ).all()
    ranked = sorted(versions, key=lambda v: order[v.kind])
    return {"start_version_id": [(str(v.id), f"{v.kind}: {v.name} (#{v.id})") for v in ranked]}


@dataclass(frozen=True)
class Field:
    """One input of the form."""

    name: str
    """Dotted path in RoundConfigIn, also the input's name."""
    label: str
    help: str
    kind: str
    """text, int, float, bool or choice."""
    default: Any
    optional: bool
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    many: bool = False
    """A list setting (evaluation.human_against): typed as comma-separated values."""

    @property
    def dom_id(self) -> str:
        return "f-" + self.name.replace(".", "-")


@dataclass
class Section:
    name: str
    title: str
    help: str
    fields: list[Field]


@dataclass
class LaunchForm:
    """What was typed (shown back after an error) and the per-field messages."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    error: str = ""
    """A message about the whole launch (e.g. the task queue is unreachable)."""


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


def _bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    low = high = None
    for item in info.metadata:
        if isinstance(item, (Ge, Gt)):
            low = item.ge if isinstance(item, Ge) else item.gt
        elif isinstance(item, (Le, Lt)):
            high = item.le if isinstance(item, Le) else item.lt
    return _number(low), _number(high)


def _number(bound: object) -> float | None:
    """A bound as the form's min/max: a number (int or float, as declared), else none."""
    return bound if isinstance(bound, (int, float)) else None


def _field(name: str, key: str, info: FieldInfo) -> Field:
    annotation, optional = _unwrap(info.annotation)
    choices: tuple[str, ...] = ()
    many = typing.get_origin(annotation) is list
    if many:
        kind = "text"
        item = typing.get_args(annotation)[0]
        if typing.get_origin(item) is Literal:
            choices = tuple(str(c) for c in typing.get_args(item))
    elif typing.get_origin(annotation) is Literal:
        kind, choices = "choice", tuple(str(c) for c in typing.get_args(annotation))
    elif annotation is bool:
        kind = "bool"
    elif annotation is int:
        kind = "int"
    elif annotation is float:
        kind = "float"
    else:
        kind = "text"
    low, high = _bounds(info)
    default = info.get_default(call_default_factory=True)
    return Field(
        name=name,
        label=LABELS.get(name, LABELS.get(key, key.replace("_", " ").capitalize())),
        help=(info.description or "") + (f" Comma-separated: {', '.join(choices)}." if many and choices else ""),
        kind=kind,
        default=default,
        optional=optional,
        choices=choices,
        low=low,
        high=high,
        many=many,
    )


def sections() -> list[Section]:
    """The top-level settings first, then one section per nested settings model."""
    top = Section("", "Round", RoundConfigIn.__doc__ or "", [])
    nested = []
    for key, info in RoundConfigIn.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            # The docstrings name worker classes for developers; the form keeps the plain words.
            help_text = re.sub(r"\s*\(worker\.[^)]*\)", "", (model.__doc__ or "").strip())
            nested.append(
                Section(
                    key,
                    SECTION_TITLES.get(key, key.capitalize()),
                    help_text,
                    [_field(f"{key}.{sub}", sub, sub_info) for sub, sub_info in model.model_fields.items()],
                )
            )
        else:
            top.fields.append(_field(key, key, info))
    return [top, *nested]


def all_fields() -> list[Field]:
    return [f for section in sections() for f in section.fields]


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):  # reward.weights: "helpfulness: 0.7, harmlessness: 0.3"
        return ", ".join(f"{key}: {number}" for key, number in value.items())
    return str(value)


def blank_form() -> LaunchForm:
    return LaunchForm(values={f.name: _as_text(f.default) for f in all_fields()})


def parse(posted: dict[str, str]) -> tuple[LaunchForm, RoundConfigIn | None]:
    """Validates posted strings with RoundConfigIn. An empty optional input means None (e.g. a
    random seed); an unchecked box means False; anything else goes to pydantic as typed."""
    form = LaunchForm(values={})
    nested: dict[str, Any] = {}
    for f in all_fields():
        text = posted.get(f.name, "")
        form.values[f.name] = text
        if f.many:
            value: Any = [part.strip() for part in text.split(",") if part.strip()]
        elif f.kind == "bool":
            value = text not in ("", "off", "false")
        elif f.kind != "text" and text.strip() == "":
            if f.optional:
                value = None
            else:
                form.errors[f.name] = "enter a number" if f.kind in ("int", "float") else "choose one"
                continue
        else:
            value = text.strip() if f.kind != "text" else text
        target = nested
        *parents, leaf = f.name.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    # Validate even after an empty input, so every wrong field is marked in one round trip.
    try:
        config = RoundConfigIn.model_validate(nested)
    except ValidationError as exc:
        config = None
        for error in exc.errors():
            message = _message(error)
            form.errors.setdefault(_field_of(error["loc"], message), message)
    return form, (None if form.errors else config)


def _field_of(loc: tuple[Any, ...], message: str) -> str:
    """The input a pydantic error belongs to. A model-level check (minibatch ≤ batch) has a loc that
    names only its section; it goes beside the first of the section's fields the message names."""
    names = [f.name for f in all_fields()]
    path = ".".join(str(part) for part in loc if not isinstance(part, int))  # a list item: its field
    if path in names:
        return path
    prefix = f"{path}." if path else ""
    mentioned = []
    for name in names:
        leaf = name[len(prefix) :]
        if name.startswith(prefix) and "." not in leaf:
            found = re.search(rf"\b{re.escape(leaf)}\b", message)
            if found:
                mentioned.append((found.start(), name))
    return min(mentioned)[1] if mentioned else path or "__all__"


def _message(error: ErrorDetails) -> str:
    message = error["msg"]
    return message.removeprefix("Value error, ")


def input_for(name: str, info: FieldInfo) -> Field:
    """One form input for a pydantic field at dotted path `name` (the SFT form builds its
    hyper-parameter inputs the same way, app/sft/form.py)."""
    return _field(name, name.rsplit(".", 1)[-1], info)
