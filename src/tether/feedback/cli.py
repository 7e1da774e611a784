"""`tether label ...`: import candidates, add annotators, serve the labeling page, agreement, export."""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console

from tether.errors import ConfigError
from tether.feedback.agreement import agreement_report
from tether.feedback.export import export_pairs
from tether.feedback.records import load_labelled_sets
from tether.feedback.store import LabelStore
from tether.inputs import check_output_file
from tether.plain import out as print_data
from tether.plain import plain_table

DEFAULT_DB = Path("labels.db")

app = typer.Typer(
    help="Human preference labels for summarization RLHF: import candidates, serve the labeling page, "
    "measure inter-annotator agreement, export TRL preference pairs.",
    no_args_is_help=True,
)
err = Console(stderr=True, soft_wrap=True)

DbOption = typer.Option(DEFAULT_DB, "--db", help="SQLite label database.")


class AggregateChoice(StrEnum):
    none = "none"
    majority = "majority"


@app.command("import")
def import_(
    candidates: Path = typer.Argument(
        ...,
        help="JSONL, one {doc_id, document, candidates: [{id, text}], votes?: [{annotator, ranking, reason}]} "
        "per line (or one candidate per line).",
    ),
    db: Path = typer.Option(DEFAULT_DB, "--db", help="SQLite label database (created if missing)."),
) -> None:
    """Load candidate sets as items to label, with any votes they carry. Idempotent: documents and
    votes already imported are skipped."""
    if not db.exists():
        check_output_file(db, flag="--db")
    labelled = load_labelled_sets(candidates)
    summary = LabelStore(db, create=True).import_labelled(labelled)
    line = f"{db}: {summary.added} items added, {summary.unchanged} already present"
    if summary.votes_added or summary.votes_unchanged:
        line += f"; {summary.votes_added} votes added, {summary.votes_unchanged} already present"
    _line(line)


@app.command("add-annotator")
def add_annotator(
    name: str = typer.Argument(..., help="Annotator name, shown in stats and exports."),
    db: Path = typer.Option(DEFAULT_DB, "--db", help="SQLite label database (created if missing)."),
    rotate: bool = typer.Option(False, "--rotate", help="Replace the token of an existing annotator."),
) -> None:
    """Create an annotator and print their login token (shown once; only its hash is stored)."""
    if not name.strip():
        raise ConfigError(
            "the annotator name is empty", where="NAME", hint="e.g. tether label add-annotator alice"
        )
    if not db.exists():
        check_output_file(db, flag="--db")
    token = LabelStore(db, create=True).add_annotator(name, rotate=rotate)
    _note(f"annotator '{name}': give them this login token; it is not stored and cannot be shown again")
    typer.echo(token)


@app.command()
def serve(
    db: Path = DbOption,
    host: str = typer.Option(
        "127.0.0.1", help="Interface to bind; keep loopback unless behind an HTTPS proxy."
    ),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port (1-65535)."),
    votes_per_item: int = typer.Option(
        3, min=1, help="Annotators wanted per item; items at this count are not served."
    ),
    shuffle: bool = typer.Option(True, help="Show candidates in a per-annotator random (but stable) order."),
    secure_cookies: bool = typer.Option(
        False, help="Mark the session cookie Secure (when served over HTTPS)."
    ),
) -> None:
    """Serve the labeling page; every vote is committed to the DB before the next item is shown."""
    import uvicorn

    from tether.feedback.app import create_app

    _check_port(host, port)
    store = LabelStore(db)
    if store.count_items() == 0:
        _note(f"warning: {db} has no items yet: run tether label import CANDIDATES --db {db}")
    if not store.annotators():
        _note(f"warning: {db} has no annotators yet: run tether label add-annotator NAME --db {db}")
    if not _is_loopback(host) and not secure_cookies:
        _note(
            "warning: serving beyond this machine over plain HTTP: tokens and cookies travel unencrypted; "
            "put an HTTPS proxy in front and pass --secure-cookies"
        )
    uvicorn.run(
        create_app(store, votes_per_item=votes_per_item, shuffle=shuffle, secure_cookies=secure_cookies),
        host=host,
        port=port,
        log_level="info",
    )


def _line(text: str) -> None:
    """A result line on stdout, as is (no markup: paths and names may hold brackets)."""
    sys.stdout.write(text + "\n")


def _note(text: str) -> None:
    sys.stderr.write(text + "\n")


def _check_port(host: str, port: int) -> None:
    """Bind once before starting the server, so a port in use or a host that does not resolve is
    a one-line error naming the flag."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(
            f"cannot resolve host '{host}' ({exc})", where="--host", hint="e.g. --host 127.0.0.1"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                where="--host/--port",
                hint="another server may be using it; pass a free --port",
            ) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def stats(
    db: Path = DbOption,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Votes per annotator and agreement on the best candidate (Cohen's kappa per pair, Krippendorff's alpha)."""
    store = LabelStore(db)
    records = {item.record.doc_id: item.record for item in store.items()}
    report = agreement_report(records, store.votes(), store.skip_counts())
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    print_data(
        f"{len(records)} items, {report.items} with votes, {report.votes} votes ({report.ties} ties), "
        f"{report.multi_items} items with >= 2 votes"
    )
    people = [(name, str(c.votes), str(c.ties), str(c.skips)) for name, c in report.annotators.items()]
    print_data(
        plain_table(("annotator", "votes", "ties", "skips"), people, numeric={1, 2, 3}, title="Annotators")
    )
    pairs = [
        (p.annotator_a, p.annotator_b, str(p.shared_items), f"{p.observed:.3f}", _fmt(p.kappa))
        for p in report.pairs
    ]
    header = ("annotator A", "annotator B", "shared items", "agreement", "Cohen's kappa")
    print_data(plain_table(header, pairs, numeric={2, 3, 4}, title="Pairs"))
    print_data(f"Krippendorff's alpha (nominal, best candidate or tie): {_fmt(report.alpha)}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@app.command()
def export(
    db: Path = DbOption,
    out_path: Path = typer.Option(
        ..., "--out", help="Output JSONL of {prompt, chosen, rejected, ...} pairs."
    ),
    aggregate: AggregateChoice = typer.Option(
        AggregateChoice.none, help="none: one pair per vote and ranked pair; majority: merge votes per pair."
    ),
) -> None:
    """Write preference pairs (TRL prompt/chosen/rejected). Rankings expand to all pairs; ties give none."""
    check_output_file(out_path, flag="--out", inputs={"--db": db})
    store = LabelStore(db)
    records = {item.record.doc_id: item.record for item in store.items()}
    summary = export_pairs(records, store.votes(), out_path, aggregate=aggregate.value)
    line = f"{out_path}: {summary.pairs} pairs from {summary.votes} votes; {summary.ties} ties (no pair)"
    if aggregate is AggregateChoice.majority:
        line += f"; {summary.no_majority} candidate pairs without a majority (dropped)"
    _line(line)
