"""StitchLab: the Streamlit entry point. Navigation, the shared sidebar, nothing heavy."""

import streamlit as st

from ui import grids, navigation, presenter
from ui.state import run_page, sidebar

st.set_page_config(page_title="StitchLab", page_icon=":material/join:", layout="wide")

page = st.navigation(list(navigation.pages().values()))
grids.apply_pending_settings(navigation.name_of(page))
st.session_state.selection = sidebar()
presenter.apply()
run_page(page)  # a store fault (full disk, read-only, damaged file) shows as one line, not a traceback
