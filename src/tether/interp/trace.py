"""Causal tracing (Meng et al. 2022, "ROME"): which hidden states carry a fact.

For each prompt (``{"id", "prompt", "subject", "answer"}``; the subject a span of the prompt, the
answer its continuation, e.g. " Paris"):

1. a clean run gives p(answer's first token);
2. corrupted runs add Gaussian noise (``noise`` × the std of the subject tokens' embeddings) to the
   subject tokens' embeddings, ``samples`` times;
3. each restored run copies one clean hidden state into a corrupted run: the residual stream leaving
   layer l at token t, or (ROME's windows) the MLP or attention outputs of the ``window`` layers
   around l at token t; its p(answer) says how much of the fact that state carries.

Restored runs reuse the corrupted runs (:func:`reused_probs`), which gives the same numbers as
running each one whole (:func:`restored_probs`, kept as the reference and tested against it):

* a restore at token t changes nothing before t (the model is causal), so positions before t come
  from the corrupted run's KV cache and only tokens t… are run;
* a restore at layer l (a window's first layer) changes nothing below l, so the row enters layer l
  with the corrupted run's input there, and a batch skips the layers below all of its rows' starts.

On the default model that is about a third of the work. Rows are batched by token, ``batch_size``
per forward pass, each row with its own noise and its own restore; only the last position's logits
are computed.
Per prompt the result is ``[tokens, layers]`` per kind; across prompts, tokens are grouped as ROME
does (first / middle / last subject token, first subsequent token, further tokens, last token).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field

from tether.errors import DataError
from tether.interp.config import TraceConfig
from tether.interp.hooks import (
    find_layers,
    hook_name,
    hooked,
    layer_output_kinds,
    parse_name,
    skipping_layers,
)
from tether.models.head import contiguous_head_input
from tether.models.kv import cache_of, returned_keys_values

KINDS = {"residual": "hook_resid_post", "mlp": "hook_mlp_out", "attention": "hook_attn_out"}
GROUPS = (
    "first subject token",
    "middle subject tokens",
    "last subject token",
    "first subsequent token",
    "further tokens",
    "last token",
)


class Fact(BaseModel):
    """One factual prompt: ``subject`` appears in ``prompt``; ``answer`` continues it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    prompt: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    answer: str = Field(min_length=1)


def read_facts(path: str | Path) -> list[Fact]:
    """Facts from JSONL; a subject that is not in its prompt is a DataError naming file:line."""
    from tether.data.jsonl import iter_numbered

    facts, seen = [], {}
    for lineno, fact in iter_numbered(path, Fact):
        if fact.subject not in fact.prompt:
            raise DataError(
                f"subject {fact.subject!r} does not occur in the prompt {fact.prompt!r}",
                where=f"{path}:{lineno}",
                hint="the subject must be copied exactly (case and spaces) from the prompt",
            )
        if fact.id in seen:
            raise DataError(
                f"id {fact.id!r} repeats (first on line {seen[fact.id]})", where=f"{path}:{lineno}"
            )
        seen[fact.id] = lineno
        facts.append(fact)
    if not facts:
        raise DataError("file has no facts", where=str(path), hint="add one JSON object per line")
    return facts


def encode_fact(tokenizer: Any, fact: Fact) -> tuple[list[int], list[int], int]:
    """(prompt token ids, the subject's token positions, the answer's first token id)."""
    enc = tokenizer(fact.prompt, return_offsets_mapping=True)
    start = fact.prompt.index(fact.subject)
    end = start + len(fact.subject)
    positions = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > start]
    full = tokenizer(fact.prompt + fact.answer)["input_ids"]
    ids = enc["input_ids"]
    answer = full[len(ids)] if full[: len(ids)] == ids and len(full) > len(ids) else None
    if answer is None:
        answer = tokenizer(fact.answer, add_special_tokens=False)["input_ids"][0]
    return ids, positions, answer


def _answer_probs(model: Any, ids: torch.Tensor, answer: int) -> torch.Tensor:
    with contiguous_head_input(model, float32=True):
        out = model(input_ids=ids, logits_to_keep=1, use_cache=False)
    return torch.softmax(out.logits[:, -1].float(), dim=-1)[:, answer]


def _corrupter(subject: Sequence[int], noises: torch.Tensor):
    """A hook adding ``noises[r]`` to row r's subject-token embeddings (the corrupted run)."""

    def corrupt(x: torch.Tensor, _name: str) -> torch.Tensor:
        x = x.clone()
        x[:, list(subject)] += noises.to(x.dtype)
        return x

    return corrupt


def restored_probs(
    model: Any,
    ids: Sequence[int],
    subject: Sequence[int],
    answer: int,
    noises: torch.Tensor,
    restores: Sequence[Sequence[tuple[str, int]]],
    clean: dict[str, torch.Tensor],
) -> torch.Tensor:
    """p(answer) for one corrupted run per row: row r adds ``noises[r]`` (``[len(subject), d]``) to
    the subject's embeddings and copies ``clean[name][0, token]`` into each (hook point, token) of
    ``restores[r]``. One forward pass for all rows."""
    n = len(restores)
    batch = torch.tensor([list(ids)] * n, device=noises.device)
    by_point: dict[str, list[tuple[int, int]]] = {}
    for row, points in enumerate(restores):
        for name, token in points:
            by_point.setdefault(name, []).append((row, token))

    corrupt = _corrupter(subject, noises)

    def restorer(pairs: list[tuple[int, int]]):
        rows = torch.tensor([r for r, _ in pairs])
        tokens = torch.tensor([t for _, t in pairs])

        def fn(x: torch.Tensor, name: str) -> torch.Tensor:
            x = x.clone()
            x[rows, tokens] = clean[name][0, tokens].to(x.dtype)
            return x

        return fn

    hooks: dict[str, Any] = {"blocks.0.hook_resid_pre": [corrupt]}
    for name, pairs in by_point.items():
        hooks.setdefault(name, []).append(restorer(pairs))
    with torch.no_grad(), hooked(model, hooks):
        return _answer_probs(model, batch, answer).cpu()


def _windows(layer: int, n_layers: int, window: int) -> range:
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


class _Corrupted(NamedTuple):
    """The corrupted runs of one prompt, one per noise sample: what enters each layer
    (``[samples, tokens, d]``), the per-layer keys and values, and p(answer)."""

    inputs: list[torch.Tensor]
    keys_values: list[tuple[torch.Tensor, torch.Tensor]]
    probs: torch.Tensor
    layer_returns_tuple: bool


def _corrupted_runs(
    model: Any, ids: Sequence[int], subject: Sequence[int], answer: int, noises: torch.Tensor
) -> _Corrupted:
    layers = find_layers(model)
    batch = torch.tensor([list(ids)] * noises.shape[0], device=noises.device)
    inputs: dict[int, torch.Tensor] = {}

    corrupt = _corrupter(subject, noises)

    def keep(x: torch.Tensor, name: str) -> None:
        inputs[parse_name(name, len(layers))[0]] = x.detach()

    hooks: dict[str, Any] = {hook_name(i, "hook_resid_pre"): [keep] for i in range(len(layers))}
    hooks[hook_name(0, "hook_resid_pre")] = [corrupt, keep]
    with (
        torch.no_grad(),
        hooked(model, hooks),
        contiguous_head_input(model, float32=True),
        layer_output_kinds(layers) as returns_tuple,
    ):
        out = model(input_ids=batch, logits_to_keep=1, use_cache=True)
    keys_values = returned_keys_values(out)
    probs = torch.softmax(out.logits[:, -1].float(), dim=-1)[:, answer].cpu()
    return _Corrupted([inputs[i] for i in range(len(layers))], keys_values, probs, returns_tuple[0])


class _Restore(NamedTuple):
    """One restored run: noise ``sample``, the clean states copied in at token ``token`` (``points``),
    and ``start``, the first layer whose output can differ from the corrupted run's."""

    sample: int
    token: int
    start: int
    points: tuple[str, ...]


def reused_probs(
    model: Any,
    ids: Sequence[int],
    answer: int,
    corrupted: _Corrupted,
    rows: Sequence[_Restore],
    clean: dict[str, torch.Tensor],
) -> torch.Tensor:
    """p(answer) of restored runs that all restore at one token t, reusing the corrupted runs:
    states before t are the corrupted run's (the model is causal), so they come from its KV cache;
    layers before a row's ``start`` are the corrupted run's too, so the row enters at ``start`` with
    the corrupted run's input there and the layers below every row's start are skipped. Same
    numbers as :func:`restored_probs`, at a fraction of the work."""
    layers = find_layers(model)
    token = rows[0].token
    if any(r.token != token for r in rows):
        raise ValueError("reused_probs: every row must restore at the same token")
    device = corrupted.inputs[0].device
    samples = torch.tensor([r.sample for r in rows], device=device)
    suffix = torch.tensor([list(ids[token:])] * len(rows), device=device)
    cache = None
    if token > 0:
        cache = cache_of(
            [(k[samples, :, :token], v[samples, :, :token]) for k, v in corrupted.keys_values], model.config
        )
    hooks: dict[str, list[Any]] = {}
    for start in sorted({r.start for r in rows}):
        which = torch.tensor([i for i, r in enumerate(rows) if r.start == start], device=device)
        entering = corrupted.inputs[start][samples[which], token:]

        def enter(x: torch.Tensor, _name: str, which=which, entering=entering) -> torch.Tensor:
            x = x.clone()
            x[which] = entering.to(x.dtype)
            return x

        hooks.setdefault(hook_name(start, "hook_resid_pre"), []).append(enter)
    by_point: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        for name in r.points:
            by_point.setdefault(name, []).append(i)
    for name, which_rows in by_point.items():
        state = clean[name][0, token]

        def restore(x: torch.Tensor, _name: str, which=which_rows, state=state) -> torch.Tensor:
            x = x.clone()
            x[which, 0] = state.to(x.dtype)
            return x

        hooks.setdefault(name, []).append(restore)
    lowest = min(r.start for r in rows)
    with (
        torch.no_grad(),
        hooked(model, hooks),
        skipping_layers(layers, lowest, corrupted.layer_returns_tuple),
        contiguous_head_input(model, float32=True),
    ):
        out = model(input_ids=suffix, cache=cache, use_cache=cache is not None, logits_to_keep=1)
    return torch.softmax(out.logits[:, -1].float(), dim=-1)[:, answer].cpu()


def subject_noise(config: TraceConfig, n_subject: int, d_model: int, noise_std: float) -> torch.Tensor:
    """The noise of a fact's corrupted runs, ``[samples, n_subject, d_model]``: seeded by
    ``config.seed`` alone, so every fact with the same subject length gets the same draw."""
    gen = torch.Generator().manual_seed(config.seed)
    return torch.randn(config.samples, n_subject, d_model, generator=gen) * (config.noise * noise_std)


def trace_fact(
    model: Any, tokenizer: Any, fact: Fact, noise_std: float, config: TraceConfig
) -> dict[str, Any]:
    """The restored-probability grids ``[tokens, layers]`` of one fact, per kind."""
    ids, subject, answer = encode_fact(tokenizer, fact)
    layers = find_layers(model)
    n_layers, n_tok = len(layers), len(ids)
    names = [hook_name(i, p) for i in range(n_layers) for p in KINDS.values()]
    store: dict[str, torch.Tensor] = {}
    keep = {n: (lambda x, name: store.__setitem__(name, x.detach().clone())) for n in names}
    device = model.get_input_embeddings().weight.device
    with torch.no_grad(), hooked(model, keep):
        clean_p = float(_answer_probs(model, torch.tensor([ids], device=device), answer)[0])
    noise = subject_noise(config, len(subject), model.get_input_embeddings().weight.shape[1], noise_std)
    corrupted = _corrupted_runs(model, ids, subject, answer, noise.to(device))
    # A state before the subject is the same in the clean and the corrupted run (the model is
    # causal): restoring it changes nothing, so those cells are the corrupted probability, not run.
    first = subject[0]
    cells: dict[tuple[str, int, int], list[_Restore]] = {}
    for kind, point in KINDS.items():
        for layer in range(n_layers):
            span = [layer] if kind == "residual" else list(_windows(layer, n_layers, config.window))
            for t in range(first, n_tok):
                cells[kind, layer, t] = [
                    _Restore(s, t, span[0], tuple(hook_name(j, point) for j in span))
                    for s in range(config.samples)
                ]
    probs: dict[_Restore, float] = {}
    for t in range(first, n_tok):
        # one token at a time (the reused prefix must be the same length), lowest start first so
        # that each batch skips as many layers as it can
        at_t = sorted((r for (_k, _l, tt), rs in cells.items() if tt == t for r in rs), key=lambda r: r.start)
        for begin in range(0, len(at_t), config.batch_size):
            chunk = at_t[begin : begin + config.batch_size]
            for r, p in zip(
                chunk, reused_probs(model, ids, answer, corrupted, chunk, store).tolist(), strict=True
            ):
                probs[r] = p
    corrupted_p = float(corrupted.probs.mean())
    grids = {}
    for kind in KINDS:
        block = torch.full((n_layers, n_tok), corrupted_p)
        for layer in range(n_layers):
            for t in range(first, n_tok):
                block[layer, t] = sum(probs[r] for r in cells[kind, layer, t]) / config.samples
        grids[kind] = block.T.tolist()  # [tokens, layers]
    return {
        "id": fact.id,
        "prompt": fact.prompt,
        "subject": fact.subject,
        "answer": fact.answer,
        "tokens": [tokenizer.decode([i]) for i in ids],
        "subject_positions": subject,
        "clean_p": clean_p,
        "corrupted_p": corrupted_p,
        "grids": grids,
    }


def token_groups(n_tokens: int, subject: Sequence[int]) -> dict[str, list[int]]:
    """ROME's token groups for a prompt of ``n_tokens`` whose subject covers ``subject``."""
    first, last = subject[0], subject[-1]
    groups = {
        "first subject token": [first],
        "middle subject tokens": list(subject[1:-1]),
        "last subject token": [last] if last != first else [],
        "first subsequent token": [last + 1] if last + 1 < n_tokens - 1 else [],
        "further tokens": list(range(last + 2, n_tokens - 1)),
        "last token": [n_tokens - 1],
    }
    return groups


def aggregate(traces: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per kind, ``[groups, layers]``: the restored probability averaged over a prompt's tokens in
    each group, then over the prompts that have the group; and where it peaks."""
    out: dict[str, Any] = {"groups": list(GROUPS), "kinds": {}, "peaks": {}}
    for kind in KINDS:
        rows = []
        for group in GROUPS:
            per_prompt = []
            for tr in traces:
                positions = token_groups(len(tr["tokens"]), tr["subject_positions"])[group]
                if positions:
                    grid = torch.tensor(tr["grids"][kind])
                    per_prompt.append(grid[positions].mean(0))
            rows.append(torch.stack(per_prompt).mean(0).tolist() if per_prompt else None)
        n_layers = len(next(r for r in rows if r is not None))
        rows = [r if r is not None else [float("nan")] * n_layers for r in rows]
        out["kinds"][kind] = rows
        flat = torch.tensor(rows)
        flat = torch.where(flat.isnan(), torch.full_like(flat, -1.0), flat)
        g, layer = divmod(int(flat.argmax()), n_layers)
        out["peaks"][kind] = {"token": GROUPS[g], "layer": layer, "value": float(flat[g, layer])}
    out["counts"] = {
        g: sum(bool(token_groups(len(t["tokens"]), t["subject_positions"])[g]) for t in traces)
        for g in GROUPS
    }
    return out


def subject_noise_std(model: Any, tokenizer: Any, facts: Sequence[Fact]) -> float:
    """The std of the subject tokens' embeddings over every fact (ROME's noise unit)."""
    embed = model.get_input_embeddings()
    rows = []
    with torch.no_grad():
        for fact in facts:
            ids, subject, _ = encode_fact(tokenizer, fact)
            vectors = embed(torch.tensor([ids], device=embed.weight.device))[0, subject]
            rows.append(vectors.float().cpu())
    return float(torch.cat(rows).std())


def run_trace(
    engine: Any,
    facts: Sequence[Fact],
    config: TraceConfig,
    run: Any,
    *,
    say: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, Any]:
    """Trace every fact; write ``trace.json``, ``trace.png`` and ``interp.html`` into ``run``."""
    from tether.interp.report import plot_panels, write_trace_report
    from tether.progress import progress_bar

    model, tok = engine.model, engine.tokenizer
    std = subject_noise_std(model, tok, facts)
    path = run.artifact("trace/facts.jsonl")
    done = {}
    if path.exists():  # resume: facts traced before an interruption are kept
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["id"]] = rec
    traces = []
    with progress_bar("causal tracing", total=len(facts), enabled=progress) as bar, path.open("a") as handle:
        for fact in facts:
            if fact.id in done:
                traces.append(done[fact.id])
            else:
                traced = trace_fact(model, tok, fact, std, config)
                handle.write(json.dumps(traced) + "\n")
                handle.flush()
                traces.append(traced)
            bar.advance()
    summary = aggregate(traces)
    report = {
        "run": run.name,
        "model": engine.name,
        "fingerprint": engine.fingerprint,
        "config": config.model_dump(mode="json"),
        "prompts": len(traces),
        "noise_std": std,
        "clean_p": sum(t["clean_p"] for t in traces) / len(traces),
        "corrupted_p": sum(t["corrupted_p"] for t in traces) / len(traces),
        **summary,
        "facts": [
            {k: t[k] for k in ("id", "prompt", "subject", "answer", "clean_p", "corrupted_p")} for t in traces
        ],
    }
    run.artifact("trace.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    plot_panels(
        [(kind, summary["kinds"][kind], list(GROUPS)) for kind in KINDS],
        f"restored p(answer), {len(traces)} prompts, {engine.name}",
        run.artifact("trace.png"),
    )
    write_trace_report(report, run)
    return {
        "prompts": len(traces),
        "clean_p": report["clean_p"],
        "corrupted_p": report["corrupted_p"],
        "peaks": summary["peaks"],
    }


__all__ = ["GROUPS", "KINDS", "Fact", "aggregate", "read_facts", "restored_probs", "run_trace", "trace_fact"]
