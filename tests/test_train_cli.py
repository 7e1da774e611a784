"""`tether train sft|dpo`: one trainer on a JSONL file, bad input named by file:line before any
model loads, nothing overwritten, and the data-parallel path (two processes over gloo, as
`accelerate launch` runs them on GPUs) writing the adapter once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.cli import app

SRC = Path(__file__).resolve().parents[1] / "src"


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _sft_rows(n: int = 8) -> list[dict]:
    return [{"prompt": f"Say the number {i}.", "completion": f"The number is {i}."} for i in range(n)]


def test_bad_lines_and_a_used_out_dir_are_one_line_errors_before_loading(tmp_path, tiny_model_dir):
    runner = CliRunner()
    bad = _write(tmp_path / "bad.jsonl", [*_sft_rows(2), {"prompt": "no completion"}])
    result = runner.invoke(
        app, ["train", "sft", str(bad), "--base", str(tiny_model_dir), "--out", str(tmp_path / "a")]
    )
    assert result.exit_code == 1 and f"{bad}:3" in result.output and "completion" in result.output
    assert not (tmp_path / "a").exists()
    dpo = _write(tmp_path / "dpo.jsonl", [{"prompt": "p", "chosen": "c"}])
    result = runner.invoke(
        app, ["train", "dpo", str(dpo), "--base", str(tiny_model_dir), "--out", str(tmp_path / "b")]
    )
    assert result.exit_code == 1 and f"{dpo}:1" in result.output and "rejected" in result.output
    used = tmp_path / "used"
    used.mkdir()
    (used / "adapter_config.json").write_text("{}")
    good = _write(tmp_path / "good.jsonl", _sft_rows(2))
    result = runner.invoke(
        app, ["train", "sft", str(good), "--base", str(tiny_model_dir), "--out", str(used)]
    )
    assert result.exit_code == 1 and "--out" in result.output and "already holds an adapter" in result.output
    assert (used / "adapter_config.json").read_text() == "{}"


def test_two_processes_train_one_adapter(tmp_path, tiny_model_dir):
    data = _write(tmp_path / "sft.jsonl", _sft_rows(8))
    out = tmp_path / "adapter"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "tether.cli",
        "train", "sft", str(data), "--base", str(tiny_model_dir), "--out", str(out),
        "--set", "max_steps=2", "--set", "batch_size=2", "--set", "device=cpu", "--set", "logging_steps=1",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    [line] = done.stdout.strip().splitlines()  # the main process alone reports
    summary = json.loads(line)
    assert summary["processes"] == 2 and summary["examples"] == 8
    log = json.loads((out / "train_log.json").read_text())
    assert log["processes"] == 2 and [h["loss"] for h in log["log_history"] if "loss" in h]
    assert (out / "adapter_model.safetensors").exists() and (out / "tether_base.json").exists()


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_one_process_trains_and_prints_one_json_line(tmp_path, tiny_model_dir, kind):
    rows = _sft_rows(4) if kind == "sft" else [
        {"prompt": f"Say {i}.", "chosen": f"{i}.", "rejected": "No."} for i in range(4)
    ]  # fmt: skip
    data = _write(tmp_path / "data.jsonl", rows)
    out = tmp_path / kind
    result = CliRunner().invoke(
        app,
        ["train", kind, str(data), "--base", str(tiny_model_dir), "--out", str(out),
         "--set", "max_steps=1", "--set", "batch_size=2", "--set", "device=cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["trainer"] == kind and summary["processes"] == 1 and summary["adapter"] == str(out)
    assert (out / "adapter_config.json").exists()


def test_two_process_reward_training_takes_the_single_process_steps(tmp_path, tiny_model_dir):
    """The reward model's loop splits each step's prompt groups over the processes and sums the
    gradients: two processes end with the weights one process ends with."""
    from safetensors.torch import load_file

    pairs = [
        {"prompt": f"Summarise: item {i} is red.", "chosen": f"Item {i} is red.", "rejected": "Blue things."}
        for i in range(12)
    ]
    data = _write(tmp_path / "pairs.jsonl", pairs)
    settings = [
        "--set",
        "max_steps=2",
        "--set",
        "batch_size=4",
        "--set",
        "eval_fraction=0.2",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}

    def train(out: Path, processes: int) -> dict:
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        command = [*launch, "-m", "tether.cli", "train", "reward", str(data), "--base", str(tiny_model_dir),
                   "--out", str(out), *settings]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        [line] = done.stdout.strip().splitlines()
        return json.loads(line)

    one, two = train(tmp_path / "one", 1), train(tmp_path / "two", 2)
    assert (one["processes"], two["processes"]) == (1, 2) and one["steps"] == two["steps"] == 2
    assert two["final_loss"] == pytest.approx(one["final_loss"], abs=1e-5)
    for name in ("reward_head.safetensors", "adapter_model.safetensors"):
        a, b = load_file(tmp_path / "one" / name), load_file(tmp_path / "two" / name)
        assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-5 for k in a), name
    assert not list((tmp_path / "two").glob(".reward_train_log.rank*"))  # the other process cleaned up
