"""automlp from Python: `automlp.search(spec, data)` against the CLI, its errors, progress, Ctrl-C and Result."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import automlp
from automlp.errors import DataError, SpecError

from conftest import EXAMPLE_DATA, run_cli, write_spec

MPG = EXAMPLE_DATA / "auto_mpg.csv"


def mpg_spec(out: Path, name: str = "mpg", n_trials: int = 3, path: bool = True) -> dict:
    """Three short trials on Auto MPG (one thread: the same numbers in every process)."""
    data = {"target": "mpg", "drop": ["car_name"], "categorical": ["origin"], "split_seed": 3}
    if path:
        data["path"] = str(MPG)
    return {"data": data,
            "space": {"depth": [1, 2], "width": [16, 32], "lr": {"low": 3e-3, "high": 3e-2, "log": True},
                      "batch_size": 32, "max_epochs": 15},
            "training": {"threads": 1, "device": "cpu", "early_stopping": {"patience": 5}},
            "study": {"name": name, "n_trials": n_trials, "metric": "r2", "seed": 2, "pruner": "none"},
            "report": {"seeds": 1, "rescore_top": 0},
            "output": {"dir": str(out)}}


@pytest.mark.slow
def test_dataframe_and_dict_spec_find_the_cli_best_trial(tmp_path):
    r = run_cli("search", write_spec(tmp_path / "mpg.yaml", mpg_spec(tmp_path / "cli")), "--no-report",
                "--no-export")
    assert r.returncode == 0, r.stderr
    cli = json.loads((tmp_path / "cli" / "mpg" / "summary.json").read_text())["best"]

    seen = []
    by_dict = automlp.search(mpg_spec(tmp_path / "dict"), progress=seen.append, report=False, export=False)
    # a plain read_csv keeps "?" as text; the spec's data.na_values make it missing, as the CLI's reader does
    df = pd.read_csv(MPG)
    by_frame = automlp.search(mpg_spec(tmp_path / "frame", path=False), df)
    for res in (by_dict, by_frame):
        assert res.best_trial.number == cli["trial"]
        assert res.best_params == cli["params"]
        assert res.best_value == pytest.approx(cli["value"], rel=1e-6)
        assert res.scores["test"]["r2"] == pytest.approx(cli["scores"]["test"]["r2"], rel=1e-5)
        assert res.summary["rows"] == {"train": 254, "val": 64, "test": 80}
    assert [p.n_done for p in seen] == [1, 2, 3] and seen[-1].n_total == 3  # the caller's progress callback

    # the DataFrame search wrote what the CLI writes, and its shipped model predicts in the target's units
    d = tmp_path / "frame" / "mpg"
    assert {"summary.json", "summary.md", "report.html", "report.md", "model", "study.journal"} <= \
        {p.name for p in d.iterdir()}
    assert by_frame.model_dir == d / "model" and by_frame.report_path == d / "report.html"
    pred = by_frame.predict(df.head(5))
    assert pred.shape == (5,) and np.all((pred > 5) & (pred < 50))  # miles per gallon, not standardized values
    # the search without export keeps its model in memory: the same predictions as the exported folder
    assert by_dict.predictor.path is None and np.allclose(by_dict.predict(df.head(5)), pred, rtol=1e-5)
    trials = by_frame.trials()
    assert len(trials) == 3 and {"number", "value", "params_depth", "state"} <= set(trials.columns)
    html = by_frame._repr_html_()
    assert by_frame.verdict in html and "Best model: trial #" in html and "<script" not in html
    assert by_frame.report_html().startswith("<!DOCTYPE html>")
    # `automlp report <folder>` cannot read the rows back: it says so (the report exists already)
    from automlp.api import report_study

    with pytest.raises(SpecError, match=r"study 'mpg' was searched on rows given in Python \(automlp.search\(spec, "
                                        r"data\)\), which it does not keep; give the spec file"):
        report_study(d)
    # report_html() builds the report when the search skipped it
    assert not (tmp_path / "dict" / "mpg" / "report.html").exists()
    assert "automlp report: mpg" in by_dict.report_html() and by_dict.verdict is not None


def test_a_bad_spec_field_raises_spec_error_naming_it(tmp_path):
    spec = mpg_spec(tmp_path)
    spec["space"]["lr"] = {"low": 0.1, "high": 0.01}
    with pytest.raises(SpecError) as e:
        automlp.search(spec)
    assert str(e.value) == "spec space.lr: low must be < high (got low=0.1, high=0.01); for a fixed value write " \
                           "it directly"
    spec = mpg_spec(tmp_path)
    spec["space"]["activaton"] = "relu"
    with pytest.raises(automlp.SpecError, match=r"^spec space.activaton: unknown key; did you mean 'activation'\?$"):
        automlp.search(spec)
    path = write_spec(tmp_path / "typo.yaml", {**mpg_spec(tmp_path), "study": {"n_trials": 0}})
    with pytest.raises(SpecError, match=r"^typo.yaml:\d+ study.n_trials: must be >= 1 \(got 0\)$"):
        automlp.search(path)
    with pytest.raises(SpecError, match=r"^spec: expected the path of a YAML spec, a dict in its shape or an "
                                        r"automlp Spec \(got int\)$"):
        automlp.search(3)
    no_target = mpg_spec(tmp_path, path=False)
    del no_target["data"]["target"]
    with pytest.raises(SpecError, match=r"^spec data.target: is required with a CSV or Parquet file"):
        automlp.search(no_target, str(MPG))  # data given as a file: the file's rules hold
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_trial'; the overrides are: n_trials"):
        automlp.search(mpg_spec(tmp_path), n_trial=3)


def test_rows_from_python_are_checked_like_a_file(tmp_path):
    df = pd.read_csv(MPG)
    no_target = mpg_spec(tmp_path, path=False)
    del no_target["data"]["target"]
    with pytest.raises(SpecError, match=r"^data.target: is required with a DataFrame: name the column to predict; "
                                        r"columns are: mpg, cylinders, "):
        automlp.search(no_target, df)
    wrong = mpg_spec(tmp_path, path=False)
    wrong["data"]["target"] = "MPG"
    with pytest.raises(DataError, match=r"^data.target: column 'MPG' not in the DataFrame; columns are: mpg, "):
        automlp.search(wrong, df)
    mixed = df.assign(weight=df["weight"].astype(object))
    mixed.loc[7, "weight"] = "heavy"
    with pytest.raises(DataError, match=r"^data: column 'weight' mixes numbers and text \(got 'heavy' at row 8; "):
        automlp.search(mpg_spec(tmp_path, path=False), mixed)
    with pytest.raises(DataError, match=r"^data: y must be 1-D with one value per row of X \(got 3 values for 4 "):
        automlp.search(mpg_spec(tmp_path, path=False), (np.zeros((4, 2)), [1, 2, 3]))
    with pytest.raises(DataError, match=r"^data: expected a pandas DataFrame, the path of a data file or an "
                                        r"\(X, y\) pair \(got list\)$"):
        automlp.search(mpg_spec(tmp_path, path=False), [1, 2])
    assert not (tmp_path / "mpg").exists()  # refused before any study was opened


def test_data_as_a_path_or_xy_pair_and_no_output_from_the_library(tmp_path, capfd):
    spec = mpg_spec(tmp_path, "from_path", n_trials=1, path=False)
    res = automlp.search(spec, str(MPG), report=False, export=False)  # like --data FILE
    assert res.summary["data"] == str(MPG) and res.summary["best"] is not None
    X = np.random.default_rng(0).normal(size=(120, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    spec = mpg_spec(tmp_path, "xy", n_trials=1, path=False)
    spec["data"] = {"task": "classification"}
    spec["study"]["metric"] = "accuracy"
    res = automlp.search(spec, (X, y), report=False, export=False)
    assert res.summary["data"] == "arrays (120 rows x 3 features)" and res.summary["task"] == "classification"
    assert set(res.predict(pd.DataFrame(X[:10], columns=["x0", "x1", "x2"]))) <= {0, 1}
    out, err = capfd.readouterr()
    assert out == "" and "Trial" not in err  # no prints, no Optuna line per trial


def test_progress_bar_draws_to_its_stream(tmp_path):
    from automlp.progress import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar("r2", file=stream)
    res = automlp.search(mpg_spec(tmp_path, "bar", n_trials=2), progress=bar, report=False, export=False)
    bar.close()
    assert "2/2" in stream.getvalue() and f"best r2 {res.best_value:.4g}" in stream.getvalue()
    with pytest.raises(ValueError, match="The 'progress' parameter must be None, 'bar' or a callable"):
        automlp.search(mpg_spec(tmp_path, "bad"), progress="line")


def test_ctrl_c_returns_a_resumable_study(tmp_path):
    """Ctrl-C (a Jupyter interrupt is a SIGINT too) ends the search after the running trial; the same call
    resumes the study up to n_trials."""
    def interrupt_after_first(p):
        if p.n_done == 1:
            os.kill(os.getpid(), signal.SIGINT)

    spec = mpg_spec(tmp_path, "stop", n_trials=3)
    res = automlp.search(spec, progress=interrupt_after_first)
    assert res.interrupted and res.report is None and res.model_dir is not None
    assert any("interrupted" in n for n in res.notes)
    assert res.summary["trials"] in ({"COMPLETE": 1}, {"COMPLETE": 1, "WAITING": 2})  # the portfolio stays queued
    assert all(t.user_attrs.get("portfolio") for t in res.study.trials if t.state.name == "WAITING")
    again = automlp.search(spec, report=False)
    assert not again.interrupted
    assert sum(t.state.is_finished() for t in again.study.trials) == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the caller's handler is back


def test_the_function_and_the_engine_module_share_the_name():
    import importlib

    from automlp.search import SearchOutcome, run_search  # the engine stays importable by its full name

    assert callable(automlp.search) and automlp.search.__module__ == "automlp.api"
    assert importlib.import_module("automlp.search").run_search is run_search and SearchOutcome
