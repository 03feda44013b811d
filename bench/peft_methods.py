"""PEFT methods side by side on the bundled model: trainable parameters, tokens/s, peak memory
and held-out loss for LoRA, DoRA, IA3 and prompt tuning beside full fine-tuning.

Every method trains the same demonstrations (bench/sft_common.py) with worker/ml/sft.py, the
same epochs, tokens per step, schedule and precision, each run in its own process; each method
gets its own small learning-rate grid (their good rates differ by 100x: full fine-tuning wants
~5e-5, soft prompts ~1e-2) and the table shows its best rate by held-out loss. Prompt tuning pads
its batches (peft puts the soft prompt before each row), the others are packed. The seed's claim
to check: full > LoRA > soft prompts in quality, the reverse in cost.

tokens/s: real tokens per second inside the training steps; peak memory: the run's process peak
RSS (model loading included); held-out loss: mean cross-entropy per answer token on held-out
prompts after the last epoch.

  .venv/bin/python bench/peft_methods.py --tiny          # plumbing, seconds
  .venv/bin/python bench/peft_methods.py --threads 1     # SmolLM2-135M
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ holds sft_common
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for worker.ml
from sft_common import demonstrations, mean_sd, peak_rss_mb, run_isolated  # noqa: E402

GRIDS = {
    "full": "2e-5,5e-5,1e-4",
    "lora": "2e-4,5e-4,1e-3",
    "dora": "2e-4,5e-4,1e-3",
    "ia3": "1e-3,3e-3,1e-2",
    "prompt_tuning": "3e-3,1e-2,3e-2",
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)  # one run, in a child process
    p.add_argument("--tiny", action="store_true", help="tiny random-weight Llama instead of SmolLM2")
    p.add_argument("--model", default=None, help="model folder (default: the converted bundled SmolLM2)")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where SmolLM2 is converted")
    p.add_argument("--methods", default=",".join(GRIDS), help="comma-separated, of " + ", ".join(GRIDS))
    for method, grid in GRIDS.items():
        p.add_argument(f"--lrs-{method.replace('_', '-')}", default=grid, help=f"{method}'s learning rates")
    p.add_argument("--train", type=int, default=96)
    p.add_argument("--held", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seeds", default="0")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--batch-tokens", type=int, default=2048)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--num-virtual-tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-autocast", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args()


def child(job: dict[str, Any]) -> None:
    from worker.ml.sft import SFTConfig, train_sft

    torch.set_num_threads(job["threads"])
    data = json.loads(Path(job["data"]).read_text())
    method = job["method"]
    cfg = SFTConfig(
        model=job["model"],
        mode="full" if method == "full" else "lora",
        peft_method="lora" if method == "full" else method,
        num_virtual_tokens=job["num_virtual_tokens"],
        learning_rate=job["lr"],
        epochs=job["epochs"],
        batch_tokens=job["batch_tokens"],
        max_length=job["max_length"],
        seed=job["seed"],
        autocast=job["autocast"],
    )
    m = train_sft(cfg, data["train"], Path(job["out"]), eval_data=data["held"])
    print(
        json.dumps(
            {
                "trainable": m["trainable_params"],
                "total": m["total_params"],
                "tokens_per_s": m["tokens_per_s"],
                "train_s": m["train_seconds"],
                "batching": m["batching"],
                "held_out_loss": m["eval_loss"][-1],
                "peak_rss_mb": round(peak_rss_mb(), 1),
            }
        )
    )


def main() -> None:
    args = parse_args()
    if args.job:
        child(json.loads(args.job))
        return
    from worker.ml.models import convert_default_model
    from worker.ml.tiny import DEFAULT_WORDS, save_tiny_model

    work = Path(tempfile.mkdtemp(prefix="peft-bench-"))
    if args.tiny:
        model_path = str(work / "tiny")
        save_tiny_model(model_path)
        every = demonstrations(args.train + args.held, args.data_seed, tuple(DEFAULT_WORDS))
    else:
        model_path = args.model or str(convert_default_model(args.data_dir))
        every = demonstrations(args.train + args.held, args.data_seed)
    (work / "data.json").write_text(json.dumps({"train": every[: args.train], "held": every[args.train :]}))
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"model={'tiny' if args.tiny else model_path} train={args.train} held={args.held} epochs={args.epochs} "
        f"batch_tokens={args.batch_tokens} threads={args.threads} seeds={seeds}"
    )
    print(f"{'method':14} {'lr':>7} {'seed':>4} {'trainable':>11} {'tokens/s':>9} {'peak MB':>8} {'held-out':>8}")
    runs = []
    for method in methods:
        for lr in [float(x) for x in getattr(args, f"lrs_{method}").split(",")]:
            for seed in seeds:
                job = {
                    "method": method, "lr": lr, "seed": seed, "model": model_path, "data": str(work / "data.json"),
                    "epochs": args.epochs, "batch_tokens": args.batch_tokens, "max_length": args.max_length,
                    "num_virtual_tokens": args.num_virtual_tokens, "threads": args.threads,
                    "autocast": not args.no_autocast, "out": str(work / f"{method}-{lr}-{seed}"),
                }  # fmt: skip
                r = {"method": method, "lr": lr, "seed": seed, **run_isolated(__file__, job)}
                runs.append(r)
                print(
                    f"{method:14} {lr:7.0e} {seed:4d} {r['trainable']:11,d} {r['tokens_per_s']:9.1f} "
                    f"{r['peak_rss_mb']:8.0f} {r['held_out_loss']:8.4f}",
                    flush=True,
                )
    print("\nper method at its best learning rate (by mean held-out loss over seeds)")
    print(
        "| method | best lr | trainable params | % of model | tokens/s | peak RSS MB | held-out loss | batching |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for method in methods:
        by_lr: dict[float, list[dict]] = {}
        for r in runs:
            if r["method"] == method:
                by_lr.setdefault(r["lr"], []).append(r)
        lr, rs = min(by_lr.items(), key=lambda item: statistics.mean(r["held_out_loss"] for r in item[1]))
        print(
            f"| {method} | {lr:g} | {rs[0]['trainable']:,} | {100 * rs[0]['trainable'] / rs[0]['total']:.3g}% | "
            f"{mean_sd([r['tokens_per_s'] for r in rs])} | {mean_sd([r['peak_rss_mb'] for r in rs], 0)} | "
            f"{mean_sd([r['held_out_loss'] for r in rs], 4)} | {rs[0]['batching']} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
