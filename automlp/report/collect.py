"""Collect the report's facts: pure data read from the study, plus bounded retraining.

Retraining is limited to what the diagnostics need: the best trial (unless the caller still holds its model),
`report.seeds - 1` more seeds of the best configuration, and k-fold rescoring of the top `report.rescore_top`
configurations when train+validation is small. Everything returned is JSON-able (it is written as report.json).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import optuna
import torch
from optuna.trial import TrialState
from scipy.stats import spearmanr
from sklearn.metrics import classification_report, confusion_matrix, roc_auc_score, roc_curve
from sklearn.model_selection import KFold, StratifiedKFold

from automlp.data import PreparedData, TrainData, refit_preprocessing, to_tensors
from automlp.engine import TrainConfig, predict
from automlp.folds import use_kfold
from automlp.heldout import rank_trials
from automlp.metrics import get_metric, score, softmax
from automlp.model import MLPConfig, count_params
from automlp.report import verdict as V
from automlp.search.space import configs_from_params, params_of, trial_seed
from automlp.search.study import count_states
from automlp.search.trial import TrialRecord, TrialRun, replay, run_config, split_scores
from automlp.spec import Spec

TOP_N = 5  # trials shown side by side
MAX_POINTS = 5000  # scatter points kept in the predicted-vs-actual plot (a fixed-seed sample beyond that)


# --------------------------------------------------------------------------- the best model


def layer_table(mlp: MLPConfig, task: str, features: int) -> list[dict]:
    """input -> hidden layers -> output, with the parameters each Linear layer holds."""
    rows = [{"layer": "input", "units": features, "activation": "", "dropout": 0.0, "params": 0}]
    sizes = mlp.layer_sizes()
    for i, (a, b) in enumerate(zip(sizes[:-2], sizes[1:-1])):
        rows.append({"layer": f"hidden {i + 1}", "units": b, "activation": mlp.activation,
                     "dropout": mlp.dropout, "params": (a + 1) * b})
    out = "logits (softmax)" if task == "classification" else "linear"
    rows.append({"layer": "output", "units": sizes[-1], "activation": out, "dropout": 0.0,
                 "params": (sizes[-2] + 1) * sizes[-1]})
    return rows if mlp.plain else block_rows(mlp, rows)


def block_rows(mlp: MLPConfig, rows: list[dict]) -> list[dict]:
    """The plain table with the blocks in it: the embedding and scaling after the input, TabM's members on the
    hidden and output layers; parameter counts of the net as built (adapters and embeddings included)."""
    from automlp.blocks.net import BlockNet

    b = mlp.blocks
    net = BlockNet(mlp.n_inputs, mlp.n_outputs, mlp.widths, mlp.activation, b, b.task)
    size = {name: p.numel() for name, p in net.named_parameters()}
    extra = []
    if b.embedding != "none":
        n = sum(v for k, v in size.items() if k.startswith("emb_"))
        extra.append({"layer": f"{b.embedding.replace('_', '-')} embedding", "units": b.first_layer_inputs(
            mlp.n_inputs), "activation": f"{b.n_embedded} numeric x {b.d_embedding}", "dropout": 0.0, "params": n})
    if b.feature_scaling:
        extra.append({"layer": "feature scaling", "units": size["scale"], "activation": "", "dropout": 0.0,
                      "params": size["scale"]})
    out = [rows[0], *extra]
    for i, row in enumerate(rows[1:-1]):
        n = sum(v for k, v in size.items() if k.startswith(f"layers.{i}."))
        out.append(row | {"params": n} | ({"layer": f"{row['layer']} ({b.arch} x{b.k_ensemble})"}
                                          if b.arch != "mlp" else {}))
    last = rows[-1] | {"params": size["w_out"] + size["b_out"]}
    if b.arch != "mlp":
        last["layer"] = f"output (x{b.k_ensemble}, averaged)"
    return out + [last]


def _outputs(run: TrialRun, X: np.ndarray, device: torch.device) -> np.ndarray:
    return predict(run.model, torch.as_tensor(X, device=device)).float().cpu().numpy()


def prediction_facts(run: TrialRun, data: PreparedData, device: torch.device) -> dict:
    """Test-split diagnostics: classification report, confusion matrix, ROC (binary); or predicted vs actual."""
    out = _outputs(run, data.X_test, device)
    if data.task == "classification":
        labels = [str(c) for c in data.classes]
        pred = out.argmax(axis=1)
        ids = list(range(len(labels)))
        facts = {"labels": labels,
                 "report": classification_report(data.y_test, pred, labels=ids, target_names=labels,
                                                 output_dict=True, zero_division=0),
                 "confusion": confusion_matrix(data.y_test, pred, labels=ids).tolist(), "roc": None}
        if len(labels) == 2 and len(np.unique(data.y_test)) == 2:
            p1 = softmax(out)[:, 1]
            fpr, tpr, _ = roc_curve(data.y_test, p1)
            facts["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(roc_auc_score(data.y_test, p1)),
                            "positive": labels[1]}
        return facts
    actual = data.y_test * data.target_std + data.target_mean
    predicted = out.reshape(-1) * data.target_std + data.target_mean
    if len(actual) > MAX_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(len(actual), MAX_POINTS, replace=False))
        actual, predicted = actual[keep], predicted[keep]
    return {"actual": actual.astype(float).round(6).tolist(), "predicted": predicted.astype(float).round(6).tolist(),
            "target": data.target_name}


def best_facts(trial: optuna.trial.FrozenTrial, run: TrialRun, data: PreparedData, device: torch.device) -> dict:
    """The best trial as the search recorded it (its record), with the model `run` holds for the scores."""
    rec = TrialRecord.read(trial)
    return {
        "trial": trial.number, "value": trial.value, "params": trial.params,
        "architecture": run.mlp.describe(), "layers": layer_table(run.mlp, data.task, data.n_features),
        "n_params": count_params(run.mlp), "epochs_trained": rec.n_epochs,
        "max_epochs": run.config.max_epochs, "best_epoch": rec.best_epoch, "stop_reason": rec.stop_reason,
        "train_time_s": rec.train_time_s, "seed": rec.seed, "curves": rec.curves,
        "scores": split_scores(run, data, device),
    }


# --------------------------------------------------------------------------- retraining


def _seed_for(base: int, k: int) -> int:
    return (base + k * 104_729) % (2**31 - 1)


def stability_runs(trial: optuna.trial.FrozenTrial, run: TrialRun, spec: Spec, data: PreparedData,
                   tensors: TrainData, metric: str) -> dict:
    """The best configuration on the same splits with `report.seeds` seeds (its own run is the first)."""
    seeds = [run.config.seed]
    val = [score_of(run, data, "val", metric, tensors.device)]
    test = [score_of(run, data, "test", metric, tensors.device)]
    for k in range(1, spec.report.seeds):
        seed = _seed_for(run.config.seed, k)
        mlp, tc = configs_from_params(params_of(trial), spec, data, metric, seed)
        other = run_config(mlp, tc, data, tensors)
        seeds.append(seed)
        val.append(score_of(other, data, "val", metric, tensors.device))
        test.append(score_of(other, data, "test", metric, tensors.device))
        del other
    return {"seeds": seeds, "val": val, "test": test}


def score_of(run: TrialRun, data: PreparedData, split: str, metric: str, device: torch.device) -> float:
    X, y = {"train": (data.X_train, data.y_train), "val": (data.X_val, data.y_val),
            "test": (data.X_test, data.y_test)}[split]
    return score(metric, y, _outputs(run, X, device), data.target_mean, data.target_std)


def fold_data(data: PreparedData, folds: int, seed: int) -> list[PreparedData]:
    """Train+validation cut into `folds` (stratified where every class has enough rows). Each fold's
    preprocessing (imputation, scaling, categories) is fitted on its own training part, so the held-out part
    is as unseen as the validation split was in the search; the test split stays untouched either way."""
    y = np.concatenate([data.y_train, data.y_val])
    stratify = data.task == "classification" and np.bincount(y).min(initial=folds) >= folds
    splitter = (StratifiedKFold if stratify else KFold)(n_splits=folds, shuffle=True, random_state=seed)
    cuts = splitter.split(np.zeros((len(y), 1)), y if stratify else None)
    return [refit_preprocessing(data, tr, va) for tr, va in cuts]


def capped(tc: TrainConfig, n_epochs: int | None) -> TrainConfig:
    """At most the epochs the trial trained in the search (early stopping still applies): the rescoring then
    costs about what the trial cost. A cosine schedule keeps its length, which defines its shape."""
    if not n_epochs or tc.lr_schedule == "cosine":
        return tc
    return dataclasses.replace(tc, max_epochs=min(tc.max_epochs, int(n_epochs)))


def rescore(trials: list[optuna.trial.FrozenTrial], spec: Spec, data: PreparedData, device: torch.device,
            metric: str) -> dict:
    """k-fold scores of each configuration: trained with its own seed for at most the epochs it trained in the
    search, early-stopped on each fold's held-out part."""
    parts = fold_data(data, spec.report.folds, spec.study.seed)
    tensors = [to_tensors(p, device) for p in parts]
    out = {}
    for t in trials:
        rec = TrialRecord.read(t)
        seed = rec.seed if rec.trained else trial_seed(spec.study.seed, t.number)
        scores = []
        for part, tens in zip(parts, tensors):
            mlp, tc = configs_from_params(params_of(t), spec, part, metric, seed)
            r = run_config(mlp, capped(tc, rec.n_epochs), part, tens)
            scores.append(r.result.best_val_score)
            del r
        out[t.number] = scores
    return out


# --------------------------------------------------------------------------- across trials


def ranked(study: optuna.Study, direction: str) -> list[optuna.trial.FrozenTrial]:
    return rank_trials(study, direction)  # ties: the lower validation loss first (automlp.heldout)


def final_facts(spec: Spec, study_name: str) -> dict | None:
    """The shipped model (study.final) as the search's summary.json recorded it, when it is not the best trial's
    own model: the report shows it next to the best trial on the test split."""
    path = spec.study_dir / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    final = summary.get("final") if summary.get("study") == study_name else None
    return final if final and final.get("kind") != "best" else None


def capacity_facts(study: optuna.Study) -> dict:
    """Per trial: parameter count and the validation - training loss gap at its best epoch."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        rec = TrialRecord.read(t)
        c, b = rec.curves, rec.best_epoch
        if b and len(c.get("val_loss", ())) >= b and len(c.get("train_loss", ())) >= b:
            rows.append({"trial": t.number, "n_params": rec.n_params, "state": t.state.name,
                         "gap": c["val_loss"][b - 1] - c["train_loss"][b - 1]})
    rho = p = None
    if len({r["n_params"] for r in rows}) >= 3 and len(rows) >= 5:
        res = spearmanr([r["n_params"] for r in rows], [r["gap"] for r in rows])
        rho, p = float(res.statistic), float(res.pvalue)
        if math.isnan(rho):
            rho = p = None
    return {"trials": rows, "spearman": rho, "p_value": p}


def top_rows(trials: list[optuna.trial.FrozenTrial], cv: dict) -> list[dict]:
    rows = []
    for t in trials:
        rec = TrialRecord.read(t)
        scores = cv.get(t.number)
        rows.append({"trial": t.number, "value": t.value, "n_params": rec.n_params,
                     "architecture": rec.architecture, "params": t.params,
                     "epochs": rec.n_epochs, "best_epoch": rec.best_epoch, "val_metrics": rec.val_metrics,
                     "cv_mean": float(np.mean(scores)) if scores else None,
                     "cv_std": float(np.std(scores, ddof=1)) if scores and len(scores) > 1 else None})
    return rows


def bootstrap_se(run: TrialRun, data: PreparedData, metric: str, device: torch.device, n: int = 200,
                 split: str = "val") -> float:
    """Standard error of a split's score from `n` bootstrap resamples of its rows (fixed seed)."""
    X, y = (data.X_val, data.y_val) if split == "val" else (data.X_test, data.y_test)
    out = _outputs(run, X, device)
    rng = np.random.default_rng(0)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(out), len(out))
        if data.task == "classification" and len(np.unique(y[idx])) < 2:
            continue  # roc_auc and friends need two classes in the resample
        values.append(score(metric, y[idx], out[idx], data.target_mean, data.target_std))
    values = [v for v in values if v == v]
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def baseline_score(data: PreparedData, metric: str) -> float:
    """The training score of a constant prediction (class priors, or the mean target)."""
    if data.task == "classification":
        prior = np.bincount(data.y_train, minlength=len(data.classes)) / len(data.y_train)
        logits = np.tile(np.log(np.maximum(prior, 1e-12)), (len(data.y_train), 1))
        return score(metric, data.y_train, logits)
    return score(metric, data.y_train, np.zeros(len(data.y_train)), data.target_mean, data.target_std)


# --------------------------------------------------------------------------- everything


def collect(study: optuna.Study, spec: Spec, data: PreparedData, tensors: TrainData, metric: str,
            best_run: TrialRun | None = None) -> dict:
    """All facts of the report. Retrains only what is missing (see the module docstring)."""
    start = time.perf_counter()
    direction = get_metric(metric).direction
    facts = {"study": study.study_name, "metric": metric, "direction": direction, "task": data.task,
             "data": data.source, "rows": data.sizes(), "n_features": data.n_features,
             "classes": [str(c) for c in data.classes], "trials": count_states(study), "device": str(tensors.device),
             "report_spec": spec.report.model_dump(), "best": None, "findings": [], "timings": {}}
    order = ranked(study, direction)
    if not order:
        facts["verdict"] = {"verdict": "n/a", "text": "no trial has finished, so there is no best model yet."}
        return facts
    best = order[0]
    if best_run is None:
        best_run = replay(best, spec, data, tensors, metric)
    device = tensors.device
    if best_run.data is not None:  # the best trial chose another numeric preprocessing: its facts are on its data
        data, tensors = best_run.data, to_tensors(best_run.data, device)
    facts["best"] = best_facts(best, best_run, data, device)
    facts["predictions"] = prediction_facts(best_run, data, device)
    facts["final"] = final_facts(spec, study.study_name)
    t0 = time.perf_counter()
    facts["stability"] = stability_runs(best, best_run, spec, data, tensors, metric)
    facts["timings"]["stability_s"] = time.perf_counter() - t0
    facts["stability"]["lead"] = abs(best.value - order[1].value) if len(order) > 1 else None
    facts["stability"]["runner_up"] = order[1].number if len(order) > 1 else None

    t0 = time.perf_counter()
    n_fit = len(data.X_train) + len(data.X_val)
    kfold = use_kfold(spec.study.validation, n_fit)  # the trials are cross-validated already
    rescored = spec.report.rescore_top > 0 and n_fit < spec.report.rescore_max_rows and not kfold
    cv = rescore(order[:spec.report.rescore_top], spec, data, device, metric) if rescored else {}
    facts["timings"]["rescore_s"] = time.perf_counter() - t0
    facts["top"] = top_rows(order[:max(TOP_N, spec.report.rescore_top if rescored else 0)], cv)
    facts["rescore"] = rescore_facts(cv, facts["top"], spec, n_fit, direction)
    facts["capacity"] = capacity_facts(study)
    facts["baseline"] = baseline_score(data, V.gap_metric(metric))
    facts["val_se"] = bootstrap_se(best_run, data, V.gap_metric(metric), device)
    facts["test_se"] = bootstrap_se(best_run, data, metric, device, split="test")
    use_cv = spec.report.use_rescored_choice and facts["rescore"]["done"]
    facts["choice"] = {"trial": facts["rescore"]["winner"] if use_cv else best.number,
                       "by": "k-fold cross-validation (report.use_rescored_choice)" if use_cv else
                       "best validation score"}
    facts["findings"] = [f.as_dict() for f in findings_of(facts, spec)]
    verdict, text = V.overall_verdict([V.Finding(**f) for f in facts["findings"]])
    facts["verdict"] = {"verdict": verdict, "text": text}
    facts["timings"]["collect_s"] = time.perf_counter() - start
    return facts


def rescore_facts(cv: dict, top: list[dict], spec: Spec, n_fit: int, direction: str) -> dict:
    r = spec.report
    if not cv:
        kfold = use_kfold(spec.study.validation, n_fit)
        why = ("report.rescore_top is 0" if r.rescore_top == 0 else
               f"the trials were scored by {spec.study.folds}-fold cross-validation (study.validation)" if kfold else
               f"train+validation has {n_fit} rows (at least report.rescore_max_rows = {r.rescore_max_rows}), "
               "so its validation split is trusted as it is")
        return {"done": False, "why": why, "winner": top[0]["trial"], "folds": r.folds}
    scored = [row for row in top if row["cv_mean"] is not None]
    pick = max if direction == "maximize" else min
    winner = pick(scored, key=lambda row: row["cv_mean"])
    return {"done": True, "why": "", "winner": winner["trial"], "folds": r.folds, "n_rows": n_fit,
            "scores": {str(k): v for k, v in cv.items()}}


def findings_of(facts: dict, spec: Spec) -> list[V.Finding]:
    b, metric = facts["best"], facts["metric"]
    gm = V.gap_metric(metric)
    s = b["scores"]
    es = spec.training.early_stopping
    found = [
        V.gap_finding(s["train"][gm], s["val"][gm], s["test"][gm], gm, spec.report.gap_threshold, facts["val_se"],
                      facts["rows"]["val"]),
        V.curve_finding(b["curves"], b["best_epoch"], b["epochs_trained"], b["max_epochs"], b["stop_reason"],
                        es.patience if es.enabled else None),
        V.fit_finding(s["train"][gm], facts["baseline"], gm),
        V.stability_finding(facts["stability"]["test"], facts["stability"]["lead"], metric,
                            facts["stability"]["runner_up"], spec.report.stable_spread, facts["test_se"],
                            facts["rows"]["test"]),
        V.capacity_finding(facts["capacity"]["spearman"], facts["capacity"]["p_value"],
                           len(facts["capacity"]["trials"])),
    ]
    rs = facts["rescore"]
    top0 = facts["top"][0]
    cv = (top0["cv_mean"], top0["cv_std"] or 0.0) if rs["done"] else None
    found.append(V.optimism_finding(b["value"], s["test"][metric], metric, facts["direction"], cv,
                                    facts["rows"]["val"]))
    st = facts["stability"]["test"]
    noise = float(np.std(st, ddof=1)) if len(st) > 1 else None
    smaller = V.smaller_finding(facts["top"], noise, metric)
    if smaller is not None:
        found.append(smaller)
    if rs["done"]:
        found.append(V.rescore_finding(rs["winner"], b["trial"], facts["top"], rs["folds"], metric,
                                       spec.report.use_rescored_choice))
    return found
