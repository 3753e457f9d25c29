"""The shipped model (study.final) on small sets: best vs refit vs bag vs ensemble, from one search per seed.

    PYTHONPATH=. python bench/final_models.py [--sets auto_mpg,iris,...] [--seeds 0,1,2,3,4] [--out results.json]

Each (set, seed) runs one search (--validation holdout or kfold) with the set's spec (the examples' specs for auto_mpg and iris, with
their default budgets), keeping every trial's validation outputs; then builds each final model from that same
study, so the four rows differ only in what is shipped. Columns: the best trial's validation value and test
score, its optimism gap (val - test), and the test score of each final model. For iris, sklearn's
MLPClassifier(solver='lbfgs') with default settings, fitted on train + validation of the same split (the
preprocessed features), is the reference. Timings are wall-clock on a shared machine: compare within a run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from automlp.data import to_tensors
from automlp.search.final import build_final
from automlp.metrics import get_metric
from automlp.report.summary import summarize
from automlp.search import run_search
from automlp.spec import validate_spec_dict

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "search_spaces"
GENERIC = {"space": {"depth": [1, 2, 3], "width": [32, 64, 128], "activation": ["relu", "tanh"],
                     "optimizer": "adam", "lr": {"low": 3e-4, "high": 3e-2, "log": True},
                     "alpha": {"low": 1e-6, "high": 1e-2, "log": True}, "batch_size": [16, 32], "max_epochs": 200},
           "training": {"early_stopping": {"patience": 20}}, "study": {"n_trials": 30}}
SETS = {
    "auto_mpg": "example", "iris": "example",
    "wine": {"data": {"dataset": "sklearn:wine"}, **GENERIC},
    "breast_cancer": {"data": {"dataset": "sklearn:breast_cancer"}, **GENERIC},
    "diabetes": {"data": {"dataset": "sklearn:diabetes"}, **GENERIC, "study": {"n_trials": 30, "metric": "r2"}},
}
KINDS = ("refit", "bag", "ensemble")


def spec_dict(name: str) -> dict:
    if SETS[name] == "example":
        d = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
        if "path" in d["data"]:
            d["data"]["path"] = str(EXAMPLES / d["data"]["path"])
        return d
    return json.loads(json.dumps(SETS[name]))


def sklearn_lbfgs(data, seeds) -> list[float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    X = np.concatenate([data.X_train, data.X_val])
    y = np.concatenate([data.y_train, data.y_val])
    out = []
    for s in seeds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = MLPClassifier(solver="lbfgs", random_state=s).fit(X, y)
        out.append(float(clf.score(data.X_test, data.y_test)))
    return out


def one(name: str, seed: int, root: Path, validation: str) -> dict:
    d = spec_dict(name)
    d.setdefault("study", {}).update({"name": f"{name}_s{seed}", "seed": seed, "final": "ensemble",
                                      "validation": validation})
    d["output"] = {"dir": str(root)}
    d.setdefault("training", {})["threads"] = 1
    spec = validate_spec_dict(d)
    t0 = time.perf_counter()
    outcome = run_search(spec)
    summarize(outcome, spec)
    row = {"set": name, "seed": seed, "validation": validation, "metric": outcome.metric,
           "search_s": round(time.perf_counter() - t0, 1)}
    b = outcome.summary["best"]
    row |= {"best_val": b["value"], "best_test": b["scores"]["test"][outcome.metric]}
    sign = 1 if get_metric(outcome.metric).direction == "maximize" else -1
    row["gap"] = sign * (row["best_val"] - row["best_test"])  # k-fold: the winner's CV mean vs its holdout model
    tensors = to_tensors(outcome.data, torch.device("cpu"))
    for kind in KINDS:
        spec.study.final = kind
        t0 = time.perf_counter()
        final = build_final(spec, outcome.study, outcome.data, tensors, outcome.metric, outcome.best_run)
        row[f"{kind}_test"] = final.scores["test"][outcome.metric]
        row[f"{kind}_s"] = round(time.perf_counter() - t0, 1)
        if kind == "ensemble":
            row["ensemble_members"] = len(final.members)
        if kind == "bag":  # k-fold: the CV mean against the test score of the same folds' models
            row["bag_gap"] = sign * (row["best_val"] - row["bag_test"])
    if name == "iris":
        row["sklearn_lbfgs_test"] = sklearn_lbfgs(outcome.data, range(5))
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--out", default="bench_final_models.json")
    ap.add_argument("--validation", default="holdout", choices=["holdout", "kfold"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            for seed in map(int, args.seeds.split(",")):
                rows.append(one(name, seed, Path(tmp), args.validation))
                r = rows[-1]
                print(f"{r['set']:>14} seed {seed}: {r['metric']} best val {r['best_val']:.4f} test "
                      f"{r['best_test']:.4f} | refit {r['refit_test']:.4f} bag {r['bag_test']:.4f} ensemble "
                      f"{r['ensemble_test']:.4f} ({r['ensemble_members']} members) | search {r['search_s']} s",
                      flush=True)
                Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
