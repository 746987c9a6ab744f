"""Features page of the dashboard (run by st.navigation in main.py)."""

from dashboard.ui.features_view import render

render()
