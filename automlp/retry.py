"""Storage outages are weather, not bugs: a proxy that retries every storage call through a short outage.

`RetryingStorage` wraps the Optuna storage a process uses (every `BaseStorage` method, the heartbeat included:
Optuna's study, trial, optimize loop, samplers and pruners reach the storage only through `study._storage`).
A call that fails with a transient error (connection refused or reset, server shutting down or starting up,
serialization failure, deadlock, lock timeout; see `is_transient`) is tried again with exponential backoff and
full jitter, until the storage has been unreachable for `patience` seconds. Then the call raises
`StorageUnreachable` and so does every later one, at once.

While the storage is unreachable, training goes on: an epoch's intermediate value is kept in memory and
written (in order) before the next call that reaches the storage, and `storage_unreachable(study)` tells the
objective to skip pruning until then. The trial's final `tell` waits (and retries) like every other call, so a
result is kept until the database is back. Heartbeats retry in their own thread and never raise: a heartbeat
thread that dies would print a traceback.

Progress for the console: `watch(callback)` registers a function called with the seconds the storage has been
unreachable on every retry (and with None when it is back). Library code does not print; the CLI does.
"""

from __future__ import annotations

import abc
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage

from automlp.adapters import BaseHeartbeat, storage_of, trial_id
from automlp.errors import StorageUnreachable
from automlp.redaction import redact

STORAGE_PATIENCE_S = 300.0  # the default of study.storage_patience
FIRST_DELAY_S, MAX_DELAY_S = 0.1, 5.0

# SQLSTATEs worth waiting for (PostgreSQL): connection exceptions (class 08), serialization failure, deadlock,
# lock not available (lock_timeout), admin/crash shutdown, cannot connect now (starting up or shutting down),
# too many connections. Everything else (a bad password 28P01, a missing database 3D000) fails at once.
_PG_TRANSIENT = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"}
# MySQL/MariaDB error numbers: lock wait timeout, deadlock, too many connections, server shutdown, connection
# killed, client-side "can't connect", "server has gone away", "lost connection", and 4031 (idle disconnect).
_MYSQL_TRANSIENT = {1205, 1213, 1040, 1053, 1927, 2002, 2003, 2006, 2013, 2055, 4031}
_SQLITE_TRANSIENT = ("database is locked", "database table is locked")


def is_transient(exc: BaseException) -> bool:
    """True when `exc`, or an exception it was raised from, says the storage is unreachable or busy for now.
    Optuna wraps SQLAlchemy's errors in StorageInternalError, which wraps the driver's: the whole chain counts."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if _transient_here(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _transient_here(e: BaseException) -> bool:
    if isinstance(e, ConnectionError):  # refused, reset, aborted (sockets; the gRPC client's wait for its server)
        return True
    sqlalchemy = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy is not None and isinstance(e, sqlalchemy.DBAPIError) and e.connection_invalidated:
        return True
    for name in ("psycopg", "psycopg2"):
        mod = sys.modules.get(name)
        if mod is not None and isinstance(e, mod.Error):
            state = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
            if state is None:  # no SQLSTATE: the connection itself failed or was lost
                return isinstance(e, (mod.OperationalError, mod.InterfaceError))
            return state.startswith("08") or state in _PG_TRANSIENT
    pymysql = sys.modules.get("pymysql")
    if pymysql is not None and isinstance(e, pymysql.err.InterfaceError):
        return True  # "(0, '')": the connection is closed
    if pymysql is not None and isinstance(e, pymysql.err.OperationalError):
        return bool(e.args) and e.args[0] in _MYSQL_TRANSIENT
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(e, sqlite3.OperationalError):
        return str(e).startswith(_SQLITE_TRANSIENT)
    grpc = sys.modules.get("grpc")
    if grpc is not None and isinstance(e, grpc.RpcError) and hasattr(e, "code"):
        return e.code() == grpc.StatusCode.UNAVAILABLE
    return False


# --------------------------------------------------------------------------- who is told about waits

_watchers: list[Callable[[float | None], None]] = []


def watch(callback: Callable[[float | None], None]) -> Callable[[], None]:
    """Call `callback(seconds_unreachable)` on every retry of any storage of this process, and
    `callback(None)` when the storage answers again. Returns the function that stops it."""
    _watchers.append(callback)
    return lambda: _watchers.remove(callback) if callback in _watchers else None


def _tell_watchers(value: float | None) -> None:
    for cb in list(_watchers):
        cb(value)


@dataclass
class RetryStats:
    """What the retries of one process cost: for the closing note of a search and for benchmarks."""

    n_retried_calls: int = 0  # calls that needed at least one more attempt
    n_attempts: int = 0  # failed attempts in all
    outages_s: list[float] = field(default_factory=list)  # each outage, from the first failure to the next success

    @property
    def waited_s(self) -> float:
        return sum(self.outages_s)

    def as_dict(self) -> dict:
        return {"n_retried_calls": self.n_retried_calls, "n_attempts": self.n_attempts,
                "waited_s": round(self.waited_s, 2), "outages_s": [round(x, 2) for x in self.outages_s]}


_PROCESS_STATS = RetryStats()  # all storages of this process: what a worker reports to its parent


def process_stats() -> RetryStats:
    return _PROCESS_STATS


# --------------------------------------------------------------------------- the proxy


class RetryingStorage(BaseStorage, BaseHeartbeat):
    """Every call of `inner` (an Optuna storage), retried through a transient outage for up to `patience` s.

    `name` is what messages call the storage (its URL with the password hidden). Attributes that are not storage
    methods (a journal storage's `_backend`, say) are the inner storage's."""

    def __init__(self, inner: BaseStorage, name: str, patience: float = STORAGE_PATIENCE_S,
                 where: str = "study.storage"):
        self._inner, self._name, self._patience, self._where = inner, name, patience, where
        self._lock = threading.RLock()
        self._since: float | None = None  # monotonic time of the first failure of the current outage
        self._last_error = ""
        self._gave_up = False
        self._pending: list[tuple] = []  # intermediate values written while the storage was unreachable
        self.stats = RetryStats()

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("_inner")
        if inner is None:  # half-built (unpickling, copying): nothing to delegate to yet
            raise AttributeError(name)
        return getattr(inner, name)

    # --- the state the CLI and the objective read

    @property
    def unreachable_s(self) -> float | None:
        """Seconds the storage has been unreachable, or None while it answers."""
        since = self._since
        return None if since is None else time.monotonic() - since

    # --- every call goes through here

    def _call(self, name: str, *args, **kwargs):
        delay, retried = FIRST_DELAY_S, False
        while True:
            self._check_patience()
            try:
                self._flush()
                out = getattr(self._inner, name)(*args, **kwargs)
            except UpdateFinishedTrialError as e:
                if retried and name == "set_trial_state_values" and self._landed(*args, **kwargs):
                    out = True  # the first attempt was committed before the connection dropped
                elif name in _TRIAL_WRITES:
                    raise _lost(args[0]) from e
                else:
                    raise
            except Exception as e:  # noqa: BLE001 - only transient errors are retried; the rest re-raised
                if not is_transient(e):
                    raise
                self._failed(e, first=not retried)
                retried = True
                self._sleep(delay)
                delay = min(delay * 2, MAX_DELAY_S)
                continue
            self._answered()
            return out

    def _landed(self, trial_id: int, state, values=None) -> bool:
        t = self._inner.get_trial(trial_id)
        return t.state == state and (values is None or list(t.values or []) == list(values))

    def _check_patience(self) -> None:
        waited = self.unreachable_s
        if self._gave_up or (waited is not None and waited > self._patience):
            self._gave_up = True
            raise StorageUnreachable(
                f"{self._where}: {self._name} unreachable for {waited or self._patience:.0f} s, longer than "
                f"study.storage_patience ({self._patience:g} s); last error: {self._last_error}. This worker "
                "stopped; its running trial is failed and retried by another worker or the next run. When the "
                "storage is back, run the same command to resume: finished trials are kept")

    def _failed(self, e: BaseException, first: bool) -> None:
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()
            for stats in (self.stats, _PROCESS_STATS):
                stats.n_attempts += 1
                stats.n_retried_calls += first
            self._last_error = _one_line(e)
        _tell_watchers(self.unreachable_s)

    def _answered(self) -> None:
        if self._since is None:
            return
        with self._lock:
            if self._since is not None:
                for stats in (self.stats, _PROCESS_STATS):
                    stats.outages_s.append(time.monotonic() - self._since)
                self._since = None
        _tell_watchers(None)

    def _sleep(self, delay: float) -> None:
        """Full jitter (workers that lost the server together spread out), told to the watchers each second, so
        a console shows the wait while it lasts, not only at the attempts (up to MAX_DELAY_S apart)."""
        end = time.monotonic() + random.uniform(0, delay)
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 1.0))
            if self.unreachable_s is not None:
                _tell_watchers(self.unreachable_s)

    def _flush(self) -> None:
        if not self._pending:
            return
        with self._lock:  # one thread writes them, in order
            while self._pending:
                try:
                    self._inner.set_trial_intermediate_value(*self._pending[0])
                except UpdateFinishedTrialError:
                    pass  # failed as stale by another worker meanwhile: a late write must not touch it
                self._pending.pop(0)

    # --- the calls that differ

    def set_trial_intermediate_value(self, trial_id: int, step: int, value: float) -> None:
        """Never holds up training: while the storage is unreachable the value is kept, and written before the
        next call that reaches it (the heartbeat thread's retries find out when that is)."""
        if self._since is None:
            try:
                self._flush()
                self._inner.set_trial_intermediate_value(trial_id, step, value)
                return
            except UpdateFinishedTrialError as e:
                raise _lost(trial_id) from e
            except Exception as e:  # noqa: BLE001 - as in _call
                if not is_transient(e):
                    raise
                self._failed(e, first=True)
        self._check_patience()
        with self._lock:
            self._pending.append((trial_id, step, value))

    def record_heartbeat(self, trial_id: int) -> None:
        """Retried like every call, but never raises: Optuna's heartbeat thread has no handler, and the thread
        that ends in an exception prints its traceback. The main thread reports the outage instead."""
        try:
            self._call("record_heartbeat", trial_id)
        except (StorageUnreachable, TrialLost, UpdateFinishedTrialError):
            pass  # the main thread says so; a trial finished elsewhere needs no heartbeat

    def get_heartbeat_interval(self) -> int | None:
        return self._inner.get_heartbeat_interval() if isinstance(self._inner, BaseHeartbeat) else None

    def get_heartbeat_stale_trial_callback(self):
        return self._inner.get_heartbeat_stale_trial_callback() if isinstance(self._inner, BaseHeartbeat) else None

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self._call("_get_stale_trial_ids", study_id)


# writes to a running trial: one that fails because the trial is finished means another worker failed it as
# stale (its heartbeat stopped during an outage) and retried it; this process's result must be dropped
_TRIAL_WRITES = ("set_trial_param", "set_trial_user_attr", "set_trial_system_attr", "set_trial_intermediate_value")


def _lost(trial_id: int) -> "TrialLost":
    return TrialLost(f"trial id {trial_id} was failed by another worker while this one could not reach the "
                     "storage; its result is dropped")


def _retried(name: str):
    def method(self, *args, **kwargs):
        return self._call(name, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


# every public method of BaseStorage (abstract or built on the abstract ones) goes to the inner storage in one
# call, so that a retry repeats exactly one storage operation
for _name in [n for n in vars(BaseStorage) if not n.startswith("_") and callable(getattr(BaseStorage, n))]:
    if _name not in vars(RetryingStorage):
        setattr(RetryingStorage, _name, _retried(_name))
abc.update_abstractmethods(RetryingStorage)


def _one_line(e: BaseException) -> str:
    root = e
    while root.__cause__ is not None:  # the driver's own error says most (Optuna's wrapper says "commit")
        root = root.__cause__
    text = str(root).strip().splitlines()[0] if str(root).strip() else ""
    return redact(f"{type(root).__name__}: {text}" if text else type(root).__name__)


def storage_unreachable(study) -> bool:
    """True while the storage of `study` is in an outage: the objective then skips pruning (which reads the
    study) and trains on."""
    return getattr(storage_of(study), "unreachable_s", None) is not None


def retry_stats(study) -> RetryStats | None:
    return getattr(storage_of(study), "stats", None)


class TrialLost(BaseException):
    """This process's trial was failed by another one while this one could not reach the storage (its heartbeat
    went stale), and has been retried elsewhere. Its result is dropped, not written: the trial is not resurrected
    and not counted twice. A BaseException so that Optuna does not try to tell the finished trial FAIL."""


class OutageGuard:
    """Taken when a trial starts; `check()` before its result is told raises TrialLost when the storage was
    unreachable meanwhile and the trial is no longer RUNNING. Without an outage it costs nothing."""

    def __init__(self, trial):
        self.trial = trial
        stats = retry_stats(trial.study)
        self._attempts = stats.n_attempts if stats is not None else None

    def check(self) -> None:
        stats = retry_stats(self.trial.study)
        if stats is None or stats.n_attempts == self._attempts:
            return
        from optuna.trial import TrialState

        state = storage_of(self.trial.study).get_trial(trial_id(self.trial)).state
        if state != TrialState.RUNNING:
            raise TrialLost(f"trial #{self.trial.number} was marked {state.name} by another worker while this one "
                            "could not reach the storage; its result is dropped")


def storage_notes(study) -> list[str]:
    """What opening the storage had to say (a repaired journal), for the CLI's notes."""
    return list(getattr(storage_of(study), "notes", None) or [])


def outage_notes(study) -> list[str]:
    """One note on the outages this process rode out, if any."""
    stats = retry_stats(study)
    if stats is None or not stats.outages_s:
        return []
    return [f"the storage was unreachable {len(stats.outages_s)} time(s), {stats.waited_s:.1f} s in all (longest "
            f"{max(stats.outages_s):.1f} s); {stats.n_retried_calls} storage calls were retried and succeeded"]


def unreachable_cause(e: BaseException) -> StorageUnreachable | None:
    """The StorageUnreachable behind `e`, if any. Optuna's optimize loop reads its `updated_state` in a `finally`
    that a BaseException from `tell` leaves unset, so the outage surfaces as an UnboundLocalError there."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, StorageUnreachable):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None
