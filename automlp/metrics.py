"""Study metrics: one name, one task, one direction, one function of (targets, network outputs).

Outputs are the network's raw outputs on the host: logits for classification, standardized
predictions for regression (`target_std` maps them back to the target's units).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn import metrics as skm

from automlp.spec import METRIC_DIRECTIONS


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _roc_auc(y: np.ndarray, logits: np.ndarray) -> float:
    p = softmax(logits)
    if p.shape[1] == 2:
        return float(skm.roc_auc_score(y, p[:, 1]))
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    # one-vs-rest over the classes present in this split; sklearn refuses absent ones
    p = p[:, present] / p[:, present].sum(axis=1, keepdims=True)
    return float(skm.roc_auc_score(y, p, multi_class="ovr", labels=present))


CLASSIFICATION: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda y, o: float(np.mean(o.argmax(axis=1) == y)),
    "balanced_accuracy": lambda y, o: float(skm.balanced_accuracy_score(y, o.argmax(axis=1))),
    "f1_macro": lambda y, o: float(skm.f1_score(y, o.argmax(axis=1), average="macro", zero_division=0)),
    "roc_auc": _roc_auc,
    "log_loss": lambda y, o: float(skm.log_loss(y, softmax(o), labels=np.arange(o.shape[1]))),
}

REGRESSION: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "rmse": lambda y, p: float(np.sqrt(np.mean((p - y) ** 2))),
    "mae": lambda y, p: float(np.mean(np.abs(p - y))),
    "r2": lambda y, p: float(skm.r2_score(y, p)),
}


@dataclass(frozen=True)
class Metric:
    name: str
    task: str
    direction: str  # "maximize" | "minimize"

    def better(self, a: float, b: float) -> bool:
        """True when score a is strictly better than score b."""
        return a > b if self.direction == "maximize" else a < b

    @property
    def worst(self) -> float:
        return float("-inf") if self.direction == "maximize" else float("inf")


def get_metric(name: str) -> Metric:
    task = "classification" if name in CLASSIFICATION else "regression"
    return Metric(name, task, METRIC_DIRECTIONS[name])


def default_metric(task: str) -> str:
    return "accuracy" if task == "classification" else "rmse"


def metrics_for(task: str) -> tuple[str, ...]:
    return tuple(CLASSIFICATION if task == "classification" else REGRESSION)


def score(name: str, y_true: np.ndarray, outputs: np.ndarray, target_mean: float = 0.0,
          target_std: float = 1.0) -> float:
    """One metric of host arrays. Regression outputs are mapped back to the target's units first."""
    if name in CLASSIFICATION:
        return CLASSIFICATION[name](y_true, outputs)
    y = y_true * target_std + target_mean
    p = outputs.reshape(-1) * target_std + target_mean
    return REGRESSION[name](y, p)


def score_all(task: str, y_true: np.ndarray, outputs: np.ndarray, target_mean: float = 0.0,
              target_std: float = 1.0) -> dict[str, float]:
    """Every metric of the task; roc_auc is left out where the split lacks a class."""
    out = {}
    for name in metrics_for(task):
        value = score(name, y_true, outputs, target_mean, target_std)
        if value == value:  # drop NaN (e.g. roc_auc with one class present)
            out[name] = value
    return out
