"""`ranklab simulate`: the noise model's maths, and a one-round run end to end with a tiny model
(a real `ranklab serve` with its embedded worker, labelers over HTTP)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from app.rounds.schemas import RoundConfigIn
from app.settings import ROOT
from app.simulation.gold import agreement_with_gold, expected_agreement, gold_reward, pairwise_agreement, solve_sigma
from app.simulation.run import Options, round_config, simulate
from worker.loop.configs import generation_config, ppo_config


def test_gold_prefers_short_finished_answers():
    assert gold_reward("Bees make honey.") == 1.0 - 0.04 * 3
    assert gold_reward("Bees make honey and") == -0.04 * 4
    assert gold_reward('He said "stop."') == 1.0 - 0.04 * 3  # a closing quote after the full stop
    assert gold_reward("") == 0.0


def test_sigma_is_solved_for_the_target_agreement_and_the_simulated_team_reaches_it():
    rng = random.Random(0)
    gold = [rng.gauss(0, 1) for _ in range(4000)]
    gaps = [gold[i] - gold[i + 1] for i in range(0, len(gold), 2)]
    sigma = solve_sigma(gaps, 0.726)
    assert abs(expected_agreement(gaps, sigma) - 0.726) < 1e-6
    # Two labelers perceiving gold + N(0, σ) agree on that share of pairs.
    agree = sum(
        (a - b + rng.gauss(0, sigma) - rng.gauss(0, sigma) > 0)
        == (a - b + rng.gauss(0, sigma) - rng.gauss(0, sigma) > 0)
        for a, b in zip(gold[::2], gold[1::2], strict=True)
    )
    assert abs(agree / len(gaps) - 0.726) < 0.03
    assert solve_sigma([0.0] * 10, 0.726) == 1e-4  # all ties: 50% is the most anyone can agree


def test_agreement_counts():
    assert pairwise_agreement([1, 2, 3], [1, 2, 3]) == (3, 3)
    assert pairwise_agreement([1, 2, 3], [3, 2, 1]) == (0, 3)
    assert agreement_with_gold([1, 2, 3], {1: 1.0, 2: 1.0, 3: 0.0}) == (2.5, 3)


def _processes_using(data_dir: Path) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"RANKLAB_DATA_DIR={data_dir}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def test_the_simulated_rounds_sample_rollouts_like_the_ranked_completions():
    """The simulation sampled labeled completions with top-p 0.95 and PPO without it, so its
    reward model scored rollouts drawn otherwise than the answers it learned from."""
    stored = RoundConfigIn.model_validate(round_config(Options())).model_dump(mode="json")
    gen, ppo = generation_config(stored, batch=0, number=0), ppo_config(stored, model="m")
    assert gen.top_p == 1.0
    assert (ppo.max_new_tokens, ppo.temperature) == (gen.max_new_tokens, gen.temperature) == (48, 1.0)


def test_one_simulated_round_end_to_end_with_a_tiny_model(tiny_model_dir, tmp_path):
    data_dir = tmp_path / "sim"
    lines: list[str] = []
    report = simulate(
        Options(
            rounds=1,
            prompts=4,
            labelers=3,
            max_new_tokens=8,
            ppo_steps=1,
            rm_batch=2,
            model=str(tiny_model_dir),
            data_dir=data_dir,
            torch_threads=1,
            timeout_minutes=5,
        ),
        out=lines.append,
    )
    assert [row.number for row in report.rows] == [0, 1]
    first, second = report.rows
    assert first.agreement_pairs == 4 * 6  # 4 tasks × 2 labelers' orders compared on 6 pairs each
    assert first.rm_accuracy is not None and 0.0 <= first.ceiling <= 1.0
    assert first.kl is None and second.kl is not None  # the base, then round 0's policy
    assert sum(len(orders) for orders in report.records[0].orders.values()) == 8  # overlap 2 × 4 tasks
    assert {len(orders) for orders in report.records[0].orders.values()} == {2}  # two distinct labelers each
    assert any("gold reward round 0 → 1" in line for line in lines)
    assert _processes_using(data_dir) == []  # the server stopped its embedded worker too


def test_the_web_app_and_the_simulation_never_import_torch():
    code = (
        "import sys; from app.main import create_app; import app.simulation.run, app.simulation.cli; "
        "create_app(); print(sorted(m for m in ('torch', 'transformers', 'worker.tasks') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
