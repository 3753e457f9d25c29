"""The study-wide budget: exactly `n_trials` finished trials, whatever the number of workers.

Before asking for trials, a runner waits until the finished, running and queued trials leave room (or the budget
is spent). Two workers may still see the same last slot at once; after its trial exists, each counts the finished
trials plus the running or queued trials numbered below its own, and only the worker that fits trains (the other
trial is failed with a skip note in its record and never trained). Workers of one machine take a file lock around
every look (which also fails stale trials and queues their retries) and around "check, then create", so locally
that never happens. Stale trials (their worker died) are failed and queued for
retry on every look; a queued retry may always start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from automlp.search.study import FINISHED
from automlp.spec import Spec
from automlp.storage import fail_stale_trials

UNLIMITED = 2**31  # room left by a budget without n_trials


@dataclass
class TrialBudget:
    n_trials: int | None
    lock_path: Path | None = None
    poll_s: float = 0.2

    def room(self, study: optuna.Study) -> int:
        """How many trials may start now (one look); 0 when none may, now or ever."""
        return self._look(study) or 0

    def wait_for_room(self, study: optuna.Study, stop: threading.Event, deadline: float | None) -> int:
        """Block until at least one trial may start, then return how many may; 0 when the budget is spent,
        the deadline (a time.time()) passed or stop is set."""
        while not stop.is_set() and (deadline is None or time.time() < deadline):
            # under the machine's lock: failing a stale trial and queueing its retry are two writes, and a worker of
            # this machine that looked between them would see a slot that the retry then takes
            with self.local_lock():
                room = self._look(study)
            if room is None or room > 0:
                return room or 0
            stop.wait(self.poll_s)
        return 0

    def _look(self, study: optuna.Study) -> int | None:
        """Room for trials now (a queued retry may always start); None once the budget is spent."""
        if self.n_trials is None:
            return UNLIMITED
        fail_stale_trials(study)
        n = {s: 0 for s in TrialState}
        for t in study.get_trials(deepcopy=False):
            n[t.state] += 1
        finished = n[TrialState.COMPLETE] + n[TrialState.PRUNED]
        if finished >= self.n_trials:
            return None
        room = self.n_trials - finished - n[TrialState.RUNNING]
        return max(room, 1) if room > 0 or n[TrialState.WAITING] else 0

    def admits(self, study: optuna.Study, trial: optuna.Trial) -> bool:
        """Whether `trial`, already created, fits the budget (see the module docstring)."""
        if self.n_trials is None:
            return True
        held = 0
        for t in study.get_trials(deepcopy=False):
            if t.state in FINISHED or (t.state in (TrialState.RUNNING, TrialState.WAITING) and t.number < trial.number):
                held += 1
        return held < self.n_trials

    @contextlib.contextmanager
    def local_lock(self) -> Iterator[Callable[[], None]]:
        """Hold the machine-wide lock; yields a function that releases it early (idempotent)."""
        if self.lock_path is None:
            yield lambda: None
            return
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        held = [True]

        def release() -> None:
            if held[0]:
                held[0] = False
                fcntl.flock(fd, fcntl.LOCK_UN)

        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield release
        finally:
            release()
            os.close(fd)


def trial_budget(spec: Spec) -> TrialBudget:
    """n_trials is study-wide; workers of this machine share a lock file in the study folder."""
    return TrialBudget(spec.study.n_trials, spec.study_dir / ".budget.lock")
