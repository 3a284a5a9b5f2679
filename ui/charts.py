"""Plotly figures for the dashboard, built from plain results (dicts and lists).

No Streamlit here, so every figure is testable on its own. Heatmaps are scatter plots of
square markers rather than ``go.Heatmap``: Streamlit passes scatter point selections back
to the script (a click on a cell opens it), heatmap selections it does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative, sample_colorscale, unlabel_rgb

METRICS = {
    "accuracy": {"label": "stitched accuracy", "range": (0.0, 1.0), "scale": "Viridis"},
    "penalty": {"label": "penalty (receiver − stitched)", "range": None, "scale": "RdBu_r"},
    "relative": {"label": "relative accuracy (stitched / receiver)", "range": (0.0, 1.05), "scale": "Viridis"},
}
NOT_STITCHABLE_COLOR = "#9aa0a6"
FAILED_COLOR = "#d93025"
# Every chart's camera button saves a PNG (what "export a chart" means in the browser).
PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
# Layer grids carry their own width (square cells): draw them with st.plotly_chart(..., width="content").
# Sizes are made for the smallest screen the app is shown on: a 1280 × 720 window (a projector).
# Streamlit draws a figure with its own width no wider than its column (a wider one is squeezed
# to fit, and square markers then overlap), so each grid is sized for the column it goes in.
PAGE_WIDTH = 820  # px: the main area of a 1280-px window with the sidebar open (measured in Chromium)
COLUMN_GAP = 16  # px between st.columns
MIN_FONT = 9  # px: a printed number smaller than this cannot be read; hover still shows it
CHAR_EM = 0.6  # a glyph's width in em: digits are 0.57 em in Open Sans, less in Streamlit's font
_MAX_CELL, MAX_GRID_HEIGHT = 60, 560  # px: beyond this a grid no longer fits a 720-px window
# Under a title and a paragraph on a 720-px slide (presenter mode), a grid's cells get this much.
SLIDE_GRID_HEIGHT = 150


def column_width(n_columns: int, page_width: int = PAGE_WIDTH) -> int:
    """The width in px of each of ``n_columns`` equal ``st.columns`` on a page ``page_width`` wide."""
    n = max(1, n_columns)
    return int((page_width - COLUMN_GAP * (n - 1)) / n)


def text_px(text: str, font_size: float) -> float:
    """The estimated width in px of one line of ``text``."""
    return len(text) * CHAR_EM * font_size


def _wrap(text: str, max_px: float, font_size: float) -> list[str]:
    """``text`` broken at spaces into lines of at most ``max_px`` (a longer word gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and text_px(f"{lines[-1]} {word}", font_size) <= max_px:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def relative_luminance(color: str) -> float:
    """WCAG 2 relative luminance of ``"#rrggbb"`` or ``"rgb(r, g, b)"``."""
    rgb = hex_to_rgb(color) if color.startswith("#") else unlabel_rgb(color)
    linear = [c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_ratio(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two colours, 1 to 21 (4.5 is the minimum for normal text)."""
    light, dark = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def text_color_on(background: str) -> str:
    """Black or white, whichever reads better on ``background`` (one of them always reaches 4.5:1)."""
    return max(("#000000", "#ffffff"), key=lambda text: contrast_ratio(text, background))


@dataclass
class _GridLayout:
    """Pixel sizes of a layer grid that fits ``width``: square cells, every label inside the margins."""

    pitch: int  # px from one cell to the next, across and down
    marker: int  # the square's side: the pitch less the gap between cells
    number_font: int  # px; 0 when a printed number would not fit its cell (hover shows it)
    tick_font: int
    x_tick_angle: int
    margin: dict
    width: int
    height: int
    title: list[str]
    title_font: int
    title_top: float  # px from the figure's top edge to the title's anchor
    legend_top: int  # px from the figure's top edge
    row_title: list[str]  # above the grid, across: upright it would take the width the cells need
    col_title: list[str]
    colorbar: list[str]
    colorbar_top: int  # px from the figure's bottom edge to the colour bar's top


def _grid_layout(row_labels, col_labels, texts, *, width, font_size, title, row_title, col_title, colorbar,
                 legend, max_grid_height: int = MAX_GRID_HEIGHT) -> _GridLayout:
    """Sizes for a grid in ``width`` px. The margins are computed here rather than left to plotly's
    automargin, which would shrink the plot area after the markers were sized and so make them
    overlap (the last column drawn then looks wider than the others)."""
    n_rows, n_cols = max(1, len(row_labels)), max(1, len(col_labels))
    line = math.ceil(font_size * 1.3)
    right = 12
    row_ticks = max((text_px(str(label), 1.0) for label in row_labels), default=0.0)  # px per px of font
    tick_font = font_size
    for _ in range(2):  # small cells get smaller row labels (stacked, they must not touch), which frees width
        left = math.ceil(8 + row_ticks * tick_font + 8)
        pitch = max(3, int(min(_MAX_CELL, (width - left - right) / n_cols, max_grid_height / n_rows)))
        tick_font = int(min(tick_font, max(6, pitch / 1.25)))
    marker = pitch - (2 if pitch >= 16 else 1)
    longest = max((len(text) for text in texts), default=4)
    number_font = int(min(font_size, (marker - 4) / (longest * CHAR_EM), marker / 1.3))
    col_ticks = max((text_px(str(label), tick_font) for label in col_labels), default=0.0)
    upright = col_ticks <= pitch - 4
    plot_w, plot_h = n_cols * pitch, n_rows * pitch
    # The title shrinks to fit one line before it wraps (down to the labels' size).
    title_font = int(max(font_size, min(font_size + 3, (width - 16) / max(1.0, text_px(title, 1.0)))))
    title_lines = _wrap(title, width - 16, title_font) if title else []
    row_lines = _wrap(f"↓ {row_title}", width - 12, font_size) if row_title else []
    # Both are centred under the cells and may reach into the right margin, no further.
    col_lines = _wrap(col_title, plot_w + 2 * right, font_size) if col_title else []
    bar_lines = _wrap(colorbar, plot_w + 2 * right, font_size) if colorbar else []
    legend_rows, used = (1 if legend else 0), 0.0
    for label in legend:  # a horizontal legend wraps to the width
        item = 40 + text_px(label, font_size)
        if used and used + item > width - 10:
            legend_rows, used = legend_rows + 1, 0.0
        used += item
    # plotly drops the cap-height shift (0.7 em) of a title of several lines: put it back.
    title_top = 8 + (0.7 * title_font if len(title_lines) > 1 else 0)
    legend_top = math.ceil(8 + len(title_lines) * title_font * 1.3 + 4)
    top = math.ceil(legend_top + legend_rows * font_size * 1.6 + len(row_lines) * line + 8)
    bar_block = 10 + 4 + math.ceil(tick_font * 1.4) + len(bar_lines) * line
    bottom = math.ceil((tick_font * 1.4 if upright else col_ticks) + 8 + len(col_lines) * line + 12 + bar_block + 8)
    return _GridLayout(
        pitch=pitch, marker=marker, number_font=number_font if number_font >= MIN_FONT else 0, tick_font=tick_font,
        x_tick_angle=0 if upright else -90, margin={"l": left, "r": right, "t": top, "b": bottom},
        width=left + plot_w + right, height=top + plot_h + bottom, title=title_lines, title_font=title_font,
        title_top=title_top, legend_top=legend_top, row_title=row_lines, col_title=col_lines, colorbar=bar_lines,
        colorbar_top=8 + bar_block)


def cell_color(value: float, scale, lo: float, hi: float) -> str:
    """The colour ``scale`` gives ``value`` on ``[lo, hi]``, as ``"rgb(r, g, b)"``."""
    position = 0.5 if hi <= lo else min(1.0, max(0.0, (value - lo) / (hi - lo)))
    return sample_colorscale(scale, [position])[0]


def layer_grid(values, row_labels, col_labels, statuses=None, *, title="", row_title="", col_title="",
               colorbar="", scale="Viridis", zrange=None, hover_name="value", font_size=12,
               selected: tuple[str, str] | None = None, width: int = PAGE_WIDTH,
               max_grid_height: int = MAX_GRID_HEIGHT) -> go.Figure:
    """A matrix as square markers: rows top to bottom, columns left to right, in ``width`` px (the
    width of the column the figure is drawn in; :func:`column_width` gives it for ``st.columns``),
    its cells together at most ``max_grid_height`` px tall (smaller under text on a 720-px slide).

    Cell size, label fonts and whether values are printed follow from ``width``: a value is printed
    only where it fits its cell at ``MIN_FONT`` px or more (hovering shows it anyway), in black or
    white, whichever reads better on the cell. ``statuses`` (same shape, optional) marks cells
    ``not_stitchable`` (grey, ×), ``failed`` (red, !) or ``missing`` (outline only) so they never
    look like a 0.
    """
    xs, ys, zs, custom, texts = [], [], [], [], []
    special = {"not_stitchable": ([], [], []), "failed": ([], [], []), "missing": ([], [], [])}
    finite = [v for row in values for v in row if v is not None and not math.isnan(v)]
    for r, row_label in enumerate(row_labels):
        for c, col_label in enumerate(col_labels):
            value = values[r][c]
            status = statuses[r][c] if statuses else ("done" if value is not None else "missing")
            if value is None or status != "done":
                bucket = special.get(status, special["missing"])
                bucket[0].append(col_label)
                bucket[1].append(row_label)
                bucket[2].append([row_label, col_label])
                continue
            xs.append(col_label)
            ys.append(row_label)
            zs.append(value)
            custom.append([row_label, col_label])
            texts.append(f"{value:.2f}")
    lo, hi = zrange if zrange else (min(finite, default=0.0), max(finite, default=1.0))
    if not zrange and scale == "RdBu_r":  # diverging: centre on zero
        bound = max(abs(lo), abs(hi), 1e-6)
        lo, hi = -bound, bound
    styles = {"not_stitchable": (NOT_STITCHABLE_COLOR, "×", "not stitchable"),
              "failed": (FAILED_COLOR, "!", "failed"), "missing": ("rgba(0,0,0,0)", "", "not computed yet")}
    size = _grid_layout(row_labels, col_labels, texts, width=width, font_size=font_size, title=title,
                        row_title=row_title, col_title=col_title, colorbar=colorbar,
                        legend=[styles[status][2] for status, (x, _, _) in special.items() if x],
                        max_grid_height=max_grid_height)
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers", customdata=custom,
        marker={"symbol": "square", "size": size.marker, "color": zs, "colorscale": scale, "cmin": lo, "cmax": hi,
                "line": {"width": 0},
                "colorbar": {"title": {"text": "<br>".join(size.colorbar), "side": "bottom"},
                             "orientation": "h", "thickness": 10, "lenmode": "pixels",
                             "len": max(size.pitch * len(col_labels), 60), "x": 0.5, "xanchor": "center",
                             "yref": "container", "y": size.colorbar_top / size.height, "yanchor": "top",
                             "xpad": 0, "ypad": 0, "tickfont": {"size": size.tick_font}}},
        hovertemplate=f"{row_title} %{{y}} → {col_title} %{{x}}<br>{hover_name}: %{{marker.color:.4f}}"
                      "<extra></extra>",
        # A click selects a cell; keep the others as they were (plotly would fade them).
        selected={"marker": {"opacity": 1.0}}, unselected={"marker": {"opacity": 1.0}},
        name="cells", showlegend=False))
    if size.number_font:
        # One text trace per text colour, so that a selection cannot fade or recolour the numbers.
        by_color: dict[str, tuple[list, list, list]] = {}
        for x, y, z, text in zip(xs, ys, zs, texts):
            group = by_color.setdefault(text_color_on(cell_color(z, scale, lo, hi)), ([], [], []))
            group[0].append(x)
            group[1].append(y)
            group[2].append(text)
        for color, (x, y, text) in by_color.items():
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="text", text=text, hoverinfo="skip", name="values", showlegend=False,
                textfont={"size": size.number_font, "color": color},
                selected={"textfont": {"color": color}}, unselected={"textfont": {"color": color}}))
    mark_font = int(min(max(10, size.marker // 2), size.marker * 0.8))
    for status, (x, y, cd) in special.items():
        if not x:
            continue
        color, mark, label = styles[status]
        text_color = text_color_on(color) if color.startswith("#") else "#000000"
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="markers+text", text=[mark if mark_font >= 7 else ""] * len(x), customdata=cd,
            name=label, textfont={"size": mark_font, "color": text_color},
            selected={"textfont": {"color": text_color}}, unselected={"textfont": {"color": text_color}},
            marker={"symbol": "square", "size": size.marker,
                    "color": color, "line": {"width": 1, "color": "#bbbbbb" if status == "missing" else color}},
            hovertemplate=f"{row_title} %{{y}} → {col_title} %{{x}}<br>{label}<extra></extra>"))
    if selected:
        fig.add_trace(go.Scatter(x=[selected[1]], y=[selected[0]], mode="markers", hoverinfo="skip",
                                 marker={"symbol": "square-open", "size": size.pitch - 1, "color": "#ff4b4b",
                                         "line": {"width": 3, "color": "#ff4b4b"}},
                                 name="selected", showlegend=False))
    axis = {"type": "category", "categoryorder": "array", "showgrid": False, "zeroline": False,
            "automargin": False, "fixedrange": True, "tickfont": {"size": size.tick_font}}
    fig.update_layout(
        title={"text": "<br>".join(size.title), "font": {"size": size.title_font}, "x": 0, "xref": "container",
               "xanchor": "left", "y": 1 - size.title_top / size.height, "yref": "container", "yanchor": "top",
               "pad": {"l": 6}},
        height=size.height, width=size.width, margin=size.margin,
        font={"size": font_size}, plot_bgcolor="rgba(0,0,0,0)", clickmode="event+select", dragmode=False,
        legend={"orientation": "h", "xref": "container", "x": 0, "xanchor": "left", "yref": "container",
                "y": 1 - size.legend_top / size.height, "yanchor": "top"},
        xaxis={**axis, "title": {"text": "<br>".join(size.col_title)}, "categoryarray": list(col_labels),
               "range": [-0.5, len(col_labels) - 0.5], "side": "bottom", "tickangle": size.x_tick_angle},
        yaxis={**axis, "categoryarray": list(row_labels), "range": [len(row_labels) - 0.5, -0.5]})
    if size.row_title:
        plot_w, plot_h = size.width - size.margin["l"] - size.margin["r"], size.pitch * len(row_labels)
        fig.add_annotation(text="<br>".join(size.row_title), showarrow=False, align="left",
                           xref="paper", x=(6 - size.margin["l"]) / plot_w, xanchor="left",
                           yref="paper", y=1 + 6 / plot_h, yanchor="bottom", font={"size": font_size})
    return fig


def grid_heatmap(grid: dict, metric: str = "accuracy", title: str | None = None, font_size: int = 12,
                 selected: tuple[str, str] | None = None, width: int = PAGE_WIDTH,
                 max_grid_height: int = MAX_GRID_HEIGHT) -> go.Figure:
    """The stitching heatmap of a grid (``GridResult.to_json()``): sender layers down, receiver layers
    across, sized for a column ``width`` px wide."""
    spec = METRICS[metric]
    control = grid.get("control", "none")
    default_title = "real networks" if control == "none" else f"control: {control.replace('-', ' ')}"
    return layer_grid(grid[metric], grid["sender_layers"], grid["receiver_layers"], grid.get("status"),
                      title=title or default_title, row_title=f"sender {grid['sender']} · layer i",
                      col_title=f"receiver {grid['receiver']} · layer j", colorbar=spec["label"],
                      scale=spec["scale"], zrange=spec["range"], hover_name=spec["label"], font_size=font_size,
                      selected=selected, width=width, max_grid_height=max_grid_height)


def line_colors(n: int) -> list[str]:
    """``n`` colours, distinct up to 48 (plotly's default cycle repeats after 10)."""
    palette = qualitative.Dark24 + qualitative.Light24
    return [palette[k % len(palette)] for k in range(n)]


def reference_profile(grid: dict, font_size: int = 12) -> go.Figure:
    """Stitched accuracy along the receiver's layers, one line per sender layer, with the
    receiver's and the sender's own accuracy as reference lines."""
    fig = go.Figure()
    colors = line_colors(len(grid["sender_layers"]))
    for i, sender_layer in enumerate(grid["sender_layers"]):
        fig.add_trace(go.Scatter(x=grid["receiver_layers"], y=grid["accuracy"][i], mode="lines+markers",
                                 name=f"from {sender_layer}", connectgaps=False,
                                 line={"color": colors[i]}, marker={"color": colors[i]}))
    references = [(value, label, dash) for value, label, dash in (
        (grid.get("reference_accuracy") or grid.get("receiver_accuracy"), "receiver alone", "dash"),
        (grid.get("sender_accuracy"), "sender alone", "dot")) if value is not None]
    # The higher line is labelled above itself, the lower one below: close values never share a row.
    highest = max(range(len(references)), key=lambda k: references[k][0], default=None)
    for k, (value, label, dash) in enumerate(references):
        above = len(references) > 1 and k == highest
        fig.add_hline(y=value, line_dash=dash, line_color="#444", annotation_text=f"{label}: {value:.3f}",
                      annotation_position="top right" if above else "bottom right",
                      annotation_bgcolor="rgba(255,255,255,0.85)")  # readable over the lines it crosses
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 30, "b": 10}, font={"size": font_size},
                      yaxis={"title": "stitched accuracy", "range": [0, 1.02]},
                      xaxis={"title": f"receiver layer j ({grid['receiver']})", "type": "category"},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def confusion_figure(confusion: list[list[int]], classes) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=confusion, x=list(classes), y=list(classes), colorscale="Blues",
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>"))
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 30, "b": 10}, title="confusion matrix",
                      xaxis={"title": "predicted"}, yaxis={"title": "true", "autorange": "reversed"})
    return fig


def per_class_figure(per_class: list[float], classes) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(classes), y=per_class, marker_color="#4c78a8",
                           hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10}, title="accuracy per class",
                      yaxis={"range": [0, 1]})
    return fig


def curve_figure(curve: list[list[float]]) -> go.Figure:
    fig = go.Figure(go.Scatter(x=[p[0] for p in curve], y=[p[1] for p in curve], mode="lines+markers"))
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10}, title="training loss",
                      xaxis={"title": "step"}, yaxis={"title": "cross-entropy"})
    return fig


def cka_heatmap(cka: dict, font_size: int = 12, width: int = PAGE_WIDTH,
                max_grid_height: int = MAX_GRID_HEIGHT) -> go.Figure:
    """A CKA matrix (``CkaResult.to_json()``) drawn like the stitching heatmap, ``width`` px wide."""
    return similarity_heatmap(cka["cka"], cka["layers_a"], cka["layers_b"], cka["model_a"], cka["model_b"], "CKA",
                              title=f"CKA ({cka.get('kernel', 'linear')})", zrange=(0.0, 1.0), font_size=font_size,
                              width=width, max_grid_height=max_grid_height)


def similarity_heatmap(matrix, layers_a, layers_b, model_a: str, model_b: str, label: str,
                       higher_is_similar: bool = True, title: str | None = None, zrange="auto", font_size: int = 12,
                       width: int = PAGE_WIDTH, max_grid_height: int = MAX_GRID_HEIGHT) -> go.Figure:
    """A layer x layer similarity matrix (rows: ``model_a``'s layers) drawn like the stitching heatmap,
    ``width`` px wide, titled ``title`` (default ``label``).

    ``zrange`` ``"auto"``: values all within [0, 1] (up to rounding) get the fixed scale 0 to 1
    (indices of that range then compare across figures), others span their own range; or a
    ``(low, high)`` pair, or None for the values' own range. A distance (``higher_is_similar``
    False) gets the reversed scale, so similar layers are the bright cells under every index, and
    says so on its colour bar."""
    if zrange == "auto":
        finite = [v for row in matrix for v in row if v is not None and math.isfinite(v)]
        zrange = (0.0, 1.0) if finite and min(finite) >= -1e-9 and max(finite) <= 1 + 1e-9 else None
    colorbar = label if higher_is_similar else f"{label}: a distance, lower = more similar (scale reversed)"
    return layer_grid(matrix, layers_a, layers_b, title=title or label, row_title=f"{model_a} · layer i",
                      col_title=f"{model_b} · layer j", colorbar=colorbar,
                      scale="Viridis" if higher_is_similar else "Viridis_r", zrange=zrange,
                      hover_name=label, font_size=font_size, width=width, max_grid_height=max_grid_height)


def measure_heatmap(similarity: dict, name: str, **kwargs) -> go.Figure:
    """Index ``name`` of a similarity result (``SimilarityResult.to_json()``); ``kwargs`` as in
    :func:`similarity_heatmap`."""
    measure = similarity["measures"][name]
    return similarity_heatmap(measure["matrix"], similarity["layers_a"], similarity["layers_b"],
                              similarity["model_a"], similarity["model_b"], measure["label"],
                              measure["higher_is_similar"], **kwargs)


def agreement_scatter(points: list[dict], value: str = "cka", label: str = "CKA",
                      higher_is_similar: bool = True) -> go.Figure:
    """An index against stitched accuracy, one point per cell (``{"cell", value, "accuracy"}``).
    Values all within [0, 1] get that axis (figures then compare), others their own range; a
    distance's axis runs right to left, so agreement reads as a rising cloud under every index."""
    fig = go.Figure(go.Scatter(
        x=[p[value] for p in points], y=[p["accuracy"] for p in points], mode="markers",
        text=[p["cell"] for p in points], marker={"size": 10, "color": [p.get("depth_gap", 0) for p in points],
                                                   "colorscale": "RdBu", "cmid": 0,
                                                   "colorbar": {"title": "sender − receiver depth"}},
        hovertemplate=f"%{{text}}<br>{label} %{{x:.3f}}<br>stitched accuracy %{{y:.3f}}<extra></extra>"))
    x_axis = {"title": f"{label} (representational similarity)" if higher_is_similar
              else f"{label} (a distance: axis reversed, more similar to the right)"}
    values = [p[value] for p in points]
    if values and min(values) >= -1e-9 and max(values) <= 1 + 1e-9:
        x_axis["range"] = [-0.02, 1.02] if higher_is_similar else [1.02, -0.02]
    elif not higher_is_similar:
        x_axis["autorange"] = "reversed"
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 30, "b": 10}, xaxis=x_axis,
                      yaxis={"title": "stitched accuracy (functional similarity)", "range": [0, 1.02]})
    return fig


def add_depth_diagonal(fig: go.Figure, n_rows: int, n_cols: int, color: str = "#e8175d") -> go.Figure:
    """Draw on a layer grid (from :func:`layer_grid`) the line where the sender's layer is as far
    through its network as the receiver's (relative depth i / (rows − 1) = j / (cols − 1)): on a
    grid that is not square the diagonal of cells is not that line. Dashed, from the first cell's
    centre to the last's; a category axis places shapes by category index."""
    if n_rows > 1 and n_cols > 1:
        fig.add_shape(type="line", xref="x", yref="y", x0=0, y0=0, x1=n_cols - 1, y1=n_rows - 1, layer="above",
                      line={"color": color, "width": 2, "dash": "dash"})
    return fig
