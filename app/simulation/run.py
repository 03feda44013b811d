"""`ranklab simulate`: the whole loop with a scripted labeling team, end to end over HTTP.

It bootstraps a fresh data dir with one project per (seed, variant), starts `ranklab serve`
(web + embedded worker) as a subprocess, and for each project: uploads training prompts and an
eval split, launches round 0, and then for every round the team labels it through the labeling
API, the admin (this script) starts training, and the next round appears from the new policy.
After the last round the admin launches a blind evaluation of the last policy against the base
over REST and the team judges it like any labeler. Variants: "none" (the real run), "shuffled"
(the team submits random rankings: the reward model learns noise) and "zero_reward" (PPO with
`ppo.reward_source = "zero"`: only the KL term moves the policy); "ai_labels" (RLAIF: the
project's AI judge labels the training rounds, app/simulation/ai_labels.py) runs when named, e.g.
`--control none,ai_labels`. `--optimizer ppo,dpo,rloo`
runs every seed and variant once per policy step named (the round config's `optimizer`), on the
same prompts, team and reward-model settings, so the optimizers compare side by side. This
process never imports torch: all model work happens in the server's worker.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.settings import Settings
from app.simulation.ai_labels import AI_LABELS, judged_record, prepare_ai_labelled
from app.simulation.gold import control_table
from app.simulation.noise import POSITION_LOGIT, TARGET_AGREEMENT
from app.simulation.report import CONTROLS, OPTIMIZERS, VARIANTS, EvalSet, Human, Report
from app.simulation.server import Admin, Server, eval_answers, free_port, setup
from app.simulation.summary import summary
from app.simulation.tasks import all_prompts, draw_prompts
from app.simulation.team import RoundRecord, Team

EVAL_SEED = 1234
"""Sampling seed of the eval answers (the round config's evaluation.seed): the human evaluation
reuses the answers the metrics step generated, if it ran."""
SAMPLES_PER_STEP = 8
"""Answers per iteration of the sampling optimizers: PPO's batch_size, RLOO/GRPO's
prompts_per_step × k (8 // k prompts), so each sees as many samples per step."""


@dataclass
class Options:
    rounds: int = 2
    """Training rounds; the report covers rounds 0..rounds (the last one is generated, not trained)."""
    prompts: int = 12
    eval_prompts: int = 24
    k: int = 4
    labelers: int = 3
    overlap: int = 2
    max_new_tokens: int = 40
    temperature: float = 1.0
    """Sampling temperature of the labeled completions and of PPO's rollouts alike."""
    ppo_steps: int = 6
    ppo_lr: float = 1e-4
    kl_coef: float = 0.05
    optimizer: str = "ppo"
    """Policy steps to compare, comma-separated (ppo, dpo, rloo, grpo): each runs every seed and
    variant. RLOO and GRPO take --ppo-steps, --ppo-lr and --kl-coef and as many samples per step
    as PPO; DPO trains on the rankings with --dpo-lr for --dpo-epochs."""
    dpo_lr: float = 1e-4
    dpo_epochs: int = 3
    rm_lr: float = 5e-4
    rm_batch: int = 4
    model: str = ""
    """Empty: the bundled SmolLM2-135M-Instruct."""
    judge_model: str = ""
    """The judge of the ai_labels variant (a local_pointwise judge); empty: the bundled model."""
    data_dir: Path | None = None
    port: int = 0
    seeds: str = "0"
    control: str = "none"
    controls: bool = False
    human_eval: bool = True
    final_round: bool = True
    """Generate and label one more round from the last policy (its row in the report); without it
    the last policy is measured on the eval split only, which saves a generation per run."""
    eval_metrics: bool = False
    torch_threads: int = 0
    """Threads for the worker's torch (OMP_NUM_THREADS); 0 = torch's default (all cores)."""
    target_agreement: float = TARGET_AGREEMENT
    position_logit: float = POSITION_LOGIT
    timeout_minutes: float = 60.0
    gold_controls: bool = False


def seeds_of(o: Options) -> list[int]:
    try:
        seeds = [int(s) for s in o.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds: {o.seeds!r} is not a comma-separated list of integers") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError("--seeds: give one or more distinct integers, e.g. 0,1,2")
    return seeds


def variants_of(o: Options) -> tuple[str, ...]:
    if o.controls:
        return CONTROLS
    names = tuple(name.strip() for name in o.control.split(",") if name.strip())
    if not names or len(set(names)) != len(names) or not set(names) <= set(VARIANTS):
        raise ValueError(f"--control: distinct names from {', '.join(VARIANTS)}, comma-separated (got {o.control!r})")
    return names


def optimizers_of(o: Options) -> list[str]:
    names = [name.strip() for name in o.optimizer.split(",") if name.strip()]
    unknown = [name for name in names if name not in OPTIMIZERS]
    if unknown or not names or len(set(names)) != len(names):
        known = ", ".join(OPTIMIZERS)
        raise ValueError(f"--optimizer: distinct names from {known}, comma-separated (got {o.optimizer!r})")
    return names


def runs_of(o: Options) -> list[tuple[int, str, str]]:
    """(seed, optimizer, variant) in the order they run: seed by seed, so a run cut short by the
    time limit leaves every optimizer with the same seeds done. DPO has no zero-reward control."""
    seeds, optimizers, variants = seeds_of(o), optimizers_of(o), variants_of(o)
    runs = [
        (seed, optimizer, variant)
        for seed in seeds
        for optimizer in optimizers
        for variant in variants
        if not (optimizer == "dpo" and variant == "zero_reward")
    ]
    if not runs:
        raise ValueError("--control zero_reward: DPO trains on the rankings and has no reward to zero")
    return runs


def policy_section(o: Options, optimizer: str, variant: str) -> dict[str, Any]:
    """The round config's settings for its policy step, small enough for a CPU."""
    reward_source = "zero" if variant == "zero_reward" else "reward_model"
    if optimizer == "dpo":
        return {"dpo": {"learning_rate": o.dpo_lr, "epochs": o.dpo_epochs, "batch_rankings": 4, "max_length": 256}}
    if optimizer in ("rloo", "grpo"):
        per_step = max(1, SAMPLES_PER_STEP // o.k)
        return {
            "rloo": {
                "steps": o.ppo_steps,
                "prompts_per_step": per_step,
                "minibatch_size": per_step * o.k,
                "learning_rate": o.ppo_lr,
                "kl_coef": o.kl_coef,
                "missing_eos_penalty": 0.0,
                "reward_source": reward_source,
            }
        }
    return {
        "ppo": {
            "steps": o.ppo_steps,
            "batch_size": SAMPLES_PER_STEP,
            "minibatch_size": 4,
            "ppo_epochs": 4,
            "learning_rate": o.ppo_lr,
            "kl_coef": o.kl_coef,
            # No bonus for ending: whatever PPO gains must come from the learned reward model.
            "missing_eos_penalty": 0.0,
            "reward_source": reward_source,
        }
    }


def round_config(o: Options, *, seed: int = 0, variant: str = "none", optimizer: str = "ppo") -> dict[str, Any]:
    return {
        "model": o.model,
        "k": o.k,
        "seed": seed,
        "optimizer": optimizer,
        "prompts": {"count": o.prompts, "validation_fraction": 0.25},
        # Sampled as a real round samples: no top-p (PPO samples without it), and PPO's rollouts
        # take generation's budget and temperature, so the reward model scores answers drawn the
        # way the ones it learned from were.
        "generation": {"max_new_tokens": o.max_new_tokens, "temperature": o.temperature, "prompts_per_task": 4},
        "reward": {"learning_rate": o.rm_lr, "batch_rankings": o.rm_batch, "max_length": 256, "epochs": 1},
        **policy_section(o, optimizer, variant),
        "labeling": (
            {"source": "judge", "judge_rounds": o.rounds}
            if variant == AI_LABELS
            else {"min_coverage": 1.0, "auto_start": False}
        ),
        "evaluation": {
            "metrics": o.eval_metrics,
            "max_prompts": o.eval_prompts,
            "seed": EVAL_SEED,
            "human": False,
        },
    }


def prompts(o: Options, seed: int) -> list[dict[str, str]]:
    """The eval split (the same for every seed, as a project's fixed eval set) and this seed's
    training prompts, disjoint from it."""
    evals = draw_prompts(o.eval_prompts, seed=10_000)
    needed = o.prompts * (o.rounds + (1 if o.final_round else 0))
    if needed + len(evals) > len(all_prompts()):
        raise ValueError(
            f"--prompts × (--rounds + 1) + --eval-prompts = {needed + len(evals)}; "
            f"the templates make {len(all_prompts())}"
        )
    train = draw_prompts(needed, seed=seed, exclude=set(evals))
    return [{"external_id": f"eval-{i}", "text": t, "split": "eval"} for i, t in enumerate(evals)] + [
        {"external_id": f"sim-{i}", "text": t} for i, t in enumerate(train)
    ]


def controls_text(o: Options) -> str:
    lines = [f"gold of fixed answers on all {len(all_prompts())} template prompts (mean, max):"]
    lines += [f"  {name:<30} {avg:+.2f}  {best:+.2f}" for name, avg, best in control_table(all_prompts())]
    return "\n".join(lines)


def simulate(o: Options, out=print) -> list[Report]:
    started = time.monotonic()
    deadline = started + o.timeout_minutes * 60
    runs = runs_of(o)
    data_dir = o.data_dir or Path(tempfile.mkdtemp(prefix="ranklab-simulate-"))
    settings = Settings(data_dir=data_dir, database_url="", broker_url="", port=o.port or free_port(), _env_file=None)
    out(controls_text(o))
    out(f"data dir {data_dir}; server log {data_dir / 'server.log'}")
    names = [f"simulation seed {seed} {opt} {variant} {time.strftime('%H:%M:%S')}" for seed, opt, variant in runs]
    token, project_ids, accounts = setup(settings, projects=names, k=o.k, overlap=o.overlap, labelers=o.labelers)
    server = Server(settings, o.torch_threads)
    reports: list[Report] = []
    try:
        server.wait_ready()
        admin = Admin(server.url, token, out)
        for (seed, optimizer, variant), project_id in zip(runs, project_ids, strict=True):
            if time.monotonic() > deadline:
                out(f"== seed {seed}, {optimizer}, variant {variant}: not run, --timeout-minutes reached")
                continue
            out(f"== seed {seed}, {optimizer}, variant {variant} (project {project_id})")
            run_started = time.monotonic()
            report = Report(o.target_agreement, seed=seed, variant=variant, optimizer=optimizer)
            reports.append(report)
            try:
                _run_one(admin, settings, server.url, accounts, project_id, o, report, deadline, out)
            except RuntimeError as exc:  # a failed round or the time limit: keep what it measured
                report.error = str(exc)
                out(f"    seed {seed}, {optimizer}, variant {variant} stopped: {exc}")
            report.minutes = (time.monotonic() - run_started) / 60
            if report.rows:
                out(report.table())
    finally:
        server.stop()
    out(summary(reports))
    out(f"{(time.monotonic() - started) / 60:.1f} minutes in all")
    return reports


def _run_one(
    admin: Admin,
    settings: Settings,
    url: str,
    accounts: list[tuple[str, str]],
    project_id: int,
    o: Options,
    report: Report,
    deadline: float,
    out,
) -> None:
    seed, variant = report.seed, report.variant
    admin.call("POST", f"/api/v1/projects/{project_id}/prompts", json={"prompts": prompts(o, seed)})
    by_judge = variant == AI_LABELS
    if by_judge:
        prepare_ai_labelled(admin, project_id, model_path=o.judge_model)
    team = Team(
        url,
        accounts,
        seed=seed,
        target=o.target_agreement,
        shuffled=variant == "shuffled",
        position_logit=o.position_logit,
    )
    try:
        config = round_config(o, seed=seed, variant=variant, optimizer=report.optimizer)
        current = admin.call("POST", f"/api/v1/projects/{project_id}/rounds", json=config)
        judged: set[int] = set()
        for number in range(o.rounds + (1 if o.final_round else 0)):
            if by_judge and number < o.rounds:  # the judge labels, then training starts by itself
                finished = admin.wait(current["id"], ("done",), deadline)
                record = judged_record(admin, project_id, judged)
                agree, pairs = record.gold_agreement()
                out(
                    f"    round {number}: the judge ranked {len(record.orders)} tasks, "
                    f"{agree:.1%} of {pairs} pairs as gold orders them"
                )
            else:
                current = admin.wait(current["id"], ("labeling",), deadline)
                record = team.label(project_id)
                rankings = sum(len(v) for v in record.orders.values())
                out(f"    round {number}: labeled {rankings} rankings (σ = {team.sigma:.3f})")
                if number == o.rounds:
                    report.add(number, current, record)
                    break
                admin.call("POST", f"/api/v1/rounds/{current['id']}/start", json={})
                finished = admin.wait(current["id"], ("done",), deadline)
            report.add(number, finished, record)
            out(report.line(number))
            nxt = admin.round_by_number(project_id, number + 1)
            if nxt is None and number + 1 == o.rounds and not o.final_round:
                break
            if nxt is None:
                raise RuntimeError(f"round {number} finished without a next round (no unused prompts?)")
            current = nxt
        if o.human_eval and report.base_id is not None and report.last_policy_id is not None:
            report.human = _evaluate(admin, team, project_id, report, o, deadline, out)
            answers = eval_answers(
                settings, project_id=project_id, version_ids=[report.last_policy_id, report.base_id], seed=EVAL_SEED
            )
            report.eval = EvalSet.of(answers[report.last_policy_id], answers[report.base_id])
            if report.eval is not None:
                out("    " + report.eval.text())
    finally:
        team.close()


def _evaluate(admin: Admin, team: Team, project_id: int, report: Report, o: Options, deadline: float, out) -> Human:
    """Launch the blind evaluation of the last policy vs the base, let the team judge every task,
    and read the win rate back from the product."""
    last, base = report.last_policy_id, report.base_id
    launched = admin.call(
        "POST",
        f"/api/v1/projects/{project_id}/evaluations",
        json={"version_ids": [last, base], "prompts": o.eval_prompts, "seed": EVAL_SEED},
    )
    out(f"    evaluation {launched['id']}: policy {last} vs base {base} on {o.eval_prompts} eval prompts")
    admin.wait_evaluation(launched["id"], ("labeling", "done"), deadline)
    record = team.label(project_id, RoundRecord())
    data = admin.wait_evaluation(launched["id"], ("done", "labeling"), deadline)
    human = read_win_rate(data, winner=last, loser=base)
    report.verdicts = record.verdicts
    human.judgments = human.judgments or len(record.verdicts)
    out(f"    evaluation {launched['id']}: {len(record.verdicts)} judgments submitted")
    return human


def read_win_rate(data: dict, *, winner: int | None, loser: int | None) -> Human:
    """`winner`'s win rate over `loser` from GET /api/v1/evaluations/{id}: ties (and both bad)
    count half, with the product's 95% interval."""
    for pair in (data.get("results") or {}).get("comparisons") or []:
        if {pair["a"], pair["b"]} != {winner, loser}:
            continue
        split = pair["split"]
        rate, low, high = split["rate"], split["low"], split["high"]
        if pair["a"] != winner and rate is not None:
            rate, low, high = 1 - rate, (None if high is None else 1 - high), (None if low is None else 1 - low)
        return Human(data["id"], rate, low, high, int(pair["n"]), pair)
    return Human(data["id"], None, None, None, 0, data.get("results") or {})
