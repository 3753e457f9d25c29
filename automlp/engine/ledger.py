"""THE epoch ledger of one member (one net alone or one member of a stack): its curves, its best epoch, early
stopping, divergence, why it stopped, and the `TrainResult` it ends with.

The loop hands it each epoch's losses and a way to score the outputs; it answers whether this epoch is the new
best (then the loop snapshots the member's weights) and whether the member must stop. Epochs count from 1, the
member's own (a refilled slot starts again at 1).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from automlp.engine.config import TrainConfig, TrainResult


def early_stopping_check(value: float, best: float, epochs_since_best: int, patience: int | None,
                         min_delta: float, minimize: bool) -> tuple[bool, bool, str]:
    """Pure rule: (improved, should_stop, reason). `epochs_since_best` counts epochs before this one."""
    improved = (value < best - min_delta) if minimize else (value > best + min_delta)
    if improved:
        return True, False, ""
    waited = epochs_since_best + 1
    if patience is not None and waited >= patience:
        return False, True, f"no improvement of more than {min_delta:g} in {patience} epochs"
    return False, False, ""


@dataclass
class Verdict:
    """What one epoch means for a member: a new best? must it stop, and why?"""

    improved: bool = False
    stop_reason: str | None = None  # diverged | early_stopping | max_epochs | None
    val_score: float = math.nan
    note: str = ""  # why, for early stopping


@dataclass
class Ledger:
    config: TrainConfig
    minimize_score: bool  # the metric's direction (the monitor is val_loss or val_score)
    history: dict[str, list[float]] = field(default_factory=lambda: {"train_loss": [], "val_loss": [],
                                                                     "val_score": []})
    epoch: int = 0
    best_epoch: int = 0
    since_best: int = 0
    stop_reason: str = "max_epochs"
    notes: list[str] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)
    elapsed: float = 0.0

    def __post_init__(self) -> None:
        self.minimize = self.config.monitor == "val_loss" or self.minimize_score
        self.best = math.inf if self.minimize else -math.inf

    def observe(self, train_loss: float, val_loss: float, score: Callable[[], float]) -> Verdict:
        """Record one epoch. `score()` is called only when the losses are finite."""
        self.epoch += 1
        self.elapsed = time.perf_counter() - self.start
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            self.notes.append(f"loss became {train_loss if not math.isfinite(train_loss) else val_loss} "
                              f"at epoch {self.epoch}")
            return Verdict(stop_reason="diverged")
        val_score = score()
        for key, value in (("train_loss", train_loss), ("val_loss", val_loss), ("val_score", val_score)):
            self.history[key].append(value)
        monitored = val_loss if self.config.monitor == "val_loss" else val_score
        c = self.config
        improved, stop, reason = early_stopping_check(monitored, self.best, self.since_best, c.patience,
                                                      c.min_delta, self.minimize)
        if improved or self.best_epoch == 0:
            self.best, self.best_epoch, self.since_best, improved = monitored, self.epoch, 0, True
        else:
            self.since_best += 1
        verdict = Verdict(improved=improved, val_score=val_score)
        if stop:
            verdict.stop_reason, verdict.note = "early_stopping", reason
        elif self.epoch >= c.max_epochs:
            verdict.stop_reason = "max_epochs"
        return verdict

    def stop(self, reason: str, note: str = "") -> None:
        self.stop_reason = reason
        if note:
            self.notes.append(note)

    def result(self) -> TrainResult:
        h, i = self.history, self.best_epoch - 1
        return TrainResult(
            history=h, best_epoch=self.best_epoch, n_epochs=len(h["train_loss"]), stop_reason=self.stop_reason,
            best_val_score=h["val_score"][i] if self.best_epoch else float("nan"),
            best_val_loss=h["val_loss"][i] if self.best_epoch else float("nan"),
            train_time_s=self.elapsed, notes=self.notes)
