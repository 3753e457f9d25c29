"""Population training (training.population) in shared studies: `--workers`, a killed search, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal

import pytest
import yaml
from optuna.trial import TrialState

from automlp.storage import WORKER_ATTR
from parallel_util import describe, finish, start, states, trials_of, wait_for, write_spec

pytestmark = pytest.mark.slow


def _population_spec(tmp_path, name, n_trials, population, epochs, batch_size=8):
    path = write_spec(tmp_path, name, n_trials=n_trials, epochs=epochs, batch_size=batch_size)
    spec = yaml.safe_load(path.read_text())
    spec["training"]["population"] = population
    path.write_text(yaml.safe_dump(spec))
    return path, f"journal://{tmp_path / 'studies' / name / 'study.journal'}"


def _trials(name, url):
    try:
        return trials_of(name, url)
    except (KeyError, FileNotFoundError):  # the study is not created yet
        return []


def _finished(trials):
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


def test_workers_train_populations_within_the_study_wide_budget(tmp_path):
    spec, url = _population_spec(tmp_path, "popw", n_trials=7, population=3, epochs=3, batch_size=32)
    [(rc, out, err)] = finish([start("search", str(spec), "--workers", "2", "-q", "--no-report", cwd=tmp_path)])
    assert rc == 0, err
    trials = trials_of("popw", url)
    assert states(trials) == {"COMPLETE": 7}, describe(trials)
    stacked = [t for t in trials if "population" in t.user_attrs]
    assert stacked and max(t.user_attrs["population"]["size"] for t in stacked) == 3
    assert len({t.system_attrs[WORKER_ATTR]["pid"] for t in trials}) == 2  # both workers trained
    summary = json.loads((tmp_path / "studies" / "popw" / "summary.json").read_text())
    assert summary["trials"] == {"COMPLETE": 7}


def test_a_killed_population_search_is_retried_by_the_same_command(tmp_path):
    spec, url = _population_spec(tmp_path, "popk", n_trials=6, population=3, epochs=150)  # a few s a generation
    cmd = ("search", str(spec), "-q", "--no-report")
    proc = start(*cmd, cwd=tmp_path)

    def three_running():
        running = [t for t in _trials("popk", url) if t.state == TrialState.RUNNING and WORKER_ATTR in t.system_attrs]
        return len(running) == 3 and running

    killed = wait_for(three_running, 120, "a generation of 3 members with heartbeats")
    proc.kill()
    proc.wait()
    [(rc, out, err)] = finish([start(*cmd, cwd=tmp_path)])
    assert rc == 0, err
    trials = trials_of("popk", url)
    by_number = {t.number: t for t in trials}
    assert {by_number[t.number].state for t in killed} == {TrialState.FAIL}, describe(trials)
    retried = {t.system_attrs.get("failed_trial") for t in trials} - {None}
    assert retried == {t.number for t in killed}, describe(trials)
    assert _finished(trials) == 6 and "RUNNING" not in states(trials), describe(trials)


def test_ctrl_c_stops_a_population_after_its_epoch(tmp_path):
    spec, url = _population_spec(tmp_path, "popc", n_trials=6, population=3, epochs=400)
    proc = start("search", str(spec), "-q", "--no-report", cwd=tmp_path, start_new_session=True)
    wait_for(lambda: sum(t.state == TrialState.RUNNING for t in _trials("popc", url)) == 3, 120, "a running generation")
    os.killpg(proc.pid, signal.SIGINT)
    [(rc, out, err)] = finish([proc], timeout=30)  # 400 epochs would take minutes: it stopped at the epoch
    assert rc == 130, err
    trials = trials_of("popc", url)
    assert states(trials) == {"FAIL": 3}, describe(trials)
    summary = json.loads((tmp_path / "studies" / "popc" / "summary.json").read_text())
    assert summary["trials"] == {"FAIL": 3}
