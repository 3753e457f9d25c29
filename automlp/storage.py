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
import re
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from automlp.adapters import BaseHeartbeat, BaseJournalFileLock, trial_id
from automlp.errors import StorageError

JOURNAL_NAME = "study.journal"
WORKER_ATTR = "automlp:worker"  # trial system attr: which process runs the trial, and its last heartbeat
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 30


def redact(text: str) -> str:
    """`text` (a URL, or a message holding one) with every password replaced by ***, for every message, log
    and report. The password runs to the last '@' before the host, so one holding '@' is hidden whole."""
    text = re.sub(r"(://[^:/@\s]*:)[^/\s]*@", r"\1***@", text)
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", text)


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


def open_storage(url: str, heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
                 grace_period: int = GRACE_PERIOD_S, max_retry: int = 3) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url` (journal:///path for a journal file, else an RDB URL), with heartbeats:
    a trial whose worker died is failed and retried with the same parameters, at most `max_retry` times."""
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
            return HeartbeatJournalStorage(JournalFileBackend(str(path), lock_obj=FlockJournalLock(path)), **beat)
        except OSError as e:
            raise StorageError(f"storage: cannot open the journal file {path}: {e.strerror}") from None
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats: experimental since Optuna 2.9
                return LivenessRDBStorage(with_driver(url), engine_kwargs=_engine_kwargs(url), **beat)
        except ImportError as e:
            missing = getattr(e.__cause__, "name", None) or e.name
            raise StorageError(f"storage: the database driver for {redact(url)} is not installed ({missing}); "
                               "pip install 'automlp[postgres]' or 'automlp[mysql]'") from None
        except Exception as e:  # sqlalchemy raises many kinds; all mean "cannot open this storage"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if attempt < 3 and _lost_table_race(first):
                time.sleep(0.2 * (attempt + 1))  # another worker is creating the tables right now
                continue
            raise StorageError(f"storage: cannot open {redact(url)}: {redact(first)}") from None
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
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
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


# --------------------------------------------------------------------------- liveness


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return ""


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[19])


HOST, BOOT = socket.gethostname(), _boot_id()


def worker_record() -> dict:
    """Who this process is, in a form another process on the same machine can check for liveness."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return {"host": HOST, "boot": BOOT, "pid": pid, "pid_start": stat[1] if stat else None}


def is_dead_here(rec: dict) -> bool:
    """True when `rec` names a process of this machine that no longer runs (exited, killed, a zombie, or its
    pid reused by another process). Processes of other machines are judged by their heartbeat instead."""
    if rec.get("host") != HOST or rec.get("boot") != BOOT:
        return False
    pid = int(rec.get("pid", -1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, owned by another user
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, start = stat
    return state in "ZX" or (rec.get("pid_start") is not None and start != rec["pid_start"])


def _stale_ids(storage: optuna.storages.BaseStorage, study_id: int, grace_period: float | None) -> list[int]:
    """Running trials whose process died on this machine, or (grace_period set) whose last heartbeat is older."""
    now, out = time.time(), []
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        rec = t.system_attrs.get(WORKER_ATTR)
        if not rec or rec.get("trial_id") != trial_id(t):
            continue  # no heartbeat yet (or one copied from the trial this one retries)
        if is_dead_here(rec) or (grace_period is not None and now - rec.get("t", now) > grace_period):
            out.append(trial_id(t))
    return out


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with heartbeats: each running trial's worker writes its identity and the time
    into a system attr every `heartbeat_interval` seconds; Optuna's optimize loop then fails (and our retry
    callback re-enqueues) the stale ones, exactly as it does for the RDB storages."""

    def __init__(self, backend, *, heartbeat_interval: int, grace_period: int,
                 heartbeat_stale_trial_callback: Callable | None = None):
        super().__init__(backend)
        self._interval, self._grace, self._on_stale = heartbeat_interval, grace_period, heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, WORKER_ATTR, worker_record() | {"trial_id": trial_id, "t": time.time()})

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return _stale_ids(self, study_id, self._grace)

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(self):
        return self._on_stale


class LivenessRDBStorage(RDBStorage):
    """Optuna's RDB storage (heartbeats and grace period are Optuna's own), plus: each trial records which
    process runs it, so a trial whose process died on this machine is stale at once, not after the grace
    period, and `automlp status` can list the workers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._announced: set[int] = set()

    def record_heartbeat(self, trial_id: int) -> None:
        super().record_heartbeat(trial_id)
        if trial_id not in self._announced:
            self._announced.add(trial_id)
            self.set_trial_system_attr(trial_id, WORKER_ATTR,
                                       worker_record() | {"trial_id": trial_id, "t": time.time()})

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return sorted(set(super()._get_stale_trial_ids(study_id)) | set(_stale_ids(self, study_id, None)))


def fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
