"""pad_token_ids: left and right padding of token id lists into ids + attention mask."""

import pytest
import torch

from worker.ml.batching import pad_token_ids

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
