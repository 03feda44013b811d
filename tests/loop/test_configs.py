"""A round's hyper-parameters are declared twice, and these tests keep the two in step.

The web's pydantic settings (app/rounds/schemas.py, which also build the launch form) cannot
import worker.ml, so they restate the names, defaults and ranges of worker.ml's config
dataclasses (config.py, ppo_config.py); worker/loop/configs.py passes each setting on by name.
Every setting a round exposes is checked here: it names a dataclass field (or is listed as the
loop's own), its default is the dataclass default, every value the web accepts builds a
dataclass through the loop's mapping (and arrives unchanged), and just past each web bound the
dataclass refuses too, unless the bound is listed below as a cap only the web sets.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, fields
from typing import Any, Literal

import pytest
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from app.rounds.schemas import (
    DPOSettings,
    GenerationSettings,
    KTOSettings,
    PPOSettings,
    RewardSettings,
    RLOOSettings,
    RoundConfigIn,
)
from worker.loop.configs import dpo_config, generation_config, kto_config, ppo_config, reward_config, rloo_config
from worker.loop.optimizers import OPTIMIZERS
from worker.ml.config import GEN_BACKENDS, RM_LOSSES, RM_MODES, GenerationConfig, RewardConfig
from worker.ml.dpo_config import DPOConfig
from worker.ml.dpo_losses import DPO_LOSSES
from worker.ml.kto_config import KTOConfig
from worker.ml.ppo_config import REWARD_SOURCES, ROLLOUT_BACKENDS, PPOConfig
from worker.ml.rloo_config import KL_PLACEMENTS, RLOOConfig

SECTIONS: dict[str, tuple[type[BaseModel], type]] = {
    "generation": (GenerationSettings, GenerationConfig),
    "reward": (RewardSettings, RewardConfig),
    "ppo": (PPOSettings, PPOConfig),
    "dpo": (DPOSettings, DPOConfig),
    "rloo": (RLOOSettings, RLOOConfig),
    "kto": (KTOSettings, KTOConfig),
}
TOP_LEVEL: dict[str, tuple[type, ...]] = {
    "k": (GenerationConfig,),
    "seed": (RewardConfig, PPOConfig, DPOConfig, RLOOConfig, KTOConfig),
}
"""Top-level settings and the dataclasses whose same-named field they set."""
NOT_ML = {"model", "start_version_id", "optimizer", "prompts", "labeling", "evaluation", "gpu_class"}
"""Resolved by the loop (the starting ModelVersion; the optimizer picks the policy step,
worker/loop/optimizers.py) or not training settings at all (evaluation: the loop's eval step,
worker/loop/evaluation.py)."""
LOOP_ONLY = {
    "generation.prompts_per_task",
    "reward.init_from",
    "reward.weights",
    "dpo.rankings_from",
    "kto.labels_from",
}
"""Settings the loop acts on itself (generation jobs of this many prompts; which model the reward
model starts from, worker/loop/configs.py reward_backbone; a multi-aspect project's aspect weights,
reward_aspects; which rounds' judgments DPO and KTO read, worker/loop/data.py policy_line_rounds)."""
DEFAULT_DIFFERS = {"k", "ppo.max_new_tokens", "ppo.temperature", "rloo.k", "rloo.max_new_tokens", "rloo.temperature"}
"""A round's k defaults to None: the project's k_min, filled in at launch; RLOO's group size to
None: the round's k. PPO's and RLOO's rollout length and temperature default to None: the
generation settings' (checked below)."""
WEB_ONLY_LIMITS = {
    ("seed", "ge"),
    ("seed", "le"),
    ("generation.seed", "ge"),
    ("generation.seed", "le"),
    ("reward.batch_rankings", "le"),
    ("ppo.steps", "le"),
    ("ppo.batch_size", "le"),
    ("ppo.minibatch_size", "le"),
    ("ppo.ppo_epochs", "le"),
    ("ppo.kl_coef", "le"),
    ("dpo.batch_rankings", "le"),
    ("kto.batch_prompts", "le"),
    ("rloo.steps", "le"),
    ("rloo.prompts_per_step", "le"),
    ("rloo.k", "le"),
    ("rloo.update_epochs", "le"),
    ("rloo.minibatch_size", "le"),
    ("rloo.kl_coef", "le"),
}
"""Caps the form sets where the library takes any value (a seed that fits int32, a run that
fits a sane budget)."""
ML_CHOICES = {
    "reward.loss": RM_LOSSES,
    "reward.mode": RM_MODES,
    "ppo.reward_source": REWARD_SOURCES,
    "generation.backend": GEN_BACKENDS,
    "dpo.loss": DPO_LOSSES,
    "rloo.kl_in": KL_PLACEMENTS,
    "rloo.reward_source": REWARD_SOURCES,
    "ppo.rollout_backend": ROLLOUT_BACKENDS,
    "rloo.rollout_backend": ROLLOUT_BACKENDS,
}
"""The dataclass's allowed values for each choice setting."""


def round_settings() -> list[tuple[str, FieldInfo, tuple[type, ...]]]:
    """(dotted path, pydantic field, the dataclasses it sets) for every ML setting of a round."""
    found: list[tuple[str, FieldInfo, tuple[type, ...]]] = []
    for name, info in RoundConfigIn.model_fields.items():
        if name in SECTIONS:
            schema, cls = SECTIONS[name]
            assert info.annotation is schema
            found += [
                (f"{name}.{sub}", sub_info, (cls,))
                for sub, sub_info in schema.model_fields.items()
                if f"{name}.{sub}" not in LOOP_ONLY
            ]
        elif name in TOP_LEVEL:
            found.append((name, info, TOP_LEVEL[name]))
    return found


SETTINGS = round_settings()
IDS = [path for path, _, _ in SETTINGS]


def _leaf(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def _bounds(info: FieldInfo) -> dict[str, Any]:
    """{"ge"|"gt"|"le"|"lt": value} from the pydantic field."""
    found: dict[str, Any] = {}
    for item in info.metadata:
        for kind in (Ge, Gt, Le, Lt):
            if isinstance(item, kind):
                key = kind.__name__.lower()
                found[key] = getattr(item, key)
    return found


def _without_none(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return annotation


def _choices(annotation: Any) -> tuple[Any, ...]:
    """The values of a Literal setting; () for any other."""
    annotation = _without_none(annotation)
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()


def _base_type(annotation: Any) -> Any:
    """int / float / str / bool, without None; a Literal counts as the type of its values."""
    if _choices(annotation):
        (kind,) = {type(v) for v in _choices(annotation)}
        return kind
    return _without_none(annotation)


def _ml_field(cls: type, name: str):
    return next(f for f in fields(cls) if f.name == name)


def _steps(info: FieldInfo):
    """(next value up, next value down) for the setting's number type."""
    if _base_type(info.annotation) is int:
        return (lambda v: v + 1), (lambda v: v - 1)
    return (lambda v: math.nextafter(v, math.inf)), (lambda v: math.nextafter(v, -math.inf))


TEXT_EXAMPLES = {
    "generation.base_url": "http://127.0.0.1:8001/v1",
    "generation.remote_model": "served-model",
    "generation.api_key_env": "RANKLAB_GENERATION_API_KEY_TEAM",
}
"""A value the web accepts for each free-text setting (probed as typed)."""


def _context(path: str, value: Any) -> dict[str, Any]:
    """Other settings a probe needs so the cross-field rule minibatch_size ≤ batch_size holds."""
    if path == "ppo.minibatch_size":
        return {"batch_size": max(value, PPOSettings().batch_size)}
    if path == "ppo.batch_size":
        return {"minibatch_size": 1}
    if path == "rloo.minibatch_size":  # a group of k ≥ 2 per prompt: prompts_per_step × k ≥ value
        return {"prompts_per_step": max(value, 1)}
    if path in ("rloo.prompts_per_step", "rloo.k"):
        return {"minibatch_size": 1}
    if path == "generation.backend" and value == "openai":  # the endpoint must be named
        return {"base_url": TEXT_EXAMPLES["generation.base_url"], "remote_model": "served-model"}
    return {}


def _stored_round_config(path: str, value: Any) -> dict[str, Any]:
    """A round config with one setting changed, as the web stores it (launch_round)."""
    raw: dict[str, Any] = {"k": 4}
    if "." in path:
        section, leaf = path.split(".")
        raw[section] = {leaf: value, **_context(path, value)}
    else:
        raw[path] = value
    return RoundConfigIn.model_validate(raw).model_dump(mode="json")


def _loop_configs(stored: dict[str, Any]) -> dict[type, Any]:
    """What the worker builds from a stored config (batch 0 of round 0: no seed offset)."""
    return {
        GenerationConfig: generation_config(stored, batch=0, number=0),
        RewardConfig: reward_config(stored, backbone="backbone", round_id=1),
        PPOConfig: ppo_config(stored, model="policy"),
        DPOConfig: dpo_config(stored, model="policy", round_id=1),
        KTOConfig: kto_config(stored, model="policy", round_id=1),
        # A round of K = 1 (a Likert project may show one completion) cannot launch RLOO with the
        # round's K as its group (app/rounds/service.py refuses it); the probe gives it 2.
        RLOOConfig: rloo_config({**stored, "k": max(stored["k"], 2)}, model="policy", estimator="rloo"),
    }


def _inside(path: str, info: FieldInfo) -> list[Any]:
    """The extreme values the web accepts (every choice, for a choice), and a large value
    where the web sets no upper bound."""
    if _choices(info.annotation):
        return list(_choices(info.annotation))
    if _base_type(info.annotation) is str:
        return [info.default, TEXT_EXAMPLES[path]]
    bounds = _bounds(info)
    step_up, step_down = _steps(info)
    values = []
    if "ge" in bounds:
        values.append(bounds["ge"])
    if "gt" in bounds:
        values.append(step_up(bounds["gt"]))
    if "le" in bounds:
        values.append(bounds["le"])
    if "lt" in bounds:
        values.append(step_down(bounds["lt"]))
    if "le" not in bounds and "lt" not in bounds:
        values.append(_base_type(info.annotation)(10**6))
    return values


def _outside(info: FieldInfo) -> list[tuple[str, Any]]:
    """(bound, a value just past it) for each web bound."""
    step_up, step_down = _steps(info)
    past = {"ge": step_down, "gt": lambda v: v, "le": step_up, "lt": lambda v: v}
    side = {"ge": "ge", "gt": "ge", "le": "le", "lt": "le"}
    return [(side[kind], past[kind](bound)) for kind, bound in _bounds(info).items()]


def test_every_setting_of_a_round_is_covered_here():
    assert set(RoundConfigIn.model_fields) == set(SECTIONS) | set(TOP_LEVEL) | NOT_ML


@pytest.mark.parametrize(("path", "info", "targets"), SETTINGS, ids=IDS)
def test_each_setting_names_a_dataclass_field_of_the_same_type(path, info, targets):
    for cls in targets:
        names = {f.name for f in fields(cls)}
        assert _leaf(path) in names, f"{path}: {cls.__name__} has no field {_leaf(path)!r} (or list it in LOOP_ONLY)"
        ml_type = typing.get_type_hints(cls)[_leaf(path)]
        assert _base_type(info.annotation) is _base_type(ml_type), f"{path}: {info.annotation} vs {ml_type}"


def test_loop_only_settings_are_not_dataclass_fields():
    for path in LOOP_ONLY:
        section, leaf = path.split(".")
        schema, cls = SECTIONS[section]
        assert leaf in schema.model_fields and leaf not in {f.name for f in fields(cls)}, path


@pytest.mark.parametrize(("path", "info", "targets"), SETTINGS, ids=IDS)
def test_defaults_agree(path, info, targets):
    if path in DEFAULT_DIFFERS:
        return
    for cls in targets:
        ml = _ml_field(cls, _leaf(path))
        default = ml.default if ml.default is not MISSING else ml.default_factory()
        assert info.default == default, f"{path}: the web says {info.default!r}, {cls.__name__} says {default!r}"


@pytest.mark.parametrize(("path", "info", "targets"), SETTINGS, ids=IDS)
def test_every_value_the_web_accepts_reaches_the_dataclass_unchanged(path, info, targets):
    for value in _inside(path, info):
        built = _loop_configs(_stored_round_config(path, value))
        for cls in targets:
            assert getattr(built[cls], _leaf(path)) == value, f"{path}={value!r} did not reach {cls.__name__}"


@pytest.mark.parametrize(("path", "info", "targets"), SETTINGS, ids=IDS)
def test_the_dataclass_refuses_what_the_web_refuses(path, info, targets):
    for side, value in _outside(info):
        for cls in targets:
            values = {_leaf(path): value, **_context(path, value)}
            if (path, side) in WEB_ONLY_LIMITS:
                cls(**values)  # accepted: otherwise the bounds agree, so drop it from WEB_ONLY_LIMITS
                continue
            with pytest.raises(ValueError, match=f"^{_leaf(path)}:"):
                cls(**values)


@pytest.mark.parametrize(("path", "info", "targets"), SETTINGS, ids=IDS)
def test_choices_agree(path, info, targets):
    if not _choices(info.annotation):
        assert path not in ML_CHOICES
        return
    assert set(_choices(info.annotation)) == set(ML_CHOICES[path]), path
    for cls in targets:
        with pytest.raises(ValueError, match=f"^{_leaf(path)}:"):
            cls(**{_leaf(path): "not-a-choice"})


def test_ppo_rolls_out_like_the_completions_the_reward_model_was_trained_on():
    """PPO's rollouts are scored by a reward model trained on the round's generated completions:
    by default they share the length budget and the sampling, and nothing punishes length."""
    stored = RoundConfigIn.model_validate({"k": 4}).model_dump(mode="json")
    gen, ppo = _loop_configs(stored)[GenerationConfig], _loop_configs(stored)[PPOConfig]
    assert (ppo.max_new_tokens, ppo.temperature) == (gen.max_new_tokens, gen.temperature)
    assert gen.top_p == 1.0  # PPO samples without top-p (its logprobs must be the sampling ones)
    assert ppo.missing_eos_penalty == 0.0

    # A round that changes the generation settings changes PPO's with them ...
    changed = RoundConfigIn.model_validate({"k": 4, "generation": {"max_new_tokens": 100, "temperature": 1.0}})
    ppo = _loop_configs(changed.model_dump(mode="json"))[PPOConfig]
    assert (ppo.max_new_tokens, ppo.temperature) == (100, 1.0)
    # ... unless PPO's are set on purpose.
    changed = RoundConfigIn.model_validate({"k": 4, "ppo": {"max_new_tokens": 16, "temperature": 0.5}})
    ppo = _loop_configs(changed.model_dump(mode="json"))[PPOConfig]
    assert (ppo.max_new_tokens, ppo.temperature) == (16, 0.5)


def test_the_optimizer_choices_are_the_loops_policy_steps():
    (choices,) = [typing.get_args(RoundConfigIn.model_fields["optimizer"].annotation)]
    assert set(choices) == set(OPTIMIZERS)


def test_rloo_samples_like_the_generation_and_groups_by_the_rounds_k():
    stored = RoundConfigIn.model_validate({"k": 5}).model_dump(mode="json")
    gen, rloo = _loop_configs(stored)[GenerationConfig], _loop_configs(stored)[RLOOConfig]
    assert (rloo.max_new_tokens, rloo.temperature, rloo.k) == (gen.max_new_tokens, gen.temperature, 5)
    assert rloo_config(stored, model="policy", estimator="grpo").estimator == "grpo"
