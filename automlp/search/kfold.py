"""k-fold trials: a trial is a stack of its folds (`study.validation: kfold`, or `auto` on small data).

Each fold of train + validation (`automlp.folds`: preprocessing fitted on the fold's training rows, features in
one layout) becomes one engine member with its own rows, tagged (trial number, fold). The members of a trial
share its configuration and seed, so fold k trains exactly as a separate training of the configuration on fold
k's rows would (the engine's own-rows oracle). Each epoch the trial reports the mean fold validation score to
its pruner (a fold that stopped counts with its best score); its value is the mean of the folds' best scores,
and its out-of-fold outputs (each fold model on its held-out rows) are kept for ensembles.

Why not Optuna's WilcoxonPruner: it compares trials fold by fold (step = fold), so a trial must report one
fold at a time, after training it; here the folds train together, epoch by epoch, so the per-epoch mean goes to
the study's epoch-wise pruner (median, hyperband, ...), which can stop a poor trial after a few epochs of all
its folds instead of after whole folds.

A configuration that cannot share a stack (lbfgs: a full-batch line search) trains its folds one after another,
each a stack of one, and reports nothing per epoch (it is not pruned); its value is still the folds' mean.

`KFoldTrain` is a `train` function for `StackRunner` (trials in, trial outcomes out), so budgets, heartbeats,
stops and populations work as for holdout trials. The engine refills one slot per finished member; a k-fold
trial frees k slots, so a new trial's folds start when the current stack has finished.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import optuna
import torch

from automlp.data import PreparedData, TrainData, to_tensors
from automlp.engine import EpochReport, Member, MemberOutcome, TrainResult, predict, stack_key, train_stack
from automlp.folds import Fold, out_of_fold, prepare_folds
from automlp.heldout import save_predictions
from automlp.metrics import get_metric, score_all
from automlp.search.trial import TrialRecord, TrialRun, Trials

FOLDS_ATTR = "folds"  # the user attr of a k-fold trial: {"k", "scores", "best_epochs"}


@dataclass
class FoldSet:
    """The folds of a k-fold study, on the device once for the whole study."""

    folds: list[Fold]
    tensors: list[TrainData]
    y: np.ndarray  # train + validation targets, in row order
    data: PreparedData  # the search's data (target scaling, task)

    @property
    def n_features(self) -> int:
        return len(self.folds[0].data.feature_names)

    @property
    def k(self) -> int:
        return len(self.folds)


def make_foldset(data: PreparedData, n_folds: int, seed: int, device: torch.device) -> FoldSet:
    folds = prepare_folds(data, n_folds, seed)
    return FoldSet(folds, [to_tensors(f.data, device) for f in folds], np.concatenate([data.y_train, data.y_val]),
                   data)


@dataclass
class _Trial:
    """A k-fold trial while its folds train: their latest and best scores, their outcomes."""

    member: Member
    k: int
    minimize: bool
    fs: FoldSet  # the folds of the trial's numeric preprocessing
    latest: dict[int, EpochReport] = field(default_factory=dict)
    best: dict[int, float] = field(default_factory=dict)
    outcomes: dict[int, MemberOutcome] = field(default_factory=dict)
    oof: dict[int, np.ndarray] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=lambda: {"train_loss": [], "val_loss": [],
                                                                    "val_score": []})
    epoch: int = 0
    failed: bool = False  # a fold diverged: the others are pruned at their next epoch

    def observe(self, fold: int, r: EpochReport) -> None:
        self.latest[fold] = r
        old = self.best.get(fold)
        if old is None or (r.val_score < old if self.minimize else r.val_score > old):
            self.best[fold] = r.val_score

    def mean_report(self, tag: Hashable) -> EpochReport:
        """The trial's epoch: live folds at this epoch, stopped ones at their best."""
        live = {f: r for f, r in self.latest.items() if f not in self.outcomes}
        scores = [live[f].val_score if f in live else self.best[f] for f in self.best]
        self.epoch += 1
        report = EpochReport(tag, self.epoch, float(np.mean([r.train_loss for r in self.latest.values()])),
                             float(np.mean([r.val_loss for r in self.latest.values()])), float(np.mean(scores)))
        for key, value in (("train_loss", report.train_loss), ("val_loss", report.val_loss),
                           ("val_score", report.val_score)):
            self.curves[key].append(value)
        return report

    def result(self) -> TrainResult:
        rs = [self.outcomes[f].result for f in range(self.k)]
        reasons = [r.stop_reason for r in rs]
        for bad in ("interrupted", "diverged", "pruned"):
            if bad in reasons:
                reason = bad
                break
        else:
            reason = Counter(reasons).most_common(1)[0][0]
        notes = [f"fold {f}: {n}" for f, r in enumerate(rs) for n in r.notes]
        return TrainResult(history=self.curves or {}, best_epoch=round(np.mean([r.best_epoch for r in rs])),
                           n_epochs=max(r.n_epochs for r in rs), stop_reason=reason,
                           best_val_score=float(np.mean([r.best_val_score for r in rs])),
                           best_val_loss=float(np.mean([r.best_val_loss for r in rs])),
                           train_time_s=float(sum(r.train_time_s for r in rs)), notes=notes)


class KFoldTrain:
    """`train(members, tensors, on_epoch, on_done, stop, deadline)` for StackRunner: trial members in, each
    trained as its k folds; trial outcomes out (see the module docstring)."""

    def __init__(self, foldset: FoldSet, study_dir=None, foldset_of=None):
        self.fs, self.study_dir = foldset, study_dir
        self.foldset_of = foldset_of or (lambda member: foldset)  # a trial's folds: its numeric preprocessing's
        self.oof: dict[Hashable, np.ndarray] = {}  # trial tag -> out-of-fold outputs (COMPLETE or not)
        self.fold_results: dict[Hashable, list[TrainResult]] = {}

    def __call__(self, members: Sequence[Member], tensors: TrainData, *, on_epoch=None, on_done=None,
                 stop: threading.Event | None = None, deadline: float | None = None) -> list[MemberOutcome]:
        outcomes: list[MemberOutcome] = []
        queue = list(members)
        while queue:
            batch, queue = queue, []
            if (stop is not None and stop.is_set()) or (deadline is not None and time.time() >= deadline):
                queue = self._decline(batch, on_done, outcomes)
                continue
            trials = {m.tag: _Trial(m, self.fs.k, get_metric(m.config.metric).direction == "minimize",
                                    self.foldset_of(m)) for m in batch}
            folds = [self.fold_member(m, k, trials[m.tag].fs) for m in batch for k in range(self.fs.k)]

            def each(reports: list[EpochReport]) -> set:
                touched = {}
                for r in reports:
                    tag, fold = r.tag
                    trials[tag].observe(fold, r)
                    touched[tag] = True
                mine = [trials[tag].mean_report(tag) for tag in touched]
                pruned = set(on_epoch(mine)) if on_epoch is not None and mine else set()
                pruned |= {tag for tag in touched if trials[tag].failed}
                return {(tag, k) for tag in pruned for k in range(self.fs.k) if k not in trials[tag].outcomes}

            def done(outcome: MemberOutcome) -> None:
                tag, fold = outcome.tag
                t = trials[tag]
                t.outcomes[fold] = outcome
                t.failed |= outcome.result.stop_reason == "diverged"
                t.oof[fold] = self._fold_outputs(outcome, t.fs.tensors[fold])
                if len(t.outcomes) == self.fs.k:
                    whole = self._whole(tag, t)
                    outcomes.append(whole)
                    refill = on_done(whole) if on_done is not None else None
                    if refill is not None:
                        queue.append(refill)
                return None  # the slot stays empty: a new trial needs k slots at once (next round)

            if stack_key(folds[0].net, folds[0].config) is not None:
                train_stack(folds, tensors, on_epoch=each, on_done=done, stop=stop, deadline=deadline)
            else:  # lbfgs: each fold alone, one after another, not pruned
                for f in folds:
                    train_stack([f], tensors, on_done=done, stop=stop, deadline=deadline)
        return outcomes

    def fold_member(self, m: Member, k: int, fs: FoldSet | None = None) -> Member:
        fs = fs or self.foldset_of(m)
        net = dataclasses.replace(m.net, n_inputs=fs.n_features)
        return Member((m.tag, k), net, m.config, data=fs.tensors[k])

    @staticmethod
    def _fold_outputs(outcome: MemberOutcome, t: TrainData) -> np.ndarray:
        return predict(outcome.model.to(t.device), t.X_val).float().cpu().numpy()

    def _whole(self, tag: Hashable, t: _Trial) -> MemberOutcome:
        result = t.result()
        self.oof[tag] = out_of_fold(t.fs.folds, [t.oof[k] for k in range(self.fs.k)])
        self.fold_results[tag] = [t.outcomes[k].result for k in range(self.fs.k)]
        return MemberOutcome(tag, result, t.outcomes[0].model)

    def _decline(self, batch, on_done, outcomes) -> list[Member]:
        """Trials asked for as the search stops: not trained ("interrupted"), as the engine declines a refill."""
        queue = []
        for m in batch:
            result = TrainResult(history={}, best_epoch=0, n_epochs=0, stop_reason="interrupted",
                                 best_val_score=math.nan, best_val_loss=math.nan, train_time_s=0.0,
                                 notes=["not trained: the search was stopping"])
            declined = MemberOutcome(m.tag, result, None)
            outcomes.append(declined)
            refill = on_done(declined) if on_done is not None else None
            if refill is not None:
                queue.append(refill)
        return queue


class KFoldTrials(Trials):
    """`Trials` of a k-fold study: members train as their folds (`train`, for StackRunner); a told trial records
    its folds and keeps its out-of-fold outputs. No model is kept: the best trial's model is its configuration
    replayed on the search's own split (automlp.search.run.score_best), the final model is built from there."""

    def __init__(self, spec, data, tensors, metric, keeper, foldset: FoldSet):
        super().__init__(spec, data, tensors, metric, keeper)
        self.foldset = foldset
        self.foldsets = {data.numeric_preprocessing: foldset}  # one per numeric preprocessing, made on first use
        self.train = KFoldTrain(foldset, foldset_of=self.foldset_of)

    def foldset_of(self, member: Member) -> FoldSet:
        """The folds of the member's numeric preprocessing, each fitted on its fold's training rows."""
        data = self.data if member.data is None else self.variants.of(member.data)
        if data.numeric_preprocessing not in self.foldsets:
            self.foldsets[data.numeric_preprocessing] = make_foldset(data, self.foldset.k, self.spec.study.seed,
                                                                     self.tensors.device)
        return self.foldsets[data.numeric_preprocessing]

    def tell(self, study: optuna.Study, trial: optuna.Trial, member: Member, outcome: MemberOutcome,
             population: dict | None) -> optuna.trial.FrozenTrial:
        r = outcome.result
        oof = self.train.oof.pop(outcome.tag, None)
        folds = self.train.fold_results.pop(outcome.tag, [])
        d = self.foldset.data
        metrics = score_all(d.task, self.foldset.y, oof, d.target_mean, d.target_std) \
            if oof is not None and r.best_epoch else {}
        TrialRecord.of_run(TrialRun(outcome.model, member.net, member.config, r, metrics), population).write(trial)
        if folds:
            trial.set_user_attr(FOLDS_ATTR, {"k": len(folds), "scores": [f.best_val_score for f in folds],
                                             "best_epochs": [f.best_epoch for f in folds],
                                             "stop_reasons": [f.stop_reason for f in folds]})
        if r.stop_reason == "interrupted":
            return study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if r.stop_reason in ("pruned", "diverged"):
            return study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        frozen = study.tell(trial, r.best_val_score)  # first: a full disk below must not lose the finished trial
        save_predictions(self.spec.study_dir, trial.number, oof, rows="oof")
        return frozen

    def best_run(self, trial: optuna.trial.FrozenTrial) -> TrialRun | None:
        return None  # fold models take the folds' features: the best trial is replayed on the search's split
