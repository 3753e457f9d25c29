"""Where a study lives, and how many worker processes share it safely.

Default: Optuna's journal file storage (`studies/<name>/study.journal`). Measured on this kind of machine it
costs 2-5 ms of bookkeeping per trial against 14-22 ms for SQLite, needs no table creation (so workers that
start together cannot race on it), and optuna-dashboard opens it directly.

Sharing a study between processes needs three things Optuna leaves to us:
- liveness: every storage gets heartbeats (Optuna's own on the RDB storages; ours, through Optuna's
  `BaseHeartbeat` interface, on the journal file, which has none in Optuna 5). A running trial is stale when its
  heartbeat is older than the grace period, or at once when its process is gone from this machine. Stale trials
  are failed and retried with the same parameters (`RetryHeartbeatStaleTrialCallback`).
- a study-wide budget and a clean stop: those live with the runners (automlp.search.budget, .runners).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

from automlp.adapters import BaseJournalFileLock, CachedStorage
from automlp.errors import StorageError
from automlp.redaction import redact
from automlp.journal import RepairingJournalFileBackend, repair_torn_tail
from automlp.liveness import HOST, WORKER_ATTR, SystemAttrHeartbeat, _stale_ids, is_dead_here, worker_record  # noqa: F401
from automlp.retry import STORAGE_PATIENCE_S, RetryingStorage

JOURNAL_NAME = "study.journal"
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 30


def with_driver(url: str) -> str:
    """SQLAlchemy 2.1 reads postgresql:// as psycopg (3) and mysql:// as mysqlclient; when only the driver
    automlp's extras install (psycopg2, pymysql) is there, name it, so a bare URL works."""
    for bare, default, ours, module in (("postgresql://", "psycopg", "postgresql+psycopg2://", "psycopg2"),
                                        ("mysql://", "MySQLdb", "mysql+pymysql://", "pymysql")):
        if url.startswith(bare) and not importlib.util.find_spec(default) and importlib.util.find_spec(module):
            return ours + url.removeprefix(bare)
    return url


def default_storage_url(study_dir: Path) -> str:
    return f"journal://{(study_dir / JOURNAL_NAME).resolve()}"


def storage_of(spec) -> str:
    """The storage URL of a spec: study.storage, or the journal file in its study folder."""
    return spec.study.storage or default_storage_url(spec.study_dir)


def open_storage(url: str, heartbeat_interval: int = HEARTBEAT_INTERVAL_S, grace_period: int = GRACE_PERIOD_S,
                 max_retry: int = 3, patience: float | None = STORAGE_PATIENCE_S,
                 where: str = "study.storage") -> optuna.storages.BaseStorage:
    """An Optuna storage for `url` (journal:///path for a journal file, grpc://host:port for Optuna's storage
    proxy, else an RDB URL), with heartbeats: a trial whose worker died is failed and retried with the same
    parameters, at most `max_retry` times. Every call is retried through an outage of up to `patience` seconds
    (`retry.RetryingStorage`; None: not). `where` names the URL's origin in errors: study.storage, --storage,
    or output.dir (the default journal)."""
    storage = _open_storage(url, heartbeat_interval, grace_period, max_retry, where)
    return storage if patience is None else RetryingStorage(storage, redact(url), patience, where)


def _open_storage(url: str, heartbeat_interval: int, grace_period: int, max_retry: int, where: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    beat = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period,
            "heartbeat_stale_trial_callback": retry}
    if url.startswith("journal:"):
        rest = url.removeprefix("journal:")
        path = Path(rest[2:] if rest.startswith("//") else rest)  # journal:///abs/file or journal:rel/file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FlockJournalLock(path)
            note = repair_torn_tail(path, lock)
            storage = HeartbeatJournalStorage(RepairingJournalFileBackend(str(path), lock_obj=lock), **beat)
            storage.notes = [note] if note else []  # shown by the CLI (search.run_search)
            return storage
        except OSError as e:
            raise StorageError(f"{where}: cannot open the journal file {path}: {e.strerror}") from None
    if url.startswith("grpc://"):
        from automlp.grpc_proxy import open_grpc_storage  # grpcio is needed only here

        return open_grpc_storage(url, where, **beat)
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats: experimental since Optuna 2.9
                # cached as optuna.create_study would; the retry proxy goes around the cache
                return CachedStorage(LivenessRDBStorage(with_driver(url), engine_kwargs=_engine_kwargs(url), **beat))
        except ImportError as e:
            missing = getattr(e.__cause__, "name", None) or e.name
            raise StorageError(f"{where}: the database driver for {redact(url)} is not installed ({missing}); "
                               "pip install 'automlp[postgres]' or 'automlp[mysql]'") from None
        except Exception as e:  # sqlalchemy raises many kinds; all mean "cannot open this storage"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if attempt < 3 and _lost_table_race(first):
                time.sleep(0.2 * (attempt + 1))  # another worker is creating the tables right now
                continue
            raise StorageError(f"{where}: cannot open {redact(url)}: {redact(first)}") from None
    raise AssertionError("unreachable")


def _lost_table_race(message: str) -> bool:
    """Two processes creating Optuna's tables on an empty database at once: the loser may retry."""
    m = message.lower()
    return any(k in m for k in ("already exists", "unique constraint failed", "duplicate", "uniqueviolation"))


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        # a busy timeout instead of instant "database is locked" errors when processes share the file
        return {"connect_args": {"timeout": 60}}
    if url.startswith("postgresql"):
        # keepalives and a TCP user timeout: a lost network (not only a closed server) fails a call within
        # ~20 s, so the retry layer sees it, instead of a query that waits for the kernel's 15 minutes
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10, "keepalives": 1,
                                                        "keepalives_idle": 10, "keepalives_interval": 5,
                                                        "keepalives_count": 2, "tcp_user_timeout": 20000}}
    if url.startswith("mysql"):
        return {"pool_pre_ping": True, "pool_recycle": 3600, "connect_args": {"connect_timeout": 10}}
    return {}


class FlockJournalLock(BaseJournalFileLock):
    """The journal file's write lock as an advisory `flock` on `<journal>.flock`, which the kernel drops the
    moment its holder dies. Optuna's default (a symlink) outlives a worker killed while appending: every other
    worker then waits its 30 s grace period, their own heartbeats stall behind it, and their live trials are
    failed as stale. Each acquire opens its own descriptor, so threads of one process exclude each other too."""

    def __init__(self, journal: Path):
        self._path = f"{journal}.flock"
        self._local = threading.local()

    def acquire(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._local.fd = fd
        return True

    def release(self) -> None:
        fd = getattr(self._local, "fd", None)
        if fd is None:
            raise RuntimeError("the journal lock is not held by this thread")
        self._local.fd = None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class HeartbeatJournalStorage(JournalStorage, SystemAttrHeartbeat):
    """Optuna's journal storage with heartbeats (`liveness.SystemAttrHeartbeat`)."""

    def __init__(self, backend, *, heartbeat_interval: int, grace_period: int,
                 heartbeat_stale_trial_callback: Callable | None = None):
        super().__init__(backend)
        self._init_heartbeat(heartbeat_interval, grace_period, heartbeat_stale_trial_callback)


class LivenessRDBStorage(RDBStorage):
    """Optuna's RDB storage (heartbeats and grace period are Optuna's own), plus: each trial records which
    process runs it, so a trial whose process died on this machine is stale at once, not after the grace
    period, and `automlp status` can list the workers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._announced: set[int] = set()

    def record_heartbeat(self, trial_id: int) -> None:
        super().record_heartbeat(trial_id)
        if trial_id not in self._announced:  # marked only once written: a failed write is tried again next beat
            self.set_trial_system_attr(trial_id, WORKER_ATTR,
                                       worker_record() | {"trial_id": trial_id, "t": time.time()})
            self._announced.add(trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # and a trial that never beat (created as the storage went away, so Optuna, which judges trials by their
        # heartbeat rows, never fails it and a rerun waits for its slot): stale once older than the grace period
        grace = self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval
        return sorted(set(super()._get_stale_trial_ids(study_id)) | set(_stale_ids(self, study_id, None, grace)))


def fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
