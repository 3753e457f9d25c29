"""`train_stack(members, data, ...)`: the one trainer. One net is a stack of one; a k-fold trial is a stack of
its folds; a population is a stack of trials. No Optuna here: the search passes callbacks.

Each epoch: every live member takes its lr multiplier (its own schedule, its own epoch), one pass over its rows,
one validation pass; then the one host-device sync; then each member's `Ledger` says whether this is its new best
(its weights are snapshotted) and whether it stops; `on_epoch` may prune members. A member that stops is reported
to `on_done`, which may hand back a refill for its slot: fresh weights from its seed, fresh optimizer state, its
own epoch counter and schedule, starting with the next epoch. When no refill comes, the slot stays empty (frozen)
and the stack is compacted once half of it is empty.

Batch orders: a member with `batch_seed` None shares the stack's order (a generator seeded with the first
member's config.seed, so a stack of one draws exactly the batches `train` always drew); one with its own
`batch_seed` or its own `data` draws from its own generator (seeded with batch_seed, else its config.seed).
A refill that must train exactly as it would alone passes batch_seed = its config.seed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from automlp.data import TrainData
from automlp.engine.config import TrainConfig, TrainResult, seed_everything
from automlp.engine.ledger import Ledger
from automlp.engine.schedules import lr_multiplier
from automlp.engine.single import SingleStepper
from automlp.engine.stack import StackStepper
from automlp.metrics import get_metric, score
from automlp.model import MLPConfig, build_mlp
from automlp.registry import STACKABLE_OPTIMIZERS


@dataclass(frozen=True)
class Member:
    tag: Hashable  # e.g. the Optuna trial number; the engine only passes it back
    net: MLPConfig
    config: TrainConfig
    data: TrainData | None = None  # its own rows (a fold's train/val tensors); None: the stack's shared data
    batch_seed: int | None = None  # its own batch order; None: the stack's shared order (the fast case)

    @property
    def own_order_seed(self) -> int | None:
        """The seed of the batch order it draws alone (its batch_seed; its config's seed when it has rows of its
        own); None when it takes the stack's shared order."""
        if self.batch_seed is not None:
            return self.batch_seed
        return self.config.seed if self.data is not None else None


@dataclass
class EpochReport:
    tag: Hashable
    epoch: int  # 1-based, the member's own
    train_loss: float
    val_loss: float
    val_score: float


@dataclass
class MemberOutcome:
    tag: Hashable
    result: TrainResult
    model: nn.Module  # the plain net with its best epoch's weights, on the host


EpochCallback = Callable[[list[EpochReport]], Collection[Hashable]]
DoneCallback = Callable[[MemberOutcome], "Member | None"]


def stack_key(net: MLPConfig, config: TrainConfig) -> tuple | None:
    """Members with equal keys can share a stack; None: this one trains alone (lbfgs: a full-batch line search)."""
    if config.optimizer not in STACKABLE_OPTIMIZERS or (net.plain and config.label_smoothing):
        return None  # a plain MLP with label smoothing trains alone (the stacked MLP's loss has none)
    key = (net.n_inputs, net.n_outputs, net.depth, net.activation, config.optimizer, config.batch_size)
    # nets of blocks stack with nets of the same blocks and widths (automlp.blocks.net.BlockNet: no padding)
    return key if net.plain else key + (net.widths, net.blocks)


@dataclass
class _Slot:
    member: Member
    data: TrainData
    ledger: Ledger
    gen: torch.Generator | None  # its own batch order; None: the shared one


def train_stack(members: Sequence[Member], data: TrainData, *, on_epoch: EpochCallback | None = None,
                on_done: DoneCallback | None = None, stop: threading.Event | None = None,
                deadline: float | None = None) -> list[MemberOutcome]:
    """Train the members (and the refills `on_done` returns) together; returns every outcome in the order the
    members ended. `on_epoch(reports)` returns the tags to prune now. `stop`, when set, ends every member after its
    current epoch (stop_reason "interrupted"); `deadline` (a time.time()) ends them after their current epoch with
    stop_reason "timeout" and a note (their best epoch so far is their result, as early stopping would keep it)."""
    if not members:
        return []
    if len(members) == 1:
        m = members[0]
        stepper: SingleStepper | StackStepper = SingleStepper.build(m.net, m.data or data, m.config)
    else:
        _check_keys(members)
        stepper = StackStepper([m.net for m in members], [m.config for m in members],
                               [m.data or data for m in members], data, dropout_seed=members[0].config.seed + 1)
    return _Run(stepper, members, data, on_epoch, on_done, stop, deadline).run()


def train(model: nn.Module, data: TrainData, config: TrainConfig,
          on_epoch: Callable[[int, float], bool] | None = None) -> TrainResult:
    """One given net (any module), trained in place: the stack of one. Stops at max_epochs, early stopping,
    divergence, or `on_epoch(epoch, val_score)` returning True (pruned). On return the model holds the weights of
    its best epoch (by `config.monitor`)."""
    stepper = SingleStepper(model, data, config, host_export=False)
    prune = None if on_epoch is None else (lambda reports: {r.tag for r in reports if on_epoch(r.epoch, r.val_score)})
    member = Member(tag=0, net=None, config=config)  # type: ignore[arg-type]  # the model is given, not built
    (outcome,) = _Run(stepper, [member], data, prune, None, None, None).run()
    return outcome.result


def _check_keys(members: Sequence[Member]) -> None:
    keys = {stack_key(m.net, m.config) for m in members}
    if len(keys) != 1 or None in keys:
        raise ValueError(f"these members cannot share one stack (keys {keys}); group them with stack_key first")


class _Run:
    """The epochs of one train_stack call."""

    def __init__(self, stepper, members, data, on_epoch, on_done, stop, deadline):
        self.stepper, self.data = stepper, data
        self.on_epoch, self.on_done, self.stop, self.deadline = on_epoch, on_done, stop, deadline
        self.key = stack_key(members[0].net, members[0].config) if members[0].net is not None else None
        self.shared_gen = torch.Generator(device=data.device).manual_seed(members[0].config.seed)
        self.slots: list[_Slot | None] = [self._slot(m) for m in members]
        self.outcomes: list[MemberOutcome] = []
        self._y_val: dict[int, np.ndarray] = {}

    def _slot(self, m: Member) -> _Slot:
        data = m.data or self.data
        seed = m.own_order_seed
        gen = None if seed is None else torch.Generator(device=data.device).manual_seed(seed)
        minimize = get_metric(m.config.metric).direction == "minimize"
        return _Slot(m, data, Ledger(m.config, minimize), gen)

    def run(self) -> list[MemberOutcome]:
        # Adam's second moments of rarely-used inputs decay into subnormal floats, which a CPU computes on up to
        # 100x slower (measured: a K=16 digits epoch 63 -> 36 ms). Flushing them to zero changes no result that
        # matters; the flag is process-wide, so it is set back (to torch's default, False) when training ends.
        flushed = self.data.device.type == "cpu" and torch.set_flush_denormal(True)
        try:
            while any(self.slots):
                self._epoch()
                self._maybe_compact()
        finally:
            if flushed:
                torch.set_flush_denormal(False)
        return self.outcomes

    def _perms(self) -> list[torch.Tensor | None]:
        live = [s for s in self.slots if s is not None]
        shared = None
        if any(s.gen is None for s in live):
            shared = torch.randperm(len(self.data.X_train), generator=self.shared_gen, device=self.data.device)
        return [None if s is None else shared if s.gen is None else
                torch.randperm(len(s.data.X_train), generator=s.gen, device=s.data.device) for s in self.slots]

    def _epoch(self) -> None:
        slots = self.slots
        self.stepper.set_lr_scales([0.0 if s is None else lr_multiplier(s.member.config, s.ledger.epoch + 1,
                                                                         s.ledger.history["val_loss"])
                                    for s in slots])
        train_loss = self.stepper.train_epoch(self._perms())
        val_loss, outputs = self.stepper.evaluate()
        # the one host-device sync of the epoch
        train_l, val_l = train_loss.tolist(), val_loss.tolist()
        outs = (outputs.float().cpu().numpy() if isinstance(outputs, torch.Tensor)
                else [o.float().cpu().numpy() for o in outputs])
        verdicts, reports = {}, []
        for r, s in enumerate(slots):
            if s is None:
                continue
            verdicts[r] = v = s.ledger.observe(train_l[r], val_l[r], lambda s=s, r=r: self._score(s, outs[r]))
            if v.stop_reason != "diverged":
                reports.append(EpochReport(s.member.tag, s.ledger.epoch, train_l[r], val_l[r], v.val_score))
        improved = [r for r, v in verdicts.items() if v.improved]
        if improved:
            self.stepper.snapshot(improved)
        pruned = set(self.on_epoch(reports)) if self.on_epoch is not None and reports else set()
        for r, v in verdicts.items():
            reason = self._ending(slots[r], v, pruned)
            if reason is not None:
                self._finish(r, *reason)

    def _ending(self, s: _Slot, v, pruned: set) -> tuple[str, str] | None:
        after = f"stopped after epoch {s.ledger.epoch}"
        if v.stop_reason == "diverged":
            return "diverged", ""
        if s.member.tag in pruned:
            return "pruned", ""
        if v.stop_reason is not None:
            return v.stop_reason, v.note
        if self.stop is not None and self.stop.is_set():
            return "interrupted", f"{after}: interrupted"
        if self.deadline is not None and time.time() >= self.deadline:
            return "timeout", f"{after}: the search's timeout had passed; its best epoch so far is kept"
        return None

    def _score(self, s: _Slot, out: np.ndarray) -> float:
        d = s.data
        if id(d) not in self._y_val:
            self._y_val[id(d)] = d.y_val.cpu().numpy()
        return score(s.member.config.metric, self._y_val[id(d)], out, d.target_mean, d.target_std)

    def _finish(self, row: int, reason: str, note: str) -> None:
        s = self.slots[row]
        s.ledger.stop(reason, note)
        refill = self._report(MemberOutcome(s.member.tag, s.ledger.result(), self.stepper.export(row)))
        if refill is None:
            self.slots[row] = None
            self.stepper.freeze(row)
            return
        if self.key is not None and len(self.slots) > 1 and stack_key(refill.net, refill.config) != self.key:
            raise ValueError(f"a refill must have the stack's key {self.key}; "
                             f"got {stack_key(refill.net, refill.config)}")
        self.slots[row] = self._slot(refill)
        self.stepper.load(row, refill.net, refill.config, refill.data or self.data)

    def _report(self, outcome: MemberOutcome) -> Member | None:
        """Tell on_done; a refill asked for after stop or the deadline ends at once, untrained ("interrupted")."""
        self.outcomes.append(outcome)
        refill = self.on_done(outcome) if self.on_done is not None else None
        while refill is not None and self._closing():
            seed_everything(refill.config.seed)
            ledger = self._slot(refill).ledger
            ledger.stop("interrupted", "not trained: the search was stopping")
            declined = MemberOutcome(refill.tag, ledger.result(), build_mlp(refill.net))
            self.outcomes.append(declined)
            refill = self.on_done(declined)
        return refill

    def _closing(self) -> bool:
        return ((self.stop is not None and self.stop.is_set())
                or (self.deadline is not None and time.time() >= self.deadline))

    def _maybe_compact(self) -> None:
        live = [r for r, s in enumerate(self.slots) if s is not None]
        if not isinstance(self.stepper, StackStepper) or not live or len(live) > self.stepper.n_rows // 2:
            return
        self.stepper.compact(live)
        self.slots = [self.slots[r] for r in live]
