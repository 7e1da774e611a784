"""Progress where stderr is not a terminal: plain lines now and then and at the end, never on stdout."""

from __future__ import annotations

from tether.progress import progress_bar


def test_a_log_gets_plain_progress_lines_and_a_last_one(monkeypatch, capsys):
    monkeypatch.delenv("TETHER_NO_PROGRESS", raising=False)
    monkeypatch.setenv("TETHER_PROGRESS_EVERY", "0")
    with progress_bar("patching m0", total=4) as bar:
        bar.advance()
        bar.advance(3)
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("patching m0: 1/4 (25%), 0:00:00 elapsed, ~0:00:00 left")
    assert lines[-1].startswith("patching m0: 4/4 (100%)") and "left" not in lines[-1]
    assert len(lines) == 2  # the end is not printed twice


def test_lines_wait_for_the_interval_and_nested_bars_stay_quiet(monkeypatch, capsys):
    monkeypatch.delenv("TETHER_NO_PROGRESS", raising=False)
    monkeypatch.setenv("TETHER_PROGRESS_EVERY", "3600")
    with progress_bar("outer", total=None) as outer:
        with progress_bar("inner", total=10) as inner:
            for _ in range(10):
                inner.advance()
        outer.advance()
    err = capsys.readouterr().err
    assert err.splitlines() == [line for line in err.splitlines() if line.startswith("outer: 1,")]
    assert len(err.splitlines()) == 1


def test_disabled_prints_nothing(monkeypatch, capsys):
    monkeypatch.setenv("TETHER_PROGRESS_EVERY", "0")
    with progress_bar("quiet", total=2, enabled=False) as bar:
        bar.advance(2)
    assert capsys.readouterr() == ("", "")
