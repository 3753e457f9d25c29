"""The model a search ships (`study.final`), built once the trials are done, and the trials' order.

- best: the winning trial's own model (trained on the training split, early-stopped on validation).
- refit: the winner's configuration retrained on train + validation (preprocessing refitted on those rows)
  for the epoch count early stopping chose in the search.
- bag: the winner's configuration trained once per fold of train + validation (`study.folds`, seeded), each
  early-stopped on its own held-out fold, behind one preprocessing fitted on train + validation; the fold
  models' probabilities (or values) are averaged.
- ensemble: greedy ensemble selection with replacement (automlp.ensemble) over the held-out predictions of the
  top `ENSEMBLE_CANDIDATES` trials; the chosen trials' models are averaged with the selected weights.

The winner is the first trial of `automlp.heldout.rank_trials` (value, then validation loss, then number);
the ensemble draws on the held-out predictions trials keep (`automlp.heldout`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import optuna
import torch

from automlp.data import PreparedData, TrainData, refit_preprocessing, to_tensors
from automlp.engine import TrainConfig, predict
from automlp.ensemble import EnsembleMember, blend, select_ensemble
from automlp.folds import fold_indices, use_kfold
from automlp.heldout import ENSEMBLE_CANDIDATES, PREDICTIONS_DIR, load_predictions, rank_trials
from automlp.metrics import get_metric, score_all
from automlp.model import MLPConfig
from automlp.search.space import configs_from_params, params_of
from automlp.search.trial import TrialRecord, TrialRun, replay, run_config, split_scores
from automlp.spec import Spec


# --------------------------------------------------------------------------- the final model


@dataclass
class FinalModel:
    """What the search ships: its networks (one for best/refit), the data whose preprocessing they take, its
    scores per split, and what to record about how it was built."""

    kind: str
    members: list[EnsembleMember]
    data: PreparedData
    scores: dict[str, dict[str, float]]
    info: dict = field(default_factory=dict)
    run: TrialRun | None = None  # best / refit: the one network's run (export writes it as a single model)
    refit: dict | None = None  # refit: what export records under "refit"

    def summary(self) -> dict:
        members = [{"trial": m.trial, "fold": m.fold, "weight": round(m.weight, 6)} for m in self.members]
        return {"kind": self.kind, "scores": self.scores, "members": members, **self.info}

    def describe(self) -> str:
        """What was shipped, in words: 'the best model (trial #3)', 'the ensemble of 4 trials (#3, #7)', ..."""
        trials = ", ".join(f"#{t}" for t in sorted({m.trial for m in self.members}))
        return {"best": f"the best model (trial {trials})",
                "refit": f"the refit model (trial {trials} retrained on train + validation)",
                "bag": f"the bag of trial {trials}'s {len(self.members)} fold models",
                "ensemble": f"the ensemble of {len(self.members)} members ({trials})"}[self.kind]


def _single(kind: str, trial: int, run: TrialRun, data: PreparedData, scores: dict, **kw) -> FinalModel:
    member = EnsembleMember(run.model, run.mlp, 1.0, trial, None, {"seed": run.config.seed})
    return FinalModel(kind, [member], data, scores, run=run, **kw)


def refit_run(run: TrialRun, data: PreparedData, device: torch.device,
              epochs: int | None = None) -> tuple[TrialRun, PreparedData, dict]:
    """Retrain the run's configuration on train + validation for `epochs` (default: the epochs early stopping
    chose in the run), with the preprocessing refitted on those rows too. Returns the run, the data it was
    trained on, and what to record."""
    epochs = epochs or run.result.best_epoch
    merged = refit_preprocessing(data, np.arange(len(data.y_train) + len(data.y_val)), None)
    n = len(merged.y_train)
    # no held-out rows remain: every epoch counts as an improvement (min_delta -inf) and training stops after
    # `epochs`, so the model is the last epoch's; max_epochs stays, so the lr schedule is the search's
    tc = dataclasses.replace(run.config, patience=None, min_delta=-math.inf)
    mlp = dataclasses.replace(run.mlp, n_inputs=merged.n_features)  # categories seen only in validation add inputs
    refit = run_config(mlp, tc, merged, to_tensors(merged, device), lambda epoch, _: epoch >= epochs)
    info = {"epochs": epochs, "rows": n, "split_rows": data.sizes(), "seed": tc.seed,
            "n_features": merged.n_features,
            "note": f"retrained on train + validation ({n} rows) for {epochs} epochs, the best epoch early "
                    "stopping found in the search (the mean over folds for a k-fold trial); the preprocessing was "
                    "refitted on the same rows. Validation metrics are the search's (the refit model has seen those rows); "
                    "train metrics are the refit model's on train + validation, test metrics the refit model's"}
    return refit, merged, info


def _outputs(model: torch.nn.Module, X: np.ndarray, device: torch.device) -> np.ndarray:
    return predict(model, torch.as_tensor(X, device=device)).float().cpu().numpy()


def _blend_scores(members: list[EnsembleMember], data: PreparedData, device: torch.device,
                  splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, float]]:
    weights = [m.weight for m in members]
    return {name: score_all(data.task, y, blend([_outputs(m.model, X, device) for m in members], weights, data.task),
                            data.target_mean, data.target_std) for name, (X, y) in splits.items()}


def bag_members(trial: int, net: MLPConfig, config: TrainConfig, data: PreparedData, device: torch.device,
                n_folds: int, seed: int) -> tuple[list[EnsembleMember], PreparedData, np.ndarray]:
    """A configuration trained on each fold of train + validation behind one preprocessing fitted on
    all of train + validation (an exported bag takes one preprocessing). Returns the fold models, that data
    (its X_train: all train + validation rows), and each row's out-of-fold outputs."""
    shared = refit_preprocessing(data, np.arange(len(data.y_train) + len(data.y_val)), None)
    mlp = replace(net, n_inputs=shared.n_features)
    cuts = fold_indices(shared.y_train, data.task, n_folds, seed)
    oof = np.zeros((len(shared.y_train), data.n_outputs), np.float32)
    members = []
    for k, (tr, va) in enumerate(cuts):
        part = replace(shared, X_train=shared.X_train[tr], y_train=shared.y_train[tr], X_val=shared.X_train[va],
                       y_val=shared.y_train[va])
        r = run_config(mlp, config, part, to_tensors(part, device))
        oof[va] = _outputs(r.model, part.X_val, device)
        members.append(EnsembleMember(r.model.cpu(), mlp, 1.0 / n_folds, trial, k,
                                      {"seed": config.seed, "best_epoch": r.result.best_epoch}))
    return members, shared, oof


def _bag(trial: int, run: TrialRun, data: PreparedData, spec: Spec, device: torch.device) -> FinalModel:
    members, shared, oof = bag_members(trial, run.mlp, run.config, data, device, spec.study.folds, spec.study.seed)
    scores = _blend_scores(members, shared, device, {"train": (shared.X_train, shared.y_train),
                                                     "test": (shared.X_test, shared.y_test)})
    scores["val"] = score_all(data.task, shared.y_train, oof, data.target_mean, data.target_std)
    info = {"folds": spec.study.folds,
            "note": f"trial {trial}'s configuration trained on each of {spec.study.folds} folds of train + "
                    "validation, early-stopped on its held-out fold, behind one preprocessing fitted on train + "
                    "validation; val: out-of-fold scores of the fold models (that preprocessing saw those "
                    "rows), train: the bag on all train + validation rows"}
    return FinalModel("bag", members, shared, {k: scores[k] for k in ("train", "val", "test")}, info)


def _kfold(spec: Spec, data: PreparedData) -> bool:
    return use_kfold(spec.study.validation, len(data.y_train) + len(data.y_val))


def _ensemble(ranked: list, best_run: TrialRun, data: PreparedData, tensors: TrainData, spec: Spec,
              metric: str, kept: Callable | None = None) -> FinalModel:
    """Greedy selection on the held-out outputs the trials kept: validation (holdout studies) or out-of-fold
    (k-fold studies, whose members are then bags of their fold models behind one preprocessing)."""
    device, kfold = tensors.device, _kfold(spec, data)
    rows, y = ("oof", np.concatenate([data.y_train, data.y_val])) if kfold else ("val", data.y_val)
    # one model folder has one preprocessing: members share the winner's numeric preprocessing (a member fed
    # inputs scaled for another would predict garbage), so trials with another choice are not candidates
    own = best_run.data_or(data)
    same = [t for t in ranked if params_of(t).get("numeric_preprocessing", data.numeric_preprocessing)
            == own.numeric_preprocessing]
    cands = [(t, p) for t in same[:ENSEMBLE_CANDIDATES]
             if (p := load_predictions(spec.study_dir, t.number, rows)) is not None and len(p) == len(y)]
    if not cands:
        return _single("best", ranked[0].number, best_run, data, split_scores(best_run, data, device),
                       info={"note": "final: ensemble needs the trials' held-out predictions, and none were kept "
                                     f"in {spec.study_dir / PREDICTIONS_DIR}; shipped the best trial's model"})
    sel = select_ensemble([p for _, p in cands], y, metric, spec.study.ensemble_size,
                          target_mean=data.target_mean, target_std=data.target_std)
    members, shared = [], own
    for i in sel.members:
        t = cands[i][0]
        if kfold:
            net, config = configs_from_params(params_of(t), spec, own, metric, TrialRecord.read(t).seed)
            bag, shared, _ = bag_members(t.number, net, config, own, device, spec.study.folds, spec.study.seed)
            members += [dataclasses.replace(m, weight=sel.weights[i] * m.weight) for m in bag]
            continue
        # the model this process kept (the one whose validation outputs were scored), else replayed from its seed
        run = best_run if t.number == ranked[0].number else (kept and kept(t)) or replay(t, spec, data, tensors,
                                                                                         metric)
        members.append(EnsembleMember(run.model.cpu(), run.mlp, sel.weights[i], t.number, None,
                                      {"seed": run.config.seed}))
    splits = {"train": (shared.X_train, shared.y_train), "test": (shared.X_test, shared.y_test)}
    if not kfold:
        splits["val"] = (own.X_val, own.y_val)
    scores = _blend_scores(members, shared, device, splits)
    if kfold:  # the search's fold models' out-of-fold outputs, blended with the selected weights
        oof = blend([p for _, p in cands], sel.weights, data.task) if sel.members else None
        scores["val"] = score_all(data.task, y, oof, data.target_mean, data.target_std)
    where = "out-of-fold outputs of the k-fold trials" if kfold else "the validation split"
    info = {"selection": {"method": "greedy ensemble selection with replacement (Caruana et al. 2004)",
                          "on": rows, "metric": metric, "candidates": [t.number for t, _ in cands],
                          "numeric_preprocessing": own.numeric_preprocessing,
                          "rounds": sel.n_rounds, "rounds_run": spec.study.ensemble_size,
                          "trajectory": [round(v, 6) for v in sel.trajectory], "score": sel.score,
                          "best_single": cands[sel.best_single][0].number},
            "note": f"members chosen and weighted on {where}, so the ensemble's validation score is optimistic; "
                    "its test score is the honest one"
                    + ("; each member is a bag of its trial's fold models behind one preprocessing fitted on "
                       "train + validation" if kfold else "")}
    return FinalModel("ensemble", members, shared, {k: scores[k] for k in ("train", "val", "test")}, info)


def build_final(spec: Spec, study: optuna.Study, data: PreparedData, tensors: TrainData, metric: str,
                best_run: TrialRun | None, kept: Callable | None = None) -> FinalModel | None:
    """The model `study.final` asks for, from the finished study (None when no trial finished). `kept(trial)`:
    the model this process kept of a trial (a TrialRun), or None; an ensemble replays the others."""
    ranked = rank_trials(study, get_metric(metric).direction)
    if best_run is None or not ranked:
        return None
    device, winner, kind = tensors.device, ranked[0].number, spec.study.final
    own = best_run.data_or(data)  # the data of the winner's own numeric preprocessing
    if kind == "refit":
        val = split_scores(best_run, data, device)["val"]
        run, merged, info = refit_run(best_run, own, device, TrialRecord.read(ranked[0]).best_epoch)
        return _single("refit", winner, run, merged, split_scores(run, merged, device) | {"val": val},
                       info={"epochs": info["epochs"], "note": info["note"]}, refit=info)
    if kind == "bag":
        return _bag(winner, best_run, own, spec, device)
    if kind == "ensemble":
        return _ensemble(ranked, best_run, data, tensors, spec, metric, kept)
    note = {"note": f"study.validation: k-fold; the shipped model is trial {winner}'s configuration trained on the "
                    "search's training split and early-stopped on its validation split"} if _kfold(spec, data) else {}
    return _single("best", winner, best_run, data, split_scores(best_run, data, device), info=note)
