"""The model a search ships (study.final: best, refit, bag, ensemble), its summary and its model folder; and
the order of trials (ties go to the lower validation loss)."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution
from typer.testing import CliRunner

import automlp
from automlp.cli import app
from automlp.data import to_tensors
from automlp.ensemble import blend, select_ensemble
from automlp.export.final import export_search
from automlp.heldout import load_predictions, predictions_path, rank_trials
from automlp.metrics import score, score_all
from automlp.report.summary import summarize
from automlp.search import run_search
from automlp.search.trial import replay
from automlp.spec import validate_spec_dict
from conftest import write_spec

SPACE = {"depth": [1, 2], "width": {"low": 4, "high": 32, "log": True}, "optimizer": "adam",
         "numeric_preprocessing": "standard",  # one preprocessing: every top trial is an ensemble candidate
         "lr": {"low": 1e-3, "high": 3e-2, "log": True}, "batch_size": 16, "max_epochs": 25}


def _spec(tmp_path, final: str, dataset: str = "sklearn:wine", n_trials: int = 6, space: dict | None = None,
          **study):
    return {"data": {"dataset": dataset}, "space": space or SPACE,
            "training": {"threads": 1, "early_stopping": {"patience": 5}},
            "study": {"name": f"f_{final}", "n_trials": n_trials, "seed": 2, "pruner": "none", "final": final,
                      "folds": 3, **study},
            "output": {"dir": str(tmp_path)}, "report": {"seeds": 1, "rescore_top": 0}}


def _search(tmp_path, final: str, **kw):
    spec = validate_spec_dict(_spec(tmp_path, final, **kw))
    outcome = run_search(spec)
    summarize(outcome, spec)
    return spec, outcome, export_search(outcome, spec)


def test_ties_go_to_the_lower_validation_loss_then_the_lower_number():
    study = optuna.create_study(direction="maximize")
    for value, loss in ((0.9, 0.2), (1.0, 0.5), (1.0, 0.3), (1.0, None), (1.0, 0.3)):
        attrs = {} if loss is None else {"best_val_loss": loss}
        study.add_trial(optuna.trial.create_trial(value=value, params={"x": 0.0},
                                                  distributions={"x": FloatDistribution(0, 1)}, user_attrs=attrs))
    assert [t.number for t in rank_trials(study)] == [2, 4, 1, 3, 0]
    # from the curve when best_val_loss was not recorded (studies from before it was)
    old = optuna.create_study(direction="minimize")
    for curve in ([0.5, 0.4, 0.45], [0.5, 0.2, 0.3]):
        old.add_trial(optuna.trial.create_trial(value=0.1, params={}, distributions={},
                                                user_attrs={"curves": {"val_loss": curve}, "best_epoch": 2}))
    assert [t.number for t in rank_trials(old)] == [1, 0]


@pytest.mark.slow
def test_ensemble_is_selected_on_validation_predictions_and_exported_as_one_folder(tmp_path):
    spec, outcome, folder = _search(tmp_path, "ensemble")
    data, study = outcome.data, outcome.study
    ranked = rank_trials(study)
    # every COMPLETE trial kept its validation outputs: those of the best equal its model's
    best = ranked[0]
    kept = load_predictions(spec.study_dir, best.number)
    assert kept.shape == (len(data.y_val), len(data.classes))
    assert score(outcome.metric, data.y_val, kept) == pytest.approx(best.value)
    assert all(predictions_path(spec.study_dir, t.number).is_file() for t in ranked)
    f = outcome.summary["final"]
    assert f["kind"] == "ensemble" and sum(m["weight"] for m in f["members"]) == pytest.approx(1.0)
    sel = f["selection"]
    assert sel["score"] >= best.value  # never below the best single trial on the rows it was chosen on
    assert sel["candidates"] == [t.number for t in ranked]
    # the same selection again from the stored predictions
    again = select_ensemble([load_predictions(spec.study_dir, n) for n in sel["candidates"]], data.y_val,
                            outcome.metric, spec.study.ensemble_size)
    assert again.score == sel["score"] and again.n_rounds == sel["rounds"]
    # the folder: its test predictions are the weighted blend of the members' replayed models
    meta = json.loads((folder / "metadata.json").read_text())
    assert [(m["trial"], m["weight"]) for m in meta["ensemble"]["members"]] == \
        [(m["trial"], pytest.approx(m["weight"])) for m in f["members"]]
    tensors = to_tensors(data, torch.device("cpu"))
    trials = {t.number: t for t in ranked}
    outs = []
    for m in f["members"]:
        run = replay(trials[m["trial"]], spec, data, tensors, outcome.metric)
        with torch.no_grad():
            outs.append(run.model(torch.as_tensor(data.X_test)).numpy())
    expected = blend(outs, [m["weight"] for m in f["members"]], data.task)
    p = automlp.load(folder)
    assert np.allclose(p.predict_proba(data.raw_test), np.exp(expected), atol=1e-5)
    assert score_all(data.task, data.y_test, p.outputs(data.raw_test)) == pytest.approx(f["scores"]["test"])
    assert "## Shipped model: ensemble" in (spec.study_dir / "summary.md").read_text()
    # the report shows the best trial and the shipped model side by side on the test split
    from automlp.report import build_report

    result = build_report(spec, study, data, outcome.best_run)
    md = result.md_path.read_text()
    trials = ", ".join(f"#{t}" for t in sorted({m["trial"] for m in f["members"]}))
    assert f"## Shipped model: ensemble ({len(f['members'])} networks; trials {trials})" in md
    assert f"| shipped (ensemble) | {f['scores']['test']['accuracy']:.4g} |" in md
    assert f"| best trial #{best.number} | {outcome.summary['best']['scores']['test']['accuracy']:.4g} |" in md
    assert "Shipped model: ensemble" in result.html_path.read_text()
    # `automlp export` rebuilds the same ensemble later from the study (seeds and kept predictions)
    r = CliRunner().invoke(app, ["export", str(spec.study_dir), "-o", str(tmp_path / "again")])
    assert r.exit_code == 0, r.stderr
    assert f"the ensemble of {len(f['members'])} members ({trials}): test accuracy" in r.stdout
    again = automlp.load(tmp_path / "again")
    assert np.allclose(again.predict_proba(data.raw_test), p.predict_proba(data.raw_test), atol=1e-6)
    r = CliRunner().invoke(app, ["export", str(spec.study_dir), "--final", "bag", "--trial", "0"])
    assert r.exit_code == 2 and r.stderr.startswith("error: --final: a final model is built from the study"), \
        r.stderr
    r = CliRunner().invoke(app, ["export", str(spec.study_dir), "--final", "stack"])
    assert r.exit_code == 2 and r.stderr == ("error: --final: unknown final model 'stack'; use one of best, refit, "
                                             "bag, ensemble\n"), r.stderr


@pytest.mark.slow
def test_an_ensemble_takes_members_of_the_winners_numeric_preprocessing_only(tmp_path):
    # one folder holds one preprocessing: a member trained on quantile inputs, fed standardized ones, predicted
    # garbage (iris: the ensemble scored 0.77 on test where its best member scored 0.93)
    space = dict(SPACE, numeric_preprocessing=["standard", "quantile", "robust_clip"])
    spec, outcome, folder = _search(tmp_path, "ensemble", n_trials=8, space=space)
    f, ranked = outcome.summary["final"], rank_trials(outcome.study)
    choice = {t.number: t.params["numeric_preprocessing"] for t in ranked}
    assert len(set(choice.values())) > 1  # the study did try several
    winner = choice[ranked[0].number]
    assert f["selection"]["numeric_preprocessing"] == winner
    assert f["selection"]["candidates"] == [n for n, c in choice.items() if c == winner]
    assert {choice[m["trial"]] for m in f["members"]} == {winner}
    data = outcome.data
    p = automlp.load(folder)
    assert json.loads((folder / "preprocessing.json").read_text())["numeric"]["method"] == winner
    assert score_all(data.task, data.y_test, p.outputs(data.raw_test)) == pytest.approx(f["scores"]["test"])
    # the members replayed on their own preprocessing and blended give the folder's predictions
    outs = []
    for m in f["members"]:
        run = replay(next(t for t in ranked if t.number == m["trial"]), spec, data,
                     to_tensors(data, torch.device("cpu")), outcome.metric)
        with torch.no_grad():
            outs.append(run.model(torch.as_tensor(run.data_or(data).X_test)).numpy())
    expected = blend(outs, [m["weight"] for m in f["members"]], data.task)
    assert np.allclose(p.predict_proba(data.raw_test), np.exp(expected), atol=1e-5)


@pytest.mark.slow
def test_an_ensemble_of_a_population_ships_the_very_models_whose_validation_outputs_were_scored(tmp_path):
    # stack members replay only up to their batch order (a refill saw the shared order from the middle): the
    # search keeps the top trials' models instead, so the members chosen on validation outputs are those models
    d = _spec(tmp_path, "ensemble", dataset="sklearn:diabetes", n_trials=12,
              space=dict(SPACE, dropout={"low": 0.1, "high": 0.3}))
    d["training"]["population"] = 4  # dropout's draws in a stack depend on the stack: a replay differs
    spec = validate_spec_dict(d)
    outcome = run_search(spec)
    final, data = outcome.final, outcome.data
    assert final.kind == "ensemble" and len({m.trial for m in final.members}) > 1, final.members
    for m in final.members:
        with torch.no_grad():
            out = m.model.eval()(torch.as_tensor(data.X_val)).numpy()
        assert np.allclose(out, load_predictions(spec.study_dir, m.trial), atol=1e-5), m.trial


@pytest.mark.slow
def test_bag_trains_the_winner_on_every_fold_behind_one_preprocessing(tmp_path):
    spec, outcome, folder = _search(tmp_path, "bag", dataset="sklearn:diabetes", n_trials=3)
    f = outcome.summary["final"]
    assert [(m["trial"], m["fold"]) for m in f["members"]] == [(rank_trials(outcome.study)[0].number, k)
                                                               for k in range(3)]
    assert [m["weight"] for m in f["members"]] == pytest.approx([1 / 3] * 3)
    data = outcome.data
    p = automlp.load(folder)
    test = score_all(data.task, data.y_test, p.outputs(data.raw_test), data.target_mean, data.target_std)
    assert test == pytest.approx(f["scores"]["test"], rel=1e-5)
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["ensemble"]["kind"] == "bag" and meta["study"]["rows"] == data.sizes()
    assert not (spec.study_dir / "predictions").exists()  # only an ensemble keeps held-out predictions


@pytest.mark.slow
def test_refit_ships_the_winner_retrained_on_train_and_validation(tmp_path):
    spec_path = write_spec(tmp_path / "refit.yaml", _spec(tmp_path, "refit", n_trials=3))
    r = CliRunner().invoke(app, ["search", str(spec_path), "-q", "--no-report"])
    assert r.exit_code == 0, r.stderr
    summary = json.loads((tmp_path / "f_refit" / "summary.json").read_text())
    best = summary["best"]
    assert f"wrote the refit model (trial #{best['trial']} retrained on train + validation)" in r.stdout
    meta = json.loads((tmp_path / "f_refit" / "model" / "metadata.json").read_text())
    assert meta["refit"]["epochs"] == best["best_epoch"] == summary["final"]["epochs"]
    assert meta["refit"]["rows"] == summary["rows"]["train"] + summary["rows"]["val"]
    assert meta["metrics"] == summary["final"]["scores"] and meta["trial"]["final"] == "refit"
    assert meta["metrics"]["val"] == best["scores"]["val"]  # the search's validation scores, as documented
