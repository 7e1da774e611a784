"""Tether's interpretability primitives against TransformerLens on the default model (CPU, float32).

TransformerLens is the field's reference for named hook points. Its 4.x ``TransformerBridge`` loads
the converted SmolLM2-135M-Instruct directory offline (``boot_transformers`` with the model and
tokenizer passed in, ``HF_HUB_OFFLINE=1``), so issue #20's cross-check can run. The bridge runs in
compatibility mode with ``no_processing=True``: the model's own coordinates, as Tether's hooks see
them (no folded norms, no centred weights; the logits are then the model's logits too).

The bridge rewraps its model's layers in place, so each side loads its own copy of the weights.

Checks, each printing its largest difference against a tolerance, then PASS or FAIL (exit status 1
on any FAIL):

1. **hook points**: every layer's ``hook_resid_pre``, ``hook_attn_out``, ``hook_mlp_out`` and
   ``hook_resid_post``, and the logits, from Tether's ``run_with_cache`` and the bridge's, on the
   shipped facts and a few chat prompts (largest difference relative to the activation's largest
   magnitude, per point).
2. **interventions** on chat prompts, next-token logits: Tether's directional ablation
   (``ablation_hooks``) against the bridge with hooks at the same names projecting the direction
   out; Tether's weight orthogonalisation (``orthogonalised``) against the bridge's hook ablation;
   Tether's activation addition (``addition_hooks``) against the bridge's. The direction is a real
   one: the harmful − harmless mean difference entering a middle layer at the last token.
3. **causal tracing**: the grids ``tether interp trace`` computes (``trace_fact``: restored runs that
   reuse the corrupted runs' KV caches and skip the layers below a restore) against ROME's plain
   loop on the bridge: one ``run_with_hooks`` per (kind, layer, token), the noise added to the
   embeddings (``hook_embed``), the clean states restored at the same names, p(answer) averaged over
   the noisy copies. The same noise tensor on both sides.
4. **activation patching**: the scores ``tether interp patch`` computes (``target_runs`` +
   ``reused_patched_scores``: left-padded batches, KV reuse) against one bridge run per patch, each
   prompt unpadded: the harmful prompt's state entering layer l at a post-instruction token written
   into the harmless prompt's run; the refusal score of each.

Setup (a separate venv, so TransformerLens's dependencies cannot move the system's packages)::

    python3 -m venv --system-site-packages /tmp/tl-venv
    /tmp/tl-venv/bin/pip install transformer-lens==4.3.0 \\
        "torch==$(python3 -c 'import torch; print(torch.__version__.split("+")[0])')" \\
        "transformers==$(python3 -c 'import transformers; print(transformers.__version__)')"

Run (the checkout's ``src`` comes first on the path, whatever tether is installed)::

    /tmp/tl-venv/bin/python benchmarks/vs_transformer_lens.py [--facts 2] [--pairs 2] [--threads 2]
"""

# ruff: noqa: E402  (the offline switches must be set before transformers loads)

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TETHER_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch

from tether.interp.hooks import POINTS, hook_name

# Both sides run the same HF modules in float32; what differs is where the hooks sit, the batch
# shapes (padding, KV reuse) and, for orthogonalisation, the order of the arithmetic.
TOLERANCE = {
    "activations": 1e-4,  # relative to the point's largest |activation|
    "logits": 1e-3,  # absolute, logits of magnitude ~30
    "trace": 1e-4,  # absolute, probabilities
    "patch": 1e-3,  # absolute, refusal log-odds
}
CHAT_PROMPTS = 4  # per class, for checks 1 and 2


def load_sides():
    from transformer_lens.model_bridge import TransformerBridge

    from tether.config import EngineConfig
    from tether.interp.refusal import load_merged
    from tether.models.load import load

    engine = load_merged("default", EngineConfig(), None)
    theirs = load("default", device="cpu", dtype="float32")
    bridge = TransformerBridge.boot_transformers(
        theirs.model.config._name_or_path, hf_model=theirs.model, tokenizer=theirs.tokenizer, device="cpu"
    )
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    return engine, bridge


def report(name: str, worst: float, tolerance: float, detail: str = "") -> bool:
    ok = worst <= tolerance
    print(f"{name}: max |Tether − TransformerLens| {worst:.3g} (tolerance {tolerance:g}){detail}  "
          f"{'PASS' if ok else 'FAIL'}", flush=True)  # fmt: skip
    return ok


def chat_rows(engine, pairs: int, split: str = "train"):
    """Token ids of harmful and harmless chat prompts from interp's ``split`` split."""
    from tether.interp.config import SplitConfig
    from tether.interp.forward import encode
    from tether.interp.prompts import make_splits
    from tether.interp.refusal import _chat

    splits, _ = make_splits(SplitConfig(), seed=0)
    return {kind: encode(engine, _chat(splits[split][kind][:pairs])) for kind in ("harmful", "harmless")}


def check_hook_points(engine, bridge, rows: list[list[int]]) -> bool:
    from tether.interp.hooks import run_with_cache

    names = [hook_name(i, p) for i in range(bridge.cfg.n_layers) for p in POINTS]
    wanted = set(names)
    worst = dict.fromkeys(POINTS, 0.0)
    worst_logits = 0.0
    for ids in rows:
        batch = torch.tensor([ids])
        ours, cache = run_with_cache(engine.model, names, input_ids=batch)
        with torch.no_grad():
            logits, theirs = bridge.run_with_cache(batch, names_filter=lambda n: n in wanted)
        for name in names:
            point = name.rsplit(".", 1)[1]
            scale = float(cache[name].abs().max())
            worst[point] = max(worst[point], float((cache[name] - theirs[name]).abs().max()) / scale)
        worst_logits = max(worst_logits, float((ours.logits - logits).abs().max()))
    ok = True
    for point, value in worst.items():
        ok &= report(
            f"hook point {point} ({len(rows)} prompts, every layer)", value, TOLERANCE["activations"]
        )
    return report(f"logits ({len(rows)} prompts, every position)", worst_logits, TOLERANCE["logits"]) and ok


def refusal_direction(engine, train, layer: int) -> torch.Tensor:
    from tether.interp.directions import mean_difference
    from tether.interp.forward import resid_pre

    acts = {kind: resid_pre(engine, r, 1) for kind, r in train.items()}
    return mean_difference(acts["harmful"], acts["harmless"])[0, layer]


def _bridge_last_logits(bridge, ids: list[int], hooks: list) -> torch.Tensor:
    with torch.no_grad():
        return bridge.run_with_hooks(torch.tensor([ids]), fwd_hooks=hooks)[0, -1].float()


def check_interventions(engine, bridge, rows: list[list[int]], direction: torch.Tensor, layer: int) -> bool:
    from tether.interp.directions import orthogonalised
    from tether.interp.forward import last_logits
    from tether.interp.hooks import ablation_hooks, addition_hooks, find_layers

    n_layers = bridge.cfg.n_layers
    unit = direction / direction.norm()

    def ablate(x, hook):
        return x - (x @ unit).unsqueeze(-1) * unit

    def add(x, hook):
        return x + direction

    points = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out")
    ablation = [(hook_name(i, p), ablate) for i in range(n_layers) for p in points]
    addition = [(hook_name(layer, "hook_resid_pre"), add)]
    theirs_ablated = torch.stack([_bridge_last_logits(bridge, r, ablation) for r in rows])
    theirs_added = torch.stack([_bridge_last_logits(bridge, r, addition) for r in rows])
    ours_ablated = last_logits(engine, rows, ablation_hooks(find_layers(engine.model), direction))
    with orthogonalised(engine.model, direction):
        ours_orthogonalised = last_logits(engine, rows)
    ours_added = last_logits(engine, rows, addition_hooks(layer, direction))
    plain = last_logits(engine, rows)
    moved = float((plain - ours_ablated).abs().max())
    n = len(rows)
    return all([
        report(f"directional ablation, every layer ({n} prompts)", float((ours_ablated - theirs_ablated).abs().max()),
               TOLERANCE["logits"], f"; the ablation moves the logits by up to {moved:.2f}"),
        report(f"weight orthogonalisation vs the bridge's hook ablation ({n} prompts)",
               float((ours_orthogonalised - theirs_ablated).abs().max()), TOLERANCE["logits"]),
        report(f"activation addition at layer {layer} ({n} prompts)", float((ours_added - theirs_added).abs().max()),
               TOLERANCE["logits"], f"; the addition moves the logits by up to {float((plain - ours_added).abs().max()):.2f}"),
    ])  # fmt: skip


def bridge_trace(bridge, ids, subject, answer, noise, window) -> dict[str, torch.Tensor]:
    """ROME's loop, one bridge run per (kind, layer, token): ``[tokens, layers]`` per kind."""
    from tether.interp.trace import KINDS, _windows

    n_layers, n_tok = bridge.cfg.n_layers, len(ids)
    batch = torch.tensor([ids] * noise.shape[0])
    names = {hook_name(i, point) for i in range(n_layers) for point in KINDS.values()}
    with torch.no_grad():
        _, clean = bridge.run_with_cache(torch.tensor([ids]), names_filter=lambda n: n in names)

    def corrupt(x, hook):
        x = x.clone()
        x[:, subject] += noise
        return x

    def restore(name, token):
        def fn(x, hook):
            x = x.clone()
            x[:, token] = clean[name][0, token]
            return x

        return fn

    def p_answer(hooks) -> float:
        with torch.no_grad():
            logits = bridge.run_with_hooks(batch, fwd_hooks=[("hook_embed", corrupt), *hooks])
        return float(torch.softmax(logits[:, -1].float(), dim=-1)[:, answer].mean())

    corrupted = p_answer([])
    grids = {}
    for kind, point in KINDS.items():
        grid = torch.full((n_tok, n_layers), corrupted)
        for layer in range(n_layers):
            span = [layer] if kind == "residual" else list(_windows(layer, n_layers, window))
            for token in range(subject[0], n_tok):
                grid[token, layer] = p_answer(
                    [(hook_name(j, point), restore(hook_name(j, point), token)) for j in span]
                )
        grids[kind] = grid
    return grids


def check_trace(engine, bridge, n_facts: int) -> bool:
    from tether.interp.cli import shipped_facts
    from tether.interp.config import TraceConfig
    from tether.interp.trace import (
        KINDS,
        encode_fact,
        read_facts,
        subject_noise,
        subject_noise_std,
        trace_fact,
    )

    config = TraceConfig()
    facts = read_facts(shipped_facts())
    std = subject_noise_std(engine.model, engine.tokenizer, facts)
    ok = True
    for fact in facts[:n_facts]:
        began = time.perf_counter()
        ours = trace_fact(engine.model, engine.tokenizer, fact, std, config)
        ours_s = time.perf_counter() - began
        ids, subject, answer = encode_fact(engine.tokenizer, fact)
        noise = subject_noise(config, len(subject), engine.model.get_input_embeddings().weight.shape[1], std)
        began = time.perf_counter()
        theirs = bridge_trace(bridge, ids, subject, answer, noise, config.window)
        theirs_s = time.perf_counter() - began
        worst = max(float((torch.tensor(ours["grids"][k]) - theirs[k]).abs().max()) for k in KINDS)
        peak = max(float(theirs[k].max()) for k in KINDS)
        ok &= report(f"causal tracing {fact.id!r} ({len(ids)} tokens, 3 kinds × {bridge.cfg.n_layers} layers)", worst,
                     TOLERANCE["trace"], f"; highest restored p {peak:.3f}, corrupted {ours['corrupted_p']:.3f}; "
                     f"Tether {ours_s:.1f} s, bridge loop {theirs_s:.1f} s")  # fmt: skip
    return ok


def check_patch(engine, bridge, rows: dict[str, list[list[int]]]) -> bool:
    from tether.interp.config import PatchConfig
    from tether.interp.directions import refusal_score
    from tether.interp.forward import post_instruction_tokens
    from tether.interp.patch import reused_patched_scores, target_runs
    from tether.interp.refusal import refusal_token_ids

    k, n_layers = len(post_instruction_tokens(engine)), bridge.cfg.n_layers
    ids = refusal_token_ids(engine.tokenizer, PatchConfig().refusal_tokens)
    harmful, harmless = rows["harmful"], rows["harmless"]
    runs = target_runs(engine, harmless, k)
    sources = target_runs(engine, harmful, k).entering
    patches = [(i, layer, (p,)) for i in range(len(harmless)) for p in range(k) for layer in range(n_layers)]
    ours = reused_patched_scores(engine, runs, sources, patches, ids)
    names = {hook_name(i, "hook_resid_pre") for i in range(n_layers)}
    theirs = []
    for source, target in zip(harmful, harmless, strict=True):
        with torch.no_grad():
            _, cache = bridge.run_with_cache(torch.tensor([source]), names_filter=lambda n: n in names)
        for p in range(k):
            for layer in range(n_layers):
                name = hook_name(layer, "hook_resid_pre")
                state = cache[name][0, len(source) - k + p]

                def write(x, hook, column=len(target) - k + p, state=state):
                    x = x.clone()
                    x[0, column] = state
                    return x

                theirs.append(_bridge_last_logits(bridge, target, [(name, write)]))
    theirs_scores = refusal_score(torch.stack(theirs), ids)
    span = float(ours.max() - ours.min())
    return report(f"activation patching, harmful → harmless ({len(harmless)} pairs × {k} positions × {n_layers} layers)",
                  float((ours - theirs_scores).abs().max()), TOLERANCE["patch"],
                  f"; the scores span {span:.2f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", type=int, default=2, help="shipped facts to trace on both sides")
    parser.add_argument("--pairs", type=int, default=2, help="(harmful, harmless) pairs to patch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layer", type=int, default=12, help="layer of the direction and of the addition")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from importlib.metadata import version

    print(f"torch {version('torch')}, transformers {version('transformers')}, "
          f"transformer-lens {version('transformer-lens')}")  # fmt: skip
    engine, bridge = load_sides()
    from tether.interp.cli import shipped_facts
    from tether.interp.trace import encode_fact, read_facts

    train = chat_rows(engine, CHAT_PROMPTS, "train")
    test = chat_rows(engine, CHAT_PROMPTS, "test")
    fact_rows = [encode_fact(engine.tokenizer, f)[0] for f in read_facts(shipped_facts())]
    began = time.perf_counter()
    results = [
        check_hook_points(engine, bridge, fact_rows + test["harmful"] + test["harmless"]),
        check_interventions(
            engine,
            bridge,
            test["harmful"] + test["harmless"],
            refusal_direction(engine, train, args.layer),
            args.layer,
        ),
        check_trace(engine, bridge, args.facts),
        check_patch(engine, bridge, {kind: r[: args.pairs] for kind, r in train.items()}),
    ]
    print(f"{'all checks passed' if all(results) else 'FAILED'} ({time.perf_counter() - began:.0f} s)")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
