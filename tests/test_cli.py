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
