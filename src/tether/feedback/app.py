"""The labeling web app: FastAPI routes over a LabelStore.

Routes (all HTML except /healthz):

- ``GET /login``, ``POST /login`` (form field ``token``): a good token opens a session (HttpOnly,
  SameSite=Strict cookie) and redirects to ``/``; a bad one answers 401.
- ``GET /``: the next item for the logged-in annotator (or a "done" page); no session: redirect to /login.
- ``POST /vote`` (``csrf``, ``item_id``, ``ranking`` = comma-separated candidate ids best first, ``reason``):
  committed before the 303 redirect to ``/`` that fetches the next item. Refusals write nothing:
  401 no/invalid session, 403 bad CSRF token or foreign Origin, 404 unknown item, 409 already labeled,
  422 bad ranking or reason.
- ``POST /skip`` (``csrf``, ``item_id``): the item moves behind all others for this annotator.
- ``POST /logout`` (``csrf``), ``GET /healthz``.

Forms are parsed from the urlencoded body directly, so python-multipart is not needed.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from tether.feedback import page
from tether.feedback.records import Candidate, CandidateSet
from tether.feedback.store import SESSION_LIFETIME, LabelStore, Session, VoteRejected

COOKIE = "tether_session"
MAX_FORM_BYTES = 64 * 1024


class _Refused(Exception):
    def __init__(self, status: int, title: str, message: str):
        self.status, self.title, self.message = status, title, message


def display_order(record: CandidateSet, annotator: str, shuffle: bool = True) -> list[Candidate]:
    """Candidates in the order this annotator sees them.

    Shuffled per (annotator, document) so position bias does not line up with generation order,
    and seeded from a hash so the order survives reloads and server restarts.
    """
    order = list(record.candidates)
    if shuffle:
        seed = int.from_bytes(hashlib.sha256(f"{annotator}\0{record.doc_id}".encode()).digest()[:8], "big")
        random.Random(seed).shuffle(order)
    return order


def create_app(
    db: str | Path | LabelStore,
    *,
    votes_per_item: int = 3,
    shuffle: bool = True,
    secure_cookies: bool = False,
) -> FastAPI:
    """The app over an existing label DB. ``votes_per_item``: annotators wanted per item (items at the
    target are no longer served). ``secure_cookies``: mark the session cookie Secure (behind HTTPS)."""
    if votes_per_item < 1:
        raise ValueError("votes_per_item must be at least 1")
    store = db if isinstance(db, LabelStore) else LabelStore(db)
    app = FastAPI(title="Tether labeling", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.state.votes_per_item = votes_per_item

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        request.state.nonce = secrets.token_urlsafe(16)
        response = await call_next(request)
        nonce = request.state.nonce
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        # not "no-referrer": with it browsers send "Origin: null" on form POSTs, which the check refuses
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(_Refused)
    async def refused(request: Request, exc: _Refused) -> HTMLResponse:
        link, text = ("/login", "log in") if exc.status == 401 else ("/", "back to labeling")
        return HTMLResponse(
            page.message_page(request.state.nonce, exc.title, exc.message, link=link, link_text=text),
            status_code=exc.status,
        )

    def current_session(request: Request) -> Session | None:
        sid = request.cookies.get(COOKIE)
        return store.session(sid) if sid else None

    async def read_form(request: Request) -> dict[str, str]:
        # Origin is sent by browsers on every POST; a foreign one is a cross-site request.
        origin = request.headers.get("origin")
        host = request.headers.get("host", "")
        if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
            raise _Refused(403, "Refused", "cross-origin request")
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            raise _Refused(415, "Refused", "expected a form (application/x-www-form-urlencoded)")
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise _Refused(413, "Refused", "form too large")
        fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        return {key: values[0] for key, values in fields.items()}

    async def authorized_form(request: Request) -> tuple[Session, dict[str, str]]:
        form = await read_form(request)
        session = current_session(request)
        if session is None:
            raise _Refused(401, "Not logged in", "your session is missing or expired; log in again")
        if not secrets.compare_digest(form.get("csrf", ""), session.csrf):
            raise _Refused(403, "Refused", "missing or wrong form token; reload the page")
        return session, form

    def item_id_of(form: dict[str, str]) -> int:
        try:
            return int(form.get("item_id", ""))
        except ValueError:
            raise _Refused(400, "Bad request", "item_id must be an integer") from None

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        return JSONResponse({"ok": True, "items": store.count_items()})

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        if current_session(request) is not None:
            return RedirectResponse("/", status_code=303)
        return HTMLResponse(page.login_page(request.state.nonce))

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await read_form(request)
        annotator = store.authenticate(form.get("token", "").strip())
        if annotator is None:
            return HTMLResponse(page.login_page(request.state.nonce, "Unknown token."), status_code=401)
        sid, _ = store.open_session(annotator)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            sid,
            max_age=int(SESSION_LIFETIME.total_seconds()),
            path="/",
            httponly=True,
            samesite="strict",
            secure=secure_cookies,
        )
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        await authorized_form(request)
        store.close_session(request.cookies[COOKIE])
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/", response_class=HTMLResponse)
    def label(request: Request) -> Response:
        session = current_session(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        who = session.annotator
        progress = store.progress(who, votes_per_item)
        item = store.next_item(who, votes_per_item)
        nonce = request.state.nonce
        if item is None:
            return HTMLResponse(page.done_page(nonce, who.name, progress, session.csrf))
        return HTMLResponse(
            page.label_page(
                item_id=item.id,
                record=item.record,
                order=display_order(item.record, who.name, shuffle),
                annotator=who.name,
                progress=progress,
                csrf=session.csrf,
                nonce=nonce,
            )
        )

    @app.post("/vote")
    async def vote(request: Request) -> Response:
        session, form = await authorized_form(request)
        ranking = [c for c in form.get("ranking", "").split(",") if c]
        try:
            store.record_vote(session.annotator, item_id_of(form), ranking, form.get("reason", ""))
        except VoteRejected as exc:
            raise _Refused(exc.status, "Vote refused", exc.message) from None
        # Committed above; the redirect's GET / is what returns the next item.
        return RedirectResponse("/", status_code=303)

    @app.post("/skip")
    async def skip(request: Request) -> Response:
        session, form = await authorized_form(request)
        try:
            store.record_skip(session.annotator, item_id_of(form))
        except VoteRejected as exc:
            raise _Refused(exc.status, "Skip refused", exc.message) from None
        return RedirectResponse("/", status_code=303)

    return app
