"""A PostgreSQL server that restarts under `automlp search --workers 2`: a short restart is ridden out, a long
one stops the search with one line and exit status 2, and the same command then completes the study.

Each test runs a server of its own (initdb + pg_ctl on a free port), so the machine's server stays up."""

from __future__ import annotations

import time

import pytest
from optuna.trial import TrialState

from automlp.search.trial import SKIPPED
from fault_util import OwnPostgres, wait_until
from parallel_util import describe, finish, start, states, trials_of, write_spec

pytestmark = pytest.mark.slow


@pytest.fixture
def pg():
    server = OwnPostgres()
    server.start()
    yield server
    server.close()


def _running_and_finished(name, url):
    trials = trials_of(name, url)
    return any(t.state == TrialState.RUNNING for t in trials) and any(t.state == TrialState.COMPLETE for t in trials)


def test_a_restart_of_several_seconds_is_ridden_out_by_both_workers(tmp_path, pg):
    spec = write_spec(tmp_path, "restart", n_trials=8, epochs=40, batch_size=8, storage=pg.url,
                      heartbeat_interval=1, grace_period=30, storage_patience=60)
    proc = start("search", str(spec), "--workers", "2", "--no-report", "--no-export", cwd=tmp_path)
    wait_until(lambda: _running_and_finished("restart", pg.url), 120, "a finished trial and a running one")
    pg.stop()
    time.sleep(4)
    pg.start()
    [(rc, out, err)] = finish([proc])
    assert rc == 0, err
    assert "Traceback" not in err and "error" not in err, err
    assert "storage unreachable, retrying (" in err  # the progress line, while the parent waited
    assert "the storage was unreachable during the search and the workers rode it out: worker " in err, err
    trials = trials_of("restart", pg.url)
    assert states(trials) == {"COMPLETE": 8}, describe(trials)
    assert sorted(t.number for t in trials) == list(range(8))


def test_an_outage_longer_than_the_patience_stops_with_one_line_and_the_rerun_completes(tmp_path, pg):
    spec = write_spec(tmp_path, "outage", n_trials=6, epochs=40, batch_size=8, storage=pg.url,
                      heartbeat_interval=1, grace_period=30, storage_patience=3)
    cmd = ("search", str(spec), "--workers", "2", "-q", "--no-report", "--no-export")
    proc = start(*cmd, cwd=tmp_path)
    wait_until(lambda: _running_and_finished("outage", pg.url), 120, "a finished trial and a running one")
    pg.stop()
    try:
        [(rc, out, err)] = finish([proc], timeout=120)
    finally:
        pg.start()
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: study.storage: {pg.url} unreachable for "), err
    assert "longer than study.storage_patience (3 s)" in lines[0]
    assert lines[0].endswith("When the storage is back, run the same command to resume: finished trials are kept")
    n = states(trials_of("outage", pg.url))
    assert n.get("COMPLETE", 0) < 6 and n.get("RUNNING", 0) >= 1, n  # the running trials stayed RUNNING

    [(rc, out, err)] = finish([start(*cmd, cwd=tmp_path)])
    assert rc == 0, err
    trials = trials_of("outage", pg.url)
    n2 = states(trials)
    assert n2["COMPLETE"] == 6 and "RUNNING" not in n2 and "WAITING" not in n2, describe(trials)
    # each trial of the stopped run failed once... (besides, a trial asked as the budget filled up elsewhere is FAIL
    # untrained, with a note: the two workers of the rerun can ask at once)
    failed = [t for t in trials if t.state == TrialState.FAIL and SKIPPED not in t.user_attrs]
    assert len(failed) == n["RUNNING"], describe(trials)
    retried = [t for t in trials if "failed_trial" in t.system_attrs]
    assert len(retried) == n["RUNNING"] and all(t.state == TrialState.COMPLETE for t in retried)  # ...and retried
