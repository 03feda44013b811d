"""The real bundled SmolLM2-135M-Instruct: conversion, then generation and a tiny RM run."""

import json
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from worker.ml.config import GenerationConfig, RewardConfig
from worker.ml.data import Ranking
from worker.ml.generate import generate
from worker.ml.models import convert_default_model, load_tokenizer
from worker.ml.reward import train_reward
from worker.ml.scorer import RewardScorer

pytestmark = pytest.mark.smollm2


def test_conversion_writes_a_plain_folder_once(smollm2_data_dir, smollm2_dir):
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["pad_token_id"] == 0 and config["eos_token_id"] == 2
    tokenizer = load_tokenizer(smollm2_dir)
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.eos_token == "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        next_token = model(ids).logits[0, -1].argmax()
    assert tokenizer.decode(next_token).strip() == "Paris"

    weights = smollm2_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    started = time.perf_counter()
    assert convert_default_model(smollm2_data_dir) == smollm2_dir
    assert time.perf_counter() - started < 2 and weights.stat().st_mtime_ns == before  # reused
    assert not [p for p in smollm2_dir.parent.iterdir() if p.name.startswith(".")]


def test_generate_then_train_a_reward_model_end_to_end(smollm2_dir, tmp_path):
    prompts = ["Name a fruit.", [{"role": "user", "content": "Say hello."}], "What is 2+2?", "Name a colour."]
    cfg = GenerationConfig(k=4, max_new_tokens=12, batch_size=16, seed=1)
    results = generate(str(smollm2_dir), prompts, cfg, model_version="base")
    assert [len(s) for s in results] == [4, 4, 4, 4]
    assert any(c.text.strip() for s in results for c in s)
    for c in (c for s in results for c in s):
        assert (c.finish_reason == "length") == (c.token_count == 12)

    # A toy preference: shorter answers are better (ties share a group).
    rankings = []
    for prompt, samples in zip(prompts, results, strict=True):
        completions = [c.text for c in samples]
        lengths = sorted({len(t) for t in completions})
        groups = [[i for i, t in enumerate(completions) if len(t) == n] for n in lengths]
        rankings.append(Ranking(prompt, completions, groups, prompt_id=json.dumps(prompt)))
    rm_cfg = RewardConfig(
        model=str(smollm2_dir),
        mode="lora",
        lora_r=4,
        lora_targets=("q_proj",),
        batch_rankings=2,
        max_length=96,
        val_fraction=0.25,
    )
    metrics = train_reward(rm_cfg, rankings, tmp_path / "rm")
    assert metrics["train_prompts"] == 3 and metrics["val_prompts"] == 1
    assert metrics["steps"] == 2 and metrics["val_accuracy"] is not None

    scorer = RewardScorer.load(tmp_path / "rm", device="cpu")
    scores = scorer.score([prompts[0]] * 2, ["Apple.", "Apple."])
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    assert scores[0].item() == pytest.approx(scores[1].item(), abs=1e-3)
