"""``tether interp refusal-direction MODEL…``: the refusal direction of each model (Arditi et al.
2024), chosen on held-out prompts, then ablated and added on test prompts no choice saw.

Stages (``direction_stages``; a rerun skips every finished one):

* ``prompts``: harmful and harmless prompts in train / validation / test splits
  (``tether.interp.prompts``; ``prompts.json``). No model loads.
* ``directions/<key>``: per model, the residual stream entering every layer at the post-instruction
  positions (the chat template's tokens after the user message) on the **train** prompts; candidate
  directions = mean(harmful) − mean(harmless), per (position, layer)
  (``directions/<key>.safetensors``); their harmful/harmless separation on the **validation**
  prompts (``directions/<key>.json``).
* ``select/<key>``: on the **validation** prompts, each candidate below ``max_layer_fraction`` of the
  depth is ablated everywhere (harmful prompts: the refusal score should fall); in that order, the
  first whose addition makes harmless prompts refuse (score > 0) and whose ablation keeps harmless
  next-token KL under ``kl_threshold`` is chosen (``select/<key>.json``; the direction in
  ``direction/<key>.safetensors``).
* ``evaluate/<key>``: on the **test** prompts, greedy answers judged by the default refusal judge
  (degenerate answers apart, unscored never a pass): harmful prompts clean, with the direction
  ablated (weight orthogonalisation) and with a random direction ablated; harmless prompts clean,
  with the direction added at its layer and with a random vector of the same norm added; KL of the
  harmless next-token distributions, ablated vs clean; the capability change under ablation on audit
  tasks (paired, on the same items).
* ``drift``: per layer, the cosine of each model's direction with the first model's and each model's
  harmful/harmless separation (``drift.json``, ``drift.png``).
* ``report``: ``interp.json`` and ``interp.html``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tether.config import EngineConfig
from tether.engine.types import Prompt
from tether.errors import ConfigError
from tether.interp.config import RefusalDirectionConfig
from tether.runs import Run, Stage, StageContext, run_stages

KINDS = ("harmful", "harmless")


def model_keys(specs: Sequence[str]) -> list[str]:
    """m0, m1, …: stage and file names that stay short whatever the spec is."""
    return [f"m{i}" for i in range(len(specs))]


def load_merged(spec: str, config: EngineConfig, tracer) -> Any:
    """An Engine over ``spec``; a LoRA adapter is merged into its base first whatever
    ``engine.merge_adapter`` says, so weight orthogonalisation acts on every write the model makes
    (:func:`tether.engine.engine.merged_adapter`, which also says when the fingerprint changes)."""
    from tether.engine.engine import Engine, merged_adapter
    from tether.models.load import load

    loaded = load(spec, device=config.device, dtype=config.dtype)
    if loaded.adapter_path is not None:
        loaded = merged_adapter(loaded)
    return Engine(loaded, config, tracer)


@dataclass(kw_only=True)
class DirectionContext(StageContext):
    config: RefusalDirectionConfig
    specs: list[str]
    load_engine: Callable[[str, EngineConfig, Any], Any] = load_merged
    progress: bool = True
    _engines: dict[str, Any] = field(default_factory=dict)

    def engine(self, key: str) -> Any:
        if key not in self._engines:
            self._engines.clear()  # one model in memory at a time
            spec = self.specs[model_keys(self.specs).index(key)]
            self.say(f"loading {spec}")
            self._engines[key] = self.load_engine(spec, self.config.engine, self.run.tracer)
        return self._engines[key]

    def prompts(self, split: str, kind: str) -> list[Any]:
        from tether.data.records import BenignPrompt, HarmfulPrompt

        data = json.loads(self.run.artifact("prompts.json").read_text())
        record = HarmfulPrompt if kind == "harmful" else BenignPrompt
        return [record.model_validate(r) for r in data["splits"][split][kind]]


def _chat(items: Sequence[Any]) -> list[Prompt]:
    return [Prompt(id=str(it.id), text=it.text, chat=True) for it in items]


def _save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        str(path),
        metadata={k: str(v) for k, v in meta.items()},
    )


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


# --- stages -----------------------------------------------------------------------------------------


def prompts_stage(ctx: DirectionContext) -> dict[str, Any]:
    from tether.interp.prompts import make_splits

    splits, info = make_splits(ctx.config.split, ctx.config.seed)
    data = {
        "info": info,
        "splits": {
            s: {k: [r.model_dump(mode="json") for r in v] for k, v in kinds.items()}
            for s, kinds in splits.items()
        },
    }
    ctx.run.artifact("prompts.json").write_text(json.dumps(data, indent=2, ensure_ascii=False))
    return {s: {k: len(v) for k, v in kinds.items()} for s, kinds in splits.items()}


def directions_stage(key: str) -> Callable[[DirectionContext], dict[str, Any]]:
    def directions(ctx: DirectionContext) -> dict[str, Any]:
        from tether.interp.directions import mean_difference, separation
        from tether.interp.forward import encode, post_instruction_tokens, resid_pre

        engine = ctx.engine(key)
        tokens = post_instruction_tokens(engine)
        acts = {
            (split, kind): resid_pre(
                engine, encode(engine, _chat(ctx.prompts(split, kind))), len(tokens), batch_size=ctx.config.batch_size
            )
            for split in ("train", "validation")
            for kind in KINDS
        }  # fmt: skip
        candidates = mean_difference(acts["train", "harmful"], acts["train", "harmless"])
        n_pos, n_layers, d = candidates.shape
        sep = [
            [
                separation(acts["validation", "harmful"][:, p, i], acts["validation", "harmless"][:, p, i], candidates[p, i])
                for i in range(n_layers)
            ]
            for p in range(n_pos)
        ]  # fmt: skip
        _save(
            ctx.run.artifact(f"directions/{key}.safetensors"),
            {
                "candidates": candidates,
                "mean_harmful": acts["train", "harmful"].mean(0),
                "mean_harmless": acts["train", "harmless"].mean(0),
            },
            {"model": ctx.specs[model_keys(ctx.specs).index(key)], "positions": json.dumps(tokens)},
        )
        info = {
            "model": engine.name,
            "fingerprint": engine.fingerprint,
            "positions": tokens,
            "layers": n_layers,
            "d_model": d,
            "separation_validation": sep,
            "norms": candidates.norm(dim=-1).tolist(),
        }
        ctx.run.artifact(f"directions/{key}.json").write_text(json.dumps(info, indent=2))
        return {"positions": len(tokens), "layers": n_layers}

    return directions


def refusal_token_ids(tokenizer: Any, openings: Sequence[str]) -> list[int]:
    """The first token of each refusal opening, as the answer's first token (no leading space)."""
    ids = []
    for text in openings:
        found = tokenizer(text, add_special_tokens=False)["input_ids"]
        if found and found[0] not in ids:
            ids.append(found[0])
    return ids


def select_stage(key: str) -> Callable[[DirectionContext], dict[str, Any]]:
    def select(ctx: DirectionContext) -> dict[str, Any]:
        from tether.interp.directions import kl_divergence, refusal_score
        from tether.interp.forward import encode, last_logits
        from tether.interp.hooks import ablation_hooks, addition_hooks, find_layers
        from tether.progress import progress_bar

        cfg = ctx.config.selection
        engine = ctx.engine(key)
        layers = find_layers(engine.model)
        candidates = _load(ctx.run.artifact(f"directions/{key}.safetensors"))["candidates"]
        n_pos, n_layers, _ = candidates.shape
        rows = {kind: encode(engine, _chat(ctx.prompts("validation", kind))) for kind in KINDS}
        ids = refusal_token_ids(engine.tokenizer, cfg.refusal_tokens)
        bs = ctx.config.batch_size
        clean = {kind: last_logits(engine, rows[kind], batch_size=bs) for kind in KINDS}
        baseline = {kind: float(refusal_score(clean[kind], ids).mean()) for kind in KINDS}
        top = max(1, int(cfg.max_layer_fraction * n_layers))
        norms = candidates.norm(dim=-1)
        # Layer 0's input is the template token's embedding, the same for every prompt: a zero
        # difference there is no direction.
        grid = [(p, i) for p in range(n_pos) for i in range(top) if norms[p, i] > 1e-6 * float(norms.max())]
        if not grid:
            raise ConfigError(
                f"no candidate direction below layer {top}: harmful and harmless activations do not differ there",
                where="selection.max_layer_fraction",
                hint="raise selection.max_layer_fraction",
            )
        bypass: dict[tuple[int, int], float] = {}
        with progress_bar(f"{key} · ablation scores", total=len(grid), enabled=ctx.progress) as bar:
            for p, i in grid:
                hooks = ablation_hooks(layers, candidates[p, i])
                bypass[p, i] = float(
                    refusal_score(last_logits(engine, rows["harmful"], hooks, batch_size=bs), ids).mean()
                )
                bar.advance()
        tried, chosen = [], None
        # Strongest ablation first, until one passes both filters: all of them when none does.
        with progress_bar(f"{key} · filters", total=len(grid), enabled=ctx.progress) as bar:
            for p, layer in sorted(grid, key=lambda pl: bypass[pl]):
                direction = candidates[p, layer]
                induce = refusal_score(
                    last_logits(engine, rows["harmless"], addition_hooks(layer, direction), batch_size=bs),
                    ids,
                )
                ablated_h = last_logits(
                    engine, rows["harmless"], ablation_hooks(layers, direction), batch_size=bs
                )
                kl = float(kl_divergence(clean["harmless"], ablated_h).mean())
                entry = {
                    "position": p,
                    "layer": layer,
                    "bypass": bypass[p, layer],
                    "induce": float(induce.mean()),
                    "kl": kl,
                }
                entry["passed"] = entry["induce"] > 0 and kl < cfg.kl_threshold
                tried.append(entry)
                bar.advance()
                if entry["passed"]:
                    chosen = entry
                    break
        fallback = chosen is None
        if fallback:
            chosen = tried[0]  # every candidate failed a filter: the strongest ablation, flagged
        p, layer = chosen["position"], chosen["layer"]
        tokens = json.loads(ctx.run.artifact(f"directions/{key}.json").read_text())["positions"]
        _save(
            ctx.run.artifact(f"direction/{key}.safetensors"),
            {"direction": candidates[p, layer]},
            {
                "layer": layer,
                "position": p,
                "token": tokens[p],
                "model": ctx.specs[model_keys(ctx.specs).index(key)],
            },
        )
        out = {
            "refusal_token_ids": ids,
            "refusal_tokens": [engine.tokenizer.decode([i]) for i in ids],
            "baseline_score": baseline,
            "candidate_layers": top,
            "bypass": [[bypass.get((q, i)) for i in range(n_layers)] for q in range(n_pos)],
            "tried": tried,
            "chosen": {**chosen, "token": tokens[p], "norm": float(candidates[p, layer].norm())},
            "fallback": fallback,
            "note": "no candidate passed both filters (addition induces refusal, KL under the threshold): the one "
            "whose ablation lowered the refusal score most was kept"
            if fallback
            else "",
        }
        ctx.run.artifact(f"select/{key}.json").write_text(json.dumps(out, indent=2))
        return {"layer": layer, "position": p, "token": tokens[p], "fallback": fallback, "tried": len(tried)}

    return select


def _rate(results: Sequence[Any]) -> dict[str, Any]:
    from tether.judges.calibration import wilson_interval

    scored = [r for r in results if r.status == "scored"]
    k, n = int(sum(r.score for r in scored)), len(scored)
    ci = wilson_interval(k, n)
    return {
        "rate": k / n if n else None,
        "ci": list(ci) if ci else None,
        "n": n,
        "refusals": k,
        "degenerate": sum(r.status == "degenerate" for r in results),
        "unscored": len(results) - n,
        "items": len(results),
    }


def _paired(base: Sequence[Any], new: Sequence[Any], seed: int) -> dict[str, Any] | None:
    from tether.audit.stats import paired_delta

    a = {r.item_id: r.score for r in base if r.status == "scored"}
    b = {r.item_id: r.score for r in new if r.status == "scored"}
    if not a.keys() & b.keys():
        return None
    d = paired_delta(a, b, seed=seed)
    return {"delta": d.delta, "ci": [d.ci_low, d.ci_high], "n": d.n, "significant": d.significant}


def _judge_info() -> dict[str, Any]:
    from tether.judges import default_refusal_judge
    from tether.judges.calibration import judge_fingerprint

    judge = default_refusal_judge()
    return {"name": getattr(judge, "name", "default"), "fingerprint": judge_fingerprint(judge)}


def _capability(ctx: DirectionContext, engines: dict[str, Any]) -> dict[str, Any]:
    from tether.audit.cache import ResultCache
    from tether.audit.stats import bootstrap_mean_ci
    from tether.audit.sweep import run_task
    from tether.evals.registry import resolve_tasks

    cfg = ctx.config
    if not cfg.capability_limit:
        return {"skipped": "capability_limit is 0"}
    out: dict[str, Any] = {"tasks": {}}
    pooled: dict[str, dict[str, float]] = {name: {} for name in engines}
    with ResultCache(ctx.run.path / "audit.sqlite") as store:
        for task in resolve_tasks(cfg.capability_tasks):
            items = task.select(limit=cfg.capability_limit, seed=cfg.seed)
            runs = {
                name: run_task(eng, task, items, model=name, cache=store, seed=cfg.seed, progress=ctx.progress).results
                for name, eng in engines.items()
            }  # fmt: skip
            scores = {n: [r.score for r in rs if r.status == "scored"] for n, rs in runs.items()}
            clean = bootstrap_mean_ci(scores["clean"], seed=cfg.seed) if scores["clean"] else None
            chance = task.metric.chance
            signal = clean is not None and (chance is None or clean.ci_low > chance)
            entry = {
                "metric": task.metric.name,
                "chance": chance,
                "signal": signal,
                "models": {
                    n: dict(
                        zip(
                            ("value", "ci_low", "ci_high", "n"),
                            bootstrap_mean_ci(s, seed=cfg.seed),
                            strict=True,
                        )
                    )
                    if s
                    else None
                    for n, s in scores.items()
                },
                "vs_clean": {n: _paired(runs["clean"], runs[n], cfg.seed) for n in runs if n != "clean"},
            }
            out["tasks"][task.name] = entry
            if signal:
                for n, rs in runs.items():
                    pooled[n].update(
                        {f"{task.name}/{r.item_id}": r.score for r in rs if r.status == "scored"}
                    )
    from tether.audit.stats import paired_delta

    out["pooled_tasks"] = [t for t, e in out["tasks"].items() if e["signal"]]
    out["pooled_vs_clean"] = {}
    for n in engines:
        if n == "clean" or not pooled["clean"].keys() & pooled[n].keys():
            continue
        d = paired_delta(pooled["clean"], pooled[n], seed=cfg.seed)
        out["pooled_vs_clean"][n] = {
            "delta": d.delta,
            "ci": [d.ci_low, d.ci_high],
            "n": d.n,
            "significant": d.significant,
        }
    return out


def evaluate_stage(key: str) -> Callable[[DirectionContext], dict[str, Any]]:
    def evaluate(ctx: DirectionContext) -> dict[str, Any]:
        from safetensors import safe_open

        from tether.audit.stats import bootstrap_mean_ci
        from tether.data import write_jsonl
        from tether.evals.tasks.safety import run_refusal
        from tether.interp.directions import kl_divergence, orthogonalised, random_like
        from tether.interp.engines import ablated, added
        from tether.interp.forward import encode, last_logits

        cfg = ctx.config
        engine = ctx.engine(key)
        path = ctx.run.artifact(f"direction/{key}.safetensors")
        with safe_open(str(path), "pt") as f:
            layer = int(f.metadata()["layer"])
        direction = _load(path)["direction"]
        control = random_like(direction, cfg.seed)
        conditions = {
            "harmful": {
                "clean": engine,
                "ablated": ablated(engine, direction),
                "random_ablated": ablated(engine, control, "random-ablated"),
            },
            "harmless": {
                "clean": engine,
                "added": added(engine, direction, layer),
                "random_added": added(engine, control, layer, "random-added"),
            },
        }
        rates: dict[str, Any] = {}
        for kind, engines in conditions.items():
            items = ctx.prompts("test", kind)
            results = {}
            for cond, eng in engines.items():
                ctx.say(f"{key}: {kind} test prompts, {cond} ({len(items)})")
                results[cond] = run_refusal(eng, items, task=f"interp_{kind}")
                write_jsonl(ctx.run.artifact(f"evaluate/{key}/{kind}-{cond}.jsonl"), results[cond])
            rates[kind] = {
                cond: {
                    **_rate(rs),
                    "vs_clean": _paired(results["clean"], rs, cfg.seed) if cond != "clean" else None,
                }
                for cond, rs in results.items()
            }
        rows = encode(engine, _chat(ctx.prompts("test", "harmless")))
        clean_logits = last_logits(engine, rows, batch_size=cfg.batch_size)
        kl: dict[str, Any] = {}
        for cond, vec in (("ablated", direction), ("random_ablated", control)):
            with orthogonalised(engine.model, vec):
                per = kl_divergence(clean_logits, last_logits(engine, rows, batch_size=cfg.batch_size))
            ci = bootstrap_mean_ci(per.tolist(), seed=cfg.seed)
            kl[cond] = {"mean": ci.value, "ci": [ci.ci_low, ci.ci_high], "n": ci.n}
        capability = _capability(ctx, {"clean": engine, "ablated": conditions["harmful"]["ablated"]})
        clean_rate = rates["harmful"]["clean"]["rate"]
        out = {
            "model": engine.name,
            "spec": ctx.specs[model_keys(ctx.specs).index(key)],
            "judge": _judge_info(),
            "refusal": rates,
            "kl_harmless": kl,
            "capability": capability,
            "low_base_refusal": clean_rate is not None and clean_rate < 0.1,
        }
        ctx.run.artifact(f"evaluate/{key}.json").write_text(json.dumps(out, indent=2))
        return {
            "harmful_refusal": {c: rates["harmful"][c]["rate"] for c in rates["harmful"]},
            "harmless_refusal": {c: rates["harmless"][c]["rate"] for c in rates["harmless"]},
            "kl_ablated": kl["ablated"]["mean"],
        }

    return evaluate


def drift_stage(ctx: DirectionContext) -> dict[str, Any]:
    from tether.interp.directions import cosine
    from tether.interp.report import plot_drift

    keys = model_keys(ctx.specs)
    chosen = {k: json.loads(ctx.run.artifact(f"select/{k}.json").read_text())["chosen"] for k in keys}
    infos = {k: json.loads(ctx.run.artifact(f"directions/{k}.json").read_text()) for k in keys}
    cands = {k: _load(ctx.run.artifact(f"directions/{k}.safetensors"))["candidates"] for k in keys}
    ref = keys[0]
    p_ref = chosen[ref]["position"]
    shapes = {k: tuple(c.shape) for k, c in cands.items()}
    comparable = all(s == shapes[ref] for s in shapes.values())
    data: dict[str, Any] = {"reference": ref, "position": infos[ref]["positions"][p_ref], "models": {}}
    for k in keys:
        entry = {
            "spec": ctx.specs[keys.index(k)],
            "chosen": chosen[k],
            "separation": infos[k]["separation_validation"][chosen[k]["position"]],
        }
        if comparable:
            a, b = cands[k][p_ref], cands[ref][p_ref]
            live = (a.norm(dim=-1) > 0) & (b.norm(dim=-1) > 0)  # a zero difference has no direction
            entry["cosine_to_reference"] = [
                float(c) if ok else None for c, ok in zip(cosine(a, b), live, strict=True)
            ]
            entry["cosine_chosen_to_reference"] = float(
                cosine(
                    cands[k][chosen[k]["position"], chosen[k]["layer"]],
                    cands[ref][p_ref, chosen[ref]["layer"]],
                )
            )
        data["models"][k] = entry
    if not comparable:
        data["note"] = f"the models' activations differ in shape ({shapes}): no cosine between them"
    ctx.run.artifact("drift.json").write_text(json.dumps(data, indent=2))
    plot_drift(data, ctx.run.artifact("drift.png"))
    return {
        "cosine_chosen": {k: e.get("cosine_chosen_to_reference") for k, e in data["models"].items()},
    }


def report_stage(ctx: DirectionContext) -> dict[str, Any]:
    from tether.interp.report import write_direction_report

    keys = model_keys(ctx.specs)
    report = {
        "run": ctx.run.name,
        "created": ctx.run.manifest.get("created"),
        "config": ctx.config.model_dump(mode="json"),
        "prompts": json.loads(ctx.run.artifact("prompts.json").read_text())["info"],
        "models": {
            k: {
                "spec": ctx.specs[i],
                "select": json.loads(ctx.run.artifact(f"select/{k}.json").read_text()),
                "evaluate": json.loads(ctx.run.artifact(f"evaluate/{k}.json").read_text()),
                "directions": {
                    n: v
                    for n, v in json.loads(ctx.run.artifact(f"directions/{k}.json").read_text()).items()
                    if n != "norms"
                },
            }
            for i, k in enumerate(keys)
        },
        "drift": json.loads(ctx.run.artifact("drift.json").read_text()),
    }
    ctx.run.artifact("interp.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    write_direction_report(report, ctx.run)
    return {"report": "interp.html"}


def direction_stages(specs: Sequence[str]) -> list[Stage]:
    stages = [Stage("prompts", prompts_stage)]
    keys = model_keys(specs)
    for k in keys:
        stages += [
            Stage(f"directions/{k}", directions_stage(k), needs=("prompts",)),
            Stage(f"select/{k}", select_stage(k), needs=(f"directions/{k}",)),
            Stage(f"evaluate/{k}", evaluate_stage(k), needs=(f"select/{k}",)),
        ]
    stages.append(Stage("drift", drift_stage, needs=tuple(f"select/{k}" for k in keys)))
    stages.append(Stage("report", report_stage, needs=("drift", *(f"evaluate/{k}" for k in keys))))
    return stages


def run_refusal_direction(
    config: RefusalDirectionConfig,
    specs: Sequence[str],
    run: Run,
    *,
    say: Callable[[str], None] = print,
    load_engine: Callable[[str, EngineConfig, Any], Any] = load_merged,
    progress: bool = True,
    only: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every stage not yet finished in ``run`` (those in ``only``, when given); the stage summaries."""
    ctx = DirectionContext(
        run=run, say=say, config=config, specs=list(specs), load_engine=load_engine, progress=progress
    )
    return run_stages(run, direction_stages(specs), ctx, only=only)


__all__ = ["DirectionContext", "direction_stages", "model_keys", "run_refusal_direction"]
