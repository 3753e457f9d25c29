"""The population path of the search: ask-and-tell bookkeeping, user attrs, the CLI."""

from __future__ import annotations

import json

import optuna
import pytest
import torch
from optuna.trial import TrialState

from automlp.data import to_tensors
from automlp.report.summary import summarize
from automlp.search import run_search
from automlp.search.trial import replay, round_curve
from automlp.spec import validate_spec_dict
from tests.conftest import write_spec

SEQUENTIAL_ATTRS = {"seed", "n_params", "widths", "architecture", "n_epochs", "best_epoch", "stop_reason",
                    "train_time_s", "curves", "val_metrics"}  # fmt: skip

pytestmark = pytest.mark.filterwarnings("ignore:grad and param do not obey the gradient layout contract")


def spec_dict(tmp_path, population, n_trials=8, dropout=None):
    return {
        "data": {"dataset": "sklearn:iris", "split_seed": 3},
        "space": {"depth": [1, 2], "width": {"low": 8, "high": 32}, "optimizer": ["adam", "sgd"],
                  "lr": {"low": 1e-3, "high": 3e-2, "log": True}, "batch_size": 16, "max_epochs": 8,
                  "dropout": {"low": 0.0, "high": 0.2} if dropout is None else dropout},
        "training": {"population": population, "early_stopping": {"patience": 3}},
        "study": {"name": "iris_pop", "n_trials": n_trials, "seed": 2,
                  "pruner": {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 2}},
        "output": {"dir": str(tmp_path / "studies")},
    }  # fmt: skip


def test_population_trials_are_ordinary_trials(tmp_path):
    spec = validate_spec_dict(spec_dict(tmp_path, population=4))
    outcome = run_search(spec)
    trials = outcome.study.trials
    assert len(trials) == 8
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    # freed slots were refilled with trials of the same structure, trained in the stack's batch order
    stacks = {t.user_attrs["population"]["batch_seed"] for t in trials}
    assert len(stacks) < 8
    by_seed = {}
    for t in trials:
        by_seed.setdefault(t.user_attrs["population"]["batch_seed"], set()).add(
            (t.params["depth"], t.params["optimizer"]))
    assert all(len(keys) == 1 for keys in by_seed.values()), by_seed
    for t in trials:
        assert SEQUENTIAL_ATTRS <= set(t.user_attrs)
        assert t.user_attrs["population"]["size"] == 4
        curves = t.user_attrs["curves"]
        assert len(curves["val_score"]) == t.user_attrs["n_epochs"]
        assert t.intermediate_values == {e + 1: pytest.approx(v, rel=1e-4) for e, v in enumerate(curves["val_score"])}
        if t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(curves["val_score"][t.user_attrs["best_epoch"] - 1], rel=1e-4)
    assert summarize(outcome, spec)["best"]["scores"]["test"]["accuracy"] >= 0.7


def test_a_population_trial_replays_with_its_curves(tmp_path):
    spec = validate_spec_dict(spec_dict(tmp_path, population=3, n_trials=3, dropout=0.0))
    outcome = run_search(spec)
    best = outcome.study.best_trial
    run = replay(best, spec, outcome.data, to_tensors(outcome.data, torch.device("cpu")), outcome.metric)
    curves = best.user_attrs["curves"]
    for key, values in _round_all(run.result.history).items():
        assert values == pytest.approx(curves[key], rel=1e-3, abs=1e-4)


def _round_all(history):
    return {k: round_curve(v) for k, v in history.items()}


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_no_trial_is_left_running_after_an_exception(tmp_path, error):
    """The progress callback raises after the first trial is told: the rest of its generation is told FAIL."""
    calls = []

    def progress(p):
        calls.append(p)
        raise error("stop here")

    spec = validate_spec_dict(spec_dict(tmp_path, population=4))
    if error is KeyboardInterrupt:
        outcome = run_search(spec, progress=progress)  # run_search turns Ctrl-C into a note
        assert outcome.interrupted
        study = outcome.study
    else:
        with pytest.raises(RuntimeError, match="stop here"):
            run_search(spec, progress=progress)
        study = optuna.load_study(study_name="iris_pop", storage=_storage(tmp_path))
    states = [t.state for t in study.trials]
    assert len(calls) == 1 and len(states) == 4
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    assert states.count(TrialState.FAIL) == 3


def _storage(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(tmp_path / "studies" / "iris_pop" / "study.journal")))


@pytest.mark.slow
def test_cli_search_with_population_auto(tmp_path, cli):
    path = write_spec(tmp_path / "iris.yaml", spec_dict(tmp_path, population="auto", n_trials=6))
    r = cli("search", path, "--no-report")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "studies" / "iris_pop" / "summary.json").read_text())
    assert sum(summary["trials"].get(s, 0) for s in ("COMPLETE", "PRUNED")) == 6
    assert "RUNNING" not in summary["trials"] and "FAIL" not in summary["trials"]


def test_population_must_be_auto_or_a_positive_integer(tmp_path, cli):
    path = write_spec(tmp_path / "iris.yaml", spec_dict(tmp_path, population=0))
    r = cli("validate", path)
    assert r.returncode == 2
    assert "iris.yaml:" in r.stderr
    assert "training.population: must be auto or an integer in [1, 4096] (got 0); 1 trains one trial at a time" in (
        r.stderr
    )


def test_a_stack_stops_at_the_timeout_and_its_members_keep_their_best_epoch(tmp_path):
    # every member trained to the end used to overrun the timeout by a whole stack (3 s -> 77 s at K = 32)
    d = spec_dict(tmp_path, population=8, n_trials=None)
    d["space"].update(max_epochs=100000, dropout=0.0)
    d["training"]["early_stopping"] = {"enabled": False}
    d["study"].update(timeout=2, pruner="none")
    spec = validate_spec_dict(d)
    outcome = run_search(spec)
    assert outcome.wall_s < 2 + 5  # the last epoch, telling, scoring the best model
    trials = outcome.study.trials
    assert trials and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        assert t.user_attrs["stop_reason"] == "timeout"
        assert t.user_attrs["n_epochs"] > 1
        curve = t.user_attrs["curves"]["val_score"]
        assert t.value == pytest.approx(curve[t.user_attrs["best_epoch"] - 1], rel=1e-4)  # its best epoch so far
