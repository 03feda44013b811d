"""`ranklab simulate`: the gold preference (content first, length a minor bounded term, no fixed
answer near the top), the structured labelers (own weights, position bias, noise solved for
InstructGPT's agreement), and one simulated round per variant end to end with a tiny model (a real
`ranklab serve` with its embedded worker, labelers over HTTP, the controls wired)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from app.rounds.schemas import RoundConfigIn
from app.settings import ROOT
from app.simulation.gold import CONTROLS, WEIGHTS, control_table, gold_reward, length_controlled, length_term, parts
from app.simulation.noise import Profile, agreement_with_gold, expected_agreement, pairwise_agreement, solve_sigma
from app.simulation.run import Options, prompts, round_config, runs_of, simulate
from app.simulation.tasks import all_prompts, correctness, parse, reference
from worker.loop.configs import dpo_config, generation_config, ppo_config, rloo_config


def test_every_template_prompt_parses_back_and_its_reference_answer_is_right():
    tasks = [parse(p) for p in all_prompts()]
    assert len(tasks) > 200 and len({t.prompt for t in tasks}) == len(tasks)
    assert {t.family for t in tasks} == {"arithmetic", "capital", "yes_no", "list", "open"}
    for task in tasks:
        assert correctness(task, reference(task)) == 1.0, task.prompt
        assert parts(task, reference(task))["finished"] == 1.0
    assert parse("Write a haiku.").family == "other"


@pytest.mark.parametrize(
    ("prompt", "answer", "right"),
    [
        ("What is 7 plus 5?", "7 plus 5 is 12.", 1.0),
        ("What is 7 plus 5?", "The answer is twelve.", 1.0),
        ("What is 7 plus 5?", "It is 13.", 0.0),
        ("What is 7 plus 5?", "It is 12 or maybe 13.", 0.0),  # hedging never pays
        ("What is the capital of France?", "Paris is the capital.", 1.0),
        ("What is the capital of France?", "Paris, or maybe Rome.", 0.0),
        ("What is the capital of India?", "It is Delhi.", 1.0),
        ("Answer yes or no: Can dogs fly?", "No, dogs cannot fly.", 1.0),
        ("Answer yes or no: Can dogs fly?", "Yes or no: can dogs fly?", 0.0),
        ("Answer yes or no: Is the sun a star?", "Yes.", 1.0),
        ("Name three fruits.", "Apples, bananas and pears.", 1.0),
        ("Name three fruits.", "Apples, apple and apples.", 1 / 3),  # one fruit, named three times
        ("Name three fruits.", "Apple pear plum kiwi mango cherry lemon.", 0.5),
        ("Tell me about honey bees.", "They live in a hive and collect pollen and nectar.", 1.0),
        ("Tell me about honey bees.", "Honey bees are bees.", 0.0),  # the prompt's own words are no facts
    ],
)
def test_correctness_is_checked_against_the_known_answer(prompt, answer, right):
    assert correctness(parse(prompt), answer) == pytest.approx(right)


def test_length_is_a_minor_bounded_term():
    assert all(0.0 <= length_term(n) <= 0.25 for n in range(0, 1000))
    assert length_term(0) == length_term(160) == length_term(1000) == 0.0
    assert length_term(5) == 0.125 and length_term(10) == length_term(80) == 0.25
    prompt = "What is the capital of France?"
    short = "Paris."
    good = "The capital of France is Paris."
    padded = good + " " + " ".join(["Paris is a city."] * 30)
    assert abs(gold_reward(prompt, short) - gold_reward(prompt, good)) < 0.75  # length moves it little
    assert gold_reward(prompt, padded) < gold_reward(prompt, good) - 0.5  # repetition costs, length never pays
    values = parts(prompt, good)
    assert length_controlled(values) == pytest.approx(gold_reward(prompt, good) - values["length"])
    assert WEIGHTS["correct"] >= 4 * max(abs(length_term(n)) for n in range(1000))


@pytest.mark.parametrize("control", list(CONTROLS))
def test_no_fixed_answer_comes_near_a_good_one(control):
    """The shortest answer, the longest (filler or the prompt repeated to the cap) and fixed
    templates each score clearly below the reference answers, on average and on every prompt."""
    table = {name: (avg, best) for name, avg, best in control_table(all_prompts())}
    reference_mean = table.pop("reference answer")[0]
    assert reference_mean > 3.0 and set(table) == set(CONTROLS)
    assert table[control][0] < reference_mean - 2.0
    make = CONTROLS[control]
    for prompt in all_prompts():
        task = parse(prompt)
        assert gold_reward(task, make(task, 48)) < gold_reward(task, reference(task)) - 0.5, prompt


def test_the_shortest_answer_scores_nothing():
    assert gold_reward("What is 7 plus 5?", "") == 0.0
    assert max(gold_reward(p, "") for p in all_prompts()) == 0.0


def _candidate_pairs(n: int, rng: random.Random) -> list[tuple[dict, dict]]:
    """Pairs of answers to one prompt, as varied as real completions: right, wrong, cut off,
    echoing, filler."""
    pairs = []
    tasks = [parse(p) for p in all_prompts()]
    for _ in range(n):
        task = rng.choice(tasks)
        ref = reference(task)
        answers = [
            ref,
            ref[: len(ref) // 2],
            ref.replace("1", "7").replace("Paris", "Rome").replace("yes", "no"),
            task.prompt,
            *(make(task, 30) for make in CONTROLS.values()),
        ]
        a, b = rng.sample(answers, 2)
        pairs.append((parts(task, a), parts(task, b)))
    return pairs


def _measured_agreement(profiles, pairs, sigma, rng, k: int = 2) -> float:
    """Two labelers (drawn from `profiles`) each see the pair in their own random order among
    k − 2 other positions, and pick by perception; the share of pairs they order alike."""
    agree = 0
    for x, y in pairs:
        first, second = rng.sample(profiles, 2)
        picks = []
        for profile in (first, second):
            positions = rng.sample(range(k), 2)
            utilities = [0.0] * k
            utilities[positions[0]], utilities[positions[1]] = profile.utility(x), profile.utility(y)
            seen = profile.perceive(utilities, sigma, rng)
            picks.append(seen[positions[0]] > seen[positions[1]])
        agree += picks[0] == picks[1]
    return agree / len(pairs)


@pytest.mark.parametrize("k", [2, 4])
def test_structured_labelers_agree_at_the_target_rate(k):
    rng = random.Random(0)
    profiles = [Profile.draw(rng) for _ in range(3)]
    assert len({round(p.weights["correct"], 6) for p in profiles}) == 3  # each weighs gold's parts its own way
    pairs = _candidate_pairs(3000, rng)
    gaps = [[p.utility(x) - p.utility(y) for p in profiles] for x, y in pairs]
    sigma = solve_sigma(gaps, profiles, 0.726)
    assert abs(expected_agreement(gaps[-1200:], profiles, sigma) - 0.726) < 1e-3
    assert abs(_measured_agreement(profiles, pairs, sigma, rng, k) - 0.726) < 0.03
    assert solve_sigma([[0.0, 0.0, 0.0]] * 10, profiles, 0.726) == 1e-3  # all ties: 50% is all anyone can agree


def test_position_bias_shows_when_gold_is_tied():
    rng = random.Random(1)
    profile = Profile.draw(rng, position_logit=0.2)
    trials = 20000
    first = sum(a > b for a, b in (profile.perceive([1.0, 1.0], 0.8, rng) for _ in range(trials)))
    assert abs(first / trials - 0.55) < 0.015  # sigmoid(0.2) = 0.550
    unbiased = Profile.draw(rng, position_logit=0.0)
    first = sum(a > b for a, b in (unbiased.perceive([1.0, 1.0], 0.8, rng) for _ in range(trials)))
    assert abs(first / trials - 0.5) < 0.015
    # Among four tied items the first shown is ranked first most often, the last least.
    tops = [0] * 4
    for _ in range(trials):
        seen = profile.perceive([1.0] * 4, 0.8, rng)
        tops[seen.index(max(seen))] += 1
    assert tops[0] > tops[1] > tops[3] and tops[0] / trials > 0.27


def test_agreement_counts():
    assert pairwise_agreement([1, 2, 3], [1, 2, 3]) == (3, 3)
    assert pairwise_agreement([1, 2, 3], [3, 2, 1]) == (0, 3)
    assert agreement_with_gold([1, 2, 3], {1: 1.0, 2: 1.0, 3: 0.0}) == (2.5, 3)


def test_the_simulated_rounds_sample_rollouts_like_the_ranked_completions_and_controls_configure():
    """The simulation sampled labeled completions with top-p 0.95 and PPO without it, so its
    reward model scored rollouts drawn otherwise than the answers it learned from."""
    stored = RoundConfigIn.model_validate(round_config(Options())).model_dump(mode="json")
    gen, ppo = generation_config(stored, batch=0, number=0), ppo_config(stored, model="m")
    assert gen.top_p == 1.0
    assert (ppo.max_new_tokens, ppo.temperature) == (gen.max_new_tokens, gen.temperature) == (40, 1.0)
    assert ppo.reward_source == "reward_model"
    zero = RoundConfigIn.model_validate(round_config(Options(), variant="zero_reward")).model_dump(mode="json")
    assert ppo_config(zero, model="m").reward_source == "zero"


def test_each_optimizer_gets_its_own_section_and_the_sampling_ones_as_many_samples_per_step():
    o = Options(optimizer="ppo,dpo,rloo,grpo", ppo_steps=3, ppo_lr=2e-4, kl_coef=0.1, dpo_lr=3e-5, dpo_epochs=2)

    def stored(optimizer: str, variant: str = "none") -> dict:
        config = round_config(o, variant=variant, optimizer=optimizer)
        return RoundConfigIn.model_validate(config).model_dump(mode="json")

    ppo = ppo_config(stored("ppo"), model="m")
    for estimator in ("rloo", "grpo"):
        config = stored(estimator)
        assert config["optimizer"] == estimator
        rloo = rloo_config(config, model="m", estimator=estimator)
        assert rloo.prompts_per_step * rloo.k == ppo.batch_size == 8
        assert (rloo.steps, rloo.learning_rate, rloo.kl_coef) == (ppo.steps, ppo.learning_rate, ppo.kl_coef)
        assert (rloo.max_new_tokens, rloo.temperature) == (ppo.max_new_tokens, ppo.temperature)
        assert rloo_config(stored(estimator, "zero_reward"), model="m", estimator=estimator).reward_source == "zero"
    dpo = dpo_config(stored("dpo"), model="m", round_id=1)
    assert (dpo.learning_rate, dpo.epochs) == (3e-5, 2)
    runs = runs_of(Options(optimizer="ppo,dpo", seeds="0,1", controls=True))
    assert runs[:5] == [(0, "ppo", v) for v in ("none", "shuffled", "zero_reward")] + [
        (0, "dpo", "none"),
        (0, "dpo", "shuffled"),
    ]  # seed by seed; DPO has no reward to zero
    assert len(runs) == 10
    with pytest.raises(ValueError, match="--optimizer"):
        runs_of(Options(optimizer="ppo,sgd"))


def test_the_eval_split_is_fixed_and_never_a_training_prompt():
    o = Options(rounds=2, prompts=12, eval_prompts=24)
    first, second = prompts(o, 0), prompts(o, 1)
    evals = [p["text"] for p in first if p.get("split") == "eval"]
    assert len(evals) == 24 and evals == [p["text"] for p in second if p.get("split") == "eval"]
    train = [p["text"] for p in first if "split" not in p]
    assert len(train) == 36 and not set(train) & set(evals)
    assert train != [p["text"] for p in second if "split" not in p]  # the seed draws the training prompts


VERDICTS = {"A", "B", "tie", "both_bad"}


def _processes_using(data_dir: Path) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"RANKLAB_DATA_DIR={data_dir}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def test_one_simulated_round_per_variant_end_to_end_with_a_tiny_model(tiny_model_dir, tmp_path):
    data_dir = tmp_path / "sim"
    lines: list[str] = []
    reports = simulate(
        Options(
            rounds=1,
            prompts=8,
            eval_prompts=4,
            labelers=3,
            max_new_tokens=8,
            ppo_steps=1,
            rm_batch=2,
            model=str(tiny_model_dir),
            data_dir=data_dir,
            torch_threads=1,
            timeout_minutes=8,
            controls=True,
        ),
        out=lines.append,
    )
    by_variant = {r.variant: r for r in reports}
    assert set(by_variant) == {"none", "shuffled", "zero_reward"}
    for report in reports:
        assert [row.number for row in report.rows] == [0, 1]
        first, second = report.rows
        assert first.agreement_pairs == 8 * 6  # 8 tasks × 2 labelers' orders compared on 6 pairs each
        assert first.rm_accuracy is not None and first.kl is None and second.kl is not None
        assert {len(orders) for orders in report.records[0].orders.values()} == {2}  # two labelers each
        assert first.win_vs_base == 0.5
        # The blind evaluation of the last policy vs the base, judged by the team over HTTP, and
        # both versions' eval answers scored by gold afterwards.
        assert report.human is not None and report.human.judgments == 4 * 2, report.human
        assert report.human.win_rate is not None and report.human.low is not None and report.human.high is not None
        assert report.human.low <= report.human.win_rate <= report.human.high
        assert report.eval is not None and report.eval.prompts == 4
        assert len(report.verdicts) == 4 * 2 and {v["verdict"] for v in report.verdicts} <= VERDICTS
    real, shuffled, zero = by_variant["none"], by_variant["shuffled"], by_variant["zero_reward"]
    # The shuffled control's labels carry no preference: they agree with gold at chance, and its
    # reward model's held-out accuracy is chance too (at this size, within a wide band).
    assert real.rows[0].ceiling > 0.65 and real.rows[0].ceiling > shuffled.rows[0].ceiling + 0.1
    assert 0.3 < shuffled.rows[0].ceiling < 0.7
    assert shuffled.rows[0].rm_accuracy is not None and 0.2 <= shuffled.rows[0].rm_accuracy <= 0.8
    # The zero-reward control's PPO saw a score of 0 for every response; the real run's did not.
    assert zero.rows[0].policy["score"] == zero.rows[0].policy["score_first"] == 0.0
    # ... so its policy did not move: identical eval answers, each judged a tie, a win rate of 50%.
    assert zero.eval is not None and zero.eval.gold[0] == zero.eval.gold[1]
    assert {v["verdict"] for v in zero.verdicts} == {"tie"} and zero.human is not None
    assert zero.human.win_rate == 0.5
    assert real.rows[0].policy["score"] != 0.0
    printed = "\n".join(lines)
    assert "mean ± sd over seeds 0" in printed
    assert "\n  simulated-human win rate over seeds: " in printed
    assert "\nlast policy vs base on the eval split, mean ± sd over seeds" in printed
    assert _processes_using(data_dir) == []  # the server stopped its embedded worker too


def test_a_simulated_dpo_round_labelled_by_the_ai_judge(tiny_model_dir, tmp_path):
    """Two things in one run: the DPO policy step, and the RLAIF variant (the judge labels round
    0, DPO trains on its rankings, the team labels round 1 and judges the evaluation)."""
    from tests.judges.test_judge_ml import JUDGE_WORDS
    from worker.ml.tiny import save_tiny_model

    save_tiny_model(tmp_path / "judge", words=JUDGE_WORDS)
    lines: list[str] = []
    (report,) = simulate(
        Options(
            rounds=1,
            prompts=8,
            eval_prompts=4,
            labelers=3,
            max_new_tokens=8,
            model=str(tiny_model_dir),
            data_dir=tmp_path / "sim",
            torch_threads=1,
            timeout_minutes=6,
            optimizer="dpo",
            dpo_epochs=1,
            control="ai_labels",
            judge_model=str(tmp_path / "judge"),
        ),
        out=lines.append,
    )
    assert report.error is None and (report.optimizer, report.variant) == ("dpo", "ai_labels")
    judged, measured = report.records
    # Round 0: the judge's one ranking per task (overlap 1), read back from the export; no pairs
    # of labelers to compare, and the judge's own agreement with gold in the ceiling column.
    assert {tuple(orders) for orders in judged.orders.values()} == {("judge",)} and len(judged.orders) >= 6
    assert report.rows[0].agreement_pairs == 0 and 0.0 <= report.rows[0].ceiling <= 1.0
    assert {len(orders) for orders in measured.orders.values()} == {1}  # round 1: the team, overlap 1
    assert [row.number for row in report.rows] == [0, 1]
    step = report.rows[0].policy
    assert step["optimizer"] == "dpo" and step["train_rankings"] > 0 and step["steps"] >= 1
    assert 0.0 <= step["val_accuracy"] <= 1.0 and step["seconds"] > 0
    assert "score" not in step and report.rows[1].kl is None  # no sampling, no reward-model score
    assert report.human is not None and report.human.judgments == 4  # 4 eval prompts, overlap 1
    printed = "\n".join(lines)
    assert "DPO held-out implicit-reward acc" in printed  # the round's line
    assert "the judge ranked" in printed
    assert "\nDPO, RLAIF: the AI judge labels: mean ± sd over seeds 0" in printed
    assert "\nDPO, RLAIF: the AI judge labels  " in printed.split("policy step of the last training round")[1]


def test_the_web_app_and_the_simulation_never_import_torch():
    code = (
        "import sys; from app.main import create_app; import app.simulation.run, app.simulation.cli; "
        "create_app(); print(sorted(m for m in ('torch', 'transformers', 'worker.tasks') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
