"""The labeling app: login, voting, refusals, escaping, restarts, agreement math, export."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tether.errors import DataError
from tether.feedback import (
    SUMMARIZE_INSTRUCTION,
    CandidateSet,
    LabelStore,
    Vote,
    agreement_report,
    cohen_kappa,
    create_app,
    export_pairs,
    krippendorff_alpha_nominal,
    load_candidate_sets,
    load_labelled_sets,
    majority_pairs,
    summarization_prompt,
    vote_pairs,
)
from tether.feedback.cli import app as label_cli

SCRIPT = "<script>alert(1)</script>"


def _sets() -> list[dict]:
    return [
        {
            "doc_id": "d1",
            "document": "Cats sleep a lot. <b>Bold</b> & co.",
            "candidates": [{"id": "a", "text": "Cats sleep." + SCRIPT}, {"id": "b", "text": "Dogs bark."}],
        },
        {
            "doc_id": "d2",
            "document": "The river floods every spring.",
            "candidates": [
                {"id": "x", "text": "Spring floods.", "model": "sft"},
                {"id": "y", "text": "A river."},
                {"id": "z", "text": "Nothing happens."},
            ],
        },
        {
            "doc_id": "d3",
            "document": "Bread needs flour, water, salt and yeast.",
            "prompt": "Summarize in five words:\n\nBread needs flour, water, salt and yeast.",
            "candidates": [{"id": str(i), "text": f"summary {i}"} for i in range(4)],
        },
    ]


@pytest.fixture
def candidates_file(tmp_path: Path) -> Path:
    path = tmp_path / "candidates.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in _sets()), encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path: Path, candidates_file: Path) -> LabelStore:
    s = LabelStore(tmp_path / "labels.db", create=True)
    s.import_sets(load_candidate_sets(candidates_file))
    return s


@pytest.fixture
def tokens(store: LabelStore) -> dict[str, str]:
    return {name: store.add_annotator(name) for name in ("alice", "bob", "carol")}


def _client(store: LabelStore, votes_per_item: int = 2) -> TestClient:
    return TestClient(create_app(store.path, votes_per_item=votes_per_item, shuffle=False))


def _login(client: TestClient, token: str):
    return client.post("/login", data={"token": token})


def _form(html: str) -> tuple[str, int]:
    csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
    item_id = int(re.search(r'data-item-id="(\d+)"', html).group(1))
    return csrf, item_id


def _db_votes(path: Path) -> list[tuple]:
    # A separate raw connection: sees only what was committed.
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT item_id, annotator_id, ranking, reason FROM votes ORDER BY id").fetchall()


# --- login ---------------------------------------------------------------------------------------


def test_login_with_bad_token_is_refused_and_sets_no_session(store, tokens):
    client = _client(store)
    bad = _login(client, "not-a-token")
    assert bad.status_code == 401
    assert "set-cookie" not in bad.headers
    assert "Unknown token" in bad.text
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"


def test_login_with_good_token_sets_strict_httponly_cookie_and_shows_first_item(store, tokens):
    client = _client(store)
    response = _login(client, tokens["alice"])
    assert response.status_code == 200
    cookie = response.history[0].headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert 'data-doc-id="d1"' in response.text
    assert "annotator: alice" in response.text
    assert "labeled 0 / 3" in response.text
    csp = response.headers["content-security-policy"]
    assert "script-src 'nonce-" in csp and "unsafe-inline" not in csp


def test_tokens_are_stored_only_as_hashes(store, tokens):
    raw = b"".join(f.read_bytes() for f in store.path.parent.glob(store.path.name + "*"))  # db, -wal, -shm
    assert tokens["alice"].encode() not in raw
    assert hashlib.sha256(tokens["alice"].encode()).hexdigest().encode() in raw
    assert store.authenticate(tokens["alice"]).name == "alice"
    assert store.authenticate(tokens["alice"] + "x") is None


def test_database_is_in_wal_mode(store):
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- voting --------------------------------------------------------------------------------------


def test_vote_is_committed_before_the_next_item_is_returned(store, tokens):
    client = _client(store)
    csrf, item_id = _form(_login(client, tokens["alice"]).text)
    response = client.post(
        "/vote", data={"csrf": csrf, "item_id": item_id, "ranking": "b,a", "reason": "unfaithful"}
    )
    assert response.status_code == 200 and response.history[0].status_code == 303
    assert _db_votes(store.path) == [(item_id, 1, '["b", "a"]', "unfaithful")]
    assert 'data-doc-id="d2"' in response.text
    assert "labeled 1 / 3" in response.text


def test_three_candidate_ranking_and_tie_are_accepted(store, tokens):
    client = _client(store)
    csrf, _ = _form(_login(client, tokens["alice"]).text)
    client.post("/vote", data={"csrf": csrf, "item_id": 2, "ranking": "z,x,y", "reason": "omits_key_point"})
    client.post("/vote", data={"csrf": csrf, "item_id": 1, "ranking": "", "reason": "both_fine"})
    votes = {v.doc_id: v for v in store.votes()}
    assert votes["d2"].ranking == ("z", "x", "y") and votes["d2"].best == "z"
    assert votes["d1"].tie and votes["d1"].ranking == () and votes["d1"].best is None


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"item_id": "999"}, 404),  # unknown item
        ({"item_id": "abc"}, 400),
        ({"csrf": "forged"}, 403),
        ({"ranking": "a"}, 422),  # not every candidate ranked
        ({"ranking": "a,a"}, 422),
        ({"ranking": "a,c"}, 422),  # not a candidate of this item
        ({"reason": "because"}, 422),
        ({"ranking": "a,b", "reason": "both_fine"}, 422),  # a tie carries no ranking
    ],
)
def test_refused_votes_write_nothing(store, tokens, change, status):
    client = _client(store)
    csrf, item_id = _form(_login(client, tokens["alice"]).text)
    form = {"csrf": csrf, "item_id": item_id, "ranking": "a,b", "reason": "other"} | change
    response = client.post("/vote", data=form, follow_redirects=False)
    assert response.status_code == status
    assert _db_votes(store.path) == []


def test_votes_without_a_valid_session_are_refused(store, tokens):
    client = _client(store)
    csrf, item_id = _form(_login(client, tokens["alice"]).text)
    form = {"csrf": csrf, "item_id": item_id, "ranking": "a,b", "reason": "other"}
    stranger = _client(store)
    assert stranger.post("/vote", data=form, follow_redirects=False).status_code == 401
    stranger.cookies.set("tether_session", "forged-session-id")
    assert stranger.post("/vote", data=form, follow_redirects=False).status_code == 401
    foreign = client.post(
        "/vote", data=form, headers={"Origin": "http://evil.example"}, follow_redirects=False
    )
    assert foreign.status_code == 403
    client.post("/logout", data={"csrf": csrf})
    assert client.post("/vote", data=form, follow_redirects=False).status_code == 401
    assert _db_votes(store.path) == []


def test_second_vote_on_the_same_item_is_refused(store, tokens):
    client = _client(store)
    csrf, item_id = _form(_login(client, tokens["alice"]).text)
    form = {"csrf": csrf, "item_id": item_id, "ranking": "a,b", "reason": "other"}
    assert client.post("/vote", data=form).status_code == 200
    again = client.post("/vote", data=form | {"ranking": "b,a"}, follow_redirects=False)
    assert again.status_code == 409
    assert _db_votes(store.path) == [(item_id, 1, '["a", "b"]', "other")]


def test_model_and_document_text_is_escaped(store, tokens):
    client = _client(store)
    html = _login(client, tokens["alice"]).text
    assert "Cats sleep.&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert SCRIPT not in html
    assert "&lt;b&gt;Bold&lt;/b&gt; &amp; co." in html
    # the only script on the page is the app's own, carrying the CSP nonce
    assert len(re.findall(r"<script\b", html)) == 1
    assert re.search(r'<script nonce="[^"]+">', html)


def test_restart_keeps_votes_and_sessions(store, tokens):
    client = _client(store)
    csrf, item_id = _form(_login(client, tokens["alice"]).text)
    client.post("/vote", data={"csrf": csrf, "item_id": item_id, "ranking": "a,b", "reason": "other"})
    cookie = client.cookies.get("tether_session")
    del client  # the "server" goes away; a new app opens the same file

    restarted = _client(LabelStore(store.path))
    restarted.cookies.set("tether_session", cookie)
    page = restarted.get("/")
    assert "annotator: alice" in page.text and "labeled 1 / 3" in page.text
    assert 'data-doc-id="d2"' in page.text  # not the item already labeled
    assert [(v.doc_id, v.annotator, v.ranking) for v in LabelStore(store.path).votes()] == [
        ("d1", "alice", ("a", "b"))
    ]


def test_next_item_prefers_items_closest_to_the_vote_target(store, tokens):
    alice, bob, carol = (store.authenticate(tokens[n]) for n in ("alice", "bob", "carol"))
    assert store.next_item(bob, 2).record.doc_id == "d1"
    store.record_vote(alice, 2, ["x", "y", "z"], "other")
    assert store.next_item(bob, 2).record.doc_id == "d2"  # overlap with alice first
    store.record_vote(bob, 2, ["y", "x", "z"], "other")
    assert store.next_item(carol, 2).record.doc_id == "d1"  # d2 reached its 2 votes
    assert store.next_item(carol, 3).record.doc_id == "d2"  # with a target of 3 it still needs one
    store.record_skip(carol, 1)
    assert store.next_item(carol, 2).record.doc_id == "d3"  # skipped items come last
    store.record_skip(carol, 3)
    assert store.next_item(carol, 2).record.doc_id == "d1"  # ... but come back
    assert store.progress(alice, 2).labeled == 1 and store.progress(alice, 2).remaining == 2


def test_done_page_when_nothing_is_left(store, tokens):
    client = _client(store, votes_per_item=1)
    alice = store.authenticate(tokens["alice"])
    for item, ranking in ((1, ["a", "b"]), (2, ["x", "y", "z"]), (3, ["0", "1", "2", "3"])):
        store.record_vote(alice, item, ranking, "other")
    html = _login(client, tokens["bob"]).text
    assert "Nothing left to label" in html and "labeled 0 / 0" in html


def test_skip_moves_on_without_a_vote(store, tokens):
    client = _client(store)
    csrf, item_id = _form(_login(client, tokens["alice"]).text)
    response = client.post("/skip", data={"csrf": csrf, "item_id": item_id})
    assert 'data-doc-id="d2"' in response.text
    assert _db_votes(store.path) == []


# --- input ---------------------------------------------------------------------------------------


def test_flat_format_groups_into_the_same_sets(tmp_path, candidates_file):
    flat = tmp_path / "flat.jsonl"
    lines = []
    for s in _sets()[:2]:
        for c in s["candidates"]:
            extra = {k: v for k, v in c.items() if k not in ("id", "text")}
            lines.append(
                {"doc_id": s["doc_id"], "document": s["document"], "candidate_id": c["id"], "text": c["text"]}
                | extra
            )
    flat.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert load_candidate_sets(flat) == load_candidate_sets(candidates_file)[:2]
    assert load_candidate_sets(flat)[1].candidates[0].model_extra == {"model": "sft"}


def test_flat_format_with_conflicting_documents_is_an_error(tmp_path):
    flat = tmp_path / "flat.jsonl"
    rows = [
        {"doc_id": "d", "document": "one", "candidate_id": "a", "text": "A"},
        {"doc_id": "d", "document": "two", "candidate_id": "b", "text": "B"},
    ]
    flat.write_text("".join(json.dumps(x) + "\n" for x in rows))
    with pytest.raises(DataError, match="different document"):
        load_candidate_sets(flat)


@pytest.mark.parametrize(
    ("candidates", "problem"),
    [
        ([{"id": "a", "text": "A"}], "at least 2"),
        ([{"id": str(i), "text": "t"} for i in range(5)], "at most 4"),
        ([{"id": "a", "text": "A"}, {"id": "a", "text": "B"}], "unique"),
        ([{"id": "a,b", "text": "A"}, {"id": "c", "text": "B"}], "comma"),
    ],
)
def test_bad_candidate_sets_name_the_line(tmp_path, candidates, problem):
    path = tmp_path / "c.jsonl"
    good = {
        "doc_id": "ok",
        "document": "d",
        "candidates": [{"id": "a", "text": "A"}, {"id": "b", "text": "B"}],
    }
    path.write_text(
        json.dumps(good)
        + "\n"
        + json.dumps({"doc_id": "bad", "document": "d", "candidates": candidates})
        + "\n"
    )
    with pytest.raises(DataError, match=problem) as info:
        load_candidate_sets(path)
    assert info.value.where == f"{path}:2"


def test_import_is_idempotent_and_refuses_changed_content(store, candidates_file):
    summary = store.import_sets(load_candidate_sets(candidates_file))
    assert (summary.added, summary.unchanged) == (0, 3)
    changed = [CandidateSet.model_validate(_sets()[0] | {"document": "edited"})]
    with pytest.raises(DataError, match="different content"):
        store.import_sets([CandidateSet.model_validate(_sets()[2] | {"doc_id": "d4"}), *changed])
    assert [i.record.doc_id for i in store.items()] == ["d1", "d2", "d3"]  # all or nothing: no d4


def test_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        LabelStore(tmp_path / "nope.db")
    assert "tether label import" in info.value.hint


# --- agreement -----------------------------------------------------------------------------------


def test_cohen_kappa_wikipedia_example():
    """20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no: p_o = 35/50 = 0.7; rater A says yes 25/50, B 30/50,
    so p_e = 0.5*0.6 + 0.5*0.4 = 0.5 and kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4."""
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_edge_cases():
    # perfect disagreement on two balanced labels: p_o = 0, p_e = 0.5 -> kappa = -1
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    assert cohen_kappa(["a", "b", "c"], ["a", "b", "c"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # p_e = 1: undefined
    assert cohen_kappa([], []) is None


def test_krippendorff_alpha_hand_derived():
    """Units (a,a) and (a,b): n = 4 values, n_a = 3, n_b = 1. Observed disagreeing ordered pairs:
    unit 2 has (a,b) and (b,a), each weighted 1/(m-1) = 1, so D_o = 2. D_e = n^2 - sum n_c^2
    = 16 - 9 - 1 = 6. alpha = 1 - (n-1) * D_o / D_e = 1 - 3*2/6 = 0."""
    assert krippendorff_alpha_nominal([["a", "a"], ["a", "b"]]) == pytest.approx(0.0)
    assert krippendorff_alpha_nominal([["a", "a"], ["b", "b", "b"], ["c"]]) == pytest.approx(1.0)
    assert krippendorff_alpha_nominal([["a", "a"], ["a"]]) is None


def test_krippendorff_alpha_published_example():
    """Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units with
    missing values; the nominal alpha given there is 0.743."""
    rows = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[v for v in column if v is not None] for column in zip(*rows, strict=True)]
    assert krippendorff_alpha_nominal(units) == pytest.approx(0.743, abs=5e-4)


def _records() -> dict[str, CandidateSet]:
    return {s["doc_id"]: CandidateSet.model_validate(s) for s in _sets()}


def _vote(doc, who, ranking, reason="other") -> Vote:
    return Vote(doc, who, tuple(ranking), "both_fine" if not ranking else reason, "t")


def test_agreement_report_uses_best_positions_and_counts():
    votes = [
        _vote("d1", "alice", "ab"),
        _vote("d1", "bob", "ab"),
        _vote("d2", "alice", "xyz"),
        _vote("d2", "bob", "yxz"),
        _vote("d3", "alice", ""),  # tie
        _vote("d3", "bob", ""),
        _vote("d3", "carol", "0123"),
    ]
    report = agreement_report(_records(), votes, {"carol": 2})
    assert (report.items, report.votes, report.ties, report.multi_items) == (3, 7, 2, 3)
    alice_bob = next(p for p in report.pairs if (p.annotator_a, p.annotator_b) == ("alice", "bob"))
    # labels alice #1 #1 tie, bob #1 #2 tie: p_o = 2/3; p_e = (2*1 + 1*1)/9 = 1/3; kappa = (1/3)/(2/3) = 0.5
    assert alice_bob.shared_items == 3 and alice_bob.observed == pytest.approx(2 / 3)
    assert alice_bob.kappa == pytest.approx(0.5)
    assert report.alpha == pytest.approx(
        krippendorff_alpha_nominal([["#1", "#1"], ["#1", "#2"], ["tie", "tie", "#1"]])
    )
    assert report.annotators["carol"].votes == 1 and report.annotators["carol"].skips == 2
    assert report.annotators["alice"].ties == 1


# --- export --------------------------------------------------------------------------------------


def test_rankings_expand_to_all_ordered_pairs_and_ties_give_none():
    records = _records()
    votes = [_vote("d2", "alice", "zxy", "unfaithful"), _vote("d3", "bob", "3102"), _vote("d1", "carol", "")]
    pairs = vote_pairs(records, votes)
    assert len(pairs) == 3 + 6  # k(k-1)/2 for k = 3 and 4; the tie adds nothing
    assert [(p.chosen_id, p.rejected_id) for p in pairs[:3]] == [("z", "x"), ("z", "y"), ("x", "y")]
    first = pairs[0]
    assert first.prompt == f"{SUMMARIZE_INSTRUCTION}\n\nThe river floods every spring."
    assert first.prompt == summarization_prompt(records["d2"].document)
    assert (first.chosen, first.rejected) == ("Nothing happens.", "Spring floods.")
    assert (first.doc_id, first.annotator, first.reason) == ("d2", "alice", "unfaithful")
    assert pairs[3].prompt == records["d3"].prompt  # an explicit generation prompt wins
    assert [(p.chosen_id, p.rejected_id) for p in pairs[3:]] == [
        ("3", "1"), ("3", "0"), ("3", "2"), ("1", "0"), ("1", "2"), ("0", "2"),
    ]  # fmt: skip


def test_majority_merges_votes_per_pair():
    records = _records()
    votes = [
        _vote("d1", "alice", "ab", "unfaithful"),
        _vote("d1", "bob", "ab", "unfaithful"),
        _vote("d1", "carol", ""),  # 2 of 3 prefer a over b: kept
        _vote("d2", "alice", "xyz"),
        _vote("d2", "bob", "yxz"),  # x/y split 1-1: dropped; x>z and y>z 2-0: kept
    ]
    pairs, no_majority = majority_pairs(records, votes)
    got = {(p.doc_id, p.chosen_id, p.rejected_id): (p.votes_for, p.votes_total, p.annotator) for p in pairs}
    assert got == {
        ("d1", "a", "b"): (2, 3, "majority"),
        ("d2", "x", "z"): (2, 2, "majority"),
        ("d2", "y", "z"): (2, 2, "majority"),
    }
    assert no_majority == 1
    assert pairs[0].reason == "unfaithful"
    # one vote for and one tie out of two is not a strict majority
    assert majority_pairs(records, [_vote("d1", "a", "ab"), _vote("d1", "b", "")]) == ([], 1)


def test_export_writes_trl_records_and_counts_ties(tmp_path):
    out = tmp_path / "pairs.jsonl"
    votes = [_vote("d2", "alice", "zxy"), _vote("d1", "bob", "")]
    summary = export_pairs(_records(), votes, out)
    assert (summary.votes, summary.ties, summary.pairs) == (2, 1, 3)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3
    assert set(rows[0]) == {
        "prompt",
        "chosen",
        "rejected",
        "doc_id",
        "annotator",
        "reason",
        "chosen_id",
        "rejected_id",
    }
    assert not list(tmp_path.glob("*.partial"))


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_import_annotate_stats_export(tmp_path, candidates_file):
    runner = CliRunner()
    db = tmp_path / "cli.db"
    first = runner.invoke(label_cli, ["import", str(candidates_file), "--db", str(db)])
    assert first.exit_code == 0, first.output
    assert "3 items added, 0 already present" in first.output
    again = runner.invoke(label_cli, ["import", str(candidates_file), "--db", str(db)])
    assert "0 items added, 3 already present" in again.output

    added = runner.invoke(label_cli, ["add-annotator", "alice", "--db", str(db)])
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[-1]
    store = LabelStore(db)
    alice = store.authenticate(token)
    assert alice is not None and alice.name == "alice"
    assert isinstance(
        runner.invoke(label_cli, ["add-annotator", "alice", "--db", str(db)]).exception, Exception
    )
    bob = store.authenticate(
        runner.invoke(label_cli, ["add-annotator", "bob", "--db", str(db)]).stdout.split()[-1]
    )

    store.record_vote(alice, 1, ["a", "b"], "unfaithful")
    store.record_vote(bob, 1, ["a", "b"], "omits_key_point")
    store.record_vote(alice, 2, ["x", "y", "z"], "other")
    store.record_vote(bob, 2, [], "both_fine")

    stats = runner.invoke(label_cli, ["stats", "--db", str(db), "--json"])
    assert stats.exit_code == 0, stats.output
    report = json.loads(stats.stdout)
    assert (report["votes"], report["ties"], report["multi_items"]) == (4, 1, 2)
    # alice #1 #1, bob #1 tie: p_o = 1/2; p_e = p_A(#1) * p_B(#1) = 1 * 1/2; kappa = (1/2 - 1/2)/(1/2) = 0
    assert report["pairs"][0]["observed"] == pytest.approx(0.5)
    assert report["pairs"][0]["kappa"] == pytest.approx(0.0)
    table = runner.invoke(label_cli, ["stats", "--db", str(db)])
    assert table.exit_code == 0 and "Krippendorff" in table.output

    out = tmp_path / "pairs.jsonl"
    exported = runner.invoke(label_cli, ["export", "--db", str(db), "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    assert "5 pairs from 4 votes; 1 ties" in exported.output  # 1 + 1 + 3
    assert len(out.read_text().splitlines()) == 5
    merged = runner.invoke(
        label_cli, ["export", "--db", str(db), "--out", str(out), "--aggregate", "majority"]
    )
    assert merged.exit_code == 0, merged.output
    # d1: a>b 2/2 kept; d2: every pair has 1 of 2 votes (the other is a tie): 3 dropped
    assert "1 pairs from 4 votes" in merged.output and "3 candidate pairs without a majority" in merged.output


# --- votes carried in the import file ---------------------------------------------------------------


def _labelled_file(tmp_path: Path, votes_per_set: list[list[dict]]) -> Path:
    path = tmp_path / "labelled.jsonl"
    lines = [json.dumps(s | {"votes": v}) for s, v in zip(_sets(), votes_per_set, strict=False)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_imported_votes_feed_stats_and_export_and_reimport_is_a_no_op(tmp_path):
    runner = CliRunner()
    db = tmp_path / "team.db"
    path = _labelled_file(
        tmp_path,
        [
            [{"annotator": "team", "ranking": ["b", "a"], "reason": "unfaithful"}],
            [
                {"annotator": "team", "ranking": ["z", "x", "y"], "reason": "other"},
                {"annotator": "second", "ranking": [], "reason": "both_fine"},
            ],
        ],
    )
    first = runner.invoke(label_cli, ["import", str(path), "--db", str(db)])
    assert first.exit_code == 0, first.output
    assert "2 items added, 0 already present; 3 votes added, 0 already present" in first.output
    again = runner.invoke(label_cli, ["import", str(path), "--db", str(db)])
    assert "0 votes added, 3 already present" in again.output

    store = LabelStore(db)
    votes = store.votes()
    assert [(v.doc_id, v.annotator, v.ranking, v.reason) for v in votes] == [
        ("d1", "team", ("b", "a"), "unfaithful"),
        ("d2", "team", ("z", "x", "y"), "other"),
        ("d2", "second", (), "both_fine"),
    ]
    # Imported annotators exist for stats but cannot sign in: no token was ever shown.
    assert {a.name for a in store.annotators()} == {"team", "second"}
    report = json.loads(runner.invoke(label_cli, ["stats", "--db", str(db), "--json"]).stdout)
    assert (report["votes"], report["ties"]) == (3, 1)
    out = tmp_path / "pairs.jsonl"
    assert runner.invoke(label_cli, ["export", "--db", str(db), "--out", str(out)]).exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["doc_id"], r["chosen_id"], r["rejected_id"]) for r in rows] == [
        ("d1", "b", "a"),
        ("d2", "z", "x"),
        ("d2", "z", "y"),
        ("d2", "x", "y"),
    ]
    assert all("votes" not in item.record.model_extra for item in store.items())


@pytest.mark.parametrize(
    ("vote", "problem"),
    [
        ({"annotator": "t", "ranking": ["x", "y"], "reason": "other"}, "exactly once"),
        ({"annotator": "t", "ranking": ["x", "x", "y"], "reason": "other"}, "exactly once"),
        ({"annotator": "t", "ranking": ["x", "y", "z"], "reason": "bad"}, "field 'reason'"),
        ({"annotator": "t", "ranking": ["x", "y", "z"], "reason": "both_fine"}, "carries a ranking"),
        ({"annotator": "t", "ranking": ["x", "y", "z"]}, "field 'reason'"),
        ({"annotator": "", "ranking": [], "reason": "both_fine"}, "field 'annotator'"),
    ],
)
def test_bad_imported_votes_name_the_line_and_write_nothing(tmp_path, vote, problem):
    path = _labelled_file(tmp_path, [[], [vote]])
    db = tmp_path / "team.db"
    with pytest.raises(DataError, match=problem) as info:
        LabelStore(db, create=True).import_labelled(load_labelled_sets(path))
    assert info.value.where == f"{path}:2"
    assert LabelStore(db).count_items() == 0


def test_an_annotator_voting_twice_on_a_set_is_an_error(tmp_path):
    twice = [{"annotator": "t", "ranking": [], "reason": "both_fine"}] * 2
    path = _labelled_file(tmp_path, [twice])
    with pytest.raises(DataError, match="votes twice") as info:
        load_labelled_sets(path)
    assert info.value.where == f"{path}:1"


def test_a_changed_imported_vote_aborts_the_whole_import(tmp_path):
    db = tmp_path / "team.db"
    store = LabelStore(db, create=True)
    tie = {"annotator": "team", "ranking": [], "reason": "both_fine"}
    store.import_labelled(load_labelled_sets(_labelled_file(tmp_path, [[tie]])))
    changed = _labelled_file(tmp_path, [[tie | {"ranking": ["a", "b"], "reason": "other"}], [tie]])
    with pytest.raises(DataError, match="different vote") as info:
        store.import_labelled(load_labelled_sets(changed))
    assert info.value.where == f"{changed}:1"
    assert [i.record.doc_id for i in store.items()] == ["d1"]  # d2 was not added either
    assert [v.reason for v in store.votes()] == ["both_fine"]
