"""The CLI as a user meets it: help everywhere, clear errors, no half-written outputs."""

from __future__ import annotations

import json

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from tether.cli import app

runner = CliRunner()


def _all_command_paths():
    def walk(command, path: list[str]):
        yield path
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])

    return list(walk(get_command(app), []))


@pytest.mark.parametrize("path", _all_command_paths(), ids=lambda p: " ".join(p) or "tether")
def test_help_on_every_command(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_generate_jsonl_roundtrip(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "p1", "text": "Hello"}\n{"id": "p2", "text": "Name a colour"}\n')
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app,
        [
            "generate",
            str(tiny_model_dir),
            "--prompts",
            str(prompts),
            "--out",
            str(out),
            "--max-new-tokens",
            "5",
            "-n",
            "2",
            "--temperature",
            "0.7",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt_id"], r["sample_index"]) for r in rows] == [("p1", 0), ("p1", 1), ("p2", 0), ("p2", 1)]


def test_broken_line_reports_file_line_and_writes_nothing(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "p1", "text": "Hello"}\n{"id": "p2", "text": oops}\n')
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app, ["generate", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(out)]
    )
    assert result.exit_code == 1
    assert "prompts.jsonl:2" in result.output and "not valid JSON" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    skipped = runner.invoke(
        app,
        [
            "generate",
            str(tiny_model_dir),
            "--prompts",
            str(prompts),
            "--out",
            str(out),
            "--on-error",
            "skip",
            "--max-new-tokens",
            "3",
        ],
    )
    assert skipped.exit_code == 0, skipped.output
    assert len(out.read_text().splitlines()) == 1


def test_empty_prompt_file_and_missing_model(tiny_model_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = runner.invoke(
        app, ["generate", str(tiny_model_dir), "--prompts", str(empty), "--out", str(tmp_path / "o.jsonl")]
    )
    assert result.exit_code == 1 and "no records" in result.output
    missing = runner.invoke(app, ["generate", str(tmp_path / "nope"), "--prompt", "hi"])
    assert missing.exit_code == 1 and "not found" in missing.output
    bad_set = runner.invoke(app, ["generate", str(tiny_model_dir), "--prompt", "hi", "--set", "batch_sise=2"])
    assert bad_set.exit_code == 1 and "batch_sise: unknown key" in bad_set.output


def test_score_prints_accuracy(tiny_model_dir, tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text(
        '{"id": "1", "context": "Q: 1+1?\\nA:", "continuations": [" 2", " 3"], "answer": 0}\n'
        '{"id": "2", "context": "Sky colour:", "continuations": [" blue", " green"], "answer": 0}\n'
    )
    result = runner.invoke(app, ["score", str(tiny_model_dir), "--items", str(items)])
    assert result.exit_code == 0, result.output
    assert "items: 2" in result.output and "acc:" in result.output


def test_runs_list_and_show(tmp_path):
    from tether.runs import Run

    run = Run.create("myrun", root=tmp_path, job="unit")
    with run.stage("step"):
        run.artifact("a.jsonl").write_text("{}\n")
    listed = runner.invoke(app, ["runs", "list", "--root", str(tmp_path)])
    assert listed.exit_code == 0 and "myrun" in listed.output
    shown = runner.invoke(app, ["runs", "show", "myrun", "--root", str(tmp_path)])
    assert shown.exit_code == 0 and "step" in shown.output and "a.jsonl" in shown.output
    missing = runner.invoke(app, ["runs", "show", "nope", "--root", str(tmp_path)])
    assert missing.exit_code == 1 and "no run named" in missing.output


def test_config_show_lists_fields():
    result = runner.invoke(app, ["config", "show", "EngineConfig"])
    assert result.exit_code == 0 and "batch_size" in result.output and "truncation" in result.output


def test_config_validate_names_bad_keys(tmp_path):
    good = tmp_path / "demo.yaml"
    good.write_text("harmful_prompts: 2\nengine:\n  batch_size: 4\n")
    ok = runner.invoke(app, ["config", "validate", str(good)])
    assert ok.exit_code == 0 and "valid demo config" in ok.output
    bad = tmp_path / "my-demo.yaml"
    bad.write_text("harmful_prompts: -1\nengine:\n  batch_sise: 4\n")
    result = runner.invoke(app, ["config", "validate", str(bad)])
    assert result.exit_code == 1
    assert "my-demo.yaml:1: harmful_prompts" in result.output
    assert "my-demo.yaml:3: engine.batch_sise: unknown key" in result.output
    unknown = runner.invoke(app, ["config", "validate", str(tmp_path / "x.yaml")])
    assert unknown.exit_code == 1 and "--kind" in unknown.output


def test_score_stdout_is_exact_json_lines(tiny_model_dir, tmp_path):
    """Brackets in the JSON survive (no markup) and long lines stay whole (no wrapping at 80 columns):
    `tether score ... | python -m json.tool --json-lines` parses."""
    import subprocess
    import sys

    long_context = "Which of these is [bold]right[/bold]? " * 8
    items = tmp_path / "items.jsonl"
    items.write_text(
        json.dumps({"id": "1", "context": long_context, "continuations": [" [a]", " [b]", " [c]"]})
        + "\n"
        + json.dumps({"id": "2", "context": "Sky colour:", "continuations": [" blue", " green"]})
        + "\n"
    )
    result = runner.invoke(app, ["score", str(tiny_model_dir), "--items", str(items)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["1", "2"] and len(rows[0]["is_greedy"]) == 3
    assert len(result.stdout.splitlines()[0]) > 80
    checked = subprocess.run(
        [sys.executable, "-m", "json.tool", "--json-lines"],
        input=result.stdout,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr


def test_generate_stdout_is_the_completions_exactly(tiny_model_dir, tmp_path):
    args = ["generate", str(tiny_model_dir), "-p", "Say [red]hi[/red]", "-n", "2", "--temperature", "0.9"]
    args += ["--max-new-tokens", "60", "--seed", "3"]
    printed = runner.invoke(app, args)
    assert printed.exit_code == 0, printed.output
    written = runner.invoke(app, [*args, "--out", str(tmp_path / "o.jsonl")])
    assert written.exit_code == 0, written.output
    texts = [json.loads(line)["text"] for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert printed.stdout == "".join(text + "\n" for text in texts)  # same seeds, nothing wrapped or eaten


def test_generate_interrupted_resumes_with_the_rest(tiny_model_dir, tmp_path, monkeypatch):
    """Ctrl-C after the first batch keeps its completions; the same command then generates only
    the prompts not yet done, and the file equals an uninterrupted run's (sampled, same seeds)."""
    from tether.engine import Engine

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "text": f"Count to {i}"}) + "\n" for i in range(5)))
    out = tmp_path / "out.jsonl"
    args = ["generate", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(out), "-n", "2"]
    args += ["--temperature", "0.8", "--max-new-tokens", "6", "--set", "batch_size=4"]  # 2 prompts a batch
    real = Engine.generate
    sent: list[list[str]] = []

    def generate(self, batch, params=None, **kw):
        sent.append([p.id for p in batch])
        if fail_on == len(sent):
            raise KeyboardInterrupt
        return real(self, batch, params, **kw)

    monkeypatch.setattr(Engine, "generate", generate)
    fail_on = 2
    stopped = runner.invoke(app, args)
    assert stopped.exit_code == 130, stopped.output
    assert "interrupted after 2 of 5 prompts; rerun the same command to resume" in stopped.output
    assert "Traceback" not in stopped.output and not out.exists()
    first_batch = sent[0]

    sent.clear()
    fail_on = 0
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming: 2 of 5 prompts already done" in resumed.output
    assert sorted(p for batch in sent for p in batch) == sorted(
        {f"p{i}" for i in range(5)} - set(first_batch)
    )
    assert not out.with_name("out.jsonl.partial").exists()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt_id"], r["sample_index"]) for r in rows] == [
        (f"p{i}", k) for i in range(5) for k in (0, 1)
    ]

    whole = tmp_path / "whole.jsonl"
    assert runner.invoke(app, [*args[:5], str(whole), *args[6:]]).exit_code == 0

    def texts(path):
        return [{k: v for k, v in json.loads(line).items() if k != "latency_s"} for line in path.open()]

    assert texts(whole) == texts(out)
