"""SFT in 2 real processes (accelerate launch, torchrun, gloo on CPU) matches 1 process.

Not bit-exact, for the reason tests/ml/test_distributed_reward.py gives (each rank forwards its
own slice of a step, the gradient halves are summed by an all-reduce): the tolerances are those
of that test's kind. Measured here (printed with -s): weights within ~1.2e-5 while training
moves LoRA's B matrices (zero at the start) to ~6e-2; losses within ~7e-7. Allowed: 1e-4 on
weights, 1e-5 on losses; the same step count, token count and best epoch.
"""

import random

import pytest
from safetensors.torch import load_file

from worker.ml.distributed import DistributedConfig, launch_sft
from worker.ml.sft import SFTConfig, train_sft

WORDS = "one two three four five six seven eight nine ten".split()
WEIGHT_TOLERANCE = 1e-4
LOSS_TOLERANCE = 1e-5


def test_two_processes_fine_tune_as_one(tiny_model_dir, tmp_path):
    rng = random.Random(0)
    picks = [rng.sample(WORDS, rng.randint(1, 3)) for _ in range(40)]
    data = [{"prompt": "say " + " ".join(p), "completion": " ".join(p)} for p in picks]
    cfg = SFTConfig(
        model=str(tiny_model_dir), learning_rate=1e-2, epochs=2, batch_tokens=64, eval_fraction=0.2, autocast=False
    )

    one_points: list = []
    one = train_sft(cfg, data, tmp_path / "one", on_step=lambda step, stats: one_points.append((step, stats)))
    points: list = []
    dist = DistributedConfig(processes=2, timeout_seconds=240, collective_timeout_seconds=60)
    two = launch_sft(cfg, data, tmp_path / "two", dist, on_step=lambda step, stats: points.append((step, stats)))

    assert two["processes"] == 2 and two["steps"] == one["steps"] and two["best_epoch"] == one["best_epoch"]
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=LOSS_TOLERANCE)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], abs=LOSS_TOLERANCE)
    assert two["train_tokens"] == one["train_tokens"] and two["train_examples"] == one["train_examples"]
    assert two["train_loss_last"] < two["train_loss_first"]
    # the parent got rank 0's loss points: one per step, one eval_loss per epoch
    assert [step for step, stats in points] == [step for step, stats in one_points]
    assert [s["eval_loss"] for _, s in points if "eval_loss" in s] == pytest.approx(one["eval_loss"], abs=1e-5)

    first, second = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("one", "two"))
    assert first.keys() == second.keys()
    gap = max(float((first[k] - second[k]).abs().max()) for k in first)
    pairs = zip(one["train_loss"] + one["eval_loss"], two["train_loss"] + two["eval_loss"], strict=True)
    loss_gap = max(abs(a - b) for a, b in pairs)
    print(f"SFT, 1 vs 2 processes: largest weight difference {gap:.2e}, loss difference {loss_gap:.2e}")
    assert gap < WEIGHT_TOLERANCE
    # LoRA's B matrices start at zero: their size is how far training moved them
    moved = max(float(t.abs().max()) for k, t in first.items() if "lora_B" in k)
    print(f"SFT: largest LoRA B weight after training {moved:.2e}")
    assert moved > 100 * WEIGHT_TOLERANCE
