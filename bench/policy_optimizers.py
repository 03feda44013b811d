"""PPO vs RLOO vs GRPO vs DPO at library level: peak memory and seconds per step, same inputs.

    nice -n 5 .venv/bin/python bench/policy_optimizers.py --json out.json  # SmolLM2-135M, 3 seeds
    nice -n 5 .venv/bin/python bench/policy_optimizers.py --seeds 0 --steps 2 --tiny   # smoke test

The same comparison judged by the simulated team's gold and blind win rate (end to end):

    ranklab simulate --optimizer ppo,dpo,rloo --seeds 0,1,2 --rounds 1 --prompts 8 --overlap 3 \
      --eval-prompts 12 --max-new-tokens 32 --ppo-steps 3 --no-final-round --torch-threads 1

What is compared: one run of each policy step of a round (worker.ml.ppo.train_policy,
worker.ml.rloo.train_rloo with estimator "rloo" and "grpo", worker.ml.dpo.train_dpo), each in a
FRESH subprocess (peak RSS is per process and never goes down), seed by seed so a busy machine
slows every method alike.

Held the same (the fairness):
  model      SmolLM2-135M-Instruct converted under data/ (convert_default_model), LoRA r 16 on
             every method, one torch thread, the worker's default precision (autocast as configured).
  prompts    the same 8 short instructions (PROMPTS) for the sampling methods.
  sampling   max_new_tokens and temperature (1.0) alike; 8 answers per step for each:
             PPO batch_size 8 (minibatch 4, 4 PPO epochs: its default update scheme),
             RLOO/GRPO prompts_per_step 2 × k 4 (one update epoch, one minibatch: their default).
  reward     ONE reward model trained once (worker.ml.reward.train_reward, LoRA, 1 epoch) on
             worker.ml.synthetic.quality_rankings (k 4; it learns that "great/good/thanks" beat
             "bad/poor/not"), loaded frozen by PPO, RLOO and GRPO alike.
  DPO        rankings of the same size per step: 2 rankings × 4 completions = 8 answers per step,
             synthetic completions on the same 8 prompts; its reference log-probs are computed
             once before the loop (as train_dpo does), so its steps carry no reference pass.
  lr, beta   1e-4 and KL/beta 0.05 for the sampling methods, DPO beta 0.1 lr 1e-4: NOT swept,
             so the score figures say nothing about which learns best.
Measured per run: peak RSS of the child (resource.getrusage ru_maxrss: weights, activations,
optimizer state and the Python/torch runtime), seconds per step (wall and this process's CPU)
over steps 2..N (step 1 is a warm-up; N = --steps, 3), and for the sampling methods the reward model's mean
score on step 1 and on step N - the reward-model score they optimise and can game, not proof of
quality (the simulation's gold and simulated-human win rate judge that: docs/simulation.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("ppo", "rloo", "rloo_mb4", "grpo", "dpo")
# rloo_mb4: RLOO with PPO's minibatch of 4 (two backward passes per step instead of one), to
# tell how much of RLOO's higher peak comes from back-propagating 8 answers at once
LABELS = {"rloo_mb4": "RLOO, minibatch 4"}
PROMPTS = [
    "Name three colours.",
    "Say hello to a friend.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Give me a tip for sleeping well.",
    "Explain what a cat is to a child.",
    "List two fruits.",
    "Why is the sky blue?",
]
ANSWERS_PER_STEP = 8
K = 4
LR = 1e-4


def synthetic_rankings(n: int, seed: int):
    """quality_rankings (k 4) with their prompts replaced by the bench's prompts."""
    from worker.ml.data import Ranking
    from worker.ml.synthetic import quality_rankings

    rankings = quality_rankings(n, K, seed=seed)
    return [
        Ranking(prompt=PROMPTS[i % len(PROMPTS)], completions=r.completions, groups=r.groups, prompt_id=f"b{seed}-{i}")
        for i, r in enumerate(rankings)
    ]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux keeps that across
    fork + exec, so a child would report its parent's peak if that were larger."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB on most


def prepare(model: str, work: Path) -> None:
    """Train the one reward model every sampling method uses (once per bench run, in a child
    process too, so this parent stays small)."""
    import torch

    from worker.ml.config import RewardConfig
    from worker.ml.reward import train_reward

    torch.set_num_threads(1)
    out = work / "reward"
    cfg = RewardConfig(model=model, epochs=1, batch_rankings=8, max_length=64, val_fraction=0.2, seed=0)
    metrics = train_reward(cfg, synthetic_rankings(64, seed=100), out)
    print(f"reward model: held-out accuracy {metrics.get('val_accuracy')}, {out}", flush=True)


def child(method: str, seed: int, model: str, reward: str, steps: int, max_new_tokens: int, work: Path) -> dict:
    """One training run in this (fresh) process; the figures as a dict."""
    import torch

    torch.set_num_threads(1)
    marks: list[tuple[float, float]] = []

    def on_step(_step: int, stats: dict) -> None:
        if method != "dpo" or "loss" in stats:  # DPO also reports held-out metrics per epoch
            marks.append((time.perf_counter(), time.process_time()))

    out = work / f"{method}-{seed}"
    result: dict = {"method": method, "seed": seed}
    if method == "ppo":
        from worker.ml.ppo import train_policy
        from worker.ml.ppo_config import PPOConfig

        ppo = PPOConfig(
            model=model, steps=steps, batch_size=ANSWERS_PER_STEP, minibatch_size=4, ppo_epochs=4,
            max_new_tokens=max_new_tokens, temperature=1.0, learning_rate=LR, kl_coef=0.05, seed=seed,
        )  # fmt: skip
        history = train_policy(ppo, PROMPTS, reward, out, on_step=on_step)
    elif method in ("rloo", "rloo_mb4", "grpo"):
        from worker.ml.rloo import train_rloo
        from worker.ml.rloo_config import RLOOConfig

        rloo = RLOOConfig(
            model=model, estimator=method.removesuffix("_mb4"), steps=steps, prompts_per_step=ANSWERS_PER_STEP // K,
            k=K, minibatch_size=4 if method == "rloo_mb4" else ANSWERS_PER_STEP, max_new_tokens=max_new_tokens,
            temperature=1.0, learning_rate=LR, kl_coef=0.05, seed=seed,
        )  # fmt: skip
        history = train_rloo(rloo, PROMPTS, reward, out, on_step=on_step)
    else:
        from worker.ml.dpo import train_dpo
        from worker.ml.dpo_config import DPOConfig

        per_step = ANSWERS_PER_STEP // K
        dpo = DPOConfig(
            model=model, batch_rankings=per_step, epochs=1, learning_rate=LR, max_length=96, val_fraction=0.0,
            seed=seed,
        )  # fmt: skip
        train = synthetic_rankings(per_step * steps, seed=seed)
        metrics = train_dpo(dpo, train, out, on_step=on_step, held_out=synthetic_rankings(8, seed=1000 + seed))
        result.update(val_accuracy_before=metrics.get("val_accuracy_before"), val_accuracy=metrics.get("val_accuracy"))
        history = {}
    if history.get("score"):
        result.update(score_first=history["score"][0], score_last=history["score"][-1])
    walls = [b[0] - a[0] for a, b in zip(marks, marks[1:], strict=False)]
    cpus = [b[1] - a[1] for a, b in zip(marks, marks[1:], strict=False)]
    result.update(
        steps=len(marks),
        wall_per_step=statistics.mean(walls) if walls else None,
        cpu_per_step=statistics.mean(cpus) if cpus else None,
        peak_rss_mb=peak_rss_mb(),
    )
    return result


def run_child(method: str, seed: int, args: argparse.Namespace, reward: Path, work: Path) -> dict:
    command = [sys.executable, __file__, "--child", method, "--seed", str(seed), "--model", args.model]
    command += ["--reward", str(reward), "--steps", str(args.steps), "--max-new-tokens", str(args.max_new_tokens)]
    command += ["--work", str(work)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mean_sd(values: list) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "—"
    sd = statistics.stdev(got) if len(got) > 1 else 0.0
    return f"{statistics.mean(got):.2f} ± {sd:.2f}"


def table(results: list[dict]) -> str:
    lines = [
        "| method | runs | peak RSS MB | wall s/step | CPU s/step | RM score step 1 → N | DPO held-out acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        runs = [r for r in results if r["method"] == method]
        if not runs:
            continue
        score = (
            f"{mean_sd([r.get('score_first') for r in runs])} → {mean_sd([r.get('score_last') for r in runs])}"
            if method != "dpo"
            else "—"
        )
        before, after = ([r.get(key) for r in runs] for key in ("val_accuracy_before", "val_accuracy"))
        acc = f"{mean_sd(before)} → {mean_sd(after)}" if method == "dpo" else "—"
        lines.append(
            f"| {LABELS.get(method, method.upper())} | {len(runs)} | {mean_sd([r['peak_rss_mb'] for r in runs])} | "
            f"{mean_sd([r['wall_per_step'] for r in runs])} | {mean_sd([r['cpu_per_step'] for r in runs])} | "
            f"{score} | {acc} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=3, help="steps per run (step 1 is a warm-up)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--tiny", action="store_true", help="a tiny random Llama instead of SmolLM2 (smoke test)")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument("--model", default="")
    parser.add_argument("--child", choices=(*METHODS, "reward"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--reward", default="", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "reward":
        prepare(args.model, args.work)
        return
    if args.child:
        result = child(args.child, args.seed, args.model, args.reward, args.steps, args.max_new_tokens, args.work)
        print(json.dumps(result), flush=True)
        return

    # This parent never imports torch: each child's peak memory is its own.
    work = Path(tempfile.mkdtemp(prefix="bench-policy-optimizers-"))
    if not args.model:
        args.model = str(work / "tiny") if args.tiny else str(ROOT / "data" / "models" / "SmolLM2-135M-Instruct")
        setup = (
            f"from worker.ml.tiny import save_tiny_model; save_tiny_model({args.model!r})"
            if args.tiny
            else "from pathlib import Path; from worker.ml.models import convert_default_model; "
            f"convert_default_model(Path({str(ROOT / 'data')!r}))"
        )
        subprocess.run([sys.executable, "-c", setup], cwd=ROOT, check=True)
    started = time.perf_counter()
    reward = work / "reward"
    subprocess.run(
        [sys.executable, __file__, "--child", "reward", "--model", args.model, "--work", str(work)], check=True
    )
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for method in args.methods.split(","):
            result = run_child(method, seed, args, reward, work)
            print(json.dumps(result), flush=True)
            results.append(result)
    print(f"\n{args.model}; {args.steps} steps; {args.max_new_tokens} new tokens; seeds {args.seeds}; one thread")
    print(table(results))
    print(f"{(time.perf_counter() - started) / 60:.1f} minutes in all; load average {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
