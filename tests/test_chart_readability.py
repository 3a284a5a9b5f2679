"""Charts readable on a projector, a 1280 x 720 browser window: read off the figures, no browser.

Widths are what Chromium measured in that window: the page's main area is 820 px with the sidebar
open (the issue estimated 900), two columns get 402 px each and four 193 px; presenter mode (no
sidebar) gives 1216, 600 and 292. Text widths are estimated as the issue put it: a glyph is
0.6 em wide, so "0.93" at font size f is 4 x 0.6 f px.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from plotly.colors import sample_colorscale

from core.attribution.maps import Attribution, attribution_figure
from ui import charts

ROWS = ["stem", "layer1.0", "layer2.0", "layer3.0", "layer4.0"]
COLS = ["stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0", "layer4.1"]
WIDTHS = [900, 820, 402, 193, 1216, 600, 292]  # px, see the module docstring
MIN_FONT = 9  # px: smaller printed numbers cannot be read
GLYPH_EM = 0.6


def _grid(reference: float = 0.93, sender: float = 0.935, n_senders: int = len(ROWS)) -> dict:
    """A 5 x 9 grid (R1111 into R2222) whose accuracies run through the whole colour scale."""
    rows = ROWS if n_senders == len(ROWS) else [f"layer{k}" for k in range(n_senders)]
    cells = n_senders * len(COLS)
    accuracy = [[round((r * len(COLS) + c) / (cells - 1), 4) for c in range(len(COLS))] for r in range(n_senders)]
    return {"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_2222-s0", "sender_layers": rows,
            "receiver_layers": COLS, "accuracy": accuracy,
            "penalty": [[reference - a for a in row] for row in accuracy],
            "relative": [[a / reference for a in row] for row in accuracy],
            "status": [["done"] * len(COLS) for _ in rows], "reference_accuracy": reference,
            "sender_accuracy": sender, "control": "none"}


def _cka() -> dict:
    values = [[round(1 - abs(r / 4 - c / 8) * 0.9, 4) for c in range(len(COLS))] for r in range(len(ROWS))]
    return {"model_a": "zoo/resnet_1111-s0", "model_b": "zoo/resnet_2222-s0", "layers_a": ROWS, "layers_b": COLS,
            "cka": values, "kernel": "linear"}


def _heatmap(kind: str, width: int | None, font_size: int = 12, **extra):
    size = {} if width is None else {"width": width}
    if kind == "cka":
        return charts.cka_heatmap(_cka(), font_size=font_size, **size)
    return charts.grid_heatmap(_grid(), kind, font_size=font_size, **size, **extra)


# -- reading a figure -----------------------------------------------------------------------------

def _cells_trace(fig):
    return next(t for t in fig.data if t.name == "cells")


def _cell_geometry(fig) -> tuple[float, float, float]:
    """(px from one column to the next, from one row to the next, a cell's marker side)."""
    layout = fig.layout
    for axis in (layout.xaxis, layout.yaxis):
        # Otherwise plotly places the plot area and spaces the categories after the markers were sized.
        assert axis.range is not None and axis.automargin is False, "the cells' pitch is left to plotly"
    across = (layout.width - layout.margin.l - layout.margin.r) / abs(layout.xaxis.range[1] - layout.xaxis.range[0])
    down = (layout.height - layout.margin.t - layout.margin.b) / abs(layout.yaxis.range[1] - layout.yaxis.range[0])
    return across, down, _cells_trace(fig).marker.size


def _at(value, k):
    return value[k] if isinstance(value, (list, tuple)) else value


def _printed(fig) -> list[tuple]:
    """(x, y, text, font px, colour) of every text drawn in a cell."""
    out = []
    for trace in fig.data:
        if trace.text is None or "text" not in (trace.mode or ""):
            continue
        for k, (x, y, text) in enumerate(zip(trace.x, trace.y, trace.text)):
            if text:
                size = _at(trace.textfont.size, k) or fig.layout.font.size or 12
                out.append((x, y, text, size, _at(trace.textfont.color, k)))
    return out


def _cell_colors(fig) -> dict:
    """(x, y) -> the colour a cell is filled with."""
    out = {}
    for trace in fig.data:
        marker = trace.marker
        if trace.mode == "text" or marker is None or marker.symbol != "square":
            continue
        if isinstance(marker.color, (list, tuple)):  # coloured by value on the colour scale
            for x, y, z in zip(trace.x, trace.y, marker.color):
                position = min(1.0, max(0.0, (z - marker.cmin) / (marker.cmax - marker.cmin)))
                out[(x, y)] = sample_colorscale([list(stop) for stop in marker.colorscale], [position])[0]
        else:
            out.update({(x, y): marker.color for x, y in zip(trace.x, trace.y)})
    return out


def _rgb(color: str) -> tuple[float, float, float]:
    color = {"white": "#ffffff", "black": "#000000"}.get(color, color)
    if color.startswith("#"):
        return tuple(int(color[k:k + 2], 16) for k in (1, 3, 5))
    return tuple(float(v) for v in re.findall(r"[\d.]+", color)[:3])


def _contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio."""
    def luminance(color):
        linear = [c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in _rgb(color)]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


# -- heatmaps -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["accuracy", "penalty", "relative", "cka"])
@pytest.mark.parametrize("width", WIDTHS)
def test_a_heatmap_fits_its_column_with_square_cells_and_numbers_that_fit(kind, width):
    fig = _heatmap(kind, width, font_size=11 if width < 300 else 12)
    assert fig.layout.width <= width  # wider, Streamlit squeezes it into the column and the cells overlap
    across, down, marker = _cell_geometry(fig)
    assert across == pytest.approx(down)  # square cells
    assert across - 2 <= marker <= across  # cells touch and never overlap: every column looks as wide
    printed = _printed(fig)
    for x, y, text, size, _ in printed:
        assert size >= MIN_FONT, f"{text} at ({x}, {y}) printed at {size} px"
        assert len(text) * GLYPH_EM * size <= marker and size <= marker, f"{text} at {size} px in a {marker} px cell"
    if width >= 402:  # the CKA page's columns hold every value, readable
        assert len(printed) == len(ROWS) * len(COLS)
    if not printed:  # too small to print: hovering still tells the value
        assert "%{marker.color" in _cells_trace(fig).hovertemplate


def test_the_default_heatmap_fits_the_page_at_1280():
    fig = _heatmap("accuracy", None)
    assert fig.layout.width <= 820
    across, down, marker = _cell_geometry(fig)
    assert across == pytest.approx(down) and across - 2 <= marker <= across


def test_the_lessons_four_controls_are_drawn_for_a_quarter_of_the_page():
    """The Lesson's step 4 passes its columns' width: read from the page's charts (AppTest)."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(__import__("pathlib").Path(__file__).resolve().parent.parent / "app.py"),
                            default_timeout=120)
    app.query_params["step"] = "4 · Random controls"
    app.run()
    app.switch_page("pages/lesson.py")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    widths = [json.loads(chart.proto.spec)["layout"].get("width") for chart in app.get("plotly_chart")]
    assert len(widths) == 4 and all(w is not None and w <= 193 for w in widths), widths


@pytest.mark.parametrize("kind", ["accuracy", "penalty", "relative", "cka"])
@pytest.mark.parametrize("width", [None, 402])  # None: the default, the page's width
def test_every_printed_number_contrasts_with_its_cell(kind, width):
    fig = _heatmap(kind, width)
    colors = _cell_colors(fig)
    printed = _printed(fig)
    assert len(printed) == len(ROWS) * len(COLS)
    for x, y, text, _, color in printed:
        assert _contrast(color, colors[(x, y)]) >= 4.5, f"{text} in {color} on {colors[(x, y)]} at ({x}, {y})"


def test_not_stitchable_and_failed_marks_contrast_with_their_cells():
    grid = _grid()
    grid["status"][0][0], grid["status"][1][1] = "not_stitchable", "failed"
    grid["accuracy"][0][0] = grid["accuracy"][1][1] = None
    fig = charts.grid_heatmap(grid)
    colors = _cell_colors(fig)
    marks = [(x, y, text, color) for x, y, text, _, color in _printed(fig) if text in ("×", "!")]
    assert len(marks) == 2
    for x, y, text, color in marks:
        assert _contrast(color, colors[(x, y)]) >= 4.5, f"{text} in {color} on {colors[(x, y)]}"


def test_a_selected_cell_fades_or_recolours_no_number():
    """A guard (the old white-on-everything passed it too): once a cell is clicked, plotly fades the
    text of the other points unless the trace says which colour they keep."""
    fig = charts.grid_heatmap(_grid(), selected=("layer1.0", "layer2.0"))
    texts = [t for t in fig.data if t.mode and "text" in t.mode and t.text and any(t.text)]
    assert texts
    for trace in texts:
        assert isinstance(trace.textfont.color, str)  # one colour per trace, so a selection can keep it
        assert trace.unselected.textfont.color == trace.textfont.color
        assert trace.selected.textfont.color in (None, trace.textfont.color)


# -- the reference profile ------------------------------------------------------------------------

def _label_boxes(fig) -> list[tuple[float, float, float, float]]:
    """(left, bottom, right, top) in px of each reference line's label, estimated from the layout."""
    layout = fig.layout
    plot_h = layout.height - layout.margin.t - layout.margin.b
    plot_w = (layout.width or 820) - layout.margin.l - layout.margin.r
    low, high = layout.yaxis.range
    boxes = []
    for note in layout.annotations:
        size = (note.font.size if note.font else None) or layout.font.size or 12
        y = (note.y - low) / (high - low) * plot_h
        x = note.x * plot_w
        w, h = len(note.text) * GLYPH_EM * size, 1.3 * size
        left = {"right": x - w, "left": x}.get(note.xanchor, x - w / 2)
        bottom = {"top": y - h, "bottom": y}.get(note.yanchor, y - h / 2)
        boxes.append((left, bottom, left + w, bottom + h))
    return boxes


@pytest.mark.parametrize("receiver, sender", [(0.945, 0.955), (0.93, 0.93), (0.955, 0.945)])
def test_reference_labels_never_print_over_each_other(receiver, sender):
    fig = charts.reference_profile(_grid(reference=receiver, sender=sender))
    (a, b) = _label_boxes(fig)
    overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
    assert not overlap, f"labels at {a} and {b}"


@pytest.mark.parametrize("n_senders", [9, 12, 30])
def test_every_sender_layer_gets_its_own_colour(n_senders):
    fig = charts.reference_profile(_grid(n_senders=n_senders))
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(lines) == n_senders
    colors = [t.line.color for t in lines]
    assert None not in colors and len(set(colors)) == n_senders, colors


# -- attribution figures (matplotlib) -------------------------------------------------------------

def _attribution(name: str, signed: bool = True) -> Attribution:
    display = np.linspace(-1 if signed else 0, 1, 28 * 28, dtype=np.float32).reshape(1, 28, 28)
    probabilities = np.full((1, 10), 0.01, dtype=np.float32)
    probabilities[0, 3] = 0.91
    return Attribution("ig", display, display, signed, np.array([3]), probabilities, np.array([3]), 0.1, name)


CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SENDER, RECEIVER = "zoo/resnet_1111-s0", "zoo/resnet_2222-s0"


@pytest.mark.parametrize("results", [
    {"sender": _attribution(SENDER), "receiver": _attribution(RECEIVER),
     "stitched": _attribution(f"{SENDER}:layer4.0 → {RECEIVER}:layer1.1")},
    {"sender": _attribution(SENDER, signed=False), "receiver": _attribution(RECEIVER, signed=False)},
    {"model": _attribution("checkpoints/a-user-checkpoint-with-a-rather-long-name.pt")},
], ids=["stitched", "two", "one"])
def test_attribution_titles_are_readable_at_the_width_the_page_shows(results):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = attribution_figure(np.linspace(0, 1, 28 * 28).reshape(1, 28, 28), results, CLASSES, 3)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    # st.pyplot saves the figure cropped to its content (bbox_inches="tight") and shows it 820 px wide.
    shown_px_per_inch = 820 / fig.get_tightbbox(renderer).width
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == 1 + len(results)
    boxes = []
    for ax in titled:
        assert ax.title.get_fontsize() / 72 * shown_px_per_inch >= 10, f"{ax.get_title()!r} under 10 px on screen"
        box = ax.title.get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height, f"{ax.get_title()!r} is cut"
        boxes.append(box)
    if fig._suptitle is not None:
        boxes.append(fig._suptitle.get_window_extent(renderer))
    for k, a in enumerate(boxes):
        for b in boxes[k + 1:]:
            assert not a.overlaps(b), "two titles print over each other"
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == len(results)  # a colour bar per map
    fig.savefig(io.BytesIO(), format="png", bbox_inches="tight")  # and it renders
