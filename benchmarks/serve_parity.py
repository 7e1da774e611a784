"""`tether serve` parity on the real model: lm-eval through the server equals lm-eval in-process, and
Tether's served engine equals Tether's in-process engine.

Items: ``--arc-easy`` ARC-Easy and ``--hellaswag`` HellaSwag items (default 50 each) from
``tether.data.sources``, formatted by ``tether.evals.formats`` and declared as local lm-eval tasks
exactly as ``benchmarks/vs_lm_eval.py`` does (no hub).

1. lm-eval's HF backend (``HFLM``) on the default model's cached safetensors directory, in process.
2. ``tether serve default`` started on a free port (a child process, this checkout's ``src``), then
   lm-eval's ``local-completions`` against it (``/v1/completions`` with ``echo``, ``logprobs`` and
   token-id prompts, the tokenizer read from the same directory).
3. Tether's ``OpenAIEngine`` (``openai:NAME``) against the same server vs Tether's in-process
   ``Engine``: ``score`` on the same requests, and greedy ``generate`` on ``--prompts`` chat prompts.

Prints per dataset: each side's acc / acc_norm, how many items' predictions differ, and the largest
|Δ log-likelihood| per choice (lm-eval's HF backend pads and batches unlike Tether's packed scorer:
expect ~1e-4 there); then Tether's served-vs-local max |Δ| and identical greedy texts. Exit status 1
when an lm-eval prediction differs, Tether's served-vs-local |Δ| exceeds ``--tolerance`` (1e-4), or
a greedy text differs.

Run with lm-eval's venv (see vs_lm_eval.py for its setup, plus ``pip install tenacity aiohttp`` for
its API models); about 5-10 minutes on 2 CPU cores::

    /tmp/lmeval-venv/bin/python benchmarks/serve_parity.py [--arc-easy 50] [--hellaswag 50] [--port 0]
"""

# ruff: noqa: E402  (the offline switches must be set before lm_eval, datasets and transformers load)

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TETHER_NO_PROGRESS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

try:
    import lm_eval
except ImportError:
    sys.exit(
        "serve_parity.py needs lm-eval: run it with /tmp/lmeval-venv/bin/python (see benchmarks/vs_lm_eval.py)"
    )

missing = [pkg for pkg in ("tenacity", "aiohttp", "requests") if importlib.util.find_spec(pkg) is None]
if missing:  # lm-eval's API models need its [api] extra
    sys.exit(
        f"lm-eval's local-completions needs {', '.join(missing)}: /tmp/lmeval-venv/bin/pip install {' '.join(missing)}"
    )

from tether.evals import formats

_spec = importlib.util.spec_from_file_location("vs_lm_eval", ROOT / "benchmarks" / "vs_lm_eval.py")
vs = importlib.util.module_from_spec(_spec)
sys.modules["vs_lm_eval"] = vs  # dataclasses look their module up there
_spec.loader.exec_module(vs)


def build(arc_easy: int, hellaswag: int, seed: int) -> list:
    from tether.data import sources

    arc = sources.stratified_sample(sources.load_arc("ARC-Easy"), limit=arc_easy, seed=seed)
    hella = sources.stratified_sample(sources.load_hellaswag(), limit=hellaswag, seed=seed)
    return [
        vs.Dataset(
            "arc_easy",
            [formats.arc_request(x) for x in arc],
            [x.answer_index for x in arc],
            ("acc", "acc_norm"),
        ),
        vs.Dataset(
            "hellaswag",
            [formats.hellaswag_request(x) for x in hella],
            [x.answer_index for x in hella],
            ("acc_norm", "acc"),
        ),
    ]


def run_lm_eval(model, tasks: dict[str, str], work: Path) -> dict:
    """Per dataset: log-likelihoods per item id, and lm-eval's reported acc / acc_norm."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(work), include_defaults=False)
    out = {}
    for name, task in tasks.items():
        began = time.perf_counter()
        result = lm_eval.simple_evaluate(
            model=model,
            tasks=[task],
            num_fewshot=0,
            task_manager=manager,
            log_samples=True,
            bootstrap_iters=0,
            verbosity="ERROR",
        )
        samples = result["samples"][task]
        metrics = result["results"][task]
        out[name] = {
            "logprobs": {s["doc"]["id"]: [float(r[0]) for r in s["filtered_resps"]] for s in samples},
            "reported": {m: float(metrics[f"{m},none"]) for m in ("acc", "acc_norm")},
            "seconds": time.perf_counter() - began,
        }
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, name: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-c", "from tether.cli import main; main()", "--quiet", "serve", "default"]
    command += ["--port", str(port), "--name", name]
    proc = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}/v1/models"
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"tether serve exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    sys.exit("tether serve did not come up within 5 minutes")


def compare(ds, ours: dict, theirs: dict) -> tuple[int, float]:
    """Items whose prediction differs (acc and acc_norm), and the largest |Δ loglik|."""
    differ, worst = 0, 0.0
    for req in ds.requests:
        a, b = ours["logprobs"][req.id], theirs["logprobs"][req.id]
        worst = max(worst, max(abs(x - y) for x, y in zip(a, b, strict=True)))
        lengths = [len(c.removeprefix(formats.TARGET_DELIMITER)) for c in req.continuations]
        for values in (
            (a, b),
            (
                [x / n for x, n in zip(a, lengths, strict=True)],
                [y / n for y, n in zip(b, lengths, strict=True)],
            ),
        ):
            if max(range(len(a)), key=values[0].__getitem__) != max(range(len(b)), key=values[1].__getitem__):
                differ += 1
                break
    return differ, worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arc-easy", type=int, default=50)
    parser.add_argument("--hellaswag", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=8, help="chat prompts for the greedy-generation check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--batch-size", type=int, default=8, help="lm-eval batch size, both backends")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    from tether.models.load import default_gguf_path, gguf_cache_dir, load

    load("default")  # converts the GGUF once, so the directory below exists
    model_dir = gguf_cache_dir(default_gguf_path())
    datasets = build(args.arc_easy, args.hellaswag, args.seed)
    failed = False
    with tempfile.TemporaryDirectory(prefix="serve_parity_") as tmp:
        work = Path(tmp)
        tasks = vs.write_lm_eval_tasks(datasets, work)
        hf = HFLM(pretrained=str(model_dir), device="cpu", dtype="float32", batch_size=args.batch_size)
        in_process = run_lm_eval(hf, tasks, work)
        del hf

        port = args.port or free_port()
        name = "tether-default"
        server = start_server(port, name)
        try:
            api = LocalCompletionsAPI(
                model=name,
                base_url=f"http://127.0.0.1:{port}/v1/completions",
                tokenizer=str(model_dir),
                tokenizer_backend="huggingface",
                tokenized_requests=True,
                batch_size=args.batch_size,
                num_concurrent=2,
                max_length=8192,
            )
            served = run_lm_eval(api, tasks, work)
            for ds in datasets:
                a, b = in_process[ds.name], served[ds.name]
                differ, worst = compare(ds, a, b)
                # lm-eval's HF backend pads and batches differently from Tether's packed scorer, so
                # its log-likelihoods differ in the last digits; the claim here is equal predictions.
                failed |= differ > 0
                accs = " ".join(
                    f"{m} hf {a['reported'][m]:.4f} served {b['reported'][m]:.4f}" for m in ds.metrics
                )
                print(
                    f"{ds.name} ({len(ds.requests)} items): {accs}; predictions differ on {differ} items; "
                    f"max |Δ loglik| {worst:.2e}; seconds hf {a['seconds']:.1f} served {b['seconds']:.1f}"
                )
            failed |= tether_parity(datasets, port, name, args)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:  # uvicorn waits for requests in flight; do not
                server.kill()
                server.wait()
    print("parity: " + ("FAILED" if failed else "ok"))
    return 1 if failed else 0


def tether_parity(datasets, port: int, name: str, args) -> bool:
    """Tether's served engine vs its in-process engine on the same requests and chat prompts."""
    from tether.config import ServedConfig
    from tether.data import sources
    from tether.engine import Engine, Prompt, SamplingParams
    from tether.engine.served import OpenAIEngine

    local = Engine.from_spec("default")
    remote = OpenAIEngine(
        f"openai:{name}", ServedConfig(base_url=f"http://127.0.0.1:{port}/v1", concurrency=4)
    )
    requests = [r for ds in datasets for r in ds.requests]
    here = local.score(requests, progress=False)
    there = remote.score(requests, progress=False)
    worst = max(
        abs(a - b)
        for x, y in zip(here, there, strict=True)
        for a, b in zip(x.logprobs, y.logprobs, strict=True)
    )
    greedy_differ = sum(x.is_greedy != y.is_greedy for x, y in zip(here, there, strict=True))
    benign = sources.stratified_sample(sources.load_overrefusal(), limit=args.prompts, seed=args.seed)
    prompts = [Prompt(id=p.id, text=p.text) for p in benign]
    params = SamplingParams(max_new_tokens=48)
    texts_here = [c.text for c in local.generate(prompts, params, progress=False)]
    texts_there = [c.text for c in remote.generate(prompts, params, progress=False)]
    same = sum(a == b for a, b in zip(texts_here, texts_there, strict=True))
    print(
        f"tether served vs in-process: {len(requests)} score requests, max |Δ loglik| {worst:.2e}, "
        f"is_greedy differs on {greedy_differ}; greedy text identical on {same}/{len(prompts)} chat prompts"
    )
    return worst > args.tolerance or same != len(prompts)


if __name__ == "__main__":
    sys.exit(main())
