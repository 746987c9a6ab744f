"""Every ``eegfs`` command, run with a server down, a wrong password and bad values that reach
the libraries: a non-zero exit, one message naming the problem, never a traceback.

The commands are listed from the click app itself: a command without cases here fails
``test_every_command_has_cases``, so a new command cannot be forgotten. Runs are in-process
(click's runner, which returns what a traceback would be as ``result.exception``);
tests/cli/test_cli_output.py runs a few as real subprocesses.

Both servers that require a login are real (redis-server ``--requirepass``, secantusdb
``--auth``); "down" is a port nothing listens on, with a 0.5 s MongoDB timeout.
"""

from __future__ import annotations

import pytest
from cli_testlib import WRONG, assert_clean_failure, leaf_commands, run_cli

OID = "0123456789abcdef01234567"
DOWN = r"does not answer"
AUTH = r"authentication failed"
NO_FILE = r"no such file|does not exist"

#: command -> arguments that make it reach Redis or MongoDB (servers down / wrong password).
SERVER_ARGS: dict[str, list[str]] = {
    "services up": [],
    "doctor": [],
    "features get": ["--subject", "NDARAA000001"],
    "runs list": [],
    "runs show": [OID],
    "runs compare": [OID, OID],
    "runs best": [],
    "runs watch": [OID, "--timeout", "1"],
    "runs reproduce": [OID],
    "models list": [],
    "models show": ["m"],
    "models register": ["m", OID],
    "models alias": ["m", "prod", "1"],
    "models fetch": ["m", "latest"],
    "models predictions": [],
    "predict": ["--model", "m@prod", "--data", "{not_h5}"],
    "subjects show": ["NDARAA000001"],
    "datasets list": [],
    "backup": ["{tmp}/backup"],
    "jobs submit": ["train", "--challenge", "2"],
    "jobs list": [],
    "jobs show": ["abc"],
    "jobs cancel": ["abc"],
    "jobs retry": ["abc"],
    "worker": ["--burst"],
    "workers": [],
    "sweep show": ["s"],
    "sweep list": [],
}
#: Commands that report the servers' state and exit 0 whatever it is (the report names it).
REPORTS = {"services status": []}

#: command -> (arguments, message expected) with the test's own servers up and bad values.
BAD_VALUES: dict[str, list[tuple[list[str], str]]] = {
    "services compose-env": [(["--env-file", "{a_file}/.env"], r"a_file")],
    "services down": [(["--bogus"], r"no such option")],
    "demo-data": [(["--out", "{a_file}", "--no-progress"], r"a_file")],
    "features build": [
        (["--input", "{missing}", "--participants", "{missing}"], NO_FILE),
        (["--input", "{not_h5}", "--participants", "{not_h5}"], r"not_hdf5\.h5"),
    ],
    "features push": [(["--input", "{missing}"], r"no Feast registry|no such file")],
    "features quality": [([], r"no build report")],
    "features apply": [([], r"feature_repo|feature repository|no such")],
    "features materialize": [
        ([], r"no Feast registry|no feature snapshots"),
        (["--end", "yesterday"], r"Invalid value for '--end'"),
    ],
    "features get": [
        (["--subject", "x;y"], r"'x;y'.*letters and digits"),
        (["--subject", "NDARZZZZ0000"], r"no materialization|not in the online store"),
    ],
    "features env": [([], r"contains ','")],
    "runs list": [
        (["--metric", "val_loss<<1"], r"--metric|metric"),
        (["--stale-after", "-1"], r"stale"),
    ],
    "runs show": [(["not-an-id"], r"'not-an-id'.*ObjectId|24")],
    "runs compare": [(["nope", OID], r"'nope'")],
    "runs best": [(["-n", "0"], r"Invalid value for '-n'")],
    "runs watch": [
        (["bad-id", "--timeout", "1"], r"'bad-id'"),
        (["--interval", "-1", "--timeout", "1"], r"interval"),
    ],
    "runs sync": [(["--spool-dir", "{a_file}"], r"a_file")],
    "runs reproduce": [([OID], r"no (experiment|run)|not found")],
    "models show": [(["no-such-model"], r"no-such-model")],
    "models register": [
        (["m", "not-an-oid"], r"'not-an-oid'"),
        (["m", "--run", "not-an-oid"], r"'not-an-oid'"),
        (["m", "--run", OID], r"no run " + OID),
        (["m"], r"either CHECKPOINT_ID or --run"),
        (["m", OID, "--run", OID], r"either CHECKPOINT_ID or --run"),
        (["m", "--run", OID, "--challenge", "2"], r"--challenge goes with --run latest"),
    ],
    "models alias": [(["m", "prod", "x"], r"Invalid value for 'VERSION'|'x'")],
    "models fetch": [(["m", "latest"], r"'m'|no model")],
    "models predictions": [(["--limit", "0"], r"Invalid value for '--limit'")],
    "predict": [
        (["--model", "m@", "--data", "{missing}"], r"--model 'm@': expected NAME"),
        (["--model", "m", "--data", "{missing}", "--batch-size", "0"], r"--batch-size must be"),
        (["--model", "no-such-model@prod", "--data", "{not_h5}"], r"no-such-model"),
    ],
    "subjects sync": [(["--participants", "{not_h5}"], r"not_hdf5\.h5")],
    "subjects show": [(["x;y"], r"'x;y'")],
    "datasets register": [(["{missing}"], NO_FILE), (["{not_h5}"], r"not_hdf5\.h5")],
    "migrate-sqlite": [(["{not_sqlite}"], r"runs\.db")],
    "backup": [(["{a_file}"], r"a_file")],
    "restore": [(["{empty_dir}"], r"empty_dir")],
    "train": [
        (["--challenge", "2", "--data", "{missing}"], NO_FILE),
        (["--challenge", "2", "--data", "{not_h5}"], r"not_hdf5\.h5"),
        (["--challenge", "3", "--data", "{not_h5}"], r"Invalid value for '--challenge'"),
        (["--challenge", "2", "--data", "{not_h5}", "--epochs", "0"], r"--epochs must be >= 1"),
        (["--challenge", "2", "--data", "{not_h5}", "--val-fraction", "2"], r"--val-fraction"),
        (["--challenge", "2", "--data", "{not_h5}", "--device", "tpu"], r"'tpu'"),
    ],
    "worker": [(["--burst", "--max-jobs", "0"], r"--max-jobs must be >= 1")],
    "jobs show": [(["no-such-job"], r"no-such-job")],
    "jobs cancel": [(["no-such-job"], r"no-such-job")],
    "jobs retry": [(["no-such-job"], r"no-such-job")],
    "jobs submit": [
        (["not-a-command"], r"not-a-command"),
        (["--max-attempts", "0", "train", "--challenge", "2"], r"--max-attempts must be"),
    ],
    "sweep create": [
        (
            ["s", "--challenge", "2", "--space", "{bad_yaml}", "--trials", "2"],
            r"space\.yaml",
        ),
        (["s", "--challenge", "2", "--space", "{missing}", "--trials", "2"], NO_FILE),
    ],
    "sweep show": [(["no-such-sweep"], r"no-such-sweep")],
    "dashboard": [(["--port", "0"], r"Invalid value for '--port'")],
}


def _fill(args: list[str], values: dict) -> list[str]:
    return [a.format(**values) for a in args]


def _values(tmp_path, bad_inputs) -> dict:
    return {"tmp": tmp_path, **bad_inputs}


def test_every_command_has_cases():
    covered = set(SERVER_ARGS) | set(REPORTS) | set(BAD_VALUES)
    commands = set(leaf_commands())
    assert commands - covered == set(), "commands without message tests"
    assert covered - commands == set(), "cases for commands that do not exist"


@pytest.mark.parametrize("command", sorted(SERVER_ARGS))
def test_servers_down(command, down_settings, tmp_path, bad_inputs):
    args = _fill(SERVER_ARGS[command], _values(tmp_path, bad_inputs))
    outcome = run_cli([*command.split(), *args], down_settings.to_env())
    assert_clean_failure(outcome, DOWN)
    ports = [down_settings.redis_url.rsplit(":", 1)[1].split("/")[0]]
    ports.append(down_settings.mongo_uri.rsplit(":", 1)[1].split("/")[0])
    assert any(f"127.0.0.1:{p}" in outcome.text for p in ports), outcome.text


@pytest.mark.parametrize("command", sorted(SERVER_ARGS))
def test_wrong_password(command, auth_settings, tmp_path, bad_inputs):
    args = _fill(SERVER_ARGS[command], _values(tmp_path, bad_inputs))
    outcome = run_cli([*command.split(), *args], auth_settings.to_env())
    assert_clean_failure(outcome, AUTH, forbid=(WRONG, "does not answer"))
    assert "***@127.0.0.1" in outcome.text, outcome.text  # the address, password masked


@pytest.mark.parametrize("command", sorted(REPORTS))
def test_reports_name_the_problem(command, down_settings, auth_settings):
    down = run_cli([*command.split(), *REPORTS[command]], down_settings.to_env())
    assert down.exception is None and "Traceback" not in down.text, down.text
    assert "does not answer" in down.text, down.text
    refused = run_cli([*command.split(), *REPORTS[command]], auth_settings.to_env())
    assert refused.exception is None and "Traceback" not in refused.text, refused.text
    assert "authentication failed" in refused.text and WRONG not in refused.text, refused.text


@pytest.mark.parametrize(
    ("command", "case"),
    [(c, i) for c in sorted(BAD_VALUES) for i in range(len(BAD_VALUES[c]))],
)
def test_bad_values(command, case, settings, tmp_path, bad_inputs):
    args, expect = BAD_VALUES[command][case]
    env = settings.to_env()
    if command == "features env":
        env["REDIS_URL"] = "redis://:a%2Cb@127.0.0.1:1/0"
    if command == "features apply":
        env["EEGFS_FEATURE_REPO"] = str(bad_inputs["empty_dir"])
    outcome = run_cli([*command.split(), *_fill(args, _values(tmp_path, bad_inputs))], env)
    assert_clean_failure(outcome, expect, forbid=("a,b",))


def test_train_on_a_foreign_layout_names_no_option_train_lacks(settings, tmp_path):
    """The HDF5 reader's fix names --map (features build has it); `eegfs train` has not."""
    import h5py
    import numpy as np

    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["windows"] = np.zeros((2, 3, 10), dtype=np.float32)
    outcome = run_cli(["train", "--challenge", "2", "--data", str(path)], settings.to_env())
    assert_clean_failure(outcome, r"foreign\.h5.*eegfs train` reads the EEG2025 layouts")
    assert "--map data=" not in outcome.text and "--layout" not in outcome.text, outcome.text


MALFORMED = {
    "REDIS_URL": ("redis://127.0.0.1:notaport/0", r"REDIS_URL .* is not a Redis address"),
    "MONGO_URI": ("mongodb://bad host:x/", r"MONGO_URI .* is not a valid MongoDB address"),
}


@pytest.mark.parametrize(
    ("key", "command"),
    [("REDIS_URL", c) for c in ("jobs list", "worker", "sweep list", "features get")]
    + [("MONGO_URI", c) for c in ("runs list", "subjects show", "models list", "backup")],
)
def test_malformed_addresses(key, command, settings, tmp_path, bad_inputs):
    args = _fill(SERVER_ARGS[command], _values(tmp_path, bad_inputs))
    value, expect = MALFORMED[key]
    outcome = run_cli([*command.split(), *args], {**settings.to_env(), key: value})
    assert_clean_failure(outcome, expect)
