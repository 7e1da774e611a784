"""Tether's scorer against lm-evaluation-harness on the same multiple-choice items (CPU, default model).

Items: real MMLU (``--mmlu-per-subject`` per subject, 2 -> 114) and HellaSwag (``--hellaswag``, 100)
from ``tether.data.sources``, formatted by ``tether.evals.formats``. The same items are written to a
temp dir as JSONL and declared as two local lm-eval tasks (``dataset_path: json``, no hub), whose
prompts reproduce Tether's exactly: ``doc_to_text`` is the context, ``doc_to_choice`` the choices
*without* their leading space, and ``target_delimiter: " "`` puts that space back, so lm-eval's
continuations equal Tether's and its ``acc_norm`` divides by the bare choice length, like
``formats.predict(..., normalized=True)``. (The fields are named directly rather than through Jinja
``{{context}}``, which would turn an all-digit context into an int.)

Both sides run the same model directory (the cached safetensors of ``default``) in fp32 on CPU with
the same thread count, in one process. Each dataset is timed A-B-B-A (Tether, lm-eval, lm-eval,
Tether) because the machine is shared; the means are reported. Model loading and lm-eval's task
index are outside the timings. Tether's time is ``Engine.score`` (tokenizing included); lm-eval's
is ``simple_evaluate`` (reading the JSON task, building requests, ``loglikelihood``, metrics), and
its ``loglikelihood`` alone (tokenizing included) is reported beside it.

Prints, per dataset: whether lm-eval's (context, continuation) strings equal Tether's, the largest
|log-likelihood difference| per choice, each side's accuracy (``acc``; HellaSwag also ``acc_norm``,
its headline) with the number of items whose prediction differs (exit status 1 if any accuracy
differs by more than 0.5 points), and the times; then ``speedup_vs_lm_eval`` (lm-eval time /
Tether time over all items) and the same ratio for the model calls alone.

Batch sizes: Tether's ``score_batch_size`` counts items (each item's context runs once, its choices
on top of the context's KV cache); lm-eval's counts (context, choice) sequences, except that choices
of one token (MMLU's " A".." D") share one sequence through its logits cache. Both default to 8
(``--batch-size``, ``--lm-eval-batch-size``): on CPU, 8 sequences of ~100+ tokens already give the
matrix multiplies hundreds of rows, while bigger lm-eval batches add padding and grow its
full-vocabulary log-softmax tensor (batch x length x 49k floats).

Setup (a separate venv, so lm-eval's dependencies cannot move the system's torch/transformers/
datasets; it sees the system site, where tether is installed editable)::

    python3 -m venv --system-site-packages /tmp/lmeval-venv
    /tmp/lmeval-venv/bin/pip install lm-eval "torch==$(python3 -c 'import torch; print(torch.__version__.split("+")[0])')" \\
        "transformers==$(python3 -c 'import transformers; print(transformers.__version__)')" \\
        "datasets==$(python3 -c 'import datasets; print(datasets.__version__)')"

Run::

    /tmp/lmeval-venv/bin/python benchmarks/vs_lm_eval.py [--threads 2] [--mmlu-per-subject 2] [--hellaswag 100]
"""

# ruff: noqa: E402  (the offline switches must be set before lm_eval, datasets and transformers load)

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
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
ACC_TOLERANCE = 0.005  # the bound: accuracies within 0.5 points

try:
    import tether  # noqa: F401
except ImportError:  # running from a checkout without an installed tether
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

try:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
except ImportError as exc:
    sys.exit(
        f"error: this benchmark needs lm-evaluation-harness ({exc}).\n"
        f"  install it in a separate venv: {INSTALL}"
    )

import torch
import transformers

from tether.config import EngineConfig
from tether.data import sources
from tether.engine import Engine, ScoreRequest, ScoreResult
from tether.evals import formats
from tether.models import load
from tether.models.load import default_gguf_path, gguf_cache_dir


@dataclass(frozen=True)
class Dataset:
    name: str  # also the lm-eval task name suffix
    requests: list[ScoreRequest]
    answers: list[int]
    metrics: tuple[str, ...]  # printed in this order; the first is the headline


@dataclass(frozen=True)
class Pass:
    """One timed pass of one side over one dataset: log-likelihoods per item id, in choice order."""

    logprobs: dict[str, list[float]]
    seconds: float  # end to end, model load excluded
    model_seconds: float  # inside Engine.score / lm-eval's loglikelihood only
    pairs: dict[str, list[tuple[str, str]]] | None = None  # lm-eval's (context, continuation) strings
    reported: dict[str, float] | None = None  # lm-eval's own acc and acc_norm


# ------------------------------------------------------------------------------------------ items


def build_datasets(mmlu_per_subject: int, mmlu_limit: int | None, hellaswag: int, seed: int) -> list[Dataset]:
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


def run_tether(engine: Engine, ds: Dataset) -> Pass:
    began = time.perf_counter()
    results = engine.score(ds.requests, stage=f"vs_lm_eval/{ds.name}", progress=False)
    seconds = time.perf_counter() - began
    return Pass({r.id: list(r.logprobs) for r in results}, seconds, seconds)


def run_lm_eval(lm: HFLM, task: str, manager: TaskManager) -> Pass:
    model_s = [0.0]
    original = lm.loglikelihood

    def timed_loglikelihood(requests, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(requests, *args, **kwargs)
        finally:
            model_s[0] += time.perf_counter() - t0

    lm.loglikelihood = timed_loglikelihood
    try:
        began = time.perf_counter()
        output = lm_eval.simple_evaluate(
            model=lm,
            tasks=[task],
            num_fewshot=0,
            task_manager=manager,
            log_samples=True,
            bootstrap_iters=0,
            verbosity="ERROR",
        )
        seconds = time.perf_counter() - began
    finally:
        del lm.loglikelihood
    samples = output["samples"][task]
    metrics = output["results"][task]
    return Pass(
        logprobs={s["doc"]["id"]: [float(r[0]) for r in s["filtered_resps"]] for s in samples},
        seconds=seconds,
        model_seconds=model_s[0],
        pairs={s["doc"]["id"]: [tuple(a[:2]) for a in s["arguments"]] for s in samples},
        reported={m: float(metrics[f"{m},none"]) for m in ("acc", "acc_norm")},
    )


def abba(
    name: str, tether: Callable[[], Pass], lm_eval_: Callable[[], Pass]
) -> tuple[list[Pass], list[Pass]]:
    """Tether, lm-eval, lm-eval, Tether: load from other jobs on a shared machine falls on both alike."""
    runs: dict[str, list[Pass]] = {"tether": [], "lm_eval": []}
    for side, fn in (("tether", tether), ("lm_eval", lm_eval_), ("lm_eval", lm_eval_), ("tether", tether)):
        runs[side].append(fn())
        print(f"[vs_lm_eval] {name} {side} pass: {runs[side][-1].seconds:.1f}s", file=sys.stderr, flush=True)
    return runs["tether"], runs["lm_eval"]


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


def report_dataset(ds: Dataset, tether_runs: list[Pass], lm_runs: list[Pass]) -> bool:
    """Print input equality, log-likelihood agreement and each metric for both sides; True if the
    accuracies agree within 0.5 points."""
    ok = True
    ours, theirs = tether_runs[0], lm_runs[0]
    repeat = max(
        abs(a - b)
        for i, lp in ours.logprobs.items()
        for a, b in zip(lp, tether_runs[1].logprobs[i], strict=True)
    )
    same_inputs = sum(theirs.pairs[r.id] == [(r.context, c) for c in r.continuations] for r in ds.requests)
    worst = max(
        abs(a - b)
        for r in ds.requests
        for a, b in zip(ours.logprobs[r.id], theirs.logprobs[r.id], strict=True)
    )
    n = len(ds.requests)
    print(
        f"{ds.name}_inputs: {same_inputs}/{n} items with identical (context, continuation) strings; "
        f"max |loglik diff| tether vs lm_eval {worst:.2e} (tether pass 1 vs pass 2: {repeat:.1e})"
    )
    gold = {r.id: a for r, a in zip(ds.requests, ds.answers, strict=True)}
    for metric in ds.metrics:
        p_ours = predictions(ds, ours.logprobs, metric)
        p_theirs = predictions(ds, theirs.logprobs, metric)
        acc_ours = sum(p_ours[i] == g for i, g in gold.items()) / n
        acc_theirs = sum(p_theirs[i] == g for i, g in gold.items()) / n
        reported = theirs.reported[metric]
        if abs(acc_theirs - reported) > 1e-9:  # our reading of lm-eval's outputs must match its own metric
            print(
                f"{ds.name}_{metric}: lm_eval reports {reported:.4f} but its log-likelihoods give {acc_theirs:.4f}"
            )
            ok = False
        disagree = sum(p_ours[i] != p_theirs[i] for i in gold)
        within = abs(acc_ours - reported) <= ACC_TOLERANCE
        ok &= within
        print(
            f"{ds.name}_{metric}: tether {acc_ours:.3f} lm_eval {reported:.3f} "
            f"(n={n}, disagreements {disagree}){'' if within else '  FAILED: differ by > 0.5 points'}"
        )
    return ok


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mmlu-per-subject", type=int, default=2)
    parser.add_argument(
        "--mmlu-limit", type=int, default=None, help="cap on MMLU items, shared over subjects"
    )
    parser.add_argument("--hellaswag", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8, help="Tether score_batch_size (items per batch)")
    parser.add_argument(
        "--lm-eval-batch-size",
        type=int,
        default=8,
        help="lm-eval batch size, in (context, choice) sequences (MMLU's 4 choices share one)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    datasets = [
        ds
        for ds in build_datasets(args.mmlu_per_subject, args.mmlu_limit, args.hellaswag, args.seed)
        if ds.requests
    ]
    model_dir = gguf_cache_dir(default_gguf_path())
    engine = Engine(
        load("default", device="cpu", dtype="float32"),
        EngineConfig(device="cpu", dtype="float32", score_batch_size=args.batch_size, threads=args.threads),
    )
    if engine.loaded.weights_path != model_dir:
        sys.exit(f"error: default model loaded from {engine.loaded.weights_path}, expected {model_dir}")
    lm = HFLM(pretrained=str(model_dir), device="cpu", dtype="float32", batch_size=args.lm_eval_batch_size)
    torch.set_num_threads(args.threads)  # in case either loader changed it
    print(
        f"model: {model_dir} (fp32, cpu, {torch.get_num_threads()} threads); lm_eval {lm_eval.__version__}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}; batch: tether "
        f"{args.batch_size} items, lm_eval {args.lm_eval_batch_size} sequences",
        flush=True,
    )

    ok = True
    totals = {"tether": 0.0, "lm_eval": 0.0, "tether_model": 0.0, "lm_eval_model": 0.0}
    with tempfile.TemporaryDirectory(prefix="tether-vs-lm-eval-") as tmp:
        root = Path(tmp)
        tasks = write_lm_eval_tasks(datasets, root)
        manager = TaskManager(include_path=str(root), include_defaults=False)
        for ds in datasets:
            tether_runs, lm_runs = abba(
                ds.name,
                lambda ds=ds: run_tether(engine, ds),
                lambda ds=ds: run_lm_eval(lm, tasks[ds.name], manager),
            )
            ok &= report_dataset(ds, tether_runs, lm_runs)
            t_s, l_s = mean(r.seconds for r in tether_runs), mean(r.seconds for r in lm_runs)
            l_model = mean(r.model_seconds for r in lm_runs)
            print(
                f"{ds.name}_time: tether {t_s:.1f}s [{', '.join(f'{r.seconds:.1f}' for r in tether_runs)}], "
                f"lm_eval {l_s:.1f}s [{', '.join(f'{r.seconds:.1f}' for r in lm_runs)}] "
                f"(of which loglikelihood {l_model:.1f}s); speedup {l_s / t_s:.2f}x",
                flush=True,
            )
            totals["tether"] += t_s
            totals["lm_eval"] += l_s
            totals["tether_model"] += t_s
            totals["lm_eval_model"] += l_model

    items = sum(len(ds.requests) for ds in datasets)
    print(
        f"total_time ({items} items, mean of 2 passes each, A-B-B-A): tether {totals['tether']:.1f}s, "
        f"lm_eval {totals['lm_eval']:.1f}s (loglikelihood only {totals['lm_eval_model']:.1f}s)"
    )
    print(f"speedup_vs_lm_eval: {totals['lm_eval'] / totals['tether']:.2f}x")
    print(f"speedup_vs_lm_eval_loglikelihood_only: {totals['lm_eval_model'] / totals['tether_model']:.2f}x")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
