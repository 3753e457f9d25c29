"""The epoch loop of a stack: shared batches, per-member losses, early stopping, snapshots, freezing, compaction.

Every member sees the same batch order: one `torch.randperm` per epoch, drawn from a generator seeded with the
stack's batch seed, indexes the rows all members train on. A shared batch is what lets one batched matrix product
serve all members (the input is a stride-0 view, never copied K times). The price: members of one stack differ in
their initial weights, hyperparameters and dropout draws, not in the order they see the data. (With the batch seed
set to a member's own seed, that member's batches are exactly those `automlp.train.train` would draw for it.)

A member that stops (pruned, early-stopped, diverged) is frozen: its learning rate is masked to 0 and its loss is
masked out of the sum, so the others' gradients, updates and batches are exactly what they were. When at most
`compact_below` of the rows are still training, the stack is compacted to the live rows, so the work shrinks too.

Epochs count from 1, as in automlp.train; so do `best_epoch` and the `on_epoch` callback's argument.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from automlp.population.optim import StackedOptimizer
from automlp.population.stack import PopulationMLP, member_losses
from automlp.train import TrainResult, early_stopping_check

# on_epoch(epoch, {member: val_score}) -> members to stop now (e.g. pruned).
EpochCallback = Callable[[int, dict[int, float]], set[int]]
# score_fn(outputs of one member on the validation rows, as a host array) -> its val_score.
ScoreFn = Callable[[np.ndarray], float]
# lr_scale(epoch, {member: val_loss history}) -> {member: multiplier of its lr this epoch}.
LrScaleFn = Callable[[int, dict[int, list[float]]], dict[int, float]]


@dataclass(frozen=True)
class LoopConfig:
    batch_size: int
    max_epochs: int
    task: str  # "classification" | "regression"
    score_fn: ScoreFn
    minimize_score: bool = False
    batch_seed: int = 0
    patience: int | None = None  # None: no early stopping
    min_delta: float = 0.0
    monitor: str = "val_loss"  # | "val_score"
    compact_below: float = 0.5  # compact when live rows / rows <= this; 0 never compacts
    eval_chunk_elems: int = 1 << 24  # bound on K * rows * width held at once when evaluating
    deadline: float | None = None  # time.perf_counter() after which live members stop (the search's timeout)


@dataclass
class _Track:
    """A member's early-stopping state."""

    best: float
    since_best: int = 0
    best_epoch: int = 0
    pending_stop: tuple[bool, str] = (False, "")


class StackTrainer:
    """Trains one PopulationMLP with its StackedOptimizer on device-resident tensors."""

    def __init__(self, net: PopulationMLP, opt: StackedOptimizer, config: LoopConfig) -> None:
        self.net, self.opt, self.cfg = net, opt, config
        dev = net.flat.device
        k = net.n_members
        self.ids = torch.arange(k, device=dev)  # row -> member
        self.active = torch.ones(k, dtype=torch.bool, device=dev)
        self.best_flat = net.flat.detach().clone()
        self.minimize = config.monitor == "val_loss" or config.minimize_score
        self.tracks = [_Track(math.inf if self.minimize else -math.inf) for _ in range(k)]
        self.histories = [{"train_loss": [], "val_loss": [], "val_score": []} for _ in range(k)]
        self.stop_reasons = ["max_epochs"] * k
        self.notes: list[list[str]] = [[] for _ in range(k)]
        self.times = [0.0] * k

    def fit(self, X, y, X_val, y_val, on_epoch: EpochCallback | None = None,
            lr_scale: LrScaleFn | None = None) -> list[TrainResult]:  # fmt: skip
        gen = torch.Generator(device=X.device).manual_seed(self.cfg.batch_seed)
        self.net.generator = torch.Generator(device=X.device).manual_seed(self.cfg.batch_seed + 1)
        # Adam's second moments of rarely-used inputs decay into subnormal floats, which a CPU computes on up to
        # 100x slower (measured: a K=16 digits epoch 63 -> 36 ms). Flushing them to zero changes no result that
        # matters; the flag is process-wide, so it is set back (to torch's default, False) when training ends.
        flushed = X.device.type == "cpu" and torch.set_flush_denormal(True)
        try:
            self._fit(X, y, X_val, y_val, gen, on_epoch, lr_scale)
        finally:
            if flushed:
                torch.set_flush_denormal(False)
        return [self._result(m) for m in range(len(self.tracks))]

    def _fit(self, X, y, X_val, y_val, gen, on_epoch, lr_scale) -> None:
        start = time.perf_counter()
        for epoch in range(1, self.cfg.max_epochs + 1):
            self.opt.set_lr_scale(self._lr_scale(epoch, lr_scale))
            train_loss = self._train_epoch(X, y, gen)
            val_loss, outputs = self.evaluate(X_val, y_val)
            self._end_epoch(epoch, train_loss, val_loss, outputs, on_epoch, time.perf_counter() - start)
            if self.cfg.deadline is not None and time.perf_counter() >= self.cfg.deadline:
                self._stop_all("pruned", f"stopped after epoch {epoch}: the search's timeout has passed")
            if not bool(self.active.any()):
                break
            self._maybe_compact()

    def _lr_scale(self, epoch: int, lr_scale: LrScaleFn | None) -> torch.Tensor:
        scale = self.active.float()
        if lr_scale is not None:
            ids = self.ids.tolist()
            factors = lr_scale(epoch, {m: self.histories[m]["val_loss"] for m in ids})
            scale = scale * torch.tensor([factors[m] for m in ids], device=scale.device)
        return scale

    def _train_epoch(self, X: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        self.net.train()
        n, bs = X.shape[0], min(self.cfg.batch_size, X.shape[0])
        perm = torch.randperm(n, generator=gen, device=X.device)
        total = torch.zeros(self.net.n_members, device=X.device)
        live = self.active
        for s in range(0, n, bs):
            idx = perm[s : s + bs]
            losses = member_losses(self.net(X[idx]), y[idx], self.cfg.task)
            self.opt.zero_grad()
            # Frozen members are masked out with where (not a product), so a NaN loss of a diverged one stays out.
            torch.where(live, losses, 0.0).sum().backward()
            self.opt.step()
            total += losses.detach() * idx.shape[0]  # stays on the device: no sync per batch
        return total / n

    @torch.no_grad()
    def evaluate(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member mean loss (K,) and outputs (K, N, C) on X, in chunks that bound memory."""
        self.net.eval()
        widest = max(o for _, o in self.net.layer_sizes)
        chunk = max(1, self.cfg.eval_chunk_elems // (self.net.n_members * widest))
        outputs = torch.cat([self.net(X[s : s + chunk]) for s in range(0, X.shape[0], chunk)], dim=1)
        return member_losses(outputs, y, self.cfg.task), outputs

    def _end_epoch(self, epoch, train_loss, val_loss, outputs, on_epoch, elapsed) -> None:
        rows = self.active.nonzero().view(-1).tolist()
        ids = self.ids.tolist()
        # the one host-device sync of the epoch
        train_l, val_l, outs = train_loss.tolist(), val_loss.tolist(), outputs.float().cpu().numpy()
        scores, improved, stopping = {}, [], {}
        for r in rows:
            m = ids[r]
            self.times[m] = elapsed
            if not (math.isfinite(train_l[r]) and math.isfinite(val_l[r])):
                bad = train_l[r] if not math.isfinite(train_l[r]) else val_l[r]
                self.notes[m].append(f"loss became {bad} at epoch {epoch}")
                stopping[m] = (r, "diverged")
                continue
            score = self.cfg.score_fn(outs[r])
            scores[m] = score
            for key, value in (("train_loss", train_l[r]), ("val_loss", val_l[r]), ("val_score", score)):
                self.histories[m][key].append(value)
            if self._track(m, epoch, val_l[r] if self.cfg.monitor == "val_loss" else score):
                improved.append(r)
        if improved:
            rows_t = torch.tensor(improved, device=self.ids.device)
            self.best_flat[self.ids[rows_t]] = self.net.flat[rows_t]
        pruned = on_epoch(epoch, scores) if on_epoch is not None and scores else set()
        for r in rows:
            m = ids[r]
            if m in stopping:
                pass
            elif m in pruned:
                stopping[m] = (r, "pruned")
            elif self._should_stop(m):
                stopping[m] = (r, "early_stopping")
        for m, (r, reason) in stopping.items():
            self.stop_reasons[m] = reason
            self.active[r] = False

    def _stop_all(self, reason: str, note: str) -> None:
        for r in self.active.nonzero().view(-1).tolist():
            m = int(self.ids[r])
            self.stop_reasons[m] = reason
            self.notes[m].append(note)
        self.active[:] = False

    def _track(self, m: int, epoch: int, monitored: float) -> bool:
        t = self.tracks[m]
        improved, stop, reason = early_stopping_check(monitored, t.best, t.since_best, self.cfg.patience,
                                                      self.cfg.min_delta, self.minimize)  # fmt: skip
        t.pending_stop = (stop, reason)
        if improved or t.best_epoch == 0:
            t.best, t.best_epoch, t.since_best = monitored, epoch, 0
            return True
        t.since_best += 1
        return False

    def _should_stop(self, m: int) -> bool:
        stop, reason = self.tracks[m].pending_stop
        if stop:
            self.notes[m].append(reason)
        return stop

    def _maybe_compact(self) -> None:
        n_live = int(self.active.sum())
        if n_live == self.net.n_members or n_live > self.cfg.compact_below * self.net.n_members:
            return
        rows = self.active.nonzero().view(-1)
        self.net.select(rows)
        self.opt.select(rows, self.net.flat, self.net.flat_grad)
        self.ids, self.active = self.ids[rows], self.active[rows]

    def _result(self, m: int) -> TrainResult:
        h, t = self.histories[m], self.tracks[m]
        i = t.best_epoch - 1
        return TrainResult(
            history=h, best_epoch=t.best_epoch, n_epochs=len(h["train_loss"]), stop_reason=self.stop_reasons[m],
            best_val_score=h["val_score"][i] if t.best_epoch else float("nan"),
            best_val_loss=h["val_loss"][i] if t.best_epoch else float("nan"),
            train_time_s=self.times[m], notes=self.notes[m])  # fmt: skip
