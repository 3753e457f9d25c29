"""One trial: its typed record in the study, how it trains (alone or as a stack member), is reported and told.

`TrialRecord` is the schema of the user attrs every trained trial carries; it is the only code that writes or
reads them (reports and exports call `TrialRecord.read`). `Trials` turns asked Optuna trials into engine members
and their outcomes back into told trials; `Reporter` is the one on_epoch callback (report, then prune).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
import dataclasses
from dataclasses import dataclass, field

import optuna
import torch
from optuna.trial import TrialState

from automlp.data import DataVariants, PreparedData, TrainData, prepare_data, to_tensors
from automlp.metrics import score_all
from automlp.model import MLPConfig, build_mlp, count_params
from automlp.retry import TrialLost, storage_unreachable
from automlp.engine import (EpochReport, Member, MemberOutcome, TrainConfig, TrainResult, predict,
                                         stack_key, train_stack)  # fmt: skip
from automlp.heldout import save_predictions
from automlp.search.space import configs_from_params, params_of, suggest_params, trial_seed
from automlp.spec import Spec

# the user attr names of a trial record (the names studies already hold: keep them)
SEED, N_PARAMS, WIDTHS, ARCHITECTURE = "seed", "n_params", "widths", "architecture"
N_EPOCHS, BEST_EPOCH, STOP_REASON, TRAIN_TIME_S = "n_epochs", "best_epoch", "stop_reason", "train_time_s"
CURVES, VAL_METRICS, NOTES, POPULATION, SKIPPED = "curves", "val_metrics", "notes", "population", "automlp_skipped"
BEST_VAL_LOSS = "best_val_loss"  # orders trials of equal value (automlp.heldout.rank_trials)
SKIP_NOTE = "the study-wide n_trials was reached by other workers as this trial started; it was not trained"


def round_curve(xs: list[float]) -> list[float]:
    """Curves are stored at 5 significant digits (a study with thousands of trials stays small)."""
    return [float(f"{x:.5g}") for x in xs]


@dataclass(frozen=True)
class TrialRecord:
    """What a trial stores beside its params. Untrained trials (failed before training, skipped) have
    `seed` None; `population` is {"size": K, "batch_seed": s} for a trial trained as a stack member."""

    seed: int | None = None
    n_params: int | None = None
    widths: tuple[int, ...] = ()
    architecture: str = ""
    n_epochs: int = 0
    best_epoch: int = 0
    stop_reason: str = ""
    train_time_s: float = 0.0
    curves: dict[str, list[float]] = field(default_factory=dict)
    val_metrics: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    population: dict | None = None
    skipped: str | None = None
    best_val_loss: float | None = None  # absent from studies of earlier versions

    @property
    def trained(self) -> bool:
        return self.seed is not None

    @property
    def batch_seed(self) -> int | None:
        """The seed of the batch order the trial trained with; None: its own seed's (trained alone)."""
        return None if self.population is None else self.population["batch_seed"]

    @classmethod
    def of_run(cls, run: TrialRun, population: dict | None = None) -> TrialRecord:
        r = run.result
        return cls(seed=run.config.seed, n_params=count_params(run.mlp), widths=tuple(run.mlp.widths),
                   architecture=run.mlp.describe(), n_epochs=r.n_epochs, best_epoch=r.best_epoch,
                   stop_reason=r.stop_reason, train_time_s=round(r.train_time_s, 4),
                   curves={k: round_curve(v) for k, v in r.history.items()}, val_metrics=run.val_metrics,
                   notes=tuple(r.notes), population=population,
                   best_val_loss=r.best_val_loss if math.isfinite(r.best_val_loss) else None)

    @classmethod
    def skip(cls, trial: optuna.Trial) -> None:
        """Mark a trial that the budget left untrained (it is then told FAIL)."""
        trial.set_user_attr(SKIPPED, SKIP_NOTE)

    def write(self, trial: optuna.Trial) -> None:
        attrs = {SEED: self.seed, N_PARAMS: self.n_params, WIDTHS: list(self.widths), ARCHITECTURE: self.architecture,
                 N_EPOCHS: self.n_epochs, BEST_EPOCH: self.best_epoch, STOP_REASON: self.stop_reason,
                 TRAIN_TIME_S: self.train_time_s, CURVES: self.curves, VAL_METRICS: self.val_metrics}
        if self.best_val_loss is not None:
            attrs[BEST_VAL_LOSS] = self.best_val_loss
        if self.notes:
            attrs[NOTES] = list(self.notes)
        if self.population is not None:
            attrs[POPULATION] = self.population
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    @classmethod
    def read(cls, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        a = trial.user_attrs
        if SEED not in a:  # never trained: at most a skip note
            return cls(skipped=a.get(SKIPPED))
        return cls(seed=a[SEED], n_params=a[N_PARAMS], widths=tuple(a[WIDTHS]), architecture=a[ARCHITECTURE],
                   n_epochs=a[N_EPOCHS], best_epoch=a[BEST_EPOCH], stop_reason=a[STOP_REASON],
                   train_time_s=a[TRAIN_TIME_S], curves=a[CURVES], val_metrics=a[VAL_METRICS],
                   notes=tuple(a.get(NOTES, ())), population=a.get(POPULATION), best_val_loss=a.get(BEST_VAL_LOSS))

    def result(self, value: float) -> TrainResult:
        """The TrainResult the record describes (for a model kept in memory rather than replayed)."""
        return TrainResult(history=self.curves, best_epoch=self.best_epoch, n_epochs=self.n_epochs,
                           stop_reason=self.stop_reason, best_val_score=value,
                           best_val_loss=math.nan if self.best_val_loss is None else self.best_val_loss,
                           train_time_s=self.train_time_s, notes=list(self.notes))


# --------------------------------------------------------------------------- a trained configuration


@dataclass
class TrialRun:
    """A trained model of one configuration, with its scores."""

    model: torch.nn.Module
    mlp: MLPConfig
    config: TrainConfig
    result: TrainResult
    val_metrics: dict[str, float]
    data: PreparedData | None = None  # its numeric preprocessing's data, when not the search's first choice

    def data_or(self, data: PreparedData) -> PreparedData:
        """The prepared data this model takes (its own numeric preprocessing), given the search's."""
        return self.data if self.data is not None else data


def val_metrics_of(model: torch.nn.Module, result: TrainResult, data: PreparedData, tensors: TrainData) -> dict:
    if not result.best_epoch:
        return {}
    out = predict(model, tensors.X_val).float().cpu().numpy()
    return score_all(data.task, data.y_val, out, data.target_mean, data.target_std)


def run_config(mlp: MLPConfig, tc: TrainConfig, data: PreparedData, tensors: TrainData,
               on_epoch=None, batch_seed: int | None = None) -> TrialRun:
    """Train one configuration alone (a stack of one) and score it on the validation split.
    on_epoch(epoch, val_score) -> True ends the training there (stop_reason "pruned")."""

    def each(reports: list[EpochReport]) -> set:
        return {r.tag for r in reports if on_epoch(r.epoch, r.val_score)}

    [outcome] = train_stack([Member(0, mlp, tc, batch_seed=batch_seed)], tensors,
                            on_epoch=each if on_epoch is not None else None)
    model = outcome.model.to(tensors.device).eval()  # the engine hands models back on the host, for inference
    return TrialRun(model, mlp, tc, outcome.result, val_metrics_of(model, outcome.result, data, tensors))


def variant(params: dict, spec: Spec, data: PreparedData, tensors: TrainData) -> tuple[PreparedData, TrainData]:
    """The data of a trial's numeric preprocessing: `data` itself when it is that choice, else prepared anew on the
    same split (seeded by the study seed, as the search prepared it)."""
    choice = params.get("numeric_preprocessing", "standard")
    if choice == data.numeric_preprocessing:
        return data, tensors
    other = prepare_data(spec.data, spec.study.seed, numeric=choice)
    return other, to_tensors(other, tensors.device)


def replay(trial: optuna.trial.FrozenTrial, spec: Spec, data: PreparedData, tensors: TrainData,
           metric: str) -> TrialRun:
    """Retrain a finished trial from its params, seed and batch order: the same curves on CPU for a trial trained
    alone; for a stack member, up to float rounding and without dropout (its draws depend on the stack) when it
    started with the stack; a member that refilled a slot saw the shared order from the middle, and its replay
    draws that order from the start (same configuration, other batches)."""
    record = TrialRecord.read(trial)
    seed = record.seed if record.trained else trial_seed(spec.study.seed, trial.number)
    params = params_of(trial)
    own, own_tensors = variant(params, spec, data, tensors)
    mlp, tc = configs_from_params(params, spec, own, metric, seed)
    run = run_config(mlp, tc, own, own_tensors, batch_seed=record.batch_seed)
    return dataclasses.replace(run, data=None if own is data else own)


def split_scores(run: TrialRun, data: PreparedData, device: torch.device) -> dict[str, dict[str, float]]:
    """Every metric of the task on train, validation and test, for one trained model."""
    out, data = {}, run.data_or(data)
    for split, X, y in (("train", data.X_train, data.y_train), ("val", data.X_val, data.y_val),
                        ("test", data.X_test, data.y_test)):
        pred = predict(run.model, torch.as_tensor(X, device=device)).float().cpu().numpy()
        out[split] = score_all(data.task, y, pred, data.target_mean, data.target_std)
    return out


# --------------------------------------------------------------------------- trials <-> members


class Reporter:
    """The on_epoch callback of every runner: report each member's validation score to its trial, then ask its
    pruner. Stopping is the engine's `stop` flag, not this callback's business."""

    def __init__(self) -> None:
        self.trials: dict[Hashable, optuna.Trial] = {}

    def __call__(self, reports: list[EpochReport]) -> set[Hashable]:
        pruned = set()
        for r in reports:
            trial = self.trials[r.tag]
            try:
                trial.report(r.val_score, r.epoch)
            except TrialLost:  # failed and retried elsewhere during an outage: stop it; its result is dropped
                pruned.add(r.tag)
                continue
            # pruning reads the study, which an outage makes unreadable: the member trains on meanwhile
            if not storage_unreachable(trial.study) and trial.should_prune():
                pruned.add(r.tag)
        return pruned


class BestKeeper:
    """Keeps the best `keep` models trained in this process (on the host, ordered as `heldout.rank_trials` orders
    trials: value, then validation loss, then number), so the final test scoring, and an ensemble of the top
    trials, need no retraining: the kept models are the very ones whose validation outputs were scored."""

    def __init__(self, direction: str, keep: int = 1):
        self.direction, self.keep = direction, keep
        self.kept: list[tuple[tuple, int, dict, MLPConfig]] = []  # (rank key, number, state, config), best first

    def offer(self, number: int, run: TrialRun) -> None:
        v, loss = run.result.best_val_score, run.result.best_val_loss
        if not math.isfinite(v):
            return
        key = (-v if self.direction == "maximize" else v, loss if math.isfinite(loss) else math.inf, number)
        if len(self.kept) >= self.keep and key >= self.kept[-1][0]:
            return
        state = {k: t.detach().to("cpu", copy=True) for k, t in run.model.state_dict().items()}
        self.kept = sorted([*self.kept, (key, number, state, run.mlp)], key=lambda e: e[0])[: self.keep]

    @property
    def number(self) -> int | None:
        """The best trial's number (None before any)."""
        return self.kept[0][1] if self.kept else None

    def has(self, number: int) -> bool:
        return any(e[1] == number for e in self.kept)

    def model(self, number: int | None = None) -> torch.nn.Module:
        """The kept model of trial `number` (default: the best)."""
        _, _, state, mlp = next(e for e in self.kept if number is None or e[1] == number)
        model = build_mlp(mlp)
        model.load_state_dict(state)
        return model.eval()


@dataclass
class Trials:
    """What a runner needs to train trials of one search: the spec, the data, the metric, the best so far."""

    spec: Spec
    data: PreparedData
    tensors: TrainData
    metric: str
    keeper: BestKeeper
    variants: DataVariants | None = None  # one prepared data set per numeric preprocessing (made on first use)

    def __post_init__(self) -> None:
        if self.variants is None:
            self.variants = DataVariants(self.spec.data, self.spec.study.seed, self.tensors.device,
                                         first=(self.data, self.tensors))

    def member(self, trial: optuna.Trial) -> Member:
        """Sample the trial's params (a retried or enqueued trial keeps its fixed ones) and make its member; a
        trial whose numeric preprocessing is not the search's first choice trains on its own data's tensors."""
        params = suggest_params(trial, self.spec, self.metric)
        choice = params.get("numeric_preprocessing", self.data.numeric_preprocessing)
        data = self.variants.prepared(choice)
        mlp, tc = configs_from_params(params, self.spec, data, self.metric,
                                      trial_seed(self.spec.study.seed, trial.number))
        own = None if data is self.data else self.variants.tensors(choice)
        return Member(trial.number, mlp, tc, data=own)

    @staticmethod
    def key(member: Member) -> tuple | None:
        """Members with equal keys may share a stack; None: this one trains alone (lbfgs)."""
        return stack_key(member.net, member.config)

    @staticmethod
    def stack_seed(leader: Member) -> int:
        """The seed of a stack's shared batch order: its first member's (the engine's rule)."""
        return leader.config.seed

    @staticmethod
    def alone(member: Member) -> Member:
        """The member with its own batch order (its seed's, as trained alone), not the stack's shared one."""
        return dataclasses.replace(member, batch_seed=member.config.seed)

    def tell(self, study: optuna.Study, trial: optuna.Trial, member: Member, outcome: MemberOutcome,
             population: dict | None) -> optuna.trial.FrozenTrial:
        """Record the outcome and tell it: an interrupted trial is FAIL, a pruned or diverged one PRUNED."""
        run = self.run_of(member, outcome)
        TrialRecord.of_run(run, population).write(trial)
        r = run.result
        if r.stop_reason == "interrupted":
            return study.tell(trial, state=TrialState.FAIL)
        if r.stop_reason in ("pruned", "diverged"):
            return study.tell(trial, state=TrialState.PRUNED)
        self.keeper.offer(trial.number, run)
        frozen = study.tell(trial, r.best_val_score)  # first: a full disk below must not lose the finished trial
        if self.spec.study.final == "ensemble":  # the validation outputs greedy selection draws on
            out = predict(run.model, (member.data or self.tensors).X_val).float().cpu().numpy()  # its own inputs
            save_predictions(self.spec.study_dir, trial.number, out)
        return frozen

    def run_of(self, member: Member, outcome: MemberOutcome) -> TrialRun:
        model = outcome.model.to(self.tensors.device).eval()  # the engine hands models back on the host
        tensors = member.data or self.tensors
        data = self.data if member.data is None else self.variants.of(member.data)
        return TrialRun(model, member.net, member.config, outcome.result,
                        val_metrics_of(model, outcome.result, data, tensors), None if data is self.data else data)

    def best_run(self, trial: optuna.trial.FrozenTrial) -> TrialRun | None:
        """The kept model of `trial` (the study's best, or one of the top trials the keeper holds) as a TrialRun,
        or None when this process did not keep it (another process trained it, or it ranks too low)."""
        if not self.keeper.has(trial.number):
            return None
        record = TrialRecord.read(trial)
        params = params_of(trial)
        data = self.variants.prepared(params.get("numeric_preprocessing", self.data.numeric_preprocessing))
        mlp, tc = configs_from_params(params, self.spec, data, self.metric, record.seed)
        model = self.keeper.model(trial.number).to(self.tensors.device)
        return TrialRun(model, mlp, tc, record.result(trial.value), record.val_metrics,
                        None if data is self.data else data)


__all__ = ["BestKeeper", "Reporter", "TrialRecord", "TrialRun", "Trials", "replay", "run_config",
           "split_scores"]
