"""Streamlit scripts: ``main.py`` (the entry point) and one thin script per page."""
