"""OpenTelemetry spans for every stage and model call, written as OTLP/JSON in the run directory.

Each run directory gets ``traces.otlp.jsonl``: one ``ExportTraceServiceRequest`` per line in the
OTLP/JSON encoding (hex trace and span ids, integer enums, 64-bit integers as strings), the format the
OpenTelemetry Collector's file exporter writes and reads, so Phoenix, Jaeger or MLflow can load it.
With ``TETHER_OTLP_ENDPOINT`` (``tether --otlp-endpoint URL``) the same spans also go to a local
collector over OTLP/HTTP.

Span shapes (GenAI semantic conventions plus ``tether.*``):

* ``stage NAME`` per pipeline stage (``tether.stage``), children of the run's root span ``run NAME``.
* ``{gen_ai.operation.name} {gen_ai.request.model}`` per model call: ``chat``/``text_completion``
  for generation, ``score`` for log-likelihood scoring, ``echo`` for ``tether serve``'s prompt
  log-probs; ``gen_ai.usage.input_tokens``/``output_tokens``, ``gen_ai.request.temperature``,
  ``max_tokens``, ``top_p``. A batched call is one span with one child per item
  (``tether.item.id``): from the decode loop, the item's own admission-to-finish time
  (``tether.latency.kind = "own"``); where items share a forward (transformers' batch generate,
  packed scoring), the batch's times and ``tether.batch_share_s`` (``tether.latency.kind = "batch"``).
* ``judge NAME`` per judged batch, with a child per item carrying ``tether.judge.verdict``.

:func:`check_span` is the schema those spans keep (unit-tested, and ``tether runs trace --check``).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

SPANS_FILENAME = "traces.otlp.jsonl"
ENDPOINT_ENV = "TETHER_OTLP_ENDPOINT"
OPERATIONS = ("chat", "text_completion", "score", "echo", "embeddings", "reward")
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")

# The span sink of the run stage in progress: judges, reward models and embedders reach it without a
# tracer argument threaded through every call.
_ACTIVE: ContextVar[SpanSink | None] = ContextVar("tether_span_sink", default=None)


def _hex(value: str) -> str:
    return base64.b64decode(value).hex() if value else value


def otlp_json(spans: Sequence[Any]) -> dict[str, Any]:
    """Finished SDK spans as one OTLP/JSON ``ExportTraceServiceRequest`` (ids in hex, as the
    OTLP/JSON mapping requires; protobuf's JSON mapping would give base64)."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    data = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource in data.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for key in _ID_FIELDS:
                    if key in span:
                        span[key] = _hex(span[key])
                for link in span.get("links", []):
                    for key in ("traceId", "spanId"):
                        if key in link:
                            link[key] = _hex(link[key])
    return data


class OTLPJsonFileExporter:
    """A span exporter appending one OTLP/JSON request per export batch to a file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult

        line = json.dumps(otlp_json(spans), ensure_ascii=False, separators=(",", ":"))
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class SpanSink:
    """One run's OpenTelemetry tracer provider: spans to ``path`` (and to ``endpoint``, if set)."""

    def __init__(self, path: Path, *, run: str, endpoint: str | None = None):
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.run = run
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": "tether", "tether.run": run}), shutdown_on_exit=True
        )
        # A queue that holds a whole stage's item spans: the SDK's default (2,048) drops spans when a
        # batch of thousands of items ends at once.
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPJsonFileExporter(path), max_queue_size=1 << 16)
        )
        if endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            url = endpoint.rstrip("/")
            url = url if url.endswith("/v1/traces") else url + "/v1/traces"
            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        self.tracer = self.provider.get_tracer("tether")
        self._root = None
        self._root_lock = threading.Lock()

    def root_context(self):
        """The context of the run's root span (started on first use, ended by :meth:`close`)."""
        from opentelemetry import trace

        with self._root_lock:
            if self._root is None:
                self._root = self.tracer.start_span(
                    f"run {self.run}", context=_empty_context(), attributes={"tether.run": self.run}
                )
        return trace.set_span_in_context(self._root)

    def flush(self) -> None:
        self.provider.force_flush()

    def close(self) -> None:
        """End the root span, write everything out and stop the export thread."""
        with self._root_lock:
            if self._root is not None:
                self._root.end()
                self._root = None
        self.provider.shutdown()


def _empty_context():
    from opentelemetry.context import Context

    return Context()


@contextmanager
def activate(sink: SpanSink | None) -> Iterator[None]:
    """Make ``sink`` the one :func:`span` and :func:`item_spans` write to, for the duration."""
    token = _ACTIVE.set(sink)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active() -> SpanSink | None:
    return _ACTIVE.get()


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes OpenTelemetry accepts: None dropped, other values as they are or as text."""
    out = {}
    for key, value in (attributes or {}).items():
        if value is None:
            continue
        if isinstance(value, str | bool | int | float):
            out[key] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str | bool | int | float) for v in value):
            out[key] = list(value)
        else:
            out[key] = str(value)
    return out


@contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    sink: SpanSink | None = None,
    client: bool = False,
) -> Iterator[Any]:
    """A span around the block, child of the current span (or of the run's root): yields the span,
    or None when no run is tracing. ``client=True`` marks a call to a model (GenAI client span)."""
    sink = sink or _ACTIVE.get()
    if sink is None:
        yield None
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    context = None if current.get_span_context().is_valid else sink.root_context()
    kind = trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL
    with sink.tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=_clean(attributes)
    ) as s:
        yield s


def item_span(
    name: str,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any] | None = None,
    *,
    sink: SpanSink | None = None,
) -> None:
    """A finished child span of the current span with explicit times (an item of a batch)."""
    sink = sink or _ACTIVE.get()
    if sink is None:
        return
    s = sink.tracer.start_span(name, start_time=start_ns, attributes=_clean(attributes))
    s.end(end_time=max(end_ns, start_ns))


def traced_verdicts(
    name: str,
    ids: Sequence[str],
    judge_all: Callable[[], Sequence[Any]],
    item_attributes: Sequence[Mapping[str, Any]] | None = None,
) -> list[Any]:
    """Run ``judge_all()`` (one verdict per id, each with ``label`` and ``score``) as one
    ``judge NAME`` span with a child per item carrying its verdict, plus that item's
    ``item_attributes`` (an attack id, a stage). The children share the batch's times. Nothing to
    judge is no span."""
    if not ids:
        return list(judge_all())
    with span(f"judge {name}", {"tether.judge.name": name, "tether.batch.items": len(ids)}):
        began = time.time_ns()
        verdicts = list(judge_all())
        if active() is not None:
            ended = time.time_ns()
            extras = item_attributes or [{}] * len(ids)
            for item_id, verdict, extra in zip(ids, verdicts, extras, strict=True):
                item_span(
                    f"judge {name}",
                    began,
                    ended,
                    {
                        "tether.item.id": item_id,
                        "tether.judge.name": name,
                        "tether.judge.verdict": verdict.label,
                        "tether.judge.score": verdict.score,
                        "tether.latency.kind": "batch",
                        **extra,
                    },
                )
    return verdicts


def set_attributes(s: Any, attributes: Mapping[str, Any]) -> None:
    """Set attributes on a span from :func:`span` (a no-op on None)."""
    if s is not None:
        s.set_attributes(_clean(attributes))


def gen_ai_name(operation: str, model: str) -> str:
    return f"{operation} {model}"


# --- reading and checking ----------------------------------------------------------------------------


def _value(v: dict[str, Any]) -> Any:
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def read_spans(path: str | Path) -> list[dict[str, Any]]:
    """Every span of an OTLP/JSON file, flattened: ids, name, kind, start/end (ns, int), and
    ``attributes`` as a plain dict (resource attributes under ``resource``)."""
    from tether.errors import DataError

    spans = []
    path = Path(path)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            for resource in request["resourceSpans"]:
                res = {
                    a["key"]: _value(a["value"]) for a in resource.get("resource", {}).get("attributes", [])
                }
                for scope in resource.get("scopeSpans", []):
                    for raw in scope.get("spans", []):
                        spans.append(
                            {
                                "traceId": raw.get("traceId", ""),
                                "spanId": raw.get("spanId", ""),
                                "parentSpanId": raw.get("parentSpanId", ""),
                                "name": raw.get("name", ""),
                                "kind": raw.get("kind", 0),
                                "start": int(raw.get("startTimeUnixNano", 0)),
                                "end": int(raw.get("endTimeUnixNano", 0)),
                                "attributes": {
                                    a["key"]: _value(a["value"]) for a in raw.get("attributes", [])
                                },
                                "resource": res,
                            }
                        )
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"not an OTLP/JSON trace line ({type(exc).__name__}: {exc})", where=f"{path}:{number}"
            ) from None
    return spans


def _is_hex(text: Any, length: int) -> bool:
    return isinstance(text, str) and len(text) == length and all(c in "0123456789abcdef" for c in text)


def check_span(s: Mapping[str, Any]) -> list[str]:
    """What is wrong with one span (as :func:`read_spans` gives it) against Tether's span schema: []
    when nothing is. Ids are hex of the right length; start <= end, both set; every span names its
    run (``tether.run`` on the span's resource); a model-call span is named ``{operation} {model}``
    after its ``gen_ai.operation.name`` (one of ``OPERATIONS``) and ``gen_ai.request.model``, and its
    token counts are non-negative integers; an item span names its item; a stage span its stage."""
    problems = []
    name = s.get("name", "")
    attrs = s.get("attributes", {})
    if not _is_hex(s.get("traceId"), 32) or set(s["traceId"]) == {"0"}:
        problems.append("traceId is not 32 hex digits")
    if not _is_hex(s.get("spanId"), 16) or set(s["spanId"]) == {"0"}:
        problems.append("spanId is not 16 hex digits")
    parent = s.get("parentSpanId", "")
    if parent and not _is_hex(parent, 16):
        problems.append("parentSpanId is not 16 hex digits")
    if not s.get("start") or not s.get("end") or s["end"] < s["start"]:
        problems.append("start/end times missing or end before start")
    if not s.get("resource", {}).get("tether.run"):
        problems.append("no tether.run on the resource")
    operation = attrs.get("gen_ai.operation.name")
    if operation is not None:
        model = attrs.get("gen_ai.request.model")
        if operation not in OPERATIONS:
            problems.append(f"gen_ai.operation.name {operation!r} is not one of {', '.join(OPERATIONS)}")
        if not model:
            problems.append("a model-call span without gen_ai.request.model")
        elif name != gen_ai_name(operation, model):
            problems.append(f"named {name!r}, not {gen_ai_name(operation, model)!r}")
        for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
            value = attrs.get(key)
            if value is not None and (not isinstance(value, int) or value < 0):
                problems.append(f"{key} is not a non-negative integer")
        if attrs.get("tether.latency.kind") not in (None, "own", "batch", "request"):
            problems.append("tether.latency.kind is not own, batch or request")
    if name.startswith("stage ") and not attrs.get("tether.stage"):
        problems.append("a stage span without tether.stage")
    if not parent and not name.startswith("run "):
        problems.append("a span without a parent that is not a run's root span")
    return problems


def check_spans(spans: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every problem of every span, as ``span name (span id): problem``, plus parents that are
    neither in the file nor the root of an enclosing run; a model call's children are its items and
    each names its item (``tether.item.id``)."""
    problems = []
    by_id = {s["spanId"]: s for s in spans}
    ids = set(by_id)
    for s in spans:
        label = f"{s.get('name', '?')} ({s.get('spanId', '?')})"
        problems += [f"{label}: {p}" for p in check_span(s)]
        parent = s.get("parentSpanId")
        above = by_id.get(parent)
        if (
            above
            and "gen_ai.operation.name" in above["attributes"]
            and not s["attributes"].get("tether.item.id")
        ):
            problems.append(f"{label}: an item of a model call without tether.item.id")
        # A nested run's first spans hang under the enclosing run's stage, which lives in its file.
        if parent and parent not in ids and not s.get("name", "").startswith(("stage ", "run ")):
            problems.append(f"{label}: its parent {parent} is not in the file")
    return problems


def _is_call(s: Mapping[str, Any]) -> bool:
    return "gen_ai.operation.name" in s["attributes"]


def token_totals(spans: Sequence[Mapping[str, Any]]) -> tuple[int, int, int]:
    """(model calls, input tokens, output tokens) over the model-call spans that are not items of
    another call (a batch's span carries its items' totals)."""
    by_id = {s["spanId"]: s for s in spans}
    calls = [
        s
        for s in spans
        if _is_call(s) and not (by_id.get(s["parentSpanId"]) and _is_call(by_id[s["parentSpanId"]]))
    ]
    return (
        len(calls),
        sum(int(s["attributes"].get("gen_ai.usage.input_tokens") or 0) for s in calls),
        sum(int(s["attributes"].get("gen_ai.usage.output_tokens") or 0) for s in calls),
    )


def _subtree(span_: Mapping[str, Any], children: Mapping[str, list[Mapping[str, Any]]]) -> list:
    out = [span_]
    for c in children.get(span_["spanId"], []):
        out += _subtree(c, children)
    return out


def stage_timeline(spans: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per pipeline stage, in start order: ``stage``, ``start_ns``, ``seconds`` and the
    model calls and tokens beneath it. A stage that ran more than once (a resumed run repeats an
    interrupted one) is shown by its latest run."""
    children: dict[str, list[Mapping[str, Any]]] = {}
    for s in spans:
        if s["parentSpanId"]:
            children.setdefault(s["parentSpanId"], []).append(s)
    latest: dict[str, Mapping[str, Any]] = {}
    for s in spans:
        name = s["attributes"].get("tether.stage")
        if (
            s["name"].startswith("stage ")
            and name
            and (name not in latest or s["start"] > latest[name]["start"])
        ):
            latest[name] = s
    rows = []
    for name, s in sorted(latest.items(), key=lambda kv: kv[1]["start"]):
        calls, tokens_in, tokens_out = token_totals(_subtree(s, children))
        rows.append(
            {
                "stage": name,
                "start_ns": s["start"],
                "seconds": (s["end"] - s["start"]) / 1e9,
                "calls": calls,
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
            }
        )
    return rows


def format_tree(spans: Sequence[Mapping[str, Any]], *, items: bool = False) -> str:
    """The span tree as plain text: one line per span (indented under its parent) with its duration
    and, under each span, the tokens of the model calls beneath it; a call's items are folded into
    one line unless ``items``. Ends with the totals."""
    by_id = {s["spanId"]: s for s in spans}
    children: dict[str, list[Mapping[str, Any]]] = {}
    roots = []
    for s in sorted(spans, key=lambda s: s["start"]):
        if s["parentSpanId"] in by_id:
            children.setdefault(s["parentSpanId"], []).append(s)
        else:
            roots.append(s)

    lines: list[str] = []

    def show(s, depth: int) -> None:
        seconds = (s["end"] - s["start"]) / 1e9
        calls, tokens_in, tokens_out = token_totals(_subtree(s, children))
        a = s["attributes"]
        extra = [f"{seconds:.3f} s"]
        if calls:
            extra.append(f"{calls} call{'s' if calls != 1 else ''}, tokens in {tokens_in} out {tokens_out}")
        for key in ("tether.item.id", "tether.judge.verdict", "tether.reward", "tether.attack.id"):
            if a.get(key) is not None:
                extra.append(f"{key.removeprefix('tether.')}={a[key]}")
        lines.append(f"{'  ' * depth}{s['name']}  [{'; '.join(extra)}]")
        kids = children.get(s["spanId"], [])
        folded = [c for c in kids if "tether.item.id" in c["attributes"] and not children.get(c["spanId"])]
        if folded and not items:
            own = [
                c["attributes"].get("tether.latency.kind") == "own" and (c["end"] - c["start"]) / 1e9
                for c in folded
            ]
            note = ""
            if any(own):
                times = sorted(t for t in own if t)
                note = f"; own time median {times[len(times) // 2]:.3f} s, max {times[-1]:.3f} s"
            lines.append(f"{'  ' * (depth + 1)}({len(folded)} item spans{note})")
            kids = [c for c in kids if c not in folded]
        for c in kids:
            show(c, depth + 1)

    for r in roots:
        show(r, 0)
    calls, tokens_in, tokens_out = token_totals(spans)
    lines.append(f"total: {len(spans)} spans, {calls} model calls, tokens in {tokens_in} out {tokens_out}")
    return "\n".join(lines)


__all__ = [
    "ENDPOINT_ENV",
    "SPANS_FILENAME",
    "OTLPJsonFileExporter",
    "SpanSink",
    "activate",
    "active",
    "check_span",
    "check_spans",
    "format_tree",
    "item_span",
    "otlp_json",
    "stage_timeline",
    "read_spans",
    "span",
    "token_totals",
]
