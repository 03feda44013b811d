"""Tiny-model fixtures for the ML library (shared by the generation, reward and PPO tests).

Tiny models are random-weight Llamas built in milliseconds on CPU; only tests marked
`smollm2` touch the real bundled model, converted once into the repo's data/ folder (the same
place `make model` puts it) and reused across runs.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from worker.ml.models import convert_default_model, default_model_dir
from worker.ml.tiny import save_tiny_model, tiny_causal_lm, tiny_tokenizer

REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(autouse=True)
def _seeded_and_small():
    """Deterministic weights/sampling per test; 2 threads is what this machine has anyway."""
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_tok():
    """Word-level ChatML tokenizer with pad (<|endoftext|>, id 0) distinct from eos (<|im_end|>)."""
    return tiny_tokenizer()


@pytest.fixture
def tiny_model(tiny_tok):
    """(model, tokenizer): fresh random tiny Llama, fp32, eval mode, CPU."""
    return tiny_causal_lm(tiny_tok)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny model + tokenizer folder, loadable with load_causal_lm / load_tokenizer."""
    path = tmp_path_factory.mktemp("tiny-model")
    save_tiny_model(path)
    return path


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The converted SmolLM2-135M-Instruct folder (converts on first use, ~40 s)."""
    return convert_default_model(REPO_DATA_DIR)


def smollm2_converted() -> bool:
    return (default_model_dir(REPO_DATA_DIR) / "config.json").is_file()
