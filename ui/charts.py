"""Plotly figures for the dashboard, built from plain results (dicts and lists).

No Streamlit here, so every figure is testable on its own. Heatmaps are scatter plots of
square markers rather than ``go.Heatmap``: Streamlit passes scatter point selections back
to the script (a click on a cell opens it), heatmap selections it does not.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

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


def _cell_px(n_rows: int, n_cols: int, width: int = 760) -> tuple[int, int, int]:
    """Marker size, figure width and height so that cells are square and touch."""
    size = max(14, min(60, int(min(width / max(n_cols, 1), 560 / max(n_rows, 1))) - 2))
    return size, 260 + (size + 2) * n_cols, 150 + (size + 2) * n_rows


def layer_grid(values, row_labels, col_labels, statuses=None, *, title="", row_title="", col_title="",
               colorbar="", scale="Viridis", zrange=None, hover_name="value", font_size=12,
               selected: tuple[str, str] | None = None) -> go.Figure:
    """A matrix as square markers: rows top to bottom, columns left to right.

    ``statuses`` (same shape, optional) marks cells ``not_stitchable`` (grey, ×), ``failed`` (red,
    !) or ``missing`` (outline only) so they never look like a 0.
    """
    n_rows, n_cols = len(row_labels), len(col_labels)
    size, width, height = _cell_px(n_rows, n_cols)
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
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers+text", text=texts, customdata=custom,
        textfont={"size": max(8, min(font_size, size // 3)), "color": "white"},
        marker={"symbol": "square", "size": size, "color": zs, "colorscale": scale, "cmin": lo, "cmax": hi,
                "line": {"width": 0},
                "colorbar": {"title": {"text": colorbar, "side": "right"}, "thickness": 14}},
        hovertemplate=f"{row_title} %{{y}} → {col_title} %{{x}}<br>{hover_name}: %{{marker.color:.4f}}"
                      "<extra></extra>",
        # A click selects a cell; keep the others as they were (plotly would fade them).
        selected={"marker": {"opacity": 1.0}}, unselected={"marker": {"opacity": 1.0}, "textfont": {"color": "white"}},
        name="cells", showlegend=False))
    styles = {"not_stitchable": (NOT_STITCHABLE_COLOR, "×", "not stitchable"),
              "failed": (FAILED_COLOR, "!", "failed"), "missing": ("rgba(0,0,0,0)", "", "not computed yet")}
    for status, (x, y, cd) in special.items():
        if not x:
            continue
        color, mark, label = styles[status]
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="markers+text", text=[mark] * len(x), customdata=cd, name=label,
            textfont={"size": max(10, size // 2), "color": "white"},
            marker={"symbol": "square", "size": size, "color": color,
                    "line": {"width": 1, "color": "#bbbbbb" if status == "missing" else color}},
            hovertemplate=f"{row_title} %{{y}} → {col_title} %{{x}}<br>{label}<extra></extra>"))
    if selected:
        fig.add_trace(go.Scatter(x=[selected[1]], y=[selected[0]], mode="markers", hoverinfo="skip",
                                 marker={"symbol": "square-open", "size": size + 4,
                                         "line": {"width": 3, "color": "#ff4b4b"}},
                                 name="selected", showlegend=False))
    fig.update_layout(
        title={"text": title, "font": {"size": font_size + 3}}, height=height, width=width,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        font={"size": font_size}, plot_bgcolor="rgba(0,0,0,0)", clickmode="event+select", dragmode=False,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        xaxis={"title": col_title, "type": "category", "categoryorder": "array", "categoryarray": list(col_labels),
               "showgrid": False, "side": "bottom"},
        yaxis={"title": row_title, "type": "category", "categoryorder": "array",
               "categoryarray": list(row_labels), "autorange": "reversed", "showgrid": False})
    return fig


def grid_heatmap(grid: dict, metric: str = "accuracy", title: str | None = None, font_size: int = 12,
                 selected: tuple[str, str] | None = None) -> go.Figure:
    """The stitching heatmap of a grid (``GridResult.to_json()``): sender layers down, receiver layers across."""
    spec = METRICS[metric]
    control = grid.get("control", "none")
    default_title = "real networks" if control == "none" else f"control: {control.replace('-', ' ')}"
    return layer_grid(grid[metric], grid["sender_layers"], grid["receiver_layers"], grid.get("status"),
                      title=title or default_title, row_title=f"sender {grid['sender']} · layer i",
                      col_title=f"receiver {grid['receiver']} · layer j", colorbar=spec["label"],
                      scale=spec["scale"], zrange=spec["range"], hover_name=spec["label"], font_size=font_size,
                      selected=selected)


def reference_profile(grid: dict, font_size: int = 12) -> go.Figure:
    """Stitched accuracy along the receiver's layers, one line per sender layer, with the
    receiver's and the sender's own accuracy as reference lines."""
    fig = go.Figure()
    for i, sender_layer in enumerate(grid["sender_layers"]):
        fig.add_trace(go.Scatter(x=grid["receiver_layers"], y=grid["accuracy"][i], mode="lines+markers",
                                 name=f"from {sender_layer}", connectgaps=False))
    for value, label, dash in ((grid.get("reference_accuracy") or grid.get("receiver_accuracy"),
                                "receiver alone", "dash"), (grid.get("sender_accuracy"), "sender alone", "dot")):
        if value is not None:
            fig.add_hline(y=value, line_dash=dash, line_color="#444",
                          annotation_text=f"{label}: {value:.3f}", annotation_position="bottom right")
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


def cka_heatmap(cka: dict, font_size: int = 12) -> go.Figure:
    """A CKA matrix (``CkaResult.to_json()``) drawn like the stitching heatmap."""
    return layer_grid(cka["cka"], cka["layers_a"], cka["layers_b"], title=f"CKA ({cka.get('kernel', 'linear')})",
                      row_title=f"{cka['model_a']} · layer i", col_title=f"{cka['model_b']} · layer j",
                      colorbar="CKA", zrange=(0.0, 1.0), hover_name="CKA", font_size=font_size)


def agreement_scatter(points: list[dict]) -> go.Figure:
    """CKA against stitched accuracy, one point per cell (``{"cell", "cka", "accuracy"}``)."""
    fig = go.Figure(go.Scatter(
        x=[p["cka"] for p in points], y=[p["accuracy"] for p in points], mode="markers",
        text=[p["cell"] for p in points], marker={"size": 10, "color": [p.get("depth_gap", 0) for p in points],
                                                   "colorscale": "RdBu", "cmid": 0,
                                                   "colorbar": {"title": "sender − receiver depth"}},
        hovertemplate="%{text}<br>CKA %{x:.3f}<br>stitched accuracy %{y:.3f}<extra></extra>"))
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      xaxis={"title": "CKA (representational similarity)", "range": [-0.02, 1.02]},
                      yaxis={"title": "stitched accuracy (functional similarity)", "range": [0, 1.02]})
    return fig
