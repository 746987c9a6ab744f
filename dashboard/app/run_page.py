"""Run page of the dashboard (run by st.navigation in main.py)."""

from dashboard.ui.run_view import render

render()
