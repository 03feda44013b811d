"""A stored round config (app/rounds/schemas.RoundConfigIn as JSON) → worker.ml's dataclasses,
and ModelVersion rows → folders the ML code can load.

The web process validated the config; the dataclasses check ranges again, so a config edited
in the database still fails with a message naming the field.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.models import ModelVersion
from app.rounds.lifecycle import BUNDLED_MODEL
from worker.loop.runtime import settings


def generation_config(config: dict[str, Any], *, batch: int, number: int):
    from worker.ml.config import GenerationConfig

    gen = config["generation"]
    seed = None if gen.get("seed") is None else gen["seed"] + 1000 * number + batch
    return GenerationConfig(
        k=config["k"],
        temperature=gen["temperature"],
        top_p=gen["top_p"],
        max_new_tokens=gen["max_new_tokens"],
        seed=seed,
        batch_size=max(config["k"], 4 * config["k"]),
    )


def reward_config(config: dict[str, Any], *, backbone: str, round_id: int):
    from worker.ml.config import RewardConfig

    rm = config["reward"]
    # val_fraction 0: the worker holds out the project's validation prompts itself (by Prompt.split).
    return RewardConfig(
        model=backbone,
        mode=rm["mode"],
        loss=rm["loss"],
        learning_rate=rm["learning_rate"],
        epochs=rm["epochs"],
        batch_rankings=rm["batch_rankings"],
        max_length=rm["max_length"],
        lora_r=rm["lora_r"],
        lora_alpha=2 * rm["lora_r"],
        val_fraction=0.0,
        seed=config["seed"],
        extra={"round_id": round_id},
    )


def ppo_config(config: dict[str, Any], *, model: str):
    from worker.ml.ppo_config import PPOConfig

    ppo = config["ppo"]
    return PPOConfig(
        model=model,
        steps=ppo["steps"],
        batch_size=ppo["batch_size"],
        minibatch_size=ppo["minibatch_size"],
        ppo_epochs=ppo["ppo_epochs"],
        learning_rate=ppo["learning_rate"],
        kl_coef=ppo["kl_coef"],
        adaptive_kl_target=ppo["adaptive_kl_target"],
        max_new_tokens=ppo["max_new_tokens"],
        temperature=ppo["temperature"],
        missing_eos_penalty=ppo["missing_eos_penalty"],
        lora_r=ppo["lora_r"],
        lora_alpha=2 * ppo["lora_r"],
        seed=config["seed"],
    )


def root_base(db: Session, version: ModelVersion) -> ModelVersion:
    """The base model at the start of a lineage (policy → parent policy → ... → base)."""
    seen = set()
    while version.kind != "base" and version.parent_id is not None and version.id not in seen:
        seen.add(version.id)
        version = db.get_one(ModelVersion, version.parent_id)
    return version


def base_model_path(base_model: str, on_progress=None) -> str:
    """Folder (or hub id) of a base model; the bundled SmolLM2 is converted on first use."""
    if base_model == BUNDLED_MODEL:
        from worker.ml.models import convert_default_model

        return str(convert_default_model(settings().data_dir, on_progress))
    return base_model


def version_path(kind: str, base_model: str, artifact_path: str | None, on_progress=None) -> str:
    """What to load for a ModelVersion: a base folder / hub id, or a trained artifact folder."""
    if kind == "base":
        return base_model_path(base_model, on_progress)
    if not artifact_path:
        raise ValueError(f"model version ({kind}) has no artifact folder")
    return artifact_path
