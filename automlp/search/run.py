"""`run_search(spec)`: open (or resume) the study, run trials until the study-wide budget or the timeout, then
give back the best trial's model for scoring. `run_worker(spec, stop)`: the same trials, from another process."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import optuna
import torch

from automlp.portfolio import enqueue_portfolio
from automlp.data import PreparedData, TrainData, prepare_data, resolve_device, to_tensors
from automlp.folds import use_kfold
from automlp.heldout import ENSEMBLE_CANDIDATES, rank_trials
from automlp.metrics import get_metric
from automlp.retry import outage_notes, storage_notes
from automlp.search.budget import trial_budget
from automlp.search.runners import make_runner
from automlp.search.study import n_finished, open_study, resolve_metric
from automlp.search.kfold import KFoldTrials, make_foldset
from automlp.search.trial import BestKeeper, TrialRun, Trials, replay
from automlp.spec import Spec


@dataclass
class Progress:
    """What the CLI's progress line shows after each trial."""

    n_done: int
    n_total: int | None
    best_value: float | None
    elapsed_s: float
    eta_s: float | None
    last_state: str


@dataclass
class SearchOutcome:
    """A finished (or interrupted) search. `summary` is filled by automlp.report.summary.summarize."""

    study: optuna.Study
    data: PreparedData
    metric: str
    best_run: TrialRun | None = None
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0
    device: torch.device = torch.device("cpu")
    summary: dict | None = None
    final: object | None = None  # automlp.search.final.FinalModel: what the search ships (study.final)


def set_threads(spec: Spec) -> int:
    n = spec.training.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def best_value(study: optuna.Study) -> float | None:
    try:
        return study.best_value
    except ValueError:
        return None


def progress_callback(progress: Callable[[Progress], None], n_total: int | None, start: float, n_before: int):
    def cb(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        n_done = n_finished(study)
        elapsed = time.perf_counter() - start
        ran = n_done - n_before
        eta = max(n_total - n_done, 0) * elapsed / ran if n_total and ran > 0 else None
        progress(Progress(n_done, n_total, best_value(study), elapsed, eta, trial.state.name))
    return cb


def _open(spec: Spec) -> tuple[torch.device, PreparedData, str, optuna.Study, TrainData]:
    """What every search process does first: threads, device, data, metric, the study, tensors on the device."""
    set_threads(spec)
    device = resolve_device(spec.training.device)
    data = prepare_data(spec.data, spec.study.seed)
    metric = resolve_metric(spec, data.task)
    spec.study_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(spec, metric)
    return device, data, metric, study, to_tensors(data, device)


def run_worker(spec: Spec, stop: threading.Event, deadline: float | None = None) -> dict[str, int]:
    """Run trials of the shared study until its budget is spent (no test scoring, no summary).
    Returns the states of the trials this process ran; `deadline` is a time.time() (default: now + timeout)."""
    device, data, metric, study, tensors = _open(spec)
    if deadline is None and spec.study.timeout is not None:
        deadline = time.time() + spec.study.timeout
    mine: dict[str, int] = {}

    def count(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        mine[trial.state.name] = mine.get(trial.state.name, 0) + 1

    trials = make_trials(spec, data, tensors, metric)
    if make_runner(trials).run(study, trial_budget(spec), stop, deadline, [count]):
        mine["interrupted"] = 1
    return mine


def run_search(spec: Spec, progress: Callable[[Progress], None] | None = None,
               stop: threading.Event | None = None, launcher: Callable | None = None) -> SearchOutcome:
    """Run (or resume) the study the spec describes; its best trial's model comes back in `best_run`.

    `launcher(study, deadline, notes) -> interrupted`, when given, runs the trials elsewhere (worker processes)
    instead of in this process; `stop`, when set, ends the search after the running trials' current epoch."""
    start = time.perf_counter()
    deadline = None if spec.study.timeout is None else time.time() + spec.study.timeout
    stop = stop or threading.Event()
    device, data, metric, study, tensors = _open(spec)
    trials = make_trials(spec, data, tensors, metric)
    n_before, n_total = n_finished(study), spec.study.n_trials
    notes = list(data.notes) + storage_notes(study)
    if spec.training.precision in ("bf16", "fp16") and device.type != "cuda":
        notes.append(f"training.precision: {spec.training.precision} is CUDA mixed precision; on {device.type} "
                     "the trials train in fp32")
    notes += enqueue_portfolio(study, spec, metric, len(data.X_train))
    interrupted = False
    if n_total is not None and n_before >= n_total:
        notes.append(f"the study already has {n_before} finished trials (n_trials: {n_total}); nothing to run. "
                     "Raise --n-trials to add more")
    elif launcher is not None:
        interrupted = launcher(study, deadline, notes)
    else:
        callbacks = [progress_callback(progress, n_total, start, n_before)] if progress is not None else []
        interrupted = make_runner(trials).run(study, trial_budget(spec), stop, deadline, callbacks)
    notes += outage_notes(study)
    if interrupted:
        notes.append("interrupted: the running trials were marked FAIL; run the same command to resume")
    best_run = score_best(study, spec, trials)
    from automlp.search.final import build_final  # it builds on the rest of this package

    final = build_final(spec, study, data, tensors, metric, best_run, kept=trials.best_run)
    return SearchOutcome(study, data, metric, best_run, notes, interrupted, time.perf_counter() - start, device,
                         final=final)


def make_trials(spec: Spec, data: PreparedData, tensors: TrainData, metric: str) -> Trials:
    """Holdout trials, or k-fold trials (study.validation) whose folds are prepared here, once per process."""
    # an ensemble draws on the top trials: keep their models, so it needs no retraining (and uses the very models
    # whose validation outputs were scored); otherwise the best one
    keep = ENSEMBLE_CANDIDATES if spec.study.final == "ensemble" else 1
    keeper = BestKeeper(get_metric(metric).direction, keep)
    n_fit = len(data.y_train) + len(data.y_val)
    if not use_kfold(spec.study.validation, n_fit):
        return Trials(spec, data, tensors, metric, keeper)
    foldset = make_foldset(data, spec.study.folds, spec.study.seed, tensors.device)
    return KFoldTrials(spec, data, tensors, metric, keeper, foldset)


def score_best(study: optuna.Study, spec: Spec, trials: Trials) -> TrialRun | None:
    """The best trial's model (ties: the lower validation loss): kept from this run, or replayed from its seed
    when another process ran it (or when it is a k-fold trial: its configuration on the search's own split)."""
    ranked = rank_trials(study)
    if not ranked:
        return None
    best = ranked[0]
    return trials.best_run(best) or replay(best, spec, trials.data, trials.tensors, trials.metric)
