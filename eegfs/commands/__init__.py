"""Command groups of the ``eegfs`` CLI, and the few helpers they share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.console import Console

    from pipelines.hdf5_layout import H5Layout

#: Width of tables when stdout is not a terminal (CI logs, pipes, CliRunner): rich would wrap at
#: 80 columns and split ids over two lines.
PIPE_WIDTH = 200


def console() -> Console:
    """A rich console on the current stdout; ``PIPE_WIDTH`` columns wide when it is not a TTY."""
    from rich.console import Console

    out = Console()
    if not out.is_terminal:
        out = Console(width=max(out.width, PIPE_WIDTH))
    return out


def parse_layout(layout: str | None, mapping: Sequence[str]) -> H5Layout | None:
    """The HDF5 layout chosen by ``--layout NAME`` and ``--map KEY=DATASET`` options.

    None means "detect per file". Raises :class:`click.UsageError` for a malformed ``--map``.
    """
    from pipelines.hdf5_layout import KNOWN_LAYOUTS, layout_from_mapping

    lay = KNOWN_LAYOUTS[layout] if layout else None
    if not mapping:
        return lay
    pairs = {}
    for item in mapping:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise click.UsageError(f"--map expects KEY=DATASET, got {item!r}")
        pairs[key.strip()] = value.strip()
    try:
        return layout_from_mapping(pairs, base=lay)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


__all__ = ["PIPE_WIDTH", "console", "parse_layout"]


def layout_options(command):
    """``--layout``, ``--map KEY=DATASET`` and ``--sfreq``: how to read an HDF5 window file.

    Shared by every command that opens HDF5 files, so they accept the same files; turn the
    values into a layout with :func:`parse_layout`.
    """
    command = click.option(
        "--sfreq",
        type=float,
        default=None,
        help="Sampling rate (Hz) for files without an sfreq attribute.",
    )(command)
    command = click.option(
        "--map",
        "mapping",
        multiple=True,
        metavar="KEY=DATASET",
        help="Explicit dataset names: data=, subjects=, challenge=1|2, label:<name>= (repeatable).",
    )(command)
    return click.option(
        "--layout",
        type=click.Choice(["challenge1", "challenge2"]),
        default=None,
        help="Force a known layout instead of detecting it per file.",
    )(command)
