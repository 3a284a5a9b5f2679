"""The app's pages, defined once: ``app.py`` navigates between them and pages switch to them.

``st.switch_page`` is given these page objects, never a file path: the product's ``pages/``
folder also makes Streamlit register each file as a legacy (directory-discovered) page, and a
path resolved to that one runs the page without ``app.py`` (no sidebar, no selection).
"""

from __future__ import annotations

import streamlit as st


def pages() -> dict[str, st.Page]:
    """Every page by its file name (``"stitching"``, ``"cka"``, ...), in menu order."""
    # Material icons ship with Streamlit's frontend (emoji would need fonts a classroom PC may lack).
    return {
        "stitching": st.Page("pages/stitching.py", title="Stitching", icon=":material/join:", default=True),  # at /
        # The Similarity page grew from the CKA page: its file and URL (/cka) stay, so old links open it.
        "cka": st.Page("pages/cka.py", title="Similarity", icon=":material/compare_arrows:", url_path="cka"),
        "attributions": st.Page("pages/attributions.py", title="Attributions", icon=":material/visibility:",
                                url_path="attributions"),
        "models": st.Page("pages/models.py", title="Models", icon=":material/neurology:", url_path="models"),
        "runs": st.Page("pages/runs.py", title="Runs", icon=":material/history:", url_path="runs"),
        "sweeps": st.Page("pages/sweeps.py", title="Sweeps", icon=":material/grid_view:", url_path="sweeps"),
        "lesson": st.Page("pages/lesson.py", title="Lesson", icon=":material/school:", url_path="lesson"),
    }


def name_of(page: st.Page) -> str | None:
    """The name (a key of :func:`pages`) of the page ``st.navigation`` returned for this run."""
    return next((name for name, known in pages().items() if known.url_path == page.url_path), None)


def switch_to(name: str) -> None:
    """Open page ``name`` (a key of :func:`pages`) in this session, its widgets as they are in
    ``st.session_state`` (set them in a button's ``on_click``; the widgets then write the URL).

    ``query_params={}`` replaces the URL's parameters with none; without it Streamlit tries to
    clear them and refuses, because the sidebar's widgets are bound to some of them."""
    st.switch_page(pages()[name], query_params={})


def through_app() -> None:
    """Make sure this page runs inside ``app.py`` (navigation, sidebar, selection); call it first.

    A fresh server's first request for a page URL (a shared link to ``/attributions?...``) is run
    in Streamlit's legacy mode for apps with a ``pages/`` folder, which runs the page file alone:
    no sidebar, no selection. ``st.navigation`` switches that mode off for the process, but only
    once ``app.py`` has run; so switch it off here and run again, through ``app.py``."""
    if "selection" in st.session_state or st.session_state.get("_through_app_tried"):
        return  # (tried once: should Streamlit rename its switch, the page shows its error, no loop)
    st.session_state["_through_app_tried"] = True
    from streamlit.runtime.pages_manager import PagesManager  # the legacy mode's switch (no public API)

    PagesManager.uses_pages_directory = False
    st.rerun()
