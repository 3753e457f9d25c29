"""Trials in order, and the held-out predictions trials leave behind for ensembles.

The order of a study's trials (used wherever a winner is picked: the summary, the export, the report, the
final model): the best value; among equal values the lower validation loss at the best epoch (a perfect
validation accuracy is common on small sets, and the loss still tells a confident model from a lucky one);
then the lower trial number.

Held-out predictions: when the final model is an ensemble, every COMPLETE trial keeps its network's raw outputs
on the rows it was scored on, as `predictions/trial_<number>.npz` in the study folder (float32 array `outputs`,
and `rows`: "val" for the validation split). Each process writes the files of its own trials.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

PREDICTIONS_DIR = "predictions"
ENSEMBLE_CANDIDATES = 20  # the top trials greedy ensemble selection draws from (each may enter several times)


def best_val_loss(t: optuna.trial.FrozenTrial) -> float:
    """The validation loss at the trial's best epoch (inf when unknown)."""
    a = t.user_attrs
    loss = a.get("best_val_loss")
    if loss is None:
        curve, b = (a.get("curves") or {}).get("val_loss") or [], a.get("best_epoch") or 0
        loss = curve[b - 1] if 0 < b <= len(curve) else None
    return float(loss) if loss is not None and math.isfinite(loss) else math.inf


def rank_trials(study: optuna.Study, direction: str | None = None) -> list[optuna.trial.FrozenTrial]:
    """COMPLETE trials with a finite value, best first (see the module docstring)."""
    direction = direction or study.direction.name.lower()
    sign = -1.0 if direction == "maximize" else 1.0
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]
    return sorted(done, key=lambda t: (sign * t.value, best_val_loss(t), t.number))


def predictions_path(study_dir: Path, number: int) -> Path:
    return Path(study_dir) / PREDICTIONS_DIR / f"trial_{number:05d}.npz"


def save_predictions(study_dir: Path, number: int, outputs: np.ndarray, rows: str = "val") -> None:
    """Write one trial's held-out outputs (atomically: a reader never sees half a file)."""
    path = predictions_path(study_dir, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    np.savez(tmp, outputs=np.asarray(outputs, np.float32), rows=np.array(rows))
    tmp.replace(path)


def load_predictions(study_dir: Path, number: int, rows: str = "val") -> np.ndarray | None:
    """A trial's held-out outputs on `rows`, or None when it kept none."""
    path = predictions_path(study_dir, number)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        return f["outputs"] if str(f["rows"]) == rows else None
