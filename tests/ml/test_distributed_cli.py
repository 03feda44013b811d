"""`python -m worker.ml train-dpo | train-rloo | train-policy --processes N`: the policy commands
launch the same data-parallel runs the rounds do (accelerate launch, gloo on CPU), and refuse a
split that does not divide before any rank starts. What N processes compute is compared with one
process in test_distributed_dpo.py and test_distributed_rl.py; here, that the command reaches it."""

import json

import pytest

from worker.ml.cli import main
from worker.ml.synthetic import quality_rankings

LAUNCH = ("--processes", "2", "--timeout-seconds", "240", "--collective-timeout-seconds", "60")


def _metrics(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{") :])


def test_train_dpo_command_trains_in_two_processes(tiny_model_dir, tmp_path, capsys):
    lines = [
        {"prompt": r.prompt, "completions": r.completions, "ranking": r.groups, "prompt_id": r.prompt_id}
        for r in quality_rankings(8, 3, seed=2)
    ]
    (tmp_path / "rankings.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = [
        *("train-dpo", "--model", str(tiny_model_dir), "--rankings", str(tmp_path / "rankings.jsonl")),
        *("--out", str(tmp_path / "policy"), "--batch-rankings", "2", "--device", "cpu", "--no-autocast"),
    ]
    assert main([*args, *LAUNCH]) == 0
    metrics = _metrics(capsys)
    assert metrics["processes"] == 2 and metrics["steps"] > 0 and metrics["val_pairs"] > 0
    assert (tmp_path / "policy" / "adapter_config.json").is_file()


def test_train_rloo_command_trains_in_two_processes(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "say cat"}\n"hello world"\n"count to three"\n')
    args = [
        *("train-rloo", "--model", str(tiny_model_dir), "--prompts", str(tmp_path / "prompts.jsonl")),
        *("--out", str(tmp_path / "policy"), "--steps", "2", "--prompts-per-step", "2", "--k", "2"),
        *("--minibatch-size", "2", "--max-new-tokens", "4", "--reward-source", "zero", "--device", "cpu"),
    ]
    assert main([*args, *LAUNCH]) == 0
    metrics = _metrics(capsys)
    assert metrics["processes"] == 2 and len(metrics["kl"]) == 2
    assert (tmp_path / "policy" / "adapter_config.json").is_file()


@pytest.mark.parametrize(
    ("command", "extra", "field"),
    [
        ("train-policy", ("--batch-size", "8", "--minibatch-size", "4", "--processes", "3"), "batch_size"),
        ("train-rloo", ("--prompts-per-step", "3", "--k", "2", "--processes", "2"), "prompts_per_step"),
        ("train-dpo", ("--processes", "0"), "processes"),
    ],
)
def test_a_split_that_cannot_work_is_refused_naming_the_field(tmp_path, capsys, command, extra, field):
    (tmp_path / "prompts.jsonl").write_text('"hello"\n')
    (tmp_path / "rm").mkdir()
    data = (
        ("--rankings", str(tmp_path / "prompts.jsonl"))
        if command == "train-dpo"
        else ("--prompts", str(tmp_path / "prompts.jsonl"), "--reward", str(tmp_path / "rm"))
    )
    args = [command, "--model", str(tmp_path), *data, "--out", str(tmp_path / "out"), "--device", "cpu", *extra]
    assert main(args) == 2
    assert field in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
