"""Lesson: the seed paper's finding, step by step, on the bundled zoo (large type for a projector).

Every number and comparison the text states is computed from the lesson's data (ui/lesson_text.py)."""

import streamlit as st

from core.runs.lesson import read_lesson
from ui import charts, lesson, navigation, presenter
from ui import lesson_text as say
from ui.analysis import agreement
from ui.grid_view import column_width, plot

navigation.through_app()

lesson.projector_mode()
presenter.keep("step")  # the steps are how a lesson moves on, also on a projector
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

if step == STEPS[0]:
    st.title("Do two networks see the world the same way?")
    st.markdown(say.intro(deeper) + " *Model stitching* asks it directly: keep the first part of one network (the "
                "*sender*), the last part of another (the *receiver*), and train only a tiny **stitch** between "
                "them. If the stitched network still classifies well, the receiver can use what the sender computed.")
    st.graphviz_chart(lesson.stitching_diagram())
    st.markdown("Both networks stay frozen: only the stitch (one small convolution) learns.")
elif step == STEPS[1]:
    st.title("Two seeds of the same network")
    st.markdown(say.seeds_text(grids["seeds"]))
    lesson.show_grid(grids["seeds"], font)
    st.markdown(say.layer_names(grids["seeds"], deeper))
elif step == STEPS[2]:
    st.title("A later layer feeds an earlier one")
    st.markdown(say.deeper_text(deeper))
    lesson.show_grid(deeper, font)
    st.markdown(say.outlier_text(deeper, grids.get("deeper_lstsq")))
elif step == STEPS[3]:
    st.title("Is it the networks, or the stitch?")
    st.markdown("A stitch is trained, so maybe it does all the work. Controls: the same grid, the stitch trained "
                "the same way, but the sender, the receiver or both replaced by networks with random weights, "
                "never trained. " + say.controls_text(grids))
    keys = ["deeper", "deeper_random_sender", "deeper_random_receiver", "deeper_random_both"]
    for column, key in zip(st.columns(4), keys):
        with column:
            plot(lesson.grid_figure(grids[key], font_size=11, width=column_width(4)), key)
            st.metric("mean accuracy", say.fmt(say.mean_accuracy(grids[key])))
    lesson.small(say.recipe_caption(deeper))
elif step == STEPS[4]:
    st.title("What does CKA say?")
    points, rho = agreement(material["cka"], deeper)
    st.markdown(say.scatter_text(points, rho, deeper))
    left, right = st.columns(2)
    plot(charts.cka_heatmap(material["cka"], font_size=font, width=column_width(2),
                            max_grid_height=lesson.slide_grid_height()), where=left)
    plot(lesson.mark_point(charts.agreement_scatter(points), say.example_point(points)), where=right)
elif step == STEPS[5]:
    st.title("Imitating is not the same as working")
    st.markdown(say.lstsq_text(grids["deeper_lstsq"], deeper))
    left, right = st.columns(2)
    with left:
        lesson.show_grid(deeper, 11, column_width(2), "lesson_trained")
    with right:
        lesson.show_grid(grids["deeper_lstsq"], 11, column_width(2), "lesson_lstsq")
    lesson.run_yourself(grids["deeper_lstsq"], material["made_with"])
if step != STEPS[0]:
    st.info(say.sanity_note(grids["seeds"]))
st.caption(f"Computed with `{material['made_with']['command']}` on {material['made_with']['device']}, "
           f"{material['made_with']['date'][:10]}.")
