"""Entry script of the dashboard: ``streamlit run dashboard/app/main.py`` (``eegfs dashboard``).

Only the pages live in this folder, because Streamlit puts the entry script's folder first on
``sys.path``: a module here named like a library module would shadow it.
"""

import streamlit as st

st.set_page_config(page_title="EEG feature store", page_icon=":material/neurology:", layout="wide")
pages = [
    st.Page("runs_page.py", title="Runs", icon=":material/table_rows:", default=True),
    st.Page("run_page.py", title="Run", icon=":material/show_chart:", url_path="run"),
    st.Page("compare_page.py", title="Compare", icon=":material/compare:", url_path="compare"),
    st.Page("models_page.py", title="Models", icon=":material/inventory_2:", url_path="models"),
    st.Page(
        "features_page.py", title="Features", icon=":material/scatter_plot:", url_path="features"
    ),
    st.Page(
        "services_page.py", title="Services", icon=":material/monitor_heart:", url_path="services"
    ),
]
st.navigation(pages).run()
