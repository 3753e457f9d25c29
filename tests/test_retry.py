"""The retry layer around a storage (automlp.retry): which errors are transient, retries through an outage,
training that goes on while the storage is down, and the stop past study.storage_patience."""

from __future__ import annotations

import sqlite3
import threading
import time

import optuna
import psycopg
import pymysql
import pytest
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError
from optuna.storages import BaseStorage, InMemoryStorage
from optuna.trial import TrialState

from automlp.errors import StorageUnreachable
from automlp.retry import RetryingStorage, is_transient, storage_unreachable, unreachable_cause, watch


def _wrapped(driver_error: Exception) -> Exception:
    """What Optuna's RDB storage raises: StorageInternalError from SQLAlchemy's error from the driver's."""
    sa = sqlalchemy.exc.OperationalError("SELECT 1", {}, driver_error)
    try:
        try:
            raise sa from driver_error
        except sqlalchemy.exc.SQLAlchemyError as e:
            raise StorageInternalError("An exception is raised during the commit.") from e
    except StorageInternalError as e:
        return e


@pytest.mark.parametrize("error, transient", [
    (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), True),
    (psycopg.errors.CannotConnectNow("the database system is shutting down"), True),
    (psycopg.errors.SerializationFailure("could not serialize access"), True),
    (psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"), True),
    (psycopg.OperationalError("connection failed: Connection refused"), True),  # no SQLSTATE: the connection
    (psycopg.errors.InvalidPassword("password authentication failed"), False),
    (psycopg.errors.InvalidCatalogName('database "nope" does not exist'), False),
    (psycopg.errors.UniqueViolation("duplicate key"), False),
    (pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"), True),
    (pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"), True),
    (pymysql.err.OperationalError(1045, "Access denied for user"), False),
    (sqlite3.OperationalError("database is locked"), True),
    (sqlite3.OperationalError("no such table: trials"), False),
    (ConnectionResetError(104, "Connection reset by peer"), True),
    (ValueError("Cannot tell a FAIL trial."), False),
])
def test_transient_errors_are_told_apart_through_optunas_and_sqlalchemys_wrappers(error, transient):
    assert is_transient(error) is transient
    assert is_transient(_wrapped(error)) is transient


class FlakyStorage(InMemoryStorage):
    """An in-memory storage whose every call fails with 'connection refused' while `down` is set."""

    def __init__(self):
        super().__init__()
        self.down = threading.Event()
        self.failed = 0


def _flaky(name):
    def method(self, *args, **kwargs):
        if self.down.is_set():
            self.failed += 1
            raise ConnectionRefusedError(111, "Connection refused")
        return getattr(InMemoryStorage, name)(self, *args, **kwargs)
    return method


for _n in [n for n in vars(BaseStorage) if not n.startswith("_") and callable(getattr(BaseStorage, n))]:
    setattr(FlakyStorage, _n, _flaky(_n))


def _optimize(study, objective, n_trials):
    """Optuna's own optimize loop over the retrying storage (the runners' ask-and-tell path is covered end to end
    by tests/test_faults_postgres.py); an outage past the patience comes out as itself."""
    try:
        study.optimize(objective, n_trials=n_trials)
    except Exception as e:  # noqa: BLE001 - re-raised: as it was, or the outage Optuna's loop hides behind it
        cause = unreachable_cause(e)
        if cause is None:
            raise
        raise cause from None


def _study(inner, patience=30.0):
    storage = RetryingStorage(inner, "flaky://db", patience)
    return optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0)), storage


def test_a_short_outage_is_ridden_out_and_training_goes_on_meanwhile():
    inner = FlakyStorage()
    study, storage = _study(inner)
    seen, reported = [], {}
    unwatch = watch(seen.append)

    def objective(trial):
        x = trial.suggest_float("x", -1, 1)
        for step in range(6):
            t0 = time.perf_counter()
            trial.report(x + step, step)
            reported[(trial.number, step)] = time.perf_counter() - t0
            if step == 1 and trial.number == 1:
                inner.down.set()  # the database goes down in the middle of the trial...
                threading.Timer(0.6, inner.down.clear).start()  # ...and is back 0.6 s later
            time.sleep(0.15)  # an epoch
            assert not (storage_unreachable(trial.study) and trial.should_prune())
        return x

    try:
        _optimize(study, objective, 3)
    finally:
        unwatch()
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert all(t.intermediate_values == {s: t.params["x"] + s for s in range(6)} for t in trials)  # none lost
    assert max(reported.values()) < 0.1  # a report never waited for the storage
    assert inner.failed >= 1 and storage.stats.n_retried_calls >= 1 and len(storage.stats.outages_s) == 1
    assert 0.3 < storage.stats.outages_s[0] < 3
    assert any(s is not None and s >= 0 for s in seen) and seen[-1] is None  # the CLI's line, then "back"


def test_the_watchers_hear_of_an_outage_each_second_while_it_lasts_not_only_at_the_attempts():
    # attempts are up to 5 s apart (backoff with jitter); the console's line must not wait for the next one
    inner = FlakyStorage()
    _, storage = _study(inner)
    heard = []
    unwatch = watch(lambda s: heard.append((time.monotonic(), s)))
    inner.down.set()
    threading.Timer(2.5, inner.down.clear).start()
    try:
        t0 = time.monotonic()
        storage.get_all_studies()
    finally:
        unwatch()
    assert heard[-1][1] is None and time.monotonic() - t0 >= 2.5
    times = [t0] + [t for t, s in heard[:-1]]
    assert max(b - a for a, b in zip(times, times[1:])) < 1.3, heard
    assert max(s for _, s in heard[:-1]) >= 2.0, heard


def test_past_the_patience_the_trial_stops_with_one_message_and_stays_running():
    inner = FlakyStorage()
    study, storage = _study(inner, patience=0.5)

    def objective(trial):
        for step in range(100):
            trial.report(0.0, step)
            if step == 2:
                inner.down.set()  # and it never comes back
            time.sleep(0.05)
        return 0.0

    t0 = time.monotonic()
    with pytest.raises(StorageUnreachable) as info:
        _optimize(study, objective, 2)
    assert time.monotonic() - t0 < 5
    assert str(info.value).startswith("study.storage: flaky://db unreachable for ")
    assert "longer than study.storage_patience (0.5 s); last error: ConnectionRefusedError: [Errno 111] " \
           "Connection refused. This worker stopped; its running trial is failed and retried by another worker " \
           "or the next run. When the storage is back, run the same command to resume: finished trials are kept" \
           in str(info.value)
    inner.down.clear()
    assert [t.state for t in InMemoryStorage.get_all_trials(inner, 0)] == [TrialState.RUNNING]
    with pytest.raises(StorageUnreachable):  # it gave up: later calls fail at once, not after another wait
        storage.get_all_studies()


def test_other_errors_are_not_retried():
    inner = FlakyStorage()
    study, storage = _study(inner)
    with pytest.raises(KeyError):
        storage.get_trial(12345)
    assert storage.stats.n_attempts == 0
