"""Search-space files of sweeps: every malformed entry is refused naming the file and the entry;
grids, samplers and pruners are the Optuna objects the options name."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from jobs.errors import SweepError
from jobs.space import MAX_GRID_POINTS, load_space, make_pruner, make_sampler, train_options


def _space(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_space(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("params: [1, 2]\n", "expected a mapping with `params:`"),
        ("params: {}\n", "expected a mapping with `params:`"),
        ("params: {lr: {type: float, low: 0, high: 1}}\nextra: 1\n", "unknown top-level keys"),
        ("train: [1]\nparams: {lr: {type: float, low: 0, high: 1}}\n", "`train:` must map"),
        ("params: {'bad name!': {type: int, low: 0, high: 1}}\n", "is not an `eegfs train`"),
        ("params: {3: {type: int, low: 0, high: 1}}\n", "is not an `eegfs train`"),
        (
            "train: {lr: 0.1}\nparams: {lr: {type: float, low: 0, high: 1}}\n",
            r"\['lr'\] are both fixed",
        ),
        ("params: {lr: 0.1}\n", "params.lr: 0.1 is not a distribution"),
        ("params: {lr: {type: normal}}\n", "is not a distribution"),
        ("params: {bs: {type: categorical, choices: []}}\n", "needs a non-empty `choices:`"),
        ("params: {bs: {type: int, high: 3}}\n", "needs `low:` and `high:`"),
        ("params: {lr: {type: float, low: 1, high: 0}}\n", "params.lr:"),
        ("params: {lr: [unclosed\n", "is not valid YAML"),
    ],
)
def test_malformed_space_files_are_refused_naming_the_entry(tmp_path, text, message):
    with pytest.raises(SweepError, match=message) as info:
        _space(tmp_path, text)
    assert "space.yaml" in str(info.value)


def test_missing_space_file_is_named(tmp_path):
    with pytest.raises(SweepError, match=r"cannot read the search space .*nope\.yaml"):
        load_space(tmp_path / "nope.yaml")


def test_distributions_and_grid_follow_the_file(tmp_path):
    space = _space(
        tmp_path,
        "train: {batch-size: 16, no_normalize: false}\n"
        "params:\n"
        "  lr: {type: float, low: 0.001, high: 0.003, step: 0.001}\n"
        "  seed: {type: int, low: 0, high: 4, step: 2}\n"
        "  model: {type: categorical, choices: [eegnex, mlp]}\n",
    )
    dists = space.distributions()
    assert dists["lr"] == FloatDistribution(0.001, 0.003, step=0.001)
    assert dists["seed"] == IntDistribution(0, 4, step=2)
    assert dists["model"] == CategoricalDistribution(["eegnex", "mlp"])
    assert space.grid() == {
        "lr": [0.001, 0.002, 0.003],
        "seed": [0, 2, 4],
        "model": ["eegnex", "mlp"],
    }
    assert train_options(space.train) == ["--batch-size", "16"]
    assert space.to_dict()["params"]["seed"] == {"type": "int", "low": 0, "high": 4, "step": 2}


def test_grid_needs_steps_and_stays_bounded(tmp_path):
    no_step = _space(tmp_path, "params: {lr: {type: float, low: 0.001, high: 0.01, log: true}}\n")
    with pytest.raises(SweepError, match="needs `step:`.*params.lr"):
        no_step.grid()
    huge = _space(
        tmp_path,
        "params:\n  a: {type: int, low: 0, high: 999}\n  b: {type: int, low: 0, high: 99}\n",
    )
    with pytest.raises(SweepError, match=f"more than {MAX_GRID_POINTS}"):
        huge.grid()


def test_samplers_and_pruners_by_name(tmp_path):
    space = _space(tmp_path, "params: {seed: {type: int, low: 0, high: 2}}\n")
    assert isinstance(make_sampler("tpe", space, 0), optuna.samplers.TPESampler)
    assert isinstance(make_sampler("random", space, 0), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler("grid", space, 0), optuna.samplers.GridSampler)
    with pytest.raises(SweepError, match="--sampler must be one of"):
        make_sampler("cmaes", space, 0)
    assert isinstance(make_pruner("median", 2, 1), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("none", 2, 1), optuna.pruners.NopPruner)
    with pytest.raises(SweepError, match="--pruner must be one of"):
        make_pruner("hyperband", 2, 1)
