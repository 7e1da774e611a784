from __future__ import annotations

import pytest
from pydantic import Field

from tether.config import EngineConfig, StrictModel, apply_overrides, load_config
from tether.errors import ConfigError


class Inner(StrictModel):
    rate: float = Field(0.1, description="a rate")
    name: str = "x"


class Outer(StrictModel):
    steps: int = 3
    inner: Inner = Inner()
    engine: EngineConfig = EngineConfig()


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\ninner:\n  rate: 0.5\n")
    config = load_config(Outer, path, ["inner.name=hello", "engine.batch_size=4"])
    assert config.steps == 5 and config.inner.rate == 0.5 and config.inner.name == "hello"
    assert config.engine.batch_size == 4


def test_prefix_reuse_on_and_off_survive_yaml_booleans(tmp_path):
    # YAML 1.1 reads a bare on/off as true/false; the field's own words must still work.
    path = tmp_path / "c.yaml"
    path.write_text("engine:\n  prefix_reuse: off\n")
    assert load_config(Outer, path, []).engine.prefix_reuse == "off"
    assert load_config(Outer, path, ["engine.prefix_reuse=on"]).engine.prefix_reuse == "on"
    assert load_config(Outer, path, ["engine.prefix_reuse=auto"]).engine.prefix_reuse == "auto"
    with pytest.raises(ConfigError, match="prefix_reuse"):
        load_config(Outer, path, ["engine.prefix_reuse=sometimes"])


def test_every_error_named_with_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("steps: many\ninner:\n  rate: 0.5\n  colour: red\nengine:\n  batch_size: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(Outer, path)
    text = str(info.value)
    assert "3 problem(s)" in text
    assert f"{path}:1: steps" in text
    assert f"{path}:4: inner.colour: unknown key" in text
    assert f"{path}:6: engine.batch_size" in text


def test_bad_yaml_and_bad_override(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("steps: 1\ninner: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(Outer, None, ["steps"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(Outer, None, ["nope=1"])


def test_apply_overrides_parses_yaml_scalars():
    data = apply_overrides({"a": {"b": 1}}, ["a.c=true", "a.d=[1, 2]", "e=text"])
    assert data == {"a": {"b": 1, "c": True, "d": [1, 2]}, "e": "text"}


class Sampling(StrictModel):
    temperature: float = 0.0
    max_new_tokens: int = 16


class WithNestedDefault(StrictModel):
    answer: Sampling = Sampling(temperature=0.7, max_new_tokens=32)


def test_override_keeps_nested_field_defaults():
    config = load_config(WithNestedDefault, None, ["answer.max_new_tokens=64"])
    assert config.answer.max_new_tokens == 64
    assert config.answer.temperature == 0.7  # the field's default, not Sampling's class default


def test_describe_fields_shows_nested_field_defaults():
    from tether.config import describe_fields

    rows = {name: default for name, _, default, _ in describe_fields(WithNestedDefault)}
    assert rows["answer.temperature"] == "0.7" and rows["answer.max_new_tokens"] == "32"
