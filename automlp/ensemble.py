"""Ensembles: greedy ensemble selection over prediction arrays, the blend they define, and the network
that computes that blend (one TorchScript-able module).

How members are blended (one definition, used by selection, by `EnsembleNet` and by the oracle tests):
- classification: the weighted average of the members' class *probabilities* (softmax of each member's
  logits), not of their logits. Averaging logits is a geometric mean of probabilities, which is over-confident
  where members disagree. The blend is returned as the log of that average: a vector of log-probabilities is a
  valid logit vector (its softmax is the average itself), so every reader that applies softmax to a model's
  outputs (`automlp.load`, `automlp predict`, examples/serve_torchscript.py, the metrics) gets the averaged
  probabilities, and argmax is unchanged.
- regression: the weighted average of the members' standardized outputs (all members share the target's
  scaling, fitted on the search's training split).

Greedy ensemble selection with replacement (Caruana et al., ICML 2004; AutoGluon's weighted ensemble): start
from an empty ensemble; each round adds the candidate (again, if it is already in) whose addition gives the best
score on held-out predictions; after `n_rounds` the ensemble of the best round is kept, and the weights are the
counts divided by that round. Round 1 picks the best single candidate, so the result never scores worse than
it on the data it was selected on. Ties are broken by the blend's loss (log-loss / mean squared error of the
standardized outputs), then by the lower candidate index (callers pass candidates best-ranked first), then by
the earlier round: deterministic, and the smaller ensemble wins a tie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Sequence

import numpy as np
import torch
from torch import nn

from automlp.model import MLPConfig


# automlp.metrics (scikit-learn) is imported where selection needs it: loading a model folder, which builds an
# EnsembleNet, needs torch and numpy only


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _blend_space(outputs: np.ndarray, classification: bool) -> np.ndarray:
    """What is averaged: probabilities (classification) or the standardized outputs (regression)."""
    out = np.asarray(outputs, np.float64)
    return _softmax(out) if classification else out.reshape(len(out), -1)


def _from_blend_space(avg: np.ndarray, classification: bool) -> np.ndarray:
    # log(0) would be -inf; the smallest positive double keeps every output finite (softmax is unchanged)
    return np.log(np.maximum(avg, np.finfo(np.float64).tiny)) if classification else avg


def blend(outputs: Sequence[np.ndarray], weights: Sequence[float], task: str) -> np.ndarray:
    """The ensemble's outputs (log of the averaged probabilities, or the averaged values) from its members'
    raw outputs (logits, or standardized values) and weights (normalized here)."""
    w = np.asarray(weights, np.float64)
    if len(w) != len(outputs) or len(w) == 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"blend needs one non-negative weight per member, not all zero; got {list(weights)} "
                         f"for {len(outputs)} members")
    classification = task == "classification"
    total = sum(wi * _blend_space(o, classification) for wi, o in zip(w / w.sum(), outputs))
    return _from_blend_space(total, classification)


def _loss(avg: np.ndarray, y: np.ndarray, classification: bool) -> float:
    """The tie-breaker: log-loss of averaged probabilities, or mean squared error of averaged outputs."""
    if classification:
        return float(-np.mean(np.log(np.maximum(avg[np.arange(len(y)), y], np.finfo(np.float64).tiny))))
    return float(np.mean((avg.reshape(-1) - np.asarray(y, np.float64).reshape(-1)) ** 2))


def _round12(x: float) -> float:
    return float(f"{x:.12g}") if math.isfinite(x) else x


@dataclass(frozen=True)
class EnsembleSelection:
    """The outcome of `select_ensemble`, per candidate in the order given."""

    weights: tuple[float, ...]  # counts / n_rounds; zero for candidates never picked
    counts: tuple[int, ...]
    n_rounds: int  # rounds kept (the best round; at most the rounds run)
    trajectory: tuple[float, ...]  # the ensemble's score after each round run
    score: float  # the kept ensemble's score (= trajectory[n_rounds - 1])
    best_single: int  # the candidate round 1 picked: the best single one

    @property
    def members(self) -> list[int]:
        """Indices of the candidates with a non-zero weight."""
        return [i for i, c in enumerate(self.counts) if c]


def select_ensemble(outputs: Sequence[np.ndarray], y: np.ndarray, metric: str, n_rounds: int = 25, *,
                    target_mean: float = 0.0, target_std: float = 1.0) -> EnsembleSelection:
    """Greedy ensemble selection with replacement over candidates' raw outputs on the same held-out rows
    (out-of-fold or validation predictions); `metric` is an automlp metric name (its direction is used)."""
    from automlp.metrics import get_metric, score

    if not outputs or n_rounds < 1:
        raise ValueError(f"select_ensemble needs at least one candidate and one round; got {len(outputs)} "
                         f"candidates, n_rounds={n_rounds}")
    m = get_metric(metric)
    classification = m.task == "classification"
    space = [_blend_space(o, classification) for o in outputs]
    if len({s.shape for s in space}) != 1 or len(space[0]) != len(y):
        raise ValueError(f"select_ensemble: every candidate needs outputs for the same {len(y)} rows; got shapes "
                         f"{sorted({s.shape for s in space})}")
    sign = 1.0 if m.direction == "maximize" else -1.0

    def key(avg: np.ndarray) -> tuple[tuple[float, float], float]:
        """((primary, tie-breaker), score): bigger is better in both places; NaN (roc_auc without both classes)
        is the worst. Rounded to 12 digits, so float rounding (a mean of k copies vs one) decides no tie."""
        s = score(metric, y, _from_blend_space(avg, classification), target_mean, target_std)
        primary = sign * s if not math.isnan(s) else -math.inf
        return (_round12(primary), _round12(-_loss(avg, y, classification))), s

    total = np.zeros_like(space[0])
    picks, keys, scores = [], [], []
    for r in range(1, n_rounds + 1):
        best_i, best = 0, None
        for i, s in enumerate(space):
            k = key((total + s) / r)
            if best is None or k[0] > best[0]:  # strict: the lower index keeps a tie
                best_i, best = i, k
        total += space[best_i]
        picks.append(best_i)
        keys.append(best[0])
        scores.append(best[1])
    kept = max(range(n_rounds), key=lambda i: (keys[i], -i)) + 1  # the earlier round keeps a tie
    counts = [0] * len(space)
    for i in picks[:kept]:
        counts[i] += 1
    return EnsembleSelection(weights=tuple(c / kept for c in counts), counts=tuple(counts), n_rounds=kept,
                             trajectory=tuple(scores), score=scores[kept - 1], best_single=picks[0])


class EnsembleNet(nn.Module):
    """The blend as one network: members' outputs averaged with fixed weights (see the module docstring).
    TorchScript- and ONNX-exportable; member k's weights stay its own (`members[k]`)."""

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float], task: str):
        super().__init__()
        w = torch.as_tensor(list(weights), dtype=torch.float64)
        if len(members) == 0 or len(w) != len(members) or bool((w <= 0).any()):
            raise ValueError(f"EnsembleNet needs one positive weight per member; got {list(weights)} for "
                             f"{len(members)} members")
        w = w / w.sum()
        self.members = nn.ModuleList(members)
        self.classification = task == "classification"
        self.register_buffer("weights", w.float().view(-1, 1, 1))
        self.register_buffer("log_weights", w.log().float().view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: List[torch.Tensor] = []
        for member in self.members:
            outs.append(member(x))
        z = torch.stack(outs)  # (members, rows, outputs)
        if self.classification:
            # log(sum_k w_k softmax(z_k)) without leaving log space: finite even where a probability underflows
            return torch.logsumexp(torch.log_softmax(z, dim=-1) + self.log_weights, dim=0)
        return (z * self.weights).sum(dim=0)


@dataclass
class EnsembleMember:
    """One network of an ensemble: trained weights behind the shared preprocessing, and where it came from."""

    model: torch.nn.Module
    mlp: MLPConfig
    weight: float
    trial: int
    fold: int | None = None
    info: dict = field(default_factory=dict)  # what else to record (seed, epochs, ...)
