"""The population path of the search: Optuna's ask-and-tell around stacks of trials.

One generation: ask a leader trial and sample it; enqueue K-1 trials that fix the leader's structural choices
(depth, activation, optimizer, batch_size, max_epochs; `study.enqueue_trial` takes a partial set, the sampler fills
in the rest: widths, lr, alpha, dropout, momentum, the lr schedule), ask and sample those. The TPE sampler of
Optuna 5 uses the constant liar, so trials asked while others run spread out instead of piling onto one point.
The trials are grouped by `stack_key` (an enqueued trial taken by another worker leaves a fresh one that may not
fit the leader's stack), each group is trained as one stack, every member's validation score is reported each
epoch and each member is pruned on its own; then every trial is told. Trials carry the same params and user attrs
as sequential ones (plus "population": the stack's size and batch seed), so report and export read them alike.

No trial is left RUNNING: whatever was asked and not told when an exception (or Ctrl-C) passes is told FAIL.
The study-wide budget, heartbeats and retries are those of the sequential path (`storage.TrialBudget`), so
`--workers N` and `automlp worker` train populations too, and a killed worker's members are retried.
"""

from __future__ import annotations

import threading
import warnings
from collections import defaultdict
from collections.abc import Callable

import optuna
import torch
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState

from automlp.data import TrainData
from automlp.metrics import score_all
from automlp.engine import Member, TrainConfig, predict, stack_key, train_stack
from automlp.model import MLPConfig, count_params
from automlp.search import (Objective, TrialRun, configs_from_params, params_of, record_run, run_config,
                            suggest_params, trial_seed)  # fmt: skip
from automlp.spec import Spec
from automlp.storage import SKIP_NOTE, SKIPPED_ATTR, TrialBudget

STRUCTURAL = ("depth", "activation", "optimizer", "batch_size", "max_epochs")
# bench/population.py, 2 CPU cores: the rate per member-epoch peaks when a step's stacked matrix products reach
# about K x batch x params = 5e7 multiply-adds (K = 16-32 for 2x128 nets at batch 128) and falls beyond.
CPU_STEP_MACS = 5e7
CPU_POPULATION = (8, 32)
GPU_POPULATION = 128
Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def _upper(param) -> float:
    values = param.grid_values()
    if values:
        return max(values)
    return param.value if param.is_fixed else param.high


def population_size(spec: Spec, n_inputs: int, n_outputs: int, device: torch.device) -> int:
    """training.population, or for auto: as many members as the device runs well and its memory holds."""
    if spec.training.population != "auto":
        return int(spec.training.population)
    space = spec.space
    width, depth, batch = int(_upper(space.width)), int(_upper(space.depth)), int(_upper(space.batch_size))
    n_params = count_params(MLPConfig(n_inputs, n_outputs, (width,) * depth))
    # params, grads, two optimizer moments, the best-epoch snapshot; activations of a batch kept for backward
    per_member = 4 * (6 * n_params + 4 * batch * (width * depth + n_outputs))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(1, min(GPU_POPULATION, int(0.5 * free // per_member)))
    low, high = CPU_POPULATION
    k = min(high, max(low, round(CPU_STEP_MACS / (batch * n_params))))
    return max(1, min(k, int(2 * 2**30 // per_member)))


def run_population(objective: Objective, study: optuna.Study, budget: TrialBudget, *, stop: threading.Event,
                   deadline: float | None = None, callbacks: list[Callback] | None = None) -> bool:
    """Run generations of stacked trials until the study-wide budget is spent, `deadline` (a time.time())
    passes or `stop` is set; the population counterpart of `storage.run_trials`, so `automlp search`,
    `--workers` and `automlp worker` share one budget, heartbeats and retries whichever path trains.
    Returns True when stopped by `stop` or KeyboardInterrupt (the members still training are then FAIL)."""
    tensors = objective.tensors
    k_max = population_size(objective.spec, objective.data.n_features, objective.data.n_outputs, tensors.device)
    with warnings.catch_warnings():
        # Optuna warns that heartbeats are meant for study.optimize; Heartbeats below sends them for ask-and-tell
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        try:
            while not stop.is_set():
                with budget.local_lock() as release:
                    k = min(k_max, budget.wait_for_room(study, stop, deadline))
                    if k <= 0:
                        break
                    run_generation(objective, study, k, callbacks or [], deadline,
                                   admit=_admit(budget, release), stop=stop)
                if tensors.device.type == "cuda":
                    torch.cuda.empty_cache()
        except KeyboardInterrupt:
            return True
    return stop.is_set()


def _admit(budget: TrialBudget, release: Callable[[], None]) -> Callable[[optuna.Study, optuna.Trial], bool]:
    """After a generation is asked: let the other workers of this machine check the budget again, and keep
    only the members that fit it (workers of other machines may have taken the last slots meanwhile)."""

    def admit(study: optuna.Study, trial: optuna.Trial) -> bool:
        release()
        return budget.admits(study, trial)

    return admit


def run_generation(objective: Objective, study: optuna.Study, k: int, callbacks: list[Callback],
                   deadline: float | None = None, admit: Callable | None = None,
                   stop: threading.Event | None = None) -> int:  # fmt: skip
    """Ask up to k trials, train them in stacks, tell them all; returns how many were asked.

    A generation lasts as long as its longest member, so unlike study.optimize (which lets the running trial
    finish) members still training when the search's timeout (`deadline`, a time.time()) passes are
    stopped there and told PRUNED. When `stop` is set, the generation ends after the current epoch and the
    members still training are told FAIL (then KeyboardInterrupt is raised). Every asked trial sends heartbeats
    until it is told, so a worker killed mid-generation has its trials failed and retried by the others.
    """
    asked: list[optuna.Trial] = []
    told: set[int] = set()
    try:
        with Heartbeats(study) as beats:
            members = _ask(objective, study, k, asked, beats)
            if admit is not None:
                members = [m for m in members if admit(study, m[0]) or _skip(study, m[0], told)]
            groups: dict[tuple, list] = defaultdict(list)
            for m in members:
                groups[stack_key(m[1], m[2]) or ("alone", m[0].number)].append(m)
            for group in groups.values():
                _train_group(objective, study, group, told, callbacks, deadline, stop)
    finally:
        for trial in asked:
            if trial.number not in told:
                study.tell(trial, state=TrialState.FAIL)
    return len(asked)


def _skip(study: optuna.Study, trial: optuna.Trial, told: set[int]) -> bool:
    trial.set_user_attr(SKIPPED_ATTR, SKIP_NOTE)
    study.tell(trial, state=TrialState.FAIL)
    told.add(trial.number)
    return False


class Heartbeats:
    """Heartbeats for trials driven by ask-and-tell (Optuna sends them only inside study.optimize): each trial
    records one when asked, then one thread beats for every trial not yet told."""

    def __init__(self, study: optuna.Study):
        storage = study._storage
        self.storage = storage if is_heartbeat_enabled(storage) else None
        self.ids: set[int] = set()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, trial: optuna.Trial) -> None:
        if self.storage is not None:
            self.storage.record_heartbeat(trial._trial_id)
            with self.lock:
                self.ids.add(trial._trial_id)

    def __enter__(self) -> "Heartbeats":
        if self.storage is not None:
            self.thread = threading.Thread(target=self._beat, name="automlp-heartbeats", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()

    def _beat(self) -> None:
        interval = self.storage.get_heartbeat_interval()
        while not self.done.wait(interval):
            with self.lock:
                ids = sorted(self.ids)
            for trial_id in ids:
                if self.done.is_set():
                    return
                try:
                    if self.storage.get_trial(trial_id).state == TrialState.RUNNING:
                        self.storage.record_heartbeat(trial_id)
                except Exception:  # a storage hiccup must not kill the beat thread; the next beat retries
                    pass


def _ask(objective: Objective, study: optuna.Study, k: int, asked: list, beats: Heartbeats) -> list[tuple]:
    spec, data, metric = objective.spec, objective.data, objective.metric
    leader = study.ask()  # a trial queued for retry (its worker died) is taken first, with its parameters
    asked.append(leader)
    beats.add(leader)
    params = [suggest_params(leader, spec)]
    fixed = {name: leader.params[name] for name in STRUCTURAL if name in leader.params}
    if params[0]["optimizer"] != "lbfgs":  # lbfgs trains full-batch with a line search: never stacked
        for _ in range(k - 1):
            study.enqueue_trial(fixed)
            trial = study.ask()
            asked.append(trial)
            beats.add(trial)
            params.append(suggest_params(trial, spec))
    members = []
    for trial, p in zip(asked, params):
        mlp, tc = configs_from_params(p, spec, data, metric, trial_seed(spec.study.seed, trial.number))
        members.append((trial, mlp, tc))
    return members


def _train_group(objective: Objective, study: optuna.Study, group: list, told: set[int],
                 callbacks: list[Callback], deadline: float | None, stop: threading.Event | None) -> None:  # fmt: skip
    data, tensors = objective.data, objective.tensors
    trials = [t for t, _, _ in group]
    try:
        if len(group) == 1:
            trial, mlp, tc = group[0]
            runs = [run_config(mlp, tc, data, tensors, lambda e, v: _report(trial, e, v, stop))]
        else:
            runs = _train_stack(group, data, tensors, deadline, stop)
    except torch.OutOfMemoryError:
        return  # like study.optimize(catch=OutOfMemoryError): these trials are told FAIL, the search goes on
    for trial, run in zip(trials, runs):
        record_run(trial, run)
        if len(group) > 1:
            trial.set_user_attr("population", {"size": len(group), "batch_seed": group[0][2].seed})
        frozen = _tell(objective, study, trial, run)
        told.add(trial.number)
        for cb in callbacks:
            cb(study, frozen)


def _report(trial: optuna.Trial, epoch: int, value: float, stop: threading.Event | None = None) -> bool:
    if stop is not None and stop.is_set():
        raise KeyboardInterrupt  # Ctrl-C or SIGTERM: the generation's untold trials are told FAIL
    trial.report(value, epoch)
    return trial.should_prune()


def replay_member(trial: optuna.trial.FrozenTrial, spec: Spec, data, tensors: TrainData, metric: str) -> TrialRun:
    """Retrain a trial that was trained in a stack: alone, with its stack's batch order. Same curves up to float
    rounding when its dropout is 0 (the dropout draws of a stack depend on its size)."""
    mlp, tc = configs_from_params(params_of(trial), spec, data, metric, trial.user_attrs["seed"])
    member = Member(trial.number, mlp, tc, batch_seed=trial.user_attrs["population"]["batch_seed"])
    (outcome,) = train_stack([member], tensors)
    model, result = outcome.model.to(tensors.device), outcome.result
    out = predict(model, tensors.X_val).float().cpu().numpy() if result.best_epoch else None
    val_metrics = {} if out is None else score_all(data.task, data.y_val, out, data.target_mean, data.target_std)
    return TrialRun(model, mlp, tc, result, val_metrics)


def _train_stack(group: list, data, tensors: TrainData, deadline: float | None,
                 stop: threading.Event | None = None) -> list[TrialRun]:
    trials = [t for t, _, _ in group]
    mlps: list[MLPConfig] = [m for _, m, _ in group]
    tcs: list[TrainConfig] = [c for _, _, c in group]

    def on_epoch(reports) -> set[int]:
        return {r.tag for r in reports if _report(trials[r.tag], r.epoch, r.val_score, stop)}

    members = [Member(k, mlp, tc) for k, (mlp, tc) in enumerate(zip(mlps, tcs))]
    outcomes = {o.tag: o for o in train_stack(members, tensors, on_epoch=on_epoch, deadline=deadline)}
    runs = []
    for k, (mlp, tc) in enumerate(zip(mlps, tcs)):
        model, result = outcomes[k].model.to(tensors.device), outcomes[k].result
        val_metrics = {}
        if result.best_epoch:
            out = predict(model, tensors.X_val).float().cpu().numpy()
            val_metrics = score_all(data.task, data.y_val, out, data.target_mean, data.target_std)
        runs.append(TrialRun(model, mlp, tc, result, val_metrics))
    return runs


def _tell(objective: Objective, study: optuna.Study, trial: optuna.Trial, run: TrialRun):
    """The outcome the sequential Objective gives the same result: pruned and diverged trials are PRUNED."""
    r = run.result
    if r.stop_reason in ("pruned", "diverged"):
        return study.tell(trial, state=TrialState.PRUNED)
    objective.keeper.offer(trial.number, run)
    return study.tell(trial, r.best_val_score)
