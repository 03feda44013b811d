"""DPO in 2 real processes (accelerate launch, torchrun, gloo on CPU) matches 1 process.

Not bit-exact, for the reason tests/ml/test_distributed_reward.py gives: each rank forwards its
own slice of a batch (and of the reference pass), in other packed rows, and the gradient halves
are summed by an all-reduce. Measured here (printed with -s): per-step statistics within ~5e-6
(the log-prob drifts, sums of float32 log-ratios; losses closer), LoRA weights within ~2e-6
while training moves LoRA's B matrices (zero at the start) to ~2e-2. Allowed: 1e-5 on losses
and held-out metrics, 5e-5 on per-step statistics, 1e-4 on weights; the same steps and counts.
A real bug (a rank's slice lost, the loss normalised by the local count) moves them by 1e-2.
"""

import pytest
from safetensors.torch import load_file

from worker.ml.distributed import DistributedConfig
from worker.ml.distributed_policy import launch_dpo
from worker.ml.dpo import DPOConfig, train_dpo
from worker.ml.synthetic import quality_rankings

LOSS_TOLERANCE = 1e-5
STAT_TOLERANCE = 5e-5
WEIGHT_TOLERANCE = 1e-4
STEP_KEYS = ("loss", "accuracy", "margin", "chosen_drift", "rejected_drift", "learning_rate")


def test_two_processes_train_the_same_dpo_policy_as_one(tiny_model_dir, tmp_path):
    # 13 training tasks in batches of 4: the last batch has one task, so rank 1 joins that
    # step's all-reduce with an empty slice
    rankings, held_out = quality_rankings(13, 4, seed=1), quality_rankings(6, 4, seed=2)
    cfg = DPOConfig(
        model=str(tiny_model_dir), beta=0.1, learning_rate=5e-3, epochs=2, batch_rankings=4,
        device="cpu", autocast=False, max_length=64,
    )  # fmt: skip
    one_points: list = []
    one = train_dpo(cfg, rankings, tmp_path / "one", None, lambda s, x: one_points.append((s, x)), held_out=held_out)
    points: list = []
    dist = DistributedConfig(processes=2, timeout_seconds=240, collective_timeout_seconds=60)
    two = launch_dpo(
        cfg, rankings, tmp_path / "two", None, lambda s, x: points.append((s, x)), held_out=held_out, dist=dist
    )

    assert two["processes"] == 2 and two["steps"] == one["steps"] == 2 * 4
    assert two["val_pairs"] == one["val_pairs"] > 0 and two["train_rankings"] == one["train_rankings"] == 13
    for key in ("train_loss_first", "train_loss_last", "val_loss", "val_accuracy", "val_margin", "val_kl_per_token"):
        assert two[key] == pytest.approx(one[key], abs=LOSS_TOLERANCE), key
    assert two["val_loss"] < two["val_loss_before"]
    # rank 0 reported every step with the global batch's statistics, and the held-out points
    assert [s for s, _ in points] == [s for s, _ in one_points]
    gaps = {(k, abs(a[k] - b[k])) for (_, a), (_, b) in zip(one_points, points, strict=True) for k in a if k in b}
    print(f"DPO, 1 vs 2 processes: largest per-step loss/statistic difference {max(gaps, key=lambda g: g[1])}")
    assert max(g for _, g in gaps) < STAT_TOLERANCE
    assert max(g for k, g in gaps if k == "loss") < LOSS_TOLERANCE
    assert all(set(STEP_KEYS) <= set(x) for s, x in points if s > 0 and "loss" in x)

    first, second = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("one", "two"))
    assert first.keys() == second.keys()
    gap = max(float((first[k] - second[k]).abs().max()) for k in first)
    moved = max(float(t.abs().max()) for k, t in first.items() if "lora_B" in k)
    print(f"DPO: largest weight difference {gap:.2e}; largest LoRA B weight after training {moved:.2e}")
    assert gap < WEIGHT_TOLERANCE
    assert moved > 100 * WEIGHT_TOLERANCE
