"""Synthetic EEG2025-like demo data: HDF5 window files in both cache layouts + participants.tsv.

Not a pipeline: it writes the inputs that the pipelines read. :mod:`demodata.synthetic_eeg` holds
the pure NumPy/SciPy signal generators, :mod:`demodata.writer` writes the files
(:func:`demodata.writer.write_demo_data`, ``eegfs demo-data``). May import ``services`` and
``pipelines``; nothing of ours imports it except the CLI, tests and benchmarks.
"""
