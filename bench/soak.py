"""Soak: one long study of many short trials in one process; prints resident memory and open file descriptors
every N trials, so a leak across trials (cached tensors, figures, CUDA memory, open files) shows as a slope.

    python bench/soak.py --trials 3000 --every 250            # digits, random sampler, journal storage
    python bench/soak.py --minutes 5 --sampler tpe --device cuda

The study itself grows with its trials (Optuna's storage keeps every FrozenTrial, with its params, intermediate
values and user attrs, in memory), so a small per-trial slope is expected. The baseline, in the same process:
a control study with the same storage and sampler whose objective trains nothing but suggests the same space,
reports the same number of steps and stores the same user attrs. Slopes (KiB per trial) are measured over the
second half of each run, after warm-up; our slope minus the control's is what training leaks.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def slope_kib(rows: list[dict]) -> float:
    half = [r for r in rows if r["trials"] >= rows[-1]["trials"] / 2]
    return (half[-1]["rss_mib"] - half[0]["rss_mib"]) * 1024 / max(half[-1]["trials"] - half[0]["trials"], 1)


def control_study(spec, like, n_trials: int, every: int, work: Path) -> list[dict]:
    """Optuna's own bookkeeping per trial: same storage kind, sampler, space, steps and user attrs; no training."""
    import optuna

    from automlp.search.space import suggest_params
    from automlp.search.study import make_sampler
    from automlp.storage import open_storage

    study = optuna.create_study(storage=open_storage(f"journal://{work / 'control.journal'}"),
                                sampler=make_sampler(spec), direction="maximize")
    steps = max(like.user_attrs.get("n_epochs", 1), 1)
    rows: list[dict] = []

    def objective(trial: optuna.Trial) -> float:
        suggest_params(trial, spec)
        for step in range(steps):
            trial.report(0.5, step)
        for key, value in like.user_attrs.items():
            trial.set_user_attr(key, value)
        return 0.5

    def cb(study, trial) -> None:
        if (trial.number + 1) % every == 0 or trial.number == 0:
            gc.collect()
            rows.append({"trials": trial.number + 1, "rss_mib": round(rss_mib(), 1), "fds": open_fds()})

    study.optimize(objective, n_trials=n_trials, callbacks=[cb])
    if rows[-1]["trials"] != n_trials:
        gc.collect()
        rows.append({"trials": n_trials, "rss_mib": round(rss_mib(), 1), "fds": open_fds()})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=3000)
    ap.add_argument("--minutes", type=float, default=None, help="stop after this long instead (timeout)")
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--dataset", default="sklearn:digits")
    ap.add_argument("--sampler", default="random")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steady timings on a shared box)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "soak.json")
    args = ap.parse_args()

    import optuna
    import torch

    from automlp.report.summary import summarize
    from automlp.search import run_search
    from automlp.spec import validate_spec_dict

    work = Path(tempfile.mkdtemp(prefix="automlp-soak-"))
    os.chdir(work)  # the study folder (and its journal) lives here
    raw = {
        "data": {"dataset": args.dataset},
        "space": {"depth": {"low": 1, "high": 2}, "width": [16, 32, 64], "activation": ["relu", "tanh"],
                  "optimizer": ["adam", "sgd"], "lr": {"low": 1e-3, "high": 1e-1, "log": True},
                  "batch_size": [64, 128], "dropout": {"low": 0.0, "high": 0.3}, "max_epochs": args.max_epochs},
        "training": {"device": args.device, "threads": args.threads, "early_stopping": {"patience": 2}},
        "study": {"name": "soak", "n_trials": args.trials, "sampler": args.sampler, "pruner": "median",
                  "timeout": args.minutes * 60 if args.minutes else None},
    }
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = validate_spec_dict(raw, "soak")
    rows: list[dict] = []
    start = time.perf_counter()

    def sample(n_done: int) -> None:
        gc.collect()  # count what is still referenced, not garbage waiting for a collection
        row = {"trials": n_done, "rss_mib": round(rss_mib(), 1), "fds": open_fds(),
               "elapsed_s": round(time.perf_counter() - start, 1)}
        if torch.cuda.is_available() and args.device.startswith("cuda"):
            row["cuda_alloc_mib"] = round(torch.cuda.memory_allocated() / 2**20, 1)
        rows.append(row)
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)

    def progress(p) -> None:
        if p.n_done % args.every == 0 or p.n_done == 1:
            sample(p.n_done)

    print(f"soak: {args.dataset}, sampler {args.sampler}, device {args.device}, up to {args.trials} trials; "
          f"study in {work}", flush=True)
    print(f"before the study: rss_mib {rss_mib():.1f}  fds {open_fds()}", flush=True)
    outcome = run_search(spec, progress=progress)
    summarize(outcome, spec)
    n = sum(outcome.summary["trials"].values())
    if not rows or rows[-1]["trials"] != n:
        sample(n)
    slope = slope_kib(rows)
    complete = [t for t in outcome.study.trials if t.state.name == "COMPLETE"]
    control = control_study(spec, complete[-1], n, args.every, work)
    control_slope = slope_kib(control)
    print(f"control (no training, same bookkeeping): {n} trials, RSS "
          f"{control[0]['rss_mib']} -> {control[-1]['rss_mib']} MiB, {control_slope:.2f} KiB/trial, fds "
          f"{control[0]['fds']} -> {control[-1]['fds']}", flush=True)
    result = {"trials": n, "states": outcome.summary["trials"], "wall_s": round(time.perf_counter() - start, 1),
              "rss_first_mib": rows[0]["rss_mib"], "rss_last_mib": rows[-1]["rss_mib"],
              "fds_first": rows[0]["fds"], "fds_last": rows[-1]["fds"], "kib_per_trial_second_half": round(slope, 2),
              "control_kib_per_trial_second_half": round(control_slope, 2), "rows": rows, "control_rows": control,
              "python": sys.version.split()[0], "torch": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"soak done: {n} trials ({result['states']}) in {result['wall_s']} s; RSS {result['rss_first_mib']} -> "
          f"{result['rss_last_mib']} MiB ({slope:.2f} KiB/trial over the second half; Optuna's bookkeeping alone, "
          f"the control: {control_slope:.2f} KiB/trial); fds {result['fds_first']} "
          f"-> {result['fds_last']}; wrote {args.out}")


if __name__ == "__main__":
    main()
