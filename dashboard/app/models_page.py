"""Models page of the dashboard (run by st.navigation in main.py)."""

from dashboard.ui.models_view import render

render()
