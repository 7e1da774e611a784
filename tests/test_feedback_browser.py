"""A real headless Chromium labels three items by keyboard; the DB must hold exactly those votes.

Needs Debian's ``chromium`` (apt) and the ``playwright`` Python package; ``playwright install`` is never
run, the system browser is launched directly. Skipped when either is missing, except under CI=true.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tether.feedback import LabelStore, create_app, load_candidate_sets

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _require_browser():
    in_ci = os.environ.get("CI", "").lower() == "true"
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} not found (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed (pip install playwright)"
    if problem:
        if in_ci:
            pytest.fail(f"browser test cannot run under CI: {problem}")
        pytest.skip(problem)


@pytest.fixture
def server(tmp_path: Path):
    """The app on a free loopback port, served by uvicorn in a thread; yields (base url, store, token)."""
    import uvicorn

    candidates = tmp_path / "candidates.jsonl"
    sets = [
        {
            "doc_id": "two",
            "document": "Owls hunt at night.",
            "candidates": [
                {"id": "p", "text": "Owls hunt.<script>alert(1)</script>"},
                {"id": "q", "text": "Owls sing."},
            ],
        },
        {
            "doc_id": "three",
            "document": "Tides follow the moon.",
            "candidates": [{"id": f"t{i}", "text": f"tide summary {i}"} for i in range(3)],
        },
        {
            "doc_id": "four",
            "document": "Glaciers carve valleys.",
            "candidates": [{"id": f"g{i}", "text": f"glacier summary {i}"} for i in range(4)],
        },
    ]
    candidates.write_text("".join(json.dumps(s) + "\n" for s in sets))
    store = LabelStore(tmp_path / "labels.db", create=True)
    store.import_sets(load_candidate_sets(candidates))
    token = store.add_annotator("ann")

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # the OS picks a free port; handing uvicorn the socket avoids a race
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(create_app(store.path), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", store, token
    uv.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_label_three_items_by_keyboard(server):
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    base, store, token = server
    # per item kind: the keys pressed (display positions, best first), and the reason key
    plan = {
        2: (["2"], "f", "unfaithful"),
        3: (["3", "1"], "o", "omits_key_point"),
        4: (["2", "4", "1"], "x", "other"),
    }
    expected = []
    dialogs = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

            page.goto(base + "/")
            assert page.url.endswith("/login")
            page.locator("#token").focus()
            page.keyboard.type(token)
            with page.expect_navigation():
                page.keyboard.press("Enter")

            for n in range(3):
                expect(page.locator("#progress")).to_have_text(f"labeled {n} / 3")
                doc_id = page.locator("main").get_attribute("data-doc-id")
                shown = page.eval_on_selector_all(".cand", "els => els.map(e => e.dataset.candId)")
                keys, reason_key, reason = plan[len(shown)]
                for key in keys:
                    page.keyboard.press(key)
                picked = [shown[int(k) - 1] for k in keys]
                ranking = picked + [c for c in shown if c not in picked]
                if n == 0:
                    # Enter without a reason is caught on the page: nothing is sent
                    page.keyboard.press("Enter")
                    expect(page.locator("#status")).to_contain_text("Pick a reason")
                    assert page.locator("main").get_attribute("data-doc-id") == doc_id
                page.keyboard.press(reason_key)
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                expected.append((doc_id, "ann", tuple(ranking), reason))

            expect(page.locator("#done")).to_contain_text("Nothing left to label")
            expect(page.locator("#progress")).to_have_text("labeled 3 / 3")
        finally:
            browser.close()

    assert dialogs == []  # the <script> inside a candidate never ran
    assert sorted(len(r) for _, _, r, _ in expected) == [2, 3, 4]
    assert [(v.doc_id, v.annotator, v.ranking, v.reason) for v in store.votes()] == sorted(
        expected, key=lambda e: ["two", "three", "four"].index(e[0])
    )
