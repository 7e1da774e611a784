"""``tether interp patch MODEL…``: activation patching between harmful and harmless runs: where
along the depth and along the post-instruction tokens the refusal decision is carried.

For each (harmful, harmless) pair of train prompts (``tether.interp.prompts``) and each (layer l,
post-instruction position p), the residual stream entering layer l (``hook_resid_pre``) at p is
copied from one run into the other:

* ``harmful_to_harmless``: the harmful run's state into the harmless run (is this state enough to
  make the model refuse?);
* ``harmless_to_harmful``: the reverse (is this state needed for the refusal?).

The metric is the refusal score of ``refusal-direction`` (log-odds of the refusal openings' first
tokens at the first answer token), normalised per cell over the pairs as
``(mean patched − mean harmless) / (mean harmful − mean harmless)``: 0 = the harmless run, 1 = the
harmful run, in both directions. Each cell carries a bootstrap CI over the pairs and n.

Prompts are left-padded, so the post-instruction positions (the chat template's tokens after the
user message) are the last columns of every row whatever the prompts' lengths; a forward pass holds
up to ``batch_size`` patched runs, each row with its own pair, layer and position.

Patched runs reuse the unpatched ones (:func:`target_runs`, :func:`reused_patched_scores`): a patch
at layer l and position p changes nothing before p (the model is causal) and nothing below l, so the
columns before p come from the target's KV cache, the row enters layer l with the target's input
there, and only the last few columns of the upper layers are run. The same scores as whole runs
(:func:`patched_scores`, kept as the reference and tested against it) at a small part of the work.

Stages (a rerun skips the finished ones): ``prompts`` (as refusal-direction's), ``patch/<mK>`` per
model (``patch/<mK>.json``), ``report`` (``patch.json``, ``patch.png``, ``patch_last.png``,
``interp.html``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from tether.config import EngineConfig
from tether.interp.config import PatchConfig
from tether.interp.refusal import DirectionContext, _chat, load_merged, model_keys, prompts_stage
from tether.models.head import contiguous_head_input
from tether.models.kv import cache_of, returned_keys_values
from tether.runs import Run, Stage, run_stages

# (pair, layer, positions): positions index the last k columns (0 = the k-th last token); layer None
# (and no positions) is the unpatched run.
Patch = tuple[int, int | None, tuple[int, ...]]


def patched_scores(
    engine: Any,
    targets: Sequence[list[int]],
    sources: torch.Tensor,
    patches: Sequence[Patch],
    refusal_ids: Sequence[int],
    *,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The refusal score of one patched run per patch ``(pair, layer, positions)``: ``targets[pair]``
    run with ``sources[pair, p, layer]`` written into the residual stream entering ``layer`` at each
    of the last-``k`` positions ``p`` (``sources`` is ``[pairs, k, layers, d]``, as
    :func:`tether.interp.forward.resid_pre` returns). Batched: rows never see each other's patches."""
    from tether.interp.directions import refusal_score
    from tether.interp.hooks import hook_name, hooked
    from tether.models.padding import left_pad, positions_from_mask

    model, tok = engine.model, engine.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    k = sources.shape[1]
    out = torch.empty(len(patches))
    for start in range(0, len(patches), batch_size):
        chunk = patches[start : start + batch_size]
        ids, mask = left_pad([list(targets[pair]) for pair, _, _ in chunk], pad, engine.loaded.device)
        width = ids.shape[1]
        by_layer: dict[int, list[tuple[int, int, int]]] = {}  # layer -> [(row, pair, position)]
        for row, (pair, layer, positions) in enumerate(chunk):
            if layer is not None:
                if len(targets[pair]) < k:
                    raise ValueError(f"target row {pair} is shorter than the {k} patched positions")
                by_layer.setdefault(layer, []).extend((row, pair, p) for p in positions)

        def writer(entries: list[tuple[int, int, int]], layer: int, width: int):
            rows = torch.tensor([r for r, _, _ in entries])
            cols = torch.tensor([width - k + p for _, _, p in entries])
            values = sources[[q for _, q, _ in entries], [p for _, _, p in entries], layer]

            def fn(x: torch.Tensor, _name: str) -> torch.Tensor:
                x = x.clone()
                x[rows.to(x.device), cols.to(x.device)] = values.to(device=x.device, dtype=x.dtype)
                return x

            return fn

        hooks = {hook_name(layer, "hook_resid_pre"): writer(e, layer, width) for layer, e in by_layer.items()}
        with torch.no_grad(), hooked(model, hooks), contiguous_head_input(model, float32=True):
            logits = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions_from_mask(mask),
                use_cache=False,
                logits_to_keep=1,
            ).logits[:, -1]
        out[start : start + len(chunk)] = refusal_score(logits.float().cpu(), refusal_ids)
        if on_batch:
            on_batch(len(chunk))
    return out


class TargetRuns(NamedTuple):
    """The unpatched runs of every target prompt, left-padded to one width ``W`` so that a column is
    the same position in every row: ids and mask ``[pairs, W]``, each layer's keys and values, and
    what enters each layer at the last ``k`` columns (``[pairs, k, layers, d]``), and the
    next-token logits (``[pairs, vocab]``, float32 on the CPU)."""

    ids: torch.Tensor
    mask: torch.Tensor
    keys_values: list[tuple[torch.Tensor, torch.Tensor]]
    entering: torch.Tensor
    logits: torch.Tensor
    layer_returns_tuple: bool


def target_runs(engine: Any, targets: Sequence[list[int]], k: int, *, batch_size: int = 16) -> TargetRuns:
    """Run every target once, keeping its KV cache and the last ``k`` columns of each layer's input:
    what :func:`reused_patched_scores` starts from."""
    from tether.interp.hooks import find_layers, hook_name, hooked, layer_output_kinds, parse_name
    from tether.models.padding import left_pad, positions_from_mask

    model, tok = engine.model, engine.tokenizer
    layers = find_layers(model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if any(len(t) < k for t in targets):
        raise ValueError(f"a target row is shorter than the {k} patched positions")
    ids, mask = left_pad([list(t) for t in targets], pad, engine.loaded.device)
    keys: list[list[torch.Tensor]] = [[] for _ in layers.layers]
    values: list[list[torch.Tensor]] = [[] for _ in layers.layers]
    entering: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []
    returns_tuple = False
    for begin in range(0, len(targets), batch_size):
        rows = slice(begin, begin + batch_size)
        store: dict[int, torch.Tensor] = {}

        def keep(x: torch.Tensor, name: str, store=store) -> None:
            store[parse_name(name, len(layers))[0]] = x[:, -k:].detach()

        hooks = {hook_name(i, "hook_resid_pre"): keep for i in range(len(layers))}
        with (
            torch.no_grad(),
            hooked(model, hooks),
            contiguous_head_input(model, float32=True),
            layer_output_kinds(layers) as kinds,
        ):
            out = model(
                input_ids=ids[rows],
                attention_mask=mask[rows],
                position_ids=positions_from_mask(mask[rows]),
                use_cache=True,
                logits_to_keep=1,
            )
        for i, (layer_keys, layer_values) in enumerate(returned_keys_values(out)):
            keys[i].append(layer_keys)
            values[i].append(layer_values)
        entering.append(torch.stack([store[i] for i in range(len(layers))], dim=2))
        logits.append(out.logits[:, -1].float().cpu())
        returns_tuple = kinds[0]
    return TargetRuns(
        ids,
        mask,
        [(torch.cat(kk), torch.cat(vv)) for kk, vv in zip(keys, values, strict=True)],
        torch.cat(entering),
        torch.cat(logits),
        returns_tuple,
    )


def reused_patched_scores(
    engine: Any,
    runs: TargetRuns,
    sources: torch.Tensor,
    patches: Sequence[Patch],
    refusal_ids: Sequence[int],
    *,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """:func:`patched_scores` for patched runs only, reusing the target runs (``runs``): a patch at
    layer l from column c on changes nothing before c (the model is causal) nor below l, so the
    columns before c come from the target's KV cache, the row enters layer l with the target's input
    there (the patch written over it), and a batch skips the layers below all of its rows' layers.
    The same scores (to float rounding) at a small part of the work."""
    from tether.interp.directions import refusal_score
    from tether.interp.hooks import find_layers, hook_name, hooked, skipping_layers
    from tether.models.padding import positions_from_mask

    model = engine.model
    layers = find_layers(model)
    k, width = runs.entering.shape[1], runs.ids.shape[1]
    if any(layer is None or not positions for _, layer, positions in patches):
        raise ValueError("reused_patched_scores takes patched runs only (a layer and positions each)")
    # rows that start at the same column share a cache prefix; within one, lowest layer first so
    # that each batch skips as many layers as it can
    order = sorted(range(len(patches)), key=lambda i: (min(patches[i][2]), patches[i][1]))
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(min(patches[i][2]), []).append(i)
    out = torch.empty(len(patches))
    for first, members in groups.items():
        cut = width - k + first
        for begin in range(0, len(members), batch_size):
            chunk = members[begin : begin + batch_size]
            pairs = torch.tensor([patches[i][0] for i in chunk], device=runs.ids.device)
            mask = runs.mask[pairs]
            cache = None
            if cut > 0:
                cache = cache_of(
                    [(kk[pairs, :, :cut], vv[pairs, :, :cut]) for kk, vv in runs.keys_values], model.config
                )
            hooks: dict[str, Any] = {}
            for layer in sorted({patches[i][1] for i in chunk}):
                rows = [r for r, i in enumerate(chunk) if patches[i][1] == layer]
                state = runs.entering[pairs[rows], first:, layer].clone()
                for j, r in enumerate(rows):
                    pair, _, positions = patches[chunk[r]]
                    for p in positions:
                        state[j, p - first] = sources[pair, p, layer].to(state.dtype)
                at = torch.tensor(rows, device=state.device)

                def enter(x: torch.Tensor, _name: str, at=at, state=state) -> torch.Tensor:
                    x = x.clone()
                    x[at] = state.to(device=x.device, dtype=x.dtype)
                    return x

                hooks[hook_name(layer, "hook_resid_pre")] = enter
            lowest = min(patches[i][1] for i in chunk)
            with (
                torch.no_grad(),
                hooked(model, hooks),
                skipping_layers(layers, lowest, runs.layer_returns_tuple),
                contiguous_head_input(model, float32=True),
            ):
                logits = model(
                    input_ids=runs.ids[pairs, cut:],
                    attention_mask=mask,
                    position_ids=positions_from_mask(mask)[:, cut:],
                    cache=cache,
                    use_cache=cache is not None,
                    logits_to_keep=1,
                ).logits[:, -1]
            out[chunk] = refusal_score(logits.float().cpu(), refusal_ids)
            if on_batch:
                on_batch(len(chunk))
    return out


def normalised(
    patched: np.ndarray, harmful: np.ndarray, harmless: np.ndarray, *, bootstrap: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Per cell of ``patched`` ``[pairs, …]``: (mean patched − mean harmless) / (mean harmful − mean
    harmless), with a percentile bootstrap CI over the pairs (resampled jointly) and n."""
    n = patched.shape[0]
    cells = patched.reshape(n, -1)

    def ratio(idx: np.ndarray) -> np.ndarray:  # idx [B, n] -> [B, cells]
        gap = harmful[idx].mean(1) - harmless[idx].mean(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (cells[idx].mean(1) - harmless[idx].mean(1)[:, None]) / gap[:, None]

    point = ratio(np.arange(n)[None])[0]
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, n, size=(bootstrap, n))
    draws = ratio(resamples)
    with np.errstate(all="ignore"):
        low, high = np.nanpercentile(draws, [2.5, 97.5], axis=0)
    gaps = harmful[resamples].mean(1) - harmless[resamples].mean(1)

    def grid(a: np.ndarray) -> Any:
        return _nan_to_none(np.asarray(a, dtype=float).reshape(patched.shape[1:]).tolist())

    return {
        "value": grid(point),
        "ci_low": grid(low),
        "ci_high": grid(high),
        "n": n,
        "gap": {
            "mean": float(harmful.mean() - harmless.mean()),
            "ci": [float(np.percentile(gaps, 2.5)), float(np.percentile(gaps, 97.5))],
            "n": n,
        },
    }


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return None if value != value or value in (float("inf"), float("-inf")) else value


@dataclass(kw_only=True)
class PatchContext(DirectionContext):
    config: PatchConfig  # type: ignore[assignment]


def patch_stage(key: str) -> Callable[[PatchContext], dict[str, Any]]:
    def patch(ctx: PatchContext) -> dict[str, Any]:
        from tether.interp.directions import refusal_score
        from tether.interp.forward import encode, post_instruction_tokens
        from tether.interp.hooks import find_layers
        from tether.interp.refusal import refusal_token_ids
        from tether.progress import progress_bar

        cfg = ctx.config
        engine = ctx.engine(key)
        tokens = post_instruction_tokens(engine)
        k, n_layers = len(tokens), len(find_layers(engine.model))
        prompts = {kind: ctx.prompts("train", kind)[: cfg.pairs] for kind in ("harmful", "harmless")}
        rows = {kind: encode(engine, _chat(items)) for kind, items in prompts.items()}
        ids = refusal_token_ids(engine.tokenizer, cfg.refusal_tokens)
        n = len(rows["harmful"])
        # one unpatched run of each prompt: its score, its KV cache and what enters each layer at
        # the post-instruction tokens (the patches' sources, and where patched runs start from)
        runs = {kind: target_runs(engine, r, k, batch_size=cfg.batch_size) for kind, r in rows.items()}
        harmful, harmless = (
            refusal_score(runs[kind].logits, ids).numpy() for kind in ("harmful", "harmless")
        )
        cells = [(layer, p) for p in range(k) for layer in range(n_layers)]
        result: dict[str, Any] = {
            "model": engine.name,
            "spec": ctx.specs[model_keys(ctx.specs).index(key)],
            "fingerprint": engine.fingerprint,
            "positions": tokens,
            "layers": n_layers,
            "pairs": [[str(a.id), str(b.id)] for a, b in zip(prompts["harmful"], prompts["harmless"], strict=True)],
            "refusal_token_ids": ids,
            "refusal_tokens": [engine.tokenizer.decode([i]) for i in ids],
            "score": {"harmful": harmful.tolist(), "harmless": harmless.tolist()},
            "directions": {},
        }  # fmt: skip
        for direction in cfg.directions:
            source, target = direction.split("_to_")
            patches = [(i, layer, (p,)) for i in range(n) for layer, p in cells]
            with progress_bar(f"{key} · {direction}", total=len(patches), enabled=ctx.progress) as bar:
                scores = reused_patched_scores(
                    engine, runs[target], runs[source].entering, patches, ids, batch_size=cfg.batch_size,
                    on_batch=bar.advance,
                )  # fmt: skip
            grid = scores.view(n, k, n_layers).numpy()  # [pairs, positions, layers]
            summary = normalised(grid, harmful, harmless, bootstrap=cfg.bootstrap, seed=cfg.seed)
            # the cell that moves the score most: toward refusal when the harmful state is patched in,
            # away from it when the harmless state is
            values = np.array(summary["value"], dtype=float)
            sign = 1.0 if source == "harmful" else -1.0
            p, layer = divmod(int(np.nan_to_num(sign * values, nan=-np.inf).argmax()), n_layers)
            summary["peak"] = {
                "position": p,
                "token": tokens[p],
                "layer": layer,
                "value": summary["value"][p][layer],
            }
            summary["raw"] = grid.tolist()
            result["directions"][direction] = summary
        gap = result["directions"][cfg.directions[0]]["gap"]
        # harmful and harmless runs hardly differ in refusal score: the normalised cells are noise
        result["weak_gap"] = bool(gap["ci"][0] <= 0.0 <= gap["ci"][1])
        ctx.run.artifact(f"patch/{key}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
        return {
            "gap": result["directions"][cfg.directions[0]]["gap"]["mean"],
            "weak_gap": result["weak_gap"],
            "peaks": {d: s["peak"] for d, s in result["directions"].items()},
        }

    return patch


def report_stage(ctx: PatchContext) -> dict[str, Any]:
    from tether.interp.report import plot_panel_rows, plot_position_curves, write_patch_report

    keys = model_keys(ctx.specs)
    models = {}
    for k in keys:
        data = json.loads(ctx.run.artifact(f"patch/{k}.json").read_text())
        for summary in data["directions"].values():
            summary.pop("raw", None)  # per pair, in patch/<key>.json
        models[k] = data
    report = {
        "run": ctx.run.name,
        "created": ctx.run.manifest.get("created"),
        "config": ctx.config.model_dump(mode="json"),
        "metric": "refusal score (log-odds of the refusal openings' first tokens at the first answer token), "
        "normalised per cell: 0 = harmless run, 1 = harmful run",
        "prompts": json.loads(ctx.run.artifact("prompts.json").read_text())["info"],
        "pairs": len(next(iter(models.values()))["pairs"]),
        "models": models,
    }
    ctx.run.artifact("patch.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    plot_panel_rows(
        [
            [
                (
                    f"{k}: {m['spec']}\n{d.replace('_', ' ')}"
                    + (" (weak gap: noise)" if m["weak_gap"] else ""),
                    m["directions"][d]["value"],
                    m["positions"],
                )
                for k, m in models.items()
            ]
            for d in ctx.config.directions
        ],
        "activation patching of hook_resid_pre, normalised refusal score (0 harmless, 1 harmful)",
        ctx.run.artifact("patch.png"),
        limits=(-0.5, 1.5),
    )
    # the last post-instruction token carries most of the decision: its cells as curves, CIs shown
    plot_position_curves(
        [
            (
                d.replace("_", " "),
                [
                    (
                        f"{k}: {m['spec']}" + (" (weak gap)" if m["weak_gap"] else ""),
                        m["directions"][d]["value"][-1],
                        m["directions"][d]["ci_low"][-1],
                        m["directions"][d]["ci_high"][-1],
                    )
                    for k, m in models.items()
                ],
            )
            for d in ctx.config.directions
        ],
        "last post-instruction token, normalised refusal score with 95% bootstrap CIs over the pairs",
        ctx.run.artifact("patch_last.png"),
        reference=[0.0 if d == "harmful_to_harmless" else 1.0 for d in ctx.config.directions],
    )
    write_patch_report(report, ctx.run)
    return {"report": "interp.html"}


def patch_stages(specs: Sequence[str]) -> list[Stage]:
    keys = model_keys(specs)
    stages = [Stage("prompts", prompts_stage)]
    stages += [Stage(f"patch/{k}", patch_stage(k), needs=("prompts",)) for k in keys]
    stages.append(Stage("report", report_stage, needs=tuple(f"patch/{k}" for k in keys)))
    return stages


def run_patch(
    config: PatchConfig,
    specs: Sequence[str],
    run: Run,
    *,
    say: Callable[[str], None] = print,
    load_engine: Callable[[str, EngineConfig, Any], Any] = load_merged,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Every stage not yet finished in ``run``; the stage summaries."""
    ctx = PatchContext(
        run=run, say=say, config=config, specs=list(specs), load_engine=load_engine, progress=progress
    )
    return run_stages(run, patch_stages(specs), ctx)


__all__ = [
    "Patch",
    "TargetRuns",
    "normalised",
    "patch_stages",
    "patched_scores",
    "reused_patched_scores",
    "run_patch",
    "target_runs",
]
