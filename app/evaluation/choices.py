"""Choosing what an evaluation compares: the project's eval set, and versions by preset.

The eval set is the project's prompts of split "eval": rounds never take them (lifecycle.unused_prompts),
so a policy is never trained on the prompts it is judged on. Presets name a version's opponents:
its previous policy, the base model of its backbone, the project's latest SFT model."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import ModelKind, ModelVersion, Prompt, PromptSplit, TrainingRound
from app.refusals import Refusal
from app.rounds import lifecycle

OPPONENTS = ("previous", "base", "sft")
"""Presets: the version's previous policy, the base of its backbone, the project's latest SFT model."""
EVALUATED_KINDS = (ModelKind.base, ModelKind.sft, ModelKind.policy)
"""Versions that write answers (a reward model does not)."""


class EvaluationError(Refusal):
    """A request the evaluation cannot take; `field` names what to change."""


class EvaluationNotFound(EvaluationError):
    status_code = 404


class EvaluationConflict(EvaluationError):
    status_code = 409


class QueueDown(EvaluationError):
    status_code = 503


# ---- the eval set ------------------------------------------------------------------------------


def eval_prompts(db: Session, *, project_id: int, limit: int | None) -> list[Prompt]:
    """The project's eval split by id, the first `limit` (the same prompts every time)."""
    query = select(Prompt).where(Prompt.project_id == project_id, Prompt.split == PromptSplit.eval)
    query = query.order_by(Prompt.id)
    return list(db.scalars(query if limit is None else query.limit(limit)))


def hold_out_eval_set(db: Session, *, project_id: int, count: int, seed: int) -> list[Prompt]:
    """Moves `count` prompts no round or task uses into the eval split, chosen at random with
    `seed`; refuses (changing nothing) when fewer are free. Rounds never take eval prompts."""
    if count < 1:
        raise EvaluationError("count", "must be at least 1")
    free = lifecycle.unused_prompts(db, project_id=project_id, limit=None)
    if len(free) < count:
        raise EvaluationError(
            "count",
            f"only {len(free)} prompt{'s' if len(free) != 1 else ''} are unused by every round and task; "
            f"upload more prompts or ask for at most {len(free)}",
        )
    chosen = sorted(random.Random(seed).sample(free, count), key=lambda p: p.id)
    for prompt in chosen:
        prompt.split = PromptSplit.eval
    db.flush()
    return chosen


# ---- versions ----------------------------------------------------------------------------------


def evaluable_versions(db: Session, *, project_id: int) -> list[ModelVersion]:
    """The project's versions that answer prompts (base, SFT, policies), newest first."""
    return list(
        db.scalars(
            select(ModelVersion)
            .where(ModelVersion.project_id == project_id, ModelVersion.kind.in_(EVALUATED_KINDS))
            .order_by(ModelVersion.id.desc())
        )
    )


def opponents(
    db: Session, *, version: ModelVersion, against: Sequence[str], previous_id: int | None = None
) -> list[int]:
    """The ids `against` names for `version` (those that exist and differ from it), in that order:
    "previous" = `previous_id` or else the version's parent, "base" = the project's base version
    of the same backbone, "sft" = the SFT model the version's lineage started from (a policy of
    rounds begun from SFT is judged against that SFT model), else the project's latest."""
    found: list[int] = []
    for name in against:
        if name not in OPPONENTS:
            raise EvaluationError("against", f"unknown opponent {name!r}; choose from {', '.join(OPPONENTS)}")
        if name == "previous":
            candidate = previous_id if previous_id is not None else version.parent_id
        elif name == "base":
            candidate = db.scalar(
                select(ModelVersion.id)
                .where(
                    ModelVersion.project_id == version.project_id,
                    ModelVersion.kind == ModelKind.base,
                    ModelVersion.base_model == version.base_model,
                )
                .order_by(ModelVersion.id)
                .limit(1)
            )
        else:
            candidate = _lineage_sft(db, version) or db.scalar(
                select(ModelVersion.id)
                .where(ModelVersion.project_id == version.project_id, ModelVersion.kind == ModelKind.sft)
                .order_by(ModelVersion.id.desc())
                .limit(1)
            )
        if candidate is not None and candidate != version.id and candidate not in found:
            found.append(candidate)
    return found


def _lineage_sft(db: Session, version: ModelVersion) -> int | None:
    """The nearest SFT ancestor of a policy (None for any other kind, or when there is none)."""
    seen: set[int] = set()
    current: ModelVersion | None = version
    while current is not None and current.kind == ModelKind.policy and current.parent_id is not None:
        if current.id in seen:
            return None
        seen.add(current.id)
        current = db.get(ModelVersion, current.parent_id)
    return current.id if current is not None and current.kind == ModelKind.sft and current is not version else None


NAMED_PRESETS: dict[str, tuple[str, str, str]] = {
    "sft_vs_base": ("SFT vs base", ModelKind.sft, "base"),
    "policy_vs_sft": ("policy vs SFT", ModelKind.policy, "sft"),
}
"""One-click comparisons (issue 13): name -> (label, the kind evaluated, its opponent preset). The
project's latest version of that kind is evaluated: the SFT model against the base of its backbone;
the latest policy against the SFT model its rounds started from."""


class NamedPreset(NamedTuple):
    name: str
    label: str
    comparisons: list[list[int]]
    """The pair it compares now; empty when the project lacks one side."""


def named_presets(db: Session, *, project_id: int) -> list[NamedPreset]:
    """Every named preset with the pair it would compare now ([] when the project lacks one side),
    for the evaluation page's list and the API."""
    listed: list[NamedPreset] = []
    for name, (label, kind, against) in NAMED_PRESETS.items():
        version = db.scalar(
            select(ModelVersion)
            .where(ModelVersion.project_id == project_id, ModelVersion.kind == kind)
            .order_by(ModelVersion.id.desc())
            .limit(1)
        )
        found = opponents(db, version=version, against=[against]) if version is not None else []
        if kind == ModelKind.policy and version is not None and _lineage_sft(db, version) is None:
            found = []  # a policy of rounds that never started from SFT has no SFT to be judged against
        pairs = [[version.id, found[0]]] if version is not None and found else []
        listed.append(NamedPreset(name, label, pairs))
    return listed


def named_preset_comparisons(db: Session, *, project_id: int, name: str) -> list[list[int]]:
    """The pair the named preset compares; refuses (naming `preset`) an unknown name or a missing side."""
    if name not in NAMED_PRESETS:
        raise EvaluationError("preset", f"unknown preset {name!r}; choose from {', '.join(NAMED_PRESETS)}")
    pairs = next(p.comparisons for p in named_presets(db, project_id=project_id) if p.name == name)
    if not pairs:
        label, kind, against = NAMED_PRESETS[name]
        raise EvaluationError("preset", f"{label}: the project has no {kind} model with a {against} model to compare")
    return pairs


def versions_for_round(db: Session, training_round: TrainingRound, against: Sequence[str]) -> list[list[int]]:
    """Comparisons [new policy, opponent] for the round's new policy (none before it exists);
    "previous" is the policy the round started from."""
    if training_round.policy_out_id is None:
        return []
    version = db.get(ModelVersion, training_round.policy_out_id)
    if version is None:
        return []
    found = opponents(db, version=version, against=against, previous_id=training_round.policy_in_id)
    return [[version.id, other] for other in found]


def preset_comparisons(db: Session, *, project_id: int, version_id: int, against: Sequence[str]) -> list[list[int]]:
    """ "version vs previous / base / SFT" from the model versions page; refuses when none exists."""
    version = project_version(db, project_id=project_id, version_id=version_id, field="version_id")
    if not against:
        raise EvaluationError("against", "choose at least one opponent: previous, base or sft")
    found = opponents(db, version=version, against=against)
    if not found:
        raise EvaluationError(
            "against", f"version {version_id} has no {' / '.join(against)} version to compare with in this project"
        )
    return [[version.id, other] for other in found]


def project_version(db: Session, *, project_id: int, version_id: int, field: str) -> ModelVersion:
    version = db.get(ModelVersion, version_id)
    if version is None:
        raise EvaluationError(field, f"no model version {version_id}")
    if version.project_id != project_id:
        raise EvaluationError(field, f"model version {version_id} belongs to another project")
    if version.kind not in EVALUATED_KINDS:
        raise EvaluationError(field, f"model version {version_id} is a {version.kind} model, which writes no answers")
    return version
