"""Presenter mode: one toggle, kept in the URL (``present=true``), that turns any page into a slide.

The sidebar, Streamlit's header and the page's controls (widgets, expanders, captions, code) are
hidden, the type is larger and the faded greys are dark, so that on a 1280 x 720 projector the
page's main chart is on screen without scrolling. The URL holds every setting, so the slide still
shows what the controls chose. app.py calls :func:`apply` once per run; a page that needs a
control on the slide (the Lesson's steps) names it with :func:`keep`.
"""

from __future__ import annotations

import streamlit as st

KEY = "present"
_FROM_LINK = "_present_from_link"
# What a hand-typed link may say; the toggle itself writes ``present=true``.
_URL_ON = {"1", "true", "yes", "on"}

_CONTROLS = ["stSelectbox", "stMultiSelect", "stRadio", "stCheckbox", "stSlider", "stTextInput", "stNumberInput",
             "stTextArea", "stFileUploader", "stButton", "stDownloadButton", "stButtonGroup", "stDateInput",
             "stTimeInput", "stDateTimeInput", "stColorPicker", "stCode", "stCaptionContainer", "stProgress"]
_HIDDEN = ", ".join(f'[data-testid="stMain"] .stElementContainer:has([data-testid="{name}"])' for name in _CONTROLS)

# Always drawn in the same place (the main area), only moved by CSS: a bound widget drawn in the sidebar
# in one run and in the main area in the next loses its sync with the URL. Fixed, it takes no line of the
# page: in Streamlit's header band, left of its menu.
TOGGLE_CSS = f"""
<style>
.st-key-{KEY} {{ position: fixed !important; top: 16px; right: 4rem; z-index: 999991; width: auto !important; }}
.st-key-{KEY} [data-testid="stMarkdownContainer"] p {{ font-size: 14px !important; }}
</style>
"""


# Sizes are in px, not rem: Streamlit sizes its widgets and spacing in rem, and scaling those too
# would push the charts off a 720-pixel-high screen.
CSS = f"""
<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], [data-testid="stExpandSidebarButton"],
[data-testid="stHeader"], [data-testid="stDecoration"] {{ display: none !important; }}
[data-testid="stMainBlockContainer"] {{ padding: 0.75rem 2rem 1rem 2rem !important; max-width: none !important; }}
/* The slide shows results, not the controls that chose them (the URL keeps those): widgets, captions,
   code and expanders leave it. A --presenter-keep of block brings one back (see keep()). */
{_HIDDEN} {{ display: var(--presenter-keep, none) !important; }}
[data-testid="stMain"] [data-testid="stLayoutWrapper"]:has(> [data-testid="stExpander"]) {{ display: none !important; }}
[data-testid="stMain"] [data-testid="stVerticalBlock"] {{ gap: 0.6rem; }}
[data-testid="stMain"] h1 {{ font-size: 36px !important; padding: 0 0 0.25rem 0 !important; }}
[data-testid="stMain"] h2, [data-testid="stMain"] h3 {{ font-size: 27px !important; padding: 0.25rem 0 !important; }}
/* Large type for what the audience reads; alerts (notes to whoever runs the app) keep their size. */
[data-testid="stMain"] [data-testid="stMarkdown"] p,
[data-testid="stMain"] [data-testid="stMarkdown"] li {{ font-size: 20px !important; line-height: 1.4 !important; }}
[data-testid="stMain"] [data-testid="stMetricLabel"] p {{ font-size: 18px !important; }}
[data-testid="stMain"] [data-testid="stMetricValue"] {{ font-size: 40px !important; }}
/* High contrast: labels and metric deltas drop Streamlit's faded greys. */
[data-testid="stMain"] [data-testid="stWidgetLabel"], [data-testid="stMain"] [data-testid="stMetricLabel"],
[data-testid="stMain"] [data-testid="stMetricDelta"] {{ color: inherit !important; opacity: 1 !important; }}
/* A control a page keeps (the Lesson's steps) stays on one line. */
[data-testid="stMain"] [data-testid="stRadioOption"] p {{ font-size: 16px !important; }}
/* The way out stays on screen without taking a line of the slide: the toggle moves to the corner. */
.st-key-{KEY} {{ --presenter-keep: block; top: 4px !important; right: 1rem !important; }}
</style>
"""


def active() -> bool:
    """Whether presenter mode is on in this run (also before :func:`apply` has drawn the toggle)."""
    if KEY in st.session_state:
        return bool(st.session_state[KEY])
    return str(st.query_params.get(KEY, "")).lower() in _URL_ON


def keep(*keys: str) -> None:
    """Keep the widgets with these keys on the slide in presenter mode (e.g. a lesson's step picker);
    call it anywhere in the page."""
    if active() and keys:
        st.html("<style>" + ", ".join(f".st-key-{key}" for key in keys) + " { --presenter-keep: block; }</style>")


def apply() -> bool:
    """Draw the toggle and, when it is on, the presenter style. Call once per run, after the sidebar
    and before the page."""
    on = active()
    from_link = on and KEY not in st.session_state
    if from_link or (st.session_state.pop(_FROM_LINK, False) and on):  # `and on`: unless just switched off
        st.session_state[KEY] = True
    on = st.toggle("Presenter mode", key=KEY, bind="query-params",
                   help="For a projector: hides the sidebar and the controls, large type, high contrast. "
                        "Kept in the URL (present=true).")
    if from_link:
        # A link's present=1 (or yes, on): the bound toggle reads only true/false, so Streamlit drops the
        # parameter. Setting the toggle again in the next run is what writes present=true back to the URL
        # (not st.rerun(): a run it cuts short keeps no widget state, and the URL would stay bare).
        st.session_state[_FROM_LINK] = True
    # The widget's state is what the toggle shows (a value set above for a link's present=1 is
    # there before the widget returns it).
    on = bool(st.session_state.get(KEY, on))
    # Style only: Streamlit adds it without taking a line of the page.
    st.html(TOGGLE_CSS + (CSS if on else ""))
    return on
