"""How long the report of a 100-trial study takes to build, and how big its HTML is.

Runs a real 100-trial study (digits, small one-layer nets, TPE + median pruning, so pruned trials and long
intermediate-value curves are in it), then builds the report three times and prints the median of:
- render: Optuna's figures + our figures + HTML + Markdown (what the < 3 s goal is about);
- collect: the facts, including the bounded retraining (report.seeds, report.rescore_top k-fold);
- total, and the size of report.html.

    .venv/bin/python bench/report_100_trials.py [--trials 100] [--out /tmp/report-bench]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import optuna

from automlp.report import build_report
from automlp.report.summary import summarize
from automlp.search import run_search
from automlp.spec import validate_spec_dict


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("/tmp/report-bench"))
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = validate_spec_dict({
        "data": {"dataset": "sklearn:digits"},
        "space": {"depth": [1, 2], "width": {"low": 8, "high": 64, "log": True}, "activation": ["relu", "tanh"],
                  "lr": {"low": 1e-3, "high": 3e-2, "log": True}, "batch_size": [64, 128], "max_epochs": 40},
        "training": {"early_stopping": {"patience": 5}, "threads": 1},
        "study": {"name": f"bench{a.trials}", "n_trials": a.trials, "seed": 0},
        "output": {"dir": str(a.out)},
    })
    t0 = time.perf_counter()
    outcome = run_search(spec)
    summarize(outcome, spec)
    print(f"search: {a.trials} trials in {time.perf_counter() - t0:.1f} s; states {outcome.summary['trials']}")
    runs = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        r = build_report(spec, outcome.study, outcome.data, outcome.best_run)
        runs.append((r.facts["timings"], time.perf_counter() - t0, r.html_bytes))
    med = lambda xs: statistics.median(xs)  # noqa: E731
    print(f"render (figures + HTML + Markdown): median {med([t['render_s'] for t, _, _ in runs]):.2f} s "
          f"over {a.repeats} builds: {[round(t['render_s'], 2) for t, _, _ in runs]}")
    print(f"collect (incl. retraining): median {med([t['collect_s'] for t, _, _ in runs]):.2f} s; "
          f"stability {med([t['stability_s'] for t, _, _ in runs]):.2f} s, "
          f"k-fold rescoring {med([t['rescore_s'] for t, _, _ in runs]):.2f} s")
    print(f"total build_report: median {med([w for _, w, _ in runs]):.2f} s; report.html {runs[0][2] / 1e6:.2f} MB")
    print(f"verdict: {r.verdict}: {r.facts['verdict']['text']}")


if __name__ == "__main__":
    main()
