"""Shared helpers of the parallel tests: tiny specs, the installed console script, database servers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

from automlp.spec import PLAIN_MLP

AUTOMLP = str(Path(sys.executable).with_name("automlp"))
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/test"


def write_spec(folder: Path, name: str, n_trials: int, epochs: int = 2, batch_size: int = 128,
               storage: str | None = None, **study) -> Path:
    """Iris, one hidden layer of a plain MLP, a few epochs, random sampler, no pruner, no portfolio: a trial is tens
    of milliseconds (raise `epochs` and lower `batch_size` for trials that last a second or so), and every trial
    that finishes is COMPLETE (the default space's blocks can diverge at lr 0.1: PRUNED)."""
    spec = {
        "data": {"dataset": "sklearn:iris", "test_size": 0.2, "split_seed": 0},
        "space": {"depth": 1, "width": {"low": 4, "high": 16}, "lr": {"low": 1e-3, "high": 1e-1, "log": True}, "alpha": 1e-4, "batch_size": batch_size,
                  "max_epochs": epochs, **PLAIN_MLP},
        "training": {"early_stopping": {"enabled": False}, "device": "cpu", "threads": 1},
        "study": {"name": name, "n_trials": n_trials, "sampler": "random", "pruner": "none", "seed": 0,
                  "portfolio": False, **study},
        "output": {"dir": str(folder / "studies")},
    }
    if storage:
        spec["study"]["storage"] = storage
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def start(*args: str, cwd: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen([AUTOMLP, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def finish(procs: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str, str]]:
    """Wait for each process; one that outlives `timeout` fails the test with the Python stack of every thread of
    it and of its workers (faulthandler, on SIGABRT), so a hang in CI says where it hung."""
    out = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in [*_descendants(p.pid), p.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGABRT)
            o, e = p.communicate()
            pytest.fail(f"{' '.join(p.args[1:])} still ran after {timeout:.0f} s; the stacks of its processes:\n"
                        f"{e[-20000:]}", pytrace=False)
        out.append((p.returncode, o, e))
    return out


def _descendants(pid: int) -> list[int]:
    """The processes under `pid` (workers are children of the fork server, itself a child of the parent)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry.name))
    return [d for k in kids for d in (*_descendants(k), k)]


def trials_of(name: str, url: str) -> list[optuna.trial.FrozenTrial]:
    from automlp.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)


def states(trials) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def describe(trials) -> str:
    """One line per trial (state, what it retries, why it failed or was skipped), for assertion messages."""
    lines = []
    for t in trials:
        why = t.system_attrs.get("fail_reason") or t.user_attrs.get("automlp_skipped") or ""
        rec = t.system_attrs.get("automlp:worker") or {}
        lines.append(f"#{t.number} {t.state.name} pid={rec.get('pid')} retries={t.system_attrs.get('failed_trial')} "
                     f"start={t.datetime_start} end={t.datetime_complete} {why}".rstrip())
    return "\n".join(lines)


def server_or_skip(url: str, what: str) -> None:
    """Skip when the server is absent, unless AUTOMLP_REQUIRE_DB=1 (CI), where that is a failure."""
    import sqlalchemy

    try:
        with sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3}).connect():
            return
    except Exception as e:  # any driver or connection error means: no server to test against
        msg = f"{what} not reachable at {url} ({type(e).__name__}); start it or unset AUTOMLP_REQUIRE_DB"
        if os.environ.get("AUTOMLP_REQUIRE_DB") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def drop_study(name: str, url: str) -> None:
    from automlp.storage import open_storage

    try:
        optuna.delete_study(study_name=name, storage=open_storage(url))
    except KeyError:
        pass


def wait_for(pred, timeout: float, what: str, poll: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class _InstantTrials:
    """Trials whose training is one suggest: exercises the runner, the budget and the storage alone."""

    tensors = None

    def member(self, trial):
        return SimpleNamespace(tag=trial.number, x=trial.suggest_float("x", -1, 1))

    def key(self, member):
        return None  # each trains alone, as the sequential path does

    def alone(self, member):
        return member

    def tell(self, study, trial, member, outcome, size):
        return study.tell(trial, member.x ** 2)


def _instant_train(members, data, on_epoch=None, on_done=None, stop=None, deadline=None):
    """The engine's train_stack contract, with no training: every member is done at once."""
    todo, out = list(members), []
    while todo:
        member = todo.pop()
        out.append(SimpleNamespace(tag=member.tag))
        refill = on_done(out[-1])
        todo += [refill] if refill is not None else []
    return out


def _trivial_worker(url: str, name: str, n_trials: int, go_at: float) -> None:
    """A worker of the search layer without training: open, create-or-load, run trivial trials."""
    import threading

    from automlp.search.budget import TrialBudget
    from automlp.search.runners import StackRunner
    from automlp.storage import open_storage
    from automlp.workers import quiet_optuna

    quiet_optuna()
    time.sleep(max(0.0, go_at - time.time()))  # both processes touch the empty storage at the same instant
    study = optuna.create_study(study_name=name, storage=open_storage(url), load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler())
    mine = []
    StackRunner(_InstantTrials(), train=_instant_train).run(study, TrialBudget(n_trials), threading.Event(),
                                                            callbacks=[lambda s, t: mine.append(t.state.name)])
    print(f"ran {len(mine)}")


if __name__ == "__main__":
    _trivial_worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
