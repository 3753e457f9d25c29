"""StackRunner: the one runner (a stack of one, or of K refilling slots). The bookkeeping is tested against a
stand-in engine (instant members); the real engine runs in test_search.py and test_population_search.py."""

from __future__ import annotations

import dataclasses
import threading
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from automlp.search.budget import TrialBudget
from automlp.search.runners import StackRunner
from automlp.search.trial import SKIP_NOTE, TrialRecord

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclasses.dataclass(frozen=True)
class FakeMember:
    tag: int
    depth: int
    seed: int
    batch_seed: int | None = None
    data: object = None  # rows of its own (None: the stack's)

    @property
    def own_order_seed(self) -> int | None:
        return self.batch_seed


class FakeTrials:
    """Trials of a two-parameter space; a member's key is its depth; its value is its depth."""

    tensors = None

    def __init__(self):
        self.told: dict[int, dict | None] = {}

    def member(self, trial):
        trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        return FakeMember(trial.number, trial.suggest_int("depth", 1, 3), seed=100 + trial.number)

    def key(self, member):
        return member.depth

    def stack_seed(self, leader):
        return leader.seed

    def alone(self, member):
        return dataclasses.replace(member, batch_seed=member.seed)

    def tell(self, study, trial, member, outcome, population):
        self.told[trial.number] = population
        return study.tell(trial, float(member.depth))


class FakeEngine:
    """train_stack's contract without training: members end one at a time, oldest first; a refill takes the
    freed slot. Records the stacks it was given and how many slots were live after each ending."""

    def __init__(self, raise_after: int | None = None):
        self.raise_after, self.stacks, self.live = raise_after, [], []

    def __call__(self, members, data, *, on_epoch=None, on_done=None, stop=None, deadline=None):
        slots, ended = list(members), 0
        self.stacks.append([m.tag for m in members])
        while slots:
            member = slots.pop(0)
            refill = on_done(SimpleNamespace(tag=member.tag))
            ended += 1
            if self.raise_after is not None and ended >= self.raise_after:
                raise RuntimeError("the engine failed")
            if refill is not None:
                assert len(members) == 1 or refill.depth == member.depth, "a refill of another structure"
                slots.append(refill)
            self.live.append(len(slots))
        return []


def _study(**kw):
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), **kw)


def _states(study):
    return [t.state for t in study.get_trials(deepcopy=False)]


def test_a_population_keeps_its_stack_full_with_trials_of_its_structure_until_the_budget():
    study, trials, engine = _study(), FakeTrials(), FakeEngine()
    interrupted = StackRunner(trials, size=3, train=engine).run(study, TrialBudget(10), threading.Event())
    assert not interrupted
    assert _states(study) == [TrialState.COMPLETE] * 10
    assert engine.stacks == [[0, 1, 2]]  # one stack; every other trial came in as a refill
    assert engine.live[:7] == [3] * 7 and engine.live[7:] == [2, 1, 0]  # full until the budget ran out
    depths = {t.params["depth"] for t in study.trials}
    assert len(depths) == 1  # every refill was enqueued with the stack's structural params
    records = list(trials.told.values())
    assert records == [{"size": 3, "batch_seed": 100}] * 10  # the shared order: the first member's seed


def test_the_sequential_path_is_one_stack_of_one_refilled_with_the_next_trial():
    study, trials, engine = _study(), FakeTrials(), FakeEngine()
    StackRunner(trials, size=1, train=engine).run(study, TrialBudget(6), threading.Event())
    assert _states(study) == [TrialState.COMPLETE] * 6
    assert engine.stacks == [[0]]  # the other five came through on_done
    assert len({t.params["depth"] for t in study.trials}) > 1  # not fixed to the first trial's structure
    assert list(trials.told.values()) == [None] * 6  # trained alone: no population record


def test_a_trial_of_another_structure_waits_and_starts_the_next_stack():
    study, trials, engine = _study(), FakeTrials(), FakeEngine()
    study.enqueue_trial({"depth": 1, "lr": 0.01})
    study.enqueue_trial({"depth": 2, "lr": 0.01})  # like a retry of a dead worker's trial: taken before ours
    StackRunner(trials, size=3, train=engine).run(study, TrialBudget(8), threading.Event())
    finished = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    assert len(finished) == 8
    assert len(engine.stacks) >= 2
    for stack in engine.stacks:
        assert len({study.trials[n].params["depth"] for n in stack}) == 1, engine.stacks
    assert study.trials[1].params["depth"] == 2 and engine.stacks[1][0] == 1  # it led the next stack
    assert TrialState.RUNNING not in _states(study)


@pytest.mark.parametrize("size", [1, 3])
@pytest.mark.parametrize("where", ["engine", "callback"])
def test_no_trial_is_left_running_after_an_exception(size, where):
    study, trials = _study(), FakeTrials()
    engine = FakeEngine(raise_after=2 if where == "engine" else None)

    def callback(study, trial):
        if where == "callback" and trial.number == 1:
            raise RuntimeError("the callback failed")

    with pytest.raises(RuntimeError, match="failed"):
        StackRunner(trials, size=size, train=engine).run(study, TrialBudget(10), threading.Event(),
                                                         callbacks=[callback])
    states = _states(study)
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    assert states.count(TrialState.COMPLETE) == 2 and states.count(TrialState.FAIL) == len(states) - 2
    if size > 1 or where == "engine":  # trials were training (or asked as refills) when it failed
        assert states.count(TrialState.FAIL) > 0


def test_ctrl_c_in_the_engine_returns_interrupted_with_every_trial_told():
    study, trials = _study(), FakeTrials()

    def engine(members, data, **kw):
        raise KeyboardInterrupt

    assert StackRunner(trials, size=3, train=engine).run(study, TrialBudget(5), threading.Event()) is True
    assert _states(study) == [TrialState.FAIL] * 3


def test_a_trial_the_budget_does_not_admit_is_skipped_and_counted():
    study, trials, engine = _study(), FakeTrials(), FakeEngine()
    budget = TrialBudget(3)
    budget.admits = lambda study, trial: trial.number != 1  # another machine's worker took that slot
    seen = []
    StackRunner(trials, size=1, train=engine).run(study, budget, threading.Event(),
                                                  callbacks=[lambda s, t: seen.append(t.state)])
    skipped = study.trials[1]
    assert skipped.state == TrialState.FAIL and TrialRecord.read(skipped).skipped == SKIP_NOTE
    assert not TrialRecord.read(skipped).trained
    assert seen.count(TrialState.FAIL) == 1 and seen.count(TrialState.COMPLETE) == 3


def test_a_set_stop_flag_asks_nothing():
    study = _study()
    assert StackRunner(FakeTrials(), size=3, train=FakeEngine()).run(study, TrialBudget(5), _set()) is True
    assert study.trials == []


def _set():
    e = threading.Event()
    e.set()
    return e


def test_the_trial_record_round_trips_through_the_user_attrs():
    study = _study()
    trial = study.ask()
    record = TrialRecord(seed=7, n_params=99, widths=(8, 4), architecture="3 -> 8-4 relu -> 2", n_epochs=5,
                         best_epoch=3, stop_reason="early_stopping", train_time_s=0.25,
                         curves={"val_score": [0.5, 0.6, 0.7, 0.6, 0.6]}, val_metrics={"accuracy": 0.7},
                         notes=("no improvement",), population={"size": 4, "batch_seed": 11}, best_val_loss=0.31)
    record.write(trial)
    study.tell(trial, 0.7)
    back = TrialRecord.read(study.trials[0])
    assert back == record and back.trained and back.batch_seed == 11
    assert set(study.trials[0].user_attrs) == {"seed", "n_params", "widths", "architecture", "n_epochs",
                                               "best_epoch", "stop_reason", "train_time_s", "curves",
                                               "val_metrics", "notes", "population", "best_val_loss"}
    bare = study.ask()
    study.tell(bare, state=TrialState.FAIL)
    assert TrialRecord.read(study.trials[1]) == TrialRecord()


def test_two_workers_of_one_machine_share_the_budget_without_a_deadlock(tmp_path):
    """A worker waiting for room must not hold the machine-wide lock that the other's refills need."""
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(),
                                sampler=optuna.samplers.RandomSampler(seed=1))

    class SlowEngine(FakeEngine):
        def __call__(self, members, data, **kw):
            on_done = kw["on_done"]

            def later(outcome):
                threading.Event().wait(0.02)  # members end while the other worker looks for room
                return on_done(outcome)

            return super().__call__(members, data, **(kw | {"on_done": later}))

    def worker():
        budget = TrialBudget(7, tmp_path / ".budget.lock", poll_s=0.01)
        StackRunner(FakeTrials(), size=3, train=SlowEngine()).run(study, budget, threading.Event())

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a worker is stuck"
    states = _states(study)
    assert states.count(TrialState.COMPLETE) == 7 and TrialState.RUNNING not in states


def test_a_look_for_room_fails_stale_trials_under_the_machines_lock(tmp_path, monkeypatch):
    """Failing a stale trial and queueing its retry are two writes: a worker of this machine that checked between
    them saw a free slot, which the retry then took, and its own new trial was skipped (a CI-style run)."""
    import fcntl
    import os

    from automlp.search import budget as budget_module

    lock, held = tmp_path / ".budget.lock", []

    def fail_stale(study):  # is the machine's lock held (by another open file) while stale trials are failed?
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)

    monkeypatch.setattr(budget_module, "fail_stale_trials", fail_stale)
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    assert TrialBudget(3, lock).wait_for_room(study, threading.Event(), None) == 3
    assert held == [True]


def test_population_auto_sizes_stacks_for_the_largest_net_of_the_space(monkeypatch):
    import torch

    from automlp.search.runners import population_size
    from automlp.spec import validate_spec_dict

    def k_for(**space):
        plain = {"embedding": "none", "arch": "mlp"}
        spec = validate_spec_dict({"data": {"dataset": "sklearn:diabetes"}, "training": {"population": "auto"},
                                   "space": {"depth": 3, "width": 512, "batch_size": 256, **plain, **space}})
        return population_size(spec, 10, 1, torch.device("cuda"), n_numeric=10)

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2 * 2**30, 16 * 2**30))
    plain = k_for()
    assert 30 < plain < 128  # memory-bound, under the GPU cap
    assert k_for(arch=["mlp", "tabm"], k_ensemble=32) < plain / 4  # 32 internal members on every batch row
    assert k_for(embedding=["none", "periodic"], d_embedding=64) < plain * 0.8  # 10 x 64 first-layer inputs
