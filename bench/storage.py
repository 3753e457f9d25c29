"""Storage overhead per trial, and throughput against the number of worker processes.

    python bench/storage.py [--trials 40] [--rounds 3] [--skip-workers]

1. Per-trial storage overhead: the same seeded automlp trials (digits, random sampler, so every storage trains
   the very same configurations) run in this process on each storage, in interleaved rounds. The wall time spent
   inside the storage's methods is clocked directly (outermost calls, heartbeat thread included) and shown
   per trial and as a share of the trial's wall time; a direct clock, unlike a difference of two wall times,
   stays meaningful on a busy machine. Heartbeats and the study-wide budget checks are on, as in `automlp search`.
2. Throughput: `automlp search --workers 1` (all cores, and one thread) against `--workers 2` (cores split) on
   the default journal storage, same spec, trials per second over the trial phase (first trial start to last
   trial end) and over the whole command (start-up, the final replay and test scoring included).

PostgreSQL and MariaDB are measured when reachable (127.0.0.1, databases `test`); the figures are printed as a
Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import optuna
import yaml

from automlp.data import prepare_data, to_tensors, resolve_device
from automlp.metrics import get_metric
from automlp.search.budget import TrialBudget
from automlp.search.run import set_threads
from automlp.search.runners import StackRunner
from automlp.search.study import resolve_metric
from automlp.search.trial import BestKeeper, Trials
from automlp.spec import load_spec
from automlp.storage import open_storage
from optuna.storages._cached_storage import _CachedStorage

SERVERS = {"postgresql": "postgresql://postgres@127.0.0.1:5432/test",
           "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test"}


def bench_spec(folder: Path, name: str, n_trials: int, threads: int | None = None) -> Path:
    spec = {
        "data": {"dataset": "sklearn:digits", "test_size": 0.2},
        "space": {"depth": {"low": 1, "high": 2}, "width": {"low": 16, "high": 128, "log": True},
                  "optimizer": "adam", "lr": {"low": 1e-3, "high": 3e-2, "log": True}, "batch_size": 128,
                  "max_epochs": 4},
        "training": {"early_stopping": {"enabled": False}, "device": "cpu", "threads": threads},
        "study": {"name": name, "n_trials": n_trials, "sampler": "random", "pruner": "none", "seed": 0},
        "output": {"dir": str(folder / "studies")},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def reachable(url: str) -> bool:
    import sqlalchemy

    try:
        with sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3}).connect():
            return True
    except Exception:  # absent server or driver: measure the others
        return False


class StorageClock:
    """Wall time spent inside the public methods of one storage object (outermost calls only, any thread)."""

    def __init__(self, storage):
        self.total, self.calls, self._local = 0.0, 0, threading.local()
        self._lock = threading.Lock()
        for name in dir(optuna.storages.BaseStorage):
            if not name.startswith("_") and callable(getattr(storage, name, None)):
                setattr(storage, name, self._timed(getattr(storage, name)))
        for name in ("record_heartbeat", "_get_stale_trial_ids"):
            if hasattr(storage, name):
                setattr(storage, name, self._timed(getattr(storage, name)))

    def _timed(self, fn):
        def wrapper(*args, **kwargs):
            depth = getattr(self._local, "depth", 0)
            self._local.depth = depth + 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._local.depth = depth
                if depth == 0:
                    with self._lock:
                        self.total += time.perf_counter() - t0
                        self.calls += 1
        return wrapper


def run_on(spec, storage, n_trials: int) -> tuple[float, float, int]:
    """(wall s per trial, storage s per trial, storage calls per trial) on a fresh study of `storage`."""
    set_threads(spec)
    data = prepare_data(spec.data, spec.study.seed)
    metric = resolve_metric(spec, data.task)
    tensors = to_tensors(data, resolve_device("cpu"))
    name = f"bench_{uuid.uuid4().hex[:8]}"
    if isinstance(storage, optuna.storages.RDBStorage):
        storage = _CachedStorage(storage)  # what optuna.create_study would wrap it in; time the wrapper
    study = optuna.create_study(study_name=name, storage=storage, direction=get_metric(metric).direction,
                                sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner())
    clock = StorageClock(storage)
    trials = Trials(spec, data, tensors, metric, BestKeeper(get_metric(metric).direction))
    t0 = time.perf_counter()
    StackRunner(trials).run(study, TrialBudget(n_trials), threading.Event())
    wall = time.perf_counter() - t0
    if not isinstance(storage, optuna.storages.InMemoryStorage):
        optuna.delete_study(study_name=name, storage=storage)
    return wall / n_trials, clock.total / n_trials, round(clock.calls / n_trials)


def storage_overhead(tmp: Path, n_trials: int, rounds: int) -> None:
    spec = load_spec(bench_spec(tmp, "overhead", n_trials))
    makers = {
        "in-memory": lambda: optuna.storages.InMemoryStorage(),
        "journal file": lambda: open_storage(f"journal:///{tmp}/bench.journal"),
        "SQLite": lambda: open_storage(f"sqlite:///{tmp}/bench.db"),
    }
    for label, url in SERVERS.items():
        if reachable(url):
            makers[label] = (lambda u: lambda: open_storage(u))(url)
        else:
            print(f"({label} not reachable at {url}: not measured)")
    samples: dict[str, list[tuple]] = {k: [] for k in makers}
    run_on(spec, optuna.storages.InMemoryStorage(), 3)  # warm up torch and the data path
    for r in range(rounds):
        for label, make in makers.items():
            samples[label].append(run_on(spec, make(), n_trials))
    print(f"\n## Per-trial storage overhead ({n_trials} trials x {rounds} rounds per storage; digits, "
          f"{spec.space.depth.describe()} layers, {spec.space.max_epochs.value} epochs; heartbeats and budget "
          "checks on)\n")
    print("| storage | trial wall s | storage ms/trial | storage calls/trial | storage / trial wall |")
    print("|---|---|---|---|---|")
    for label, xs in samples.items():
        wall = statistics.median(x[0] for x in xs)
        st = statistics.median(x[1] for x in xs)
        calls = statistics.median(x[2] for x in xs)
        print(f"| {label} | {wall:.3f} | {st * 1000:.1f} | {calls:.0f} | {st / wall:.1%} |")


def throughput(tmp: Path, n_trials: int, rounds: int) -> None:
    """`automlp search --workers N`; rows run in ABC CBA ... order so drift in the machine's load evens out."""
    automlp = str(Path(sys.executable).with_name("automlp"))
    cores = len(os.sched_getaffinity(0))
    configs = [(1, None), (1, 1), (2, None)]  # (workers, training.threads); None: cores // workers
    runs: dict[tuple, list[tuple[float, float]]] = {c: [] for c in configs}
    for r in range(rounds):
        for workers, threads in (configs if r % 2 == 0 else configs[::-1]):
            name = f"tp{workers}_{threads}_{r}"
            spec = bench_spec(tmp, name, n_trials, threads)
            t0 = time.perf_counter()
            subprocess.run([automlp, "search", str(spec), "--workers", str(workers), "-q"], cwd=tmp, check=True,
                           capture_output=True)
            wall = time.perf_counter() - t0
            study = optuna.load_study(study_name=name, storage=open_storage(
                f"journal:///{tmp}/studies/{name}/study.journal"))
            ts = [t for t in study.trials if t.datetime_complete]
            phase = (max(t.datetime_complete for t in ts) - min(t.datetime_start for t in ts)).total_seconds()
            runs[(workers, threads)].append((wall, phase))
    print(f"\n## Throughput against worker processes (journal file, digits, {n_trials} trials, {cores} cores, "
          f"medians of {rounds} runs)\n")
    print("| workers x threads | command wall s | trial-phase s | trials/s (trial phase) | trials/s (command) |")
    print("|---|---|---|---|---|")
    base = None
    for (workers, threads), xs in runs.items():
        wall = statistics.median(x[0] for x in xs)
        phase = statistics.median(x[1] for x in xs)
        rate = n_trials / phase
        base = base or rate
        t = threads or max(1, cores // workers)
        print(f"| {workers} x {t} | {wall:.1f} | {phase:.1f} | {rate:.2f} ({rate / base:.2f}x) | "
              f"{n_trials / wall:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-workers", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_overhead:
            storage_overhead(tmp, args.trials, args.rounds)
        if not args.skip_workers:
            throughput(tmp, args.trials * 2, args.rounds)


if __name__ == "__main__":
    main()
