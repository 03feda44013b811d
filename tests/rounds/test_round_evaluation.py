"""The round page's Evaluation panel: the eval metrics per version, the length-controlled win
rate with its interval, the charts across rounds, sample pairs shown as untrusted text, and the
skipped state. (The worker that writes these summaries: tests/loop/test_evaluation_step.py.)"""

from __future__ import annotations

import re

from app.models import TrainingRound
from tests.admin.helpers import admin_client
from tests.factories import make_project
from tests.rounds.helpers import make_round, make_version

HX = {"HX-Request": "true"}
SCRIPT = "<script>alert('x')</script>"


def _metrics(roles, score, tokens, kl, **extra):
    return {
        "roles": roles,
        "name": "v",
        "prompts": 4,
        "rm_score": score,
        "rm_score_sd": 0.25,
        "own_rm_score": None,
        "mean_tokens": tokens,
        "eos_share": 0.5,
        "distinct_1": 0.8,
        "distinct_2": 0.9,
        "kl_to_reference": kl,
        **extra,
    }


def _summary(base_id: int, new_id: int, *, lc: float) -> dict:
    versus = {
        "prompts": 4,
        "win_rate": 0.75,
        "win_rate_ci": [0.25, 1.0],
        "lc_win_rate": lc,
        "lc_win_rate_ci": [0.1, 0.9],
        "length_coef": 1.0,
        "ties": 0,
    }
    sample = {
        "prompt_id": 1,
        "prompt": f"say {SCRIPT}",
        "previous": f"old {SCRIPT}",
        "previous_score": -0.5,
        "new": "**new** answer",
        "new_score": 0.75,
    }
    return {
        "reward_model_id": new_id + 1,
        "prompts": 4,
        "seed": 1234,
        "versions": {"base": base_id, "previous": base_id, "new": new_id},
        "by_role": {
            "base": _metrics(["base", "previous"], -0.5, 12.0, 0.0),
            "previous": _metrics(["base", "previous"], -0.5, 12.0, 0.0),
            "new": _metrics(["new"], 0.25, 20.5, 1.234, lc_win_rate_vs_previous=versus, samples=[sample]),
        },
    }


def test_the_panel_shows_metrics_win_rates_charts_and_safe_samples(client, db):
    admin_client(client, db)
    project = make_project(db)
    base = make_version(db, project, kind="base")
    first = make_round(db, project, number=0, status="done")
    policy0 = make_version(db, project, parent=base, training_round=first)
    first.metrics = {"evaluation": _summary(base.id, policy0.id, lc=0.4)}
    second = make_round(db, project, number=1, status="generating_next")
    policy1 = make_version(db, project, parent=policy0, training_round=second)
    second.metrics = {"evaluation": _summary(policy0.id, policy1.id, lc=0.625)}
    db.commit()

    html = client.get(f"/admin/rounds/{second.id}", headers=HX).text
    panel = re.search(r'<section class="card" id="evaluation">.*?</section>', html, re.S).group(0)
    # one column per distinct version (base = previous here), one row per metric
    assert re.findall(r'<th scope="col"><a href="/admin/models/(\d+)">', panel) == [str(policy0.id), str(policy1.id)]
    assert re.findall(r'data-metric="rm_score">([^<]+)', panel) == ["-0.500 ", "+0.250 "]
    assert re.findall(r'data-metric="mean_tokens">([^<]+)', panel) == ["12.0", "20.5"]
    assert re.findall(r'data-metric="eos_share">([^<]+)', panel) == ["50%", "50%"]
    assert re.findall(r'data-metric="kl_to_reference">([^<]+)', panel) == ["0.000", "1.234"]
    assert re.findall(r'data-metric="own_rm_score">([^<]+)', panel) == ["—", "—"]
    win = re.search(r'data-lc-vs="previous policy">(.*?)</p>', panel, re.S).group(1)
    assert "<strong>62%</strong> length-controlled" in win and "10–90%" in win and "raw 75%" in win
    # across rounds: round 0's 40% and round 1's 62.5%
    chart = re.search(r"LC reward win rate vs previous.*?</figure>", panel, re.S).group(0)
    assert "round 1 · 0.625" in chart and len(re.search(r'points="([^"]+)"', chart).group(1).split()) == 2
    assert "Eval answer length" in panel
    # untrusted text is escaped, never markup; the answer's markdown is rendered
    assert SCRIPT not in html and "&lt;script&gt;" in panel
    assert "<strong>new</strong> answer" in panel


def test_the_panel_says_why_a_round_was_not_evaluated(client, db):
    admin_client(client, db)
    project = make_project(db)
    waiting = make_round(db, project, number=0, status="training_policy")
    html = client.get(f"/admin/rounds/{waiting.id}", headers=HX).text
    assert "After PPO the new policy answers the project’s eval prompts" in html
    skipped = make_round(db, project, number=1, status="generating_next")
    skipped.metrics = {"evaluation": {"skipped": "no eval set: skipped (hold out eval prompts to get eval metrics)"}}
    db.commit()
    html = client.get(f"/admin/rounds/{skipped.id}", headers=HX).text
    assert re.search(r"data-eval-skipped>no eval set: skipped", html)
    assert db.get(TrainingRound, skipped.id).status == "generating_next"
