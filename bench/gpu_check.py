"""The GPU check (issue 17 §4): on one GPU, bf16, a whole round of the product and the GPU-capable
benchmarks, each phase with its wall time and the GPU's peak memory (nvidia-smi, sampled every
0.2 s, so it counts every process: the web, the embedded worker, a vLLM engine).

    bash bench/gpu_check.sh                 # on a machine with a CUDA GPU
    bash bench/gpu_check.sh --cpu-smoke     # the same phases on CPU with a tiny model (checks the script)

Phases:
1. environment: GPU, driver, torch / CUDA / vLLM versions;
2. round: `ranklab simulate --rounds 1` with the bundled SmolLM2 (generation with vLLM when it is
   installed, `generation.backend` "auto"; reward model, PPO, the next round's generation),
   the simulated team labelling in between; the per-step times come from the round's events;
3. engines: when vLLM is installed, the round's PPO policy (a LoRA adapter) answers the same
   prompts through vLLM and through HF generate at temperature 1e-4 (engine build, generation,
   sleep and wake timed; the share of identical answers printed), the check the vLLM path needs
   (docs/generation-engines.md);
4. benchmarks: bench/ppo_memory.py on the GPU (peak memory of PPO's model layouts).

Prints one table at the end; `--json FILE` also writes it. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class GpuMemory:
    """Peak `memory.used` of GPU 0 while the `with` block runs (MiB; None without nvidia-smi)."""

    def __init__(self) -> None:
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> GpuMemory:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _sample(self) -> None:
        query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"]
        while not self._stop.is_set():
            try:
                used = int(subprocess.run(query, capture_output=True, text=True, timeout=5).stdout.split()[0])
                self.peak = max(self.peak or 0, used)
            except (subprocess.SubprocessError, ValueError, IndexError):
                pass
            self._stop.wait(0.2)


def phase(rows: list[dict], name: str, command: list[str], *, timeout: float, env: dict | None = None) -> str:
    """Runs one phase, prints its output as it comes, and records time, peak memory and status."""
    print(f"\n=== {name}: {' '.join(command)}", flush=True)
    started = time.monotonic()
    lines: list[str] = []
    with GpuMemory() as memory:
        try:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            assert process.stdout is not None
            for line in process.stdout:
                print(line, end="", flush=True)
                lines.append(line)
            status = "ok" if process.wait(timeout=timeout) == 0 else f"exit {process.returncode}"
        except subprocess.TimeoutExpired:
            process.kill()
            status = f"timed out after {timeout:.0f} s"
    rows.append(
        {"phase": name, "seconds": round(time.monotonic() - started, 1), "peak_mib": memory.peak, "status": status}
    )
    return "".join(lines)


def round_step_seconds(data_dir: Path) -> dict[str, float]:
    """Seconds each round-0 step took, from the round's events (first to last event of a stage)."""
    db = sqlite3.connect(data_dir / "ranklab.sqlite")
    try:
        rows = db.execute(
            "SELECT e.stage, MIN(e.created_at), MAX(e.created_at) FROM round_events e "
            "JOIN training_rounds r ON r.id = e.round_id WHERE r.number = 0 GROUP BY e.stage"
        ).fetchall()
    finally:
        db.close()
    from datetime import datetime

    def parse(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp.replace(" ", "T"))

    return {stage: round((parse(last) - parse(first)).total_seconds(), 1) for stage, first, last in rows}


def latest_policy(data_dir: Path) -> str | None:
    db = sqlite3.connect(data_dir / "ranklab.sqlite")
    try:
        row = db.execute(
            "SELECT artifact_path FROM model_versions WHERE kind = 'policy' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="run the phases on CPU with a tiny model")
    parser.add_argument("--prompts", type=int, default=16, help="training prompts of the round")
    parser.add_argument("--minutes", type=float, default=8.0, help="time limit of the round phase")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args()
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); --cpu-smoke checks the script")
        return 3
    rows: list[dict] = []
    python = sys.executable
    work = Path(tempfile.mkdtemp(prefix="ranklab-gpu-check-"))
    model_args: list[str] = []
    if args.cpu_smoke:
        from worker.ml.tiny import save_tiny_model

        save_tiny_model(work / "tiny")
        model_args = ["--model", str(work / "tiny")]
    versions = "import torch, importlib.util as u; print(torch.__version__, torch.version.cuda, "
    versions += "'vllm' if u.find_spec('vllm') else 'no vllm')"
    phase(rows, "environment", [python, "-c", versions], timeout=120)
    if shutil.which("nvidia-smi"):
        phase(rows, "gpu", ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"], timeout=30)

    data_dir = work / "round"
    simulate = [python, "-c", "from app.cli import main; raise SystemExit(main())", "simulate", "--rounds", "1"]
    simulate += ["--prompts", str(args.prompts), "--eval-prompts", "8", "--max-new-tokens", "64", "--ppo-steps", "4"]
    simulate += ["--seeds", "0", "--timeout-minutes", str(args.minutes), "--data-dir", str(data_dir), *model_args]
    phase(rows, "round (generate, label, RM, PPO, eval, next generation)", simulate, timeout=args.minutes * 60 + 120)
    steps = round_step_seconds(data_dir) if (data_dir / "ranklab.sqlite").exists() else {}
    policy = latest_policy(data_dir) if (data_dir / "ranklab.sqlite").exists() else None

    import importlib.util

    if policy and importlib.util.find_spec("vllm") and torch.cuda.is_available():
        phase(rows, "engines: vLLM vs HF on the PPO adapter", [python, "bench/gpu_engines.py", policy], timeout=600)
    else:
        rows.append({"phase": "engines", "seconds": 0, "peak_mib": None, "status": "skipped (needs vLLM, CUDA)"})
    device = "cpu" if args.cpu_smoke else "cuda"
    memory = [
        python,
        "bench/ppo_memory.py",
        "--device",
        device,
        "--steps",
        "2",
        *(["--tiny"] if args.cpu_smoke else []),
    ]
    phase(rows, "bench/ppo_memory.py", memory, timeout=600)

    print("\n| phase | seconds | peak GPU MiB | status |\n|---|---|---|---|")
    for row in rows:
        peak = "—" if row["peak_mib"] is None else row["peak_mib"]
        print(f"| {row['phase']} | {row['seconds']} | {peak} | {row['status']} |")
    print("\nround 0, seconds per stage (first to last event):", json.dumps(steps))
    if args.json:
        args.json.write_text(json.dumps({"phases": rows, "round_steps": steps}, indent=2))
    return 0 if all(r["status"] == "ok" or r["status"].startswith("skipped") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
