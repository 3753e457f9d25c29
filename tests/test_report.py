"""The study report, built for real studies run with the installed `automlp` command."""

from __future__ import annotations

import html
import json
import re

import optuna
import pytest
import yaml

from automlp.storage import open_storage

from tests.report_helpers import (CLASSIFICATION_FIGS, OPTUNA_FIGS, REGRESSION_FIGS, REPO, automlp, facts, invoke,
                                  friedman_csv, run_study, write_spec)

pytestmark = pytest.mark.slow
FAST = {"threads": 1, "early_stopping": {"patience": 5}}
SMALL_REPORT = {"seeds": 2, "rescore_top": 3, "folds": 3}


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    """breast_cancer (binary, so the ROC curve is drawn), 8 small trials with pruning."""
    folder = tmp_path_factory.mktemp("clf")
    spec = {"data": {"dataset": "sklearn:breast_cancer"},
            "space": {"depth": [1, 2], "width": [8, 32], "lr": {"low": 1e-3, "high": 3e-2, "log": True},
                      "batch_size": 64, "max_epochs": 30},
            "training": FAST, "study": {"name": "bc", "n_trials": 8, "seed": 0,
                                        "pruner": {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 3}},
            "report": SMALL_REPORT}
    study_dir, proc = run_study(folder, "bc", spec)
    return folder, study_dir, proc


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    """auto_mpg from search_spaces/data, 5 trials."""
    folder = tmp_path_factory.mktemp("reg")
    spec = {"data": {"path": str(REPO / "search_spaces" / "data" / "auto_mpg.csv"), "target": "mpg",
                     "drop": ["car_name"], "categorical": ["origin"], "task": "regression"},
            "space": {"depth": [1, 2], "width": [16, 64], "lr": {"low": 3e-3, "high": 3e-2, "log": True},
                      "batch_size": 32, "max_epochs": 40},
            "training": FAST, "study": {"name": "mpg", "metric": "rmse", "n_trials": 5, "seed": 0},
            "report": SMALL_REPORT}
    study_dir, proc = run_study(folder, "mpg", spec)
    return folder, study_dir, proc


def _div_ids(page: str) -> set[str]:
    return set(re.findall(r'<div id="([a-z-]+)" class="plotly-graph-div"', page))


def test_classification_report_content(clf):
    _, study_dir, proc = clf
    f = facts(study_dir)
    page = (study_dir / "report.html").read_text()
    md = (study_dir / "report.md").read_text()
    assert f["verdict"]["verdict"] in ("fits well", "overfits", "underfits", "unstable")
    assert f"verdict: {f['verdict']['verdict']}" in proc.stdout
    assert f["verdict"]["verdict"].upper() in md and f["verdict"]["verdict"] in page
    b = f["best"]
    # the best model: layer table from input features to the two logits, and its parameter count
    assert b["layers"][0] == {"layer": "input", "units": 30, "activation": "", "dropout": 0.0, "params": 0}
    assert b["layers"][-1]["units"] == 2 and sum(r["params"] for r in b["layers"]) == b["n_params"]
    assert f"{b['n_params']:,} parameters" in md and html.escape(b["architecture"]) in page
    # the scores: the best trial's validation accuracy is the study's best value; the test score is in both files
    assert b["scores"]["val"]["accuracy"] == pytest.approx(b["value"], abs=1e-6)
    assert f"{b['scores']['test']['accuracy']:.4g}" in md
    assert {x["name"] for x in f["findings"]} >= {"gap", "curves", "fit", "stability", "capacity", "optimism"}
    assert len(f["stability"]["test"]) == 2 and f["rescore"]["done"] and f["rescore"]["folds"] == 3
    assert len([r for r in f["top"] if r["cv_mean"] is not None]) == 3
    assert len(f["predictions"]["confusion"]) == 2 and f["predictions"]["roc"]["auc"] > 0.8
    assert _div_ids(page) >= set(CLASSIFICATION_FIGS) | {"roc-curve"} | set(OPTUNA_FIGS)
    # plotly.js is embedded once, nothing is fetched from a CDN, and the page stays small
    assert page.count("plotly.js v") <= 2 and page.count("<script type=\"text/javascript\">/**") == 1
    assert not re.search(r"<(script|link)[^>]+(src|href)=", page) and len(page.encode()) < 10e6


def test_regression_report_content(reg):
    _, study_dir, _ = reg
    f = facts(study_dir)
    md = (study_dir / "report.md").read_text()
    assert f["task"] == "regression" and f["metric"] == "rmse"
    gap = next(x for x in f["findings"] if x["name"] == "gap")
    s = f["best"]["scores"]
    assert f"r2 {s['train']['r2']:.3f} on the training split against {s['val']['r2']:.3f}" in gap["text"]
    assert len(f["predictions"]["actual"]) == f["rows"]["test"] == 80
    assert 0.5 < s["test"]["r2"] <= 1 and 1.0 < s["test"]["rmse"] < 6.0  # mpg in miles per gallon
    assert _div_ids((study_dir / "report.html").read_text()) >= set(REGRESSION_FIGS) | set(OPTUNA_FIGS)
    assert "Residuals of mpg on 80 test rows" in md


def test_report_again_from_spec_folder_and_storage(clf):
    folder, study_dir, _ = clf
    first = facts(study_dir)
    out = folder / "by-folder"
    proc = automlp("report", str(study_dir), "--out", str(out), cwd=folder)
    assert proc.returncode == 0, proc.stderr
    again = facts(out)
    # the same trial, the same replayed scores and the same seed retraining
    assert again["best"]["trial"] == first["best"]["trial"]
    for split in ("train", "val", "test"):
        assert again["best"]["scores"][split] == pytest.approx(first["best"]["scores"][split])
    assert again["stability"]["test"] == pytest.approx(first["stability"]["test"])
    url = f"journal://{(study_dir / 'study.journal').resolve()}"
    res = invoke("report", "--storage", url, "--study-name", "bc", "--out", str(folder / "by-url"), cwd=folder)
    assert res.exit_code == 0 and (folder / "by-url" / "report.html").exists(), res.output
    assert facts(folder / "by-url")["best"]["trial"] == first["best"]["trial"]


def test_use_rescored_choice_names_the_k_fold_winner_in_summary_and_study(clf):
    folder, study_dir, _ = clf
    spec = yaml.safe_load((folder / "bc.yaml").read_text())
    spec["report"]["use_rescored_choice"] = True
    res = invoke("report", str(write_spec(folder / "bc_choice.yaml", spec)), cwd=folder)
    assert res.exit_code == 0, res.output
    f = facts(study_dir)
    winner = f["rescore"]["winner"]
    assert f["choice"] == {"trial": winner, "by": "k-fold cross-validation (report.use_rescored_choice)"}
    cv = {r["trial"]: r["cv_mean"] for r in f["top"] if r["cv_mean"] is not None}
    assert cv[winner] == max(cv.values())
    assert json.loads((study_dir / "summary.json").read_text())["choice"]["trial"] == winner
    assert f"Chosen model: trial #{winner}" in (study_dir / "summary.md").read_text()
    url = f"journal://{(study_dir / 'study.journal').resolve()}"
    study = optuna.load_study(study_name="bc", storage=open_storage(url))
    assert study.user_attrs["automlp_chosen_trial"] == winner


def test_report_errors_are_one_line(clf, tmp_path):
    folder, study_dir, _ = clf
    res = invoke("report", str(tmp_path), cwd=tmp_path)
    assert res.exit_code == 2 and res.output == f"error: {tmp_path}: no study.journal in this folder; give the " \
                                                 "spec file, or --storage\n"
    url = f"journal://{(study_dir / 'study.journal').resolve()}"
    res = invoke("report", "--storage", url, "--study-name", "nope", cwd=tmp_path)
    assert res.exit_code == 2 and res.output == f"error: no study 'nope' in {url}; studies there: bc\n"
    res = invoke("report", cwd=tmp_path)
    assert res.exit_code == 2 and "give a spec file, a study folder, or --storage" in res.output


def _noisy_spec(csv, name: str, space: dict, es: dict) -> dict:
    return {"data": {"path": str(csv), "target": "y", "val_size": 0.3},
            "space": {"activation": "relu", "optimizer": "adam", "max_epochs": 30, "dropout": 0.0} | space,
            "training": {"threads": 1, "early_stopping": es},
            "study": {"name": name, "n_trials": 1, "sampler": "random"}, "report": {"seeds": 2, "rescore_top": 0}}


def test_overfitting_spec_is_called_overfitting_and_regularised_is_not(tmp_path):
    csv = friedman_csv(tmp_path / "noisy.csv")
    wide = {"depth": 2, "width": 256, "lr": 0.003, "alpha": 0.0, "batch_size": 16}
    small = {"depth": 1, "width": 8, "activation": "tanh", "lr": 0.01, "alpha": 0.1, "batch_size": 32,
             "max_epochs": 100}
    for name, space, es in (("over", wide, {"enabled": False}), ("regularised", small, {"patience": 10})):
        path = write_spec(tmp_path / f"{name}.yaml", _noisy_spec(csv, name, space, es))
        res = invoke("search", str(path), "-q", "--no-export", cwd=tmp_path)
        assert res.exit_code == 0, res.output
    over_dir, reg_dir = tmp_path / "studies" / "over", tmp_path / "studies" / "regularised"
    over, regd = facts(over_dir), facts(reg_dir)
    assert over["verdict"]["verdict"] == "overfits", over["verdict"]
    assert "exceeds the threshold 0.05" in over["verdict"]["text"]
    s = over["best"]["scores"]
    assert s["train"]["r2"] - s["val"]["r2"] > 0.05 + over["val_se"]
    assert regd["verdict"]["verdict"] != "overfits", regd["verdict"]
    gap = next(x for x in regd["findings"] if x["name"] == "gap")
    assert gap["status"] == "ok"


def test_no_report_flag_skips_the_report(tmp_path):
    spec = {"data": {"dataset": "sklearn:iris"}, "space": {"depth": 1, "width": 8, "max_epochs": 5},
            "training": {"threads": 1}, "study": {"name": "quick", "n_trials": 2}}
    study_dir, proc = run_study(tmp_path, "quick", spec, "--no-report")
    assert (study_dir / "summary.json").exists() and not (study_dir / "report.html").exists()
    assert "verdict" not in proc.stdout
    # the spec is still stored with the study, so the report can be written later from the folder alone
    res = invoke("report", str(study_dir), cwd=tmp_path)
    assert res.exit_code == 0 and (study_dir / "report.html").exists(), res.output
