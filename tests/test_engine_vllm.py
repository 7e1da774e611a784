"""engine.backend=vllm against a stand-in ``vllm`` module that computes, with transformers, what
vLLM's documented API returns (token ids with finish and stop reasons, prompt log-probs as
``{token: Logprob(logprob, rank)}`` per position, the first one None). The backend's mapping must
give the transformers backend's numbers. This checks Tether's side of the contract only: no GPU was
lent to this work, so vLLM itself has not run under it."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest
import torch

from tether.config import EngineConfig
from tether.engine import Engine, Prompt, SamplingParams, ScoreRequest
from tether.errors import TetherError


@dataclass
class Logprob:
    logprob: float
    rank: int


@dataclass
class FakeSamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None
    stop_token_ids: list[int] | None = None
    stop: list[str] | None = None
    include_stop_str_in_output: bool = False
    prompt_logprobs: int | None = None
    logprobs: int | None = None


@dataclass
class Choice:
    token_ids: list[int]
    finish_reason: str
    stop_reason: int | str | None
    logprobs: list[dict[int, Logprob]] | None = None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[Choice]
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None


def _position(logits: torch.Tensor, actual: int, top: int) -> dict[int, Logprob]:
    logp = torch.log_softmax(logits.double(), -1)
    ranks = lambda t: int((logp > logp[t]).sum()) + 1  # noqa: E731
    out = {actual: Logprob(float(logp[actual]), ranks(actual))}
    for t in torch.topk(logp, top).indices.tolist():
        out.setdefault(t, Logprob(float(logp[t]), ranks(t)))
    return out


@dataclass
class FakeLLM:
    """What ``vllm.LLM(model=...)`` returns, computed by the transformers model in ``model``."""

    model: object
    tokenizer: object
    calls: list = field(default_factory=list)

    @torch.no_grad()
    def _logits(self, ids: list[int]) -> torch.Tensor:
        return self.model(input_ids=torch.tensor([ids])).logits[0]

    def generate(self, inputs, params, use_tqdm=True):
        assert use_tqdm is False
        self.calls.append(len(inputs))
        return [self._one(list(i["prompt_token_ids"]), p) for i, p in zip(inputs, params, strict=True)]

    def _one(self, prompt: list[int], p: FakeSamplingParams) -> RequestOutput:
        prompt_logprobs = None
        if p.prompt_logprobs is not None:
            logits = self._logits(prompt)
            prompt_logprobs = [None] + [
                _position(logits[i - 1], prompt[i], p.prompt_logprobs) for i in range(1, len(prompt))
            ]
        generator = torch.Generator().manual_seed(p.seed or 0)
        choices = []
        for _ in range(p.n):
            ids, logprobs, finish, reason = [], [], "length", None
            for _step in range(p.max_tokens):
                logits = self._logits(prompt + ids)[-1]
                if p.temperature > 0:
                    probs = torch.softmax(logits.double() / p.temperature, -1)
                    token = int(torch.multinomial(probs, 1, generator=generator))
                else:
                    token = int(logits.argmax())
                ids.append(token)
                if p.logprobs is not None:
                    logprobs.append(_position(logits, token, p.logprobs))
                if token in (p.stop_token_ids or []):
                    finish, reason = "stop", token  # vLLM keeps a non-special stop token: so do we
                    break
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                hit = next((s for s in p.stop or [] if s in text), None)
                if hit is not None:
                    finish, reason = "stop", hit
                    break
            choices.append(Choice(ids, finish, reason, logprobs if p.logprobs is not None else None))
        return RequestOutput(prompt, choices, prompt_logprobs)


@pytest.fixture()
def fake_vllm(monkeypatch):
    """Install the stand-in as ``vllm`` (and ``vllm.inputs``); ``made`` lists every LLM built."""
    made: list[dict] = []
    module = types.ModuleType("vllm")
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    module.inputs = inputs
    module.SamplingParams = FakeSamplingParams

    def LLM(model, tokenizer, dtype, seed, **options):  # noqa: N802 (vLLM's name)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        made.append({"model": model, "dtype": dtype, "seed": seed, **options})
        return FakeLLM(
            AutoModelForCausalLM.from_pretrained(model).eval(), AutoTokenizer.from_pretrained(model)
        )

    module.LLM = LLM
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    return made


PROMPTS = [
    Prompt(id="a", text="Name a colour."),
    Prompt(id="b", text="Count to three."),
    Prompt(id="c", text="The sky is", chat=False),
]
REQUESTS = [
    ScoreRequest(id="q1", context="The capital of France is", continuations=[" Paris", " a big city"]),
    ScoreRequest(id="q2", context="2 + 2 =", continuations=[" 4", " five"]),
]


def test_vllm_backend_gives_the_transformers_backend_numbers(tiny_model_dir, fake_vllm):
    config = EngineConfig(backend="vllm", vllm={"gpu_memory_utilization": 0.5})
    served = Engine.from_spec(str(tiny_model_dir), config)
    local = Engine.from_spec(str(tiny_model_dir), EngineConfig(device="cpu"))
    [made] = fake_vllm
    assert made["model"] == str(tiny_model_dir) and made["gpu_memory_utilization"] == 0.5
    assert served.loaded.device.type == "cpu"  # the transformers copy only tokenises
    params = SamplingParams(max_new_tokens=10)
    got, want = (
        served.generate(PROMPTS, params, progress=False),
        local.generate(PROMPTS, params, progress=False),
    )
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert [(c.text, c.finish_reason) for c in got] == [(c.text, c.finish_reason) for c in want]
    got, want = served.score(REQUESTS, progress=False), local.score(REQUESTS, progress=False)
    for g, w in zip(got, want, strict=True):
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
        assert g.is_greedy == w.is_greedy
    sequences = [served.tokenizer("The capital of France is Paris")["input_ids"], [1, 2, 3, 4]]
    for g, w in zip(served.backend.echo(sequences), local.backend.echo(sequences), strict=True):
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
        assert g.greedy_ids == w.greedy_ids
        assert g.greedy_logprobs == pytest.approx(w.greedy_logprobs, abs=1e-4)


def test_stop_strings_and_eos_map_like_transformers(tiny_model_dir, fake_vllm):
    served = Engine.from_spec(str(tiny_model_dir), EngineConfig(backend="vllm"))
    local = Engine.from_spec(str(tiny_model_dir), EngineConfig(device="cpu", decode_loop="transformers"))
    first = local.generate(PROMPTS[:1], SamplingParams(max_new_tokens=12), progress=False)[0]
    stop = first.text[3:5]  # a string the greedy answer contains
    params = SamplingParams(max_new_tokens=12, stop=[stop])
    got = served.generate(PROMPTS[:1], params, progress=False)[0]
    want = local.generate(PROMPTS[:1], params, progress=False)[0]
    assert got.text == want.text and got.finish_reason == want.finish_reason == "stop"
    backend = served.backend
    eos = backend.eos_ids[0]
    backend.llm._one = lambda prompt, p: RequestOutput(prompt, [Choice([5, 6, eos], "stop", eos)])
    [[sample]] = backend.generate([[1, 2]], SamplingParams(max_new_tokens=4), 0)
    assert sample.token_ids == [5, 6] and sample.hit_eos  # the EOS token is not part of the text
    backend.llm._one = lambda prompt, p: RequestOutput(prompt, [Choice([5, 6], "stop", "##")])
    [[sample]] = backend.generate([[1, 2]], SamplingParams(max_new_tokens=4), 0)
    assert sample.token_ids == [5, 6] and not sample.hit_eos  # a stop string is not an EOS


def test_sampled_requests_are_seeded_per_prompt_and_reproducible(tiny_model_dir, fake_vllm):
    served = Engine.from_spec(str(tiny_model_dir), EngineConfig(backend="vllm"))
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=2, seed=3)
    one = served.generate(PROMPTS[:2], params, progress=False)
    two = served.generate(PROMPTS[:2], params, progress=False)
    assert [c.token_ids for c in one] == [c.token_ids for c in two]
    other = served.generate(PROMPTS[:2], params.model_copy(update={"seed": 4}), progress=False)
    assert [c.token_ids for c in other] != [c.token_ids for c in one]


def test_a_lora_adapter_is_merged_once_for_vllm(tiny_model_dir, tmp_path):
    from dataclasses import replace

    from peft import LoraConfig, get_peft_model

    from tether.engine.vllm_backend import merged_model_dir
    from tether.models.load import load

    loaded = load(str(tiny_model_dir))
    assert merged_model_dir(loaded) == tiny_model_dir  # a plain model is loaded from where it is
    torch.manual_seed(0)
    lora = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    for module in lora.modules():
        if hasattr(module, "lora_B"):
            for weight in module.lora_B.values():
                torch.nn.init.normal_(weight.weight, std=1.0)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        expected = lora(input_ids=ids).logits
    adapted = replace(loaded, model=lora, adapter_path=tmp_path / "adapter", fingerprint="abc+def")
    out = merged_model_dir(adapted, cache_root=tmp_path / "merged")
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(out)(input_ids=ids).logits
    assert torch.allclose(merged, expected, atol=1e-4)
    assert (out / "tokenizer_config.json").exists()
    stamp = (out / "config.json").stat().st_mtime_ns
    assert merged_model_dir(adapted, cache_root=tmp_path / "merged") == out
    assert (out / "config.json").stat().st_mtime_ns == stamp  # written once


def test_without_vllm_installed_the_error_names_the_field_before_loading(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    loads = []
    monkeypatch.setattr("tether.engine.engine.load", lambda *a, **k: loads.append(a))
    with pytest.raises(TetherError) as err:
        Engine.from_spec(str(tiny_model_dir), EngineConfig(backend="vllm"))
    assert "engine.backend" in str(err.value) or err.value.where == "engine.backend"
    assert "vllm" in str(err.value) and loads == []
