"""Rankings JSONL: validation names the line, labelers merge, the split is by prompt."""

import json

import pytest

from worker.ml.config import RewardConfig
from worker.ml.data import group_rankings, read_prompts, read_rankings, split_by_prompt
from worker.ml.synthetic import quality_rankings


def write_lines(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_rankings_round_trip_with_ties_chat_prompts_and_unranked_completions(tmp_path):
    path = write_lines(
        tmp_path / "r.jsonl",
        [
            {"prompt": "hi", "completions": ["a", "b", "c", "d"], "ranking": [[1], [0, 3], [2]]},
            "",
            {
                "prompt": [{"role": "user", "content": "yo"}],
                "completions": ["x", "y", "z", "w"],
                "ranking": [[3], [0]],
                "prompt_id": 17,
            },
        ],
    )
    first, second = read_rankings(path)
    assert first.levels() == [1, 0, 2, 1]
    assert second.levels() == [1, -1, -1, 0] and second.prompt_id == "17"
    assert first.prompt_id and first.prompt_id != second.prompt_id  # derived from the prompt


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("{not json", "line 2: invalid JSON"),
        ({"prompt": "p", "completions": ["a"]}, "line 2: missing field 'ranking'"),
        ({"prompt": 3, "completions": ["a"], "ranking": [[0]]}, "line 2: prompt must be"),
        ({"prompt": "p", "completions": ["a", 2], "ranking": [[0]]}, "line 2: completions must be"),
        ({"prompt": "p", "completions": ["a", "b"], "ranking": [[0], [2]]}, "line 2: ranking index 2"),
        ({"prompt": "p", "completions": ["a", "b"], "ranking": [[0], [0]]}, "line 2: completion 0 appears twice"),
        ({"prompt": "p", "completions": ["a", "b"], "ranking": [[0], []]}, "line 2: ranking must be"),
        ({"prompt": "p", "completions": ["a", "b"], "ranking": [[True], [1]]}, "line 2: ranking index True"),
    ],
)
def test_bad_lines_are_named(tmp_path, record, message):
    good = {"prompt": "p", "completions": ["a", "b"], "ranking": [[0], [1]]}
    path = write_lines(tmp_path / "r.jsonl", [good, record])
    with pytest.raises(ValueError, match=f"^{message}"):
        read_rankings(path)


def test_several_labelers_rankings_of_one_task_are_merged():
    rankings = quality_rankings(5, 4, labelers=3, seed=0)
    sets = group_rankings(rankings)
    assert len(rankings) == 15 and len(sets) == 5
    assert all(len(s.levels) == 3 for s in sets)


def test_split_is_by_prompt_and_reproducible():
    rankings = quality_rankings(50, 4, labelers=2, seed=0)
    # a second task for some prompts: same prompt id, different completions
    rankings += [r for r in quality_rankings(10, 4, seed=9)]
    sets = group_rankings(rankings)
    train, val = split_by_prompt(sets, 0.2, seed=1)
    assert {s.prompt_id for s in train}.isdisjoint({s.prompt_id for s in val})
    assert len(train) + len(val) == len(sets)
    assert len({s.prompt_id for s in val}) == 10
    again = split_by_prompt(sets, 0.2, seed=1)
    assert [s.prompt_id for s in again[1]] == [s.prompt_id for s in val]
    assert split_by_prompt(sets[:2], 0.01, seed=0)[1]  # at least one validation prompt


def test_prompts_file_accepts_strings_objects_and_chats(tmp_path):
    path = write_lines(
        tmp_path / "p.jsonl",
        ['"plain"', {"prompt": "obj", "prompt_id": "a"}, {"prompt": [{"role": "user", "content": "c"}]}],
    )
    prompts = read_prompts(path)
    assert [p for _, p in prompts] == ["plain", "obj", [{"role": "user", "content": "c"}]]
    assert prompts[1][0] == "a"
    bad = write_lines(tmp_path / "bad.jsonl", ['"ok"', '{"text": "x"}'])
    with pytest.raises(ValueError, match="^line 2"):
        read_prompts(bad)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mode", "qlora"),
        ("loss", "hinge"),
        ("lr_schedule", "step"),
        ("learning_rate", 0),
        ("epochs", 0),
        ("batch_rankings", 0),
        ("val_fraction", 1.0),
        ("max_length", 8),
        ("lora_r", 0),
        ("lora_targets", ("q_proj", "")),
        ("warmup_fraction", 1.0),
        ("max_tokens_per_forward", 1),
    ],
)
def test_reward_config_rejects_out_of_range_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}: "):
        RewardConfig(**{field: value})


def test_reward_config_round_trips_through_a_dict_and_rejects_unknown_keys():
    cfg = RewardConfig(model="m", lora_targets=("q_proj",), epochs=2)
    assert RewardConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown RewardConfig field"):
        RewardConfig.from_dict({"learning_rte": 1e-4})
