"""What the SFT benchmarks share: synthetic demonstrations with a realistic length spread, one
child process per run (so each run's peak memory is its own), and mean ± sd.

The demonstrations are chat conversations in the bundled SmolLM2's format (its chat template
renders them): a user asks to reverse, sort or repeat a list of words, sometimes after a system
message, and the assistant answers by rule, so a model can learn the mapping and the held-out
loss measures that. List lengths are log-normal (median 10 words, a long tail to ~120), so
examples run from ~30 to ~500 tokens as real instruction data does: many short, a few long.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

WORDS = (
    "apple river stone cloud garden window pencil orange silver forest candle bridge mountain "
    "coffee button rabbit planet guitar marble violet summer winter autumn spring ocean desert "
    "island valley thunder lantern mirror pocket ladder basket feather hammer jacket kettle "
    "lemon meadow needle pillow rocket saddle ticket tunnel velvet wagon yellow zebra anchor "
    "blanket castle dragon engine falcon glacier harbor igloo jungle kitten lizard magnet "
    "nectar oyster parrot quartz radish spider tomato umbrella vessel walrus yogurt"
).split()
SYSTEMS = (
    "You are a helpful assistant.",
    "You are a careful assistant that follows instructions exactly and answers briefly.",
    "You are a precise assistant. Keep the words as they are, keep their spelling, and do not add "
    "commentary before or after the answer unless the user asks for it.",
)


def demonstrations(n: int, seed: int, words: Sequence[str] = WORDS) -> list[dict[str, Any]]:
    """n conversations {"messages": [...]}, the last turn the assistant's rule-made answer."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        count = max(1, min(120, round(math.exp(rng.gauss(math.log(10), 0.8)))))
        items = [rng.choice(words) for _ in range(count)]
        task = rng.choice(("reverse", "sort", "repeat"))
        listed = ", ".join(items)
        if task == "reverse":
            user, answer = f"Reverse this list: {listed}", "Reversed: " + ", ".join(reversed(items)) + "."
        elif task == "sort":
            user, answer = f"Sort these words alphabetically: {listed}", "Sorted: " + ", ".join(sorted(items)) + "."
        else:
            user, answer = f"Repeat after me: {listed}", listed
        messages = [{"role": "system", "content": rng.choice(SYSTEMS)}] if rng.random() < 0.3 else []
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        out.append({"messages": messages})
    return out


def run_isolated(script: str, job: dict[str, Any]) -> dict[str, Any]:
    """Run `script --job JSON` in a fresh interpreter; its last stdout line is the result JSON."""
    done = subprocess.run(
        [sys.executable, script, "--job", json.dumps(job)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"run {job} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mean_sd(values: Sequence[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
