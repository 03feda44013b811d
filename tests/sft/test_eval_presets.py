"""The evaluation presets of issue 13: "SFT vs base" and "policy vs SFT" are listed with the pair
they compare, and "sft" as an opponent is the SFT model a policy's rounds started from."""

from __future__ import annotations

import pytest

from app.evaluation import choices
from tests.factories import make_project
from tests.rounds.helpers import make_version


def test_sft_presets_are_listed_with_their_pairs(db):
    project = make_project(db)
    assert [(p.name, p.label, p.comparisons) for p in choices.named_presets(db, project_id=project.id)] == [
        ("sft_vs_base", "SFT vs base", []),
        ("policy_vs_sft", "policy vs SFT", []),
    ]
    with pytest.raises(choices.EvaluationError, match="SFT vs base: the project has no sft model"):
        choices.named_preset_comparisons(db, project_id=project.id, name="sft_vs_base")

    base = make_version(db, project, kind="base")
    sft = make_version(db, project, kind="sft", parent=base)
    policy = make_version(db, project, kind="policy", parent=sft)
    newer_policy = make_version(db, project, kind="policy", parent=policy)
    make_version(db, project, kind="sft", parent=base, name="a later SFT the policy never saw")
    presets = {p.name: p.comparisons for p in choices.named_presets(db, project_id=project.id)}
    latest_sft = max(v.id for v in choices.evaluable_versions(db, project_id=project.id) if v.kind == "sft")
    assert presets["sft_vs_base"] == [[latest_sft, base.id]]
    # The policy is judged against the SFT model its lineage started from, not the project's latest.
    assert presets["policy_vs_sft"] == [[newer_policy.id, sft.id]]
    assert choices.named_preset_comparisons(db, project_id=project.id, name="policy_vs_sft") == [
        [newer_policy.id, sft.id]
    ]
    with pytest.raises(choices.EvaluationError, match="unknown preset"):
        choices.named_preset_comparisons(db, project_id=project.id, name="dpo_vs_sft")


def test_a_policy_without_sft_in_its_lineage_has_no_policy_vs_sft(db):
    project = make_project(db)
    base = make_version(db, project, kind="base")
    make_version(db, project, kind="sft", parent=base)
    make_version(db, project, kind="policy", parent=base)
    presets = {p.name: p.comparisons for p in choices.named_presets(db, project_id=project.id)}
    assert presets["policy_vs_sft"] == []
