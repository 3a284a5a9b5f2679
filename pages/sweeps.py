"""Sweeps: many grids (e.g. every pair of the paper's ResNets, with controls), their progress and summary."""

import streamlit as st

from ui import navigation
from ui import sweeps as view
from ui.grid_view import plot
from ui.state import store
from ui.text import plain

navigation.through_app()

st.title("Sweeps")
st.caption("A sweep runs one stitching grid per (sender, receiver, control). It is started from the command line, "
           "in this process or on a Ray cluster, and this page follows it.")
st.code("python -m core sweep --models 'zoo/resnet_*-s0' --pairs all --controls none,random-both \\\n"
        "    --mode train --epochs 1 --name zoo-all          # add --executor ray --ray-address HEAD:6379",
        language="bash")

sweeps = store().list_runs(kind="sweep")
if not sweeps:
    st.info("No sweep in the store yet: start one with the command above (it uses the same store as this app).")
    st.stop()
ids = [s["id"] for s in sweeps]
sweep_id = st.selectbox("Sweep (run id)", ids, key="sweep", bind="query-params")
chosen = next(s for s in sweeps if s["id"] == sweep_id)
st.caption(f"{plain(chosen['name'] or 'unnamed')} · {chosen['status']}")
view.progress(sweep_id)
with st.expander("Grids"):
    st.dataframe(view.grids_table(sweep_id), hide_index=True)

st.subheader("Later layers into earlier ones, across every grid")
st.caption("Relative depth: a layer's position in its network, 0 = first stitched layer, 1 = last. Each cell of a "
           "heatmap averages the stitched accuracy of every grid cell whose layers fall in those depth ranges.")
rows = view.effect_rows(sweep_id)
if not rows:
    st.info("No grid of this sweep has finished yet.")
    st.stop()
st.dataframe(rows, hide_index=True)
figures = view.depth_heatmaps(sweep_id)
for column, (control, figure) in zip(st.columns(len(figures)), figures.items()):
    plot(figure, f"depth_{control}", column)
