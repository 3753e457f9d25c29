"""`automlp search` end to end: the installed command on real data; files, scores and database states."""

from __future__ import annotations

import json

import optuna
import pytest

from automlp.storage import open_storage

from conftest import EXAMPLE_DATA, run_cli, write_spec


def journal_study(study_dir, name):
    storage = open_storage(f"journal://{study_dir / 'study.journal'}")
    return optuna.load_study(study_name=name, storage=storage)


def test_search_iris_end_to_end_then_resume(tiny_iris_spec, tmp_path):
    r = run_cli("search", tiny_iris_spec, "--no-report")
    assert r.returncode == 0, r.stderr
    study_dir = tmp_path / "studies" / "iris_tiny"
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["metric"] == "accuracy" and summary["direction"] == "maximize"
    assert summary["rows"] == {"train": 96, "val": 24, "test": 30}
    best = summary["best"]
    assert best["scores"]["test"]["accuracy"] >= 0.8  # iris is easy; a broken pipeline lands near 0.33
    assert best["n_params"] > 0 and best["epochs_trained"] >= 1
    assert "best trial" in r.stdout and "test scores" in r.stdout
    assert (study_dir / "summary.md").read_text().startswith("# automlp study `iris_tiny`")
    trials = journal_study(study_dir, "iris_tiny").get_trials()
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 4 and not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    for t in finished:
        assert {"seed", "curves", "n_params", "stop_reason"} <= set(t.user_attrs)
        if "lr" in t.params:  # conditional: lr only exists for the mini-batch optimizers
            assert t.params["optimizer"] != "lbfgs"
        else:
            assert t.params["optimizer"] == "lbfgs"
    # the same command again resumes: nothing to run; a higher --n-trials adds trials to the same study
    r = run_cli("search", tiny_iris_spec, "--no-report")
    assert r.returncode == 0 and "nothing to run" in r.stderr
    r = run_cli("search", tiny_iris_spec, "--n-trials", "6", "--no-report")
    assert r.returncode == 0, r.stderr
    trials = journal_study(study_dir, "iris_tiny").get_trials()
    assert len([t for t in trials if t.state.is_finished()]) == 6
    assert json.loads((study_dir / "summary.json").read_text())["trials"]["COMPLETE"] + \
        json.loads((study_dir / "summary.json").read_text())["trials"].get("PRUNED", 0) == 6


@pytest.mark.slow
def test_search_auto_mpg_regression(tmp_path):
    spec = write_spec(tmp_path / "mpg.yaml", {
        "data": {"path": str(EXAMPLE_DATA / "auto_mpg.csv"), "target": "mpg", "drop": ["car_name"],
                 "categorical": ["origin"], "split_seed": 3},
        "space": {"depth": 2, "width": 64, "lr": {"low": 3e-3, "high": 1e-2, "log": True}, "batch_size": 32,
                  "max_epochs": 150},
        "study": {"name": "mpg", "n_trials": 3, "metric": "r2"},
        "output": {"dir": str(tmp_path / "studies")},
    })
    r = run_cli("search", spec, "--no-report")
    assert r.returncode == 0, r.stderr
    assert "task: regression" in r.stderr  # inferred, and said so
    summary = json.loads((tmp_path / "studies" / "mpg" / "summary.json").read_text())
    assert summary["task"] == "regression" and summary["direction"] == "maximize"
    # horsepower's '?' rows are imputed, not dropped: 398 rows in all
    assert sum(summary["rows"].values()) == 398
    # 10 features: 6 numeric + 3 one-hot origins + horsepower's missing-value indicator
    assert summary["n_features"] == 10
    test = summary["best"]["scores"]["test"]
    assert test["r2"] > 0.75, test  # the PyTorch original reaches 0.857; mean prediction scores 0
    assert test["rmse"] < 4.5  # in miles per gallon: targets are mapped back from standardized units


def test_bad_spec_exits_2_without_traceback(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("data:\n  dataset: sklearn:iris\nspace:\n  lr: {low: 0.1, high: 0.01}\n")
    r = run_cli("search", spec, "--no-report")
    assert r.returncode == 2
    assert r.stderr.startswith("error: bad.yaml:4 space.lr: low must be < high (got low=0.1, high=0.01)")
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("sampler, pruner", [("random", "median"), ("qmc", "hyperband"), ("cmaes", "none")])
def test_a_search_prints_no_library_warnings(tmp_path, cli, sampler, pruner):
    """Every lr schedule, and the samplers Optuna calls experimental: the terminal shows our progress and
    summary, not torch's warnings about scheduler order or Optuna's ExperimentalWarning."""
    path = write_spec(tmp_path / "wine.yaml", {
        "data": {"dataset": "sklearn:wine"},
        "space": {"depth": 1, "width": 16, "optimizer": ["adam", "sgd"],
                  "lr_schedule": ["invscaling", "cosine", "adaptive"], "max_epochs": 5, "batch_size": 32},
        "study": {"name": "wine_sched", "n_trials": 6, "sampler": sampler, "pruner": pruner, "seed": 0},
        "output": {"dir": str(tmp_path / "studies")},
    })
    r = cli("search", path, "--no-report", "--no-export")
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr, r.stderr


def test_mixed_precision_asked_for_on_a_cpu_is_said_not_silently_dropped(tmp_path, cli):
    path = write_spec(tmp_path / "wine.yaml", {
        "data": {"dataset": "sklearn:wine"},
        "space": {"depth": 1, "width": 16, "max_epochs": 3, "batch_size": 32},
        "training": {"precision": "bf16", "device": "cpu"},
        "study": {"name": "wine_bf16", "n_trials": 2, "seed": 0},
        "output": {"dir": str(tmp_path / "studies")},
    })
    r = cli("search", path, "--no-report", "--no-export")
    assert r.returncode == 0, r.stderr
    assert "note: training.precision: bf16 is CUDA mixed precision; on cpu the trials train in fp32" in r.stderr
