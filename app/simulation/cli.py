"""Arguments of `ranklab simulate` (wired into app/cli.py)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from app.simulation.run import Options, controls_text, simulate

HELP = {
    "rounds": "training rounds (the report covers rounds 0..N; round N is generated and labeled, not trained)",
    "prompts": "training prompts per round (a quarter held out for the reward model's validation)",
    "eval_prompts": "prompts in the eval split (never trained on); the final human evaluation uses them all",
    "k": "completions per prompt (4-9)",
    "labelers": "simulated labeler accounts",
    "overlap": "rankings per task (2+ measures agreement)",
    "max_new_tokens": "completion length cap (tokens)",
    "temperature": "sampling temperature of the labeled completions and of PPO's rollouts",
    "ppo_steps": "PPO (and RLOO/GRPO) iterations per round",
    "ppo_lr": "PPO (and RLOO/GRPO) learning rate",
    "kl_coef": "PPO (and RLOO/GRPO) KL penalty beta",
    "optimizer": "policy steps to run side by side, comma-separated: ppo, dpo, rloo, grpo (RLOO/GRPO take "
    "--ppo-steps, --ppo-lr, --kl-coef and PPO's 8 samples per step)",
    "dpo_lr": "DPO learning rate (--optimizer dpo)",
    "dpo_epochs": "DPO passes over the rankings (--optimizer dpo)",
    "rm_lr": "reward-model learning rate",
    "rm_batch": "rankings per reward-model step",
    "model": "policy to start from (folder or hub id); empty: the bundled SmolLM2-135M-Instruct",
    "judge_model": "the AI judge's model folder for --control ai_labels; empty: the bundled SmolLM2-135M-Instruct",
    "data_dir": "fresh data dir to use (default: a new temporary one)",
    "port": "web port (0: a free one)",
    "seeds": "comma-separated seeds; each runs every variant (prompts, noise and training follow the seed)",
    "control": "none (the real run), shuffled (the team submits random rankings), zero_reward (PPO, KL only) or "
    "ai_labels (RLAIF: the bundled-model judge labels the training rounds); comma-separated to run several",
    "controls": "run all three variants per seed (overrides --control)",
    "human_eval": "after the last round, launch a blind evaluation last policy vs base and let the team judge it",
    "final_round": "label one more round from the last policy (else it is measured on the eval split only)",
    "eval_metrics": "also run each round's automatic eval metrics step (costs a generation per round)",
    "torch_threads": "torch threads in the worker (0: all cores; 1 was much faster on a busy shared CPU)",
    "target_agreement": "inter-labeler agreement to tune noise to",
    "position_logit": "labelers' preference for the earlier-shown item, as a logit on a tied pair",
    "timeout_minutes": "give up after this long",
    "gold_controls": "print the gold of the reference answers and of the fixed control answers, and exit",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for f in fields(Options):
        default = f.default
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=HELP[f.name])
            continue
        kind = Path if f.name == "data_dir" else type(default) if default is not None else str
        parser.add_argument(
            flag,
            type=kind,
            default=default,
            help=HELP[f.name] + ("" if default is None else f" (default: {default!r})"),
        )


def run(args: argparse.Namespace) -> int:
    options = Options(**{f.name: getattr(args, f.name) for f in fields(Options)})
    if options.gold_controls:
        print(controls_text(options))
        return 0
    try:
        reports = simulate(options)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 1 if any(report.error for report in reports) else 0
