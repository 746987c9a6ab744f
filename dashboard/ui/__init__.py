"""Streamlit pages of the dashboard. Each page module has ``render()`` and a tuple
``SECTIONS`` of functions drawn in order: adding a section to a page is adding one function."""
