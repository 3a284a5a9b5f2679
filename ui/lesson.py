"""The Lesson page's pieces: big type for a projector, the stitching diagram, and the numbers
the text quotes (always computed from the lesson's data, never typed in)."""

from __future__ import annotations

import streamlit as st

from core.engine.results import region_means

PROJECTOR_CSS = """
<style>
section.main p, section.main li, [data-testid="stMarkdownContainer"] p,
[data-testid="stMarkdownContainer"] li { font-size: 1.3rem !important; line-height: 1.55 !important; }
[data-testid="stMetricValue"] { font-size: 2.4rem !important; }
h1 { font-size: 2.8rem !important; } h2 { font-size: 2.1rem !important; }
</style>
"""


def projector_mode() -> None:
    st.markdown(PROJECTOR_CSS, unsafe_allow_html=True)


def stitching_diagram(sender_layers: int = 4, receiver_layers: int = 4, cut_sender: int = 3,
                      cut_receiver: int = 2) -> str:
    """Graphviz DOT of a stitched network: sender up to layer i, stitch, receiver from layer j."""
    lines = ["digraph G {", "rankdir=LR; node [shape=box, style=rounded, fontname=Helvetica];"]
    for k in range(1, sender_layers + 1):
        style = "filled, rounded" if k <= cut_sender else "dashed, rounded"
        lines.append(f's{k} [label="sender\\nlayer {k}", style="{style}", fillcolor="#cfe2f3"];')
    for k in range(1, receiver_layers + 1):
        style = "filled, rounded" if k > cut_receiver else "dashed, rounded"
        lines.append(f'r{k} [label="receiver\\nlayer {k}", style="{style}", fillcolor="#fce5cd"];')
    lines.append('stitch [label="stitch\\n(the only part\\nthat trains)", style="filled, rounded", '
                 'fillcolor="#d9ead3", shape=box];')
    lines.append('img [label="image", shape=note]; out [label="class", shape=ellipse];')
    lines.append("img -> s1; img -> r1 [style=dotted];")
    lines += [f"s{k} -> s{k + 1}" + (";" if k < cut_sender else " [style=dotted];") for k in range(1, sender_layers)]
    lines += [f"r{k} -> r{k + 1}" + (";" if k >= cut_receiver else " [style=dotted];")
              for k in range(1, receiver_layers)]
    lines.append(f"s{cut_sender} -> stitch -> r{cut_receiver + 1};")
    lines.append(f"r{receiver_layers} -> out;")
    lines.append("}")
    return "\n".join(lines)


def depth_regions(grid: dict) -> dict:
    """Mean stitched accuracy where the sender layer is relatively deeper than the receiver layer
    (``lower_left``: later into earlier), shallower (``upper_right``) and as deep (``diagonal``)."""
    return region_means(grid["accuracy"])


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def mean_accuracy(grid: dict) -> float | None:
    values = [v for row in grid["accuracy"] for v in row if v is not None]
    return sum(values) / len(values) if values else None
