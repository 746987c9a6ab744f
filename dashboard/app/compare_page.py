"""Compare page of the dashboard (run by st.navigation in main.py)."""

from dashboard.ui.compare_view import render

render()
