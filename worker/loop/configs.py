"""A stored round config (app/rounds/schemas.RoundConfigIn as JSON) → worker.ml's dataclasses,
and ModelVersion rows → folders the ML code can load.

A round setting and the dataclass field it sets share one name, so each section is passed on by
name (`_same_named`); only what the loop decides itself (seeds, backbone, lora_alpha, batch
sizes) is written here. tests/loop/test_configs.py fails when a name, default or range of the
two declarations disagree. The web process validated the config; the dataclasses check ranges
again, so a config edited in the database still fails with a message naming the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from app.models import ModelKind, ModelVersion
from app.rounds.lifecycle import BUNDLED_MODEL
from worker.loop.runtime import settings


def _same_named(section: dict[str, Any], cls) -> dict[str, Any]:
    """The settings of one config section that are fields of the ML dataclass `cls`; the others
    (generation.prompts_per_task) are the loop's own."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {key: value for key, value in section.items() if key in names}


def generation_config(config: dict[str, Any], *, batch: int, number: int):
    from worker.ml.config import GenerationConfig

    gen = config["generation"]
    seed = None if gen.get("seed") is None else gen["seed"] + 1000 * number + batch
    return GenerationConfig.from_dict(
        {
            **_same_named(gen, GenerationConfig),
            "k": config["k"],
            "seed": seed,
            "batch_size": max(config["k"], 4 * config["k"]),
        }
    )


def _stage_config(cls, section: dict[str, Any], config: dict[str, Any], **decided: Any):
    """A training stage's dataclass from its round-config section: the same-named settings, the
    loop's LoRA alpha (2 x rank) and the round's seed, then what the loop decided (`decided`)."""
    return cls.from_dict(
        {**_same_named(section, cls), "lora_alpha": 2 * section["lora_r"], "seed": config["seed"], **decided}
    )


def _sampling(section: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Unset (None): sample like the completions the round's reward model learned from."""
    gen = config["generation"]
    return {
        name: gen[name] if section.get(name) is None else section[name] for name in ("max_new_tokens", "temperature")
    }


def reward_aspects(form: str, form_settings: dict[str, Any], config: dict[str, Any]) -> dict[str, float]:
    """A multi-aspect project's aspects with their weight in the reward (the round's reward.weights,
    an aspect left out weighing 0; none given: equal weights); {} for every other form."""
    if form != "multi_aspect":
        return {}
    given = config["reward"].get("weights") or {}
    names = [aspect["name"] for aspect in form_settings.get("aspects", [])]
    return {name: float(given.get(name, 0.0)) if given else 1.0 for name in names}


def reward_config(config: dict[str, Any], *, backbone: str, round_id: int, aspects: Mapping[str, float] | None = None):
    """`aspects` (reward_aspects): one score head per aspect, combined with these weights by default."""
    from worker.ml.config import RewardConfig

    aspects = aspects or {}
    # val_fraction 0: the worker holds out the project's validation prompts itself (by Prompt.split).
    return _stage_config(
        RewardConfig,
        config["reward"],
        config,
        model=backbone,
        val_fraction=0.0,
        extra={"round_id": round_id},
        aspects=tuple(aspects),
        aspect_weights=tuple(aspects.values()),
    )


def ppo_config(config: dict[str, Any], *, model: str):
    from worker.ml.ppo_config import PPOConfig

    return _stage_config(PPOConfig, config["ppo"], config, model=model, **_sampling(config["ppo"], config))


def dpo_config(config: dict[str, Any], *, model: str, round_id: int):
    from worker.ml.dpo_config import DPOConfig

    # val_fraction 0: the loop holds out the project's validation prompts itself (by Prompt.split).
    return _stage_config(DPOConfig, config["dpo"], config, model=model, val_fraction=0.0, extra={"round_id": round_id})


def kto_config(config: dict[str, Any], *, model: str, round_id: int):
    from worker.ml.kto_config import KTOConfig

    # val_fraction 0: the loop holds out the project's validation prompts itself (by Prompt.split).
    return _stage_config(KTOConfig, config["kto"], config, model=model, val_fraction=0.0, extra={"round_id": round_id})


def rloo_config(config: dict[str, Any], *, model: str, estimator: str):
    from worker.ml.rloo_config import RLOOConfig

    rloo = config["rloo"]
    # k unset: the round's K, the group the round's reward model saw ranked together.
    return _stage_config(
        RLOOConfig,
        rloo,
        config,
        model=model,
        estimator=estimator,
        k=rloo.get("k") or config["k"],
        **_sampling(rloo, config),
    )


def root_base(db: Session, version: ModelVersion) -> ModelVersion:
    """The base model at the start of a lineage (policy → parent policy → ... → base)."""
    seen = set()
    while version.kind != ModelKind.base and version.parent_id is not None and version.id not in seen:
        seen.add(version.id)
        version = db.get_one(ModelVersion, version.parent_id)
    return version


def lineage_start(db: Session, version: ModelVersion) -> ModelVersion:
    """The model a lineage of rounds began with: the nearest SFT model up the parents (policy →
    ... → SFT), else the base. An SFT start is the PPO reference of every round on it and, by
    default, the reward model's starting point (InstructGPT)."""
    seen = set()
    while version.kind not in (ModelKind.base, ModelKind.sft) and version.parent_id is not None:
        if version.id in seen:
            break
        seen.add(version.id)
        version = db.get_one(ModelVersion, version.parent_id)
    return version


def reward_backbone(db: Session, policy_in: ModelVersion, init_from: str) -> ModelVersion:
    """The version a round's reward model starts from: RewardSettings.init_from "sft" = the SFT
    model the lineage began with (the base when there is none); "base" = the pre-SFT base."""
    return lineage_start(db, policy_in) if init_from == "sft" else root_base(db, policy_in)


def base_model_path(base_model: str, on_progress=None) -> str:
    """Folder (or hub id) of a base model; the bundled SmolLM2 is converted on first use."""
    if base_model == BUNDLED_MODEL:
        from worker.ml.models import convert_default_model

        return str(convert_default_model(settings().data_dir, on_progress))
    return base_model


class VersionRef(NamedTuple):
    """A ModelVersion's fields, read inside a session and used after it has closed (models load and
    train outside any transaction)."""

    id: int
    kind: str
    base_model: str
    artifact_path: str | None
    name: str

    @classmethod
    def of(cls, version: ModelVersion) -> VersionRef:
        return cls(version.id, version.kind, version.base_model, version.artifact_path, version.name)


def version_path(kind: str, base_model: str, artifact_path: str | None, on_progress=None) -> str:
    """What to load for a ModelVersion: a base folder / hub id, or a trained artifact folder."""
    if kind == ModelKind.base:
        return base_model_path(base_model, on_progress)
    if not artifact_path:
        raise ValueError(f"model version ({kind}) has no artifact folder")
    return artifact_path


def distributed_config():
    """The worker's multi-process training settings (Settings.train_*), or None to train in this
    process (train_processes 1)."""
    worker = settings()
    if worker.train_processes <= 1:
        return None
    from worker.ml.distributed import DistributedConfig

    return DistributedConfig(
        processes=worker.train_processes,
        strategy=worker.train_strategy,
        mixed_precision=worker.train_mixed_precision,
        accelerate_config=worker.train_accelerate_config or None,
    )
