"""Shared studies without a database server: liveness of trials, the study-wide budget under a start race,
`automlp status`, and the checks of the heartbeat settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from automlp.storage import HOST, WORKER_ATTR, fail_stale_trials, open_storage, worker_record
from parallel_util import AUTOMLP, PG_URL, server_or_skip, states, trials_of, unique_name, write_spec

UTIL = str(Path(__file__).with_name("parallel_util.py"))
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")


def _study_with_running_trial(tmp_path: Path, grace_period: int = 2):
    url = f"journal:///{tmp_path}/s.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=1,
                                                                     grace_period=grace_period))
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    return study, trial


def _set_record(study, trial, **rec):
    study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR,
                                         worker_record() | {"trial_id": trial._trial_id, "t": time.time()} | rec)


def test_trial_of_a_dead_process_on_this_machine_is_failed_and_retried_at_once(tmp_path):
    study, trial = _study_with_running_trial(tmp_path, grace_period=3600)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _set_record(study, trial, pid=gone.pid, pid_start=None)
    fail_stale_trials(study)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].params == trials[0].params and trials[1].system_attrs["failed_trial"] == 0


def test_trial_of_a_live_process_is_kept_and_a_silent_remote_one_is_failed_after_the_grace_period(tmp_path):
    study, trial = _study_with_running_trial(tmp_path, grace_period=2)
    _set_record(study, trial, pid=os.getppid(), pid_start=None)  # alive, on this machine
    fail_stale_trials(study)
    assert study.get_trials()[0].state == TrialState.RUNNING
    _set_record(study, trial, host="elsewhere", t=time.time())  # another machine, heartbeat fresh
    fail_stale_trials(study)
    assert study.get_trials()[0].state == TrialState.RUNNING
    _set_record(study, trial, host="elsewhere", t=time.time() - 3)  # silent for longer than the grace period
    fail_stale_trials(study)
    assert states(study.get_trials()) == {"FAIL": 1, "WAITING": 1}


def test_a_retried_trial_is_not_judged_by_the_heartbeat_it_inherited(tmp_path):
    study, trial = _study_with_running_trial(tmp_path, grace_period=3600)
    _set_record(study, trial, pid=999_999_999)  # no such process
    fail_stale_trials(study)
    retry = study.ask()  # pops the WAITING retry, which carries the dead record in its copied system attrs
    assert retry.number == 1 and retry.params == trial.params
    fail_stale_trials(study)
    assert study.get_trials()[1].state == TrialState.RUNNING


@pytest.mark.parametrize("scheme", ["journal", "sqlite"])
def test_a_trial_whose_storage_went_away_before_its_first_heartbeat_is_failed_after_the_grace_period(tmp_path,
                                                                                                    scheme):
    # It has no heartbeat and no worker record: without this rule it stayed RUNNING for ever, and a rerun with
    # n_trials waited for its slot
    url = f"journal:///{tmp_path}/s.journal" if scheme == "journal" else f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=1, grace_period=2))
    study.ask().suggest_float("x", 0, 1)
    fail_stale_trials(study)
    assert states(study.get_trials()) == {"RUNNING": 1}  # young: its worker may still be about to beat
    time.sleep(2.5)
    fail_stale_trials(study)
    assert states(study.get_trials()) == {"FAIL": 1, "WAITING": 1}


@pytest.mark.slow
@pytest.mark.parametrize("storage,n_trials", [("journal", 200)] * 4 + [("sqlite", 30)])
def test_two_workers_started_at_the_same_instant_on_an_empty_storage(tmp_path, storage, n_trials):
    # Plain Optuna on an empty SQLite file crashed one of two such workers in 10 of 12 runs (table creation).
    # These workers have no shared lock file, so the budget rule alone keeps the count exact.
    url = f"journal:///{tmp_path}/race.journal" if storage == "journal" else f"sqlite:///{tmp_path}/race.db"
    go_at = f"{time.time() + 8:.3f}"  # after both have imported the search layer (torch: seconds)
    procs = [subprocess.Popen([sys.executable, UTIL, url, "race", str(n_trials), go_at], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "database is locked" not in err, err
        assert "Traceback" not in err, err
    trials = trials_of("race", url)
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(finished) == n_trials
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(int(o.split()[1]) for o, _ in outs) == len(trials)


def test_status_redacts_the_password_and_lists_workers(tmp_path):
    server_or_skip(PG_URL, "PostgreSQL")
    name = unique_name("automlp_status")
    url = PG_URL.replace("postgres@", "postgres:s3cret@")  # trust authentication accepts any password
    study = optuna.create_study(study_name=name, storage=open_storage(url))
    try:
        t = study.ask()
        t.suggest_float("x", 0, 1)
        study.tell(t, 0.5)
        running = study.ask()
        _set_record(study, running)
        r = subprocess.run([AUTOMLP, "status", "--study-name", name, "--storage", url], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "s3cret" not in r.stdout + r.stderr and "postgres:***@" in r.stdout
        assert "trials: running 1, complete 1" in r.stdout
        assert f"{HOST} pid {os.getpid()}: 1 trials, running trial #1" in r.stdout
        r = subprocess.run([AUTOMLP, "status", "--study-name", name, "--storage", url, "--json"], capture_output=True,
                           text=True)
        s = json.loads(r.stdout)
        assert s["trials"] == {"RUNNING": 1, "COMPLETE": 1} and s["best"]["value"] == 0.5
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(url))


def test_status_of_a_missing_study_and_without_arguments(tmp_path):
    url = f"journal:///{tmp_path}/none.journal"
    r = subprocess.run([AUTOMLP, "status", "--study-name", "nope", "--storage", url], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"error: --study-name: no study 'nope' in {url}; studies there: none. Run automlp "
                                "search first, or check --study-name and --storage")
    r = subprocess.run([AUTOMLP, "status"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: --study-name and --storage: needed when no spec file is given; give a spec "
                                 "file, or both --study-name NAME and --storage URL")


def test_grace_period_must_exceed_the_heartbeat_interval(tmp_path):
    spec = write_spec(tmp_path, "hb", 2, heartbeat_interval=10, grace_period=10)
    r = subprocess.run([AUTOMLP, "validate", str(spec)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "study.grace_period: must be > heartbeat_interval (got grace_period=10, " \
           "heartbeat_interval=10)" in r.stderr
