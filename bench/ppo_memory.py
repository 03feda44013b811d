"""Peak memory and samples/s of one PPO step: our shared-backbone LoRA layout vs four models.

    .venv/bin/python bench/ppo_memory.py            # SmolLM2-135M (converted under data/)
    .venv/bin/python bench/ppo_memory.py --tiny     # tiny random Llama, seconds

Variants, each in a FRESH subprocess (peak RSS is per process and never goes down):
  shared         ranklab: ONE policy backbone with LoRA; reference = adapter disabled; value =
                 scalar head on the policy trunk (value_mode "shared"); + the frozen reward model.
  shared-value   the same with value_mode "adapter" (a second LoRA adapter + head for value).
  four-models    the OpenRLHF layout: policy, reference, value (critic) and reward as four
                 separate full models; policy and value fully fine-tuned (AdamW state for both).
  four-lora      four separate models, but policy and value trained through LoRA only, to show
                 how much of the saving is the sharing and how much is LoRA.
All variants see the same prompts, sampling settings, reward model and PPO hyper-parameters; the
reward model is the base with a fresh score head (what it scores does not change the memory).
Memory: peak RSS (resource.getrusage maxrss) on CPU - it includes the Python and torch runtime
(docs/benchmarks.md, "PPO", caveats), and weights count once a step has touched them
(safetensors are memory-mapped); torch.cuda.max_memory_allocated on CUDA. samples/s: responses
per second over the timed steps (the first step is a warm-up).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("shared", "shared-value", "four-models", "four-lora")
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


def peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reward_scorer(model_dir: str, device):
    """A frozen sequence-classification reward model on the same base (random score head)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from worker.ml.models import load_tokenizer, pick_dtype
    from worker.ml.scorer import RewardScorer

    tokenizer = load_tokenizer(model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=pick_dtype(device))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.requires_grad_(False)
    return RewardScorer(model.to(device), tokenizer, device=device)


def run_variant(args) -> dict:
    """Build one layout, run `args.steps` PPO steps, report memory and speed (child process)."""
    import torch

    from bench.ppo_four_models import FourModels, four_models_step
    from worker.ml.ppo import PPOConfig, ppo_step
    from worker.ml.ppo_math import FixedKLController
    from worker.ml.ppo_policy import build_policy

    device = torch.device(args.device)
    cfg = PPOConfig(
        model=args.model,
        batch_size=args.batch_size,
        minibatch_size=args.minibatch_size,
        ppo_epochs=args.ppo_epochs,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
        value_mode="adapter" if args.variant == "shared-value" else "shared",
    )
    torch.manual_seed(0)
    scorer = reward_scorer(args.model, device)
    kl_ctl = FixedKLController(cfg.kl_coef)
    if args.variant.startswith("shared"):
        policy, tokenizer = build_policy(cfg, device)
        optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.learning_rate, eps=1e-5)
        trainable = sum(p.numel() for p in policy.trainable_parameters())

        def step(prompts):
            return ppo_step(policy, tokenizer, optimizer, kl_ctl, scorer.score, prompts, cfg)
    else:
        models = FourModels.load(cfg, device, lora=args.variant == "four-lora")
        trainable = models.trainable_count()

        def step(prompts):
            return four_models_step(models, kl_ctl, scorer.score, prompts, cfg)

    prompts = (PROMPTS * (args.batch_size // len(PROMPTS) + 1))[: args.batch_size]
    step(prompts)  # warm-up: allocator pools, optimizer state, one-off kernel choices
    started, rollout_seconds = time.perf_counter(), 0.0
    for _ in range(args.steps - 1):
        stats = step(prompts)
        rollout_seconds += stats["rollout_seconds"]
    seconds = time.perf_counter() - started
    timed = args.steps - 1
    return {
        "variant": args.variant,
        "peak_mb": peak_memory_mb(device),
        "samples_per_s": timed * args.batch_size / seconds,
        "step_s": seconds / timed,
        "rollout_s": rollout_seconds / timed,
        "trainable_params": trainable,
        "response_tokens": stats["response_length"],
    }


def ensure_model(args) -> str:
    if args.tiny:
        from worker.ml.tiny import save_tiny_model

        folder = Path(tempfile.mkdtemp(prefix="ppo-bench-tiny-"))
        save_tiny_model(folder)
        return str(folder)
    if args.model:
        return args.model
    from worker.ml.models import convert_default_model

    return str(convert_default_model(ROOT / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: converted SmolLM2)")
    parser.add_argument("--tiny", action="store_true", help="use a tiny random Llama instead")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--minibatch-size", type=int, default=4)
    parser.add_argument("--ppo-epochs", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="PPO steps, the first one untimed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # set in the child process
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is a warm-up)")
    if args.variant:
        print(json.dumps(run_variant(args)))
        return

    model = ensure_model(args)
    common = [
        "--model",
        model,
        "--batch-size",
        str(args.batch_size),
        "--minibatch-size",
        str(args.minibatch_size),
        "--ppo-epochs",
        str(args.ppo_epochs),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--steps",
        str(args.steps),
        "--device",
        args.device,
    ]
    results = []
    for variant in args.variants:
        out = subprocess.run(
            [sys.executable, __file__, "--variant", variant, *common], capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            sys.exit(f"{variant} failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {variant}: done", file=sys.stderr, flush=True)

    base = next((r for r in results if r["variant"] == "four-models"), results[-1])
    print(
        f"model={model} device={args.device} batch={args.batch_size} "
        f"minibatch={args.minibatch_size} epochs={args.ppo_epochs} "
        f"max_new_tokens={args.max_new_tokens} timed_steps={args.steps - 1}"
    )
    print(
        f"{'variant':<14}{'peak MB':>10}{'x base':>8}{'samples/s':>11}"
        f"{'x base':>8}{'s/step':>8}{'rollout s':>11}{'update s':>10}{'trainable':>13}"
    )
    for r in results:
        print(
            f"{r['variant']:<14}{r['peak_mb']:>10.0f}{r['peak_mb'] / base['peak_mb']:>8.2f}"
            f"{r['samples_per_s']:>11.2f}"
            f"{r['samples_per_s'] / base['samples_per_s']:>8.2f}{r['step_s']:>8.1f}"
            f"{r['rollout_s']:>11.1f}{r['step_s'] - r['rollout_s']:>10.1f}"
            f"{r['trainable_params']:>13,}"
        )


if __name__ == "__main__":
    main()
