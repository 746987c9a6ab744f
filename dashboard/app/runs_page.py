"""Runs page of the dashboard (run by st.navigation in main.py)."""

from dashboard.ui.runs_view import render

render()
