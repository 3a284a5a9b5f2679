"""StitchLab: the Streamlit entry point. Navigation, the shared sidebar, nothing heavy."""

import streamlit as st

from ui.state import sidebar

st.set_page_config(page_title="StitchLab", page_icon=":material/join:", layout="wide")

# Material icons ship with Streamlit's frontend (emoji would need fonts a classroom PC may lack).
PAGES = [
    st.Page("pages/stitching.py", title="Stitching", icon=":material/join:", default=True),  # served at /
    st.Page("pages/cka.py", title="CKA", icon=":material/compare_arrows:", url_path="cka"),
    st.Page("pages/attributions.py", title="Attributions", icon=":material/visibility:", url_path="attributions"),
    st.Page("pages/models.py", title="Models", icon=":material/neurology:", url_path="models"),
    st.Page("pages/runs.py", title="Runs", icon=":material/history:", url_path="runs"),
    st.Page("pages/sweeps.py", title="Sweeps", icon=":material/grid_view:", url_path="sweeps"),
    st.Page("pages/lesson.py", title="Lesson", icon=":material/school:", url_path="lesson"),
]

page = st.navigation(PAGES)
st.session_state.selection = sidebar()
page.run()
