"""User-supplied strings shown as plain text (issue 19, item 6): a link's value, a run's name,
rendered inside Streamlit's Markdown, make no link, no image, no emphasis."""

from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from core import paths
from core.runs import jobs
from core.runs.store import Store
from ui.text import plain

APP = str(paths.PROJECT_ROOT / "app.py")
HOSTILE = ["![t](http://example.com/x.png)", "[login](http://example.com/login)", "**bold** _it_ :smile: $x$"]
# A Markdown link or image needs an unescaped "](" ; emphasis an unescaped * or _.
ACTIVE = re.compile(r"(?<!\\)\]\(|(?<!\\)!\[|(?<!\\)\*\*|(?<!\\)\$")


@pytest.mark.parametrize("text", HOSTILE)
def test_plain_escapes_every_markdown_construct(text):
    shown = plain(text)
    assert not ACTIVE.search(shown), shown
    assert re.sub(r"\\(.)", r"\1", shown) == text  # nothing lost: Markdown shows the text as typed


@pytest.mark.parametrize("text", HOSTILE)
def test_a_hostile_link_value_is_shown_as_text_in_the_sidebar_warning(text, tmp_path, monkeypatch):
    monkeypatch.setenv("STITCHLAB_DB", str(tmp_path / "s.sqlite3"))
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: 0)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["sender"] = text
    at.run()
    warnings = [w.value for w in at.sidebar.warning]
    assert warnings and all(not ACTIVE.search(w) for w in warnings), warnings


def test_a_hostile_run_name_is_shown_as_text_on_the_runs_page(tmp_path, monkeypatch):
    db = tmp_path / "s.sqlite3"
    store = Store(db)
    run_id = store.create_run("cka", {"model_a": "a", "model_b": "b"}, name=HOSTILE[1])
    monkeypatch.setenv("STITCHLAB_DB", str(db))
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: 0)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["run"] = run_id
    at.switch_page("pages/runs.py")
    at.run()
    headers = [h.value for h in at.subheader if run_id in h.value]
    assert headers and not ACTIVE.search(headers[0]), headers
