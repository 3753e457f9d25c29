"""Test scores of automlp at a fixed wall budget per data set, next to scikit-learn's defaults on the same split.

    python bench/quality.py [--budget 120] [--small-budget 60] [--sets adult,california,...] [--code DIR]
                            [--space default|blocks] [--final best|refit|bag|ensemble] [--validation holdout|kfold]
                            [--threads N] [--set space.batch_size=[128,256]] [--label before]
                            [--workdir /tmp/automlp-quality]

For each set: `automlp search` runs in its own process on a spec holding only `data` (the default space) with
`study.timeout` = the budget and no trial limit (Auto MPG: the example's split and its budget of 30 trials, capped
by the wall budget), then scikit-learn's `HistGradientBoosting*` and `MLP*` with their defaults are fitted on the same
train+validation rows (automlp's preprocessing, fitted on the training rows) and scored on the same test rows. The
split is 80/20 with seed 0 for the public sets and sklearn's bundled ones; Auto MPG uses the example's
(`search_spaces/auto_mpg.yaml`: 80/20, seed 3). Scores: accuracy (classification) or R2 (regression).

`--space blocks` gives every spec the README's "Beyond the plain MLP" space and `study.portfolio: true`; `--final` and `--validation` set `study.final`
and `study.validation`; `--threads` sets `training.threads` (two labels may then run side by side, one core each);
`--set PATH=VALUE` (repeatable) sets any field of every spec, VALUE read as YAML, to try a change of the space or
the study against the same baselines before it becomes a default.
`--code DIR` runs another checkout's automlp (its package on PYTHONPATH), so the "before" row of today's main and
the "after" row of a branch come from one script. Prints one table and writes bench/results/quality-<label>.json.
The public sets are read from /work/shared/data (or --data-dir). Times are wall-clock on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
AUTOMLP = str(Path(sys.executable).with_name("automlp"))
GRACE = 1.5  # a search may overrun its budget by half (the trial in flight) before it is interrupted

# name -> (data section of the spec, metric)
PUBLIC = {
    "adult": ({"path": "adult.csv.gz", "target": "income", "task": "classification"}, "accuracy"),
    "california": ({"path": "california_housing.csv", "target": "median_house_value", "task": "regression"}, "r2"),
    "wine_quality": ({"path": "wine_quality.csv", "target": "quality", "task": "regression"}, "r2"),
    "auto_mpg": ({"path": "auto_mpg.csv", "target": "mpg", "drop": ["car_name"], "categorical": ["origin"],
                  "task": "regression", "split_seed": 3}, "r2"),
}
BUNDLED = {
    "iris": ("classification", "accuracy"), "wine": ("classification", "accuracy"),
    "breast_cancer": ("classification", "accuracy"), "digits": ("classification", "accuracy"),
    "diabetes": ("regression", "r2"),
}


# the README's "Beyond the plain MLP" space (tests/test_portfolio.py BLOCKS_SPACE mirrors it)
BLOCKS = {"optimizer": ["adam", "adamw"], "activation": ["relu", "silu"], "dropout": {"low": 0.0, "high": 0.3},
          "lr_schedule": ["constant", "cosine", "coslog4"], "beta2": {"low": 0.9, "high": 0.999},
          "numeric_preprocessing": ["standard", "quantile", "robust_clip"],
          "embedding": ["none", "periodic", "piecewise_linear"], "feature_scaling": [False, True],
          "arch": ["mlp", "tabm_mini"]}


def spec_for(name: str, data_dir: Path, budget: float, space: str = "default", final: str | None = None,
             validation: str | None = None, threads: int | None = None) -> dict:
    if name in PUBLIC:
        data, metric = PUBLIC[name]
        data = dict(data, path=str(data_dir / data["path"]))
    else:
        task, metric = BUNDLED[name]
        data = {"dataset": name, "task": task}
    data.setdefault("split_seed", 0)
    data["test_size"] = 0.2
    study = {"name": f"q-{name}", "metric": metric, "timeout": budget, "n_trials": None}
    if name == "auto_mpg":
        study["n_trials"] = 30  # the example's budget
    spec = {"data": data, "study": study, "output": {"dir": "studies"}}
    if space == "blocks":
        spec["space"] = dict(BLOCKS)
        study["portfolio"] = True
    if final:
        study["final"] = final
    if validation:
        study["validation"] = validation
    if threads:
        spec["training"] = {"threads": threads}
    return spec


def set_field(spec: dict, item: str) -> None:
    """`space.batch_size=[128,256]`: the dotted path's field of `spec` set to the YAML value."""
    path, sep, raw = item.partition("=")
    if not sep or not path:
        raise SystemExit(f"--set {item!r}: expected PATH=VALUE, e.g. space.batch_size=[128,256,512]")
    *parents, leaf = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = yaml.safe_load(raw)


def run_automlp(spec: dict, workdir: Path, code: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{spec['study']['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = dict(os.environ, PYTHONPATH=str(code))
    t0 = time.perf_counter()
    proc = subprocess.Popen([AUTOMLP, "search", str(path), "--quiet", "--no-export", "--no-report"], cwd=workdir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # study.timeout stops starting trials; a trial already running finishes. Past the budget plus a grace, a
    # Ctrl-C (SIGINT) ends the running trials after their current epoch and automlp still scores its best so far
    interrupted = False
    try:
        _, err = proc.communicate(timeout=spec["study"]["timeout"] * GRACE + 30)
    except subprocess.TimeoutExpired:
        interrupted = True
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 130):
        return {"error": err.strip().splitlines()[-1:] or [f"exit {proc.returncode}"], "wall_s": wall}
    summary = json.loads((workdir / "studies" / spec["study"]["name"] / "summary.json").read_text())
    best = summary["best"]
    metric = spec["study"]["metric"]
    if best is None:
        return {"error": ["no trial finished"], "wall_s": wall, "interrupted": interrupted}
    final = summary.get("final") or {}
    shipped = (final.get("scores") or {}).get("test", {}).get(metric)  # study.final other than best
    return {"test": best["scores"]["test"][metric], "val": best["scores"]["val"][metric], "wall_s": wall,
            "interrupted": interrupted, "final": final.get("kind", "best"),
            "shipped_test": best["scores"]["test"][metric] if shipped is None else shipped,
            "trials": summary["trials"], "params": best["params"], "architecture": best["architecture"]}


def run_sklearn(spec: dict, code: Path) -> dict:
    """HistGradientBoosting* and MLP* defaults on automlp's own split (train+validation -> test)."""
    sys.path.insert(0, str(code))
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    from automlp.data import prepare_data
    from automlp.spec import validate_spec_dict

    s = validate_spec_dict(spec)
    data = prepare_data(s.data, s.study.seed)
    X = np.concatenate([data.X_train, data.X_val])
    y = np.concatenate([data.y_train, data.y_val])
    clf = data.task == "classification"
    score = accuracy_score if clf else r2_score
    out = {}
    models = {"hgb": HistGradientBoostingClassifier(random_state=0) if clf else
              HistGradientBoostingRegressor(random_state=0),
              "sk_mlp": MLPClassifier(random_state=0) if clf else MLPRegressor(random_state=0)}
    for key, model in models.items():
        t0 = time.perf_counter()
        model.fit(X, y)
        out[key] = float(score(data.y_test, model.predict(data.X_test)))
        out[f"{key}_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=120.0, help="seconds of search per public set")
    ap.add_argument("--small-budget", type=float, default=60.0, help="seconds of search per bundled sklearn set")
    ap.add_argument("--sets", default=",".join([*BUNDLED, *reversed(PUBLIC)]))
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose automlp runs")
    ap.add_argument("--space", choices=["default", "blocks"], default="default")
    ap.add_argument("--final", choices=["best", "refit", "bag", "ensemble"])
    ap.add_argument("--validation", choices=["holdout", "kfold", "auto"])
    ap.add_argument("--threads", type=int)
    ap.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                    help="a spec field for every set, e.g. space.batch_size=[128,256,512] (VALUE is YAML)")
    ap.add_argument("--label", default="after")
    ap.add_argument("--data-dir", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/automlp-quality"))
    args = ap.parse_args()
    rows = []
    for name in args.sets.split(","):
        budget = args.budget if name in PUBLIC else args.small_budget
        spec = spec_for(name, args.data_dir, budget, args.space, args.final, args.validation, args.threads)
        for item in args.set:
            set_field(spec, item)
        row = {"set": name, "metric": spec["study"]["metric"], "budget_s": budget, "label": args.label,
               "automlp": run_automlp(spec, args.workdir / args.label, args.code.resolve())}
        row |= run_sklearn(spec, args.code.resolve())
        rows.append(row)
        print(json.dumps(row, default=str), file=sys.stderr, flush=True)
        out = ROOT / "bench" / "results" / f"quality-{args.label}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"label": args.label, "code": str(args.code), "rows": rows}, indent=1,
                                  default=str))  # after every set: a long run keeps what it has
    print(f"{'set':14} {'metric':8} {'budget':>6} {'best val':>8} {'best':>8} {'shipped':>8} {'trials':>6} "
          f"{'HGB':>7} {'skMLP':>7}")
    for r in rows:
        a = r["automlp"]
        mark = "*" if a.get("interrupted") else ""
        val, score, shipped = ((f"{a['val']:.4f}", f"{a['test']:.4f}{mark}", f"{a['shipped_test']:.4f}")
                               if "test" in a else ("-", "error", "-"))
        n = sum(a.get("trials", {}).values()) if "trials" in a else 0
        print(f"{r['set']:14} {r['metric']:8} {r['budget_s']:6.0f} {val:>8} {score:>8} {shipped:>8} {n:6d} "
              f"{r['hgb']:7.4f} {r['sk_mlp']:7.4f}")
    print("* the search overran its budget by half and was interrupted (Ctrl-C): its best trial so far")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
