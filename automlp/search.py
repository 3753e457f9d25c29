"""The only place a trial meets training: suggest a config from the space, train, report, prune.

`run_search(spec)` opens (or resumes) the study, runs trials until the study-wide budget or the timeout,
then scores the best trial once on the test split and returns a `SearchOutcome`.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import optuna
import torch
from optuna.trial import TrialState

from automlp.data import PreparedData, TrainData, prepare_data, resolve_device, to_tensors
from automlp.engine import TrainConfig, TrainResult, predict, seed_everything, train
from automlp.errors import SpecError, StorageError
from automlp.metrics import default_metric, get_metric, score_all
from automlp.model import MLPConfig, build_mlp, count_params
from automlp.spec import Param, Spec, check_metric_fits
from automlp.storage import TrialBudget, open_storage, redact, run_trials, storage_of

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


# --------------------------------------------------------------------------- the space


def _suggest(trial: optuna.Trial, p: Param, name: str | None = None):
    name = name or p.name
    if p.kind == "cat":
        return trial.suggest_categorical(name, list(p.choices) if p.choices is not None else [p.value])
    if p.choices is not None:
        return trial.suggest_categorical(name, list(p.choices))
    if p.is_fixed:
        low = high = p.value
        log, step = False, None
    else:
        low, high, log, step = p.low, p.high, p.log, p.step
    if p.kind == "int":
        return trial.suggest_int(name, int(low), int(high), step=int(step or 1), log=log)
    return trial.suggest_float(name, float(low), float(high), step=step, log=log)


def suggest_params(trial: optuna.Trial, spec: Spec) -> dict:
    """Sample one configuration. Conditional parameters exist only where they act:
    momentum/nesterov with sgd, power_t with invscaling, lr and batch_size without lbfgs,
    width_i for the layers i the sampled depth creates (width_mode: per_layer)."""
    space = spec.space
    params = {"depth": _suggest(trial, space.depth)}
    if space.width_mode == "per_layer":
        params["widths"] = [_suggest(trial, space.width, f"width_{i}") for i in range(params["depth"])]
    else:
        width = _suggest(trial, space.width) if params["depth"] > 0 else 0
        params["widths"] = [width] * params["depth"]
    for name in ("activation", "optimizer", "alpha", "dropout", "lr_schedule", "max_epochs"):
        params[name] = _suggest(trial, getattr(space, name))
    if params["optimizer"] != "lbfgs":
        params["lr"] = _suggest(trial, space.lr)
        params["batch_size"] = _suggest(trial, space.batch_size)
    if params["optimizer"] == "sgd":
        params["momentum"] = _suggest(trial, space.momentum)
        params["nesterov"] = _suggest(trial, space.nesterov)
    if params["lr_schedule"] == "invscaling":
        params["power_t"] = _suggest(trial, space.power_t)
    return params


def active_params(spec: Spec) -> dict[str, Param]:
    """The parameters some trial can sample (conditional ones whose condition can never hold are left out)."""
    params = spec.space.params()
    values = {n: set(p.grid_values() or []) for n, p in params.items() if p.kind == "cat"}
    if values["optimizer"] == {"lbfgs"}:
        params.pop("lr"), params.pop("batch_size")
    if "sgd" not in values["optimizer"]:
        params.pop("momentum"), params.pop("nesterov")
    if "invscaling" not in values["lr_schedule"]:
        params.pop("power_t")
    return params


def grid_space(spec: Spec) -> dict[str, list]:
    """Every parameter's finite values, for the grid sampler; a continuous range is an error."""
    space = spec.space
    out = {}
    for name, p in space.params().items():
        values = p.grid_values()
        if values is None:
            raise SpecError(f"space.{name}: the grid sampler needs a finite set of values; give a list of "
                            "choices or a range with a step")
        if name == "width" and space.width_mode == "per_layer":
            for i in range(int(max(space.depth.grid_values()))):
                out[f"width_{i}"] = values
        else:
            out[name] = values
    return out


def configs_from_params(params: dict, spec: Spec, data: PreparedData, metric: str,
                        seed: int) -> tuple[MLPConfig, TrainConfig]:
    """Concrete configs from sampled params (as returned by `suggest_params` or rebuilt by `params_of`)."""
    es = spec.training.early_stopping
    mlp = MLPConfig(n_inputs=data.n_features, n_outputs=data.n_outputs, widths=tuple(params["widths"]),
                    activation=params["activation"], dropout=float(params["dropout"]))
    tc = TrainConfig(
        optimizer=params["optimizer"], lr=float(params.get("lr", 1.0)), alpha=float(params["alpha"]),
        batch_size=int(params.get("batch_size", len(data.X_train))), max_epochs=int(params["max_epochs"]),
        lr_schedule=params["lr_schedule"], momentum=float(params.get("momentum", 0.0)),
        nesterov=bool(params.get("nesterov", False)), power_t=float(params.get("power_t", 0.5)),
        patience=es.patience if es.enabled else None, min_delta=es.min_delta, monitor=es.monitor, seed=seed,
        metric=metric, precision=spec.training.precision)
    return mlp, tc


def params_of(trial: optuna.trial.FrozenTrial) -> dict:
    """A finished trial's params in `suggest_params` form (widths as a list)."""
    p = dict(trial.params)
    depth = p["depth"]
    if "width_0" in p or depth == 0:
        p["widths"] = [p.pop(f"width_{i}") for i in range(depth)]
    else:
        p["widths"] = [p["width"]] * depth
    for i in range(64):
        p.pop(f"width_{i}", None)
    p.pop("width", None)
    return p


def trial_seed(study_seed: int, number: int) -> int:
    return (study_seed * 1_000_003 + number * 7_919 + 17) % (2**31 - 1)


# --------------------------------------------------------------------------- one trial


@dataclass
class TrialRun:
    """A trained model of one configuration, with its scores."""

    model: torch.nn.Module
    mlp: MLPConfig
    config: TrainConfig
    result: TrainResult
    val_metrics: dict[str, float]


def run_config(mlp: MLPConfig, tc: TrainConfig, data: PreparedData, tensors: TrainData,
               on_epoch: Callable[[int, float], bool] | None = None) -> TrialRun:
    """Build, train (seeded) and score one configuration on the validation split."""
    seed_everything(tc.seed)
    model = build_mlp(mlp).to(tensors.device)
    result = train(model, tensors, tc, on_epoch)
    val_metrics = {}
    if result.best_epoch:
        out = predict(model, tensors.X_val).float().cpu().numpy()
        val_metrics = score_all(data.task, data.y_val, out, data.target_mean, data.target_std)
    return TrialRun(model, mlp, tc, result, val_metrics)


def _round(xs: list[float]) -> list[float]:
    return [float(f"{x:.5g}") for x in xs]


def record_run(trial: optuna.Trial, run: TrialRun) -> None:
    """The user attrs every trial carries (reports and exports read these)."""
    r = run.result
    attrs = {
        "seed": run.config.seed, "n_params": count_params(run.mlp), "widths": list(run.mlp.widths),
        "architecture": run.mlp.describe(), "n_epochs": r.n_epochs, "best_epoch": r.best_epoch,
        "stop_reason": r.stop_reason, "train_time_s": round(r.train_time_s, 4),
        "curves": {k: _round(v) for k, v in r.history.items()}, "val_metrics": run.val_metrics,
    }
    if r.notes:
        attrs["notes"] = r.notes
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


@dataclass
class Objective:
    spec: Spec
    data: PreparedData
    tensors: TrainData
    metric: str
    keeper: "BestKeeper"
    stop: threading.Event | None = None  # set on Ctrl-C: the trial ends after its current epoch (FAIL)

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest_params(trial, self.spec)
        mlp, tc = configs_from_params(params, self.spec, self.data, self.metric,
                                      trial_seed(self.spec.study.seed, trial.number))

        def on_epoch(epoch: int, value: float) -> bool:
            if self.stop is not None and self.stop.is_set():
                raise KeyboardInterrupt  # Optuna marks the trial FAIL and re-raises; run_trials catches it
            trial.report(value, epoch)
            return trial.should_prune()

        run = run_config(mlp, tc, self.data, self.tensors, on_epoch)
        record_run(trial, run)
        r = run.result
        try:
            if r.stop_reason == "diverged":
                raise optuna.TrialPruned(f"diverged: {'; '.join(r.notes)}")
            if r.stop_reason == "pruned":
                raise optuna.TrialPruned(f"pruned at epoch {r.n_epochs}")
            self.keeper.offer(trial.number, run)
            return r.best_val_score
        finally:
            del run
            if self.tensors.device.type == "cuda":
                torch.cuda.empty_cache()


class BestKeeper:
    """Keeps the best model trained in this process (on the host), so the final test scoring needs no retraining."""

    def __init__(self, direction: str):
        self.direction = direction
        self.number: int | None = None
        self.value = -math.inf if direction == "maximize" else math.inf
        self.state: dict | None = None
        self.mlp: MLPConfig | None = None

    def offer(self, number: int, run: TrialRun) -> None:
        v = run.result.best_val_score
        if (v > self.value) if self.direction == "maximize" else (v < self.value):
            self.number, self.value, self.mlp = number, v, run.mlp
            self.state = {k: t.detach().to("cpu", copy=True) for k, t in run.model.state_dict().items()}


# --------------------------------------------------------------------------- the study


def resolve_metric(spec: Spec, task: str) -> str:
    metric = spec.study.metric or default_metric(task)
    check_metric_fits(metric, task)
    return metric


def make_sampler(spec: Spec) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        # QMC is "experimental" in Optuna; the user chose it by name, a warning on every run adds nothing
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _make_sampler(spec)


def _make_sampler(spec: Spec) -> optuna.samplers.BaseSampler:
    s, seed = spec.study.sampler, spec.study.seed
    if s.type == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials)
    if s.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.type == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if s.type == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=s.n_startup_trials,
                                            warn_independent_sampling=False)
    return optuna.samplers.GridSampler(grid_space(spec), seed=seed)


def make_pruner(spec: Spec) -> optuna.pruners.BasePruner:
    p = spec.study.pruner
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.type == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def space_fingerprint(spec: Spec) -> dict:
    """What a study may not change between runs: the space, the metric and the data source."""
    return {name: p.describe() for name, p in spec.space.params().items()} | {"width_mode": spec.space.width_mode}


def storage_url(spec: Spec) -> str:
    return storage_of(spec)


def open_study(spec: Spec, metric: str, create: bool = True) -> optuna.Study:
    """Create or resume the study; refuse one that exists with another space or metric."""
    url = storage_url(spec)
    storage = open_storage(url, spec.study.heartbeat_interval, spec.study.grace_period, where=spec.study.storage_where)
    name = spec.study.name
    direction = get_metric(metric).direction
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction=direction,
                                    sampler=make_sampler(spec), pruner=make_pruner(spec), load_if_exists=True)
    except ValueError as e:  # e.g. an existing study with the other direction
        raise StorageError(f"study.name: a study '{name}' exists in {redact(url)} and does not fit this spec "
                           f"({e}); choose another study.name") from None
    fp = space_fingerprint(spec)
    old = study.user_attrs.get("automlp_space")
    old_metric = study.user_attrs.get("automlp_metric")
    if old is None:
        study.set_user_attr("automlp_space", fp)
        study.set_user_attr("automlp_metric", metric)
    else:
        changed = [k for k in sorted(set(fp) | set(old)) if fp.get(k) != old.get(k)]
        if old_metric != metric:
            changed.insert(0, "metric")
        if changed:
            k = changed[0]
            what = f"{old_metric} -> {metric}" if k == "metric" else f"{old.get(k)} -> {fp.get(k)}"
            raise StorageError(
                f"study.name: study '{name}' in {redact(url)} was run with another search space "
                f"({', '.join('space.' + c if c != 'metric' else 'study.metric' for c in changed)}; {k}: {what}); "
                "its trials would not be comparable. Use a new study.name, or put the old values back")
    return study


def count_states(study: optuna.Study) -> dict[str, int]:
    counts = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] += 1
    return {k: v for k, v in counts.items() if v}


def set_threads(spec: Spec) -> int:
    n = spec.training.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


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
    study: optuna.Study
    data: PreparedData
    metric: str
    summary: dict
    best_run: TrialRun | None = None
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False


def _progress_callback(progress, n_total, start, n_before):
    def cb(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        n_done = sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED))
        try:
            best = study.best_value
        except ValueError:
            best = None
        elapsed = time.perf_counter() - start
        ran = n_done - n_before
        eta = None
        if n_total and ran > 0:
            eta = max(n_total - n_done, 0) * elapsed / ran
        progress(Progress(n_done, n_total, best, elapsed, eta, trial.state.name))
    return cb


def trial_budget(spec: Spec) -> TrialBudget:
    """n_trials is study-wide; workers of this machine share a lock file in the study folder."""
    return TrialBudget(spec.study.n_trials, spec.study_dir / ".budget.lock")


def _open(spec: Spec) -> tuple[torch.device, PreparedData, str, optuna.Study, TrainData]:
    """What every search process does first: threads, device, data, metric, the study, tensors on the device."""
    set_threads(spec)
    device = resolve_device(spec.training.device)
    data = prepare_data(spec.data, spec.study.seed)
    metric = resolve_metric(spec, data.task)
    spec.study_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(spec, metric)
    return device, data, metric, study, to_tensors(data, device)


def _run(objective: Objective, study: optuna.Study, stop: threading.Event, deadline: float | None,
         callbacks: list) -> bool:
    """Trials until the study-wide budget is spent: one at a time, or in stacks (training.population)."""
    if objective.spec.training.population != 1:
        # the population layer builds on this module's objective, so it is imported only when used
        from automlp.population.search import run_population

        return run_population(objective, study, trial_budget(objective.spec), stop=stop, deadline=deadline,
                              callbacks=callbacks)
    return run_trials(study, objective, trial_budget(objective.spec), stop=stop, deadline=deadline,
                      callbacks=callbacks, catch=(torch.OutOfMemoryError,))


def run_worker(spec: Spec, stop: threading.Event, deadline: float | None = None) -> dict[str, int]:
    """Run trials of the shared study until its budget is spent (no test scoring, no summary).
    Returns the states of the trials this process ran; `deadline` is a time.time() (default: now + timeout)."""
    device, data, metric, study, tensors = _open(spec)
    if deadline is None and spec.study.timeout is not None:
        deadline = time.time() + spec.study.timeout
    mine: dict[str, int] = {}

    def count(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        mine[trial.state.name] = mine.get(trial.state.name, 0) + 1

    objective = Objective(spec, data, tensors, metric, BestKeeper(get_metric(metric).direction), stop)
    interrupted = _run(objective, study, stop, deadline, [count])
    if interrupted:
        mine["interrupted"] = 1
    return mine


def run_search(spec: Spec, progress: Callable[[Progress], None] | None = None,
               stop: threading.Event | None = None, launcher: Callable | None = None) -> SearchOutcome:
    """Run (or resume) the study the spec describes, then score its best trial on the test split.

    `launcher(study, deadline, notes) -> interrupted`, when given, runs the trials elsewhere (worker processes)
    instead of in this process; `stop`, when set, ends the search after the running trial's current epoch."""
    start = time.perf_counter()
    deadline = None if spec.study.timeout is None else time.time() + spec.study.timeout
    stop = stop or threading.Event()
    device, data, metric, study, tensors = _open(spec)
    keeper = BestKeeper(get_metric(metric).direction)
    n_before = sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED))
    n_total = spec.study.n_trials
    to_run = None if n_total is None else max(n_total - n_before, 0)
    notes = list(data.notes)
    if spec.training.precision in ("bf16", "fp16") and device.type != "cuda":
        notes.append(f"training.precision: {spec.training.precision} is CUDA mixed precision; on {device.type} "
                     "the trials train in fp32")
    interrupted = False
    if to_run == 0:
        notes.append(f"the study already has {n_before} finished trials (n_trials: {n_total}); nothing to run. "
                     "Raise --n-trials to add more")
    elif launcher is not None:
        interrupted = launcher(study, deadline, notes)
    else:
        callbacks = [_progress_callback(progress, n_total, start, n_before)] if progress is not None else []
        interrupted = _run(Objective(spec, data, tensors, metric, keeper, stop), study, stop, deadline, callbacks)
    if interrupted:
        # the interrupted trials were marked FAIL; keep what finished and say so
        notes.append("interrupted: the running trials were marked FAIL; run the same command to resume")
    best_run = score_best(study, spec, data, tensors, metric, keeper)
    summary = build_summary(study, spec, data, metric, best_run, time.perf_counter() - start, device)
    write_summary(summary, spec)
    return SearchOutcome(study, data, metric, summary, best_run, notes, interrupted)


def replay(trial: optuna.trial.FrozenTrial, spec: Spec, data: PreparedData, tensors: TrainData,
           metric: str) -> TrialRun:
    """Retrain a finished trial from its params and stored seed (same curves on CPU)."""
    if "population" in trial.user_attrs:  # trained in a stack: replay it with the stack's batch order
        from automlp.population.search import replay_member

        return replay_member(trial, spec, data, tensors, metric)
    seed = trial.user_attrs.get("seed", trial_seed(spec.study.seed, trial.number))
    mlp, tc = configs_from_params(params_of(trial), spec, data, metric, seed)
    return run_config(mlp, tc, data, tensors)


def score_best(study: optuna.Study, spec: Spec, data: PreparedData, tensors: TrainData, metric: str,
               keeper: BestKeeper) -> TrialRun | None:
    """The best trial's model: kept from this run, or replayed from its seed when another process ran it."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    if keeper.number == best.number and keeper.state is not None:
        seed_everything(0)
        model = build_mlp(keeper.mlp).to(tensors.device)
        model.load_state_dict(keeper.state)
        mlp, tc = configs_from_params(params_of(best), spec, data, metric, best.user_attrs.get("seed", 0))
        r = best.user_attrs
        result = TrainResult(history=r.get("curves", {}), best_epoch=r.get("best_epoch", 0),
                             n_epochs=r.get("n_epochs", 0), stop_reason=r.get("stop_reason", ""),
                             best_val_score=best.value, best_val_loss=float("nan"),
                             train_time_s=r.get("train_time_s", 0.0))
        return TrialRun(model, mlp, tc, result, r.get("val_metrics", {}))
    return replay(best, spec, data, tensors, metric)


def split_scores(run: TrialRun, data: PreparedData, device: torch.device) -> dict[str, dict[str, float]]:
    """Every metric of the task on train, validation and test, for one trained model."""
    out = {}
    for split, X, y in (("train", data.X_train, data.y_train), ("val", data.X_val, data.y_val),
                        ("test", data.X_test, data.y_test)):
        pred = predict(run.model, torch.as_tensor(X, device=device)).float().cpu().numpy()
        out[split] = score_all(data.task, y, pred, data.target_mean, data.target_std)
    return out


def build_summary(study: optuna.Study, spec: Spec, data: PreparedData, metric: str, best_run: TrialRun | None,
                  wall_s: float, device: torch.device) -> dict:
    summary = {
        "study": spec.study.name, "storage": redact(storage_url(spec)), "metric": metric,
        "direction": get_metric(metric).direction, "task": data.task, "data": data.source,
        "rows": data.sizes(), "n_features": data.n_features, "classes": [str(c) for c in data.classes],
        "trials": count_states(study), "wall_time_s": round(wall_s, 2), "device": str(device),
        "best": None,
    }
    if best_run is None:
        return summary
    best = study.best_trial
    scores = split_scores(best_run, data, best_run.model.parameters().__next__().device)
    r = best_run.result
    summary["best"] = {
        "trial": best.number, "value": best.value, "params": best.params,
        "architecture": best_run.mlp.describe(), "layers": best_run.mlp.layer_sizes(),
        "activation": best_run.mlp.activation, "n_params": count_params(best_run.mlp),
        "epochs_trained": r.n_epochs, "best_epoch": r.best_epoch, "max_epochs": best_run.config.max_epochs,
        "early_stopped": r.stop_reason == "early_stopping", "stop_reason": r.stop_reason,
        "train_time_s": r.train_time_s, "seed": best.user_attrs.get("seed"),
        "scores": scores,
    }
    return summary


def summary_markdown(s: dict) -> str:
    lines = [f"# automlp study `{s['study']}`", "",
             f"- data: {s['data']} ({s['task']}; rows train/val/test: {s['rows']['train']}/{s['rows']['val']}/"
             f"{s['rows']['test']}; {s['n_features']} features after preprocessing)",
             f"- metric: {s['metric']} ({s['direction']})",
             f"- trials: " + ", ".join(f"{k.lower()} {v}" for k, v in s["trials"].items()),
             f"- wall time: {s['wall_time_s']:.1f} s on {s['device']}", f"- storage: {s['storage']}", ""]
    b = s["best"]
    if b is None:
        return "\n".join(lines + ["No trial finished, so there is no best model yet."]) + "\n"
    lines += [f"## Best trial: #{b['trial']}", "", f"- architecture: {b['architecture']} "
              f"({b['n_params']:,} parameters)",
              f"- epochs: {b['epochs_trained']} of at most {b['max_epochs']} (best epoch {b['best_epoch']}; "
              f"{'early stopping fired' if b['early_stopped'] else 'stopped: ' + b['stop_reason']})", "",
              "| parameter | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in b["params"].items()]
    metrics = list(b["scores"]["val"])
    lines += ["", "| split | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for split in ("train", "val", "test"):
        lines.append(f"| {split} | " + " | ".join(_fmt(b["scores"][split].get(m)) for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def write_summary(summary: dict, spec: Spec) -> None:
    d = spec.study_dir
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    tmp.replace(d / "summary.json")  # atomic: a crash never leaves half a summary
    (d / "summary.md").write_text(summary_markdown(summary))
