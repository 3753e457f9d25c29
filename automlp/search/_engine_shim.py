"""A stand-in for `automlp.engine.train_stack` (docs: /work/notes/ENGINE_CONTRACT.md) until the engine lands.

It implements the contract on today's two trainers: a stack of one trains with `automlp.train.train` (or, with its
own batch seed, as a stack of one of `train_population`); a larger stack with `train_population`. It does not
refill slots between epochs: the refills `on_done` returns are trained together as the next stack, so every
asked trial still trains, a generation at a time. This module goes when the engine's `train_stack` arrives.
"""

from __future__ import annotations

import math
import time
import threading
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass

from torch import nn

from automlp.data import TrainData
from automlp.model import MLPConfig, build_mlp
from automlp.population.train import stack_key as _stack_key
from automlp.population.train import train_population
from automlp.train import TrainConfig, TrainResult, predict, seed_everything, train

__all__ = ["EpochReport", "Member", "MemberOutcome", "TrainConfig", "TrainResult", "predict", "stack_key",
           "train_stack"]
DEADLINE_NOTE = "stopped after epoch {}: the search's timeout has passed"


@dataclass(frozen=True)
class Member:
    tag: Hashable
    net: MLPConfig
    config: TrainConfig
    data: TrainData | None = None
    batch_seed: int | None = None


@dataclass
class EpochReport:
    tag: Hashable
    epoch: int
    train_loss: float
    val_loss: float
    val_score: float


@dataclass
class MemberOutcome:
    tag: Hashable
    result: TrainResult
    model: nn.Module


def stack_key(net: MLPConfig, config: TrainConfig) -> tuple | None:
    return _stack_key(net, config)


def train_stack(members: Sequence[Member], data: TrainData, *,
                on_epoch: Callable[[list[EpochReport]], Collection[Hashable]] | None = None,
                on_done: Callable[[MemberOutcome], Member | None] | None = None,
                stop: threading.Event | None = None, deadline: float | None = None) -> list[MemberOutcome]:
    """Train `members` (one structural key), then the refills `on_done` returns, until none comes.
    `deadline` is a time.time(): members still training then stop (stop_reason "pruned", with a note)."""
    out: list[MemberOutcome] = []
    todo = list(members)
    while todo:
        batch, todo = todo, []
        for outcome in _train_batch(batch, data, on_epoch, stop, deadline):
            out.append(outcome)
            refill = on_done(outcome) if on_done is not None else None
            if refill is not None:
                todo.append(refill)
    return out


def _train_batch(batch, data, on_epoch, stop, deadline) -> list[MemberOutcome]:
    if len(batch) == 1 and batch[0].batch_seed is None:
        return [_train_alone(batch[0], batch[0].data or data, on_epoch, stop, deadline)]
    own = [m for m in batch if m.data is not None]
    shared = [m for m in batch if m.data is None]
    out = [_train_alone(m, m.data, on_epoch, stop, deadline) for m in own]  # no own rows in a shim stack
    return out + (_train_together(shared, data, on_epoch, stop, deadline) if shared else [])


class _Stopper:
    """Reports each epoch through on_epoch; ends members on a stop flag or at the deadline."""

    def __init__(self, on_epoch, stop, deadline):
        self.on_epoch, self.stop, self.deadline = on_epoch, stop, deadline
        self.reasons: dict = {}

    def __call__(self, epoch: int, scores: dict) -> set:
        """scores: {tag: val_score}; returns the tags to end now."""
        if self.stop is not None and self.stop.is_set():
            self.reasons.update({tag: ("interrupted", None) for tag in scores})
            return set(scores)
        reports = [EpochReport(tag, epoch, math.nan, math.nan, v) for tag, v in scores.items()]
        pruned = set(self.on_epoch(reports)) if self.on_epoch is not None else set()
        if self.deadline is not None and time.time() >= self.deadline:
            late = set(scores) - pruned
            self.reasons.update({tag: ("pruned", DEADLINE_NOTE.format(epoch)) for tag in late})
            pruned |= late
        return pruned

    def fix(self, tag, result: TrainResult) -> TrainResult:
        if result.stop_reason == "pruned" and tag in self.reasons:
            result.stop_reason, note = self.reasons[tag]
            if note:
                result.notes.append(note)
        return result


def _train_alone(m: Member, data: TrainData, on_epoch, stop, deadline) -> MemberOutcome:
    stopper = _Stopper(on_epoch, stop, deadline)
    seed_everything(m.config.seed)
    model = build_mlp(m.net).to(data.device)
    result = train(model, data, m.config, lambda epoch, v: bool(stopper(epoch, {m.tag: v})))
    return MemberOutcome(m.tag, stopper.fix(m.tag, result), model)


def _train_together(batch: list[Member], data, on_epoch, stop, deadline) -> list[MemberOutcome]:
    stopper = _Stopper(on_epoch, stop, deadline)
    tags = [m.tag for m in batch]

    def epoch_cb(epoch: int, scores: dict[int, float]) -> set[int]:
        ended = stopper(epoch, {tags[i]: v for i, v in scores.items()})
        return {i for i, t in enumerate(tags) if t in ended}

    pairs = train_population([m.net for m in batch], [m.config for m in batch], data, epoch_cb,
                             batch_seed=batch[0].batch_seed)
    return [MemberOutcome(t, stopper.fix(t, r), model) for t, (model, r) in zip(tags, pairs)]
