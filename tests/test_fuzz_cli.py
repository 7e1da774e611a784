"""Zero tracebacks, exact stdout (issue #17).

Every bad input to every command gets a short error naming the file, field or flag, exits 1 (usage
and input errors; 2 stays "incomplete evaluation", 3 "threshold breached"), is rejected before any
model loads, and changes no file. Data a command prints on stdout is exact: no markup eaten, no
wrapping at 80 columns. Ctrl-C during ``generate`` keeps what is done and a rerun finishes the rest.

The table of bad invocations lives in ``cli_cases.py``; hypothesis writes random JSONL and YAML.
Nothing here loads a model except the last tests, which use the tiny random Llama.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.main import get_command

from cli_cases import CASES, ModelLoadReached, file_hashes, invoke, make_inputs, no_model_loads
from tether.cli import app

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return make_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture
def in_inputs(inputs, monkeypatch, tmp_path):
    """Run in the inputs folder (commands write `runs/` relative to it) with a private cache."""
    monkeypatch.chdir(inputs)
    monkeypatch.setenv("TETHER_CACHE", str(tmp_path / "cache"))
    return inputs


def _leaf_commands() -> list[str]:
    def walk(command, path):
        subs = getattr(command, "commands", None)
        if not subs:
            yield " ".join(path)
        for name, sub in (subs or {}).items():
            yield from walk(sub, [*path, name])

    return sorted(walk(get_command(app), []))


def _command_of(argv: tuple[str, ...]) -> str:
    groups = {"models", "runs", "config", "cai", "rlhf", "label", "redteam", "interp", "train"}
    return " ".join(argv[:2]) if argv[0] in groups else argv[0]


def test_the_table_covers_every_command():
    covered = {_command_of(c.argv) for c in CASES}
    assert set(_leaf_commands()) <= covered, set(_leaf_commands()) - covered
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_clear_error(case, in_inputs):
    before = file_hashes(in_inputs)
    with no_model_loads():  # a model load raises ModelLoadReached, which fails the test
        result = invoke(case.args(in_inputs, str(in_inputs / "model")))
    output = result.output
    assert "Traceback" not in output, output
    assert result.exit_code == case.code, output
    assert "error:" in output, output
    for word in case.needs:
        assert word.format(d=in_inputs) in output, f"{word!r} not in:\n{output}"
    for word in case.forbid:
        assert word not in output, output
    assert file_hashes(in_inputs) == before  # no input changed, nothing half-written left behind


# --- random files -----------------------------------------------------------------------------------

_values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**12), st.floats(allow_nan=True), st.text(max_size=12)
)
_record = st.dictionaries(
    st.sampled_from(["id", "text", "system", "context", "continuations", "answer", "chat", "x"]),
    st.one_of(_values, st.lists(_values, max_size=3)),
    max_size=6,
)
_line = st.one_of(
    _record.map(lambda r: json.dumps(r).encode()),
    st.binary(max_size=30),
    st.text(max_size=30).map(str.encode),
    st.just(b""),
    st.just(b'{"id": "p", "text": "caf\xe9"}'),
    st.just(b'{"id": "p", "text": "hello"}'),
    st.just(b'{"id": "1", "context": "a", "continuations": [" b", " c"], "answer": 1}'),
)
_jsonl = st.lists(_line, max_size=6).map(lambda lines: b"\n".join(lines))


def _accepted_or_named(argv: list[str], path: Path) -> None:
    """Either the input passed every check (the command reached the model load), or it is a one-line
    error naming the file; never a traceback."""
    try:
        with no_model_loads():
            result = invoke(argv)
    except ModelLoadReached:
        return
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert path.name in result.output, result.output


@FUZZ
@given(content=_jsonl)
def test_random_prompt_files(content, in_inputs, tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    path = work / "prompts.jsonl"
    path.write_bytes(content)
    _accepted_or_named(
        ["generate", str(in_inputs / "model"), "--prompts", str(path), "--out", str(work / "o.jsonl")], path
    )
    assert not (work / "o.jsonl").exists()


@FUZZ
@given(content=_jsonl)
def test_random_item_files(content, in_inputs, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "items.jsonl"
    path.write_bytes(content)
    _accepted_or_named(["score", str(in_inputs / "model"), "--items", str(path)], path)


_keys = st.sampled_from(
    ["model", "critic", "constitution", "rounds", "seed", "policy", "prompts", "documents", "harmful_sources",
     "audit", "tasks", "engine", "batch_size", "pairs", "rules", "metric", "threshold", "kind", "modle", "x"]
)  # fmt: skip
_yaml_value = st.recursive(
    _values | st.sampled_from(["default", "defualt", "gemma3-270m", "builtin", "harmbench", "mmlu", "a/b"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)
_yaml_text = st.one_of(
    st.dictionaries(_keys, _yaml_value, max_size=5).map(lambda d: yaml.safe_dump(d).encode()),
    st.binary(max_size=40),
    st.text(max_size=40).map(str.encode),
)


@FUZZ
@given(content=_yaml_text, kind=st.sampled_from(["cai", "rlhf", "demo", "gate", "engine"]))
def test_random_config_files(content, kind, in_inputs, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    path.write_bytes(content)
    with no_model_loads():
        result = invoke(["config", "validate", str(path), "--kind", kind])
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1), result.output
    if result.exit_code == 1:
        assert "error:" in result.output and ("config.yaml" in result.output or "--set" in result.output)


@FUZZ
@given(items=st.lists(st.text(max_size=15), min_size=1, max_size=3))
def test_random_overrides(items, in_inputs):
    argv = ["config", "validate", str(in_inputs / "empty.yaml"), "--kind", "cai"]
    for item in items:
        argv += ["--set", item]
    with no_model_loads():
        result = invoke(argv)
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1), result.output


# --- the process as a shell sees it -----------------------------------------------------------------


def _tether(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    src = Path(__file__).parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [sys.executable, "-c", "from tether.cli import main; main()", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


def test_real_exit_codes(in_inputs):
    usage = _tether("generate", str(in_inputs / "model"), "-p", "hi", "-n", "0", "--bogus", cwd=in_inputs)
    assert usage.returncode == 1 and usage.stdout == ""
    assert usage.stderr.startswith("error: No such option: --bogus") and "Traceback" not in usage.stderr
    bad_file = _tether("gate", str(in_inputs / "report-latin1.json"), "--min", "mmlu=0.5", cwd=in_inputs)
    assert bad_file.returncode == 1 and "report-latin1.json:1: not UTF-8" in bad_file.stderr
    assert len(bad_file.stderr.strip().splitlines()) == 2  # the error and its hint


def test_one_damaged_manifest_does_not_hide_the_others(in_inputs):
    result = invoke(["runs", "list", "--root", str(in_inputs / "runs-mixed")])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].startswith("good ")
    for name in ("broken", "listy", "latin"):
        assert f"runs-mixed/{name}/manifest.json" in result.stderr


def test_debug_adds_the_traceback(in_inputs):
    args = ["runs", "show", "broken", "--root", str(in_inputs / "runs-mixed")]
    plain, debug = invoke(args), invoke(["--debug", *args])
    assert plain.exit_code == debug.exit_code == 1
    assert "Traceback" not in plain.output and "Traceback" in debug.output
    assert "manifest.json:1: the run's manifest is not valid JSON" in debug.output


def test_label_serve_on_a_busy_port(in_inputs, tmp_path):
    from tether.feedback.store import LabelStore

    LabelStore(tmp_path / "l.db", create=True)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with no_model_loads():
            result = invoke(["label", "serve", "--db", str(tmp_path / "l.db"), "--port", str(port)])
    assert result.exit_code == 1 and "--port" in result.output and f"127.0.0.1:{port}" in result.output


def test_tether_warnings_are_one_plain_line(in_inputs, tmp_path):
    argv = ["generate", str(in_inputs / "model"), "--prompts", str(in_inputs / "bad.jsonl")]
    with no_model_loads():
        result = invoke([*argv, "--out", str(tmp_path / "o.jsonl"), "--on-error", "skip"], catch=True)
    assert isinstance(result.exception, ModelLoadReached)  # the good line goes on to the model
    assert result.stderr.splitlines() == [
        f"warning: {in_inputs}/bad.jsonl:2: skipped: not valid JSON (Expecting value at column 22)"
    ]


def test_library_warnings_go_to_the_run_log(tmp_path, capsys):
    import warnings

    from tether.logs import attach_run_log, detach_run_log, setup_cli_logging

    try:
        setup_cli_logging()
        assert attach_run_log(tmp_path) == tmp_path / "log.txt"
        warnings.warn_explicit("a library speaks", FutureWarning, "/site-packages/lib/x.py", 3)
    finally:
        detach_run_log()
    assert "FutureWarning: a library speaks" in (tmp_path / "log.txt").read_text()
    assert "a library speaks" not in capsys.readouterr().err


def test_runs_list_before_any_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(["runs", "list"])
    assert result.exit_code == 0 and result.stdout == "" and "no runs yet" in result.stderr


def test_models_show_says_before_it_converts(tmp_path, monkeypatch):
    from tether.models.spec import conversion_notice

    monkeypatch.setenv("TETHER_CACHE", str(tmp_path))
    assert "not converted yet" in conversion_notice("default")
    assert conversion_notice(str(tmp_path)) is None  # a directory loads as it is


def test_a_byte_order_mark_is_not_an_error(tmp_path):
    from tether.config import EngineConfig, load_config
    from tether.data import read_jsonl

    (tmp_path / "p.jsonl").write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "x"}\n')
    (tmp_path / "engine.yaml").write_bytes(b"\xef\xbb\xbfbatch_size: 2\n")
    assert read_jsonl(tmp_path / "p.jsonl")[0]["id"] == "a"
    assert load_config(EngineConfig, tmp_path / "engine.yaml").batch_size == 2
