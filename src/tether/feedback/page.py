"""Server-side HTML of the labeling app. Every piece of data goes through ``html.escape``.

The inline script only reads ``data-*`` attributes and writes ``textContent``/input values; it never
builds markup from model text. A per-response CSP nonce means no other script can run on the page.
"""

from __future__ import annotations

from html import escape

from tether.feedback.records import Candidate, CandidateSet
from tether.feedback.store import Progress

# key -> (reason value, label); the same table drives the buttons and the keyboard handler.
REASON_KEYS: tuple[tuple[str, str, str], ...] = (
    ("f", "unfaithful", "the worse one is unfaithful"),
    ("o", "omits_key_point", "the worse one omits a key point"),
    ("x", "other", "other"),
    ("t", "both_fine", "tie: both fine"),
)

_CSS = """
body{font:16px/1.45 system-ui,sans-serif;margin:0;color:#1a1a1a;background:#f6f6f4}
header{display:flex;gap:1.5rem;align-items:center;padding:.6rem 1rem;background:#24323f;color:#fff}
header form{margin-left:auto}
main{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:1rem;padding:1rem}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8rem 1rem}
.text{white-space:pre-wrap}
.cand{border:2px solid #ccc;border-radius:6px;padding:.5rem .8rem;margin-bottom:.7rem;cursor:pointer}
.cand.picked{border-color:#2a7de1;background:#eef5ff}
.rank{font-weight:bold;color:#2a7de1;margin-left:.5rem}
kbd{border:1px solid #999;border-radius:3px;padding:0 .3rem;background:#f0f0f0;color:#000}
.controls{padding:0 1rem 1rem}
.reasons label{margin-right:1rem}
#status{color:#b00020;min-height:1.4em}
.card{max-width:28rem;margin:4rem auto}
"""


def _page(title: str, body: str, nonce: str, script: str = "") -> str:
    # The nonce also covers the style element, so the CSP needs no 'unsafe-inline' at all.
    n = escape(nonce)
    script_tag = f'<script nonce="{n}">{script}</script>' if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{escape(title)}</title><style nonce="{n}">{_CSS}</style></head>'
        f"<body>{body}{script_tag}</body></html>"
    )


def login_page(nonce: str, error: str | None = None) -> str:
    message = f'<p id="status" role="alert">{escape(error)}</p>' if error else ""
    return _page(
        "Tether labeling: log in",
        '<section class="card"><h1>Tether labeling</h1>'
        "<p>Paste the token you were given by whoever runs this labeling job.</p>"
        f"{message}"
        '<form method="post" action="/login">'
        '<label>Token <input id="token" name="token" type="password" autocomplete="off" autofocus required></label> '
        '<button type="submit">Log in</button></form></section>',
        nonce,
    )


def message_page(nonce: str, title: str, message: str, *, link: str = "/", link_text: str = "back") -> str:
    return _page(
        title,
        f'<section class="card"><h1>{escape(title)}</h1><p>{escape(message)}</p>'
        f'<p><a href="{escape(link)}">{escape(link_text)}</a></p></section>',
        nonce,
    )


def _header(annotator: str, progress: Progress, csrf: str) -> str:
    return (
        f"<header><strong>Tether labeling</strong><span>annotator: {escape(annotator)}</span>"
        f'<span id="progress" data-labeled="{progress.labeled}" data-total="{progress.total}">'
        f"labeled {progress.labeled} / {progress.total}</span>"
        '<form method="post" action="/logout">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}"><button type="submit">Log out</button></form>'
        "</header>"
    )


def done_page(nonce: str, annotator: str, progress: Progress, csrf: str) -> str:
    return _page(
        "Tether labeling: done",
        _header(annotator, progress, csrf) + '<section class="card" id="done"><h1>Nothing left to label</h1>'
        "<p>Every item you can label has been labeled. Thank you!</p></section>",
        nonce,
    )


def _candidate(position: int, cand: Candidate) -> str:
    return (
        f'<div class="cand" data-cand-id="{escape(cand.id)}" data-key="{position}">'
        f'<div><kbd>{position}</kbd> Summary {position}<span class="rank"></span></div>'
        f'<div class="text">{escape(cand.text)}</div></div>'
    )


def label_page(
    *,
    item_id: int,
    record: CandidateSet,
    order: list[Candidate],
    annotator: str,
    progress: Progress,
    csrf: str,
    nonce: str,
) -> str:
    k = len(order)
    how = (
        "Press <kbd>1</kbd> or <kbd>2</kbd> for the better summary"
        if k == 2
        else "Press the summaries' numbers best first to rank them (the last is filled in)"
    )
    reasons = "".join(
        f'<label><input type="radio" name="reason" value="{value}" data-key="{key}"> '
        f"<kbd>{key}</kbd> {escape(label)}</label>"
        for key, value, label in REASON_KEYS
    )
    body = (
        _header(annotator, progress, csrf)
        + f'<main data-item-id="{item_id}" data-doc-id="{escape(record.doc_id)}">'
        f'<section><h2>Document</h2><div class="text" id="document">{escape(record.document)}</div></section>'
        f"<section><h2>Summaries</h2>{''.join(_candidate(i + 1, c) for i, c in enumerate(order))}</section>"
        "</main>"
        '<div class="controls">'
        f"<p>{how}; <kbd>Backspace</kbd> clears the ranking. Then a reason, <kbd>Enter</kbd> to submit, "
        "<kbd>s</kbd> to skip.</p>"
        '<form id="vote" method="post" action="/vote">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<input type="hidden" name="item_id" value="{item_id}">'
        '<input type="hidden" name="ranking" id="ranking" value="">'
        f'<div class="reasons">{reasons}</div>'
        '<p><button type="submit">Submit (Enter)</button></p></form>'
        '<form id="skip" method="post" action="/skip">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<input type="hidden" name="item_id" value="{item_id}">'
        '<button type="submit">Skip (s)</button></form>'
        '<p id="status" role="status"></p></div>'
    )
    return _page("Tether labeling", body, nonce, _SCRIPT)


_SCRIPT = """
(() => {
  const cards = Array.from(document.querySelectorAll('.cand'));
  const k = cards.length;
  const vote = document.getElementById('vote');
  const rankingInput = document.getElementById('ranking');
  const status = document.getElementById('status');
  const radios = Array.from(vote.querySelectorAll('input[name=reason]'));
  const tie = radios.find(r => r.value === 'both_fine');
  let ranking = [];
  let sent = false;

  function show() {
    cards.forEach(c => {
      const i = ranking.indexOf(c.dataset.candId);
      c.classList.toggle('picked', i >= 0);
      c.querySelector('.rank').textContent = i < 0 ? '' : ' ranked #' + (i + 1);
    });
    rankingInput.value = ranking.join(',');
  }
  function pick(idx) {
    const id = cards[idx].dataset.candId;
    if (ranking.length === k) ranking = [];          // a full ranking restarts with this pick
    if (ranking.includes(id)) return;
    ranking.push(id);
    if (ranking.length === k - 1) {
      ranking.push(cards.map(c => c.dataset.candId).find(c => !ranking.includes(c)));
    }
    if (tie.checked) tie.checked = false;
    status.textContent = '';
    show();
  }
  function reason(value) {
    const r = radios.find(r => r.value === value);
    r.checked = true;
    if (value === 'both_fine') { ranking = []; show(); }
    status.textContent = '';
  }
  function problem() {
    const r = radios.find(r => r.checked);
    if (r && r.value === 'both_fine') return '';
    if (ranking.length !== k) return k === 2 ? 'Pick the better summary (1 or 2), or t for a tie.'
                                             : 'Rank all summaries (press their numbers best first), or t for a tie.';
    if (!r) return 'Pick a reason: f, o, x (or t for a tie).';
    return '';
  }
  function submit() {
    if (sent) return;
    const p = problem();
    if (p) { status.textContent = p; return; }
    sent = true;
    rankingInput.value = tie.checked ? '' : ranking.join(',');
    vote.submit();
  }
  vote.addEventListener('submit', e => { e.preventDefault(); submit(); });
  cards.forEach((c, i) => c.addEventListener('click', () => pick(i)));
  radios.forEach(r => r.addEventListener('change', () => reason(r.value)));
  const keys = {};
  radios.forEach(r => { keys[r.dataset.key] = r.value; });
  document.addEventListener('keydown', e => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const d = Number(e.key);
    if (Number.isInteger(d) && d >= 1 && d <= k) { pick(d - 1); }
    else if (keys[e.key]) { reason(keys[e.key]); }
    else if (e.key === 'Backspace') { ranking = []; show(); }
    else if (e.key === 'Enter') { submit(); }
    else if (e.key === 's') { if (!sent) { sent = true; document.getElementById('skip').submit(); } }
    else return;
    e.preventDefault();
  });
  show();
})();
"""
