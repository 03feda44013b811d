"""Supervised fine-tuning: the loss mask (hand-checked), packing isolation on every model family,
learning a synthetic mapping, best-epoch selection, config refusals and the CLI."""

from __future__ import annotations

import json
import random

import pytest
import torch

from worker.ml.cli import main
from worker.ml.model_zoo import FAMILIES, save_family_model
from worker.ml.models import load_causal_lm, load_tokenizer, match_embeddings, read_card
from worker.ml.sft import SFTConfig, answer_logits, train_sft
from worker.ml.sft_data import (
    IGNORE,
    as_example,
    encode_example,
    packed_batch,
    padded_batch,
    plan_steps,
    split_examples,
)
from worker.ml.tiny import tiny_causal_lm, tiny_tokenizer

CPU = torch.device("cpu")
WORDS = "one two three four five six seven eight nine ten".split()


def _labelled(tokenizer, messages):
    encoded = encode_example(tokenizer, messages, max_length=64)
    tokens = tokenizer.convert_ids_to_tokens(encoded.ids)
    return [(t, label != IGNORE) for t, label in zip(tokens, encoded.labels, strict=True)]


def test_the_mask_trains_the_answer_and_its_end_of_turn_token_only(tiny_tok):
    messages = [
        {"role": "system", "content": "be good"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "yes please"},
    ]
    # <|im_start|>system\nbe good<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n
    # yes please<|im_end|>   (the word-level tokenizer drops the newlines)
    assert _labelled(tiny_tok, messages) == [
        ("<|im_start|>", False), ("system", False), ("be", False), ("good", False), ("<|im_end|>", False),
        ("<|im_start|>", False), ("user", False), ("hello", False), ("<|im_end|>", False),
        ("<|im_start|>", False), ("assistant", False),
        ("yes", True), ("please", True), ("<|im_end|>", True),
    ]  # fmt: skip


def test_only_the_last_assistant_turn_trains_in_a_multi_turn_conversation(tiny_tok):
    messages = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "thanks"},
        {"role": "assistant", "content": "good"},
    ]
    trained = [t for t, on in _labelled(tiny_tok, messages) if on]
    assert trained == ["good", "<|im_end|>"]


def test_without_a_chat_template_the_answer_follows_the_prompt_line_and_ends_with_eos(tmp_path):
    tokenizer = load_tokenizer(save_family_model("gpt2", tmp_path / "gpt2"), padding_side="right")
    assert not tokenizer.chat_template
    labelled = _labelled(tokenizer, as_example({"prompt": "hello", "completion": "yes please"}))
    assert [t for t, on in labelled if on] == ["yes", "please", tokenizer.eos_token]
    assert [t for t, on in labelled if not on] == ["hello", "\n"]  # the prompt line: "hello\n"


def test_truncation_keeps_the_start_and_skips_an_example_left_without_answer(tiny_tok):
    messages = as_example({"prompt": "one two three four", "completion": "five six"})
    full = encode_example(tiny_tok, messages, max_length=64)
    cut = encode_example(tiny_tok, messages, max_length=len(full.ids) - 1)
    assert cut.ids == full.ids[:-1] and cut.answer_tokens == 2  # lost its <|im_end|>
    assert encode_example(tiny_tok, messages, max_length=len(full.ids) - 3) is None


@pytest.mark.parametrize(
    "record, message",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "last message must be the assistant"),
        ({"prompt": "hi"}, "needs messages, or prompt and completion"),
        ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}, "string content"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "needs a prompt"),
    ],
)
def test_malformed_examples_are_refused_naming_where(record, message):
    with pytest.raises(ValueError, match=message) as error:
        as_example(record, "line 7")
    assert str(error.value).startswith("line 7:")


def _examples(n, seed=0, lengths=(1, 4)):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        seq = [rng.choice(WORDS) for _ in range(rng.randint(*lengths))]
        out.append(as_example({"prompt": "say " + " ".join(seq), "completion": " ".join(seq)}))
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_packed_examples_score_exactly_as_each_alone(tmp_path, family):
    """Per-token logits at every answer position of a packed row (several examples back to back,
    two rows) equal the model's own forward of each example alone: nothing crosses examples."""
    folder = save_family_model(family, tmp_path / family)
    model = load_causal_lm(folder, device=CPU, dtype=torch.float32)
    tokenizer = load_tokenizer(folder, padding_side="right")
    match_embeddings(model, tokenizer)  # GPT-2 and NeoX get a new pad token
    encoded = [encode_example(tokenizer, m, 128) for m in _examples(5, seed=3, lengths=(1, 6))]
    row = sum(len(e.ids) for e in encoded) // 2 + max(len(e.ids) for e in encoded)
    batch = packed_batch(encoded, tokenizer.pad_token_id, row_tokens=row)
    assert batch.ids.shape[0] == 2 and batch.real_tokens == sum(len(e.ids) for e in encoded)
    with torch.no_grad():
        logits, targets = answer_logits(model, batch, CPU)
        alone = []
        for e in encoded:
            full = model(input_ids=torch.tensor([e.ids])).logits[0]
            picks = [i for i in range(len(e.ids) - 1) if e.labels[i + 1] != IGNORE]
            alone.append((full[picks], torch.tensor([e.labels[i + 1] for i in picks])))
    # packed_batch reorders examples (first-fit decreasing): compare as multisets of rows
    reference = torch.cat([a for a, _ in alone])
    assert sorted(targets.tolist()) == sorted(torch.cat([t for _, t in alone]).tolist())
    for row_logits in logits:
        assert torch.isclose(reference, row_logits, atol=2e-5).all(dim=1).any()
    assert logits.shape == reference.shape


def test_padded_and_packed_batches_give_the_same_logits(tiny_model):
    model, tokenizer = tiny_model
    encoded = [encode_example(tokenizer, m, 64) for m in _examples(4, seed=1)]
    with torch.no_grad():
        packed, packed_targets = answer_logits(model, packed_batch(encoded, tokenizer.pad_token_id, 64), CPU)
        padded, padded_targets = answer_logits(model, padded_batch(encoded, tokenizer.pad_token_id), CPU)
    # the rows come in different orders (first-fit decreasing packs longest first)
    assert torch.allclose(packed.sum(1).sort().values, padded.sum(1).sort().values, atol=1e-4)
    assert sorted(packed_targets.tolist()) == sorted(padded_targets.tolist())


def test_steps_stay_within_the_token_budget():
    lengths = [5, 9, 3, 12, 7, 7, 2, 30]
    for padded in (False, True):
        steps = plan_steps(lengths, 20, random.Random(0), padded=padded)
        assert sorted(i for s in steps for i in s) == list(range(len(lengths)))
        for step in steps:
            cost = max(lengths[i] for i in step) * len(step) if padded else sum(lengths[i] for i in step)
            assert cost <= 20 or len(step) == 1


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory):
    """A tiny Llama (hidden 64) folder: the 32-wide default learns the copy task too slowly."""
    model, tokenizer = tiny_causal_lm(tiny_tokenizer(), hidden_size=64)
    path = tmp_path_factory.mktemp("tiny64")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_sft_learns_to_copy_and_keeps_the_best_epoch(wide_model_dir, tmp_path):
    """Copy task: "say one four" -> "one four". Random guessing costs ln(|vocab|) ~ 4.3 nats per
    answer token; a model that knows the answer is some of the ten number words but not which
    pays ln(10) = 2.3 on those; the bound 1.3 can only be met by reading the words off the prompt
    (measured: 1.05 after 10 epochs). The prompts held out are unseen word sequences."""
    data = _examples(200, seed=0, lengths=(1, 2))
    cfg = SFTConfig(model=str(wide_model_dir), mode="full", learning_rate=1e-2, epochs=10, batch_tokens=64)
    steps = []
    metrics = train_sft(cfg, data, tmp_path / "out", on_step=lambda step, stats: steps.append((step, stats)))
    assert metrics["eval_loss"][0] > 2.0
    assert metrics["best_eval_loss"] < 1.3
    assert metrics["best_eval_loss"] == min(metrics["eval_loss"])
    assert metrics["eval_loss"][metrics["best_epoch"] - 1] == metrics["best_eval_loss"]
    assert metrics["batching"] == "packed" and metrics["padding_fraction"] < 0.2
    eval_points = [stats for _, stats in steps if "eval_loss" in stats]
    assert [p["eval_loss"] for p in eval_points] == metrics["eval_loss"]
    assert len([s for s in steps if "loss" in s[1]]) == metrics["steps"]
    card = read_card(tmp_path / "out")
    assert card["kind"] == "sft" and card["format"] == "transformers" and card["data"]["eval_examples"] > 0


@pytest.mark.parametrize(
    "values, field",
    [
        ({"mode": "partial"}, "mode"),
        ({"peft_method": "adapters"}, "peft_method"),
        ({"mode": "full", "peft_method": "ia3"}, "peft_method"),
        ({"peft_method": "prompt_tuning", "padding_free": True}, "padding_free"),
        ({"peft_method": "qlora", "device": "cpu"}, "peft_method"),
        ({"batch_tokens": 2}, "batch_tokens"),
        ({"eval_fraction": 1.0}, "eval_fraction"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"grad_clip": -1}, "grad_clip"),
    ],
)
def test_bad_configs_are_refused_naming_the_field(values, field):
    with pytest.raises(ValueError) as error:
        SFTConfig(model="m", **values)
    assert str(error.value).startswith(f"{field}:")


def test_qlora_is_refused_without_cuda_and_bitsandbytes():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="peft_method: 'qlora' is not available here: no CUDA"):
        SFTConfig(model="m", peft_method="qlora")


def test_cli_trains_from_jsonl_in_both_forms(tiny_model_dir, tmp_path, capsys):
    lines = [{"messages": [{"role": "user", "content": "say one"}, {"role": "assistant", "content": "one"}]}]
    lines += [{"prompt": f"say {w}", "completion": w} for w in WORDS[1:6]]
    data = tmp_path / "demos.jsonl"
    data.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "sft"
    code = main(["train-sft", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out)]
                + ["--epochs", "1", "--eval-fraction", "0.3", "--lora-r", "4", "--no-autocast"])  # fmt: skip
    assert code == 0
    assert '"batching": "packed"' in capsys.readouterr().out
    card = read_card(out)
    assert card["kind"] == "sft" and card["format"] == "peft-adapter" and card["config"]["lora_r"] == 4
    assert card["data"]["train_examples"] + card["data"]["eval_examples"] == 6

    data.write_text(json.dumps(lines[0]) + "\n" + json.dumps({"prompt": "x"}) + "\n")
    assert main(["train-sft", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out)]) == 2
    assert "line 2: needs messages, or prompt and completion" in capsys.readouterr().err


def test_the_held_out_split_keeps_a_prompts_answers_together():
    data = _examples(20, seed=2)
    data += [as_example({"prompt": "say one", "completion": answer}) for answer in ("one", "one one", "one .")]
    train, held = split_examples(data, 0.3, seed=0)
    assert len(train) + len(held) == len(data) and held
    says_one = [m for m in data if m[0]["content"] == "say one"]
    assert all(m in train for m in says_one) or all(m in held for m in says_one)
    assert split_examples(data, 0.0, seed=0) == (data, [])
