"""What the benchmark scripts share: the load-average line they print before and after a run, and a
side run in a child process of its own (so its peak RSS is its own), which prints its result as one
``RESULT {json}`` line."""

from __future__ import annotations

import json
import os
import subprocess
import time


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


def print_result(result: dict) -> None:
    """In the child: the result its parent reads."""
    print("RESULT " + json.dumps(result), flush=True)


def child_result(command: list[str], tail_lines: int = 3) -> dict:
    """Run ``command`` and return its last ``RESULT`` line; if it failed (an OOM kill, say) or printed
    none, ``{"failed": "exit code N after Ss: [its last lines]"}``."""
    began = time.perf_counter()
    child = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
    if child.returncode != 0 or not lines:
        tail = (child.stderr or child.stdout).strip().splitlines()[-tail_lines:]
        return {"failed": f"exit code {child.returncode} after {time.perf_counter() - began:.0f}s: {tail}"}
    return json.loads(lines[-1][len("RESULT ") :])
