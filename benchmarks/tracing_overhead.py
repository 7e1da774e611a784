"""What tracing costs: the same generation workload with tracing off and on, side by side.

Workload: ``--n`` greedy generations (default 1,000, ``--max-new-tokens`` 32) of the default model
over the over-refusal prompts (cycled), through ``Engine.generate`` in batches of ``--batch`` prompts
(default 50), the way an audit stage calls it.

* off: the engine's tracer is ``NULL_TRACER`` and no run stage is open: no traces.jsonl, no spans.
* on: the engine traces into a fresh run directory, inside a run stage: traces.jsonl lines and the
  OpenTelemetry spans (stage, one call span per batch, one item span per prompt) written to
  traces.otlp.jsonl, as in every pipeline.

Each pass runs in its own process (so peak RSS is its own), in the order off, on, on, off (the
machine is shared; means are reported). Model loading and one warm-up batch are outside the timings.
Prints ``tracing on takes X× the time of tracing off`` (the target is at most 1.02×), each side's
seconds and peak RSS, and the spans written.

Passes on a 2-core machine spread by several per cent, more than the 2% to be shown. So the traced
passes also time tracing itself: every call into the run's tracer (``traces.jsonl`` lines, span
starts and ends, item spans, the final flush) on the generating thread, and the OTLP/JSON exporter on
its own thread. That sum over the pass's time is the overhead measured directly, to within the cost
of the timers; it is an upper bound where the exporter thread overlaps torch's (GIL-free) compute.

Run (about 2 × 2 × the time of 1,000 generations: ~25-40 minutes on 2 CPU cores; ``--n 100`` for a
quick look)::

    python3 benchmarks/tracing_overhead.py [--n 1000] [--max-new-tokens 32] [--batch 50] [--order off,on,on,off]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("TETHER_NO_PROGRESS", "1")


def prompts(n: int):
    from tether.data import sources
    from tether.engine import Prompt

    pool = sources.load_overrefusal()
    return [Prompt(id=f"p{i}", text=pool[i % len(pool)].text) for i in range(n)]


class _Clock:
    """Seconds spent inside tracing: on the generating thread and on the exporter's thread."""

    caller = 0.0
    exporter = 0.0


def _timed(fn, field: str = "caller"):
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            setattr(_Clock, field, getattr(_Clock, field) + time.perf_counter() - began)

    return wrapper


class _TimedContext:
    def __init__(self, context):
        self.context = context

    def __enter__(self):
        return _timed(self.context.__enter__)()

    def __exit__(self, *exc):
        return _timed(self.context.__exit__)(*exc)


def _time_tracing(run) -> None:
    """Route every call into ``run``'s tracer, and the exporter, through the clocks."""
    from tether import tracing

    tracer = run.tracer
    span = tracer.span
    tracer.record = _timed(tracer.record)
    tracer.item_span = _timed(tracer.item_span)
    tracer.span = lambda *a, **k: _TimedContext(_timed(span)(*a, **k))
    tracing.OTLPJsonFileExporter.export = _timed(tracing.OTLPJsonFileExporter.export, "exporter")
    run.finish = _timed(run.finish)


def side(args) -> dict:
    from tether.engine import Engine, SamplingParams
    from tether.runs import NULL_TRACER, Run

    work = prompts(args.n)
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    with tempfile.TemporaryDirectory(prefix="tracing_overhead_") as tmp:
        run = Run.create("traced", root=tmp, job="bench") if args.side == "on" else None
        if run is not None:
            _time_tracing(run)
        tracer = run.tracer if run else NULL_TRACER
        engine = Engine.from_spec("default", tracer=tracer)
        engine.generate(work[: args.batch], params, progress=False)  # warm-up, untimed
        began = time.perf_counter()
        if run is not None:
            with run.stage("generate"):
                for start in range(0, len(work), args.batch):
                    engine.generate(
                        work[start : start + args.batch], params, stage="generate", progress=False
                    )
            run.finish()
        else:
            for start in range(0, len(work), args.batch):
                engine.generate(work[start : start + args.batch], params, stage="generate", progress=False)
        seconds = time.perf_counter() - began
        spans = 0
        if run is not None:
            from tether.tracing import read_spans

            spans = len(read_spans(run.path / "traces.otlp.jsonl"))
    return {
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "spans": spans,
        "tracing_caller_s": _Clock.caller,
        "tracing_exporter_s": _Clock.exporter,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument(
        "--order", default="off,on,on,off", help="the passes, in order (on/off, comma-separated)"
    )
    parser.add_argument("--side", choices=("on", "off"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        Path(args.out).write_text(json.dumps(side(args)))
        return 0
    results: dict[str, list[dict]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        order = [w.strip() for w in args.order.split(",") if w.strip()]
        if not order or set(order) - {"on", "off"}:
            parser.error(f"--order: {args.order!r} is not a comma-separated list of on and off")
        for index, which in enumerate(order):
            out = Path(tmp) / f"{index}.json"
            command = [sys.executable, __file__, "--side", which, "--out", str(out)]
            command += [
                "--n",
                str(args.n),
                "--max-new-tokens",
                str(args.max_new_tokens),
                "--batch",
                str(args.batch),
            ]
            subprocess.run(command, check=True)
            results[which].append(json.loads(out.read_text()))
            print(
                f"[tracing_overhead] pass {index + 1} ({which}): {results[which][-1]['seconds']:.1f} s",
                file=sys.stderr,
            )
    mean = {k: sum(r["seconds"] for r in v) / len(v) for k, v in results.items() if v}
    passes = {k: ", ".join(f"{r['seconds']:.1f}" for r in v) for k, v in results.items()}
    peak = {k: max(r["peak_rss_mb"] for r in v) for k, v in results.items() if v}
    print(
        f"workload: {args.n} greedy generations, max_new_tokens {args.max_new_tokens}, batches of {args.batch}, "
        f"default model; passes {', '.join(order)}"
    )
    if results["off"]:
        print(f"tracing off: {mean['off']:.1f} s (passes {passes['off']}), peak RSS {peak['off']:.0f} MB")
    if results["on"]:
        on = results["on"]
        caller = sum(r["tracing_caller_s"] for r in on) / len(on)
        exporter = sum(r["tracing_exporter_s"] for r in on) / len(on)
        print(
            f"tracing on:  {mean['on']:.1f} s (passes {passes['on']}), "
            f"peak RSS {peak['on']:.0f} MB, {on[0]['spans']} spans"
        )
        print(
            f"time inside tracing: {caller + exporter:.2f} s a pass ({caller:.2f} s in tracer calls, "
            f"{exporter:.2f} s exporting) = {100 * (caller + exporter) / mean['on']:.2f}% of a traced pass"
        )
    if results["on"] and results["off"]:
        print(f"tracing on takes {mean['on'] / mean['off']:.3f}× the time of tracing off")
    return 0


if __name__ == "__main__":
    sys.exit(main())
