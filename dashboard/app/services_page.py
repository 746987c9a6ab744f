"""Services page of the dashboard (run by st.navigation in main.py)."""

from dashboard.ui.services_view import render

render()
