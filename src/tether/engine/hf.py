"""The transformers backend: batched generation and prefix-sharing log-likelihood scoring."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from tether.engine.backend import EncodedScore, Sample, TokenScores
from tether.engine.decode import DecodeLoop, StepMode, StopMatcher
from tether.engine.types import SamplingParams
from tether.models.padding import left_pad, positions_from_mask


def _unwrap(model):
    """The plain causal LM inside a PEFT wrapper (adapters stay active: they live in its modules)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class StopOnStrings:
    """Stops a row once its *generated* text contains a stop string. (transformers' own
    ``stop_strings`` also matches across the prompt's tail, e.g. a chat template's final newline
    plus one generated newline ends a "\\n\\n" stop at once.) Each row's text is followed
    incrementally (:class:`StopMatcher`): a step decodes only the rows' new tokens."""

    def __init__(self, prompt_width: int, stops: list[str], tokenizer):
        self.prompt_width = prompt_width
        self.stops = list(stops)
        self.tokenizer = tokenizer
        self.matchers: list[StopMatcher] = []

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        if not self.matchers:
            self.matchers = [StopMatcher(self.stops, self.tokenizer) for _ in range(input_ids.shape[0])]
        seen = len(self.matchers[0].tokens)  # every row gains one token a step
        new_tokens = input_ids[:, self.prompt_width + seen :].tolist()
        done = []
        for matcher, row in zip(self.matchers, new_tokens, strict=True):
            for token in row:
                matcher.push(token)
            done.append(matcher.hit)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class HFBackend:
    def __init__(self, model, tokenizer, device: torch.device, decode_step: StepMode = "eager"):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = self._eos_ids()
        causal_lm = _unwrap(model)
        self._decoder = causal_lm.get_decoder()
        self._head = causal_lm.get_output_embeddings()
        self._softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
        self._loop: DecodeLoop | None = None
        self._decode_step = decode_step

    def _eos_ids(self) -> list[int]:
        ids = set()
        gen_config = getattr(self.model, "generation_config", None)
        configured = getattr(gen_config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(configured)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return sorted(ids)

    # ------------------------------------------------------------------ generation

    @torch.inference_mode()
    def generate(
        self, prompts: list[list[int]], params: SamplingParams, batch_index: int
    ) -> list[list[Sample]]:
        input_ids, attention_mask = left_pad(prompts, self.pad_id, self.device)
        sampling = params.temperature > 0
        kwargs = dict(
            max_new_tokens=params.max_new_tokens,
            do_sample=sampling,
            num_return_sequences=params.n,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
        )
        if sampling:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
            # One seed per batch keeps results reproducible for a fixed config and batch plan.
            torch.manual_seed(params.seed * 1_000_003 + batch_index)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [StopOnStrings(input_ids.shape[1], params.stop, self.tokenizer)]
            )
        output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        new_tokens = output[:, input_ids.shape[1] :].tolist()
        results: list[list[Sample]] = []
        eos = set(self.eos_ids)
        for p in range(len(prompts)):
            samples = []
            for s in range(params.n):
                row = new_tokens[p * params.n + s]
                cut = next((i for i, t in enumerate(row) if t in eos), None)
                samples.append(
                    Sample(token_ids=row[:cut] if cut is not None else row, hit_eos=cut is not None)
                )
            results.append(samples)
        return results

    def decode_loop_fits(self, tokens: int) -> bool:
        """Whether :class:`DecodeLoop` can run sequences of ``tokens`` tokens on this model. transformers
        marks the models whose attention works with a static cache (``_can_compile_fullgraph``); a
        sliding-window model qualifies only while sequences fit its window (the loop hands every layer
        the same full mask)."""
        causal_lm = _unwrap(self.model)
        if not getattr(causal_lm, "_can_compile_fullgraph", False):
            return False
        window = getattr(causal_lm.config.get_text_config(), "sliding_window", None)
        return not window or tokens <= window

    def decode(
        self, prompts: list[list[int]], params: SamplingParams, slots: int, keys: list[int] | None = None
    ) -> Iterator[tuple[int, list[Sample], float]]:
        """Continuous batching through Tether's decode loop: ``(prompt index, samples, latency)`` as
        prompts finish, ``slots`` sequences in flight; ``keys`` seed each prompt's samples."""
        if self._loop is None:
            self._loop = DecodeLoop(
                self.model, self.tokenizer, self.eos_ids, self.pad_id, self.device, self._decode_step
            )
        return self._loop.run(prompts, params, slots, keys=keys)

    # ------------------------------------------------------------------ scoring

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self._head(hidden).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    @torch.inference_mode()
    def score(self, requests: list[EncodedScore]) -> list[TokenScores]:
        """Run all contexts once (left-padded batch), keep their KV cache, then run every
        continuation of every item in one right-padded batch on top of the shared cache.
        The LM head runs only where a continuation token is predicted, never over the whole
        sequence: on a 49k vocabulary that head and its log_softmax dominate naive scoring."""
        ctx_ids, ctx_mask = left_pad([r.context_ids for r in requests], self.pad_id, self.device)
        ctx_positions = positions_from_mask(ctx_mask)
        ctx_out = self._decoder(
            input_ids=ctx_ids, attention_mask=ctx_mask, position_ids=ctx_positions, use_cache=True
        )
        last_hidden = ctx_out.last_hidden_state[:, -1, :]  # left padding: the last column is real
        single_token = all(len(c) == 1 for r in requests for c in r.continuation_ids)
        if single_token:
            # Every continuation is one token (MMLU-style " A"/" B"): one head row per item suffices.
            logprobs = torch.log_softmax(self._logits(last_hidden), dim=-1)
            greedy = logprobs.argmax(-1)
            results = []
            for i, r in enumerate(requests):
                ids = [c[0] for c in r.continuation_ids]
                results.append(
                    TokenScores(
                        logprobs=logprobs[i, ids].tolist(), is_greedy=[bool(greedy[i] == t) for t in ids]
                    )
                )
            return results

        owner = [i for i, r in enumerate(requests) for _ in r.continuation_ids]
        conts = [c for r in requests for c in r.continuation_ids]
        width = max(len(c) for c in conts)
        cont_ids = torch.full((len(conts), width), self.pad_id, dtype=torch.long)
        cont_mask = torch.zeros((len(conts), width), dtype=torch.long)
        for j, c in enumerate(conts):
            cont_ids[j, : len(c)] = torch.tensor(c)
            cont_mask[j, : len(c)] = 1
        cont_ids, cont_mask = cont_ids.to(self.device), cont_mask.to(self.device)
        index = torch.tensor(owner, device=self.device)
        cache = ctx_out.cache
        cache.batch_select_indices(index)
        full_mask = torch.cat([ctx_mask[index], cont_mask], dim=1)
        ctx_lengths = ctx_mask.sum(-1)[index]
        positions = ctx_lengths[:, None] + torch.arange(width, device=self.device)[None, :]
        cont_out = self._decoder(
            input_ids=cont_ids, attention_mask=full_mask, position_ids=positions, cache=cache, use_cache=False
        )
        # Token t of a continuation is predicted by the hidden state just before it: the context's
        # last state for t=0, else the continuation's own state at t-1.
        predictors = torch.cat([last_hidden[index][:, None, :], cont_out.last_hidden_state[:, :-1, :]], dim=1)
        flat_mask = cont_mask.bool()
        logits = self._logits(predictors[flat_mask])
        logprobs = torch.log_softmax(logits, dim=-1)
        targets = cont_ids[flat_mask]
        token_lp = logprobs.gather(-1, targets[:, None]).squeeze(-1)
        token_greedy = logprobs.argmax(-1) == targets
        row_of = torch.arange(len(conts), device=self.device)[:, None].expand_as(cont_mask)[flat_mask]
        sums = torch.zeros(len(conts), dtype=torch.float64, device=self.device).index_add_(
            0, row_of, token_lp.double()
        )
        misses = torch.zeros(len(conts), dtype=torch.long, device=self.device).index_add_(
            0, row_of, (~token_greedy).long()
        )
        results, j = [], 0
        for r in requests:
            k = len(r.continuation_ids)
            results.append(
                TokenScores(
                    logprobs=sums[j : j + k].tolist(), is_greedy=[bool(m == 0) for m in misses[j : j + k]]
                )
            )
            j += k
        return results
