"""Each PEFT method trains, saves an adapter, and reloads with plain peft to the same held-out
loss; prompt tuning pads instead of packing; QLoRA is refused where it cannot run."""

from __future__ import annotations

import random

import pytest
import torch
from peft import AutoPeftModelForCausalLM, IA3Config, LoraConfig, PeftConfig, PromptTuningConfig
from transformers import AutoModelForCausalLM

from worker.ml.model_zoo import save_family_model
from worker.ml.models import load_causal_lm, load_tokenizer, read_card
from worker.ml.peft_methods import ia3_targets
from worker.ml.sft import SFTConfig, evaluate, train_sft
from worker.ml.sft_data import as_example, encode_example

CPU = torch.device("cpu")
WORDS = "one two three four five six seven eight nine ten".split()
CONFIG_TYPES = {"lora": LoraConfig, "dora": LoraConfig, "ia3": IA3Config, "prompt_tuning": PromptTuningConfig}


def _examples(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        seq = [rng.choice(WORDS) for _ in range(rng.randint(1, 4))]
        out.append(as_example({"prompt": "say " + " ".join(seq), "completion": " ".join(seq)}))
    return out


@pytest.mark.parametrize("method", ["lora", "dora", "ia3", "prompt_tuning", "full"])
def test_each_method_trains_saves_and_reloads_with_plain_peft(tiny_model_dir, tmp_path, method):
    train, held = _examples(24, seed=0), _examples(6, seed=1)
    mode = "full" if method == "full" else "lora"
    cfg = SFTConfig(
        model=str(tiny_model_dir),
        mode=mode,
        peft_method="lora" if method == "full" else method,
        learning_rate=3e-3 if method in ("ia3", "prompt_tuning") else 1e-3,
        epochs=2,
        batch_tokens=128,
        num_virtual_tokens=4,
        autocast=False,
    )
    out = tmp_path / method
    metrics = train_sft(cfg, train, out, eval_data=held)
    assert metrics["steps"] >= 2 and len(metrics["eval_loss"]) == 2
    assert metrics["batching"] == ("padded" if method == "prompt_tuning" else "packed")
    assert 0 < metrics["trainable_params"] <= metrics["total_params"]
    assert (metrics["trainable_params"] == metrics["total_params"]) == (method == "full")

    if method == "full":
        reloaded = AutoModelForCausalLM.from_pretrained(out)
        assert read_card(out)["format"] == "transformers"
    else:
        saved = PeftConfig.from_pretrained(out)
        assert type(saved) is CONFIG_TYPES[method]
        assert getattr(saved, "use_dora", False) == (method == "dora")
        reloaded = AutoPeftModelForCausalLM.from_pretrained(out)
    # the folder holds the best epoch: plain peft's reload scores the held-out set the same
    tokenizer = load_tokenizer(out, padding_side="right")
    encoded = [encode_example(tokenizer, m, cfg.max_length) for m in held]
    packed = method != "prompt_tuning"
    n_virtual = cfg.num_virtual_tokens if method == "prompt_tuning" else 0
    loss = evaluate(reloaded.eval(), encoded, cfg, tokenizer.pad_token_id, CPU, packed, n_virtual)
    assert loss == pytest.approx(metrics["best_eval_loss"], abs=1e-4)
    base_loss = evaluate(load_causal_lm(tiny_model_dir, device=CPU), encoded, cfg, tokenizer.pad_token_id, CPU, True, 0)
    assert loss != pytest.approx(base_loss, abs=1e-6)  # the adapter changes the model
    if method == "prompt_tuning":  # a soft prompt is no weight delta: merging it is refused, by name
        with pytest.raises(ValueError, match="model: .* is a prompt-tuning adapter, which cannot be merged"):
            load_causal_lm(out, device=CPU)


def test_prompt_tuning_refuses_packing_when_asked_for_it():
    with pytest.raises(ValueError, match="padding_free: cannot be combined with peft_method 'prompt_tuning'"):
        SFTConfig(model="m", peft_method="prompt_tuning", padding_free=True)


def test_padded_batches_when_asked_train_like_packed_ones(tiny_model_dir, tmp_path):
    train, held = _examples(16, seed=0), _examples(4, seed=1)
    runs = {}
    for padding_free in (True, False):
        cfg = SFTConfig(
            model=str(tiny_model_dir), padding_free=padding_free, epochs=1, batch_tokens=10_000, autocast=False
        )
        runs[padding_free] = train_sft(cfg, train, tmp_path / str(padding_free), eval_data=held)
    assert runs[True]["batching"] == "packed" and runs[False]["batching"] == "padded"
    # one step over the same examples: the same loss, whichever way they are batched
    assert runs[True]["train_loss"] == pytest.approx(runs[False]["train_loss"], abs=1e-5)
    assert runs[True]["eval_loss"] == pytest.approx(runs[False]["eval_loss"], abs=1e-5)
    assert runs[True]["padding_fraction"] < runs[False]["padding_fraction"]


def test_ia3_targets_keys_values_and_the_mlp_output_of_each_family(tmp_path):
    expected = {"llama3": ["k_proj", "v_proj", "down_proj"], "gpt2": ["c_attn", "mlp.c_proj"]}
    for family, targets in expected.items():
        model = load_causal_lm(save_family_model(family, tmp_path / family), device=CPU)
        found, feedforward = ia3_targets(model, ())
        assert found == targets and feedforward == targets[-1:]
    with pytest.raises(ValueError, match="target_modules: .* name no module"):
        ia3_targets(model, ("q_proj",))


def test_gradient_checkpointing_trains_the_same_step(tiny_model_dir, tmp_path):
    train, held = _examples(12, seed=0), _examples(4, seed=1)
    losses = []
    for checkpointing in (False, True):
        cfg = SFTConfig(
            model=str(tiny_model_dir), gradient_checkpointing=checkpointing, epochs=2, batch_tokens=64, autocast=False
        )
        losses.append(train_sft(cfg, train, tmp_path / str(checkpointing), eval_data=held)["eval_loss"])
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
