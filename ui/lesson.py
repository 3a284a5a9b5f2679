"""The Lesson page's pieces: big type for a projector, the stitching diagram, the bundled grids
with their diagonal, and the way to rerun one. What the text says is :mod:`ui.lesson_text`."""

from __future__ import annotations

import streamlit as st

from core.runs import recipes

from . import charts, lesson_text, navigation, presenter
from .grid_view import plot
from .grids import settings_of, training_and_test_words, use_settings

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


def grid_figure(grid: dict, font_size: int = 12, width: int | None = None):
    """A bundled grid's heatmap with its relative-depth diagonal drawn on it."""
    fig = charts.grid_heatmap(grid, font_size=font_size, **({"width": width} if width else {}),
                              max_grid_height=slide_grid_height())
    return charts.add_depth_diagonal(fig, len(grid["sender_layers"]), len(grid["receiver_layers"]))


def slide_grid_height() -> int:
    """How tall a grid's cells may be: less on a projected slide, under the step's text."""
    return charts.SLIDE_GRID_HEIGHT if presenter.active() else charts.MAX_GRID_HEIGHT


def show_grid(grid: dict, font_size: int, width: int | None = None, key: str | None = None) -> None:
    """A bundled grid, its diagonal drawn, with how it was made and its diagonal's numbers beside it:
    what the paper's recipe gives, to be read as such."""
    plot(grid_figure(grid, font_size, width), key, square=True)
    small(lesson_text.recipe_caption(grid))


def small(text: str) -> None:
    """Small print that stays on a projected slide (a caption would be hidden there)."""
    st.markdown(f"<small>{text}</small>", unsafe_allow_html=True)


def mark_point(fig, point: dict | None):
    """Point at the scatter's dot that the text explains."""
    if point is not None:
        fig.add_annotation(x=point["cka"], y=point["accuracy"], text=point["cell"], showarrow=True, arrowhead=2,
                           ax=-60, ay=40, font={"size": 14}, bgcolor="rgba(255,255,255,0.8)")
    return fig


# How long a grid of the zoo's default pair takes on a CPU, by (recipe, budget); the GPU's time is
# in the lesson's data. Instant on every image: 786 s wall, 397 CPU-seconds, on two CPU cores that
# other work shared (2026-12-01, `python -m core grid zoo/resnet_1111-s0 zoo/resnet_2222-s0
# --recipe instant --budget full --device cpu`). Instant, Quick: 10.7–15.2 s on two idle cores
# (BENCHMARKS.md: bench.grid_lstsq, bench.recipes).
CPU_TIMES = {("instant", "full"): "several minutes on a two-core CPU",
             ("instant", "quick"): "10–17 s on a two-core CPU"}


def run_yourself(grid: dict, made_with: dict) -> None:
    """Rerun a bundled grid on the Stitching page, saying how long it takes: its own settings and,
    when those use every image, the Quick budget (smaller, for a CPU)."""
    full = settings_of(grid["config"])
    if full is None:
        return
    recipe, budget = recipes.recipe_of(grid["config"])
    on_cpu = CPU_TIMES.get((recipe.key, budget.key))
    left, right = st.columns(2)
    with left:
        if st.button("Run this grid yourself", icon=":material/play_arrow:", on_click=use_settings, args=(full,)):
            navigation.switch_to("stitching")
        st.markdown(f"{recipe.label} on {_images(budget)}, as here: "
                    f"{grid.get('seconds', 0):.0f} s on the {made_with.get('device', 'machine')} that built the "
                    f"lesson" + (f"; {on_cpu}." if on_cpu else "."))
    quick = recipes.BUDGETS["quick"]
    if budget.key == quick.key:
        return
    with right:
        if st.button("Run a CPU-sized version", icon=":material/play_arrow:", on_click=use_settings,
                     args=({**full, "budget": quick.label},)):
            navigation.switch_to("stitching")
        on_cpu = CPU_TIMES.get((recipe.key, quick.key))
        st.markdown(f"The same recipe on {_images(quick)}" + (f": {on_cpu}" if on_cpu else "") +
                    ". Smaller, so its numbers differ a little from these.")


def _images(budget: recipes.Budget) -> str:
    return training_and_test_words(budget.settings.get("train_limit"), budget.settings.get("eval_limit"),
                                   "every training and test image")
