"""vLLM vs HF generate on one policy (a LoRA adapter or a full model), near-greedy: the check the
vLLM path needs on a GPU (docs/generation-engines.md). Times engine build + generation, sleep, and
wake + one prompt; prints the share of identical answers. Run by bench/gpu_check.py.

    python bench/gpu_engines.py POLICY_FOLDER
"""

from __future__ import annotations

import json
import sys
import time

from worker.ml import vllm_engine
from worker.ml.config import GenerationConfig
from worker.ml.generate import generate

PROMPTS = [
    "Name a prime number.",
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Add 17 and 25.",
    "Give a synonym of quick.",
    "Translate 'cat' to German.",
]


def timed(work, *args) -> tuple[object, float]:
    start = time.monotonic()
    result = work(*args)
    return result, round(time.monotonic() - start, 2)


def main(policy: str) -> None:
    seconds: dict[str, float] = {}
    texts: dict[str, list[list[str]]] = {}
    for backend in ("vllm", "hf"):
        cfg = GenerationConfig(k=2, max_new_tokens=48, temperature=1e-4, seed=0, backend=backend)
        answers, seconds[f"{backend}_build_and_generate_s"] = timed(generate, policy, PROMPTS, cfg)
        texts[backend] = [[c.text for c in group] for group in answers]  # type: ignore[attr-defined]
        if backend == "vllm":
            _, seconds["vllm_sleep_s"] = timed(vllm_engine.release_for_training)
            _, seconds["vllm_wake_and_one_prompt_s"] = timed(generate, policy, PROMPTS[:1], cfg)
    pairs = [(a, b) for va, vh in zip(texts["vllm"], texts["hf"], strict=True) for a, b in zip(va, vh, strict=True)]
    print(json.dumps({**seconds, "identical_answers": f"{sum(a == b for a, b in pairs)}/{len(pairs)}"}))


if __name__ == "__main__":
    main(sys.argv[1])
