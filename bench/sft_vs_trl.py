"""SFT throughput: ranklab's trainer vs TRL's SFTTrainer on the same demonstrations.

Both fine-tune the same model with the same LoRA (r 16, alpha 32, no dropout, attention and MLP
projections), epochs, LR schedule (5% warmup, linear decay), AdamW, clipping at 1, precision
(fp32 weights, bf16 autocast where the CPU has it), tokens per optimizer step and machine, on
the same training demonstrations (bench/sft_common.py), each run in its own process. Both train
the answer only (TRL: completion_only_loss on the prompt/completion form of the same chats).

  ranklab      worker/ml/sft.py as shipped: whole examples packed into rows of max_length with a
               block mask, the output head run on answer positions only.
  trl          SFTTrainer at its best documented settings: packing=True with best-fit-decreasing
               rows of max_length, which turns padding_free on (positions restart per example; with
               use_cache off, as TRL sets it, transformers builds the block mask from them, so no
               example attends to another: checked on this transformers version).
  trl-padded   SFTTrainer's default batching: examples padded to the longest of their batch.

tokens/s = real tokens (prompt + answer, no padding) trained / seconds inside the training loop
(ranklab: its steps; TRL: on_train_begin to on_train_end), model loading, tokenisation and
evaluation excluded for both; tokens per CPU-second likewise (the fairer speed on a shared
machine). Held-out loss: mean cross-entropy per answer token on the same held-out prompts,
computed by the same function (worker.ml.sft.evaluate) for every model, after the last epoch.
Peak memory: the run's process peak RSS (model loading included, alike for all).

  .venv/bin/python bench/sft_vs_trl.py --tiny            # plumbing, seconds
  .venv/bin/python bench/sft_vs_trl.py --threads 1 --lrs 2e-4,5e-4 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ holds sft_common
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for worker.ml
from sft_common import demonstrations, mean_sd, peak_rss_mb, run_isolated  # noqa: E402

from worker.ml.sft_config import SFTConfig  # noqa: E402

TRAINERS = ("ranklab", "trl", "trl-padded")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)  # one run, in a child process
    p.add_argument("--tiny", action="store_true", help="tiny random-weight Llama instead of SmolLM2")
    p.add_argument("--model", default=None, help="model folder (default: the converted bundled SmolLM2)")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where SmolLM2 is converted")
    p.add_argument("--train", type=int, default=96, help="training demonstrations")
    p.add_argument("--held", type=int, default=32, help="held-out demonstrations (other prompts)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lrs", default="2e-4,5e-4", help="one learning-rate grid for every trainer")
    p.add_argument("--seeds", default="0", help="training seeds, e.g. 0,1,2")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--trainers", default=",".join(TRAINERS), help=f"comma-separated, of {TRAINERS}")
    p.add_argument("--batch-tokens", type=int, default=2048, help="tokens per optimizer step, all trainers")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-autocast", action="store_true", help="fp32 for all (default: bf16 autocast)")
    p.add_argument("--json", type=Path, default=None, help="also write the runs here")
    return p.parse_args()


def sft_config(job: dict[str, Any]) -> SFTConfig:
    return SFTConfig(
        model=job["model"],
        learning_rate=job["lr"],
        epochs=job["epochs"],
        batch_tokens=job["batch_tokens"],
        max_length=job["max_length"],
        seed=job["seed"],
        autocast=job["autocast"],
        lora_dropout=0.0,
        warmup_fraction=0.05,
        lr_schedule="linear",
        grad_clip=1.0,
    )


def held_out_loss(model, job: dict[str, Any], held: list) -> float:
    from worker.ml.models import load_tokenizer
    from worker.ml.sft import evaluate
    from worker.ml.sft_data import as_example, encode_example

    cfg = sft_config(job)
    tokenizer = load_tokenizer(job["model"], padding_side="right")
    encoded = [e for m in held if (e := encode_example(tokenizer, as_example(m), cfg.max_length))]
    return evaluate(model, encoded, cfg, tokenizer.pad_token_id, torch.device("cpu"), True, 0)


def run_ranklab(job: dict[str, Any], train: list, held: list) -> dict[str, Any]:
    from worker.ml.sft import train_sft

    metrics = train_sft(sft_config(job), train, Path(job["out"]), eval_data=held)
    return {
        "tokens_per_s": metrics["tokens_per_s"],
        "train_s": metrics["train_seconds"],
        "cpu_s": metrics["train_cpu_seconds"],
        "tokens": metrics["train_tokens"],
        "steps": metrics["steps"],
        "held_out_loss": metrics["eval_loss"][-1],
        "padding": metrics["padding_fraction"],
    }


def run_trl(job: dict[str, Any], train: list, held: list, packed: bool) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from worker.ml.lora import resolve_lora_targets
    from worker.ml.models import autocast_available, load_tokenizer

    tokenizer = load_tokenizer(job["model"], padding_side="right")  # the same distinct pad token
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.float32)
    dataset = Dataset.from_list([{"prompt": m["messages"][:-1], "completion": m["messages"][-1:]} for m in train])
    mean_len = job["mean_tokens"]
    rows = job["batch_tokens"] // job["max_length"] if packed else max(1, round(job["batch_tokens"] / mean_len))
    args = TRLSFTConfig(
        output_dir=job["out"],
        per_device_train_batch_size=rows,
        num_train_epochs=job["epochs"],
        learning_rate=job["lr"],
        lr_scheduler_type="linear",
        warmup_steps=0.05,
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=job["autocast"] and autocast_available("cpu"),
        use_cpu=True,
        gradient_checkpointing=False,  # on by default in TRL; it would only slow TRL down here
        max_length=job["max_length"],
        packing=packed,
        packing_strategy="bfd",
        completion_only_loss=True,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        logging_steps=10_000,
        seed=job["seed"],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    peft_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        target_modules=list(resolve_lora_targets(model, (), mlp=True)),  # what ranklab adapts
    )
    clock: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *_args, **_kwargs):
            clock["wall"], clock["cpu"] = time.perf_counter(), time.process_time()

        def on_train_end(self, *_args, **_kwargs):
            clock["wall"] = time.perf_counter() - clock["wall"]
            clock["cpu"] = time.process_time() - clock["cpu"]

    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[Clock()],
    )
    trainer.train()
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * job["epochs"]
    trainer.model.eval()
    return {
        "tokens_per_s": round(tokens / clock["wall"], 2),
        "train_s": round(clock["wall"], 3),
        "cpu_s": round(clock["cpu"], 3),
        "tokens": tokens,
        "steps": trainer.state.global_step,
        "held_out_loss": held_out_loss(trainer.model, job, held),
        "padding": None,
    }


def child(job: dict[str, Any]) -> None:
    torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    data = json.loads(Path(job["data"]).read_text())
    if job["trainer"] == "ranklab":
        result = run_ranklab(job, data["train"], data["held"])
    else:
        result = run_trl(job, data["train"], data["held"], packed=job["trainer"] == "trl")
    print(json.dumps({**result, "peak_rss_mb": round(peak_rss_mb(), 1)}))


def main() -> None:
    args = parse_args()
    if args.job:
        child(json.loads(args.job))
        return
    from worker.ml.models import convert_default_model, load_tokenizer
    from worker.ml.sft_data import as_example, encode_example
    from worker.ml.tiny import DEFAULT_WORDS, save_tiny_model

    work = Path(tempfile.mkdtemp(prefix="sft-bench-"))
    if args.tiny:
        model_path = str(work / "tiny")
        save_tiny_model(model_path)
        words: tuple[str, ...] = tuple(DEFAULT_WORDS)
    else:
        model_path = args.model or str(convert_default_model(args.data_dir))
        words = ()
    every = demonstrations(args.train + args.held, args.data_seed, *([words] if words else []))
    data = {"train": every[: args.train], "held": every[args.train :]}
    (work / "data.json").write_text(json.dumps(data))
    tokenizer = load_tokenizer(model_path, padding_side="right")
    lengths = [len(encode_example(tokenizer, as_example(m), args.max_length).ids) for m in data["train"]]
    lrs = [float(x) for x in args.lrs.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    trainers = [t for t in args.trainers.split(",") if t]
    print(
        f"model={'tiny' if args.tiny else model_path} train={args.train} held={args.held} epochs={args.epochs} "
        f"tokens/example: median {statistics.median(lengths):.0f}, min {min(lengths)}, max {max(lengths)}, "
        f"total {sum(lengths)}; batch_tokens={args.batch_tokens} max_length={args.max_length} "
        f"threads={args.threads} bf16={'off' if args.no_autocast else 'autocast'} lrs={lrs} seeds={seeds}"
    )
    print(f"{'trainer':11} {'lr':>7} {'seed':>4} {'tokens/s':>9} {'tok/cpu-s':>9} {'train s':>8} {'cpu s':>7} "
          f"{'steps':>5} {'tokens':>7} {'peak MB':>8} {'held-out':>8}")  # fmt: skip
    runs = []
    for i, seed in enumerate(seeds):
        for j, lr in enumerate(lrs):
            # alternate the order, so a change in machine load falls on every trainer alike
            for trainer in trainers if (i + j) % 2 == 0 else trainers[::-1]:
                job = {
                    "trainer": trainer, "lr": lr, "seed": seed, "model": model_path, "data": str(work / "data.json"),
                    "epochs": args.epochs, "batch_tokens": args.batch_tokens, "max_length": args.max_length,
                    "threads": args.threads, "autocast": not args.no_autocast,
                    "out": str(work / f"{trainer}-{lr}-{seed}"), "mean_tokens": statistics.mean(lengths),
                }  # fmt: skip
                r = {"trainer": trainer, "lr": lr, "seed": seed, **run_isolated(__file__, job)}
                runs.append(r)
                print(
                    f"{trainer:11} {lr:7.0e} {seed:4d} {r['tokens_per_s']:9.1f} {r['tokens'] / r['cpu_s']:9.1f} "
                    f"{r['train_s']:8.1f} {r['cpu_s']:7.1f} {r['steps']:5d} {r['tokens']:7d} "
                    f"{r['peak_rss_mb']:8.0f} {r['held_out_loss']:8.4f}",
                    flush=True,
                )
    summarise(runs, trainers, lrs)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}, indent=2))


def summarise(runs: list[dict], trainers: list[str], lrs: list[float]) -> None:
    print("\nmean ± sd over seeds")
    print(
        f"{'trainer':11} {'lr':>7} {'tokens/s':>16} {'tokens/cpu-s':>16} {'cpu s':>14} {'peak MB':>14} "
        f"{'held-out loss':>18}"
    )
    for trainer in trainers:
        for lr in lrs:
            rs = [r for r in runs if r["trainer"] == trainer and r["lr"] == lr]
            print(
                f"{trainer:11} {lr:7.0e} {mean_sd([r['tokens_per_s'] for r in rs]):>16} "
                f"{mean_sd([r['tokens'] / r['cpu_s'] for r in rs]):>16} "
                f"{mean_sd([r['cpu_s'] for r in rs]):>14} {mean_sd([r['peak_rss_mb'] for r in rs], 0):>14} "
                f"{mean_sd([r['held_out_loss'] for r in rs], 4):>18}"
            )
    if "ranklab" not in trainers:
        return
    for other in [t for t in trainers if t != "ranklab"]:
        for lr in lrs:
            ours = [r for r in runs if r["trainer"] == "ranklab" and r["lr"] == lr]
            theirs = [r for r in runs if r["trainer"] == other and r["lr"] == lr]
            wall = statistics.mean(r["tokens_per_s"] for r in ours) / statistics.mean(r["tokens_per_s"] for r in theirs)
            cpu = statistics.mean(r["tokens"] / r["cpu_s"] for r in ours) / statistics.mean(
                r["tokens"] / r["cpu_s"] for r in theirs
            )
            print(f"ranklab / {other} at lr {lr:g}: tokens/s {wall:.2f}x, tokens per CPU-second {cpu:.2f}x")


if __name__ == "__main__":
    main()
