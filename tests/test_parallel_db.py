"""Four worker processes on one study in PostgreSQL and in MariaDB: exactly n_trials finished, unique trial
numbers, nothing left running. Skipped without a server, unless AUTOMLP_REQUIRE_DB=1 (CI), where they fail.

PostgreSQL: four separate `automlp worker` commands started together, as on four machines (they also race to
create the study). MariaDB: `automlp search --workers 4`, which creates the study, then forks its workers."""

from __future__ import annotations

import json

import pytest
from optuna.trial import TrialState

from parallel_util import MYSQL_URL, PG_URL, describe, drop_study, finish, server_or_skip, start, states, trials_of, \
    unique_name, write_spec

pytestmark = pytest.mark.slow


def _check_40(name, url):
    trials = trials_of(name, url)
    assert states(trials) == {"COMPLETE": 40}, describe(trials)
    assert sorted(t.number for t in trials) == list(range(40)), describe(trials)
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["val_metrics"] for t in trials)
    return trials


def test_four_worker_commands_share_one_postgresql_study_of_40_trials(tmp_path):
    server_or_skip(PG_URL, "PostgreSQL")
    name = unique_name("automlp_par")
    spec = write_spec(tmp_path, name, n_trials=40, epochs=1)
    try:
        results = finish([start("worker", str(spec), "--storage", PG_URL, cwd=tmp_path) for _ in range(4)])
        for rc, out, err in results:
            assert rc == 0, err
            assert f"on study {name} in {PG_URL}: ran " in out
        _check_40(name, PG_URL)
        ran = [out.strip().splitlines()[-1] for _, out, _ in results]
        assert sum(int(line.split(": ran ")[1].split()[0]) for line in ran) == 40, ran
    finally:
        drop_study(name, PG_URL)


def test_search_with_four_workers_on_a_mariadb_study_of_40_trials(tmp_path):
    server_or_skip(MYSQL_URL, "MariaDB/MySQL")
    name = unique_name("automlp_par")
    spec = write_spec(tmp_path, name, n_trials=40, epochs=1)
    try:
        [(rc, out, err)] = finish([start("search", str(spec), "--storage", MYSQL_URL, "--workers", "4", "-q", "--no-report",
                                         cwd=tmp_path)])
        assert rc == 0, err
        trials = _check_40(name, MYSQL_URL)
        assert len({t.system_attrs["automlp:worker"]["pid"] for t in trials}) >= 2  # the work was shared
        summary = json.loads((tmp_path / "studies" / name / "summary.json").read_text())
        assert summary["trials"] == {"COMPLETE": 40} and summary["storage"] == MYSQL_URL
    finally:
        drop_study(name, MYSQL_URL)
