"""The live web dashboard: runs, curves, comparisons, models, features and services.

A Streamlit app (``eegfs dashboard``, see docs/dashboard.md) at the top of the layering: it
reads what ``tracking`` records in MongoDB, the live state ``training`` publishes on Redis and
the feature snapshots ``pipelines`` writes, and nothing imports it.

Layout: the page data are plain functions taking database/Redis handles and returning
DataFrames or dicts (``runs``, ``run_detail``, ``compare``, ``models``, ``features``,
``health``), testable without Streamlit; ``charts`` and ``topomap`` turn them into figures;
``ui`` holds the Streamlit pages and ``app`` their entry script; ``server`` starts Streamlit.
Every name taken from the other packages is imported in ``sources``.

The dashboard never writes to MongoDB or Redis and never unpickles what it reads.
"""
