"""A page of test-image thumbnails to click, for a position held by another (URL-bound) widget.

Streamlit has no clickable image grid: each thumbnail is an ``st.image`` over a small button in
``st.columns``. A click writes the position into the bound widget's session state (in a callback,
before that widget is drawn), so the widget, the URL and a shared link keep saying which image
is shown; the gallery itself only remembers which page it is on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import streamlit as st

PER_PAGE, COLUMNS = 16, 8  # two rows: the figure stays near the top of the page
SCALE = 3  # 32 px -> 96 px with square pixels: a browser's smooth upscaling would blur a 32-px image


def thumbnail(image: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """A ``(C, H, W)`` uint8 image as ``(H*scale, W*scale)`` (grey) or ``(H*scale, W*scale, 3)``."""
    big = image.repeat(scale, axis=1).repeat(scale, axis=2)  # (C, H*scale, W*scale)
    return big[0] if big.shape[0] == 1 else big.transpose(1, 2, 0)


def page_of(position: int, count: int, per_page: int = PER_PAGE) -> tuple[int, int]:
    """(page, pages): the page that shows ``position`` among ``count`` items, and how many pages."""
    pages = max(1, -(-count // per_page))
    return min(max(position, 0) // per_page, pages - 1), pages


def gallery(pool: np.ndarray, images: np.ndarray, position: int, key: str,
            label: Callable[[int], str], describe: Callable[[int], str]) -> None:
    """Thumbnails of ``images[pool]``, a page at a time; a click sets ``st.session_state[key]`` to
    that image's position in ``pool``. ``label(index)`` names a button, ``describe(index)`` is
    its tooltip. The page follows ``position`` whenever it changes (slider, link or click)."""
    page_key, followed_key = f"{key}_gallery_page", f"{key}_gallery_follows"
    shown = (position, int(pool[position]))  # a new filter can keep the position but change the image
    if st.session_state.get(followed_key) != shown:
        st.session_state[page_key] = page_of(position, len(pool))[0]
        st.session_state[followed_key] = shown
    _, pages = page_of(0, len(pool))
    page = min(st.session_state.get(page_key, 0), pages - 1)
    start = page * PER_PAGE
    for row in range(start, min(start + PER_PAGE, len(pool)), COLUMNS):
        for column, at in zip(st.columns(COLUMNS), range(row, min(row + COLUMNS, len(pool)))):
            index = int(pool[at])
            column.image(thumbnail(images[index]), width="stretch")
            column.button(label(index), key=f"{key}_pick_{index}", help=describe(index), width="stretch",
                          type="primary" if at == position else "secondary", on_click=_select, args=(key, at))
    if pages > 1:
        back, where, forward = st.columns([1, 3, 1], vertical_alignment="center")
        back.button("◀ Previous", key=f"{key}_gallery_back", disabled=page == 0, width="stretch",
                    on_click=_turn, args=(page_key, page - 1))
        where.caption(f"Images {start + 1:,}–{min(start + PER_PAGE, len(pool)):,} of {len(pool):,} "
                      f"(page {page + 1:,} of {pages:,})")
        forward.button("Next ▶", key=f"{key}_gallery_forward", disabled=page == pages - 1, width="stretch",
                       on_click=_turn, args=(page_key, page + 1))


def _select(key: str, at: int) -> None:
    st.session_state[key] = at


def _turn(page_key: str, page: int) -> None:
    st.session_state[page_key] = page
