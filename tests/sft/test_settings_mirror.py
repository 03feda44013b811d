"""SFTSettings (app/sft/schemas.py, what the web accepts without importing torch) restates
worker.ml's SFTConfig; these tests keep the two in step, as tests/loop/test_configs.py does for
the round settings: same names and defaults, the same choices, every value the web accepts builds
an SFTConfig through the loop's mapping (worker/loop/sft.py sft_config) unchanged, and just past
each web bound SFTConfig refuses too, unless the bound is a cap only the web sets."""

from __future__ import annotations

import typing
from dataclasses import MISSING, fields

import pytest
from annotated_types import Ge, Gt, Le, Lt

from app.sft.schemas import SFTSettings
from worker.loop.sft import sft_config
from worker.ml.config import LR_SCHEDULES
from worker.ml.sft_config import PEFT_METHODS, SFT_MODES, SFTConfig

CHOICES = {"mode": SFT_MODES, "peft_method": PEFT_METHODS, "lr_schedule": LR_SCHEDULES}
WEB_ONLY_LIMITS = {
    ("lora_alpha", "le"),
    ("weight_decay", "le"),
    ("grad_clip", "le"),
    ("batch_tokens", "le"),
    ("seed", "ge"),
    ("seed", "le"),
}
"""Caps the form sets where SFTConfig takes any value (sane budgets, a seed that fits int32)."""
NOT_ON_THE_WEB = {"model", "target_modules", "padding_free", "device", "autocast", "extra"}
"""SFTConfig fields the loop sets itself (model, extra) or leaves at their defaults."""


def _defaults() -> dict[str, object]:
    found = {}
    for f in fields(SFTConfig):
        found[f.name] = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
    return found


def test_every_setting_is_an_sft_config_field_with_its_default():
    defaults = _defaults()
    assert set(SFTSettings.model_fields) | NOT_ON_THE_WEB == set(defaults)
    for name, info in SFTSettings.model_fields.items():
        assert info.default == defaults[name], name
        if name in CHOICES:
            assert set(typing.get_args(info.annotation)) == set(CHOICES[name]), name


def _bounds(info) -> list[tuple[str, float]]:
    found = []
    for item in info.metadata:
        for kind in ("ge", "gt", "le", "lt"):
            if isinstance(item, (Ge, Gt, Le, Lt)) and hasattr(item, kind):
                found.append((kind, getattr(item, kind)))
    return found


@pytest.mark.parametrize("name", [n for n in SFTSettings.model_fields if n not in CHOICES])
def test_the_web_bounds_are_the_dataclass_bounds(name):
    info = SFTSettings.model_fields[name]
    step = 1 if info.annotation is int else 1e-9
    for kind, bound in _bounds(info):
        inside = bound if kind in ("ge", "le") else bound + step if kind == "gt" else bound - step
        outside = bound - step if kind in ("ge", "gt") else bound + step
        cfg = sft_config(SFTSettings(**{name: inside}).model_dump(), model="m", job_id=1)
        assert getattr(cfg, name) == inside, name  # accepted by both, arriving unchanged
        if (name, kind) in WEB_ONLY_LIMITS:
            continue
        with pytest.raises(ValueError, match=name):
            sft_config({**SFTSettings().model_dump(), name: outside}, model="m", job_id=1)


def test_choices_the_web_accepts_build_a_config():
    for mode in SFT_MODES:
        for method in PEFT_METHODS:
            if method == "qlora" or (mode == "full" and method != "lora"):
                continue  # QLoRA needs CUDA; full + adapter is refused by both (tests/sft/test_api.py)
            cfg = sft_config(SFTSettings(mode=mode, peft_method=method).model_dump(), model="m", job_id=1)
            assert (cfg.mode, cfg.peft_method, cfg.extra) == (mode, method, {"job_id": 1})
