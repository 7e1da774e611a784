"""Causal tracing (Meng et al. 2022, "ROME"): which hidden states carry a fact.

For each prompt (``{"id", "prompt", "subject", "answer"}``; the subject a span of the prompt, the
answer its continuation, e.g. " Paris"):

1. a clean run gives p(answer's first token);
2. corrupted runs add Gaussian noise (``noise`` × the std of the subject tokens' embeddings) to the
   subject tokens' embeddings, ``samples`` times;
3. each restored run copies one clean hidden state into a corrupted run: the residual stream leaving
   layer l at token t, or (ROME's windows) the MLP or attention outputs of the ``window`` layers
   around l at token t; its p(answer) says how much of the fact that state carries.

Restorations are batched: one forward pass holds up to ``batch_size`` restored runs, each row with
its own noise and its own (layer, token), and only the last position's logits are computed.
Per prompt the result is ``[tokens, layers]`` per kind; across prompts, tokens are grouped as ROME
does (first / middle / last subject token, first subsequent token, further tokens, last token).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from tether.errors import DataError
from tether.interp.config import TraceConfig
from tether.interp.hooks import find_layers, hook_name, hooked

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
    out = model(input_ids=ids, logits_to_keep=1, use_cache=False)
    return torch.softmax(out.logits[:, -1].float(), dim=-1)[:, answer]


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

    def corrupt(x: torch.Tensor, _name: str) -> torch.Tensor:
        x = x.clone()
        x[:, list(subject)] += noises.to(x.dtype)
        return x

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
    gen = torch.Generator().manual_seed(config.seed)
    d = model.get_input_embeddings().weight.shape[1]
    noise = torch.randn(config.samples, len(subject), d, generator=gen) * (config.noise * noise_std)
    noise = noise.to(device)
    # A state before the subject is the same in the clean and the corrupted run (the model is
    # causal): restoring it changes nothing, so those cells are the corrupted probability, not run.
    first = subject[0]
    rows: list[tuple[str, int, int, int]] = [("none", -1, -1, s) for s in range(config.samples)]
    for kind in KINDS:
        rows += [
            (kind, layer, t, s)
            for layer in range(n_layers)
            for t in range(first, n_tok)
            for s in range(config.samples)
        ]
    probs = torch.empty(len(rows))
    for start in range(0, len(rows), config.batch_size):
        chunk = rows[start : start + config.batch_size]
        restores = []
        for kind, layer, t, _s in chunk:
            if kind == "none":
                restores.append([])
            elif kind == "residual":
                restores.append([(hook_name(layer, KINDS[kind]), t)])
            else:
                restores.append(
                    [(hook_name(j, KINDS[kind]), t) for j in _windows(layer, n_layers, config.window)]
                )
        probs[start : start + len(chunk)] = restored_probs(
            model, ids, subject, answer, noise[[s for *_, s in chunk]], restores, store
        )
    corrupted = float(probs[: config.samples].mean())
    grids = {}
    offset = config.samples
    for kind in KINDS:
        size = n_layers * (n_tok - first) * config.samples
        block = torch.full((n_layers, n_tok), corrupted)
        block[:, first:] = (
            probs[offset : offset + size].view(n_layers, n_tok - first, config.samples).mean(-1)
        )
        grids[kind] = block.T.tolist()  # [tokens, layers]
        offset += size
    return {
        "id": fact.id,
        "prompt": fact.prompt,
        "subject": fact.subject,
        "answer": fact.answer,
        "tokens": [tokenizer.decode([i]) for i in ids],
        "subject_positions": subject,
        "clean_p": clean_p,
        "corrupted_p": corrupted,
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
