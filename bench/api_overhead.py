"""Overhead of the Python front: time from the call to the start of the first trial, against the CLI.

    python bench/api_overhead.py [--repeats 3] [--workdir /tmp/automlp-bench-api]

One spec (Auto MPG, one short trial, no report, no export), four ways, alternated, each in a fresh process:
- cli:        `automlp search spec.yaml` (time from process start: interpreter, imports, spec, data, study)
- api-cold:   `python -c "import automlp; automlp.search(spec_dict, df)"`, from process start
- api-warm:   a second `automlp.search` in the same process (a notebook's second cell): from the call
- fit-warm:   a second `AutoMLPRegressor.fit` in the same process: from the call
The first trial's start is Optuna's `datetime_start` of trial 0 in the study's storage (wall clock). Medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CSV = REPO / "search_spaces" / "data" / "auto_mpg.csv"
AUTOMLP = str(Path(sys.executable).with_name("automlp"))

SPEC = {"data": {"path": str(CSV), "target": "mpg", "drop": ["car_name"], "categorical": ["origin"]},
        "space": {"depth": 1, "width": 32, "lr": 0.01, "batch_size": 32, "max_epochs": 5},
        "training": {"device": "cpu"},
        "study": {"n_trials": 1, "metric": "r2"}}

CHILD = r"""
import json, sys, time
t0 = float(sys.argv[1]); mode = sys.argv[2]; spec = json.loads(sys.argv[3]); out = sys.argv[4]
import automlp
import pandas as pd

def first_start(study):
    return study.trials[0].datetime_start.timestamp()

df = pd.read_csv(spec["data"]["path"])
path = spec["data"].pop("path")
spec["study"]["name"] = "cold"
r = automlp.search(spec, df, report=False, export=False)
cold = first_start(r.study) - t0
spec["study"]["name"] = "warm"
t1 = time.time()
r = automlp.search(spec, df, report=False, export=False)
warm = first_start(r.study) - t1
X, y = df.drop(columns=["mpg", "car_name"]), df["mpg"]
est = automlp.AutoMLPRegressor(space=spec["space"], n_trials=1, metric="r2", device="cpu", output_dir=out)
est.fit(X, y)
t2 = time.time()
est.set_params(random_state=1).fit(X, y)
fit = first_start(est.study_) - t2
print(json.dumps({"api-cold": cold, "api-warm": warm, "fit-warm": fit}))
"""


def cli_run(work: Path, i: int) -> float:
    spec = json.loads(json.dumps(SPEC))
    spec["study"]["name"] = f"cli{i}"
    spec["output"] = {"dir": str(work)}
    path = work / f"cli{i}.yaml"
    path.write_text(yaml.safe_dump(spec))
    t0 = time.time()
    subprocess.run([AUTOMLP, "search", str(path), "--no-report", "--no-export", "-q"], check=True,
                   capture_output=True)
    import optuna

    from automlp.storage import open_storage

    study = optuna.load_study(study_name=f"cli{i}", storage=open_storage(f"journal://{work / f'cli{i}' / 'study.journal'}"))
    return study.trials[0].datetime_start.timestamp() - t0


def api_run(work: Path, i: int) -> dict:
    spec = json.loads(json.dumps(SPEC))
    spec["output"] = {"dir": str(work / f"api{i}")}
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", CHILD, str(t0), "api", json.dumps(spec), str(work / f"fit{i}")],
                       check=True, capture_output=True, text=True, cwd=work)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/automlp-bench-api"))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import shutil

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    rows: dict[str, list[float]] = {"cli": [], "api-cold": [], "api-warm": [], "fit-warm": []}
    for i in range(args.repeats):
        rows["cli"].append(cli_run(args.workdir, i))
        for k, v in api_run(args.workdir, i).items():
            rows[k].append(v)
    for k, v in rows.items():
        print(f"{k:9s} median {statistics.median(v):6.2f} s  runs {', '.join(f'{x:.2f}' for x in v)}")


if __name__ == "__main__":
    main()
