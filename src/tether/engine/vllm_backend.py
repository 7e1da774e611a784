"""``engine.backend=vllm``: vLLM generates and scores on GPUs; the Engine keeps the rest.

The backend takes token ids and returns token ids, like :class:`~tether.engine.hf.HFBackend`, so
chat templating, truncation, stop strings, records and traces are the Engine's for both. What maps
onto what:

* generation: one vLLM request per prompt (``n`` samples, the EOS ids as ``stop_token_ids``, stop
  strings passed on and kept in the output so that the Engine cuts them as it does for transformers);
  a sampled request's seed is derived from ``params.seed``, the batch and the prompt's place in it;
* scoring: context + continuation as one prompt with ``prompt_logprobs=1`` and one generated token;
  a continuation token's log-prob is the prompt log-prob vLLM reports for it, greedy when its rank
  is 1. vLLM's prefix caching runs a shared context once;
* echo: the same prompt log-probs for a whole sequence, plus the greedy next token.

vLLM is an optional extra (``pip install -e .[vllm]`` on a CUDA machine). A LoRA adapter spec is
merged into its base once (PEFT's ``merge_and_unload``) into the cache, since vLLM loads a plain
model directory. Verified only against a stand-in that computes what vLLM reports with
transformers (``tests/test_engine_vllm.py``); no GPU was lent to this work, so it has not run on
vLLM itself.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tether.engine.backend import EchoScores, EncodedScore, Sample, TokenScores
from tether.engine.types import SamplingParams
from tether.errors import TetherError


def require_vllm() -> None:
    """A one-line error naming ``engine.backend`` when vLLM is not installed (checked before any
    model loads)."""
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise TetherError(
            "engine.backend=vllm needs the vllm package, which is not installed",
            where="engine.backend",
            hint="on a machine with a CUDA GPU: pip install -e '.[vllm]'; elsewhere use engine.backend=hf",
        ) from exc


def load_llm(model_dir: str | Path, *, dtype: str, seed: int, options: dict[str, Any]) -> Any:
    """A ``vllm.LLM`` over ``model_dir``."""
    require_vllm()
    from vllm import LLM

    return LLM(
        model=str(model_dir),
        tokenizer=str(model_dir),
        dtype=dtype,
        seed=seed,
        **options,
    )


def merged_model_dir(loaded: Any, cache_root: Path | None = None) -> Path:
    """A plain model directory vLLM can load: the base's own directory, or for a LoRA adapter the
    adapter merged into its base, written once under the cache (keyed by the fingerprint)."""
    if loaded.adapter_path is None:
        if loaded.weights_path is None:
            raise TetherError(
                f"engine.backend=vllm needs a local model directory; {loaded.spec!r} has none",
                where="engine.backend",
            )
        return Path(loaded.weights_path)
    from tether.models.cache import cache_root as tether_cache

    root = cache_root or tether_cache() / "merged"
    out = root / hashlib.sha256(loaded.fingerprint.encode()).hexdigest()[:16]
    if not (out / "config.json").exists():
        import copy

        # A copy: the Engine's own (CPU) model keeps its adapter for training and interpretability.
        merged = copy.deepcopy(loaded.model).merge_and_unload()
        tmp = out.with_name(out.name + ".partial")
        merged.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        tmp.rename(out)
    return out


class VLLMBackend:
    """The :class:`~tether.engine.backend.Backend` over a ``vllm.LLM`` (``llm``)."""

    def __init__(self, llm: Any, tokenizer: Any, eos_ids: list[int]):
        self.llm = llm
        self.tokenizer = tokenizer
        self.eos_ids = sorted(set(eos_ids))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    def _run(self, prompts: list[list[int]], params: list[Any]) -> list[Any]:
        from vllm.inputs import TokensPrompt

        inputs = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        return self.llm.generate(inputs, params, use_tqdm=False)

    # ------------------------------------------------------------------ generation

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, batch_index: int
    ) -> list[list[Sample]]:
        from vllm import SamplingParams as VLLMSamplingParams

        sampling = params.temperature > 0
        requests = [
            VLLMSamplingParams(
                n=params.n,
                temperature=params.temperature if sampling else 0.0,
                top_p=params.top_p if sampling else 1.0,
                max_tokens=params.max_new_tokens,
                seed=(params.seed * 1_000_003 + batch_index) * 1_009 + i if sampling else None,
                stop_token_ids=self.eos_ids,
                stop=list(params.stop) or None,
                include_stop_str_in_output=True,
            )
            for i in range(len(prompts))
        ]
        eos = set(self.eos_ids)
        out = []
        for request in self._run(prompts, requests):
            samples = []
            for choice in request.outputs:
                ids = list(choice.token_ids)
                stopped_by_eos = choice.finish_reason == "stop" and not isinstance(choice.stop_reason, str)
                if ids and ids[-1] in eos:
                    ids = ids[:-1]
                samples.append(Sample(token_ids=ids, hit_eos=stopped_by_eos))
            out.append(samples)
        return out

    def decode_loop_fits(self, tokens: int) -> bool:
        """vLLM batches continuously itself: the Engine hands it whole batches."""
        return False

    # ------------------------------------------------------------------ scoring

    def _prompt_logprobs(self, sequences: list[list[int]]) -> list[Any]:
        from vllm import SamplingParams as VLLMSamplingParams

        params = VLLMSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, logprobs=1)
        return self._run(sequences, [params] * len(sequences))

    @staticmethod
    def _greedy(position: dict[int, Any]) -> tuple[int, float]:
        token, info = min(position.items(), key=lambda kv: kv[1].rank)
        return token, info.logprob

    def score(self, requests: list[EncodedScore]) -> list[TokenScores]:
        sequences, spans = [], []
        for r in requests:
            for continuation in r.continuation_ids:
                sequences.append([*r.context_ids, *continuation])
                spans.append(len(r.context_ids))
        outputs = self._prompt_logprobs(sequences)
        sums, greedy = [], []
        for sequence, start, output in zip(sequences, spans, outputs, strict=True):
            positions = output.prompt_logprobs
            total, all_greedy = 0.0, True
            for i in range(start, len(sequence)):
                info = positions[i][sequence[i]]
                total += info.logprob
                all_greedy = all_greedy and info.rank == 1
            sums.append(total)
            greedy.append(all_greedy)
        results, j = [], 0
        for r in requests:
            k = len(r.continuation_ids)
            results.append(TokenScores(logprobs=sums[j : j + k], is_greedy=greedy[j : j + k]))
            j += k
        return results

    def echo(self, sequences: list[list[int]]) -> list[EchoScores]:
        out = []
        for sequence, output in zip(sequences, self._prompt_logprobs(sequences), strict=True):
            positions = output.prompt_logprobs
            logprobs = [positions[i][sequence[i]].logprob for i in range(1, len(sequence))]
            greedy = [self._greedy(positions[i]) for i in range(1, len(sequence))]
            choice = output.outputs[0]
            greedy.append(self._greedy(choice.logprobs[0]))
            out.append(
                EchoScores(
                    logprobs=logprobs,
                    greedy_ids=[t for t, _ in greedy],
                    greedy_logprobs=[lp for _, lp in greedy],
                )
            )
        return out


__all__ = ["VLLMBackend", "load_llm", "merged_model_dir", "require_vllm"]
