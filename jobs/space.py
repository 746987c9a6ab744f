"""Search-space files of sweeps (YAML), turned into Optuna distributions, samplers and pruners.

Format (docs/jobs.md has the full description; ``docs/sweep_space.example.yaml`` an example)::

    train:                 # fixed `eegfs train` options of every trial (name: value)
      data: [data/demo/challenge2_R1.h5, data/demo/challenge2_R2.h5]
      epochs: 4
      workers: 0
    params:                # searched options: name -> distribution
      lr: {type: float, low: 0.0005, high: 0.01, log: true}
      batch_size: {type: categorical, choices: [16, 32]}
      seed: {type: int, low: 0, high: 3}

Option names are those of ``eegfs train`` without the dashes (``batch_size`` or
``batch-size``); a list value repeats the option, ``true`` is a flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from jobs.errors import SweepError

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("none", "median")
#: Options a sweep sets itself; a space file may not set or search them.
RESERVED = ("challenge", "resume", "name", "tag", "upload_checkpoints", "no_progress")
#: Grid search enumerates at most this many points.
MAX_GRID_POINTS = 10_000


@dataclass(frozen=True)
class Space:
    """A parsed search-space file."""

    train: dict[str, Any]
    params: dict[str, dict[str, Any]]

    def distributions(self) -> dict[str, BaseDistribution]:
        return {name: _distribution(name, spec) for name, spec in self.params.items()}

    def grid(self) -> dict[str, list[Any]]:
        """Every value of every parameter (grid sampler): categorical, or int/float with step."""
        grid = {name: _grid_values(name, spec) for name, spec in self.params.items()}
        size = 1
        for values in grid.values():
            size *= len(values)
        if size > MAX_GRID_POINTS:
            raise SweepError(f"the grid has {size} points, more than {MAX_GRID_POINTS}")
        return grid

    def to_dict(self) -> dict[str, Any]:
        return {"train": self.train, "params": self.params}


def _option(name: Any, path: Path) -> str:
    if not isinstance(name, str) or not name.replace("-", "_").replace("_", "").isalnum():
        raise SweepError(f"{path}: option name {name!r} is not an `eegfs train` option name")
    key = name.replace("-", "_")
    if key in RESERVED:
        raise SweepError(
            f"{path}: {name!r} is set by the sweep itself (reserved: {', '.join(RESERVED)})"
        )
    return key


def load_space(path: str | Path) -> Space:
    """Read and check a search-space file.

    Raises
    ------
    SweepError
        Naming the file and the bad entry, for anything that is not the documented format.
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SweepError(f"cannot read the search space {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SweepError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict) or not doc["params"]:
        raise SweepError(
            f"{path}: expected a mapping with `params:` (option -> distribution) and optional "
            "`train:` (fixed options); see docs/jobs.md"
        )
    unknown = sorted(set(doc) - {"train", "params"})
    if unknown:
        raise SweepError(f"{path}: unknown top-level keys {unknown}; expected train and params")
    train = doc.get("train") or {}
    if not isinstance(train, dict):
        raise SweepError(f"{path}: `train:` must map option names to values")
    space = Space(
        train={_option(k, path): v for k, v in train.items()},
        params={_option(k, path): v for k, v in doc["params"].items()},
    )
    both = sorted(set(space.train) & set(space.params))
    if both:
        raise SweepError(f"{path}: {both} are both fixed (train:) and searched (params:)")
    for name, spec in space.params.items():
        try:
            _distribution(name, spec)
        except (TypeError, ValueError) as exc:
            raise SweepError(f"{path}: params.{name}: {exc}") from exc
    return space


def _distribution(name: str, spec: Any) -> BaseDistribution:
    if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
        raise ValueError(
            f"{spec!r} is not a distribution; use {{type: float|int, low: L, high: H[, log: "
            "true][, step: S]}} or {type: categorical, choices: [...]}"
        )
    kind = spec["type"]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError("a categorical parameter needs a non-empty `choices:` list")
        return CategoricalDistribution(choices)
    low, high = spec.get("low"), spec.get("high")
    if low is None or high is None:
        raise ValueError(f"a {kind} parameter needs `low:` and `high:`")
    log, step = bool(spec.get("log", False)), spec.get("step")
    if kind == "int":
        return IntDistribution(int(low), int(high), log=log, step=int(step or 1))
    return FloatDistribution(
        float(low), float(high), log=log, step=None if step is None else float(step)
    )


def _grid_values(name: str, spec: dict[str, Any]) -> list[Any]:
    dist = _distribution(name, spec)
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        return list(range(dist.low, dist.high + 1, dist.step))
    if dist.step is None:
        raise SweepError(
            f"the grid sampler needs `step:` (or categorical choices) for params.{name}"
        )
    count = int(round((dist.high - dist.low) / dist.step)) + 1
    return [round(dist.low + i * dist.step, 12) for i in range(count)]


def train_options(values: dict[str, Any]) -> list[str]:
    """``eegfs train`` arguments for option values (lists repeat the option, true is a flag)."""
    argv: list[str] = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def make_sampler(name: str, space: Space, seed: int | None):
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    raise SweepError(f"--sampler must be one of {SAMPLERS}, got {name!r}")


def make_pruner(name: str, startup_trials: int, warmup_epochs: int):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SweepError(f"--pruner must be one of {PRUNERS}, got {name!r}")


__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "Space",
    "load_space",
    "make_pruner",
    "make_sampler",
    "train_options",
]
