"""Tether's scorer against lm-evaluation-harness on the same multiple-choice items (CPU, default model).

Items: real MMLU (``--mmlu-per-subject`` per subject, capped at ``--mmlu-limit``; default 4 and 200)
and HellaSwag (``--hellaswag``, default 200) from ``tether.data.sources``, formatted by
``tether.evals.formats``. The same items are written to a temp dir as JSONL and declared as two local
lm-eval tasks (``dataset_path: json``, no hub), whose prompts reproduce Tether's exactly:
``doc_to_text`` is the context, ``doc_to_choice`` the choices *without* their leading space, and
``target_delimiter: " "`` puts that space back, so lm-eval's continuations equal Tether's and its
``acc_norm`` divides by the bare choice length, like ``formats.predict(..., normalized=True)``. (The
fields are named directly rather than through Jinja ``{{context}}``, which would turn an all-digit
context into an int.)

Both sides run the same model directory (the cached safetensors of ``default``) in fp32 on CPU with
the same thread count. Each pass of a side is its own process (so each side's peak RSS is its own):
Tether, lm-eval, lm-eval, Tether (A-B-B-A, because the machine is shared); the means are reported.
Model loading (with one short warm-up forward that pages the memory-mapped weights in) and
lm-eval's task index are outside the timings. Tether's time is ``Engine.score``
(tokenizing included); lm-eval's is ``simple_evaluate`` (reading the JSON task, building requests,
``loglikelihood``, metrics), and its ``loglikelihood`` alone (tokenizing included) is reported beside it.

Prints, per dataset: whether lm-eval's (context, continuation) strings equal Tether's, the largest
|log-likelihood difference| per choice, each side's accuracy (``acc``; HellaSwag also ``acc_norm``,
its headline) with the number of items whose prediction differs (exit status 1 if any prediction
differs), and the times; then ``lm_eval_time_over_tether`` (lm-eval's time / Tether's, over all
items: "lm-eval takes X times Tether's time"), the same ratio for the model calls alone, each side's
peak RSS, and Tether's useful-work FLOP/s against a ``torch.mm`` peak measured in the same run on the
model's own matmul shapes (the formula is printed with the figures).

Batching: Tether packs each item's context and choices (and neighbouring items with a common prefix)
into prefix-tree rows, batched by token budget (``engine.score_batch_tokens``, ``score_row_tokens``;
``--score-batch-tokens`` and ``--score-row-tokens`` override them). lm-eval's batch counts (context,
choice) sequences, except that choices of one token (MMLU's " A".." D") share one sequence through
its logits cache; ``--lm-eval-batch-size`` (default 8: on CPU, 8 sequences of ~100+ tokens already
give the matrix multiplies hundreds of rows, while bigger lm-eval batches add padding and grow its
full-vocabulary log-softmax tensor, batch x length x 49k floats).

Setup (a separate venv, so lm-eval's dependencies cannot move the system's torch/transformers/
datasets; it sees the system site)::

    python3 -m venv --system-site-packages /tmp/lmeval-venv
    /tmp/lmeval-venv/bin/pip install lm-eval "torch==$(python3 -c 'import torch; print(torch.__version__.split("+")[0])')" \\
        "transformers==$(python3 -c 'import transformers; print(transformers.__version__)')" \\
        "datasets==$(python3 -c 'import datasets; print(datasets.__version__)')"

Run (the checkout's ``src`` comes first on the path, whatever tether is installed)::

    /tmp/lmeval-venv/bin/python benchmarks/vs_lm_eval.py [--threads 2] [--mmlu-per-subject 4] [--mmlu-limit 200] [--hellaswag 200]
"""

# ruff: noqa: E402  (the offline switches must be set before lm_eval, datasets and transformers load)

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Nothing may reach the network: the task data are local files, the model a local directory.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TETHER_NO_PROGRESS", "1")

INSTALL = (
    "python3 -m venv --system-site-packages /tmp/lmeval-venv && "
    '/tmp/lmeval-venv/bin/pip install lm-eval "torch==<installed>" "transformers==<installed>" '
    '"datasets==<installed>"; then run this script with /tmp/lmeval-venv/bin/python'
)
SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))  # this checkout's tether, not whichever one is installed

try:
    import lm_eval
except ImportError as exc:
    sys.exit(
        f"error: this benchmark needs lm-evaluation-harness ({exc}).\n"
        f"  install it in a separate venv: {INSTALL}"
    )

import torch
import transformers

import tether
from tether.engine import ScoreRequest, ScoreResult
from tether.evals import formats


@dataclass(frozen=True)
class Dataset:
    name: str  # also the lm-eval task name suffix
    requests: list[ScoreRequest]
    answers: list[int]
    metrics: tuple[str, ...]  # printed in this order; the first is the headline


# ------------------------------------------------------------------------------------------ items


def build_datasets(mmlu_per_subject: int, mmlu_limit: int | None, hellaswag: int, seed: int) -> list[Dataset]:
    from tether.data import sources

    mmlu = sources.stratified_sample(
        sources.load_mmlu(), per_category=mmlu_per_subject, limit=mmlu_limit, seed=seed
    )
    hella = sources.stratified_sample(sources.load_hellaswag(), limit=hellaswag, seed=seed)
    return [
        Dataset("mmlu", [formats.mmlu_request(x) for x in mmlu], [x.answer_index for x in mmlu], ("acc",)),
        Dataset(
            "hellaswag",
            [formats.hellaswag_request(x) for x in hella],
            [x.answer_index for x in hella],
            ("acc_norm", "acc"),
        ),
    ]


def save_datasets(datasets: list[Dataset], path: Path) -> None:
    rows = [
        {
            "name": ds.name,
            "metrics": list(ds.metrics),
            "answers": ds.answers,
            "requests": [
                {"id": r.id, "context": r.context, "continuations": r.continuations} for r in ds.requests
            ],
        }
        for ds in datasets
    ]
    path.write_text(json.dumps(rows), encoding="utf-8")


def read_datasets(path: Path) -> list[Dataset]:
    return [
        Dataset(
            row["name"],
            [ScoreRequest(**r) for r in row["requests"]],
            row["answers"],
            tuple(row["metrics"]),
        )
        for row in json.loads(path.read_text(encoding="utf-8"))
    ]


def write_lm_eval_tasks(datasets: list[Dataset], root: Path) -> dict[str, str]:
    """One JSONL + one task YAML per dataset; returns the task name of each dataset."""
    names = {}
    for ds in datasets:
        data = root / f"{ds.name}.jsonl"
        with data.open("w", encoding="utf-8") as handle:
            for req, answer in zip(ds.requests, ds.answers, strict=True):
                bare = [c.removeprefix(formats.TARGET_DELIMITER) for c in req.continuations]
                if any(
                    formats.TARGET_DELIMITER + b != c for b, c in zip(bare, req.continuations, strict=True)
                ):
                    raise ValueError(f"{req.id}: a continuation lacks the target delimiter")
                row = {"id": req.id, "context": req.context, "choices": bare, "answer": answer}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        task = f"tether_{ds.name}"
        config = {
            "task": task,
            "dataset_path": "json",
            # A private datasets cache inside the temp dir, so the run leaves nothing behind.
            "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(root / "hf_datasets")},
            "test_split": "test",
            "output_type": "multiple_choice",
            "doc_to_text": "context",
            "doc_to_choice": "choices",
            "doc_to_target": "answer",
            "target_delimiter": formats.TARGET_DELIMITER,
            "metric_list": [
                {"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")
            ],
        }
        # JSON is valid YAML, and json.dumps quotes the lone-space delimiter unambiguously.
        (root / f"{task}.yaml").write_text(json.dumps(config, indent=2), encoding="utf-8")
        names[ds.name] = task
    return names


# ------------------------------------------------------------------------------------------ sides
# Each pass runs in a child process: ``--side tether|lm_eval --work DIR --out FILE``.


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def warm_up(model) -> None:
    """One short forward, part of loading: the safetensors weights are memory-mapped, so the first
    forward pages them in (over a minute on a busy machine), on either side alike."""
    with torch.inference_mode():
        model(input_ids=torch.ones((1, 8), dtype=torch.long))


def side_tether(args, datasets: list[Dataset]) -> dict:
    from tether.config import EngineConfig
    from tether.engine import Engine
    from tether.models import load
    from tether.models.load import default_gguf_path, gguf_cache_dir

    model_dir = gguf_cache_dir(default_gguf_path())
    began = time.perf_counter()
    loaded = load("default", device="cpu", dtype="float32")
    if loaded.weights_path != model_dir:
        sys.exit(f"error: default model loaded from {loaded.weights_path}, expected {model_dir}")
    overrides = {
        k: v
        for k, v in (
            ("score_batch_tokens", args.score_batch_tokens),
            ("score_row_tokens", args.score_row_tokens),
        )
        if v is not None
    }
    config = EngineConfig(device="cpu", dtype="float32", threads=args.threads, **overrides)
    engine = Engine(loaded, config)
    torch.set_num_threads(args.threads)
    warm_up(loaded.model)
    out = {
        "load_s": time.perf_counter() - began,
        "rss_after_load_mb": current_rss_mb(),
        "config": config.model_dump(),
        "attn": loaded.model.config._attn_implementation,
        "tether": str(Path(tether.__file__).resolve().parent),
        "datasets": {},
    }
    for ds in datasets:
        began = time.perf_counter()
        results = engine.score(ds.requests, stage=f"vs_lm_eval/{ds.name}", progress=False)
        seconds = time.perf_counter() - began
        out["datasets"][ds.name] = {
            "logprobs": {r.id: list(r.logprobs) for r in results},
            "seconds": seconds,
            "model_seconds": seconds,
            "work": useful_work(engine, ds.requests),
        }
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def side_lm_eval(args, datasets: list[Dataset]) -> dict:
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from tether.models.load import default_gguf_path, gguf_cache_dir

    model_dir = gguf_cache_dir(default_gguf_path())
    work = Path(args.work)
    tasks = {ds.name: f"tether_{ds.name}" for ds in datasets}
    began = time.perf_counter()
    lm = HFLM(pretrained=str(model_dir), device="cpu", dtype="float32", batch_size=args.lm_eval_batch_size)
    manager = TaskManager(include_path=str(work), include_defaults=False)
    torch.set_num_threads(args.threads)
    warm_up(lm.model)
    out = {
        "load_s": time.perf_counter() - began,
        "rss_after_load_mb": current_rss_mb(),
        "attn": lm.model.config._attn_implementation,
        "datasets": {},
    }
    for ds in datasets:
        model_s = [0.0]
        original = lm.loglikelihood

        def timed_loglikelihood(requests, *a, _original=original, _model_s=model_s, **kw):
            t0 = time.perf_counter()
            try:
                return _original(requests, *a, **kw)
            finally:
                _model_s[0] += time.perf_counter() - t0

        lm.loglikelihood = timed_loglikelihood
        try:
            began = time.perf_counter()
            output = lm_eval.simple_evaluate(
                model=lm,
                tasks=[tasks[ds.name]],
                num_fewshot=0,
                task_manager=manager,
                log_samples=True,
                bootstrap_iters=0,
                verbosity="ERROR",
            )
            seconds = time.perf_counter() - began
        finally:
            del lm.loglikelihood
        samples = output["samples"][tasks[ds.name]]
        metrics = output["results"][tasks[ds.name]]
        out["datasets"][ds.name] = {
            "logprobs": {s["doc"]["id"]: [float(r[0]) for r in s["filtered_resps"]] for s in samples},
            "seconds": seconds,
            "model_seconds": model_s[0],
            "pairs": {s["doc"]["id"]: [list(a[:2]) for a in s["arguments"]] for s in samples},
            "reported": {m: float(metrics[f"{m},none"]) for m in ("acc", "acc_norm")},
        }
    out["peak_rss_mb"] = peak_rss_mb()
    return out


# ------------------------------------------------------------------------------------------ work


def useful_work(engine, requests: list[ScoreRequest]) -> dict:
    """What scoring must compute, whatever the method (outside the timings).

    T: tokens that must pass through the transformer body: each item's context plus each
    continuation but its last token (the last token is only predicted);
    A: attention query-key pairs among those (each token attends its own prefix: context token i
    to i+1 keys, continuation token t to len(context)+t+1);
    H: LM-head rows: the context's last state and each continuation token but the last (one row
    predicts a token; MMLU's four one-token choices share the context's row).
    Shared prefixes across items or choices are counted each time: running them once is a
    saving, not less work."""
    t = a = h = 0
    for req in requests:
        enc = engine.encode_score(req)
        c = len(enc.context_ids)
        t += c
        a += c * (c + 1) // 2
        h += 1
        for cont in enc.continuation_ids:
            extra = len(cont) - 1
            t += extra
            a += sum(c + i + 1 for i in range(extra))
            h += extra
    return {"tokens": t, "attention_pairs": a, "head_rows": h}


def model_dims() -> dict:
    from transformers import AutoConfig

    from tether.models.load import default_gguf_path, gguf_cache_dir

    config = AutoConfig.from_pretrained(str(gguf_cache_dir(default_gguf_path())))
    d, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * f  # q, k, v, o, gate, up, down
    return {
        "hidden": d,
        "layers": layers,
        "q_width": q,
        "kv_width": kv,
        "intermediate": f,
        "vocab": config.vocab_size,
        "body_params": layers * per_layer,
    }


def flops(work: dict, dims: dict) -> float:
    return (
        2 * dims["body_params"] * work["tokens"]
        + 4 * dims["layers"] * dims["q_width"] * work["attention_pairs"]
        + 2 * dims["hidden"] * dims["vocab"] * work["head_rows"]
    )


def mm_peak(dims: dict, rows: int = 4096, repeats: int = 10) -> dict[str, float]:
    """GFLOP/s of fp32 ``torch.mm`` on the model's own matmul shapes, ``rows`` tokens a call (best
    of ``repeats`` calls each, after a warm-up)."""
    d, f, q, kv = dims["hidden"], dims["intermediate"], dims["q_width"], dims["kv_width"]
    shapes = {
        "qo": (d, q),
        "kv": (d, kv),
        "gate_up": (d, f),
        "down": (f, d),
        "head": (d, 8192),  # a vocabulary slice: the full 49k head is the same kernel, 6x longer
    }
    out = {}
    for name, (k, n) in shapes.items():
        a, b = torch.randn(rows, k), torch.randn(k, n)
        for _ in range(3):
            torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            began = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - began)
        out[name] = 2 * rows * k * n / best / 1e9
    return out


# ------------------------------------------------------------------------------------------ report


def predictions(ds: Dataset, logprobs: dict[str, list[float]], metric: str) -> dict[str, int]:
    """Each item's chosen index under ``acc`` or ``acc_norm``, by Tether's ``formats.predict``."""
    preds = {}
    for req in ds.requests:
        lp = logprobs[req.id]
        result = ScoreResult(
            id=req.id,
            logprobs=lp,
            num_tokens=[1] * len(lp),  # unused by predict
            num_chars=[len(c) for c in req.continuations],
            is_greedy=[False] * len(lp),  # unused by predict
        )
        preds[req.id] = formats.predict(result, req, normalized=metric == "acc_norm")
    return preds


def report_dataset(ds: Dataset, ours: list[dict], theirs: list[dict]) -> bool:
    """Print input equality, log-likelihood agreement and each metric for both sides; True if
    every item's prediction is the same on both sides."""
    ok = True
    a, b = ours[0], theirs[0]
    repeat = max(
        abs(x - y) for i, lp in a["logprobs"].items() for x, y in zip(lp, ours[1]["logprobs"][i], strict=True)
    )
    same_inputs = sum(
        [tuple(p) for p in b["pairs"][r.id]] == [(r.context, c) for c in r.continuations] for r in ds.requests
    )
    worst = max(
        abs(x - y) for r in ds.requests for x, y in zip(a["logprobs"][r.id], b["logprobs"][r.id], strict=True)
    )
    n = len(ds.requests)
    print(
        f"{ds.name}_inputs: {same_inputs}/{n} items with identical (context, continuation) strings; "
        f"max |loglik diff| tether vs lm_eval {worst:.2e} (tether pass 1 vs pass 2: {repeat:.1e})"
    )
    ok &= same_inputs == n
    gold = {r.id: g for r, g in zip(ds.requests, ds.answers, strict=True)}
    for metric in ds.metrics:
        p_ours = predictions(ds, a["logprobs"], metric)
        p_theirs = predictions(ds, b["logprobs"], metric)
        acc_ours = sum(p_ours[i] == g for i, g in gold.items()) / n
        acc_theirs = sum(p_theirs[i] == g for i, g in gold.items()) / n
        reported = b["reported"][metric]
        if abs(acc_theirs - reported) > 1e-9:  # our reading of lm-eval's outputs must match its own metric
            print(
                f"{ds.name}_{metric}: lm_eval reports {reported:.4f} but its log-likelihoods give {acc_theirs:.4f}"
            )
            ok = False
        disagree = sum(p_ours[i] != p_theirs[i] for i in gold)
        ok &= disagree == 0
        print(
            f"{ds.name}_{metric}: tether {acc_ours:.3f} lm_eval {reported:.3f} "
            f"(n={n}, items predicted differently: {disagree}){'' if disagree == 0 else '  FAILED'}"
        )
    return ok


def passes(runs: list[dict]) -> str:
    return ", ".join(f"{r['seconds']:.1f}" for r in runs)


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def run_side(side: str, args, work: Path, index: int) -> dict:
    out = work / f"{side}-{index}.json"
    command = [sys.executable, __file__, "--side", side, "--work", str(work), "--out", str(out)]
    command += ["--threads", str(args.threads), "--lm-eval-batch-size", str(args.lm_eval_batch_size)]
    for flag in ("score_batch_tokens", "score_row_tokens"):
        if getattr(args, flag) is not None:
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    load_before = os.getloadavg()[0]
    subprocess.run(command, check=True, env=env)
    result = json.loads(out.read_text(encoding="utf-8"))
    result["load_before"], result["load_after"] = load_before, os.getloadavg()[0]
    times = ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in result["datasets"].items())
    print(
        f"[vs_lm_eval] {side} pass: {times}; load average {load_before:.2f} -> {result['load_after']:.2f}",
        file=sys.stderr,
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mmlu-per-subject", type=int, default=4)
    parser.add_argument("--mmlu-limit", type=int, default=200, help="cap on MMLU items, shared over subjects")
    parser.add_argument("--hellaswag", type=int, default=200)
    parser.add_argument(
        "--score-batch-tokens", type=int, default=None, help="override engine.score_batch_tokens"
    )
    parser.add_argument("--score-row-tokens", type=int, default=None, help="override engine.score_row_tokens")
    parser.add_argument(
        "--lm-eval-batch-size",
        type=int,
        default=8,
        help="lm-eval batch size, in (context, choice) sequences (MMLU's 4 choices share one)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--side", choices=("tether", "lm_eval"), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.side:  # a child: one pass of one side
        datasets = read_datasets(Path(args.work) / "items.json")
        fn = side_tether if args.side == "tether" else side_lm_eval
        Path(args.out).write_text(json.dumps(fn(args, datasets)), encoding="utf-8")
        return

    datasets = [
        ds
        for ds in build_datasets(args.mmlu_per_subject, args.mmlu_limit, args.hellaswag, args.seed)
        if ds.requests
    ]
    dims = model_dims()
    with tempfile.TemporaryDirectory(prefix="tether-vs-lm-eval-") as tmp:
        work = Path(tmp)
        save_datasets(datasets, work / "items.json")
        write_lm_eval_tasks(datasets, work)
        peak_load = os.getloadavg()[0]
        peaks = mm_peak(dims)
        runs = {"tether": [], "lm_eval": []}
        for index, side in enumerate(("tether", "lm_eval", "lm_eval", "tether")):
            runs[side].append(run_side(side, args, work, index))
        peaks_after = mm_peak(dims)
    ours, theirs = runs["tether"], runs["lm_eval"]
    print(
        f"model: SmolLM2-135M-Instruct (fp32, cpu, {args.threads} threads; attention: tether "
        f"{ours[0]['attn']}, lm_eval {theirs[0]['attn']}); lm_eval {lm_eval.__version__} batch "
        f"{args.lm_eval_batch_size} sequences; tether from {ours[0]['tether']}, score_batch_tokens "
        f"{ours[0]['config']['score_batch_tokens']}, score_row_tokens {ours[0]['config']['score_row_tokens']}; "
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )
    print(
        "load_average (1 min) before/after each pass, A-B-B-A: "
        + ", ".join(
            f"{side} {r['load_before']:.2f}/{r['load_after']:.2f}"
            for side, r in zip(
                ("tether", "lm_eval", "lm_eval", "tether"),
                (ours[0], theirs[0], theirs[1], ours[1]),
                strict=True,
            )
        )
    )

    ok = True
    totals = {"tether": 0.0, "lm_eval": 0.0, "lm_eval_model": 0.0}
    work_total = {"tokens": 0, "attention_pairs": 0, "head_rows": 0}
    for ds in datasets:
        a = [r["datasets"][ds.name] for r in ours]
        b = [r["datasets"][ds.name] for r in theirs]
        ok &= report_dataset(ds, a, b)
        t_s, l_s, l_model = (
            mean(x["seconds"] for x in a),
            mean(x["seconds"] for x in b),
            mean(x["model_seconds"] for x in b),
        )
        print(
            f"{ds.name}_time: tether {t_s:.1f}s [{passes(a)}], lm_eval {l_s:.1f}s [{passes(b)}] "
            f"(of which loglikelihood {l_model:.1f}s); lm-eval takes {l_s / t_s:.2f}x Tether's time"
        )
        w = a[0]["work"]
        print(
            f"{ds.name}_work: {w['tokens']} body tokens, {w['head_rows']} LM-head rows, "
            f"{w['attention_pairs']} attention pairs = {flops(w, dims) / 1e12:.2f} TFLOP; "
            f"tether {flops(w, dims) / t_s / 1e9:.1f} GFLOP/s"
        )
        totals["tether"] += t_s
        totals["lm_eval"] += l_s
        totals["lm_eval_model"] += l_model
        for k in work_total:
            work_total[k] += w[k]

    items = sum(len(ds.requests) for ds in datasets)
    print(
        f"total_time ({items} items, mean of 2 passes each, A-B-B-A, model load excluded): tether "
        f"{totals['tether']:.1f}s, lm_eval {totals['lm_eval']:.1f}s (loglikelihood only {totals['lm_eval_model']:.1f}s)"
    )
    print(
        f"lm_eval_time_over_tether: {totals['lm_eval'] / totals['tether']:.2f}x (lm-eval takes this many times Tether's time)"
    )
    print(
        f"lm_eval_loglikelihood_time_over_tether: {totals['lm_eval_model'] / totals['tether']:.2f}x "
        "(lm-eval's model calls alone, against all of Tether's scoring)"
    )
    print(
        "peak_rss (each side's own process, model included): "
        f"tether {max(r['peak_rss_mb'] for r in ours):.0f} MB (after load {ours[0]['rss_after_load_mb']:.0f} MB), "
        f"lm_eval {max(r['peak_rss_mb'] for r in theirs):.0f} MB (after load {theirs[0]['rss_after_load_mb']:.0f} MB)"
    )
    total_flops = flops(work_total, dims)
    achieved = total_flops / totals["tether"] / 1e9
    peak = max(peaks.values())
    print(
        f"mm_peak: {peak:.1f} GFLOP/s, best fp32 torch.mm over the model's shapes at 4096 rows "
        f"({', '.join(f'{k} {v:.0f}' for k, v in peaks.items())}; after the passes: "
        f"{', '.join(f'{k} {v:.0f}' for k, v in peaks_after.items())}; load average before {peak_load:.2f})"
    )
    print(
        f"useful_flops: 2*{dims['body_params'] / 1e6:.1f}M body params*{work_total['tokens']} tokens "
        f"+ 4*{dims['layers']} layers*{dims['q_width']}*{work_total['attention_pairs']} attention pairs "
        f"+ 2*{dims['hidden']}*{dims['vocab']} head*{work_total['head_rows']} rows = {total_flops / 1e12:.2f} TFLOP"
    )
    print(f"tether_useful_flops_vs_mm_peak: {achieved / peak:.2f} ({achieved:.1f} of {peak:.1f} GFLOP/s)")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
