"""Runners: drive a study's trials through the engine until the budget, the deadline or a stop.

One interface, `run(study, budget, stop, deadline, callbacks) -> interrupted`, one implementation: `StackRunner`
keeps a stack of up to `size` trials training. size 1 is the sequential path (a stack of one, refilled with the
next asked trial); a larger size is a population: when a member stops, its slot takes a new trial that
`study.enqueue_trial` fixes to the stack's structural params (depth, activation, optimizer, batch_size); the
sampler fills in the rest, and Optuna 5's TPE keeps concurrent asks apart with the constant liar. Members share
the stack's batch order (the fast case); each has its own epochs, schedule and stop.
A trial that does not fit the stack (a retry of another worker's trial, lbfgs) waits in `pending` and starts the
next stack; while one waits, freed slots are not refilled, so the stack drains.

Guarantees, whatever the size: the study-wide budget (`TrialBudget`: room is checked under the machine-wide lock
before every ask, and each trial is admitted after it exists); heartbeats for every asked trial until it is told
(Optuna sends them only inside study.optimize); a stop flag that ends every member after its current epoch (its
trial FAIL); and a `finally` that tells FAIL to every trial asked and not told, on any exception.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

import optuna
import torch
from optuna.trial import TrialState

from automlp.adapters import is_heartbeat_enabled, storage_of, trial_id
from automlp.engine import Member, MemberOutcome, train_stack
from automlp.errors import StorageUnreachable
from automlp.model import MLPConfig, count_params
from automlp.retry import OutageGuard, TrialLost
from automlp.search.budget import TrialBudget
from automlp.search.space import structural_params
from automlp.search.trial import Reporter, TrialRecord, Trials
from automlp.spec import Spec

Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
logger = logging.getLogger("automlp")
# bench/population.py, 2 CPU cores: the rate per member-epoch peaks when a step's stacked matrix products reach
# about K x batch x params = 5e7 multiply-adds (K = 16-32 for 2x128 nets at batch 128) and falls beyond.
CPU_STEP_MACS = 5e7
CPU_POPULATION = (8, 32)
GPU_POPULATION = 128


class Runner(Protocol):
    def run(self, study: optuna.Study, budget: TrialBudget, stop: threading.Event, deadline: float | None = None,
            callbacks: Sequence[Callback] = ()) -> bool:
        """Run trials until the budget is spent, `deadline` (a time.time()) passes or `stop` is set; True when
        stopped by `stop` or KeyboardInterrupt (the trials still training are then FAIL)."""


class TrialSource(Protocol):
    """What a runner needs of the trials it drives: `automlp.search.trial.Trials` (a stand-in in tests)."""

    tensors: object  # the shared data the engine trains on

    def member(self, trial: optuna.Trial) -> Member: ...
    def key(self, member: Member) -> Hashable | None: ...  # equal keys may share a stack; None: alone
    def alone(self, member: Member) -> Member: ...  # with its own batch order
    def stack_seed(self, leader: Member) -> int: ...  # the seed of a stack's shared batch order
    def tell(self, study: optuna.Study, trial: optuna.Trial, member: Member, outcome: MemberOutcome,
             population: dict | None) -> optuna.trial.FrozenTrial: ...


class StackRunner:
    """The runner of every search. `cut_at_deadline` (default: for stacks of several) stops members still training
    when the deadline passes, after their current epoch, and tells them COMPLETE with their best epoch so far
    (stop_reason "timeout"); without it, as study.optimize does, the trial in flight finishes."""

    def __init__(self, trials: TrialSource, size: int = 1, cut_at_deadline: bool | None = None,
                 train=train_stack):
        self.trials, self.size, self.train = trials, size, train
        # at the deadline no new trial starts. One trial alone finishes (as study.optimize lets its trial finish);
        # a stack is always mid-training with K trials, so letting them all finish overran a 3 s timeout by 74 s
        # (auto_mpg, K = 32): they stop at the deadline instead, each keeping its best epoch so far, so a short
        # search still ends with COMPLETE trials
        self.cut_at_deadline = size > 1 if cut_at_deadline is None else cut_at_deadline

    def run(self, study: optuna.Study, budget: TrialBudget, stop: threading.Event, deadline: float | None = None,
            callbacks: Sequence[Callback] = ()) -> bool:
        with warnings.catch_warnings():
            # Optuna warns that heartbeats are meant for study.optimize; Heartbeats sends them for ask-and-tell
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
            with Heartbeats(study) as beats:
                session = _Session(self, study, budget, stop, deadline, list(callbacks), beats)
                try:
                    session.loop()
                except KeyboardInterrupt:
                    return True
                except StorageUnreachable:
                    # the storage is gone for longer than study.storage_patience: nothing can be told; the trials
                    # stay RUNNING until their heartbeats go stale, then are failed and retried elsewhere
                    session.abandon()
                    raise
                finally:
                    session.fail_untold()
        return stop.is_set()


class _Session:
    """One run's bookkeeping: the trials asked and not yet told, the members waiting for a stack."""

    def __init__(self, runner: StackRunner, study, budget, stop, deadline, callbacks, beats):
        self.runner, self.trials, self.size = runner, runner.trials, runner.size
        self.study, self.budget, self.stop, self.deadline = study, budget, stop, deadline
        self.callbacks, self.beats = callbacks, beats
        self.asked: dict[int, optuna.Trial] = {}  # by trial number = member tag
        self.members: dict[int, Member] = {}
        self.pending: list[Member] = []
        self.leader: Member | None = None  # the first member of the current stack
        self.reporter = Reporter()
        self.guards: dict[int, OutageGuard] = {}  # a trial failed elsewhere during an outage is not told

    def loop(self) -> None:
        while not self.stop.is_set():
            waiting, self.pending = self.pending, []
            members = self._place(waiting) if waiting else self._start()
            if members is None:
                break
            if not members:  # every trial asked was skipped: look at the budget again
                continue
            try:
                self.runner.train(members, self.trials.tensors, on_epoch=self.reporter, on_done=self._done,
                                  stop=self.stop, deadline=self.deadline if self.runner.cut_at_deadline else None)
            except torch.OutOfMemoryError:
                # like study.optimize(catch=OutOfMemoryError): this stack's trials are FAIL, the search goes on
                logger.warning("out of memory training trials %s; they are marked FAIL", sorted(self.members))
                self._fail(list(self.members), notify=True)
            if torch.cuda.is_initialized():
                torch.cuda.empty_cache()  # the stack's memory goes back before the next one is built

    # ------------------------------------------------------------------ asking

    def _ask(self, fixed: dict | None = None) -> optuna.Trial:
        if fixed:
            self.study.enqueue_trial(fixed)
        trial = self.study.ask()  # a trial queued for retry (its worker died) is taken first, with its params
        self.asked[trial.number] = trial
        self.guards[trial.number] = OutageGuard(trial)
        self.reporter.trials[trial.number] = trial
        self.beats.add(trial)
        return trial

    def _admit(self, trial: optuna.Trial) -> Member | None:
        """The trial's member, or None when another worker took the budget's last slot (told FAIL, skipped), or
        failed the trial as stale while this one could not reach the storage (forgotten, not told)."""
        try:
            if self.budget.admits(self.study, trial):
                return self.trials.member(trial)
            TrialRecord.skip(trial)
        except TrialLost:
            self._forget(trial.number)
            return None
        self._tell_fail(trial.number, notify=True)
        return None

    def _start(self) -> list[Member] | None:
        """Wait for room in the budget, then ask the first members of a stack; None: no room will come.
        The machine-wide lock is held only to check and ask, never while waiting: a worker waiting for room
        must not block another's refills, which are what frees it."""
        while self.budget.wait_for_room(self.study, self.stop, self.deadline) > 0:
            with self.budget.local_lock() as release:
                k = min(self.size, self.budget.room(self.study))
                if k <= 0:
                    continue  # another worker of this machine took the room meanwhile
                leader = self._ask()
                first = self._admit(leader)
                stackable = first is not None and self.size > 1 and self.trials.key(first) is not None
                rest = [self._ask(self._structural(leader)) for _ in range(k - 1)] if stackable else []
                release()  # the trials exist: other workers of this machine may check the budget
            members = [first] + [self._admit(t) for t in rest]
            return self._place([m for m in members if m is not None])
        return None

    def _place(self, members: list[Member]) -> list[Member]:
        """The first member and those sharing its key make the stack; the others wait for the next one."""
        if not members:
            return []
        self.leader = members[0]
        fits = [i == 0 or self._fits(m) for i, m in enumerate(members)]
        self.pending += [m for m, ok in zip(members, fits) if not ok]
        return [self._seat(m) for m, ok in zip(members, fits) if ok]

    def _fits(self, member: Member) -> bool:
        """A stack of one takes any next trial; a larger one only trials of its key (lbfgs: none)."""
        if self.size == 1:
            return True
        key = self.trials.key(self.leader)
        return key is not None and self.trials.key(member) == key

    @property
    def shared(self) -> bool:
        """Whether members share the stack's batch order (a stack of several; its first member's seed)."""
        return self.size > 1 and self.trials.key(self.leader) is not None

    def _seat(self, member: Member) -> Member:
        """Alone (a stack of one, or lbfgs), a member draws its own seed's batches, as replay will; in a stack,
        the shared order: the fast case, one batch for all members."""
        if not self.shared:
            member = self.trials.alone(member)
        self.members[member.tag] = member
        return member

    def _population(self, member: Member) -> dict | None:
        """What replay needs of a stack member: the stack size and the seed of the batch order it drew (the stack's
        shared one; its own seed's when it trained on rows of its own, as the engine does for another numeric
        preprocessing's data)."""
        if not self.shared:
            return None
        own = member.own_order_seed  # the engine's rule (automlp.engine.loop)
        return {"size": self.size, "batch_seed": self.trials.stack_seed(self.leader) if own is None else own}

    def _structural(self, trial: optuna.Trial) -> dict:
        return structural_params(trial.params)

    # ------------------------------------------------------------------ telling and refilling

    def _done(self, outcome: MemberOutcome) -> Member | None:
        """on_done: tell the member's trial, then fill its slot with a new trial of the same key, if any."""
        trial, member = self.asked[outcome.tag], self.members.pop(outcome.tag)
        try:
            self.guards[outcome.tag].check()
            frozen = self.trials.tell(self.study, trial, member, outcome, self._population(member))
        except TrialLost:  # failed and retried by another worker during an outage: not told, not counted
            self._forget(outcome.tag)
            return self._refill(trial)
        self._forget(outcome.tag)
        for cb in self.callbacks:
            cb(self.study, frozen)
        return self._refill(trial)

    def _refill(self, finished: optuna.Trial) -> Member | None:
        past = self.deadline is not None and time.time() >= self.deadline
        if self.stop.is_set() or past or self.pending:
            return None
        with self.budget.local_lock() as release:
            if self.budget.room(self.study) <= 0:
                return None
            trial = self._ask(self._structural(finished) if self.shared else None)
            release()
        new = self._admit(trial)
        if new is None:
            return None
        if not self._fits(new):
            self.pending.append(new)  # it starts the next stack
            return None
        return self._seat(new)

    # ------------------------------------------------------------------ failing

    def _forget(self, number: int) -> None:
        trial = self.asked.pop(number)
        self.guards.pop(number, None)
        self.reporter.trials.pop(number, None)
        self.beats.discard(trial)

    def _tell_fail(self, number: int, notify: bool = False) -> None:
        """FAIL; `notify` runs the callbacks, as study.optimize does for a failure it catches (not on the way
        out of an exception)."""
        trial = self.asked[number]
        self._forget(number)
        if storage_of(self.study).get_trial(trial_id(trial)).state.is_finished():
            return  # failed as stale by another worker while this one could not reach the storage
        try:
            frozen = self.study.tell(trial, state=TrialState.FAIL)
        except TrialLost:
            return
        for cb in self.callbacks if notify else ():
            cb(self.study, frozen)

    def _fail(self, numbers: list[int], notify: bool = False) -> None:
        for number in numbers:
            self.members.pop(number, None)
            if number in self.asked:
                self._tell_fail(number, notify)

    def abandon(self) -> None:
        """Forget every trial without telling it (the storage cannot be reached)."""
        self.pending, self.asked, self.members = [], {}, {}

    def fail_untold(self) -> None:
        """Every trial asked and not told (training, waiting for a stack) is told FAIL."""
        self.pending = []
        self._fail(list(self.asked))


class Heartbeats:
    """Heartbeats for trials driven by ask-and-tell (Optuna sends them only inside study.optimize): each trial
    records one when asked, then one thread beats for every trial not yet told."""

    def __init__(self, study: optuna.Study):
        storage = storage_of(study)
        self.storage = storage if is_heartbeat_enabled(storage) else None
        self.ids: set[int] = set()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, trial: optuna.Trial) -> None:
        if self.storage is not None:
            self.storage.record_heartbeat(trial_id(trial))
            with self.lock:
                self.ids.add(trial_id(trial))

    def discard(self, trial: optuna.Trial) -> None:
        with self.lock:
            self.ids.discard(trial_id(trial))

    def __enter__(self) -> Heartbeats:
        if self.storage is not None:
            self.thread = threading.Thread(target=self._beat, name="automlp-heartbeats", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()

    def _beat(self) -> None:
        interval = self.storage.get_heartbeat_interval()
        while not self.done.wait(interval):
            with self.lock:
                ids = sorted(self.ids)
            for tid in ids:
                if self.done.is_set():
                    return
                try:
                    if self.storage.get_trial(tid).state == TrialState.RUNNING:
                        self.storage.record_heartbeat(tid)
                except (Exception, StorageUnreachable):  # a storage hiccup (or outage) must not kill the beat
                    pass  # thread, whose end would print a traceback; the next beat retries, the main thread stops


# --------------------------------------------------------------------------- choosing a runner


def _upper(param) -> float:
    values = param.grid_values()
    if values:
        return max(values)
    return param.value if param.is_fixed else param.high


def population_size(spec: Spec, n_inputs: int, n_outputs: int, device: torch.device, n_numeric: int = 0) -> int:
    """training.population, or for auto: as many members as the device runs well and its memory holds, sized for
    the largest net the space holds: its widest embedding widens the first layer (`n_numeric` columns of
    d_embedding each), and a TabM net runs its k_ensemble internal members over every batch row."""
    if spec.training.population != "auto":
        return int(spec.training.population)
    space = spec.space
    width, depth, batch = int(_upper(space.width)), int(_upper(space.depth)), int(_upper(space.batch_size))
    if set(space.embedding.grid_values()) - {"none"}:
        n_inputs += n_numeric * (int(_upper(space.d_embedding)) - 1)
    if set(space.arch.grid_values()) - {"mlp"}:
        batch *= int(_upper(space.k_ensemble))  # each row passes through every internal member
    n_params = count_params(MLPConfig(n_inputs, n_outputs, (width,) * depth))
    # params, grads, two optimizer moments, the best-epoch snapshot; activations of a batch kept for backward
    per_member = 4 * (6 * n_params + 4 * batch * (width * depth + n_outputs))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(1, min(GPU_POPULATION, int(0.5 * free // per_member)))
    low, high = CPU_POPULATION
    k = min(high, max(low, round(CPU_STEP_MACS / (batch * n_params))))
    return max(1, min(k, int(2 * 2**30 // per_member)))


def make_runner(trials: Trials) -> StackRunner:
    """The runner training.population asks for: a stack of one, or of K trials."""
    data = trials.data
    size = population_size(trials.spec, data.n_features, data.n_outputs, trials.tensors.device,
                           len(data.numeric_columns))
    train = getattr(trials, "train", None)  # k-fold trials train as their folds (automlp.search.kfold)
    return StackRunner(trials, size, train=train) if train is not None else StackRunner(trials, size)
