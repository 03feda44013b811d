"""Generation throughput: many prompts per forward (ranklab's default) vs one prompt at a time.

Both runs sample K completions for the same prompts with the same settings through
worker.ml.generate; only cfg.batch_size differs (prompts x K rows per call vs K rows per call).
tokens/s counts generated tokens (EOS included) over wall seconds; CPU seconds are printed too
because other processes may share the cores.

  .venv/bin/python bench/generation.py                  # SmolLM2-135M, 8 prompts x K=4 x 48 tokens
  .venv/bin/python bench/generation.py --tiny           # tiny random Llama, seconds
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from worker.ml.config import GenerationConfig
from worker.ml.generate import generate
from worker.ml.models import convert_default_model, load_causal_lm, load_tokenizer
from worker.ml.tiny import save_tiny_model

PROMPTS = [
    "Write a haiku about the sea.",
    "What is the capital of France?",
    "Give me three tips for sleeping well.",
    "Explain what a reward model is in one sentence.",
    "Name two fruits that are red.",
    "Tell a very short story about a cat.",
    "How do I boil an egg?",
    "Why is the sky blue?",
    "Suggest a name for a bakery.",
    "What is 12 times 12?",
    "Describe autumn in a sentence.",
    "List three prime numbers.",
    "What does a compiler do?",
    "Write a polite email subject line.",
    "Say hello in French.",
    "What is the tallest animal?",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--model", default=None, help="folder (default: converted SmolLM2)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("-k", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--no-autocast", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    if args.tiny:
        path = Path(tempfile.mkdtemp(prefix="gen-bench-")) / "tiny"
        save_tiny_model(path)
    else:
        path = Path(args.model) if args.model else convert_default_model(args.data_dir)
    model, tokenizer = load_causal_lm(path), load_tokenizer(path)
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]

    rows = {}
    for name, batch_size in (("batched", args.prompts * args.k), ("one prompt at a time", args.k)):
        cfg = GenerationConfig(
            k=args.k, max_new_tokens=args.max_new_tokens, batch_size=batch_size, autocast=not args.no_autocast, seed=0
        )
        started, started_cpu = time.perf_counter(), time.process_time()
        results = generate(model, prompts, cfg, tokenizer=tokenizer)
        seconds, cpu = time.perf_counter() - started, time.process_time() - started_cpu
        tokens = sum(c.token_count + (c.finish_reason == "eos") for s in results for c in s)
        rows[name] = (tokens, seconds, cpu)

    print(
        f"\nmodel={'tiny' if args.tiny else path} prompts={args.prompts} K={args.k} "
        f"max_new_tokens={args.max_new_tokens} threads={args.threads} "
        f"bf16={'off' if args.no_autocast else 'autocast'}"
    )
    print(f"{'':22} {'tokens':>7} {'wall s':>8} {'cpu s':>8} {'tok/s':>8} {'tok/cpu-s':>10}")
    for name, (tokens, seconds, cpu) in rows.items():
        print(f"{name:22} {tokens:7d} {seconds:8.1f} {cpu:8.1f} {tokens / seconds:8.1f} {tokens / cpu:10.1f}")
    (bt, bs, bc), (st, ss, sc) = rows.values()
    print(
        f"batched / one-at-a-time: {(bt / bs) / (st / ss):.2f}x tok/s, {(bt / bc) / (st / sc):.2f}x tok per CPU second"
    )


if __name__ == "__main__":
    main()
