"""Constitution parsing: the shipped default, and errors that name principle, field and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.cai import load_constitution
from tether.cai.cli import app
from tether.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
GOOD = """\
principles:
  - name: harmless
    tags: [harmful]
    critique_request: Identify harm.
    revision_request: Remove the harm.
    examples:
      - prompt: p
        response: r
        critique: c
        revision: v
  - name: helpful
    tags: [benign]
    critique_request: Identify unhelpfulness.
    revision_request: Be helpful.
  - name: polite
    critique_request: Identify rudeness.
    revision_request: Be polite.
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "constitution.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_default_constitution_covers_the_required_principles():
    c = load_constitution(ROOT / "configs" / "constitution.yaml")
    names = {p.name for p in c.principles}
    assert {
        "no_illegal_activity",
        "no_harm_to_people",
        "no_hate_or_harassment",
        "respect_privacy",
        "honest_about_uncertainty",
        "polite_and_professional",
        "helpful_on_benign_requests",
    } <= names
    # The helpfulness principle never critiques a refusal of a red-team prompt, and vice versa.
    assert "helpful_on_benign_requests" not in {p.name for p in c.for_kind("harmful")}
    assert "no_illegal_activity" not in {p.name for p in c.for_kind("benign")}
    assert all(p.critique_request.strip() and p.revision_request.strip() for p in c.principles)
    # Every principle has a worked example; a prefilled principle's examples begin with its prefix,
    # so the demonstrations and the prefill agree.
    assert all(p.examples for p in c.principles)
    for p in c.principles:
        if p.revision_prefix:
            assert all(ex.revision.startswith(p.revision_prefix) for ex in p.examples), p.name
    assert {p.name for p in c.principles if p.revision_prefix} == {
        "no_illegal_activity",
        "no_harm_to_people",
        "no_hate_or_harassment",
        "respect_privacy",
    }


def test_good_constitution_parses_with_tags_and_examples(tmp_path):
    c = load_constitution(_write(tmp_path, GOOD))
    assert [p.name for p in c.principles] == ["harmless", "helpful", "polite"]
    assert c.principles[0].examples[0].revision == "v"
    assert [p.name for p in c.for_kind("harmful")] == ["harmless", "polite"]
    assert [p.name for p in c.for_kind("benign")] == ["helpful", "polite"]
    assert "helpful" in c.get("helpful").comparison_question


def test_principle_sampling_is_seeded_and_covers_the_pool(tmp_path):
    c = load_constitution(_write(tmp_path, GOOD))
    draws = [c.sample("harmful", f"p{i}/pass0", seed=0).name for i in range(200)]
    assert draws == [c.sample("harmful", f"p{i}/pass0", seed=0).name for i in range(200)]
    assert set(draws) == {"harmless", "polite"}  # never the benign-only principle
    assert draws != [c.sample("harmful", f"p{i}/pass0", seed=1).name for i in range(200)]


def test_missing_revision_request_names_principle_field_and_line(tmp_path):
    text = GOOD.replace("    revision_request: Be helpful.\n", "")
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_constitution(path)
    message = str(info.value)
    # "helpful" is principles.1 and starts on line 11 of the file.
    assert f"{path}:11: principles.1 ('helpful').revision_request: Field required" in message


def test_several_problems_are_reported_at_once(tmp_path):
    text = GOOD.replace("  - name: polite\n", "  - nam: polite\n").replace(
        "    critique_request: Identify harm.\n", ""
    )
    with pytest.raises(ConfigError) as info:
        load_constitution(_write(tmp_path, text))
    message = str(info.value)
    assert "principles.0 ('harmless').critique_request: Field required" in message
    assert "principles.2 (unnamed).name: Field required" in message
    assert "principles.2 (unnamed).nam: unknown key" in message


def test_zero_principles_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="has no principles"):
        load_constitution(_write(tmp_path, "principles: []\n"))
    with pytest.raises(ConfigError, match=r"principles: Field required"):
        load_constitution(_write(tmp_path, "description: nothing here\n"))


def test_duplicate_names_are_rejected(tmp_path):
    text = GOOD.replace("name: polite", "name: harmless")
    with pytest.raises(ConfigError, match=r"repeated: \['harmless'\]"):
        load_constitution(_write(tmp_path, text))


def test_cli_validate(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(_write(tmp_path, GOOD))])
    assert ok.exit_code == 0, ok.output
    assert "3 principle(s)" in ok.output and "harmless" in ok.output
    bad = runner.invoke(app, ["validate", str(_write(tmp_path, "principles: []\n"))])
    assert bad.exit_code != 0
    assert isinstance(bad.exception, ConfigError)
