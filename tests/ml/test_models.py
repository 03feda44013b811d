"""Devices, dtypes, the pad trap, artifacts, and the CLI on tiny models."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from worker.ml import cli
from worker.ml.models import autocast, load_causal_lm, load_tokenizer, pick_device, pick_dtype, read_card, save_artifact
from worker.ml.synthetic import quality_rankings
from worker.ml.tiny import tiny_causal_lm, tiny_tokenizer


def test_device_and_dtype_choice():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_dtype("cpu") == torch.float32
    with autocast("cpu", enabled=False):
        assert torch.ones(2, 2).mm(torch.ones(2, 2)).dtype == torch.float32


def test_autocast_runs_bf16_on_cpus_that_have_it():
    from worker.ml.models import cpu_supports_bf16

    with autocast("cpu"):
        dtype = torch.ones(2, 2).mm(torch.ones(2, 2)).dtype
    assert dtype == (torch.bfloat16 if cpu_supports_bf16() else torch.float32)


def test_pad_equal_to_eos_is_replaced_by_a_distinct_token(tmp_path):
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # what SmolLM2's GGUF ships
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token == "<|endoftext|>" and loaded.pad_token_id != loaded.eos_token_id
    assert loaded.padding_side == "left"


def test_artifact_is_written_atomically_and_loads_with_plain_transformers(tmp_path):
    model, tokenizer = tiny_causal_lm()
    out = tmp_path / "policy"
    save_artifact(model, tokenizer, out, {"base_model": "tiny", "metrics": {"x": 1}})
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[1, 5, 6, 7]])
    assert torch.allclose(reloaded(ids).logits, model(ids).logits, atol=1e-6)
    card = read_card(out)
    assert card["base_model"] == "tiny" and card["format"] == "transformers"
    assert card["architecture"] == "LlamaForCausalLM"
    # saving again replaces the folder whole; nothing temporary is left beside it
    save_artifact(model, tokenizer, out, {"base_model": "tiny", "metrics": {"x": 2}})
    assert read_card(out)["metrics"] == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["policy"]


def test_peft_adapter_artifact_loads_through_load_causal_lm(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    save_artifact(peft_model, load_tokenizer(tiny_model_dir), tmp_path / "adapter", {"base_model": "tiny"})
    assert read_card(tmp_path / "adapter")["format"] == "peft-adapter"
    merged = load_causal_lm(tmp_path / "adapter", device="cpu")
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft_model(ids).logits, atol=1e-5)


def test_cli_generate_and_train_reward(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"hello"\n{"prompt": "why", "prompt_id": "w"}\n')
    out = tmp_path / "completions.jsonl"
    assert (
        cli.main(
            [
                "generate",
                "--model",
                str(tiny_model_dir),
                "--prompts",
                str(prompts),
                "--out",
                str(out),
                "-k",
                "4",
                "--max-new-tokens",
                "5",
                "--no-autocast",
            ]
        )
        == 0
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["prompt_id"] for line in lines][1] == "w"
    assert all(len(line["completions"]) == len(line["details"]) == 4 for line in lines)

    rankings = tmp_path / "rankings.jsonl"
    rankings.write_text(
        "".join(
            json.dumps(
                {"prompt": r.prompt, "completions": r.completions, "ranking": r.groups, "prompt_id": r.prompt_id}
            )
            + "\n"
            for r in quality_rankings(20, 4, seed=5)
        )
    )
    assert (
        cli.main(
            [
                "train-reward",
                "--model",
                str(tiny_model_dir),
                "--rankings",
                str(rankings),
                "--out",
                str(tmp_path / "rm"),
                "--mode",
                "full",
                "--loss",
                "plackett_luce",
                "--lora-targets",
                "q_proj",
                "--val-fraction",
                "0.2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "wrote 2 prompts x 4 completions" in printed
    metrics = json.loads(printed[printed.index("{") :])
    assert 0 <= metrics["val_accuracy"] <= 1
    card = read_card(tmp_path / "rm")
    assert card["config"]["loss"] == "plackett_luce" and card["config"]["lora_targets"] == ["q_proj"]
    assert card["data"]["val_prompts"] == 4


def test_cli_reports_bad_input_with_the_line_and_exit_code_2(tiny_model_dir, tmp_path, capsys):
    rankings = tmp_path / "rankings.jsonl"
    rankings.write_text('{"prompt": "p", "completions": ["a"], "ranking": [[0]]}\n{oops\n')
    code = cli.main(
        ["train-reward", "--model", str(tiny_model_dir), "--rankings", str(rankings), "--out", str(tmp_path / "rm")]
    )
    assert code == 2
    assert "line 2: invalid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["generate", "--prompts", "x"])  # argparse: --out is required
