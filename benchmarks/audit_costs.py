"""Measure the audit's per-item cost table: seconds per item of every task on one model, and the
model's score, on this machine. ``tether audit --mde`` estimates run time from these figures
(``tether.audit.power.SECONDS_PER_ITEM``); rerun this after an engine change and copy the printed
table there.

    python benchmarks/audit_costs.py [--model default] [--items 24] [--tasks all] [--out costs.json]

Each task runs on its own default subset (``Task.select(size=N)``), as the sweep runs it (batches of
``task.batch_items``, no cache); generation tasks with long outputs get a third of the items. The
load average before and after is printed, since a shared machine's wall-clock figures depend on it.
On an oversubscribed machine run it with ``--threads 1``: torch's worker threads spin while they
wait for a core, so multi-threaded CPU time inflates with the load, single-threaded CPU time does not
(an idle 2-core machine then runs at most that fast, and up to twice as fast with both threads).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

LONG_GENERATION = {"gsm8k", "humaneval"}  # 256-token answers: a third of the items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 on a busy machine: CPU time stays honest)"
    )
    args = parser.parse_args()

    from tether.audit.cache import NullCache
    from tether.audit.sweep import run_task
    from tether.config import EngineConfig
    from tether.engine import Engine
    from tether.evals import resolve_tasks

    print(f"load average before: {os.getloadavg()}")
    began = time.perf_counter()
    engine = Engine.from_spec(args.model, EngineConfig(threads=args.threads))
    load_s = time.perf_counter() - began
    print(f"load {args.model}: {load_s:.1f} s")
    rows = {}
    for task in resolve_tasks(args.tasks):
        n = max(4, args.items // 3) if task.name in LONG_GENERATION else args.items
        items = task.select(size=n)
        cpu = time.process_time()
        done = run_task(engine, task, items, model=args.model, cache=NullCache(), progress=False)
        cpu = time.process_time() - cpu
        scores = [r.score for r in done.results if r.status == "scored" and r.score is not None]
        rows[task.name] = {
            "items": len(items),
            "seconds": round(done.seconds, 2),
            "seconds_per_item": round(done.seconds / max(1, len(items)), 3),
            "cpu_seconds_per_item": round(cpu / max(1, len(items)), 3),
            "score": round(sum(scores) / len(scores), 3) if scores else None,
            "error": done.error,
        }
        print(f"{task.name}: {rows[task.name]}", flush=True)
    load_after = os.getloadavg()
    print(f"load average after: {load_after}")
    print("SECONDS_PER_ITEM = {")
    for name, row in rows.items():
        print(f'    "{name}": {row["seconds_per_item"]},')
    print("}")
    if args.out:
        args.out.write_text(
            json.dumps(
                {"model": args.model, "load_s": load_s, "load_after": load_after, "tasks": rows}, indent=2
            )
        )


if __name__ == "__main__":
    main()
