"""Human rankings needed to reach a held-out reward-model accuracy: active vs random handout
order (issue 16 §3; docs/active-learning.md has the results).

The pool (bench/active_pool.py): each of the simulated team's 216 prompts
(app/simulation/tasks.py) gets 4 answers from the bundled SmolLM2-135M-Instruct per --parts
(temperature 1, 40 new tokens, as `ranklab simulate`), cached in --out with the frozen model's
feature of every completion (worker.ml.active.completion_features). A prompt's answers are cut
into disjoint ranking tasks of K: with --parts 4, 16 answers make 4 tasks per prompt.

Per seed: prompts split into a held-out third and a pool (144 prompts, 576 tasks: nearly 5x the
largest budget, so an order can choose). Noisy simulated labelers (the team's: own part weights,
position bias, noise solved for InstructGPT's 72.6% agreement, app/simulation/noise.py) rank the
tasks they are handed, one ranking per task. The reward model is the product's score head on the
frozen features: a linear Plackett-Luce head fitted on every ranking so far
(worker.ml.active.fit_score_heads, one head, no resampling). Held-out accuracy: the share of
pairs of a held-out prompt's answers (all 16, every pair) it orders like gold (gold ties left
out). The handout starts with --start random rankings, then hands out --step tasks at a time,
refitting after each step, in random order, by one of worker.ml.active's acquisition methods
on a --heads bootstrap committee ("disagreement", "margin", "bald", "vote", "pool_information"),
or by the head's Laplace posterior (worker.ml.active_laplace: "laplace_information",
"laplace_pool", "laplace_error"; a greedy batch of --step tasks, no committee; "laplace_prompt_pool"
is laplace_pool about every pair of a prompt's open answers, across its tasks, as the test is).
"laplace_pool_draw" draws each pick at random in proportion to laplace_pool's score instead of
taking the best; "laplace_pool_lure" also refits the head with LURE importance weights, so the
fit is unbiased for the whole pool although the handout is not random.

    .venv/bin/python bench/active_learning.py --seeds $(seq 0 19) \
        --methods random disagreement margin bald pool_information --chart docs/img/active-learning-576-tasks.svg
    .venv/bin/python bench/active_learning.py --available   # use the pool generated so far

Defaults are that measurement's set-up (--parts 4, --l2 3 from a random-order pilot on other
seeds, 10 random rankings then steps of 5 up to 120). Generating the pool took 19 min and its
features 6.5 min on one CPU thread of a shared 2-core machine (once, cached); an acquisition run
takes 0-5 CPU seconds per seed and order.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from active_pool import HeldOut, Tasks, Team, merged_pool, pool_features

from app.simulation.noise import TARGET_AGREEMENT
from worker.ml.active import METHODS as ACQUISITIONS
from worker.ml.active import fit_score_heads, lure_weights, task_uncertainty
from worker.ml.active_laplace import laplace_batch, laplace_draw, laplace_posterior

LAPLACE = {
    "laplace_information": "information",
    "laplace_pool": "pool",
    "laplace_error": "error",
    "laplace_prompt_pool": "pool",
}
"""Orders from the head's Laplace posterior (worker.ml.active_laplace), no committee."""
DRAWN = ("laplace_pool_draw", "laplace_pool_lure")
"""laplace_pool's score, each pick drawn at random in proportion to it (laplace_draw);
"_lure" also refits the head with LURE importance weights (lure_weights)."""
METHODS = ("random", *ACQUISITIONS, *LAPLACE, *DRAWN)
"""Handout orders: random, any of worker.ml.active's acquisition methods, or a Laplace one."""


# --- one simulated handout ------------------------------------------------------------------------


def run(tasks: Tasks, seed: int, method: str, args) -> list[tuple[int, float]]:
    """(rankings so far, held-out accuracy) after the start and after every step."""
    rng = random.Random(seed)
    prompts = sorted(set(tasks.prompt_of))
    rng.shuffle(prompts)
    held = set(prompts[: len(prompts) // 3])
    held_out = HeldOut(tasks, sorted(held))
    pool = [t for t, p in enumerate(tasks.prompt_of) if p not in held]
    team = Team(tasks, pool, seed, args.agreement)  # same labelers, noise and start for every method of a seed
    order = pool[:]
    rng.shuffle(order)
    labelled, rankings = order[: args.start], [[team.rank(t)] for t in order[: args.start]]
    remaining = order[args.start :]
    chances = [1 / (len(pool) - m) for m in range(args.start)]  # each start task's chance when drawn
    generator = torch.Generator().manual_seed(seed)
    curve = []
    while True:
        f = [tasks.features[t] for t in labelled]
        weights = lure_weights(chances, len(pool)) if method == "laplace_pool_lure" else None
        head = fit_score_heads(f, rankings, n_heads=1, bootstrap=False, l2=args.l2, weights=weights)
        curve.append((len(labelled), held_out.accuracy(head)))
        if len(labelled) >= args.budget or not remaining:
            return curve
        if method == "random":
            picked = remaining[: args.step]
        elif method in DRAWN:  # in draw order: a task's place in it is the m of its LURE weight
            posterior = laplace_posterior(f, rankings, l2=args.l2, head=head)
            drawn = laplace_draw(posterior, [tasks.features[t] for t in remaining], args.step, generator)
            picked = [remaining[n] for n, _ in drawn]
            chances += [q for _, q in drawn]
        elif method in LAPLACE:  # greedy batch under the one head's full-rank posterior
            posterior = laplace_posterior(f, rankings, l2=args.l2, head=head)
            target = _prompt_groups(tasks, remaining) if method == "laplace_prompt_pool" else None
            best = laplace_batch(
                posterior, [tasks.features[t] for t in remaining], args.step, score=LAPLACE[method], target=target
            )
            picked = [remaining[n] for n in sorted(best)]
        else:
            heads = fit_score_heads(f, rankings, n_heads=args.heads, seed=seed * 1000 + len(labelled), l2=args.l2)
            values = task_uncertainty(heads, [tasks.features[t] for t in remaining], method=method)
            best = sorted(range(len(remaining)), key=lambda n: -values[n])[: args.step]
            picked = [remaining[n] for n in sorted(best)]
        remaining = [t for t in remaining if t not in set(picked)]
        labelled += picked
        rankings += [[team.rank(t)] for t in picked]


def _prompt_groups(tasks: Tasks, open_tasks: list[int]) -> list[torch.Tensor]:
    """Per prompt, the features of every answer in an open task of it: laplace_prompt_pool's
    target is every pair of answers to the same prompt (what the held-out test scores), not only
    the pairs inside one task."""
    by_prompt: dict[int, list[torch.Tensor]] = {}
    for t in open_tasks:
        by_prompt.setdefault(tasks.prompt_of[t], []).append(tasks.features[t])
    return [torch.cat(rows) for rows in by_prompt.values()]


# --- summary and chart ----------------------------------------------------------------------------


def needed(curve: list[tuple[int, float]], target: float) -> float | None:
    """Rankings at which the curve first reaches target (linear between steps); None: never."""
    for (n0, a0), (n1, a1) in zip([(0, -1.0), *curve], curve, strict=False):
        if a1 >= target:
            return float(n1) if a0 < 0 or a1 == a0 else n0 + (n1 - n0) * (target - a0) / (a1 - a0)
    return None


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_curve(per_seed: dict[int, list[tuple[int, float]]], seeds: list[int]) -> list[tuple[int, float]]:
    grid = [n for n, _ in per_seed[seeds[0]]]
    return [(n, statistics.fmean(dict(per_seed[s])[n] for s in seeds)) for n in grid]


def summarize(curves: dict[str, dict[int, list[tuple[int, float]]]], checkpoints: list[int]) -> dict:
    """needed: per target (random order's mean accuracy at a checkpoint) and order, rankings at
    which the seeds' mean curve first reaches it and the saving against random; the spread is
    the sd over 1000 bootstrap resamples of the seeds (curves of one seed share its split and
    labelers, so seeds are resampled together). at_budget: accuracy per order at each budget,
    mean ± sd over seeds, and its paired difference from random on the same seed."""
    seeds = sorted(curves["random"])
    grid = [n for n, _ in curves["random"][seeds[0]]]
    rng = random.Random(0)
    resamples = [[rng.choice(seeds) for _ in seeds] for _ in range(1000)]
    needed_rows = []
    for checkpoint in checkpoints:
        at = min(grid, key=lambda n: abs(n - checkpoint))
        for method in curves:

            def saving(draw: list[int], at: int = at, method: str = method) -> tuple[float | None, float | None]:
                target = dict(mean_curve(curves["random"], draw))[at]
                base, got = (
                    needed(mean_curve(curves["random"], draw), target),
                    needed(mean_curve(curves[method], draw), target),
                )
                return got, (1 - got / base if got is not None and base else None)

            got, save = saving(seeds)
            spread = [v for v in (saving(d)[1] for d in resamples) if v is not None]
            needed_rows.append(
                {
                    "random_at": at,
                    "target": dict(mean_curve(curves["random"], seeds))[at],
                    "method": method,
                    "needed": got,
                    "saving": save,
                    "saving_sd": statistics.stdev(spread) if len(spread) > 1 else None,
                    "saving_resamples_reached": len(spread),
                }
            )
    budget_rows = []
    for n in grid:
        if n not in checkpoints and n != grid[-1]:
            continue
        for method in curves:
            acc = [dict(curves[method][s])[n] for s in seeds]
            diff = [a - dict(curves["random"][s])[n] for a, s in zip(acc, seeds, strict=True)]
            budget_rows.append({"rankings": n, "method": method, "accuracy": mean_sd(acc), "vs_random": mean_sd(diff)})
    return {"needed": needed_rows, "at_budget": budget_rows}


def table(summary: dict) -> str:
    lines = [
        "| target = random's mean accuracy at | target | order | rankings needed (mean curve) "
        "| saving vs random | sd (seed bootstrap) |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["needed"]:
        need = "not reached" if r["needed"] is None else f"{r['needed']:.0f}"
        save = "—" if r["saving"] is None else f"{r['saving']:+.0%}"
        sd = "—" if r["saving_sd"] is None else f"{r['saving_sd']:.0%}"
        lines.append(f"| {r['random_at']} rankings | {r['target']:.3f} | {r['method']} | {need} | {save} | {sd} |")
    lines += ["", "| rankings | order | held-out accuracy, mean ± sd | minus random, same seed |", "|---|---|---|---|"]
    for r in summary["at_budget"]:
        (m, sd), (dm, dsd) = r["accuracy"], r["vs_random"]
        lines.append(f"| {r['rankings']} | {r['method']} | {m:.3f} ± {sd:.3f} | {dm:+.3f} ± {dsd:.3f} |")
    return "\n".join(lines)


COLOURS = {
    "random": "#555555",
    "disagreement": "#d62728",
    "margin": "#1f77b4",
    "bald": "#2ca02c",
    "vote": "#9467bd",
    "laplace_information": "#ff7f0e",
    "laplace_pool": "#8c564b",
    "laplace_prompt_pool": "#17becf",
    "laplace_pool_draw": "#e377c2",
    "laplace_pool_lure": "#bcbd22",
}


def svg_chart(curves: dict[str, dict[int, list[tuple[int, float]]]], title: str) -> str:
    """Mean held-out accuracy vs rankings per order, a ±1 sd band over seeds; plain SVG."""
    width, height, left, right, top, bottom = 640, 400, 60, 150, 40, 50
    series = {}
    for method, per_seed in curves.items():
        grid = [n for n, _ in next(iter(per_seed.values()))]
        stats = [mean_sd([dict(c)[n] for c in per_seed.values()]) for n in grid]
        series[method] = (grid, stats)
    xs = [n for grid, _ in series.values() for n in grid]
    ys = [m + k * s for _, stats in series.values() for m, s in stats for k in (-1, 1)]
    x0, x1 = 0, max(xs)
    y0, y1 = math.floor(min(ys) * 20) / 20, math.ceil(max(ys) * 20) / 20

    def px(n: float) -> float:
        return left + (n - x0) / (x1 - x0) * (width - left - right)

    def py(a: float) -> float:
        return height - bottom - (a - y0) / (y1 - y0) * (height - top - bottom)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2 - right / 2 + left / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
    ]
    for k in range(int(round((y1 - y0) / 0.05)) + 1):
        a = y0 + 0.05 * k
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{py(a):.1f}" y2="{py(a):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{py(a) + 4:.1f}" text-anchor="end">{a:.2f}</text>')
    step = 20 if x1 <= 200 else 50 if x1 <= 400 else 100
    for n in range(0, x1 + 1, step):
        out.append(f'<text x="{px(n):.1f}" y="{height - bottom + 16}" text-anchor="middle">{n}</text>')
    out.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">human rankings</text>'
        f'<text transform="translate(16 {(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">'
        "held-out pairwise accuracy vs gold</text>"
    )
    for row, (method, (grid, stats)) in enumerate(series.items()):
        colour = COLOURS.get(method, "#2ca02c")
        upper = [f"{px(n):.1f},{py(m + s):.1f}" for n, (m, s) in zip(grid, stats, strict=True)]
        lower = [f"{px(n):.1f},{py(m - s):.1f}" for n, (m, s) in zip(grid, stats, strict=True)][::-1]
        out.append(f'<polygon points="{" ".join(upper + lower)}" fill="{colour}" fill-opacity="0.15" stroke="none"/>')
        line = " ".join(f"{px(n):.1f},{py(m):.1f}" for n, (m, _) in zip(grid, stats, strict=True))
        out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        y = top + 20 + 20 * row
        legend = f'x1="{width - right + 15}" x2="{width - right + 40}" y1="{y}" y2="{y}"'
        out.append(f'<line {legend} stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{width - right + 45}" y="{y + 4}">{method}</text>')
    frame = f'x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}"'
    out.append(f'<rect {frame} fill="none" stroke="#999"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("data/bench/active-learning"), help="pool cache and results")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where the bundled model is converted")
    p.add_argument("--samples", type=int, default=4, help="answers generated per prompt and part")
    p.add_argument("--parts", type=int, default=4, help="generation parts (seeds) merged per prompt")
    p.add_argument("--available", action="store_true", help="no generation: the prompts generated so far")
    p.add_argument("-k", type=int, default=4, help="completions per ranking task")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["random", "disagreement", "margin", "bald"], choices=METHODS)
    p.add_argument("--heads", type=int, default=5, help="committee size of the active orders")
    p.add_argument("--start", type=int, default=10, help="random rankings before the first refit")
    p.add_argument("--step", type=int, default=5, help="rankings handed out between refits")
    p.add_argument("--budget", type=int, default=120, help="rankings in all (the pool: 576 tasks at --parts 4)")
    p.add_argument("--l2", type=float, default=3.0, help="head L2 on standardised features (pilot: docs)")
    p.add_argument("--checkpoints", type=int, nargs="+", default=[20, 40, 60, 80, 120])
    p.add_argument("--chart", type=Path, default=None, help="write the SVG curve here too")
    p.add_argument("--tag", default="", help="results-<tag>.json and curve-<tag>.svg in --out")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--agreement",
        type=float,
        default=TARGET_AGREEMENT,
        help="labeler-labeler pair agreement the noise is solved for (default InstructGPT's 72.6%%)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    pool = merged_pool(args.out, args.data_dir, args.samples, args.max_new_tokens, args.parts, args.available)
    tasks = Tasks(pool, pool_features(args.out, args.data_dir, pool), args.k)
    print(f"pool: {len(pool)} prompts, {len(tasks.gold)} tasks of {args.k}", file=sys.stderr)
    curves: dict[str, dict[int, list[tuple[int, float]]]] = {m: {} for m in args.methods}
    for seed in args.seeds:
        for method in args.methods:
            started = time.process_time()
            curves[method][seed] = run(tasks, seed, method, args)
            final = curves[method][seed][-1]
            cpu = time.process_time() - started
            print(f"seed {seed} {method}: {final[1]:.3f} at {final[0]}, {cpu:.0f} CPU s", file=sys.stderr)
    rows = summarize(curves, args.checkpoints) if "random" in curves else {"needed": [], "at_budget": []}
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result = {"settings": settings, "tasks": len(tasks.gold), "curves": curves, "summary": rows}
    suffix = f"-{args.tag}" if args.tag else ""
    (args.out / f"results{suffix}.json").write_text(json.dumps(result, indent=1))
    title = f"Held-out RM accuracy vs human rankings ({len(args.seeds)} seeds, mean ± sd)"
    chart = svg_chart(curves, title)
    (args.out / f"curve{suffix}.svg").write_text(chart)
    if args.chart:
        args.chart.parent.mkdir(parents=True, exist_ok=True)
        args.chart.write_text(chart)
    print(table(rows))


if __name__ == "__main__":
    main()
