"""k-fold trials: a trial is a stack of its folds. The stacked-trainer oracle (each fold member equals a separate
training on that fold's rows), the mean fold score as the trial's intermediate values and value, pruning of a
whole trial, out-of-fold outputs, and a k-fold search that ships an ensemble of bags."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import automlp
from automlp.data import prepare_data, to_tensors
from automlp.engine import Member, TrainConfig
from automlp.export.final import export_search
from automlp.heldout import load_predictions, rank_trials
from automlp.metrics import score
from automlp.model import MLPConfig
from automlp.report.summary import summarize
from automlp.search import run_search
from automlp.search.kfold import FOLDS_ATTR, KFoldTrain, KFoldTrials, make_foldset
from automlp.search.trial import BestKeeper, run_config
from automlp.spec import DataSpec, validate_spec_dict

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny nets: one thread is fastest, and far faster than two on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def wine():
    data = prepare_data(DataSpec(dataset="sklearn:wine"), 0)
    return data, to_tensors(data, CPU), make_foldset(data, 3, seed=0, device=CPU)


def _member(fs, optimizer: str = "adam", tag=7, **kw) -> Member:
    net = MLPConfig(fs.n_features, 3, (16,), "relu")
    tc = TrainConfig(**{"optimizer": optimizer, "lr": 0.01, "batch_size": 16, "max_epochs": 12, "patience": 4,
                        "seed": 11, "metric": "accuracy", **kw})
    return Member(tag, net, tc)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])  # lbfgs: folds train one after another
def test_each_fold_trains_exactly_as_a_separate_training_on_its_rows(wine, optimizer):
    data, tensors, fs = wine
    train = KFoldTrain(fs)
    m = _member(fs, optimizer)
    [outcome] = train([m], tensors)
    folds = train.fold_results[m.tag]
    oof = train.oof[m.tag]
    for k, fold in enumerate(fs.folds):
        alone = run_config(m.net, m.config, fold.data, fs.tensors[k])
        assert folds[k].best_epoch == alone.result.best_epoch and folds[k].n_epochs == alone.result.n_epochs
        for key, curve in alone.result.history.items():
            assert np.allclose(folds[k].history[key], curve, rtol=1e-5, atol=1e-6), (k, key)
        with torch.no_grad():
            mine = alone.model(fs.tensors[k].X_val).numpy()
        assert np.allclose(oof[fold.val_rows], mine, atol=1e-5)  # out-of-fold rows are this fold's outputs
    assert outcome.result.best_val_score == pytest.approx(np.mean([f.best_val_score for f in folds]))
    assert outcome.result.best_epoch == round(np.mean([f.best_epoch for f in folds]))


def test_the_trial_reports_the_mean_fold_score_each_epoch_and_is_pruned_whole(wine):
    data, tensors, fs = wine
    train = KFoldTrain(fs)
    m = _member(fs, patience=None)
    seen = []

    def on_epoch(reports):
        seen.extend(reports)
        return {r.tag for r in reports if r.epoch == 3}

    [outcome] = train([m], tensors, on_epoch=on_epoch)
    assert [r.tag for r in seen] == [m.tag] * 3 and [r.epoch for r in seen] == [1, 2, 3]
    folds = train.fold_results[m.tag]
    assert outcome.result.stop_reason == "pruned" and [f.n_epochs for f in folds] == [3, 3, 3]
    for e, r in enumerate(seen):  # the mean of the folds' scores at that epoch
        assert r.val_score == pytest.approx(np.mean([f.history["val_score"][e] for f in folds]))
    assert outcome.result.history["val_score"] == pytest.approx([r.val_score for r in seen])


def test_refills_arrive_as_whole_trials(wine):
    data, tensors, fs = wine
    train = KFoldTrain(fs)
    told = []

    def on_done(outcome):
        told.append(outcome.tag)
        return _member(fs, tag=outcome.tag + 1) if outcome.tag < 3 else None

    outcomes = train([_member(fs, tag=1)], tensors, on_done=on_done)
    assert told == [1, 2, 3] and [o.tag for o in outcomes] == [1, 2, 3]
    assert all(len(train.fold_results[t]) == 3 for t in (1, 2, 3))


def _kfold_spec(tmp_path, **study):
    return validate_spec_dict({
        "data": {"dataset": "sklearn:wine"},
        "space": {"depth": 1, "width": [8, 16], "optimizer": "adam", "lr": {"low": 3e-3, "high": 3e-2, "log": True},
                  "batch_size": 16, "max_epochs": 15},
        "training": {"threads": 1, "early_stopping": {"patience": 4}},
        "study": {"name": "kf", "n_trials": 3, "seed": 1, "pruner": "none", "validation": "auto", "folds": 3,
                  **study},
        "output": {"dir": str(tmp_path)}})


def test_a_trial_trains_on_the_folds_of_its_own_numeric_preprocessing(tmp_path, wine):
    # before: every k-fold trial trained on the search's (standard) folds, whatever its numeric_preprocessing said
    data, tensors, fs = wine
    trials = KFoldTrials(_kfold_spec(tmp_path, seed=0), data, tensors, "accuracy", BestKeeper("maximize"), fs)
    m = dataclasses.replace(_member(fs), data=trials.variants.tensors("quantile"))
    qfs = trials.foldset_of(m)
    assert qfs is not fs and qfs is trials.foldset_of(m)  # made once
    assert {f.data.numeric_preprocessing for f in qfs.folds} == {"quantile"}
    assert [list(f.val_rows) for f in qfs.folds] == [list(f.val_rows) for f in fs.folds]  # the same folds
    trials.train([m], tensors)
    oof = trials.train.oof[m.tag]
    for k, fold in enumerate(qfs.folds):
        alone = run_config(m.net, m.config, fold.data, qfs.tensors[k])
        with torch.no_grad():
            assert np.allclose(oof[fold.val_rows], alone.model(qfs.tensors[k].X_val).numpy(), atol=1e-5)


@pytest.mark.slow
def test_a_kfold_search_keeps_out_of_fold_outputs_and_ships_an_ensemble_of_bags(tmp_path):
    spec = _kfold_spec(tmp_path, final="ensemble")
    outcome = run_search(spec)  # validation auto: wine's 142 train+validation rows are far below 5,000
    summarize(outcome, spec)
    data = outcome.data
    y = np.concatenate([data.y_train, data.y_val])
    ranked = rank_trials(outcome.study)
    for t in ranked:
        folds = t.user_attrs[FOLDS_ATTR]
        assert folds["k"] == 3 and t.value == pytest.approx(np.mean(folds["scores"]))
        assert len(t.intermediate_values) == t.user_attrs["n_epochs"]
        oof = load_predictions(spec.study_dir, t.number, rows="oof")
        assert oof.shape == (len(y), 3)
        assert t.user_attrs["val_metrics"]["accuracy"] == pytest.approx(score("accuracy", y, oof))
    f = outcome.summary["final"]
    assert f["kind"] == "ensemble" and f["selection"]["on"] == "oof"
    assert f["selection"]["score"] >= max(score("accuracy", y, load_predictions(spec.study_dir, t.number, "oof"))
                                          for t in ranked)
    assert {m["fold"] for m in f["members"]} == {0, 1, 2}  # each selected trial ships as its 3 fold models
    assert sum(m["weight"] for m in f["members"]) == pytest.approx(1.0, abs=1e-5)  # each rounded to 6 places
    folder = export_search(outcome, spec)
    meta = json.loads((folder / "metadata.json").read_text())
    assert len(meta["ensemble"]["members"]) == len(f["members"]) and meta["study"]["rows"] == data.sizes()
    p = automlp.load(folder)
    assert score("accuracy", data.y_test, p.outputs(data.raw_test)) == pytest.approx(f["scores"]["test"]["accuracy"])


@pytest.mark.slow
def test_kfold_refit_trains_for_the_folds_mean_best_epoch(tmp_path):
    spec = _kfold_spec(tmp_path, final="refit", n_trials=2)
    outcome = run_search(spec)
    best = rank_trials(outcome.study)[0]
    assert outcome.final.kind == "refit"
    assert outcome.final.refit["epochs"] == round(np.mean(best.user_attrs[FOLDS_ATTR]["best_epochs"]))
    assert outcome.final.run.result.n_epochs == outcome.final.refit["epochs"]


def test_a_bag_is_the_same_when_built_again(wine):
    """The exported fold models come from stored seeds and seeded folds: rebuilding gives the same weights."""
    from automlp.search.final import bag_members

    data, tensors, fs = wine
    m = _member(fs, max_epochs=4)
    first, shared, oof = bag_members(3, m.net, m.config, data, CPU, 3, seed=0)
    again, _, oof2 = bag_members(3, m.net, m.config, data, CPU, 3, seed=0)
    assert [(b.trial, b.fold, b.weight) for b in first] == [(3, k, 1 / 3) for k in range(3)]
    for a, b in zip(first, again):
        assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert np.array_equal(oof, oof2) and shared.n_features == data.n_features


def test_the_report_does_not_rescore_cross_validated_trials(tmp_path):
    from automlp.report.collect import rescore_facts

    facts = rescore_facts({}, [{"trial": 4}], _kfold_spec(tmp_path), 142, "maximize")
    assert facts["done"] is False and facts["winner"] == 4
    assert facts["why"] == "the trials were scored by 3-fold cross-validation (study.validation)"
