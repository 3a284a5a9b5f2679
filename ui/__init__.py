"""Streamlit helpers shared by the pages: state and sidebar, jobs, charts, views.

Pages stay thin (read widgets, call core, render); what several pages need lives here.
Nothing in ui/ imports torch: drawing a stored result must stay fast.
"""
