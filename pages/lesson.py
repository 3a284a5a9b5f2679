"""Lesson: the seed paper's finding, step by step, on the bundled zoo (large type for a projector)."""

import streamlit as st

from core.runs.lesson import read_lesson
from ui import charts, lesson
from ui.analysis import agreement
from ui.grid_view import plot
from ui.grids import settings_of

lesson.projector_mode()
material = read_lesson()
if material is None:
    st.title("Lesson")
    st.error("The lesson's material (assets/lesson/lesson.json) is missing: build it with "
             "`python -m core lesson build` (minutes on a GPU, longer on a CPU).")
    st.stop()
grids, font = material["grids"], 16
STEPS = ["1 · The question", "2 · Same architecture, two seeds", "3 · Later into earlier",
         "4 · Random controls", "5 · What CKA says", "6 · Imitating is not the same as working"]
step = st.radio("Step", STEPS, key="step", bind="query-params", horizontal=True, label_visibility="collapsed")
deeper = grids["deeper"]
regions = lesson.depth_regions(deeper)

if step == STEPS[0]:
    st.title("Do two networks see the world the same way?")
    st.markdown("Two networks trained on the same clothes pictures both reach about 93 % accuracy. "
                "**Do they compute the same things inside?** *Model stitching* asks it directly: keep the first "
                "part of one network (the *sender*), the last part of another (the *receiver*), and train only a "
                "tiny **stitch** between them. If the stitched network still classifies well, the receiver can use "
                "what the sender computed.")
    st.graphviz_chart(lesson.stitching_diagram())
    st.markdown("Both networks stay frozen: only the stitch (one small convolution) learns.")
elif step == STEPS[1]:
    st.title("Two seeds of the same network")
    same = lesson.depth_regions(grids["seeds"])["diagonal"]
    st.markdown("Same architecture, different random start. Each square: the accuracy of *sender up to layer i → "
                "stitch → receiver from layer j*. The diagonal (same layer into same layer) works: the two copies "
                f"compute interchangeable things (diagonal mean **{lesson.fmt(same)}**).")
    plot(charts.grid_heatmap(grids["seeds"], font_size=font), square=True)
elif step == STEPS[2]:
    st.title("A later layer feeds an earlier one")
    st.markdown(f"Now the receiver is deeper (ResNet-2222). Below the diagonal the sender's layer is *deeper* than "
                f"the receiver's: mean accuracy **{lesson.fmt(regions['lower_left'])}**. Above it, the "
                f"sender is *shallower*: **{lesson.fmt(regions['upper_right'])}**. The seed paper (Hernandez "
                f"et al. 2023) found the same: a later sender layer stitches well into an earlier receiver layer, "
                f"the reverse does not.")
    plot(charts.grid_heatmap(deeper, font_size=font), square=True)
elif step == STEPS[3]:
    st.title("Is it the networks, or the stitch?")
    st.markdown("A stitch is trained, so maybe it does all the work. Controls: the same grid with a randomly "
                "initialised sender, receiver, or both. What stays high without training means little.")
    keys = ["deeper", "deeper_random_sender", "deeper_random_receiver", "deeper_random_both"]
    for column, key in zip(st.columns(4), keys):
        with column:
            plot(charts.grid_heatmap(grids[key], font_size=11), key)
            st.metric("mean accuracy", lesson.fmt(lesson.mean_accuracy(grids[key])))
elif step == STEPS[4]:
    st.title("What does CKA say?")
    points, rho = agreement(material["cka"], deeper)
    st.markdown("CKA measures whether two layers *represent* the images alike, with no training at all. "
                f"Across this grid it ranks the cells with a Spearman correlation of **{lesson.fmt(rho)}** to "
                "stitching accuracy: the two notions of similarity are related, but not the same.")
    left, right = st.columns(2)
    plot(charts.cka_heatmap(material["cka"], font_size=font), where=left)
    plot(charts.agreement_scatter(points), where=right)
else:
    st.title("Imitating is not the same as working")
    lstsq = lesson.depth_regions(grids["deeper_lstsq"])
    st.markdown("A *least-squares* stitch is made to **imitate** the receiver's own activation at layer j. Below "
                f"the diagonal it reaches only **{lesson.fmt(lstsq['lower_left'])}** on average, where the "
                f"task-trained stitch reached **{lesson.fmt(regions['lower_left'])}**: the trained stitch "
                "found *something else that works*. The seed paper's warning: high stitching accuracy alone does "
                "not prove the two layers represent the same thing.")
    plot(charts.grid_heatmap(grids["deeper_lstsq"], font_size=font), square=True)
    settings = settings_of(deeper["config"])
    if settings:
        st.page_link("pages/stitching.py", label="Run it yourself on the Stitching page", icon=":material/play_arrow:",
                     query_params=settings)
st.caption(f"Computed with `{material['made_with']['command']}` on {material['made_with']['device']}, "
           f"{material['made_with']['date'][:10]}.")
