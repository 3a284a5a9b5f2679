"""Presenter mode without a browser (Streamlit's AppTest): which URLs turn it on. What it looks like
at 1280 x 720 is tests/test_e2e_presenter.py's job."""

import pytest
from streamlit.testing.v1 import AppTest

from core.runs import jobs

APP = str(__import__("pathlib").Path(__file__).resolve().parent.parent / "app.py")


def _first_run(monkeypatch, tmp_path, present: str | None) -> AppTest:
    monkeypatch.setenv("STITCHLAB_DB", str(tmp_path / "empty.sqlite3"))
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: 0)
    at = AppTest.from_file(APP, default_timeout=120)
    if present is not None:
        at.query_params["present"] = present
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _presenter_style_sent(at: AppTest) -> bool:
    return any('[data-testid="stSidebar"]' in html.proto.body for html in at.get("html"))


@pytest.mark.parametrize("present", ["1", "true", "True", "yes", "on"])
def test_a_link_turns_presenter_mode_on(monkeypatch, tmp_path, present):
    # Streamlit's bound toggle reads only true/false: a hand-typed present=1 must count too.
    at = _first_run(monkeypatch, tmp_path, present)
    assert at.toggle(key="present").value is True
    assert _presenter_style_sent(at)


@pytest.mark.parametrize("present", [None, "0", "false", "off", "nope"])
def test_presenter_mode_is_off_otherwise(monkeypatch, tmp_path, present):
    at = _first_run(monkeypatch, tmp_path, present)
    assert at.toggle(key="present").value is False
    assert not _presenter_style_sent(at)
    assert at.sidebar.selectbox(key="sender")  # the sidebar is drawn as always
