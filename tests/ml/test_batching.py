"""pad_token_ids: left and right padding of token id lists into ids + attention mask."""

import pytest
import torch

from worker.ml.batching import pack_prefix_groups, pad_token_ids

PAD = 9


def test_left_padding_ends_every_row_in_the_last_column():
    ids, mask = pad_token_ids([[1, 2, 3], [4], []], PAD, side="left")
    assert ids.tolist() == [[1, 2, 3], [PAD, PAD, 4], [PAD, PAD, PAD]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
    assert ids.device.type == "cpu"


def test_right_padding_starts_every_row_in_the_first_column():
    ids, mask = pad_token_ids([[1, 2, 3], [4], []], PAD, side="right")
    assert ids.tolist() == [[1, 2, 3], [4, PAD, PAD], [PAD, PAD, PAD]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]


def test_pad_id_never_leaks_into_the_mask_even_when_a_real_token_equals_it():
    ids, mask = pad_token_ids([[PAD, 5], [6]], PAD, side="right")
    assert ids.tolist() == [[PAD, 5], [6, PAD]]
    assert mask.tolist() == [[1, 1], [1, 0]]


def test_all_empty_rows_give_zero_width_and_the_device_is_honoured():
    ids, mask = pad_token_ids([[], []], PAD, side="left", device="cpu")
    assert ids.shape == mask.shape == (2, 0)
    ids, mask = pad_token_ids([(7, 8)], PAD, side="left", device=torch.device("cpu"))
    assert ids.tolist() == [[7, 8]] and mask.tolist() == [[1, 1]]


def test_an_unknown_side_is_refused():
    with pytest.raises(ValueError, match="side"):
        pad_token_ids([[1]], PAD, side="middle")  # type: ignore[arg-type]


def test_packing_lays_prompts_and_completions_back_to_back_with_their_own_positions():
    packed = pack_prefix_groups([([1, 2], [[3], [4, 5]]), ([6], [[7, 8]])], PAD, row_tokens=64)
    assert packed.ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8]]
    # each completion continues from its prompt's length, as in the full sequence
    assert packed.positions.tolist() == [[0, 1, 2, 2, 3, 0, 1, 2]]
    assert packed.reads.tolist() == [[0, 2], [0, 4], [0, 7]]  # last token of each completion
    allowed = packed.allowed[0].int().tolist()
    assert allowed[4] == [1, 1, 0, 1, 1, 0, 0, 0]  # 5 sees its prompt and 4, never completion 3
    assert allowed[2] == [1, 1, 1, 0, 0, 0, 0, 0]
    assert allowed[7] == [0, 0, 0, 0, 0, 1, 1, 1]  # the second prompt's group sees only itself


def test_packing_starts_a_new_row_at_the_budget_and_pads_rows_that_attend_only_to_themselves():
    packed = pack_prefix_groups([([1, 2], [[3, 4]]), ([5], [[6]]), ([7, 8, 10, 11, 13], [[12]])], PAD, row_tokens=6)
    assert packed.ids.tolist() == [[1, 2, 3, 4, 5, 6], [7, 8, 10, 11, 13, 12]]
    short = pack_prefix_groups([([1], [[2]]), ([3, 4, 5], [[6]])], PAD, row_tokens=3)
    assert short.ids.tolist() == [[1, 2, PAD, PAD], [3, 4, 5, 6]]
    assert short.allowed[0, 2].int().tolist() == [0, 0, 1, 0]  # a pad column: only itself
    assert bool(short.allowed.any(dim=-1).all())  # no attention row is empty
    assert short.padded_tokens == 8


def test_packing_refuses_an_empty_completion():
    with pytest.raises(ValueError, match="at least one token"):
        pack_prefix_groups([([1], [[2], []])], PAD, row_tokens=16)
